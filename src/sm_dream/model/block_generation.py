# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Fast decoding: block-wise semi-autoregressive steps, KV caching, threshold decoding and ReMDM, with SM.

The canvas is the prompt (P tokens) followed by N masks, cut into blocks of `block_length` B:
[P + kB, P + (k + 1)B) (the last one may be shorter). Blocks are decoded left to right; each step
runs the model and commits tokens *inside the active block only* (Fast-dLLM, Wu et al. 2025, Alg. 1).

Per block, the first step is a *refresh*: a full forward over the canvas, which records the KV
cache (`use_cache=True`: prefix cache; `dual_cache=True`: prefix + suffix cache). The other steps
run a window against the cache: [b0 - 1, L) (prefix) or [b0 - 1, b1) (dual) for the block
[b0, b1). The window starts one position early because Dream predicts position j from the hidden
state at j - 1: the first block position gets a fresh prediction at every step and is committed by
the same confidence rule as the others (Fast-dLLM's code instead commits it unconditionally in the
refresh pass). `cache_refresh_interval=n` also refreshes every n steps inside a block (1 = every
step, i.e. exact uncached decoding). Without a cache every step is a full forward.

What a step commits in the block (with M_b its masks in a row):
    fixed steps     (threshold None): the `steps` are split over the blocks (one each, the rest in
                    proportion to block length: steps / K each for equal blocks); block k
                    runs Dream's algorithm `alg` on linspace(1, eps, steps_k + 1): floor(M_b (1 - s/t))
                    per row, all at the block's last step.
    threshold tau:  every masked block position whose confidence p(x0) (the model's probability of
                    its sampled token, softmax at temperature 1: `threshold_commit`) is >= tau, and at
                    least the most confident one per row that still has masks. `alg`/`alg_temp`/`steps` are unused;
                    tau > 1 commits one token per step, tau = 0 fills a block in one step. Rows that
                    finish a block early wait (commit nothing) until every row has finished it.
    remasking:      ReMDM (`remasking.py`) on the block's time grid: masks decode with p_unmask
                    (`origin`: each independently; confidence algorithms: floor(M_b p_unmask) most
                    confident) and tokens the generation decoded in the block before this step are
                    remasked with probability sigma_t. Needs fixed steps (not `threshold`).

Soft-masking. A pass produces SM feedback (`feedback_from_logits`) at the masked positions it
predicts: a full pass at every masked position of the canvas, a window pass at the masked positions
of the active block (plus the block's remasking candidates). Every masked position enters a pass
with the latest feedback it has: the active block's masks get the previous step's, the suffix
masks (positions after the block) get those of the last full pass, i.e. the previous refresh; the
first pass has none. So with a prefix cache the suffix inputs inside a block are exactly the ones
its dual-cache K/V were computed from, and without a cache every mask gets the previous step's
feedback, as in the plain loop. Time schedules (`sm_schedule`) use f = step / steps with fixed
steps, and each row's decoded share of the N tokens with `threshold`.

This file is carried inside saved checkpoints: it imports only torch and its siblings.
"""

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

from .cache import BlockKVCache, make_kv_cache
from .decoding_trace import trace_step
from .remasking import RemaskingSchedule, get_remasking_schedule, remask_plan, sample_remask
from .soft_masking import SoftMaskFeedback, feedback_from_logits, schedule_factor
from .unmasking import (
    StepPlan,
    diffusion_timesteps,
    get_unmasking_algorithm,
    max_prob_confidence,
    rows_per_chunk,
    sample_tokens,
    suppress_tokens,
    tokens_to_unmask,
    top_per_row,
    transfer_probability,
)

# Generation-config fields of fast decoding and their defaults (see `SoftMaskDreamGenerationConfig`).
FAST_DECODING_DEFAULTS = dict(
    block_length=None,
    use_cache=False,
    dual_cache=False,
    cache_refresh_interval=None,
    threshold=None,
    remasking=None,
    remasking_eta=None,
    remasking_t_on=None,
    remasking_t_off=None,
    remasking_alpha_on=None,
)
DEFAULT_CACHED_BLOCK_LENGTH = 32


def uses_fast_decoding(config) -> bool:
    """Whether `diffusion_generate` must take the block loop instead of Dream's plain loop."""
    return (
        config.block_length is not None
        or bool(config.use_cache or config.dual_cache)
        or config.threshold is not None
        or config.remasking not in (None, "none")
    )


@dataclass
class BlockPlan:
    """blocks: canvas [start, end) per block; steps: fixed steps per block (None with threshold)."""

    blocks: List[Tuple[int, int]]
    steps: List[Optional[int]]
    cache_kind: Optional[str]
    refresh_interval: Optional[int]
    remasking: RemaskingSchedule


def fast_decoding_checks(config) -> List[Tuple[str, bool, str]]:
    """(field, valid?, how to fix) for the fast-decoding fields; part of the generation config's
    `validate()`."""
    return [
        ("block_length", _positive_int_or_none(config.block_length), "it must be an integer >= 1 or None"),
        ("threshold", config.threshold is None or config.threshold >= 0, "it must be >= 0 (e.g. 0.9) or None"),
        ("cache_refresh_interval", _positive_int_or_none(config.cache_refresh_interval), "it must be >= 1 or None"),
        ("remasking", config.remasking is None or config.threshold is None or config.remasking == "none",
         "ReMDM needs a time grid: use fixed steps (threshold=None)"),
    ]


def _positive_int_or_none(value) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)


