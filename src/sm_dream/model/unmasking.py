# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Unmasking: at a denoising step, which token each masked position would take and which take it.

One step of Dream's sampler (Dream's released `generation_utils.py`), split into reusable pieces so that a
block-wise or threshold loop can call the same functions:

    x0, probs   = sample_tokens(rows, temperature, top_p, top_k)      token candidates (`sampling.py`)
    confidence  = algorithm.confidence(probs, x0, generator)           float32, higher = unmask first
    counts      = tokens_to_unmask(num_masked, timesteps, step)        per row: floor(M (1 - s/t))
    unmask      = algorithm.select(confidence, candidates, plan)       (b, l) bool

`logit_rows.step_rows` does the first two lines and, for SM, the feedback in one pass over the rows:
the function a decoding loop calls once per step.

The algorithms live in `UNMASKING_ALGORITHMS`, keyed by name (Dream's `origin`, `maskgit_plus`,
`topk_margin`, `entropy`); `register_unmasking_algorithm` adds more.

Differences from Dream's code, all deliberate: confidences are float32 (Dream keeps
them in the logits dtype, bf16, where they tie); the count M is each row's own mask count (Dream uses
the batch mean, the same at batch size 1); suppressed ids never get sampled.

This file is copied into every saved checkpoint: it imports only torch.
"""

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch


# ----------------------------------------------------------------------------------------------
# Confidences: (probs (n, V), x0 (n,), generator) -> (n,) float32, higher = more confident.


def max_prob_confidence(probs, x0, generator=None) -> torch.Tensor:
    """maskgit_plus: the probability of the chosen token, p(x0)."""
    return probs.gather(-1, x0.unsqueeze(-1)).squeeze(-1)


def margin_confidence(probs, x0, generator=None) -> torch.Tensor:
    """topk_margin: p(top1) - p(top2)."""
    top2 = probs.topk(min(2, probs.shape[-1]), dim=-1).values  # (n, 2)
    return top2[:, 0] - top2[:, -1] if top2.shape[-1] == 2 else top2[:, 0]


def neg_entropy_confidence(probs, x0, generator=None) -> torch.Tensor:
    """entropy: sum_v p_v log(p_v + 1e-10), the negative entropy (Dream's epsilon)."""
    return (probs * torch.log(probs + 1e-10)).sum(-1)


def uniform_confidence(probs, x0, generator=None) -> torch.Tensor:
    """origin: a uniform draw u in [0, 1) per position; the position unmasks when u < 1 - s/t."""
    return torch.rand(probs.shape[0], device=probs.device, generator=generator)


# ----------------------------------------------------------------------------------------------
# Selection: which candidates take their token this step.


@dataclass
class StepPlan:
    """What a selection rule knows about the step.

    counts: (b,) long, tokens to unmask per row (`tokens_to_unmask`).
    transfer_prob: 1 - s/t (1 at the last step), origin's per-position unmasking probability.
    alg_temp: None or 0 = take the most confident; > 0 = sample positions from softmax(conf / alg_temp).
    """

    counts: torch.Tensor
    transfer_prob: float
    alg_temp: Optional[float] = None
    generator: Optional[torch.Generator] = None


def top_per_row(scores: torch.Tensor, candidates: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """(b, l) bool: in each row, the `counts[row]` candidates with the highest score.

    Ties go to the leftmost position (stable sort), so a left-padded row picks the same positions
    as the unpadded one.
    """
    scores = scores.masked_fill(~candidates, float("-inf"))
    order = scores.argsort(dim=-1, descending=True, stable=True)  # (b, l)
    rank_values = torch.arange(scores.shape[-1], device=scores.device).expand_as(order)
    ranks = torch.empty_like(order).scatter_(-1, order, rank_values)  # rank of each position
    return (ranks < counts.unsqueeze(-1)) & candidates


def select_most_confident(confidence: torch.Tensor, candidates: torch.Tensor, plan: StepPlan) -> torch.Tensor:
    """Per row, the `counts` most confident candidates; with alg_temp > 0, a sample without
    replacement from softmax(confidence / alg_temp) (Gumbel top-k, one draw for all rows)."""
    scores = confidence
    if plan.alg_temp:
        u = torch.rand(confidence.shape, device=confidence.device, generator=plan.generator)
        gumbel = -torch.log(-torch.log(u.clamp_min(torch.finfo(torch.float32).tiny)))
        scores = confidence / plan.alg_temp + gumbel  # (b, l)
    return top_per_row(scores, candidates, plan.counts)


def select_bernoulli(confidence: torch.Tensor, candidates: torch.Tensor, plan: StepPlan) -> torch.Tensor:
    """Each candidate independently, when its uniform draw is below 1 - s/t (Dream's `origin`)."""
    return candidates & (confidence < plan.transfer_prob)


@dataclass(frozen=True)
class UnmaskingAlgorithm:
    """A named way to unmask: a confidence per masked position and a rule that selects positions."""

    confidence: Callable[..., torch.Tensor]
    select: Callable[[torch.Tensor, torch.Tensor, StepPlan], torch.Tensor]


UNMASKING_ALGORITHMS: Dict[str, UnmaskingAlgorithm] = {
    "origin": UnmaskingAlgorithm(uniform_confidence, select_bernoulli),
    "maskgit_plus": UnmaskingAlgorithm(max_prob_confidence, select_most_confident),
    "topk_margin": UnmaskingAlgorithm(margin_confidence, select_most_confident),
    "entropy": UnmaskingAlgorithm(neg_entropy_confidence, select_most_confident),
}


_BUILTIN = dict(UNMASKING_ALGORITHMS)  # the algorithms `step_rows` may read off shared reductions


def is_builtin(name: str) -> bool:
    """Whether `name` is one of the four built-in algorithms (not replaced by a registered one), whose
    confidences `logit_rows.step_rows` may compute from shared reductions."""
    return get_unmasking_algorithm(name) is _BUILTIN.get(name)


def register_unmasking_algorithm(name: str, algorithm: UnmaskingAlgorithm) -> None:
    """Make `alg=name` available to `diffusion_generate` (and to generation-config validation)."""
    UNMASKING_ALGORITHMS[name] = algorithm


def get_unmasking_algorithm(name: str) -> UnmaskingAlgorithm:
    if name not in UNMASKING_ALGORITHMS:
        raise ValueError(f"alg={name!r} is unknown; choose one of {sorted(UNMASKING_ALGORITHMS)}.")
    return UNMASKING_ALGORITHMS[name]


# ----------------------------------------------------------------------------------------------
# Schedule: how many tokens each step unmasks.


def diffusion_timesteps(steps: int, eps: float, device=None) -> torch.Tensor:
    """Dream's time grid, linspace(1, eps, steps + 1) in float32: step i goes from t_i to t_{i+1}."""
    return torch.linspace(1.0, eps, steps + 1, device=device)


def transfer_probability(timesteps: torch.Tensor, step: int) -> float:
    """1 - s/t for step `step`, exactly 1 at the last step."""
    if step == timesteps.shape[0] - 2:
        return 1.0
    return float(1.0 - timesteps[step + 1] / timesteps[step])


def tokens_to_unmask(num_masked: torch.Tensor, timesteps: torch.Tensor, step: int) -> torch.Tensor:
    """Per row, floor(M (1 - s/t)) with M the row's own mask count; all of M at the last step.

    num_masked: (b,) long. The product is computed in float32 as Dream does, so at batch size 1 the
    counts equal Dream's (e.g. 256 tokens in 64 steps: 3, 4, ..., 4, 5).
    """
    if step == timesteps.shape[0] - 2:
        return num_masked
    t, s = timesteps[step], timesteps[step + 1]
    return (num_masked.float() * (1 - s / t)).long()  # (b,), truncation = floor for values >= 0
