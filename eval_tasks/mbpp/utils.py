# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""MBPP(+) instruct tasks: code extraction and sandboxed scoring on the full tests (data:
sm_dream.evaluation.eval_data)."""

from sm_dream.evaluation.code_execution import Tests, code_before_fence, score

TIMEOUT_S = 10.0
PLUS_TIMEOUT_S = 30.0  # EvalPlus runs each function on hundreds of inputs


def build_programs(resps, docs):
    """The code of each answer: the text before the fence closing the block the prompt opened."""
    return [[code_before_fence(r) for r in resp] for resp in resps]


def tests(doc) -> Tests:
    """MBPP: all of its asserts (`test_list`) after its `test_setup_code`; the functions they call
    are the program's (as proxies: plain data in and out)."""
    return Tests(code="\n".join(doc["test_list"]) + "\n", prelude=doc.get("test_setup_code") or "")


def tests_plus(doc) -> Tests:
    """MBPP+: the EvalPlus test program (`test`: base and plus inputs) after `test_imports`."""
    return Tests(code=doc["test"] + "\n", prelude="\n".join(doc.get("test_imports") or []))


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
