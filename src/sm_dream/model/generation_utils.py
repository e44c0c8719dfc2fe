# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""`diffusion_generate`: Dream's sampler with soft-masking (SM) between steps and NFE budgets.

    out = model.diffusion_generate(ids, attention_mask=mask, max_new_tokens=256, nfe_budget=0.25,
                                   alg="entropy", temperature=0.1, top_p=0.9,
                                   return_dict_in_generate=True)

The canvas is the prompt followed by N = max_new_tokens [MASK] tokens. Over `steps` forward passes
(t from 1 to eps on `linspace(1, eps, steps + 1)`), each step predicts every masked position and an
unmasking algorithm (`unmasking.py`) commits some of them: floor(M (1 - s/t)) per row, all remaining
at the last step. With SM on, every position that stays masked after step i enters step i + 1 as the
blend (1 - lam) E[mask] + lam sum_j pi_j E[topk_j], built by the model from `feedback_from_logits`
on step i's raw logits (softmax at temperature 1, whatever the sampling settings),
scaled by the time schedule `sm_schedule`. Step 0 has no feedback.

NFE budget = steps / max_new_tokens (paper eq. 3): `nfe_budget=0.25` sets steps = N / 4. The number of
model forward passes equals the steps (fewer only with `stop_when_finished`); outputs report it.

