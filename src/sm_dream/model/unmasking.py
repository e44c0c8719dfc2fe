# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Unmasking: at a denoising step, which token each masked position would take and which take it.

One step of Dream's sampler (Dream's released `generation_utils.py`), split into reusable pieces so that a
block-wise or threshold loop can call the same functions:

    x0, probs   = sample_tokens(rows, temperature, top_p, top_k)      token candidates per masked row
    confidence  = algorithm.confidence(probs, x0, generator)           float32, higher = unmask first
    counts      = tokens_to_unmask(num_masked, timesteps, step)        per row: floor(M (1 - s/t))
    unmask      = algorithm.select(confidence, candidates, plan)       (b, l) bool

`step_rows(rows, alg, config, sm_k, generator, positions)` does the first two lines and, for SM, the
feedback of `soft_masking.feedback_from_logits` in one pass over the rows (one read of each row, one
softmax at temperature 0): the function a decoding loop calls once per step.

The algorithms live in `UNMASKING_ALGORITHMS`, keyed by name (Dream's `origin`, `maskgit_plus`,
`topk_margin`, `entropy`); `register_unmasking_algorithm` adds more.

Differences from Dream's code, all deliberate: confidences are float32 (Dream keeps
them in the logits dtype, bf16, where they tie); the count M is each row's own mask count (Dream uses
the batch mean, the same at batch size 1); suppressed ids never get sampled.

