# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""MATH-500: final-answer scoring with math-verify for equivalent forms (data: sm_dream.evaluation.eval_data)."""

from sm_dream.evaluation.math_answers import is_equivalent


def process_results(doc, results):
    """exact_match: the last \\boxed{} (or "final answer is X") equals the reference answer, after
    normalisation or symbolically with math-verify (see `sm_dream.evaluation.math_answers`)."""
    return {"exact_match": float(is_equivalent(results[0], doc["answer"]))}
