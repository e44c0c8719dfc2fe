# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""GSM8k, zero-shot instruct: answer extraction for chat models (data: sm_dream.evaluation.eval_data)."""

from sm_dream.evaluation.gsm8k_answers import is_correct


def process_results(doc, results):
    """exact_match: the response's final number (`####`, `\\boxed{}`, "The answer is", else the last
    number; see `sm_dream.evaluation.gsm8k_answers`) equals the gold number."""
    return {"exact_match": float(is_correct(results[0], doc["answer"]))}
