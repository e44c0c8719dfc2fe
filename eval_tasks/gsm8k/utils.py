# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""GSM8k, zero-shot instruct: the filter (`filter_gsm8k`) writes each response's final number
(sm_dream.evaluation.math_answers); `process_results` compares it to the gold number."""

from sm_dream.evaluation.math_answers import gsm8k_gold


def process_results(doc, results):
    """exact_match: the extracted number equals the number after the gold answer's `####`."""
    return {"exact_match": float(results[0] == gsm8k_gold(doc["answer"]))}
