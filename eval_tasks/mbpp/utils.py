# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""MBPP(+) instruct tasks: code extraction and sandboxed scoring on the full tests (data:
sm_dream.evaluation.eval_data)."""

from sm_dream.evaluation.code_execution import code_before_fence, pass_at_1

TIMEOUT_S = 10.0
PLUS_TIMEOUT_S = 30.0  # EvalPlus runs each function on hundreds of inputs


def build_programs(resps, docs):
    """The code of each answer: the text before the fence closing the block the prompt opened."""
    return [[code_before_fence(r) for r in resp] for resp in resps]


def process_results(doc, results):
    """pass@1 against all of MBPP's asserts (`test_list`), after its `test_setup_code`."""
    setup = doc.get("test_setup_code") or ""
    tests = "\n".join(doc["test_list"])
    return {"pass@1": pass_at_1([f"{setup}\n{p}\n\n{tests}\n" for p in results[0]], TIMEOUT_S)}


def process_results_plus(doc, results):
    """pass@1 against the EvalPlus test program (`test`: base and plus inputs), after `test_imports`."""
    imports = "\n".join(doc.get("test_imports") or [])
    return {"pass@1": pass_at_1([f"{imports}\n{p}\n\n{doc['test']}\n" for p in results[0]], PLUS_TIMEOUT_S)}
