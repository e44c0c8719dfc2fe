# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""A per-step trace of the soft state during `diffusion_generate`, and a renderer for people.

With `output_history=True, return_dict_in_generate=True`, the output holds, per step, the canvas
(`history`) and a `SoftMaskTraceStep` (`sm_trace`): at every position that enters the next pass
soft-masked, the top candidate token, its weight pi_1 and the lambda actually applied.
`render_decoding` prints one line per step.

This file is copied into every saved checkpoint: it imports only torch.
"""

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class SoftMaskTraceStep:
    """The soft state of the canvas after one step: what the next forward pass receives.

    positions: (b, l) bool, the masked positions that carry SM feedback.
    top_ids: (n,) the most likely token at each (row-major order of `positions`).
    top_probs: (n,) its weight pi_1 in the blend.
    lam: (n,) lambda actually applied (schedule factor included); 0 = plain [MASK].
    """

    positions: torch.Tensor
    top_ids: torch.Tensor
    top_probs: torch.Tensor
    lam: torch.Tensor


def trace_step(feedback, soft_mask) -> Optional[SoftMaskTraceStep]:
    """The trace of a `SoftMaskFeedback` (None stays None): lambda = soft_mask(entropy) * scale."""
    if feedback is None:
        return None
    return SoftMaskTraceStep(feedback.positions, feedback.topk_ids[:, 0], feedback.topk_probs[:, 0],
                             feedback.lam(soft_mask))


def render_decoding(output, tokenizer=None, row: int = 0, prompt_length: int = 0,
                    mask_token_id: Optional[int] = None, mask_text: str = "_") -> str:
    """The decoding of one row, one line per step: committed tokens as text, plain masked positions
    as `mask_text`, and positions that carry SM feedback as `[candidate lam]` (top candidate, lambda).

    Needs `return_dict_in_generate=True, output_history=True`. `prompt_length` hides the prompt;
    the mask id defaults to the tokenizer's. Without a tokenizer, ids are shown.
    """
    if not output.history:
        raise ValueError("the output has no history: generate with return_dict_in_generate=True, output_history=True.")
    mask_token_id = getattr(tokenizer, "mask_token_id", None) if mask_token_id is None else mask_token_id
    if mask_token_id is None:
        raise ValueError("pass mask_token_id (model.config.mask_token_id): the tokenizer has none.")
    show = (lambda i: repr(tokenizer.decode([i]))) if tokenizer is not None else str
    trace = output.sm_trace or (None,) * len(output.history)
    lines = []
    for step, (canvas, state) in enumerate(zip(output.history, trace)):
        soft = {}
        if state is not None:
            cells = state.positions.nonzero().tolist()
            soft = {(r, c): (int(t), float(lam)) for (r, c), t, lam in zip(cells, state.top_ids, state.lam)}
        words = []
        for col, token in enumerate(canvas[row, prompt_length:].tolist(), start=prompt_length):
            if (row, col) in soft:
                words.append(f"[{show(soft[(row, col)][0])} {soft[(row, col)][1]:.2f}]")
            else:
                words.append(mask_text if token == mask_token_id else show(token))
        lines.append(f"step {step:>3}: " + " ".join(words))
    return "\n".join(lines)
