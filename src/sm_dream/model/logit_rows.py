# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""The one pass of a decoding step over its masked logit rows: candidates, confidences and SM feedback.

    rows = step_rows(raw_rows, alg, config, sm_k, generator, positions)

reads each (V,)-row once, in cache-sized chunks (`row_ops.py`), and gives what `suppress_tokens` ->
`sampling.sample_tokens` -> `algorithm.confidence` give, plus (with `sm_k`) the SM feedback of
`soft_masking.feedback_from_logits`. `suppress_tokens` is the one rule for ids that are never sampled.

This file is copied into every saved checkpoint: it imports only torch, transformers and its siblings.
"""

from typing import Callable, Dict, NamedTuple, Optional

import torch
from transformers.utils import logging

from .row_ops import RowBuffers, raw_softmax, row_dot, row_topk, rows_per_chunk
from .sampling import draw, truncated_candidates
from .soft_masking import SoftMaskFeedback, feedback_from_parts, feedback_parts
from .unmasking import get_unmasking_algorithm, is_builtin, uniform_confidence

logger = logging.get_logger(__name__)


def suppress_tokens(rows: torch.Tensor, mask_token_id: int, vocab_limit: int, fill: float = float("-inf"),
                    inplace: bool = False) -> torch.Tensor:
    """(n, V) `rows` with the ids that are never sampled set to `fill`: ids >= `vocab_limit` and the
    mask id. Without `inplace`, a float32 copy (never aliasing the caller's raw logits).

    Dream's embedding has rows with no tokenizer entry (151667..152063) and can sample them or the
    mask itself; here neither can be drawn.
    """
    out = rows if inplace else rows.float().clone()
    out[:, vocab_limit:] = fill
    out[:, mask_token_id] = fill
    return out


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
            suppress_tokens(f, *suppressed, inplace=True)
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
    if is_builtin(algorithm):
        return x0, alg.confidence(candidates.probs, columns, generator)
    return x0, alg.confidence(candidates.dense(), x0, generator)


def _fast(algorithm: str, config, model_confidence: bool) -> bool:
    """Whether `step_rows` takes the temperature-0 path of shared reductions: greedy tokens and a
    built-in confidence, whose closed forms `_fast_chunk` computes (p(x0) is maskgit_plus's)."""
    plain = not config.temperature and (config.top_p is None or config.top_p >= 1.0) and config.top_k is None
    builtin = is_builtin(algorithm)
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
    suppress_tokens(f, mask_token_id, vocab_limit, inplace=True)
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
            logger.warning("torch.compile of the decoding step failed (%s: %s); running it eagerly.",
                            type(err).__name__, err)
            _COMPILED["fast_chunk"] = None
            f.copy_(chunk)  # the compiled call may have suppressed ids in f already
            return _fast_chunk(f, *args)

    return run


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
        suppress_tokens(p, mask_token_id, vocab_limit, fill=0.0, inplace=True)  # q before renormalising
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
