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

Steps. Without `steps` or `nfe_budget` a call runs one step per new token (NFE budget 1).
NFE budget = steps / max_new_tokens (paper eq. 3): `nfe_budget=0.25` sets steps = N / 4. A `steps`
passed to the call (or in a `generation_config` passed to it) is used as given, as in Dream. A
`steps` stored in the model's generation_config.json (Dream's released files store 512) is a
default: a smaller `max_new_tokens` clamps it to one step per token. The number of model forward
passes equals the steps (fewer only with `stop_when_finished`, or more blocks' worth with
`threshold`); outputs report it. The loop itself is `denoising.py`.

This file is copied into every saved checkpoint: it imports only torch, transformers and siblings.
"""

import copy
import math
import numbers
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from transformers import GenerationConfig
from transformers.modeling_outputs import ModelOutput

from .blocks import FAST_DECODING_DEFAULTS
from .configuration_sm_dream import SM_SCHEDULES, is_integer
from .decoding_trace import SoftMaskTraceStep, render_decoding  # noqa: F401 (re-exported)
from .denoising import denoise
from .remasking import REMASKING_SCHEDULES, get_remasking_schedule, remasks
from .sampling import SAMPLING_DRAWS
from .unmasking import UNMASKING_ALGORITHMS

# Dream's own defaults, set explicitly: transformers 4.x's GenerationConfig defaults top_k=50, top_p=1.0.
_DREAM_DEFAULTS = dict(temperature=0.0, top_p=None, top_k=None, max_length=20, num_return_sequences=1,
                       return_dict_in_generate=False)
# Below this a temperature (or alg_temp) divides logits into overflow or exact ties; 0 is greedy.
MIN_TEMPERATURE = 1e-5


class SoftMaskDreamGenerationConfig(GenerationConfig):
    r"""Dream's `DreamGenerationConfig` fields and defaults, plus soft-masking and NFE-budget fields.

    Dream fields:
        steps (`int`, None): denoising steps = model forward passes; None = one per new token (Dream's
            default is 512; a stored value larger than `max_new_tokens` is clamped to it, see the module doc).
        max_new_tokens (`int`, None): N, masks appended to the prompt; if None, `max_length` (20)
            new tokens, or `max_length - prompt length` when `max_length` is passed explicitly.
        eps (`float`, 1e-3): the last time of the grid linspace(1, eps, steps + 1).
        alg (`str`, "origin"): unmasking algorithm, a key of `UNMASKING_ALGORITHMS`.
        alg_temp (`float`, None): None/0 = unmask the most confident; >= 1e-5 = sample positions.
        temperature (`float`, 0.0): 0 = greedy, else >= 1e-5; top_p (`float`, None), top_k (`int`, None).
        num_return_sequences (`int`, 1), return_dict_in_generate (`bool`, False),
        output_history (`bool`, False): keep the canvas after every step (and the SM trace) in the
            returned dict; needs return_dict_in_generate=True (a ValueError otherwise, never a silent drop).
        mask_token_id, pad_token_id, bos_token_id, eos_token_id: None = the model config's.
    Added fields:
        nfe_budget (`float`, None): steps / max_new_tokens; when set, steps = round(N * budget).
        soft_masking (`bool`, None): SM between steps; None = the model config's `sm_enabled`.
        sm_schedule (`str`, None), sm_threshold (`float`, None): time schedule of lambda and its
            threshold t'; None = the model config's.
        tokenizer_vocab_size (`int`, None): ids >= this are never sampled; None = mask_token_id + 1
            (Dream's tokenizers end with the mask token).
        sampling_draws (`str`, "multinomial"): how a sampled token is drawn from the kept candidates
            (temperature > 0): "multinomial" = `torch.multinomial`'s draw over the vocabulary, the tokens
            of Dream's sampler for a seed; "inverse_cdf" = one uniform per row, the same distribution
            without |V| random numbers per row and step (cheaper on CPU; another random stream).
        stop_when_finished (`bool`, False): stop once no row has a [MASK] before its first eos; the
            text up to the first eos is then exactly that of the full run, later positions are eos.
        progress_bar (`bool`, False): a tqdm bar over the steps (transformers' tqdm, so
            `transformers.utils.logging.disable_progress_bar()` silences it too).
    Fast decoding (options of the same loop, `denoising.py`):
        block_length (`int`, None): semi-autoregressive blocks; None = 32 with a cache, else one block.
        use_cache (`bool`, False): prefix KV cache, refreshed once per block (Fast-dLLM).
        dual_cache (`bool`, False): prefix + suffix KV cache (implies a cache).
        cache_refresh_interval (`int`, None): also refresh every n steps inside a block (the KV cache
            and, with SM, the suffix feedback; without a cache only the latter).
        sm_feedback_horizon (`int`, None): with blocks and SM, a refresh also feeds back the masks at
            most this many positions after the active block; None = block_length (the next block),
            0 = none, >= max_new_tokens = the whole suffix (docs/fast_decoding.md).
        threshold (`float`, None): commit every block mask with confidence >= threshold (at least
            one per step); `steps`, `alg` and `alg_temp` are then unused. Fast-dLLM uses 0.9.
        remasking (`str`, None): ReMDM schedule ("cap", "rescale", "loop"), with remasking_eta,
            remasking_t_on, remasking_t_off, remasking_alpha_on (None = the schedule's defaults).
    """

    def __init__(self, **kwargs):
        self.steps = kwargs.pop("steps", None)
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
        self.sampling_draws = kwargs.pop("sampling_draws", "multinomial")
        self.stop_when_finished = kwargs.pop("stop_when_finished", False)
        self.progress_bar = kwargs.pop("progress_bar", False)
        for key, value in FAST_DECODING_DEFAULTS.items():
            setattr(self, key, kwargs.pop(key, value))
        for key, value in _DREAM_DEFAULTS.items():
            kwargs.setdefault(key, value)
        use_cache = self.use_cache
        super().__init__(use_cache=use_cache, **kwargs)  # GenerationConfig has its own (autoregressive) field
        self.use_cache = use_cache

    @classmethod
    def from_model_config(cls, model_config) -> "SoftMaskDreamGenerationConfig":
        """Defaults with the model's special ids (the released generation_config.json has mask null)."""
        get = model_config.get if isinstance(model_config, dict) else lambda key: getattr(model_config, key, None)
        ids = {key: get(key) for key in ("mask_token_id", "pad_token_id", "bos_token_id", "eos_token_id")}
        return cls(**ids, _from_model_config=True)

    def validate(self, strict: bool = False, user_set_attributes=None, **kwargs) -> None:
        """The one validator of decoding settings: `ValueError` naming the field, its value and the fix
        for any value `diffusion_generate` cannot use (types, ranges, combinations)."""
        for name, ok, fix in self._checks():
            if not ok:
                raise ValueError(f"{name}={getattr(self, name, None)!r} is invalid: {fix}.")
        if remasks(self.remasking):  # the schedule checks its own parameters by name
            get_remasking_schedule(self.remasking, **self._remasking_params())

    def _checks(self):
        """(field, valid?, how to fix) for every decoding field."""
        temperature_fix = f"use 0 (greedy) or a finite value >= {MIN_TEMPERATURE}"
        return [
            ("alg", _name_in(self.alg, UNMASKING_ALGORITHMS), f"choose one of {sorted(UNMASKING_ALGORITHMS)}"),
            ("steps", _count(self.steps), "it must be an integer >= 1, or None for one step per new token"),
            ("max_new_tokens", _count(self.max_new_tokens), "it must be an integer >= 1 (or None)"),
            ("max_length", _count(self.max_length), "it must be an integer >= 1; or set max_new_tokens"),
            ("num_return_sequences", _count(self.num_return_sequences), "it must be an integer >= 1"),
            ("eps", _in_range(self.eps, 0.0, 1.0, closed=False), "it must lie in (0, 1), e.g. 1e-3"),
            ("temperature", _temperature(self.temperature), temperature_fix),
            ("alg_temp", _temperature(self.alg_temp), f"{temperature_fix}, or None"),
            ("top_p", self.top_p is None or (_real(self.top_p) and 0.0 < self.top_p <= 1.0),
             "it must lie in (0, 1] or be None"),
            ("top_k", _count(self.top_k), "it must be an integer >= 1 or None"),
            ("sampling_draws", _name_in(self.sampling_draws, SAMPLING_DRAWS), f"choose one of {list(SAMPLING_DRAWS)}"),
            ("nfe_budget", self.nfe_budget is None or (_real(self.nfe_budget) and self.nfe_budget > 0),
             "it must be a finite number > 0, e.g. 0.25, 0.5 or 1"),
            ("sm_schedule", self.sm_schedule is None or _name_in(self.sm_schedule, SM_SCHEDULES),
             f"choose one of {list(SM_SCHEDULES)}"),
            ("sm_threshold", self.sm_threshold is None or _in_range(self.sm_threshold, 0.0, 1.0),
             "it must lie in [0, 1]"),
            ("soft_masking", self.soft_masking is None or isinstance(self.soft_masking, bool),
             "it must be True, False or None"),
            ("tokenizer_vocab_size", _count(self.tokenizer_vocab_size),
             "it must be an integer >= 1, e.g. len(tokenizer)"),
            ("mask_token_id",
             self.mask_token_id is None or (is_integer(self.mask_token_id) and self.mask_token_id >= 0),
             "it must be a token id >= 0 or None (the model's)"),
            *[(flag, isinstance(getattr(self, flag), bool), "it must be True or False") for flag in _FLAGS],
            ("output_history", not self.output_history or self.return_dict_in_generate,
             "the history is a field of the dict output: also pass return_dict_in_generate=True"),
            ("block_length", _count(self.block_length), "it must be an integer >= 1 or None"),
            ("cache_refresh_interval", _count(self.cache_refresh_interval), "it must be an integer >= 1 or None"),
            ("sm_feedback_horizon", _count_or_zero(self.sm_feedback_horizon),
             "it must be an integer >= 0 (positions after the block) or None (one block length)"),
            ("threshold", self.threshold is None or (_real(self.threshold) and self.threshold >= 0),
             "it must be a finite number >= 0 (e.g. 0.9) or None"),
            ("remasking", self.remasking is None or _name_in(self.remasking, REMASKING_SCHEDULES),
             f"choose one of {list(REMASKING_SCHEDULES)} or None"),
            ("remasking", not remasks(self.remasking) or self.threshold is None,
             "ReMDM needs a time grid: use fixed steps (threshold=None)"),
        ]

    def _remasking_params(self) -> dict:
        names = ("eta", "t_on", "t_off", "alpha_on")
        return {n: getattr(self, f"remasking_{n}") for n in names if getattr(self, f"remasking_{n}") is not None}


_FLAGS = ("return_dict_in_generate", "output_history", "stop_when_finished", "progress_bar", "use_cache", "dual_cache")


def _name_in(value, names) -> bool:
    """A string among `names` (a list or dict given as a name is invalid, not a TypeError)."""
    return isinstance(value, str) and value in names


def _count(value) -> bool:
    """None or an integer >= 1."""
    return value is None or (is_integer(value) and value >= 1)


def _count_or_zero(value) -> bool:
    """None or an integer >= 0."""
    return value is None or (is_integer(value) and value >= 0)


def _real(value) -> bool:
    """A finite real number (not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _in_range(value, low: float, high: float, closed: bool = True) -> bool:
    if not _real(value):
        return False
    return low <= value <= high if closed else low < value < high


def _temperature(value) -> bool:
    """None, 0 (greedy / most confident) or a finite value >= MIN_TEMPERATURE."""
    return value is None or (_real(value) and (value == 0 or value >= MIN_TEMPERATURE))


@dataclass
class SoftMaskDreamGenerationOutput(ModelOutput):
    """sequences: (b, prompt + N) tokens incl. the prompt; history: the canvas after each step;
    nfe: model forward passes run; sm_trace: per step, the `SoftMaskTraceStep` (None without SM)."""

    sequences: torch.LongTensor = None
    history: Optional[Tuple[torch.LongTensor, ...]] = None
    nfe: Optional[int] = None
    sm_trace: Optional[Tuple[Optional[SoftMaskTraceStep], ...]] = None


def resolve_steps(config: SoftMaskDreamGenerationConfig, max_new_tokens: int, stored_default: bool = False) -> int:
    """The number of denoising steps: round(N * nfe_budget) with a budget; N (one step per token)
    without steps; else `steps`, clamped to N when it is a stored default (`stored_default`).

    More steps than tokens only makes sense for `origin` (independent per-position unmasking) and
    ReMDM; the count-based algorithms would run forward passes that unmask nothing.
    """
    if config.nfe_budget is not None:
        steps = max(1, round(max_new_tokens * config.nfe_budget))
    elif config.steps is None:
        steps = max_new_tokens
    else:
        steps = min(config.steps, max_new_tokens) if stored_default else config.steps
    # ReMDM revises tokens: T >= N steps make sense
    if steps > max_new_tokens and config.alg != "origin" and config.threshold is None and not remasks(config.remasking):
        budget = "" if config.nfe_budget is None else (
            f"nfe_budget={config.nfe_budget:g} gives {config.nfe_budget:g} denoising steps per new token: ")
        raise ValueError(
            f"{budget}steps={steps} exceeds max_new_tokens={max_new_tokens} with alg={config.alg!r}: steps beyond one "
            "token each unmask nothing. Use steps <= max_new_tokens (nfe_budget <= 1) or alg='origin'."
        )
    return steps


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
        Steps: without `steps` or `nfe_budget`, one step (one forward pass) per new token; `steps`
            passed here (or in the `generation_config` passed here) is used as given, as in Dream; a
            `steps` stored in the model's generation_config.json is clamped to `max_new_tokens`.
        progress_bar=True shows a tqdm bar over the steps.
        Returns the (b, p + N) sequences, or with return_dict_in_generate=True a
        `SoftMaskDreamGenerationOutput` (sequences, history, nfe, sm_trace); output_history=True
        needs return_dict_in_generate=True.
        """
        tokens_hook = kwargs.pop("generation_tokens_hook_func", None)
        logits_hook = kwargs.pop("generation_logits_hook_func", None)
        attention_mask = kwargs.pop("attention_mask", None)
        generator = kwargs.pop("generator", None)
        explicit_max_length = "max_length" in kwargs
        stored_steps = generation_config is None and kwargs.get("steps") is None
        config = self._prepare_generation_config(generation_config, kwargs)
        x, attention_mask, prompt_length = self._prepare_canvas(inputs, attention_mask, config, explicit_max_length)
        self._resolve_decoding(config, x.shape[1] - prompt_length, stored_steps)
        x, history, trace, nfe = denoise(self, x, attention_mask, prompt_length, config, tokens_hook, logits_hook,
                                         generator)
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
        if kwargs.get("nfe_budget") is not None and kwargs.get("steps") is not None:
            raise ValueError(f"got steps={kwargs['steps']} and nfe_budget={kwargs['nfe_budget']}; pass only one.")
        if kwargs.get("steps") is not None:
            config.nfe_budget = None  # steps passed for this call win over a stored budget
        unknown = config.update(**kwargs)
        if unknown:
            raise ValueError(f"diffusion_generate got unknown arguments {sorted(unknown)}; "
                             "see SoftMaskDreamGenerationConfig.")
        for key in ("mask_token_id", "pad_token_id", "bos_token_id", "eos_token_id"):
            if getattr(config, key) is None:
                setattr(config, key, getattr(self.config, key, None))
        if config.mask_token_id != self.config.mask_token_id:
            raise ValueError(
                f"mask_token_id={config.mask_token_id} differs from the model's {self.config.mask_token_id}; "
                "the model only soft-masks its own mask id."
            )
        config.validate()
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

    def _resolve_decoding(self, config, new_tokens: int, stored_steps: bool) -> None:
        """Fix steps, SM settings and the sampling vocabulary for this call (on the validated copy)."""
        config.steps = resolve_steps(config, new_tokens, stored_default=stored_steps)
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


def _check_left_padding(attention_mask: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    if attention_mask.shape != inputs.shape:
        raise ValueError(f"attention_mask of shape {tuple(attention_mask.shape)} must match inputs "
                         f"{tuple(inputs.shape)}.")
    mask = attention_mask.long()
    if bool((mask[:, 1:] < mask[:, :-1]).any()):
        raise ValueError("attention_mask has padding on the right; tokenize with padding_side='left'.")
    return mask