This file is copied into every saved checkpoint: it imports only torch.
"""

import logging
from dataclasses import dataclass
from typing import Callable, Dict, NamedTuple, Optional

import torch

from .sampling import draw, truncated_candidates
from .soft_masking import (  # rows_per_chunk is re-exported: decoding loops import it from here
    RowBuffers,
    SoftMaskFeedback,
    feedback_from_parts,
    feedback_parts,
    raw_softmax,
    row_dot,
    row_topk,
    rows_per_chunk,
)


_logger = logging.getLogger(__name__)


def suppress_tokens(logits: torch.Tensor, mask_token_id: int, vocab_limit: int) -> torch.Tensor:
    """A float32 copy of (n, V) `logits` where ids >= `vocab_limit` and the mask id are -inf.

    Dream's embedding has rows with no tokenizer entry (151667..152063) and can sample them or the
    mask itself; here neither can be drawn.
    """
    out = logits.float().clone()  # (n, V), never aliases the caller's (raw) logits
    out[:, vocab_limit:] = float("-inf")
    out[:, mask_token_id] = float("-inf")
    return out


def sample_tokens(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_p: Optional[float] = None,
    top_k: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
):
    """Dream's `sample_tokens` on float32 rows: candidate tokens and the distribution they came from.

    logits / temperature (if > 0) -> top-p filter (if < 1) -> top-k filter (if set) -> probs =
    softmax. With temperature > 0, x0 ~ Categorical(probs), drawn as `torch.multinomial` draws; else
    x0 = argmax (first on ties). Returns x0 (n,) long and probs (n, V) float32: the tempered, truncated
    distribution that Dream's confidences are computed from. The filters sort nothing
    (`sampling.py`); a decoding step keeps the distribution as its candidates (`step_rows`).
    """
    temperature = temperature or 0.0
    candidates = truncated_candidates(logits.float(), temperature, top_p, top_k)
    return candidates.vocabulary_ids(draw(candidates, temperature, generator)), candidates.dense()


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


def register_unmasking_algorithm(name: str, algorithm: UnmaskingAlgorithm) -> None:
    """Make `alg=name` available to `diffusion_generate` (and to generation-config validation)."""
    UNMASKING_ALGORITHMS[name] = algorithm


def get_unmasking_algorithm(name: str) -> UnmaskingAlgorithm:
    if name not in UNMASKING_ALGORITHMS:
        raise ValueError(f"alg={name!r} is unknown; choose one of {sorted(UNMASKING_ALGORITHMS)}.")
    return UNMASKING_ALGORITHMS[name]


# ----------------------------------------------------------------------------------------------
# The fused per-step pass: everything a step needs from the masked rows, from one read of them.


class StepRows(NamedTuple):
    """tokens (n,) long candidates, confidence (n,) float32, feedback: `SoftMaskFeedback` or None."""

    tokens: torch.Tensor
    confidence: torch.Tensor
    feedback: Optional[SoftMaskFeedback]


def step_rows(
    raw_rows: torch.Tensor,
    algorithm: str,
    config,
    sm_k: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    positions: Optional[torch.Tensor] = None,
    chunk_size: Optional[int] = None,
    full_vocab: bool = False,
    model_confidence: bool = False,
) -> StepRows:
    """One step's work on its (n, V) raw logit rows, each row read once, in cache-sized chunks.

    Returns what `suppress_tokens` -> `sample_tokens` -> `algorithm.confidence` give (the same
    tokens; `generator` draws in the same order) and, with `sm_k`, the SM feedback of
    `feedback_from_logits(raw_rows, positions, sm_k, full_vocab)` for the (b, l) bool `positions` the
    rows belong to. config: mask_token_id, tokenizer_vocab_size, temperature, top_p, top_k.

    At temperature 0 without top-p / top-k and with a built-in algorithm, one softmax serves all: the
    allowed distribution is the raw one with the suppressed ids zeroed and renormalised, so the SM
    entropy and top-k, the argmax and the confidence (p(x0), p1 - p2, or sum p log p: the same
    reduction as the SM entropy; Dream's +1e-10 inside the log is dropped, a difference below
    V * 1e-10) come from one exp per element. Otherwise the float32 copy is shared and the sampling
    distribution is built from it as `sample_tokens` does.

    model_confidence: the confidence is p(x0) under the model's allowed distribution at temperature 1
    (softmax of the suppressed rows), whatever the sampling settings: threshold decoding's rule (use
    `algorithm="maskgit_plus"`). At temperature 0 without top-p / top-k it is maskgit_plus's.
    """
    if sm_k is not None and (positions is None or int(positions.sum()) != raw_rows.shape[0]):
        got = None if positions is None else int(positions.sum())
        raise ValueError(f"sm_k={sm_k} needs the (b, l) positions of the {raw_rows.shape[0]} rows; "
                         f"got {got} positions.")
    get_unmasking_algorithm(algorithm)  # unknown names fail here, before any work
    fast = _fast(algorithm, config, model_confidence)
    suppressed = (config.mask_token_id, config.tokenizer_vocab_size)
    chunk_size = chunk_size or rows_per_chunk(raw_rows)
    buffers = RowBuffers(raw_rows, chunk_size)
    run_fast = _fast_chunk_runner(raw_rows.device) if fast else None
    tokens, confidences, parts = [], [], []
    for chunk in raw_rows.split(chunk_size):
        f, z, p = buffers.load(chunk)
        if fast:
            part, x0, conf = run_fast(chunk, f, z, p, sm_k, algorithm, *suppressed)
            conf = uniform_confidence(f, None, generator) if conf is None else conf  # origin
        else:
            part = feedback_parts(*raw_softmax(f, z, p), sm_k) if sm_k is not None else None
            _suppress_(f, *suppressed)
            x0, conf = _sampled_chunk(f, p, algorithm, config, generator, model_confidence)
        parts += [part] if part is not None else []
        tokens.append(x0)
        confidences.append(conf)
    feedback = None if sm_k is None else feedback_from_parts(parts, positions, sm_k, raw_rows if full_vocab else None)
    if not tokens:
        device = raw_rows.device
        return StepRows(torch.zeros(0, dtype=torch.long, device=device), torch.zeros(0, device=device), feedback)
    return StepRows(torch.cat(tokens), torch.cat(confidences).float(), feedback)


def _sampled_chunk(f, p, algorithm: str, config, generator, model_confidence: bool):
    """Candidates x0 and confidences of the allowed rows `f` as `sample_tokens` -> `confidence` give
    them, from the truncated distribution's candidates: a built-in confidence reads them alone
    (columns for ids, the dense zeros add nothing), a registered one gets the dense (n, V) rows."""
    temperature = config.temperature or 0.0
    candidates = truncated_candidates(f, temperature, config.top_p, config.top_k)
    columns = draw(candidates, temperature, generator, config.sampling_draws)
    x0 = candidates.vocabulary_ids(columns)
    if model_confidence:
        return x0, _model_p(f, p, x0)
    alg = get_unmasking_algorithm(algorithm)
    if alg is _BUILTIN.get(algorithm):
        return x0, alg.confidence(candidates.probs, columns, generator)
    return x0, alg.confidence(candidates.dense(), x0, generator)


def _fast(algorithm: str, config, model_confidence: bool) -> bool:
    """Whether `step_rows` takes the temperature-0 path of shared reductions: greedy tokens and a
    built-in confidence, whose closed forms `_fast_chunk` computes (p(x0) is maskgit_plus's)."""
    plain = not config.temperature and (config.top_p is None or config.top_p >= 1.0) and config.top_k is None
    builtin = get_unmasking_algorithm(algorithm) is _BUILTIN.get(algorithm)
    return plain and builtin and (not model_confidence or algorithm == "maskgit_plus")


def rows_read_alone(algorithm: str, config, model_confidence: bool = False) -> bool:
    """True when `step_rows` draws no random numbers (greedy tokens and a deterministic built-in
    confidence: not `origin`), so that what it gives for a row does not depend on the other rows it
    reads: a caller may pass extra rows and keep the ones it needs."""
    return _fast(algorithm, config, model_confidence) and algorithm != "origin"


def _model_p(f: torch.Tensor, p: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """p(x0) under softmax(f), the allowed rows at temperature 1, computed in the buffer p."""
    torch.ops.aten._softmax.out(f, -1, False, out=p)
    return p.gather(-1, x0.unsqueeze(-1)).squeeze(-1)


def _fast_chunk(f, z, p, sm_k: Optional[int], algorithm: str, mask_token_id: int, vocab_limit: int):
    """The temperature-0 step on one chunk loaded in `f`: (SM feedback parts or None, x0, confidence,
    None for `origin`, whose uniform draw stays outside so that it uses the caller's generator)."""
    raw = raw_softmax(f, z, p) if sm_k is not None else None  # (z, p, log S) of the raw rows
    part = feedback_parts(*raw, sm_k) if raw is not None else None
    _suppress_(f, mask_token_id, vocab_limit)
    if algorithm == "origin":
        return part, row_topk(f, 1)[1].squeeze(-1), None
    x0, conf = _allowed_confidence(f, z, p, raw, algorithm, mask_token_id, vocab_limit)
    return part, x0, conf


_COMPILED: Dict[str, Optional[Callable]] = {}  # "fast_chunk" -> the compiled `_fast_chunk`, None once it failed


def _fast_chunk_runner(device: torch.device) -> Callable:
    """`_fast_chunk` for rows on `device`, called as run(chunk, f, z, p, ...).

    On CUDA it runs under `torch.compile` (the row reductions fuse into a few kernels); if compiling
    fails, a warning is logged and eager mode is used from then on. Elsewhere (CPU) it runs eagerly:
    the chunked eager pass is already cache-bound there.
    """

    def eager(chunk, f, *args):
        return _fast_chunk(f, *args)

    if device.type != "cuda" or not hasattr(torch, "compile") or _COMPILED.get("fast_chunk", True) is None:
        return eager
    if "fast_chunk" not in _COMPILED:
        _COMPILED["fast_chunk"] = torch.compile(_fast_chunk, dynamic=True)
    compiled = _COMPILED["fast_chunk"]

    def run(chunk, f, *args):
        try:
            return compiled(f, *args)
        except Exception as err:  # a backend without a compiler (no Triton, old driver): stay eager
            _logger.warning("torch.compile of the decoding step failed (%s: %s); running it eagerly.",
                            type(err).__name__, err)
            _COMPILED["fast_chunk"] = None
            f.copy_(chunk)  # the compiled call may have suppressed ids in f already
            return _fast_chunk(f, *args)

    return run


def _suppress_(f: torch.Tensor, mask_token_id: int, vocab_limit: int) -> None:
    """`suppress_tokens` in place on a float32 work copy."""
    f[:, vocab_limit:] = float("-inf")
    f[:, mask_token_id] = float("-inf")


def _allowed_confidence(f, z, p, raw, algorithm: str, mask_token_id: int, vocab_limit: int):
    """x0 = argmax of the allowed logits `f` (suppressed ids at -inf) and its confidence under q =
    softmax(f), the allowed distribution.

    With `raw` = (z, p, log S) of the raw rows (SM on), q is p with the suppressed ids zeroed, divided
    by their remaining mass A: log q = z - log S - log A. Rows whose allowed max lies 60 nats below the
    raw max (where those p could underflow) are recomputed from f. Overwrites z and p.
    """
    top, x0 = row_topk(f, 1)  # (c, 1) each
    if raw is None:
        z, p, log_total = raw_softmax(f, z, p, shift=top)  # p = q
    else:
        log_total = raw[2]
        p[:, vocab_limit:] = 0.0
        p[:, mask_token_id] = 0.0
        far = (z.gather(-1, x0) < -60.0).view(-1).nonzero()[:, 0]  # allowed max - raw max
        if far.numel():  # a dominant suppressed id: those rows' q from their own softmax
            zf, pf, log_total[far] = raw_softmax(f[far], torch.empty_like(f[far]), torch.empty_like(f[far]), top[far])
            z[far], p[far] = zf, pf
    mass = p.sum(-1)  # (c,) A
    x0 = x0.squeeze(-1)
    if algorithm == "maskgit_plus":
        return x0, p.gather(-1, x0.unsqueeze(-1)).squeeze(-1) / mass
    if algorithm == "topk_margin":
        top2 = row_topk(p, min(2, p.shape[-1]))[0]  # (c, 2)
        return x0, ((top2[:, 0] - top2[:, -1]) if top2.shape[-1] == 2 else top2[:, 0]) / mass
    return x0, row_dot(p, z) / mass - log_total - mass.log()  # sum_v q_v log q_v


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
