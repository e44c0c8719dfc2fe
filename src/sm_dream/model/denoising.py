# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""The one denoising loop behind `diffusion_generate`: plain, block, cached, threshold and ReMDM decoding.

Plain decoding (Dream's loop) is the one-block, no-cache case; blocks, KV caches, threshold decoding
and ReMDM are options of the same loop, so SM feedback, unmasking, hooks, history, early stop and
the progress bar each live once. Blocks and their steps come from `blocks.plan_blocks`.

Per block, the first step is a *refresh*: a full forward over the canvas, which records the KV
cache (`use_cache=True`: prefix cache; `dual_cache=True`: prefix + suffix cache). The other steps
run a window against the cache: [b0 - 1, L) (prefix) or [b0 - 1, b1) (dual) for the block
[b0, b1). The window starts one position early because Dream predicts position j from the hidden
state at j - 1: the first block position gets a fresh prediction at every step and is committed by
the same confidence rule as the others (Fast-dLLM's code instead commits it unconditionally in the
refresh pass). `cache_refresh_interval=n` also refreshes every n steps inside a block (1 = every
step, i.e. exact uncached decoding). Without a cache every step is a full forward.

What a step commits in the block (with M_b its masks in a row):
    fixed steps     (threshold None): block k runs Dream's algorithm `alg` on linspace(1, eps,
                    steps_k + 1): floor(M_b (1 - s/t)) per row, all at the block's last step.
    threshold tau:  every masked block position whose confidence p(x0) (the model's probability of
                    its sampled token, softmax at temperature 1: `threshold_commit`) is >= tau, and at
                    least the most confident one per row that still has masks. `alg`/`alg_temp`/`steps`
                    are unused; tau > 1 commits one token per step, tau = 0 fills a block in one step.
                    Rows that finish a block early wait (commit nothing) until every row has finished it.
    remasking:      ReMDM (`remasking.py`) on the block's time grid: masks decode with p_unmask
                    (`origin`: each independently; confidence algorithms: floor(M_b p_unmask) most
                    confident) and tokens the generation decoded in the block before this step are
                    remasked with probability sigma_t. Needs fixed steps (not `threshold`).

Soft-masking. Each step reads each masked row's logits once (`logit_rows.step_rows`): the
candidate, its confidence and the SM feedback (entropy and top-k of the raw rows) come from one pass.
Feedback is computed only where a later pass reads it. With one block (plain decoding) every step
feeds back every masked position. With blocks, a block's *refresh* (its first step, and every
`cache_refresh_interval` steps) feeds back the block's masks and the suffix masks at most
`sm_feedback_horizon` positions after the block (default: one block length, i.e. the next block),
with or without a cache; the other steps feed back the block's masks (plus its remasking
candidates). Every masked position enters a pass with the latest feedback it has: the active block's
masks the previous step's, the suffix masks within the horizon those of the block's refresh, the
masks beyond it none (the [MASK] embedding); the first pass has none. So with a prefix cache the
suffix inputs inside a block are exactly the ones its dual-cache K/V were computed from, and the LM
head runs at the block's rows (and, at a refresh, the horizon's) only. A block's last fixed step
commits all its masks, so it feeds back only the suffix, and only at a refresh; with fixed steps, a
pass whose feedback would only reach passes where the schedule gives 0 skips it. The feedback and
its time schedule (`sm_schedule`) are kept by `soft_masking.FeedbackStore`; `Denoiser.plan_pass`
decides what each pass predicts and feeds back (`PassPlan`).

