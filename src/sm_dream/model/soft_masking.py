# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Soft-masking (SM): the feedback a still-masked position receives from the previous step.

For a position l that stays masked after a denoising step (paper eq. 1-2):

    p      = softmax(logits_l)                    raw distribution, temperature 1, full vocabulary
    H      = -sum_v p_v log p_v                   entropy in nats, float32, 0 log 0 = 0
    lam    = w_s * sigmoid(w_a * (-H - w_b))      in [0, w_s]
    pi     = top-k of p, renormalised to sum 1
    e_l    = (1 - lam) * E[mask] + lam * sum_i pi_i * E[topk_i]

The work is split in two so that one producer and one consumer exist:
- `feedback_from_logits` turns a step's (shift-aligned) logits into a parameter-free
  `SoftMaskFeedback` (entropy, top-k ids and weights) at the positions that need it.
- `SoftMaskParams` holds the trainable w_s, w_a, w_b (stored raw, read mapped) and maps entropy to
  lambda; `soft_masked_embeddings` blends, and is called by the model inside its `forward` so that
  gradients reach the parameters and sharded (ZeRO-3) weights are gathered.
- During decoding, `FeedbackStore` keeps the latest feedback of every masked position and applies
  the time schedule; `SoftMaskFeedback` selects, windows and merges its own rows.

