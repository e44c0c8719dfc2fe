# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""The forward (noising) process of SM finetuning: which response tokens are masked, at what t.

Per sample i (paper Algorithm 1 lines 3-4, Appendix A.2 item 5):

    t_i    ~ U(b_l, b_h)                         (0.2, 0.8) by default
    u_ij   ~ U(0, 1)                             one draw per position
    m_ij   = r_ij * [u_ij < t_i]                 r = response mask: prompt tokens are never masked
    m_ij  |= r_ij * [j = argmin_{r_ij} u_ij]     at least one masked token per row with a response
    sm_i   ~ Bernoulli(p_sm)                     whether sample i gets the soft-masked input

Forcing the response position with the smallest draw keeps the draw count fixed (no extra random
numbers), so a seeded draw is reproducible whatever the other rows hold.

Training draws from torch's global RNG (which `transformers.Trainer` seeds and restores on resume).
Validation passes one integer seed per example (`seeds`): each row then gets the same t, mask and SM
switch whatever the batch size, order or run, so validation losses are comparable across runs.
"""

from dataclasses import dataclass
from typing import Optional

import torch

# t is clamped below so that the 1/t loss weight stays finite when b_l = 0.
MIN_T = 1e-3


@dataclass
class NoiseDraw:
    """One draw of the forward process for a batch.

    t: (b,) float32 masking probability per sample.
    masked: (b, l) bool, the response positions replaced by [MASK] (and scored by the loss).
    sm_on: (b,) bool, the samples whose masked positions get the soft-masked input.
    """

    t: torch.Tensor
    masked: torch.Tensor
    sm_on: torch.Tensor


def check_noise_args(low: float, high: float, p_sm: float) -> None:
    """Raise ValueError naming the bad value of the time bounds or the SM probability."""
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"time bounds (b_l, b_h)=({low}, {high}) must satisfy 0 <= b_l <= b_h <= 1 (paper: 0.2, 0.8).")
    if not 0.0 <= p_sm <= 1.0:
        raise ValueError(f"p_sm={p_sm} must lie in [0, 1] (0.5 for Dream finetuning; 0 = binary baseline).")


def _masks_from_draws(response_mask: torch.Tensor, t: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """m = r & (u < t), plus the response position with the smallest u in every row with a response."""
    response_mask = response_mask.bool()
    masked = response_mask & (u < t[:, None])  # (b, l)
    first = u.masked_fill(~response_mask, 2.0).argmin(dim=-1)  # (b,)
    forced = torch.zeros_like(masked).scatter_(1, first[:, None], True) & response_mask
    return masked | forced


def sample_noise(
    response_mask: torch.Tensor,
    low: float = 0.2,
    high: float = 0.8,
    p_sm: float = 0.5,
    generator: Optional[torch.Generator] = None,
    seeds: Optional[torch.Tensor] = None,
) -> NoiseDraw:
    """Draw t, the response-only mask and the per-sample SM switch for a (b, l) response mask.

    With `seeds` ((b,) integers), row i uses a CPU generator seeded with seeds[i] (drawing t, then sm,
    then u) and the result does not depend on the rest of the batch; otherwise all rows draw from
    `generator` (or torch's global RNG) on the batch's device.
    """
    check_noise_args(low, high, p_sm)
    b, length = response_mask.shape
    device = response_mask.device
    if seeds is not None:
        draws = [_seeded_row(int(s), length) for s in seeds.tolist()]
        t01 = torch.stack([d[0] for d in draws]).to(device)  # (b,)
        sm01 = torch.stack([d[1] for d in draws]).to(device)  # (b,)
        u = torch.stack([d[2] for d in draws]).to(device)  # (b, l)
    else:
        t01 = torch.rand(b, device=device, generator=generator)
        sm01 = torch.rand(b, device=device, generator=generator)
        u = torch.rand(b, length, device=device, generator=generator)
    t = (low + (high - low) * t01).clamp_min(MIN_T)  # (b,)
    return NoiseDraw(t=t, masked=_masks_from_draws(response_mask, t, u), sm_on=sm01 < p_sm)


def _seeded_row(seed: int, length: int):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((), generator=g), torch.rand((), generator=g), torch.rand(length, generator=g)


def apply_mask(input_ids: torch.Tensor, masked: torch.Tensor, mask_token_id: int) -> torch.Tensor:
    """x_t: `input_ids` with [MASK] at the masked positions. (b, l)"""
    return input_ids.masked_fill(masked, mask_token_id)
