# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Blocks of the denoising loop (`denoising.py`) and the bookkeeping of SM feedback rows.

The canvas is the prompt (P tokens) followed by N masks, cut into blocks of `block_length` B:
[P + kB, P + (k + 1)B) (the last one may be shorter). Blocks are decoded left to right; each step
commits tokens *inside the active block only* (Fast-dLLM, Wu et al. 2025, Alg. 1). Plain decoding
(Dream's loop) is the one-block, no-cache plan. Without a cache the first block starts at column 0,
so a [MASK] inside the prompt (infilling, as in Dream's loop) is decoded with it; with a cache the
prompt is the cached prefix and is left as it is.

Fixed steps (threshold None) are split over the blocks: one each, the rest in proportion to block
length (steps / K each for equal blocks). With `threshold` a block runs until it has no mask.

This file is carried inside saved checkpoints: it imports only torch and its siblings.
"""

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

from .remasking import RemaskingSchedule, get_remasking_schedule
from .soft_masking import SoftMaskFeedback

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


# ----------------------------------------------------------------------------------------------
# SM feedback bookkeeping: feedback rows belong to canvas positions; these keep them together.


def _row_index(positions: torch.Tensor) -> torch.Tensor:
    """(b, l) long map: the feedback row of each position, -1 where there is none."""
    index = torch.full(positions.shape, -1, dtype=torch.long, device=positions.device)
    index[positions] = torch.arange(int(positions.sum()), device=positions.device)
    return index


def select_feedback(feedback: Optional[SoftMaskFeedback], keep: torch.Tensor) -> Optional[SoftMaskFeedback]:
    """The rows of `feedback` at positions inside `keep` ((b, l) bool); None if none is left.

    Computing feedback for every predicted row and then selecting the ones still masked is cheaper
    than copying their (n, V) logits first."""
    if feedback is None:
        return None
    positions = feedback.positions & keep
    if not bool(positions.any()):
        return None
    if torch.equal(positions, feedback.positions):
        return SoftMaskFeedback(positions, feedback.entropy, feedback.topk_ids, feedback.topk_probs,
                                feedback.logits, feedback.scale)
    rows = _row_index(feedback.positions)[positions]  # (n,), row-major order of the kept positions
    logits = None if feedback.logits is None else feedback.logits[rows]
    return SoftMaskFeedback(positions, feedback.entropy[rows], feedback.topk_ids[rows], feedback.topk_probs[rows],
                            logits, feedback.scale)


def window_feedback(feedback: Optional[SoftMaskFeedback], start: int, end: int) -> Optional[SoftMaskFeedback]:
    """The part of `feedback` for canvas columns [start, end), with positions of shape (b, end - start)."""
    if feedback is None:
        return None
    columns = torch.zeros_like(feedback.positions)
    columns[:, start:end] = True
    inside = select_feedback(feedback, columns)
    if inside is None:
        return None
    inside.positions = inside.positions[:, start:end]  # row-major order within the window is unchanged
    return inside


def merge_feedback(
    old: Optional[SoftMaskFeedback], new: Optional[SoftMaskFeedback], keep: Optional[torch.Tensor] = None
) -> Optional[SoftMaskFeedback]:
    """Feedback at the union of both position sets, restricted to `keep` ((b, l) bool, optional);
    where both have a row, `new` wins. The result has no scale."""
    if old is None or new is None:
        merged = new if old is None else old
        return merged if keep is None else select_feedback(merged, keep)
    positions = old.positions | new.positions  # (b, l)
    if keep is not None:
        positions = positions & keep
    old_rows, new_rows = _row_index(old.positions)[positions], _row_index(new.positions)[positions]  # (n,)
    from_new = new_rows >= 0

    def pick(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        if a is None or b is None:
            return None
        out = a.new_empty((int(positions.sum()),) + tuple(a.shape[1:]))
        out[from_new] = b[new_rows[from_new]]
        out[~from_new] = a[old_rows[~from_new]]
        return out

    if not bool(positions.any()):
        return None
    return SoftMaskFeedback(
        positions=positions,
        entropy=pick(old.entropy, new.entropy),
        topk_ids=pick(old.topk_ids, new.topk_ids),
        topk_probs=pick(old.topk_probs, new.topk_probs),
        logits=pick(old.logits, new.logits),
    )
