# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""MBPP(+) instruct tasks: code extraction and sandboxed scoring on the full tests (data:
sm_dream.evaluation.eval_data)."""

import re

from sm_dream.evaluation.code_execution import Tests, code_before_fence, score

TIMEOUT_S = 10.0
PLUS_TIMEOUT_S = 30.0  # EvalPlus runs each function on hundreds of inputs


def build_programs(resps, docs):
    """The code of each answer: the text before the fence closing the block the prompt opened."""
    return [[code_before_fence(r) for r in resp] for resp in resps]


def entry_points(doc, tests: str) -> tuple:
    """The functions of the reference solution (`code`) that the tests call: the program must
    define them, and they are the program's even where a builtin has the same name. Other names
    the tests call are the program's only where neither the judge nor the builtins define them."""
    defined = re.findall(r"^def (\w+)\s*\(", doc.get("code") or "", flags=re.M)
    return tuple(name for name in dict.fromkeys(defined) if re.search(rf"\b{name}\s*\(", tests))


def tests(doc) -> Tests:
    """MBPP: all of its asserts (`test_list`) after its `test_setup_code`; the functions they call
    are the program's (as proxies: plain data in and out)."""
    code = "\n".join(doc["test_list"]) + "\n"
    return Tests(code=code, prelude=doc.get("test_setup_code") or "", proxied=entry_points(doc, code))


def tests_plus(doc) -> Tests:
    """MBPP+: the EvalPlus test program (`test`: base and plus inputs) after `test_imports`."""
    code = doc["test"] + "\n"
    return Tests(code=code, prelude="\n".join(doc.get("test_imports") or []), proxied=entry_points(doc, code))


def process_results(doc, results):
    """pass@1 against all of MBPP's asserts, and `contained` (1.0: every program ran contained).
    The set-up code runs before the program too, as the reference solutions expect."""
    spec = tests(doc)
    return score([f"{spec.prelude}\n{p}\n" for p in results[0]], spec, TIMEOUT_S)


def process_results_plus(doc, results):
    """pass@1 against the EvalPlus test program, and `contained`. The test imports come before the
    program too (the reference solutions use them without importing)."""
    spec = tests_plus(doc)
    return score([f"{spec.prelude}\n{p}\n" for p in results[0]], spec, PLUS_TIMEOUT_S)
