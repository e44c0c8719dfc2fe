# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""HumanEval(+) instruct tasks: program assembly and sandboxed scoring (data: sm_dream.evaluation.eval_data)."""

from sm_dream.evaluation.code_execution import Tests, code_before_fence, score

TIMEOUT_S = 10.0
PLUS_TIMEOUT_S = 30.0  # EvalPlus runs each function on hundreds of inputs


def build_programs(resps, docs):
    """The function as the model completed it: the prompt, then the completion up to the closing
    fence (the assistant turn opened the block and repeated the prompt)."""
    return [[doc["prompt"] + code_before_fence(r) for r in resp] for resp, doc in zip(resps, docs)]


def tests(doc) -> Tests:
    """The judge runs the prompt (its imports and helper functions, e.g. `poly` of HumanEval/32) and
    the tests; `check` gets the program's entry point as a proxy."""
    return Tests(code=f"{doc['test']}\n\ncheck({doc['entry_point']})\n", prelude=doc["prompt"],
                 proxied=(doc["entry_point"],))


def process_results(doc, results):
    """pass@1 of a HumanEval problem over its samples (`results[0]`: the programs of `build_programs`),
    and `contained` (1.0: every program ran contained)."""
    return score(results[0], tests(doc), TIMEOUT_S)


def process_results_plus(doc, results):
    """pass@1 against the EvalPlus tests, with a longer timeout."""
    return score(results[0], tests(doc), PLUS_TIMEOUT_S)
