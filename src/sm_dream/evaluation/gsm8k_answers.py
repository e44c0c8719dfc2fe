# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""GSM8k answer extraction that accepts what chat models write, and numeric comparison.

`extract_answer(text)` takes the first number after the last occurrence of the first of these
kinds that the text has:

1. `#### N` (the dataset's own format);
2. `\\boxed{N}`;
3. "the answer is N" / "final answer: N" / "answer: N" (any case);
4. else the last number in the text.

Numbers may carry `$`, thousands separators (`1,080`), a sign, decimals, a trailing period or a unit
(`18 dollars`, `40%`); they compare as exact rationals, so `18.00` equals `18`. The gold answer is
the number after `####` in the dataset's `answer` column.
"""

import re
from fractions import Fraction
from typing import Optional

from .math_answers import last_boxed

NUMBER = re.compile(r"-?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\$?\.\d+")
MARKERS = (re.compile(r"####"), None, re.compile(r"answer\s*(?:is|:)", re.IGNORECASE))  # None: \boxed{...}


def to_number(text: str) -> Optional[Fraction]:
    """The first number in `text` as an exact rational, or None."""
    match = NUMBER.search(text.replace("\\$", "$").replace("{,}", ","))
    if match is None:
        return None
    digits = match.group(0).replace("$", "").replace(",", "").replace(" ", "")
    try:
        return Fraction(digits)
    except (ValueError, ZeroDivisionError):
        return None


def _after_last(pattern, text: str) -> Optional[str]:
    """The rest of the line after the last match of `pattern`, or None."""
    found = list(pattern.finditer(text))
    return text[found[-1].end() :].split("\n", 1)[0] if found else None


def extract_answer(text: str) -> Optional[Fraction]:
    """The final answer a response commits to (see the module docstring), or None."""
    for marker in MARKERS:
        region = last_boxed(text) if marker is None else _after_last(marker, text)
        value = to_number(region) if region else None
        if value is not None:
            return value
    numbers = NUMBER.findall(text.replace("{,}", ","))
    return to_number(numbers[-1]) if numbers else None


def gold_answer(answer: str) -> Fraction:
    """The number after `####` in a GSM8k `answer` field."""
    if "####" not in answer:
        raise ValueError(f"A GSM8k answer must end with '#### <number>'; got {answer[-80:]!r}.")
    value = to_number(answer.rsplit("####", 1)[1])
    if value is None:
        raise ValueError(f"No number after '####' in {answer[-80:]!r}.")
    return value


def is_correct(response: str, answer: str) -> bool:
    """Whether the response's final answer equals the gold answer of the `answer` field."""
    return extract_answer(response) == gold_answer(answer)
