# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""HumanEval(+) instruct tasks: program assembly and sandboxed scoring (data: sm_dream.evaluation.eval_data)."""

from sm_dream.evaluation.code_execution import code_before_fence, pass_at_1

TIMEOUT_S = 10.0
PLUS_TIMEOUT_S = 30.0  # EvalPlus runs each function on hundreds of inputs


def build_programs(resps, docs):
    """The function as the model completed it: the prompt, then the completion up to the closing
    fence (the assistant turn opened the block and repeated the prompt)."""
    return [[doc["prompt"] + code_before_fence(r) for r in resp] for resp, doc in zip(resps, docs)]


def _tests(doc) -> str:
    return f"\n\n{doc['test']}\n\ncheck({doc['entry_point']})\n"


def process_results(doc, results):
    """pass@1 of a HumanEval problem over its samples (`results[0]`: the programs of `build_programs`)."""
    return {"pass@1": pass_at_1([p + _tests(doc) for p in results[0]], TIMEOUT_S)}


def process_results_plus(doc, results):
    """pass@1 against the EvalPlus tests, with a longer timeout."""
    return {"pass@1": pass_at_1([p + _tests(doc) for p in results[0]], PLUS_TIMEOUT_S)}
