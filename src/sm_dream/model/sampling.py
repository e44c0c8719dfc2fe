# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Dream's token sampling (temperature -> top-p -> top-k -> categorical draw) without sorting the vocabulary.

Dream's `sample_tokens` sorts every masked row (|V| = 152,064) to apply top-p, builds a softmax and calls
`torch.multinomial` over the whole vocabulary. At the paper's evaluation settings (temperature 0.1, top-p
0.9) the sort alone was most of a decoding step. Here each row's sampling distribution is kept as its
*candidates*, the tokens the filters keep, found without a sort:

    candidates = truncated_candidates(logits, temperature, top_p, top_k)   ids (n, K) and probs (n, K)
    x0         = draw(candidates, temperature, generator)                  (n,) candidate columns

`sample_tokens` is both in one call, with Dream's signature.

The result is Dream's, exactly:
- the same kept set: tokens sorted by logit (ties: lower id first) are dropped once the mass ranked
  before them exceeds top_p (at least one is kept); top-k keeps the tokens >= the k-th largest kept
  logit (ties at the k-th kept). Masses are summed in float64: a float32 sort-and-cumsum can move the
  cut of a very large nucleus (a random model's) by a few of its tens of thousands of tokens, where
  their masses round across top_p;
- the same draws from the same generator: `torch.multinomial(probs, 1)` draws x0 = argmax_v p_v / q_v
  with q ~ Exp(1), one per vocabulary entry, in row-major order. `draw` consumes the generator the same
  way and evaluates p / q at the candidates only (elsewhere p = 0). Those |V| random numbers per row
  remain the sampler's floor on CPU; `sampling_draws="inverse_cdf"` draws one uniform per row instead
  (the same distribution, another random stream).

Candidates come from a partial top-k of `FIRST_K` entries per row; rows whose nucleus is larger (flat
rows, e.g. a random model at low temperature) or whose cut falls inside a run of tied logits are
resolved by a mass histogram over logit bins, sorting only the bin the cut falls in.

This file is copied into every saved checkpoint: it imports only torch.
"""

from typing import NamedTuple, Optional

import torch

from .row_ops import row_topk

FIRST_K = 16  # partial top-k tried first: at temperature 0.1 a trained model's nucleus is a few tokens
_BINS = 4096  # histogram bins over the logit range [max - _SPAN, max]
_SPAN = 64.0  # below max - 64 a token's weight exp(z - max) < 1.7e-28: one bin holds that tail
MAX_CANDIDATES = 2048  # a larger kept set is held as a whole (n, V) row


class Candidates(NamedTuple):
    """A truncated sampling distribution per row.

    ids: (n, K) long vocabulary ids, or None when every id is a candidate (columns are ids).
    probs: (n, K) float32, summing to 1 per row; padding entries hold probability 0.
    vocab_size: V, the width of the rows they came from.
    """

    ids: Optional[torch.Tensor]
    probs: torch.Tensor
    vocab_size: int

    def vocabulary_ids(self, columns: torch.Tensor) -> torch.Tensor:
        """The token ids at candidate `columns` (n,)."""
        return columns if self.ids is None else self.ids.gather(-1, columns.unsqueeze(-1)).squeeze(-1)

    def dense(self) -> torch.Tensor:
        """(n, V) probabilities, zero outside the candidates."""
        if self.ids is None:
            return self.probs
        dense = self.probs.new_zeros(self.probs.shape[0], self.vocab_size)
        return dense.scatter_add_(-1, self.ids, self.probs)  # add: padding may repeat an id, with 0


def truncated_candidates(
    logits: torch.Tensor, temperature: float = 0.0, top_p: Optional[float] = None, top_k: Optional[int] = None
) -> Candidates:
    """The distribution Dream samples from: softmax(logits / temperature) after top-p, then top-k.

    logits: (n, V) float32 rows (suppressed ids at -inf). Temperature 0 leaves the logits as they are
    (`draw` then takes the most likely candidate).
    """
    z = logits / temperature if temperature > 0 else logits  # (n, V), Dream's division
    vocab = z.shape[-1]
    if (top_p is None or top_p >= 1.0) and top_k is None:
        return Candidates(None, z.softmax(-1), vocab)
    if top_p is not None and top_p < 1.0:
        ids, values = nucleus(z, top_p)
    else:
        ids, values = _at_least_kth(z, top_k)
        top_k = None  # applied
    if top_k is not None and top_k < values.shape[-1]:
        kth = values.topk(top_k, dim=-1).values[:, -1:]  # (n, 1); padding is -inf
        values = values.masked_fill(values < kth, float("-inf"))
    return Candidates(ids, values.softmax(-1), vocab)


SAMPLING_DRAWS = {  # generation config `sampling_draws`: how a token is drawn from a row's candidates
    "multinomial": "torch.multinomial's draw, one Exp(1) per vocabulary entry: Dream's tokens for a seed",
    "inverse_cdf": "one uniform per row against the candidates' cumulative mass: same distribution, cheaper",
}


def draw(candidates: Candidates, temperature: float, generator: Optional[torch.Generator] = None,
         method: str = "multinomial") -> torch.Tensor:
    """Candidate columns (n,): with temperature > 0 a draw from each row's candidates, else the most
    likely candidate (the lowest id on ties, as `argmax`).

    method "multinomial": what `torch.multinomial(dense probs, 1)` draws from the same generator.
    "inverse_cdf": the first candidate whose cumulative probability exceeds u ~ U[0, 1), one float64
    uniform per row: no per-vocabulary-entry random numbers (on CPU those cost as much as a row's LM
    head at Dream's vocabulary), but another random stream than Dream's sampler.
    """
    if method not in SAMPLING_DRAWS:
        raise ValueError(f"sampling_draws={method!r} is unknown; choose one of {list(SAMPLING_DRAWS)}.")
    probs = candidates.probs
    n = probs.shape[0]
    if temperature > 0 and n > 0 and method == "inverse_cdf":
        cumulative = probs.double().cumsum(-1)  # (n, K)
        u = torch.rand(n, 1, dtype=torch.float64, generator=generator, device=probs.device)
        point = u * cumulative[:, -1:]  # (n, 1)
        return torch.searchsorted(cumulative, point, right=True).squeeze(-1).clamp_max(probs.shape[-1] - 1)
    if temperature <= 0 or n == 0:
        scores = probs
    elif candidates.ids is None:  # whole rows
        return _multinomial_rows(probs, generator)
    else:  # multinomial's draw: argmax_v p_v / q_v, q ~ Exp(1) over the whole (n, V) matrix
        scores = probs / _exponentials_at(candidates.ids, n, candidates.vocab_size, generator, probs.device)
    if candidates.ids is None:
        return scores.argmax(-1)
    best = scores.amax(-1, keepdim=True)  # (n, 1)
    return torch.where(scores == best, candidates.ids, candidates.vocab_size).argmin(-1)  # lowest id


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
    distribution that Dream's confidences are computed from. The filters sort nothing;
    a decoding step keeps the distribution as its candidates (`logit_rows.step_rows`).
    """
    temperature = temperature or 0.0
    candidates = truncated_candidates(logits.float(), temperature, top_p, top_k)
    return candidates.vocabulary_ids(draw(candidates, temperature, generator)), candidates.dense()


def nucleus(z: torch.Tensor, top_p: float):
    """Dream's top-p kept set of each row of `z` (n, V) float32: (ids (n, K), their logits (n, K)), with
    padding (id 0, logit -inf); or (None, (n, V) logits with -inf outside the set) when a set is large."""
    values, ids = _sorted_top(z, min(FIRST_K, z.shape[-1]))  # (n, k), logit desc, id asc on ties
    top = values[:, :1]  # (n, 1) row max
    weights = _weights(z, top).double()  # (n, V) exp(z - max), summed in float64
    total = weights.sum(-1)  # (n,)
    first = (values - top).double().exp()  # (n, k)
    keep = first.cumsum(-1) - first <= top_p * total.unsqueeze(-1)  # mass ranked before <= top_p
    cut = keep.sum(-1, keepdim=True)  # (n, 1) kept among the first k: a prefix
    last = values.gather(-1, cut - 1)  # (n, 1) last kept logit
    after = values.gather(-1, cut.clamp_max(values.shape[-1] - 1))  # first dropped one
    settled = ((cut < values.shape[-1]) & (after < last)).squeeze(-1)  # cut inside, no tie across it
    values = values.masked_fill(~keep, float("-inf"))
    if bool(settled.all()):
        return ids, values
    rest = (~settled).nonzero().squeeze(-1)
    every = rest.numel() == z.shape[0]  # a flat chunk: no copies of its rows
    part = (lambda t: t) if every else (lambda t: t[rest])
    kept = _kept_by_histogram(part(z), part(weights), part(top), part(total), top_p)  # (r, V) bool
    if int(kept.sum(-1).max()) > MAX_CANDIDATES:  # whole rows; a settled row keeps exactly z >= last
        if every:
            return None, _outside_dropped(z, kept)
        dense = _outside_dropped(z, z >= last)
        dense[rest] = _outside_dropped(z[rest], kept)
        return None, dense
    wide_ids, wide_values = _padded_nonzero(kept, part(z))
    width = max(ids.shape[-1], wide_ids.shape[-1])
    ids, values = _pad(ids, values, width)
    ids[rest], values[rest] = _pad(wide_ids, wide_values, width)
    return ids, values


def _kept_by_histogram(z, weights, top, total, top_p: float) -> torch.Tensor:
    """`nucleus`'s kept set (r, V) bool for rows whose cut the first candidates do not settle; `weights`
    = exp(z - top), `total` their float64 row sums.

    Each token's weight goes to its logit bin (width _SPAN / _BINS below the row max `top`; the bins
    follow the logit order). Bins before the one where the cumulative mass passes top_p are kept whole,
    bins after it dropped, and only that bin is sorted (logit desc, id asc).
    """
    bins = torch.sub(top, z).mul_(_BINS / _SPAN).clamp_(0, _BINS - 1).long()  # (r, V); -inf -> last bin
    mass = torch.zeros(z.shape[0], _BINS, dtype=torch.float64, device=z.device)
    cumulative = mass.scatter_add_(-1, bins, weights).cumsum(-1)  # (r, B)
    limit = top_p * total.unsqueeze(-1)  # (r, 1)
    crossing = (cumulative <= limit).sum(-1, keepdim=True).clamp_max(_BINS - 1)  # (r, 1) first bin past it
    below = torch.where(crossing > 0, cumulative.gather(-1, (crossing - 1).clamp_min(0)), 0.0)  # (r, 1)
    edge_ids, edge_values = _padded_nonzero(bins == crossing, z)  # the crossing bin, in id order
    order = edge_values.sort(dim=-1, descending=True, stable=True).indices  # logit desc, id asc on ties
    edge_ids, edge_values = edge_ids.gather(-1, order), edge_values.gather(-1, order)
    edge_weights = (edge_values - top).double().exp()  # padding: 0
    edge_keep = (below + edge_weights.cumsum(-1) - edge_weights <= limit) & (edge_weights > 0)
    kept = bins < crossing  # (r, V)
    rows = torch.arange(z.shape[0], device=z.device).unsqueeze(-1).expand_as(edge_ids)
    kept[rows[edge_keep], edge_ids[edge_keep]] = True
    return kept


def _outside_dropped(z: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """z where `kept`, -1e30 elsewhere (-inf stays -inf): exp gives exactly 0 there, as at -inf. Built
    with arithmetic: CPU `masked_fill` / `where` on 152k-wide rows run ~5x slower."""
    return kept.float().sub_(1.0).mul_(1e30).add_(z)


def _weights(z: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """exp(z - top) per entry, floored at exp(-80): exponentials that land in float32's subnormal range
    (z - top in [-103, -87]) run ~40x slower on CPU, and mass below exp(-80) per token cannot move a
    cut (|V| exp(-80) < 1e-29 of a row's mass)."""
    return (z - top).clamp_min_(-80.0).exp_()


def _padded_nonzero(mask: torch.Tensor, z: torch.Tensor):
    """Per row, the ids where `mask` (r, V) holds, ascending, and their logits in `z`: (r, m) each,
    padded with id 0 and logit -inf."""
    counts = mask.sum(-1)  # (r,)
    rows, cols = mask.nonzero(as_tuple=True)  # row-major: ids ascending within a row
    slot = torch.arange(rows.shape[0], device=z.device) - (counts.cumsum(0) - counts)[rows]
    width = max(1, int(counts.max())) if counts.numel() else 1
    ids = torch.zeros(mask.shape[0], width, dtype=torch.long, device=z.device)
    values = z.new_full((mask.shape[0], width), float("-inf"))
    ids[rows, slot], values[rows, slot] = cols, z[rows, cols]
    return ids, values


def _pad(ids: torch.Tensor, values: torch.Tensor, width: int):
    """Candidates widened to `width` columns with padding (id 0, logit -inf)."""
    extra = width - ids.shape[-1]
    return (torch.nn.functional.pad(ids, (0, extra)),
            torch.nn.functional.pad(values, (0, extra), value=float("-inf")))


def _sorted_top(z: torch.Tensor, k: int):
    """The k largest logits per row and their ids, by logit (desc), ties by id (asc) as a stable sort."""
    values, ids = row_topk(z, k)  # tie order unspecified
    ids, by_id = ids.sort(-1)
    values = values.gather(-1, by_id)
    order = values.sort(dim=-1, descending=True, stable=True).indices
    return values.gather(-1, order), ids.gather(-1, order)


def _at_least_kth(z: torch.Tensor, top_k: int):
    """Dream's top-k kept set without top-p, the logits >= the k-th largest (ties at the k-th kept), as
    `nucleus` returns it."""
    values, ids = z.topk(min(top_k, z.shape[-1]), dim=-1)  # (n, k)
    kept = z >= values[:, -1:]  # (n, V)
    if bool((kept.sum(-1) == values.shape[-1]).all()):  # no tie beyond the k-th
        return ids, values
    return None, z.masked_fill(~kept, float("-inf"))


_EXACT_UNIFORMS = {}  # "cpu" -> whether float64 uniforms reproduce exponential_'s draws here


def _multinomial_rows(probs: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """`torch.multinomial(probs, 1)` of (n, V) rows, drawn alike from the same generator.

    On CPU the Exp(1) draws come from float64 uniforms (`_exponentials_at`); p / q is first ranked in
    float32 (relative error < 1e-6), and only entries within 1e-4 of a row's best are recomputed as
    exponential_ computes them, so the winner, ties to the lowest id included, is multinomial's.
    """
    n, vocab = probs.shape
    if probs.device.type != "cpu" or not _uniforms_reproduce_exponentials():
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    u = torch.rand(n, vocab, dtype=torch.float64, generator=generator)  # (n, V)
    rough = probs / u.float().neg_().log1p_().neg_()  # (n, V)
    near = rough >= rough.amax(-1, keepdim=True) * (1 - 1e-4)
    rows, cols = near.nonzero(as_tuple=True)
    exact = probs[rows, cols] / (-torch.log1p(-u[rows, cols])).float()
    best = exact.new_full((n,), -1.0).scatter_reduce_(0, rows, exact, "amax")
    winners = exact == best[rows]
    return cols.new_full((n,), vocab).scatter_reduce_(0, rows[winners], cols[winners], "amin")


def _exponentials_at(ids: Optional[torch.Tensor], n: int, vocab: int, generator: Optional[torch.Generator],
                     device: torch.device) -> torch.Tensor:
    """q ~ Exp(1) for an (n, vocab) float32 matrix, drawn as `Tensor.exponential_` draws it (and so
    `torch.multinomial`), read at `ids` (n, K) (None: all of it).

    On CPU, exponential_ turns one float64 uniform per entry into -log1p(-u): the same uniforms
    (`torch.rand` in float64, which advances the generator alike) with the logarithm taken at the
    candidates only cost a fraction. A check on first use confirms this torch build draws so;
    elsewhere, and if it does not, the whole matrix is drawn with exponential_.
    """
    if device.type == "cpu" and _uniforms_reproduce_exponentials():
        u = torch.rand(n, vocab, dtype=torch.float64, generator=generator)
        return (-torch.log1p(-(u if ids is None else u.gather(-1, ids)))).float()
    q = torch.empty(n, vocab, device=device).exponential_(generator=generator)
    return q if ids is None else q.gather(-1, ids)


def _uniforms_reproduce_exponentials() -> bool:
    if "cpu" not in _EXACT_UNIFORMS:
        a, b = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
        q = torch.empty(3, 1001).exponential_(generator=a)
        u = torch.rand(3, 1001, dtype=torch.float64, generator=b)
        same = torch.equal(q, (-torch.log1p(-u)).float()) and torch.equal(a.get_state(), b.get_state())
        _EXACT_UNIFORMS["cpu"] = same
    return _EXACT_UNIFORMS["cpu"]
