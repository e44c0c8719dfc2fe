# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Dream's two position conventions, shared by the model and the decoding loop.

`shift_right`: Dream predicts the token at position j from the hidden state at j - 1, so every
consumer of logits (loss, generation, SM feedback) aligns them with this one function.
`default_position_ids`: left padding does not shift the real tokens' positions.

This file is carried inside saved checkpoints: it imports only torch.
"""

import torch


def shift_right(x: torch.Tensor) -> torch.Tensor:
    """Dream's alignment: row j of the result is row j-1 of `x` (row 0 kept), along dim 1."""
    return torch.cat([x[:, :1], x[:, :-1]], dim=1)


def default_position_ids(attention_mask, batch: int, length: int, offset: int, device) -> torch.Tensor:
    """Dream's positions: left padding does not shift the real tokens (cumsum of the 2D mask - 1)."""
    if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2 and not bool(attention_mask.all()):
        pos = attention_mask.long().cumsum(-1) - 1
        return pos.masked_fill(attention_mask == 0, 1)[:, -length:]
    return torch.arange(offset, offset + length, device=device).unsqueeze(0).expand(batch, length)