This file is copied into every saved checkpoint: it imports only torch and its siblings.
"""

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .row_ops import RowBuffers, raw_softmax, row_dot, row_topk, rows_per_chunk


@dataclass
class SoftMaskFeedback:
    """Feedback for the next step, one row per position that had a prediction.

    positions: (b, l) bool, where the rows below belong (row-major order of `positions.nonzero()`).
    entropy: (n,) float32 entropy of the raw softmax at each position.
    topk_ids: (n, k) long, the k most likely tokens.
    topk_probs: (n, k) float32, their probabilities renormalised to sum 1.
    logits: (n, V) float32 raw logits, only for the full-vocabulary variant (else None).
    scale: (b,) float32 per-sequence factor on lambda (time schedule, per-sample SM switch), or None.
    """

    positions: torch.Tensor
    entropy: torch.Tensor
    topk_ids: torch.Tensor
    topk_probs: torch.Tensor
    logits: Optional[torch.Tensor] = None
    scale: Optional[torch.Tensor] = None

    def with_scale(self, scale) -> "SoftMaskFeedback":
        """A copy whose lambda is multiplied by `scale` (a float or a (b,) tensor)."""
        b = self.positions.shape[0]
        scale = torch.as_tensor(scale, dtype=torch.float32, device=self.positions.device).expand(b)
        if self.scale is not None:
            scale = scale * self.scale
        return SoftMaskFeedback(self.positions, self.entropy, self.topk_ids, self.topk_probs, self.logits, scale)

    def lam(self, params: "SoftMaskParams", rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        """lambda applied at each row (or at the (n,) bool `rows`): params(entropy) times the row's `scale`."""
        entropy = self.entropy if rows is None else self.entropy[rows]
        lam = params(entropy)  # (m,) float32
        if self.scale is not None:
            batch_of_row = self.positions.nonzero()[:, 0]
            lam = lam * self.scale.to(lam.device)[batch_of_row if rows is None else batch_of_row[rows]]
        return lam

    def select(self, keep: torch.Tensor) -> Optional["SoftMaskFeedback"]:
        """The rows at positions inside `keep` ((b, l) bool); None if none is left.

        Computing feedback for every predicted row and then selecting the ones still masked is cheaper
        than copying their (n, V) logits first."""
        positions = self.positions & keep
        if not bool(positions.any()):
            return None
        if torch.equal(positions, self.positions):
            return SoftMaskFeedback(positions, self.entropy, self.topk_ids, self.topk_probs, self.logits, self.scale)
        rows = _row_index(self.positions)[positions]  # (n,), row-major order of the kept positions
        logits = None if self.logits is None else self.logits[rows]
        return SoftMaskFeedback(positions, self.entropy[rows], self.topk_ids[rows], self.topk_probs[rows], logits,
                                self.scale)

    def window(self, start: int, end: int) -> Optional["SoftMaskFeedback"]:
        """The part for canvas columns [start, end), with positions of shape (b, end - start)."""
        columns = torch.zeros_like(self.positions)
        columns[:, start:end] = True
        inside = self.select(columns)
        if inside is not None:
            inside.positions = inside.positions[:, start:end]  # row-major order within the window is unchanged
        return inside

    @staticmethod
    def merge(old: Optional["SoftMaskFeedback"], new: Optional["SoftMaskFeedback"],
              keep: Optional[torch.Tensor] = None) -> Optional["SoftMaskFeedback"]:
        """Feedback at the union of both position sets (either may be None), restricted to `keep`
        ((b, l) bool, optional); where both have a row, `new` wins. The result has no scale."""
        if old is None or new is None:
            merged = new if old is None else old
            return merged if keep is None or merged is None else merged.select(keep)
        positions = old.positions | new.positions  # (b, l)
        if keep is not None:
            positions = positions & keep
        if not bool(positions.any()):
            return None
        old_rows, new_rows = _row_index(old.positions)[positions], _row_index(new.positions)[positions]  # (n,)
        from_new = new_rows >= 0

        def pick(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
            if a is None or b is None:
                return None
            out = a.new_empty((int(positions.sum()),) + tuple(a.shape[1:]))
            out[from_new] = b[new_rows[from_new]]
            out[~from_new] = a[old_rows[~from_new]]
            return out

        return SoftMaskFeedback(positions, pick(old.entropy, new.entropy), pick(old.topk_ids, new.topk_ids),
                                pick(old.topk_probs, new.topk_probs), pick(old.logits, new.logits))


def _row_index(positions: torch.Tensor) -> torch.Tensor:
    """(b, l) long map: the feedback row of each position, -1 where there is none."""
    index = torch.full(positions.shape, -1, dtype=torch.long, device=positions.device)
    index[positions] = torch.arange(int(positions.sum()), device=positions.device)
    return index


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of softmax(logits) over the last dim, computed in float32; 0 log 0 = 0."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    return -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)


def feedback_from_logits(
    logits: torch.Tensor,
    positions: torch.Tensor,
    k: int,
    full_vocab: bool = False,
    chunk_size: Optional[int] = None,
) -> SoftMaskFeedback:
    """The one place where a step's logits become SM feedback.

    Args:
        logits: shift-aligned logits, either (b, l, V) for every position or (n, V) rows that belong
            to `positions` in row-major order. Raw model logits: no temperature, top-p or top-k.
        positions: (b, l) bool, the positions that get feedback (those still masked).
        k: number of top tokens kept.
        full_vocab: also keep the float32 logits for the k = |V| variant.
        chunk_size: rows processed at a time, bounding the float32 (rows, V) work buffers; default
            cache-sized on CPU (`rows_per_chunk`), 64 rows elsewhere.

    A decoding step that also samples from the same rows gets this feedback from
    `logit_rows.step_rows`, which reads each row once for both.
    """
    rows = logits[positions] if logits.dim() == 3 else logits  # (n, V)
    if rows.shape[0] != int(positions.sum()):
        raise ValueError(f"got {rows.shape[0]} logit rows for {int(positions.sum())} positions")
    chunk_size = chunk_size or (rows_per_chunk(rows) if rows.device.type == "cpu" else 64)
    buffers = RowBuffers(rows, chunk_size)
    parts = []
    for chunk in rows.split(chunk_size):
        f, z, p = buffers.load(chunk)
        z, p, log_total = raw_softmax(f, z, p)
        parts.append(feedback_parts(z, p, log_total, k))
    return feedback_from_parts(parts, positions, k, rows if full_vocab else None)


def feedback_parts(z, p, log_total, k: int):
    """(entropy (c,), top-k ids (c, k), renormalised top-k weights (c, k)) of the rows of `raw_softmax`."""
    top_p, top_i = row_topk(p, k)  # (c, k)
    entropy = log_total - row_dot(p, z)  # H = -sum p log p = log S - sum p z
    return entropy, top_i, top_p / top_p.sum(-1, keepdim=True)


def feedback_from_parts(parts, positions: torch.Tensor, k: int, full_rows=None) -> SoftMaskFeedback:
    """Concatenate per-chunk `feedback_parts` into the `SoftMaskFeedback` for `positions`."""
    device = positions.device
    logits = None if full_rows is None else full_rows.float()
    if not parts:
        empty_ids = torch.zeros(0, k, dtype=torch.long, device=device)
        return SoftMaskFeedback(positions, torch.zeros(0, device=device), empty_ids, torch.zeros(0, k, device=device),
                                logits)
    entropy, ids, probs = (torch.cat(column) for column in zip(*parts))
    return SoftMaskFeedback(positions, entropy, ids, probs, logits)


class SoftMaskParams(nn.Module):
    """The trainable SM parameters: w_s = sigmoid(s_raw), w_a = softplus(a_raw), w_b = -softplus(b_raw).

    Each is stored with shape (1,) (DeepSpeed cannot broadcast 0-d parameters). With
    `full_vocab=True` a fourth parameter holds the blend temperature tau = softplus(tau_raw).
    Calling the module maps an entropy tensor to lambda.
    """

    def __init__(self, init: Dict[str, float]):
        super().__init__()
        for name, value in init.items():
            setattr(self, name, nn.Parameter(torch.tensor([float(value)])))
        self._init = dict(init)

    def reset_parameters(self) -> None:
        with torch.no_grad():
            for name, value in self._init.items():
                getattr(self, name).fill_(value)

    @property
    def w_s(self) -> torch.Tensor:
        return torch.sigmoid(self.s_raw.float())

    @property
    def w_a(self) -> torch.Tensor:
        return F.softplus(self.a_raw.float())

    @property
    def w_b(self) -> torch.Tensor:
        return -F.softplus(self.b_raw.float())

    @property
    def tau(self) -> torch.Tensor:
        return F.softplus(self.tau_raw.float())

    def mapped(self) -> Dict[str, float]:
        """The values a person reads: w_s, w_a, w_b (and tau), as floats."""
        out = {"w_s": self.w_s.item(), "w_a": self.w_a.item(), "w_b": self.w_b.item()}
        if hasattr(self, "tau_raw"):
            out["tau"] = self.tau.item()
        return out

    def forward(self, entropy: torch.Tensor) -> torch.Tensor:
        """lambda = w_s * sigmoid(w_a * (-H - w_b)), float32, same shape as `entropy`."""
        return self.w_s * torch.sigmoid(self.w_a * (-entropy.float() - self.w_b))


def soft_masked_embeddings(
    embeds: torch.Tensor,
    input_ids: torch.Tensor,
    mask_token_id: int,
    feedback: SoftMaskFeedback,
    params: SoftMaskParams,
    embed: nn.Module,
) -> torch.Tensor:
    """Blend SM feedback into `embeds` at positions that are masked in `input_ids` and have feedback.

    embeds: (b, l, d) token embeddings of `input_ids`, so masked rows hold E[mask].
    embed: the input embedding module; called on ids (k-row gather) or, for the full-vocabulary
        variant, on a (n, V) probability matrix (dense pi @ E). Other positions are returned unchanged.
    """
    keep = input_ids[feedback.positions] == mask_token_id  # (n,) rows still masked
    where = feedback.positions & (input_ids == mask_token_id)  # (b, l)
    if not bool(keep.any()):
        return embeds
    lam = feedback.lam(params, keep)  # (m,) float32
    if feedback.logits is not None:
        pi = torch.softmax(feedback.logits[keep] / params.tau, dim=-1)  # (m, V)
        target = embed(pi).float()  # (m, d)
    else:
        cand = embed(feedback.topk_ids[keep]).float()  # (m, k, d)
        target = (feedback.topk_probs[keep].unsqueeze(-1) * cand).sum(-2)  # (m, d)
    current = embeds[where].float()  # (m, d), E[mask]
    blended = (1.0 - lam).unsqueeze(-1) * current + lam.unsqueeze(-1) * target
    return embeds.index_put(tuple(where.nonzero().t()), blended.to(embeds.dtype))


# ----------------------------------------------------------------------------------------------
# Time-dependent SM at inference (paper, Appendix B.4). f = s / T is the fraction of steps done.


def _sm_then_binary(f: float, threshold: float) -> float:
    return 1.0 if f < 1.0 - threshold else 0.0


def _binary_then_sm(f: float, threshold: float) -> float:
    return 1.0 if f >= 1.0 - threshold else 0.0


SM_SCHEDULE_FUNCTIONS: Dict[str, Callable[[float, float], float]] = {
    "none": lambda f, threshold: 1.0,
    "sm_then_binary": _sm_then_binary,  # SM during the first (1 - t') of the steps
    "binary_then_sm": _binary_then_sm,  # SM during the last t' of the steps
    "linear_sm_to_binary": lambda f, threshold: 1.0 - f,
    "linear_binary_to_sm": lambda f, threshold: f,
}


def schedule_factor(name: str, step: int, total_steps: int, threshold: float = 0.2) -> float:
    """The factor on lambda at step `step` (0-based) of `total_steps` under schedule `name`."""
    if name not in SM_SCHEDULE_FUNCTIONS:
        raise ValueError(f"sm_schedule={name!r} is unknown; choose one of {list(SM_SCHEDULE_FUNCTIONS)}.")
    if total_steps <= 0:
        raise ValueError(f"total_steps={total_steps} must be positive.")
    return float(SM_SCHEDULE_FUNCTIONS[name](step / total_steps, threshold))


class FeedbackStore:
    """The latest SM feedback of every masked position during one generation (`denoising.py`).

    A pass that feeds back every mask (a block's refresh, every step of plain decoding) replaces the
    store; the other passes merge theirs into it. A pass reads it times the time schedule
    `sm_schedule`: f = step / steps with fixed steps, each row's decoded share of the N generated
    tokens with `threshold`. With fixed steps a pass whose feedback only reaches passes where the
    schedule gives 0 computes none (`needed`), and the store is cleared.
    """

    def __init__(self, config, prompt_length: int, refresh_interval: Optional[int]):
        self.config, self.prompt_length, self.refresh_interval = config, prompt_length, refresh_interval
        self.enabled = bool(config.soft_masking)
        self.feedback: Optional[SoftMaskFeedback] = None

    def needed(self, step: int, block_steps: Optional[int], global_step: int, one_block: bool) -> bool:
        """Whether feedback from this pass (the block's `step` of `block_steps`, None with threshold)
        can reach a pass with a nonzero schedule factor: the passes up to the next one that feeds back
        every mask (the next step with one block, else the block's next refresh)."""
        if not self.enabled:
            return False
        if block_steps is None:  # threshold: per-row schedule, no fixed step count
            return True
        interval = self.refresh_interval
        refresh = block_steps if interval is None else min(block_steps, (step // interval + 1) * interval)
        reach = 1 if one_block else refresh - step
        return any(self._fixed_scale(global_step + d) != 0.0 for d in range(1, reach + 1))

    def keep(self, x: torch.Tensor, targets: torch.Tensor, new: Optional[SoftMaskFeedback], replaces: bool,
             used: bool) -> None:
        """Keep this pass's feedback `new` (at `targets`) for the positions that are (still or again)
        masked in `x`; the other masks keep theirs."""
        if not self.enabled:
            return
        masked = x == self.config.mask_token_id
        if not used:
            self.feedback = None
        elif new is None:  # nothing this pass predicted stays masked
            self.feedback = None if self.feedback is None else self.feedback.select(masked)
        else:
            new = new.select(targets & masked)
            self.feedback = new if replaces else SoftMaskFeedback.merge(self.feedback, new, keep=masked)

    def read(self, x: torch.Tensor, global_step: int) -> Optional[SoftMaskFeedback]:
        """The stored feedback times the schedule factor at `global_step` (None where it is 0)."""
        if self.feedback is None or not self.enabled:
            return None
        scale = self._fixed_scale(global_step)
        if scale is not None:
            return None if scale == 0.0 else self.feedback.with_scale(scale)
        config = self.config
        generated = x[:, self.prompt_length:]
        decoded = (generated != config.mask_token_id).sum(-1).tolist()  # per row: f = decoded / N
        scales = [schedule_factor(config.sm_schedule, d, generated.shape[1], config.sm_threshold) for d in decoded]
        return None if max(scales) == 0.0 else self.feedback.with_scale(torch.tensor(scales))

    def _fixed_scale(self, global_step: int) -> Optional[float]:
        """The schedule factor at `global_step` with fixed steps; None with threshold (per row)."""
        config = self.config
        if config.threshold is not None:
            return None
        return schedule_factor(config.sm_schedule, global_step, config.steps, config.sm_threshold)