def plan_blocks(config, prompt_length: int, new_tokens: int) -> BlockPlan:
    """Blocks, per-block steps, cache kind and remasking schedule for this call (ValueError if invalid)."""
    config.validate()  # includes `fast_decoding_checks`
    cache_kind = "dual" if config.dual_cache else ("prefix" if config.use_cache else None)
    length = config.block_length or (DEFAULT_CACHED_BLOCK_LENGTH if cache_kind else new_tokens)
    length = min(length, new_tokens)
    starts = list(range(prompt_length, prompt_length + new_tokens, length))
    blocks = [(s, min(s + length, prompt_length + new_tokens)) for s in starts]
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
    return BlockPlan(blocks, steps, cache_kind, config.cache_refresh_interval, schedule)


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


# ----------------------------------------------------------------------------------------------
# The loop.


def threshold_commit(x, masked, rows, threshold: float, config, generator=None) -> torch.Tensor:
    """Threshold decoding: sample x0 at every `masked` position as Dream does (temperature, top-p,
    top-k); commit those whose confidence p(x0) >= threshold and, per row, at least the most
    confident one.

    The confidence is the model's own probability of x0, softmax(rows) at temperature 1 over the
    allowed vocabulary, not that of the tempered, truncated sampling distribution: at Dream's
    evaluation settings (temperature 0.1, top-p 0.9) the latter is ~1 almost everywhere, and any
    threshold would fill a block in one step. At temperature 0 without top-p/top-k both agree.
    rows: (n, V) logits at the `masked` positions (row-major).
    """
    allowed = suppress_tokens(rows, config.mask_token_id, config.tokenizer_vocab_size)  # (n, V) float32
    x0, _ = sample_tokens(allowed, config.temperature or 0.0, config.top_p, config.top_k, generator)
    confidence = torch.full(x.shape, float("-inf"), device=x.device)  # (b, l) float32
    confidence[masked] = max_prob_confidence(allowed.softmax(-1), x0)
    chosen = top_per_row(confidence, masked, torch.ones_like(masked.sum(-1))) | (masked & (confidence >= threshold))
    proposal = x.masked_scatter(masked, x0)  # (b, l): x0 at the masked positions
    return torch.where(chosen, proposal, x)


