# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""MATH-500: final-answer scoring without extra dependencies (data: sm_dream.evaluation.eval_data)."""

from sm_dream.evaluation.math_answers import answers_match, final_answer


def process_results(doc, results):
    """exact_match: the last \\boxed{} (or "final answer is X") equals the reference answer after
    normalisation (see `sm_dream.evaluation.math_answers`)."""
    return {"exact_match": float(answers_match(final_answer(results[0]), doc["answer"]))}
