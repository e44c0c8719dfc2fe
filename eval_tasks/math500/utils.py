# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""MATH-500: the filter (`filter_math`) writes each solution's final answer (the last `\\boxed{}` or
"final answer is X", sm_dream.evaluation.math_answers); `process_results` compares it to the reference."""

from sm_dream.evaluation.math_answers import math_equivalent


def process_results(doc, results):
    """exact_match: the extracted answer equals the reference answer by math-verify."""
    return {"exact_match": float(math_equivalent(results[0], doc["answer"]))}
