# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Final-answer extraction and comparison for MATH-500.

- `final_answer(text)`: the content of the last `\\boxed{...}` (nested braces allowed), else the X of
  "final answer is X" (Minerva's format), else None.
- `normalize_answer(s)`: a canonical string: no spaces, `$`, `\\left`/`\\right`, spacing commands,
  `\\text{}` wrappers, degree signs or trailing period; `\\dfrac`/`\\tfrac` -> `\\frac`, `\\frac12` ->
  `\\frac{1}{2}`, `a/b` -> `\\frac{a}{b}`, `\\sqrt2` -> `\\sqrt{2}`, `1,000` -> `1000`, `0.50` -> `0.5`,
  a leading `x =` dropped.
- `answers_match(pred, gold)`: equal normal forms, or equal numbers (integers, decimals, simple
  fractions) within 1e-6 relative tolerance.

- `is_equivalent(text, gold)`: `answers_match`, else `math-verify` (PyPI; symbolic, so equivalent
  forms such as `\\frac{\\sqrt3}{3}` and `\\frac{1}{\\sqrt3}`, or `0.5` and `\\frac12`, count) on the
  extracted answer. The extraction stays the one above: an answer must be boxed (or "final answer
  is X"), a number somewhere in the text is not an answer.
"""

import re
from typing import Optional

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_FINAL_ANSWER = re.compile(r"final answer is\s*\$?(.+?)\$?\s*(?:\.\s*I hope|\.?\s*$)", re.IGNORECASE | re.DOTALL)


def _braced(text: str, start: int) -> Optional[str]:
    """The content of the brace group opening at text[start] == "{", or None if unbalanced."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + 1 : i]
    return None


def last_boxed(text: str) -> Optional[str]:
    """The content of the last `\\boxed{...}` / `\\fbox{...}` (or `\\boxed 5`) in `text`."""
    start = max(text.rfind(c) for c in _BOX_COMMANDS)
    if start < 0:
        return None
    rest = text[start:].split("{", 1)[0]
    command = next(c for c in _BOX_COMMANDS if rest.startswith(c))
    after = start + len(command)
    if after < len(text) and text[after] == " ":
        return text[after + 1 :].split("$")[0].strip() or None
    brace = text.find("{", after)
    return _braced(text, brace) if brace == after else None


def final_answer(text: str) -> Optional[str]:
    """The answer a solution commits to (see the module docstring), or None."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    match = _FINAL_ANSWER.search(text)
    return match.group(1).strip() if match else None


def _unwrap(s: str, command: str) -> str:
    """Replace every `command{x}` by `x`."""
    while (i := s.find(command + "{")) >= 0:
        inner = _braced(s, i + len(command))
        if inner is None:
            break
        s = s[:i] + inner + s[i + len(command) + len(inner) + 2 :]
    return s


def _number(s: str) -> Optional[float]:
    """A float for an integer, decimal or `\\frac{a}{b}` of those, else None."""
    frac = re.fullmatch(r"(-?)\\frac\{(-?[\d.]+)\}\{(-?[\d.]+)\}", s)
    try:
        if frac:
            value = float(frac.group(2)) / float(frac.group(3))
            return -value if frac.group(1) else value
        return float(s) if re.fullmatch(r"-?(\d+\.?\d*|\.\d+)", s) else None
    except (ValueError, ZeroDivisionError):
        return None


def normalize_answer(s: str) -> str:
    """A canonical string form of an answer (see the module docstring)."""
    s = s.strip().strip("$").replace("\\displaystyle", "")
    for command in ("\\text", "\\textbf", "\\mathrm", "\\mbox"):
        s = _unwrap(s, command)
    for old, new in (("\\left", ""), ("\\right", ""), ("\\!", ""), ("\\,", ""), ("\\;", ""), ("\\:", ""),
                     ("\\ ", ""), ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("^\\circ", ""),
                     ("^{\\circ}", ""), ("\\%", ""), ("%", ""), ("\\$", "")):
        s = s.replace(old, new)
    s = re.sub(r"\s+", "", s).rstrip(".")
    s = re.sub(r"^[a-zA-Z]=(?=.)", "", s)  # "x=5" -> "5"
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\{([^{}]+)\}(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\sqrt(\d+)", r"\\sqrt{\1}", s)
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    s = re.sub(r"^(-?)(\d+)/(\d+)$", r"\1\\frac{\2}{\3}", s)
    if re.fullmatch(r"-?\d*\.\d+", s):
        s = s.rstrip("0").rstrip(".") or "0"
        s = "0" + s if s.startswith(".") else s.replace("-.", "-0.")
    return s


def answers_match(prediction: Optional[str], gold: str) -> bool:
    """Whether an extracted answer equals the gold one (see the module docstring)."""
    if prediction is None:
        return False
    pred, ref = normalize_answer(prediction), normalize_answer(gold)
    if pred == ref:
        return True
    a, b = _number(pred), _number(ref)
    return a is not None and b is not None and abs(a - b) <= 1e-6 * max(1.0, abs(b))


def _math_verify_equal(prediction: str, gold: str) -> bool:
    try:
        from math_verify import parse, verify
    except ImportError as error:
        raise ImportError("MATH-500 scoring needs math-verify: "
                          "pip install 'sm_dream[eval]' (or math-verify).") from error
    import threading

    # math-verify bounds its own time with SIGALRM, which only the main thread may use.
    timeouts = {} if threading.current_thread() is threading.main_thread() else {"parsing_timeout": None}
    try:
        gold_expr, pred_expr = parse(f"${gold}$", **timeouts), parse(f"${prediction}$", **timeouts)
        if not gold_expr or not pred_expr:
            return False
        return bool(verify(gold_expr, pred_expr, **({"timeout_seconds": None} if timeouts else {})))
    except Exception:  # noqa: BLE001  (an answer math-verify cannot read is not equivalent)
        return False


def is_equivalent(text: str, gold: str) -> bool:
    """Whether the answer `text` commits to equals `gold` (see the module docstring)."""
    prediction = final_answer(text)
    if prediction is None:
        return False
    return answers_match(prediction, gold) or _math_verify_equal(prediction, gold)