The LM head runs only at the rows a pass needs (`target_mask`), unless a hook asks for the
(b, l, V) logits. This file is carried inside saved checkpoints: it imports only torch,
transformers and its siblings, and none of them imports it back.
"""

from dataclasses import dataclass
from typing import List, Optional

import torch
from transformers.utils import logging

from .blocks import BlockPlan, plan_blocks
from .cache import BlockKVCache, make_kv_cache
from .decoding_trace import trace_step
from .logit_rows import StepRows, rows_read_alone, step_rows
from .positions import default_position_ids, shift_right
from .remasking import remask_plan, remasks, sample_remask
from .row_ops import rows_per_chunk
from .soft_masking import FeedbackStore, SoftMaskFeedback, feedback_from_logits
from .unmasking import (
    StepPlan,
    diffusion_timesteps,
    get_unmasking_algorithm,
    tokens_to_unmask,
    top_per_row,
    transfer_probability,
)


def token_id_list(ids) -> List[int]:
    """An int, a list of ints or None as a list (eos_token_id may be any of them)."""
    if ids is None:
        return []
    return [int(i) for i in ids] if isinstance(ids, (list, tuple)) else [int(ids)]


def finished_rows(x: torch.Tensor, prompt_length: int, mask_token_id: int, eos_ids: torch.Tensor) -> torch.Tensor:
    """(b,) bool: rows with no [MASK] before their first generated eos (anywhere, if there is none).

    Later steps can only change masked positions, so the text up to the first eos is final.
    """
    is_eos = torch.isin(x[:, prompt_length:], eos_ids)  # (b, N)
    end = prompt_length + torch.where(is_eos.any(-1), is_eos.int().argmax(-1), is_eos.shape[1])  # (b,)
    before = torch.arange(x.shape[1], device=x.device) < end.unsqueeze(-1)  # (b, l)
    return ~((x == mask_token_id) & before).any(-1)


def unmask_step(x, masked, rows: StepRows, algorithm, plan: StepPlan) -> torch.Tensor:
    """Commit the positions `algorithm.select` picks among `masked` to their candidate tokens (a new
    tensor). rows: the step's `StepRows` at the `masked` positions (row-major); confidences float32."""
    confidence = torch.full(x.shape, float("-inf"), device=x.device)  # (b, l) float32
    proposal = torch.full_like(x, -1)
    if rows.tokens.numel():
        confidence[masked], proposal[masked] = rows.confidence, rows.tokens
    chosen = algorithm.select(confidence, masked, plan)  # (b, l) bool
    return torch.where(chosen, proposal, x)


def threshold_commit(x, masked, rows: StepRows, threshold: float) -> torch.Tensor:
    """Threshold decoding: commit the `masked` positions whose confidence p(x0) >= threshold and, per
    row, at least the most confident one.

    rows: `step_rows(..., "maskgit_plus", model_confidence=True)` at the `masked` positions: x0 sampled
    as Dream does (temperature, top-p, top-k), its confidence the model's own probability of x0,
    softmax at temperature 1 over the allowed vocabulary, not that of the tempered, truncated sampling
    distribution: at Dream's evaluation settings (temperature 0.1, top-p 0.9) the latter is ~1 almost
    everywhere, and any threshold would fill a block in one step. At temperature 0 both agree.
    """
    confidence = torch.full(x.shape, float("-inf"), device=x.device)  # (b, l) float32
    confidence[masked] = rows.confidence
    chosen = top_per_row(confidence, masked, torch.ones_like(masked.sum(-1))) | (masked & (confidence >= threshold))
    proposal = x.masked_scatter(masked, rows.tokens)  # (b, l): x0 at the masked positions
    return torch.where(chosen, proposal, x)


@dataclass
class PassPlan:
    """One step of the block [start, end): what its forward pass predicts, samples and feeds back.

    step: the block's step i; global_step: steps run before it; grid: the block's (timesteps,
    remasking probabilities), None with threshold.
    sampled: (b, l) bool, the block's masks: the rows sampled and committed.
    targets: (b, l) bool, the rows the LM head produces: `sampled` itself (the same tensor) or, when
        the pass computes feedback, the masks it feeds back plus the remask candidates.
    full: a forward over the whole canvas (no cache, or a refresh), else a window against the cache.
    feedback: the pass computes SM feedback at `targets`; feedback_used: a later pass reads it.
    replaces: the pass feeds back every mask, so its feedback replaces the store.
    decoded: ReMDM's remask candidates (tokens this generation decoded in the block), or None.
    """

    start: int
    end: int
    step: int
    global_step: int
    grid: Optional[tuple]
    sampled: torch.Tensor
    targets: torch.Tensor
    full: bool
    feedback: bool
    feedback_used: bool
    replaces: bool
    decoded: Optional[torch.Tensor]