class BlockDecoder:
    """One block-mode `diffusion_generate` call: the model, its KV cache and the SM feedback store."""

    def __init__(self, model, attention_mask, prompt_length: int, config, plan: BlockPlan, tokens_hook=None,
                 logits_hook=None, generator=None):
        self.model, self.attention_mask, self.config, self.plan = model, attention_mask, config, plan
        self.prompt_length, self.generator = prompt_length, generator
        self.tokens_hook, self.logits_hook = tokens_hook, logits_hook
        self.mask_id = config.mask_token_id
        self.cache: Optional[BlockKVCache] = make_kv_cache(plan.cache_kind) if plan.cache_kind else None
        self.feedback: Optional[SoftMaskFeedback] = None  # latest feedback of every masked position
        self.remasks = config.remasking not in (None, "none")
        self.position_ids = None  # (b, l), the canvas positions, for windowed passes
        self.nfe = 0
        # Hooks get (b, l, V) logits (NaN where a pass predicts nothing); else the LM head runs at targets only.
        self.full_logits = tokens_hook is not None or logits_hook is not None
        self.algorithm = get_unmasking_algorithm(config.alg) if config.threshold is None else None

    def run(self, x: torch.Tensor):
        """Decode every block. Returns (x, history, trace) like the plain loop."""
        from .generation_utils import _as_list, finished_rows  # deferred: generation_utils imports this module

        hook = self.tokens_hook
        x = hook(None, x, None) if hook is not None else x
        eos = torch.tensor(_as_list(self.config.eos_token_id), dtype=x.dtype, device=x.device)
        history, trace, step = [], [], 0
        for (start, end), n_steps in zip(self.plan.blocks, self.plan.steps):
            grid, i, done = self._grid(n_steps, x.device), 0, False
            while not done and ((i < n_steps) if n_steps is not None else bool((x[:, start:end] == self.mask_id).any())):
                x, logits = self.step(x, start, end, i, grid, step)
                x = hook(step, x, logits) if hook is not None else x
                done = self.config.stop_when_finished and bool(finished_rows(x, self.prompt_length, self.mask_id, eos).all())
                if done and len(eos):
                    x = x.masked_fill(x == self.mask_id, int(eos[0]))  # only after every row's first eos
                if self.config.output_history:
                    history.append(x.clone())
                    trace.append(None if done else trace_step(self._scaled_feedback(x, step + 1), self.model.soft_mask))
                step, i = step + 1, i + 1
            if done:
                break
        return x, history, trace

    def _grid(self, n_steps: Optional[int], device):
        """(timesteps, per-step remasking probabilities) of a fixed-step block; None with threshold."""
        if n_steps is None:
            return None
        timesteps = diffusion_timesteps(n_steps, self.config.eps, device=device)
        return timesteps, remask_plan(self.plan.remasking, timesteps)

    def step(self, x, start: int, end: int, i: int, grid, global_step: int):
        """One forward pass and the commits (and remasks) it decides in the block [start, end)."""
        masked = x == self.mask_id  # (b, l)
        in_block = torch.zeros_like(masked)
        in_block[:, start:end] = True
        block_masked, decoded = masked & in_block, in_block & ~masked
        interval = self.plan.refresh_interval
        full = self.cache is None or i == 0 or (interval is not None and i % interval == 0)
        targets = block_masked
        if self.config.soft_masking:  # feedback wherever this pass predicts a mask (or a remask candidate)
            targets = (masked if full else block_masked) | (decoded if self.remasks else torch.zeros_like(masked))
        raw, rows, logits = self._predict(x, start, end, full, targets, block_masked, global_step)
        x_next = self._commit(x, block_masked, rows, i, grid)
        if grid is not None and grid[1][i].remask > 0:
            x_next = x_next.masked_fill(sample_remask(decoded, grid[1][i].remask, self.generator), self.mask_id)
        self._update_feedback(x_next, targets, raw, full)
        return x_next, logits

    def _predict(self, x, start, end, full, targets, block_masked, global_step):
        """Raw shift-aligned rows at `targets`, the rows to sample from at `block_masked` (after the
        logits hook), and the (b, l, V) logits given to the hook (NaN where the pass predicts nothing)."""
        from .modeling_sm_dream import default_position_ids, shift_right  # deferred: modeling imports us

        length = x.shape[1]
        first = max(start - 1, 0)  # the window starts one early: Dream predicts j from j - 1
        ws, we = (0, length) if full else (first, length if self.plan.cache_kind == "prefix" else end)
        feedback = self._scaled_feedback(x, global_step)
        kwargs = dict(sm_feedback=feedback if full else window_feedback(feedback, ws, we))
        if self.cache is not None:
            if full:
                self.cache.begin_refresh()
            if self.position_ids is None:
                self.position_ids = default_position_ids(self.attention_mask, x.shape[0], length, 0, x.device)
            kwargs.update(position_ids=self.position_ids[:, ws:we], past_key_values=self.cache)
        self.nfe += 1
        if not self.full_logits:
            raw = self.model(x[:, ws:we], self.attention_mask, target_mask=targets[:, ws:we], **kwargs).logits  # (n, V)
            rows, logits = raw[block_masked[targets]], None
        else:
            shifted = shift_right(self.model(x[:, ws:we], self.attention_mask, **kwargs).logits)  # (b, w, V)
            logits = shifted.new_full((x.shape[0], length, shifted.shape[-1]), float("nan"))
            lo = ws + 1 if ws > 0 else 0  # a window's own first row predicts nothing
            logits[:, lo:we] = shifted[:, lo - ws:]
            raw = logits[targets]  # a copy: the hook may edit `logits` in place
            logits = self.logits_hook(global_step, x, logits) if self.logits_hook is not None else logits
            rows = logits[block_masked]
        if full and self.cache is not None:
            self.cache.set_window(first, length if self.plan.cache_kind == "prefix" else end)
        return raw, rows, logits

    def _commit(self, x, block_masked, rows, i: int, grid):
        """Dream's unmasking inside the block (fixed steps, ReMDM counts) or threshold decoding."""
        from .generation_utils import unmask_step  # deferred: generation_utils imports this module

        if grid is None:
            return threshold_commit(x, block_masked, rows, float(self.config.threshold), self.config, self.generator)
        num_masked = block_masked.sum(-1)  # (b,)
        timesteps, probabilities = grid
        counts, transfer = tokens_to_unmask(num_masked, timesteps, i), transfer_probability(timesteps, i)
        p = probabilities[i]
        if p.remask > 0 or not self.plan.remasking.keeps_dream_alpha:  # ReMDM's count (sigma = 0: Dream's exactly)
            counts, transfer = (num_masked.float() * p.unmask).long(), p.unmask
            if i == len(probabilities) - 1:
                counts = num_masked
        plan = StepPlan(counts=counts, transfer_prob=transfer, alg_temp=self.config.alg_temp, generator=self.generator)
        return unmask_step(x, block_masked, rows, self.algorithm, plan, self.config)

    def _update_feedback(self, x, targets, raw, full: bool) -> None:
        """Feedback from this pass for the predicted positions that are (still or again) masked."""
        if not self.config.soft_masking:
            return
        masked = x == self.mask_id
        still = targets & masked  # (b, l)
        new = None
        if bool(still.any()):  # all predicted rows, then the masked ones: cheaper than copying (n, V) rows
            k, full_vocab = self.model.config.sm_top_k, self.model.config.sm_full_vocab
            new = feedback_from_logits(raw, targets, k=k, full_vocab=full_vocab, chunk_size=rows_per_chunk(raw))
            new = select_feedback(new, still)
        # A full pass predicted every mask: its feedback replaces the store.
        self.feedback = new if full else merge_feedback(self.feedback, new, keep=masked)

    def _scaled_feedback(self, x, global_step: int) -> Optional[SoftMaskFeedback]:
        """The stored feedback times the SM time schedule (None where the schedule gives 0)."""
        if self.feedback is None or not self.config.soft_masking:
            return None
        name, t_prime = self.config.sm_schedule, self.config.sm_threshold
        if self.config.threshold is None:
            scale = schedule_factor(name, global_step, self.config.steps, t_prime)
            return None if scale == 0.0 else self.feedback.with_scale(scale)
        generated = x[:, self.prompt_length:]
        total = generated.shape[1]
        decoded = (generated != self.mask_id).sum(-1).tolist()  # per row: f = decoded / N
        scales = [schedule_factor(name, d, total, t_prime) for d in decoded]
        return None if max(scales) == 0.0 else self.feedback.with_scale(torch.tensor(scales))


def block_diffusion_sample(model, x, attention_mask, prompt_length, config, tokens_hook=None, logits_hook=None,
                           generator=None):
    """The block loop behind `diffusion_generate(block_length=..., use_cache=..., threshold=...,
    remasking=...)`. Returns (x, history, trace, nfe) like the plain loop."""
    plan = plan_blocks(config, prompt_length, x.shape[1] - prompt_length)
    decoder = BlockDecoder(model, attention_mask, prompt_length, config, plan, tokens_hook, logits_hook, generator)
    x, history, trace = decoder.run(x)
    return x, history, trace, decoder.nfe
