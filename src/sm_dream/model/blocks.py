# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Blocks of the denoising loop (`denoising.py`): where they lie, how many steps each gets.

The canvas is the prompt (P tokens) followed by N masks, cut into blocks of `block_length` B:
[P + kB, P + (k + 1)B) (the last one may be shorter). Blocks are decoded left to right; each step
commits tokens *inside the active block only* (Fast-dLLM, Wu et al. 2025, Alg. 1). Plain decoding
(Dream's loop) is the one-block, no-cache plan. Without a cache the first block starts at column 0,
so a [MASK] inside the prompt (infilling, as in Dream's loop) is decoded with it; with a cache the
prompt is the cached prefix and is left as it is.

Fixed steps (threshold None) are split over the blocks: one each, the rest in proportion to block
length (steps / K each for equal blocks). With `threshold` a block runs until it has no mask.

This file is carried inside saved checkpoints: it imports only its siblings.
"""

from dataclasses import dataclass
from typing import List, Optional, Tuple

from .remasking import RemaskingSchedule, get_remasking_schedule

# Generation-config fields of blocks, caches, threshold and ReMDM and their defaults (see
# `SoftMaskDreamGenerationConfig`).
FAST_DECODING_DEFAULTS = dict(
    block_length=None,
    use_cache=False,
    dual_cache=False,
    cache_refresh_interval=None,
    sm_feedback_horizon=None,
    threshold=None,
    remasking=None,
    remasking_eta=None,
    remasking_t_on=None,
    remasking_t_off=None,
    remasking_alpha_on=None,
)
DEFAULT_CACHED_BLOCK_LENGTH = 32


@dataclass
class BlockPlan:
    """blocks: canvas [start, end) per block; steps: fixed steps per block (None with threshold);
    feedback_horizon: how many positions after the active block a refresh feeds back (SM)."""

    blocks: List[Tuple[int, int]]
    steps: List[Optional[int]]
    cache_kind: Optional[str]
    refresh_interval: Optional[int]
    remasking: RemaskingSchedule
    feedback_horizon: int


def plan_blocks(config, prompt_length: int, new_tokens: int) -> BlockPlan:
    """Blocks, per-block steps, cache kind and remasking schedule of a validated config (steps resolved).

    ValueError when fixed steps cannot give every block one step."""
    cache_kind = "dual" if config.dual_cache else ("prefix" if config.use_cache else None)
    length = config.block_length or (DEFAULT_CACHED_BLOCK_LENGTH if cache_kind else new_tokens)
    length = min(length, new_tokens)
    starts = list(range(prompt_length, prompt_length + new_tokens, length))
    blocks = [(s, min(s + length, prompt_length + new_tokens)) for s in starts]
    if cache_kind is None:  # every pass sees the whole canvas: prompt masks decode with the first block
        blocks[0] = (0, blocks[0][1])
    steps: List[Optional[int]] = [None] * len(blocks)
    if config.threshold is None:
        if config.steps < len(blocks):
            raise ValueError(
                f"steps={config.steps} cannot give each of the {len(blocks)} blocks of block_length={length} a step; "
                "raise steps (or nfe_budget) or block_length."
            )
        # One step per block, the rest in proportion to block length (cumulative rounding): equal
        # blocks get steps / K each.
        spare = config.steps - len(blocks)
        bounds = [k + 1 + round(spare * (end - prompt_length) / new_tokens) for k, (_, end) in enumerate(blocks)]
        steps = [b - a for a, b in zip([0] + bounds[:-1], bounds)]
    schedule = get_remasking_schedule(
        config.remasking, eta=config.remasking_eta, t_on=config.remasking_t_on,
        t_off=config.remasking_t_off, alpha_on=config.remasking_alpha_on,
    )
    horizon = length if config.sm_feedback_horizon is None else int(config.sm_feedback_horizon)
    return BlockPlan(blocks, steps, cache_kind, config.cache_refresh_interval, schedule, horizon)