class Denoiser:
    """One `diffusion_generate` call: the model, its KV cache, the SM feedback store and the step count."""

    def __init__(self, model, attention_mask, prompt_length: int, config, plan: BlockPlan, tokens_hook=None,
                 logits_hook=None, generator=None):
        self.model, self.attention_mask, self.config, self.plan = model, attention_mask, config, plan
        self.prompt_length, self.generator = prompt_length, generator
        self.tokens_hook, self.logits_hook = tokens_hook, logits_hook
        self.mask_id = config.mask_token_id
        self.cache: Optional[BlockKVCache] = make_kv_cache(plan.cache_kind) if plan.cache_kind else None
        self.store = FeedbackStore(config, prompt_length, plan.refresh_interval)
        self.remasks = remasks(config.remasking)
        self.position_ids = None  # (b, l), the canvas positions, for windowed passes
        self.generated: Optional[torch.Tensor] = None  # (b, l) bool: positions that started masked
        self.nfe = 0
        # Hooks get (b, l, V) logits (NaN where a pass predicts nothing); else the LM head runs at targets only.
        self.full_logits = tokens_hook is not None or logits_hook is not None
        self.algorithm = get_unmasking_algorithm(config.alg) if config.threshold is None else None

    def run(self, x: torch.Tensor):
        """Decode every block. Returns (x, history, trace): the canvas after each step and the SM
        feedback the next pass receives (with `output_history`)."""
        self.generated = x == self.mask_id
        hook, config = self.tokens_hook, self.config
        x = hook(None, x, None) if hook is not None else x
        eos = torch.tensor(token_id_list(config.eos_token_id), dtype=x.dtype, device=x.device)
        fixed = config.threshold is None
        bar = logging.tqdm(total=sum(self.plan.steps) if fixed else None, unit="step", disable=not config.progress_bar)
        history, trace, step = [], [], 0
        for (start, end), n_steps in zip(self.plan.blocks, self.plan.steps):
            grid, i, done = self._grid(n_steps, x.device), 0, False
            while not done and (i < n_steps if fixed else bool((x[:, start:end] == self.mask_id).any())):
                x, logits = self.step(x, self.plan_pass(x, start, end, i, grid, step))
                x = hook(step, x, logits) if hook is not None else x
                done = config.stop_when_finished and bool(finished_rows(x, self.prompt_length, self.mask_id, eos).all())
                if done and len(eos):
                    x = x.masked_fill(x == self.mask_id, int(eos[0]))  # only after every row's first eos
                if config.output_history:
                    history.append(x.clone())
                    trace.append(None if done else trace_step(self.store.read(x, step + 1), self.model.soft_mask))
                step, i = step + 1, i + 1
                bar.update(1)
            if done:
                break
        bar.close()
        return x, history, trace

    def _grid(self, n_steps: Optional[int], device):
        """(timesteps, per-step remasking probabilities) of a fixed-step block; None with threshold."""
        if n_steps is None:
            return None
        timesteps = diffusion_timesteps(n_steps, self.config.eps, device=device)
        return timesteps, remask_plan(self.plan.remasking, timesteps)

    def plan_pass(self, x, start: int, end: int, i: int, grid, global_step: int) -> PassPlan:
        """The `PassPlan` of the block's step i on the canvas `x`."""
        masked = x == self.mask_id  # (b, l)
        whole = (start, end) == (0, x.shape[1])  # one block over the canvas (plain decoding)
        in_block = None
        if not whole:
            in_block = torch.zeros_like(masked)
            in_block[:, start:end] = True
        sampled = masked if whole else masked & in_block
        decoded = None
        if self.remasks:
            decoded = self.generated & ~masked if whole else in_block & self.generated & ~masked
        interval = self.plan.refresh_interval
        refresh = i == 0 or (interval is not None and i % interval == 0)  # the block's refresh steps
        fed = sampled  # the masks this pass feeds back: a block's refresh adds the suffix up to the horizon
        if not whole and refresh and self.plan.feedback_horizon > 0:
            fed = masked.clone()
            fed[:, end + self.plan.feedback_horizon:] = False
        block_steps = None if grid is None else len(grid[0]) - 1
        used = self.store.needed(i, block_steps, global_step, whole)
        last = block_steps is not None and i == block_steps - 1  # commits every mask of the block
        compute = used and (not last or fed is not sampled)  # a last step feeds only a suffix
        targets = sampled
        if compute:  # feedback wherever it is fresh this step (and at remask candidates)
            targets = fed if decoded is None else fed | decoded
        return PassPlan(start, end, i, global_step, grid, sampled, targets, full=self.cache is None or refresh,
                        feedback=compute, feedback_used=used, replaces=refresh or whole, decoded=decoded)

    def step(self, x, p: PassPlan):
        """One forward pass and the commits (and remasks) it decides: predict -> read rows -> commit ->
        remask -> store the feedback. Returns the new canvas and the logits given to the hooks."""
        raw, rows, logits = self._predict(x, p)
        read = self._read_rows(raw, rows, p)
        x_next = self._remask(self._commit(x, p, read), p)
        self.store.keep(x_next, p.targets, read.feedback, p.replaces, p.feedback_used)
        return x_next, logits

    def _predict(self, x, p: PassPlan):
        """Raw shift-aligned rows at `targets`, the rows to sample from at `sampled` (after the logits
        hook; None when they are a subset of the raw rows, taken when needed), and the (b, l, V) logits
        given to the hook (NaN where the pass predicts nothing)."""
        length = x.shape[1]
        first = max(p.start - 1, 0)  # the window starts one early: Dream predicts j from j - 1
        cache_end = length if self.plan.cache_kind == "prefix" else p.end
        ws, we = (0, length) if p.full else (first, cache_end)
        feedback = self.store.read(x, p.global_step)
        kwargs = dict(sm_feedback=feedback if p.full or feedback is None else feedback.window(ws, we))
        if self.cache is not None:
            if p.full:
                self.cache.begin_refresh()
            if self.position_ids is None:
                self.position_ids = default_position_ids(self.attention_mask, x.shape[0], length, 0, x.device)
            kwargs.update(position_ids=self.position_ids[:, ws:we], past_key_values=self.cache)
        self.nfe += 1
        if not self.full_logits:
            raw = self.model(x[:, ws:we], self.attention_mask, target_mask=p.targets[:, ws:we], **kwargs).logits
            rows, logits = (raw if p.targets is p.sampled else None), None  # raw: (n, V) at the targets
        else:
            shifted = shift_right(self.model(x[:, ws:we], self.attention_mask, **kwargs).logits)  # (b, w, V)
            if (ws, we) == (0, length):
                logits = shifted
            else:
                logits = shifted.new_full((x.shape[0], length, shifted.shape[-1]), float("nan"))
                lo = ws + 1 if ws > 0 else 0  # a window's own first row predicts nothing
                logits[:, lo:we] = shifted[:, lo - ws:]
            raw = logits[p.targets]  # a copy: the hook may edit `logits` in place
            logits = self.logits_hook(p.global_step, x, logits) if self.logits_hook is not None else logits
            rows = logits[p.sampled]
        if p.full and self.cache is not None:
            self.cache.set_window(first, cache_end)
        return raw, rows, logits

    def _read_rows(self, raw, rows, p: PassPlan) -> StepRows:
        """Candidates and confidences at `sampled` and, when the pass computes it, SM feedback at `targets`.

        Where the sampled rows are the raw rows (no logits hook), `step_rows` reads each row once for
        all three; with a hook, feedback comes from the raw rows apart."""
        config, threshold = self.config, self.algorithm is None
        alg = "maskgit_plus" if threshold else config.alg
        k, full_vocab = self.model.config.sm_top_k, self.model.config.sm_full_vocab

        def read(some_rows, positions=None):
            sm = dict(sm_k=k, positions=positions, full_vocab=full_vocab) if positions is not None else {}
            return step_rows(some_rows, alg, config, generator=self.generator, model_confidence=threshold, **sm)

        def feedback_of(some_rows, positions):
            return feedback_from_logits(some_rows, positions, k=k, full_vocab=full_vocab,
                                        chunk_size=rows_per_chunk(some_rows))

        if not p.feedback:
            return read(rows)
        if rows is raw:
            return read(raw, p.targets)
        sampled = p.sampled[p.targets]  # (n,) the target rows that are sampled
        if rows is None and rows_read_alone(alg, config, threshold):
            # no random draws: read every target row in one pass and keep the block's candidates
            got = read(raw, p.targets)
            return StepRows(got.tokens[sampled], got.confidence[sampled], got.feedback)
        rows = raw[sampled] if rows is None else rows
        if self.full_logits or not bool(p.sampled.any()):  # the sampled rows are not (all) raw rows
            return read(rows)._replace(feedback=feedback_of(raw, p.targets))
        # Draws per row (sampling, `origin`): the block's rows alone, so that the draws match, then
        # the feedback of the others.
        got, others = read(rows, p.sampled), p.targets & ~p.sampled
        rest = feedback_of(raw[~sampled], others) if bool(others.any()) else None
        return got._replace(feedback=SoftMaskFeedback.merge(got.feedback, rest))

    def _commit(self, x, p: PassPlan, read: StepRows):
        """Dream's unmasking inside the block (fixed steps, ReMDM counts) or threshold decoding."""
        if p.grid is None:
            return threshold_commit(x, p.sampled, read, float(self.config.threshold))
        num_masked = p.sampled.sum(-1)  # (b,)
        (timesteps, probabilities), i = p.grid, p.step
        counts, transfer = tokens_to_unmask(num_masked, timesteps, i), transfer_probability(timesteps, i)
        step = probabilities[i]
        if step.remask > 0 or not self.plan.remasking.keeps_dream_alpha:  # ReMDM's count (sigma 0: Dream's exactly)
            counts, transfer = (num_masked.float() * step.unmask).long(), step.unmask
            if i == len(probabilities) - 1:
                counts = num_masked
        plan = StepPlan(counts=counts, transfer_prob=transfer, alg_temp=self.config.alg_temp, generator=self.generator)
        return unmask_step(x, p.sampled, read, self.algorithm, plan)

    def _remask(self, x, p: PassPlan):
        """ReMDM: each remask candidate masked again with probability sigma_t of the step."""
        if p.grid is None or p.grid[1][p.step].remask <= 0:
            return x
        return x.masked_fill(sample_remask(p.decoded, p.grid[1][p.step].remask, self.generator), self.mask_id)


def denoise(model, x, attention_mask, prompt_length: int, config, tokens_hook=None, logits_hook=None,
            generator=None):
    """Run the loop on the canvas `x` (prompt + masks) with a validated, resolved config.
    Returns (x, history, trace, nfe)."""
    plan = plan_blocks(config, prompt_length, x.shape[1] - prompt_length)
    denoiser = Denoiser(model, attention_mask, prompt_length, config, plan, tokens_hook, logits_hook, generator)
    x, history, trace = denoiser.run(x)
    return x, history, trace, denoiser.nfe