This file is copied into every saved checkpoint: it imports only torch, transformers and siblings.
"""

import copy
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from transformers import GenerationConfig
from transformers.modeling_outputs import ModelOutput

from .block_generation import (
    FAST_DECODING_DEFAULTS,
    block_diffusion_sample,
    fast_decoding_checks,
    select_feedback,
    uses_fast_decoding,
)
from .decoding_trace import SoftMaskTraceStep, render_decoding, trace_step  # noqa: F401 (re-exported)
from .soft_masking import SM_SCHEDULE_FUNCTIONS, SoftMaskFeedback, feedback_from_logits, schedule_factor
from .unmasking import (
    UNMASKING_ALGORITHMS,
    StepPlan,
    diffusion_timesteps,
    get_unmasking_algorithm,
    rows_per_chunk,
    sample_tokens,
    suppress_tokens,
    tokens_to_unmask,
    transfer_probability,
)

# Dream's own defaults, set explicitly: transformers 4.x's GenerationConfig defaults top_k=50, top_p=1.0.
_DREAM_DEFAULTS = dict(temperature=0.0, top_p=None, top_k=None, max_length=20, num_return_sequences=1,
                       return_dict_in_generate=False)


class SoftMaskDreamGenerationConfig(GenerationConfig):
    r"""Dream's `DreamGenerationConfig` fields and defaults, plus soft-masking and NFE-budget fields.

    Dream fields:
        steps (`int`, 512): denoising steps = model forward passes.
        max_new_tokens (`int`, None): N, masks appended to the prompt; if None, `max_length` (20)
            new tokens, or `max_length - prompt length` when `max_length` is passed explicitly.
        eps (`float`, 1e-3): the last time of the grid linspace(1, eps, steps + 1).
        alg (`str`, "origin"): unmasking algorithm, a key of `UNMASKING_ALGORITHMS`.
        alg_temp (`float`, None): None/0 = unmask the most confident; > 0 = sample positions.
        temperature (`float`, 0.0), top_p (`float`, None), top_k (`int`, None): token sampling.
        num_return_sequences (`int`, 1), return_dict_in_generate (`bool`, False),
        output_history (`bool`, False): keep the canvas after every step (and the SM trace).
        mask_token_id, pad_token_id, bos_token_id, eos_token_id: None = the model config's.
    Added fields:
        nfe_budget (`float`, None): steps / max_new_tokens; when set, steps = round(N * budget).
        soft_masking (`bool`, None): SM between steps; None = the model config's `sm_enabled`.
        sm_schedule (`str`, None), sm_threshold (`float`, None): time schedule of lambda and its
            threshold t'; None = the model config's.
        tokenizer_vocab_size (`int`, None): ids >= this are never sampled; None = mask_token_id + 1
            (Dream's tokenizers end with the mask token).
        stop_when_finished (`bool`, False): stop once no row has a [MASK] before its first eos; the
            text up to the first eos is then exactly that of the full run, later positions are eos.
    Fast decoding (`block_generation.py`; any of these set takes the block loop):
        block_length (`int`, None): semi-autoregressive blocks; None = 32 with a cache, else one block.
        use_cache (`bool`, False): prefix KV cache, refreshed once per block (Fast-dLLM).
        dual_cache (`bool`, False): prefix + suffix KV cache (implies a cache).
        cache_refresh_interval (`int`, None): also refresh every n steps inside a block.
        threshold (`float`, None): commit every block mask with confidence >= threshold (at least
            one per step); `steps`, `alg` and `alg_temp` are then unused. Fast-dLLM uses 0.9.
        remasking (`str`, None): ReMDM schedule ("cap", "rescale", "loop"), with remasking_eta,
            remasking_t_on, remasking_t_off, remasking_alpha_on (None = the schedule's defaults).
    """

    def __init__(self, **kwargs):
        self.steps = kwargs.pop("steps", 512)
        self.eps = kwargs.pop("eps", 1e-3)
        self.alg = kwargs.pop("alg", "origin")
        self.alg_temp = kwargs.pop("alg_temp", None)
        self.output_history = kwargs.pop("output_history", False)
        self.mask_token_id = kwargs.pop("mask_token_id", None)
        self.nfe_budget = kwargs.pop("nfe_budget", None)
        self.soft_masking = kwargs.pop("soft_masking", None)
        self.sm_schedule = kwargs.pop("sm_schedule", None)
        self.sm_threshold = kwargs.pop("sm_threshold", None)
        self.tokenizer_vocab_size = kwargs.pop("tokenizer_vocab_size", None)
        self.stop_when_finished = kwargs.pop("stop_when_finished", False)
        for key, value in FAST_DECODING_DEFAULTS.items():
            setattr(self, key, kwargs.pop(key, value))
        use_cache = self.use_cache
        for key, value in _DREAM_DEFAULTS.items():
            kwargs.setdefault(key, value)
        super().__init__(**kwargs)
        self.use_cache = use_cache  # GenerationConfig sets its own (autoregressive) `use_cache`

    @classmethod
    def from_model_config(cls, model_config) -> "SoftMaskDreamGenerationConfig":
        """Defaults with the model's special ids (the released generation_config.json has mask null)."""
        get = model_config.get if isinstance(model_config, dict) else lambda key: getattr(model_config, key, None)
        ids = {key: get(key) for key in ("mask_token_id", "pad_token_id", "bos_token_id", "eos_token_id")}
        return cls(**ids, _from_model_config=True)

    def validate(self, strict: bool = False, user_set_attributes=None) -> None:
        """Raise `ValueError` naming the field for values `diffusion_generate` cannot use."""
        checks = [
            ("alg", self.alg in UNMASKING_ALGORITHMS, f"choose one of {sorted(UNMASKING_ALGORITHMS)}"),
            ("steps", _is_int(self.steps) and self.steps >= 1, "it must be an integer >= 1"),
            ("eps", self.eps is not None and 0.0 < self.eps < 1.0, "it must lie in (0, 1), e.g. 1e-3"),
            ("temperature", self.temperature is None or self.temperature >= 0, "it must be >= 0"),
            ("top_p", self.top_p is None or 0.0 < self.top_p <= 1.0, "it must lie in (0, 1] or be None"),
            ("top_k", self.top_k is None or (_is_int(self.top_k) and self.top_k >= 1), "it must be >= 1 or None"),
            ("alg_temp", self.alg_temp is None or self.alg_temp >= 0, "it must be >= 0 or None"),
            ("max_new_tokens", self.max_new_tokens is None or self.max_new_tokens >= 1, "it must be >= 1"),
            ("nfe_budget", self.nfe_budget is None or self.nfe_budget > 0, "it must be > 0, e.g. 0.25, 0.5 or 1"),
            ("sm_schedule", self.sm_schedule is None or self.sm_schedule in SM_SCHEDULE_FUNCTIONS,
             f"choose one of {list(SM_SCHEDULE_FUNCTIONS)}"),
            ("sm_threshold", self.sm_threshold is None or 0.0 <= self.sm_threshold <= 1.0, "it must lie in [0, 1]"),
            ("tokenizer_vocab_size", self.tokenizer_vocab_size is None or self.tokenizer_vocab_size >= 1,
             "it must be >= 1, e.g. len(tokenizer)"),
            *fast_decoding_checks(self),
        ]
        for name, ok, fix in checks:
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid: {fix}.")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class SoftMaskDreamGenerationOutput(ModelOutput):
    """sequences: (b, prompt + N) tokens incl. the prompt; history: the canvas after each step;
    nfe: model forward passes run; sm_trace: per step, the `SoftMaskTraceStep` (None without SM)."""

    sequences: torch.LongTensor = None
    history: Optional[Tuple[torch.LongTensor, ...]] = None
    nfe: Optional[int] = None
    sm_trace: Optional[Tuple[Optional[SoftMaskTraceStep], ...]] = None


def resolve_steps(config: SoftMaskDreamGenerationConfig, max_new_tokens: int) -> int:
    """The number of denoising steps: round(N * nfe_budget) when a budget is set, else `steps`.

    More steps than tokens only makes sense for `origin` (independent per-position unmasking); the
    count-based algorithms would run forward passes that unmask nothing.
    """
    steps = config.steps
    if config.nfe_budget is not None:
        steps = max(1, round(max_new_tokens * config.nfe_budget))
    remasks = config.remasking not in (None, "none")  # ReMDM revises tokens: T >= N steps make sense
    if steps > max_new_tokens and config.alg != "origin" and config.threshold is None and not remasks:
        raise ValueError(
            f"steps={steps} exceeds max_new_tokens={max_new_tokens} with alg={config.alg!r}: steps beyond one "
            "token each unmask nothing. Use steps <= max_new_tokens (nfe_budget <= 1) or alg='origin'."
        )
    return steps


def finished_rows(x: torch.Tensor, prompt_length: int, mask_token_id: int, eos_ids: torch.Tensor) -> torch.Tensor:
    """(b,) bool: rows with no [MASK] before their first generated eos (anywhere, if there is none).

    Later steps can only change masked positions, so the text up to the first eos is final.
    """
    is_eos = torch.isin(x[:, prompt_length:], eos_ids)  # (b, N)
    end = prompt_length + torch.where(is_eos.any(-1), is_eos.int().argmax(-1), is_eos.shape[1])  # (b,)
    before = torch.arange(x.shape[1], device=x.device) < end.unsqueeze(-1)  # (b, l)
    return ~((x == mask_token_id) & before).any(-1)


class SoftMaskDreamGenerationMixin:
    """Adds `diffusion_generate` (Dream's interface) to `SoftMaskDreamForDiffusionLM`."""

    generation_config_class = SoftMaskDreamGenerationConfig

    def adjust_generation_fn(self, generation_config, from_auto_class, from_pipeline, pretrained_model_name_or_path,
                             **kwargs) -> None:
        """Called by `from_pretrained`: read generation_config.json as a `SoftMaskDreamGenerationConfig`."""
        if generation_config is not None:
            self.generation_config = self.generation_config_class.from_dict(generation_config.to_dict())
            return
        names = ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision", "subfolder")
        try:
            self.generation_config = self.generation_config_class.from_pretrained(
                pretrained_model_name_or_path, **{k: kwargs[k] for k in names if k in kwargs}
            )
        except OSError:  # no generation_config.json: keep the one built from the model config
            pass

    @torch.no_grad()
    def diffusion_generate(self, inputs: Optional[torch.LongTensor] = None, generation_config=None, **kwargs):
        r"""Generate with Dream's diffusion sampler, soft-masking and NFE budgets.

        inputs: (b, p) prompt ids, left-padded when lengths differ (pass `attention_mask`).
        generation_config: a `SoftMaskDreamGenerationConfig` (else the model's); kwargs override fields.
        Extra kwargs: attention_mask (b, p) 1 = token, 0 = left padding; generator (torch.Generator);
            generation_tokens_hook_func / generation_logits_hook_func, called as f(step, x, logits)
            (step None once before the loop), returning x / the (b, l, V) shift-aligned logits.
        Returns the (b, p + N) sequences, or with return_dict_in_generate=True a
        `SoftMaskDreamGenerationOutput` (sequences, history, nfe, sm_trace).
        """
        tokens_hook = kwargs.pop("generation_tokens_hook_func", None)
        logits_hook = kwargs.pop("generation_logits_hook_func", None)
        attention_mask = kwargs.pop("attention_mask", None)
        generator = kwargs.pop("generator", None)
        explicit_max_length = "max_length" in kwargs
        config = self._prepare_generation_config(generation_config, kwargs)
        x, attention_mask, prompt_length = self._prepare_canvas(inputs, attention_mask, config, explicit_max_length)
        self._resolve_decoding(config, x.shape[1] - prompt_length)
        x, history, trace, nfe = self._diffusion_sample(
            x, attention_mask, prompt_length, config, tokens_hook, logits_hook, generator
        )
        if not config.return_dict_in_generate:
            return x
        keep = config.output_history
        return SoftMaskDreamGenerationOutput(
            sequences=x, history=tuple(history) if keep else None, nfe=nfe, sm_trace=tuple(trace) if keep else None
        )

    def _prepare_generation_config(self, generation_config, kwargs) -> SoftMaskDreamGenerationConfig:
        """A copy of the given (or the model's) config, updated by kwargs; unknown kwargs raise."""
        if generation_config is None:
            generation_config = getattr(self, "generation_config", None)
        if not isinstance(generation_config, SoftMaskDreamGenerationConfig):
            base = {} if generation_config is None else generation_config.to_dict()
            base.pop("_from_model_config", None)
            generation_config = SoftMaskDreamGenerationConfig.from_dict(base)
        config = copy.deepcopy(generation_config)
        if "nfe_budget" in kwargs and "steps" in kwargs and kwargs["nfe_budget"] is not None:
            raise ValueError(f"got steps={kwargs['steps']} and nfe_budget={kwargs['nfe_budget']}; pass only one.")
        if "steps" in kwargs:
            config.nfe_budget = None  # steps passed for this call win over a stored budget
        unknown = config.update(**kwargs)
        if unknown:
            raise ValueError(f"diffusion_generate got unknown arguments {sorted(unknown)}; see SoftMaskDreamGenerationConfig.")
        for key in ("mask_token_id", "pad_token_id", "bos_token_id", "eos_token_id"):
            if getattr(config, key) is None:
                setattr(config, key, getattr(self.config, key, None))
        if config.mask_token_id != self.config.mask_token_id:
            raise ValueError(
                f"mask_token_id={config.mask_token_id} differs from the model's {self.config.mask_token_id}; "
                "the model only soft-masks its own mask id."
            )
        return config

    def _prepare_canvas(self, inputs, attention_mask, config, explicit_max_length: bool):
        """Prompt (repeated num_return_sequences times) followed by N masks, the extended attention
        mask, and the prompt length."""
        if inputs is None or inputs.dim() != 2:
            raise ValueError("inputs must be a (batch, prompt_length) tensor of token ids.")
        prompt_length = inputs.shape[1]
        if config.max_new_tokens is not None:
            new_tokens = config.max_new_tokens
        elif explicit_max_length:
            new_tokens = config.max_length - prompt_length
        else:
            new_tokens = config.max_length
        if new_tokens < 1:
            raise ValueError(f"max_length={config.max_length} leaves no room after a {prompt_length}-token prompt; "
                             "set max_new_tokens.")
        config.max_new_tokens = new_tokens
        repeat = config.num_return_sequences or 1
        x = inputs.repeat_interleave(repeat, dim=0)
        masks = torch.full((x.shape[0], new_tokens), config.mask_token_id, dtype=x.dtype, device=x.device)
        x = torch.cat([x, masks], dim=1)  # (b, p + N)
        if attention_mask is not None:
            attention_mask = _check_left_padding(attention_mask, inputs).repeat_interleave(repeat, dim=0)
            attention_mask = torch.cat([attention_mask, torch.ones_like(masks, dtype=attention_mask.dtype)], dim=1)
        return x, attention_mask, prompt_length

    def _resolve_decoding(self, config, new_tokens: int) -> None:
        """Fix steps, SM settings and the sampling vocabulary for this call (on the copied config)."""
        config.steps = resolve_steps(config, new_tokens)
        if config.soft_masking is None:
            config.soft_masking = bool(self.config.sm_enabled)
        if config.soft_masking and not self.config.sm_enabled:
            raise ValueError("soft_masking=True but model.config.sm_enabled is False; set it to True to use SM.")
        config.sm_schedule = self.config.sm_schedule if config.sm_schedule is None else config.sm_schedule
        config.sm_threshold = self.config.sm_threshold if config.sm_threshold is None else config.sm_threshold
        limit = config.tokenizer_vocab_size
        config.tokenizer_vocab_size = min(config.mask_token_id + 1, self.config.vocab_size) if limit is None else limit
        if not config.mask_token_id < config.tokenizer_vocab_size <= self.config.vocab_size:
            raise ValueError(
                f"tokenizer_vocab_size={config.tokenizer_vocab_size} must lie in ({config.mask_token_id}, "
                f"{self.config.vocab_size}]: pass len(tokenizer)."
            )
        config.validate()

    def _diffusion_sample(self, x, attention_mask, prompt_length, config, tokens_hook, logits_hook, generator):
        """The denoising loop: `steps` forward passes, unmasking and SM feedback in between."""
        if uses_fast_decoding(config):
            return block_diffusion_sample(self, x, attention_mask, prompt_length, config, tokens_hook, logits_hook,
                                          generator)
        algorithm = get_unmasking_algorithm(config.alg)
        timesteps = diffusion_timesteps(config.steps, config.eps, device=x.device)
        eos_ids = torch.tensor(_as_list(config.eos_token_id), dtype=x.dtype, device=x.device)
        x = tokens_hook(None, x, None) if tokens_hook is not None else x
        full = tokens_hook is not None or logits_hook is not None  # hooks see (b, l, V) logits, as in Dream
        feedback, history, trace, nfe = None, [], [], 0
        for step in range(config.steps):
            masked = x == config.mask_token_id  # (b, l)
            raw, rows, logits = self._denoiser_rows(x, attention_mask, masked, feedback, step, logits_hook, full)
            nfe += 1
            plan = StepPlan(
                counts=tokens_to_unmask(masked.sum(-1), timesteps, step),
                transfer_prob=transfer_probability(timesteps, step),
                alg_temp=config.alg_temp,
                generator=generator,
            )
            x = unmask_step(x, masked, rows, algorithm, plan, config)
            x = tokens_hook(step, x, logits) if tokens_hook is not None else x
            done = config.stop_when_finished and bool(finished_rows(x, prompt_length, config.mask_token_id, eos_ids).all())
            if done and len(eos_ids):
                x = x.masked_fill(x == config.mask_token_id, int(eos_ids[0]))  # only after every row's first eos
            feedback = None
            if config.soft_masking and step < config.steps - 1 and not done:
                feedback = self._next_feedback(raw, masked, x, step + 1, config)
            if config.output_history:
                history.append(x.clone())
                trace.append(self._trace_step(feedback))
            if done:
                break
        return x, history, trace, nfe

    def _denoiser_rows(self, x, attention_mask, masked, feedback, step, logits_hook, full: bool):
        """One forward pass. Returns the raw shift-aligned logit rows at masked positions (n, V), the
        rows to sample from (after the logits hook) and, if `full`, the (b, l, V) logits for hooks;
        otherwise the LM head runs at masked positions only."""
        if not full:
            raw = self(x, attention_mask, sm_feedback=feedback, target_mask=masked).logits  # (n, V)
            return raw, raw, None
        from .modeling_sm_dream import shift_right  # deferred: modeling imports this module

        logits = shift_right(self(x, attention_mask, sm_feedback=feedback).logits)  # (b, l, V)
        raw = logits[masked]  # a copy: the hook may edit `logits` in place
        if logits_hook is not None:
            logits = logits_hook(step, x, logits)
        return raw, logits[masked], logits

    def _next_feedback(self, raw_rows, masked, x, next_step: int, config) -> Optional[SoftMaskFeedback]:
        """SM feedback for the positions still masked after this step, scaled by the schedule."""
        scale = schedule_factor(config.sm_schedule, next_step, config.steps, config.sm_threshold)
        still = masked & (x == config.mask_token_id)  # (b, l)
        if scale == 0.0 or not bool(still.any()):
            return None
        feedback = feedback_from_logits(raw_rows, masked, k=self.config.sm_top_k,
                                        full_vocab=self.config.sm_full_vocab, chunk_size=rows_per_chunk(raw_rows))
        return select_feedback(feedback, still).with_scale(scale)

    def _trace_step(self, feedback: Optional[SoftMaskFeedback]) -> Optional[SoftMaskTraceStep]:
        """What the next pass receives: top candidate and applied lambda per soft position."""
        return trace_step(feedback, self.soft_mask)


def unmask_step(x, masked, rows, algorithm, plan: StepPlan, config) -> torch.Tensor:
    """Commit the selected masked positions of `x` to their sampled tokens (a new tensor).

    rows: (n, V) logits at the `masked` positions (row-major). Confidences are float32.
    """
    candidates, confidences = [], []
    for part in rows.split(rows_per_chunk(rows)):  # cache-sized chunks of (c, V) rows
        part = suppress_tokens(part, config.mask_token_id, config.tokenizer_vocab_size)  # float32 copy
        x0, probs = sample_tokens(part, config.temperature or 0.0, config.top_p, config.top_k, plan.generator)
        candidates.append(x0)
        confidences.append(algorithm.confidence(probs, x0, plan.generator))
    confidence = torch.full(x.shape, float("-inf"), device=x.device)  # (b, l) float32
    proposal = torch.full_like(x, -1)
    if candidates:
        confidence[masked], proposal[masked] = torch.cat(confidences), torch.cat(candidates)
    chosen = algorithm.select(confidence, masked, plan)  # (b, l) bool
    return torch.where(chosen, proposal, x)


def _check_left_padding(attention_mask: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    if attention_mask.shape != inputs.shape:
        raise ValueError(f"attention_mask of shape {tuple(attention_mask.shape)} must match inputs {tuple(inputs.shape)}.")
    mask = attention_mask.long()
    if bool((mask[:, 1:] < mask[:, :-1]).any()):
        raise ValueError("attention_mask has padding on the right; tokenize with padding_side='left'.")
    return mask


def _as_list(ids) -> List[int]:
    if ids is None:
        return []
    return [int(i) for i in ids] if isinstance(ids, (list, tuple)) else [int(ids)]
