# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Final answers of GSM8k and MATH-500 responses, extracted by math-verify's configured parser: the
tasks' lm-eval filters (`filter_list` in eval_tasks/gsm8k and eval_tasks/math500) write them, so
`--log_samples` shows them as `filtered_resps`, and `process_results` compares them to the gold answer.

- `gsm8k_answer(text)`: the number after the last `#### N` (the dataset's own marker, which math-verify
  has no anchor for); else math-verify's pick: the last `\\boxed{}`, then the last "final answer is N" /
  "answer: N" / "answer is N" (not any "answer" word, as math-verify alone would), then the last
  number (`$`, thousands separators, signs, decimals and markdown bold allowed). Written as an exact
  rational ("18", "1/2"), so `18.00` equals `18`; a percentage is its number (`40%` is 40, as the gold
  answers write it).
- `math_answer(text)`: the last `\\boxed{}` or "final answer is $X$" (Minerva's format), as math-verify
  normalises it (`\\dfrac12` -> `\\frac{1}{2}`); only an anchored answer counts, not any number in the
  text.
- `math_equivalent(answer, gold)`: math-verify's `verify`: symbolic, so `\\frac{\\sqrt3}{3}` equals
  `\\frac{1}{\\sqrt3}`, `0.5` equals `\\frac12` and `x = 5` equals `5`.
"""

import re
import threading
from fractions import Fraction
from typing import Optional

NO_ANSWER = "[invalid]"  # what lm-eval's own extraction filters write when nothing matches
_BOLD = re.compile(r"(?<![\w)])\*\*|\*\*(?![\w(])")
_LOOSE_ANSWER = re.compile(r"answer(?!\s*(?:is\b|:))", re.IGNORECASE)


def _math_verify():
    try:
        import math_verify
    except ImportError as error:
        raise ImportError("GSM8k and MATH-500 scoring need math-verify: "
                          "pip install 'sm_dream[eval]' (or math-verify).") from error
    return math_verify


def _timeouts() -> dict:
    """math-verify bounds its own time with SIGALRM, which only the main thread may use."""
    return {} if threading.current_thread() is threading.main_thread() else {"parsing_timeout": None}


def _configs():
    mv = _math_verify()
    gsm8k = (mv.LatexExtractionConfig(boxed_match_priority=0), mv.ExprExtractionConfig())
    math = (mv.LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False),)
    return gsm8k, math


def _exact(value) -> Optional[Fraction]:
    """A parsed number as an exact rational, or None for anything else. A percentage, which math-verify
    reads as `X * 1/100`, is its number X here, as the gold answers write it."""
    from sympy import Mul, Rational, nsimplify

    try:
        if isinstance(value, Mul) and len(value.args) == 2 and value.args[1].doit() == Rational(1, 100):
            value = value.args[0]
        value = nsimplify(value.doit(), rational=True)
    except (AttributeError, TypeError, ValueError):
        return None
    return Fraction(int(value.p), int(value.q)) if value.is_Rational else None


def gsm8k_answer(text: str) -> str:
    """The number a GSM8k response commits to (see the module docstring), or `NO_ANSWER`."""
    parse, config = _math_verify().parse, _configs()[0]
    # Markdown bold ("**Final answer:** **33**") off: math-verify reads "33**" as an unparsable product
    # and falls back to an earlier number. A power (2**3) keeps its stars.
    text = _BOLD.sub("", text)
    # math-verify takes a number near any "answer" word as anchored ("the answer from the previous step:
    # $4.00", "answered 5 questions"); only "answer is" / "answer:" are anchors here.
    text = _LOOSE_ANSWER.sub("reply", text)
    regions = [text.rsplit("####", 1)[1].split("\n", 1)[0]] if "####" in text else []
    for region in regions + [text]:
        for value in parse(region, config, fallback_mode="no_fallback", **_timeouts()):
            number = _exact(value)
            if number is not None:
                return str(number)
    return NO_ANSWER


def gsm8k_gold(answer: str) -> str:
    """The number after `####` in a GSM8k `answer` field, written as `gsm8k_answer` writes it."""
    if "####" not in answer:
        raise ValueError(f"A GSM8k answer must end with '#### <number>'; got {answer[-80:]!r}.")
    number = gsm8k_answer(answer.rsplit("####", 1)[1])
    if number == NO_ANSWER:
        raise ValueError(f"No number after '####' in {answer[-80:]!r}.")
    return number


def math_answer(text: str) -> str:
    """The answer a MATH solution commits to (see the module docstring), or `NO_ANSWER`. Only the last
    anchored answer is tried (extraction_mode="first_match"), the string math-verify read is kept even
    where sympy cannot parse it (fallback_mode="first_match": `\\text{(C)}` compares as text)."""
    # The last box alone (Minerva's rule, as lm-eval's minerva_math): math-verify would read boxes a
    # few words apart ("\\boxed{1}, no: \\boxed{2}") as one answer, the set of both.
    text = text[text.rfind("\\boxed"):] if "\\boxed" in text else text
    found = _math_verify().parse(text, _configs()[1], fallback_mode="first_match", extraction_mode="first_match",
                                 **_timeouts())
    return next((s for s in found if isinstance(s, str) and s), NO_ANSWER)


def math_equivalent(answer: str, gold: str) -> bool:
    """Whether an extracted answer equals the gold one by math-verify (see the module docstring)."""
    if answer == NO_ANSWER:
        return False
    mv = _math_verify()
    gold_expr, answer_expr = (mv.parse(f"${s}$", **_timeouts()) for s in (gold, answer))
    verify_timeout = {"timeout_seconds": None} if _timeouts() else {}
    return bool(gold_expr and answer_expr and mv.verify(gold_expr, answer_expr, **verify_timeout))


def filter_gsm8k(resps, docs):
    """lm-eval `custom` filter: each response's GSM8k answer."""
    return [[gsm8k_answer(r) for r in responses] for responses in resps]


def filter_math(resps, docs):
    """lm-eval `custom` filter: each response's MATH answer."""
    return [[math_answer(r) for r in responses] for responses in resps]
