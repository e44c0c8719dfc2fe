# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Block-wise semi-autoregressive decoding with KV caching, threshold decoding and SM.

This file is carried inside saved checkpoints: it imports only torch and its siblings.
"""

from typing import Optional

import torch

from .soft_masking import SoftMaskFeedback


def _row_index(positions: torch.Tensor) -> torch.Tensor:
    """(b, l) long map: the feedback row of each position, -1 where there is none."""
    index = torch.full(positions.shape, -1, dtype=torch.long, device=positions.device)
    index[positions] = torch.arange(int(positions.sum()), device=positions.device)
    return index


def window_feedback(feedback: Optional[SoftMaskFeedback], start: int, end: int) -> Optional[SoftMaskFeedback]:
    """The part of `feedback` for canvas columns [start, end), with positions of shape (b, end - start)."""
    if feedback is None:
        return None
    rows = _row_index(feedback.positions)[:, start:end]  # (b, w)
    keep = rows[rows >= 0]  # row-major order inside the window = row-major order of the rows kept
    return SoftMaskFeedback(
        positions=feedback.positions[:, start:end],
        entropy=feedback.entropy[keep],
        topk_ids=feedback.topk_ids[keep],
        topk_probs=feedback.topk_probs[keep],
        logits=None if feedback.logits is None else feedback.logits[keep],
        scale=feedback.scale,
    )


def merge_feedback(old: Optional[SoftMaskFeedback], new: Optional[SoftMaskFeedback]) -> Optional[SoftMaskFeedback]:
    """Feedback at the union of both position sets; where both have a row, `new` wins. No scale."""
    if old is None or new is None:
        return new if old is None else old
    positions = old.positions | new.positions  # (b, l)
    old_rows, new_rows = _row_index(old.positions)[positions], _row_index(new.positions)[positions]  # (n,)
    from_new = new_rows >= 0

    def pick(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        if a is None or b is None:
            return None
        out = a.new_empty((positions.sum().item(),) + tuple(a.shape[1:]))
        out[from_new] = b[new_rows[from_new]]
        out[~from_new] = a[old_rows[~from_new]]
        return out

    return SoftMaskFeedback(
        positions=positions,
        entropy=pick(old.entropy, new.entropy),
        topk_ids=pick(old.topk_ids, new.topk_ids),
        topk_probs=pick(old.topk_probs, new.topk_probs),
        logits=pick(old.logits, new.logits),
    )
