# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""The one denoising loop behind `diffusion_generate`: plain, block, cached, threshold and ReMDM decoding.

Plain decoding (Dream's loop) is the one-block, no-cache case; blocks, KV caches, threshold decoding
and ReMDM are options of the same loop, so SM feedback, unmasking, hooks, history, early stop and
the progress bar each live once. Blocks and their steps come from `block_generation.plan_blocks`.

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

Soft-masking. Each step reads each masked row's logits once (`unmasking.step_rows`): the
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
pass whose feedback would only reach passes where the schedule gives 0 skips it. Time schedules
(`sm_schedule`) use f = step / steps with fixed steps, and each row's decoded share of the N tokens
with `threshold`.

The LM head runs only at the rows a pass needs (`target_mask`), unless a hook asks for the
(b, l, V) logits. This file is carried inside saved checkpoints: it imports only torch,
transformers and its siblings, and none of them imports it back.
"""

from typing import List, Optional

import torch
from transformers.utils import logging

from .block_generation import BlockPlan, merge_feedback, plan_blocks, select_feedback, window_feedback
from .cache import BlockKVCache, make_kv_cache
from .decoding_trace import trace_step
from .positions import default_position_ids, shift_right
from .remasking import remask_plan, sample_remask
from .soft_masking import SoftMaskFeedback, feedback_from_logits, schedule_factor
from .logit_rows import StepRows, rows_read_alone, step_rows
from .row_ops import rows_per_chunk
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


class Denoiser:
    """One `diffusion_generate` call: the model, its KV cache, the SM feedback store and the step count."""

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
                x, logits = self.step(x, start, end, i, grid, step)
                x = hook(step, x, logits) if hook is not None else x
                done = config.stop_when_finished and bool(finished_rows(x, self.prompt_length, self.mask_id, eos).all())
                if done and len(eos):
                    x = x.masked_fill(x == self.mask_id, int(eos[0]))  # only after every row's first eos
                if config.output_history:
                    history.append(x.clone())
                    trace.append(None if done else trace_step(self._scaled_feedback(x, step + 1), self.model.soft_mask))
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

    def step(self, x, start: int, end: int, i: int, grid, global_step: int):
        """One forward pass and the commits (and remasks) it decides in the block [start, end)."""
        masked = x == self.mask_id  # (b, l)
        in_block = None  # one block over the whole canvas (plain decoding): every position
        if (start, end) != (0, x.shape[1]):
            in_block = torch.zeros_like(masked)
            in_block[:, start:end] = True
        block_masked = masked if in_block is None else masked & in_block
        decoded = None  # ReMDM's candidates: tokens this generation decoded in the block
        if self.remasks:
            decoded = self.generated & ~masked if in_block is None else in_block & self.generated & ~masked
        interval = self.plan.refresh_interval
        refresh = i == 0 or (interval is not None and i % interval == 0)  # the block's refresh steps
        full = self.cache is None or refresh  # a forward over the whole canvas
        every_mask = refresh or in_block is None  # a refresh: the feedback store is replaced
        fed = block_masked  # the masks this pass feeds back: a refresh adds the suffix up to the horizon
        if in_block is None:
            fed = masked
        elif refresh and self.plan.feedback_horizon > 0:
            fed = masked.clone()
            fed[:, end + self.plan.feedback_horizon:] = False
        used = self._feedback_used(i, grid, global_step, in_block is None)
        last = grid is not None and i == len(grid[0]) - 2  # commits every mask of the block
        compute = used and (not last or fed is not block_masked)  # a last step feeds only a suffix
        targets = block_masked  # the rows the LM head produces
        if compute:  # feedback wherever it is fresh this step (and at remask candidates)
            targets = fed if decoded is None else fed | decoded
        raw, rows, logits = self._predict(x, start, end, full, targets, block_masked, global_step)
        read = self._read_rows(raw, rows, targets, block_masked, compute)
        x_next = self._commit(x, block_masked, read, i, grid)
        if grid is not None and grid[1][i].remask > 0:
            x_next = x_next.masked_fill(sample_remask(decoded, grid[1][i].remask, self.generator), self.mask_id)
        self._store_feedback(x_next, targets, read.feedback, every_mask, used)
        return x_next, logits

    def _predict(self, x, start, end, full, targets, block_masked, global_step):
        """Raw shift-aligned rows at `targets`, the rows to sample from at `block_masked` (after the
        logits hook), and the (b, l, V) logits given to the hook (NaN where the pass predicts nothing)."""
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
            rows, logits = (raw if targets is block_masked else None), None  # None: a subset, taken when needed
        else:
            shifted = shift_right(self.model(x[:, ws:we], self.attention_mask, **kwargs).logits)  # (b, w, V)
            if (ws, we) == (0, length):
                logits = shifted
            else:
                logits = shifted.new_full((x.shape[0], length, shifted.shape[-1]), float("nan"))
                lo = ws + 1 if ws > 0 else 0  # a window's own first row predicts nothing
                logits[:, lo:we] = shifted[:, lo - ws:]
            raw = logits[targets]  # a copy: the hook may edit `logits` in place
            logits = self.logits_hook(global_step, x, logits) if self.logits_hook is not None else logits
            rows = logits[block_masked]
        if full and self.cache is not None:
            self.cache.set_window(first, length if self.plan.cache_kind == "prefix" else end)
        return raw, rows, logits

    def _read_rows(self, raw, rows, targets, block_masked, compute: bool) -> StepRows:
        """Candidates and confidences at `block_masked` and, with `compute`, SM feedback at `targets`.

        Where the sampled rows are raw rows (no logits hook), `step_rows` reads each row once for all
        three; with a hook, feedback comes from the raw rows apart. rows: None when the sampled rows
        are the `block_masked` subset of the raw `targets` rows (a refresh's horizon, remask
        candidates), taken here only if it must be copied.
        """
        config = self.config
        alg = config.alg if self.algorithm is not None else "maskgit_plus"
        kwargs = dict(generator=self.generator, model_confidence=self.algorithm is None)
        k, full_vocab = self.model.config.sm_top_k, self.model.config.sm_full_vocab
        if compute and rows is raw:
            return step_rows(raw, alg, config, sm_k=k, positions=targets, full_vocab=full_vocab, **kwargs)
        if not compute:
            return step_rows(rows, alg, config, **kwargs)
        sampled = block_masked[targets]  # (n,) the target rows that are sampled
        if rows is None and rows_read_alone(alg, config, self.algorithm is None):
            # no random draws: read every target row in one pass and keep the block's candidates
            read = step_rows(raw, alg, config, sm_k=k, positions=targets, full_vocab=full_vocab, **kwargs)
            return StepRows(read.tokens[sampled], read.confidence[sampled], read.feedback)
        rows = raw[sampled] if rows is None else rows
        if self.full_logits or not bool(block_masked.any()):  # the sampled rows are not (all) raw rows
            read = step_rows(rows, alg, config, **kwargs)
            feedback = feedback_from_logits(raw, targets, k=k, full_vocab=full_vocab, chunk_size=rows_per_chunk(raw))
            return StepRows(read.tokens, read.confidence, feedback)
        # Draws per row (sampling, `origin`): the block's rows alone, so that the draws match, then
        # the feedback of the others.
        read = step_rows(rows, alg, config, sm_k=k, positions=block_masked, full_vocab=full_vocab, **kwargs)
        others = targets & ~block_masked
        if not bool(others.any()):
            return read
        rest = raw[~sampled]
        feedback = feedback_from_logits(rest, others, k=k, full_vocab=full_vocab, chunk_size=rows_per_chunk(rest))
        return StepRows(read.tokens, read.confidence, merge_feedback(read.feedback, feedback))

    def _commit(self, x, block_masked, read: StepRows, i: int, grid):
        """Dream's unmasking inside the block (fixed steps, ReMDM counts) or threshold decoding."""
        if grid is None:
            return threshold_commit(x, block_masked, read, float(self.config.threshold))
        num_masked = block_masked.sum(-1)  # (b,)
        timesteps, probabilities = grid
        counts, transfer = tokens_to_unmask(num_masked, timesteps, i), transfer_probability(timesteps, i)
        p = probabilities[i]
        if p.remask > 0 or not self.plan.remasking.keeps_dream_alpha:  # ReMDM's count (sigma = 0: Dream's exactly)
            counts, transfer = (num_masked.float() * p.unmask).long(), p.unmask
            if i == len(probabilities) - 1:
                counts = num_masked
        plan = StepPlan(counts=counts, transfer_prob=transfer, alg_temp=self.config.alg_temp, generator=self.generator)
        return unmask_step(x, block_masked, read, self.algorithm, plan)

    def _feedback_used(self, i: int, grid, global_step: int, one_block: bool) -> bool:
        """Whether feedback from this pass can reach a pass with a nonzero SM schedule factor.

        It serves the passes up to the next one that feeds back every mask (the next step with one
        block, else the block's next refresh); with fixed steps, when the schedule gives 0 at all of
        them, the pass skips the feedback and the store is cleared."""
        if not self.config.soft_masking:
            return False
        if grid is None:  # threshold: per-row schedule, no fixed step count
            return True
        n, interval = len(grid[0]) - 1, self.plan.refresh_interval
        refresh = n if interval is None else min(n, (i // interval + 1) * interval)  # block step of the next refresh
        reach = 1 if one_block else refresh - i
        return any(self._fixed_scale(global_step + d) != 0.0 for d in range(1, reach + 1))

    def _store_feedback(self, x, targets, new: Optional[SoftMaskFeedback], every_mask: bool, used: bool) -> None:
        """Keep this pass's feedback for the predicted positions that are (still or again) masked;
        the other masks keep theirs (from the last pass that fed back every mask)."""
        if not self.config.soft_masking:
            return
        masked = x == self.mask_id
        if not used:
            self.feedback = None
        elif new is None:  # nothing this pass predicted stays masked
            self.feedback = select_feedback(self.feedback, masked)
        else:
            new = select_feedback(new, targets & masked)
            self.feedback = new if every_mask else merge_feedback(self.feedback, new, keep=masked)

    def _fixed_scale(self, global_step: int) -> Optional[float]:
        """The SM schedule factor at `global_step` with fixed steps; None with threshold (per row)."""
        if self.config.threshold is not None:
            return None
        return schedule_factor(self.config.sm_schedule, global_step, self.config.steps, self.config.sm_threshold)

    def _scaled_feedback(self, x, global_step: int) -> Optional[SoftMaskFeedback]:
        """The stored feedback times the SM time schedule (None where the schedule gives 0)."""
        if self.feedback is None or not self.config.soft_masking:
            return None
        scale = self._fixed_scale(global_step)
        if scale is not None:
            return None if scale == 0.0 else self.feedback.with_scale(scale)
        generated = x[:, self.prompt_length:]
        total = generated.shape[1]
        decoded = (generated != self.mask_id).sum(-1).tolist()  # per row: f = decoded / N
        scales = [schedule_factor(self.config.sm_schedule, d, total, self.config.sm_threshold) for d in decoded]
        return None if max(scales) == 0.0 else self.feedback.with_scale(torch.tensor(scales))


def denoise(model, x, attention_mask, prompt_length: int, config, tokens_hook=None, logits_hook=None,
            generator=None):
    """Run the loop on the canvas `x` (prompt + masks) with a validated, resolved config.
    Returns (x, history, trace, nfe)."""
    plan = plan_blocks(config, prompt_length, x.shape[1] - prompt_length)
    denoiser = Denoiser(model, attention_mask, prompt_length, config, plan, tokens_hook, logits_hook, generator)
    x, history, trace = denoiser.run(x)
    return x, history, trace, denoiser.nfe
