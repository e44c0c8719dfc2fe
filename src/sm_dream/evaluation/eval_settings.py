# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""The generation settings of an lm-eval run (`--model_args`), validated before anything loads.

Defaults follow the paper's evaluation (Appendix A.2): temperature 0.1, top_p 0.9, entropy
unmasking, NFE budget 1 (steps = max_new_tokens). The budget is one argument:

    NFE budget = steps / max_new_tokens        (paper eq. 3; 1/4, 1/2 and 1/1 in Tables 2-3)

so `nfe_budget=0.25` runs each task at a quarter as many denoising steps as it has new tokens,
whatever its length; `steps=N` fixes the step count instead (not both). `soft_masking` defaults to
the checkpoint's own setting (`sm_enabled`), so a model saved without SM evaluates without SM.

Decoding values are checked by the model's own validator, `SoftMaskDreamGenerationConfig.validate`
(the one `diffusion_generate` applies), on the settings as they will be used; this module checks
only what is particular to evaluation (argument names, types, `steps` vs `nfe_budget`).

Which values win: the model args set the defaults; a request's generation kwargs (`--gen_kwargs`,
or a task's `generation_kwargs`) override them per request: `temperature`, `top_p`, `top_k`,
`do_sample=false` (= temperature 0), and any setting below (e.g. `nfe_budget`, `alg`), with a
warning that names the values in use. Other keys are refused (see `request_overrides`).
"""

import copy
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, Optional

from ..errors import positive_int
from ..model.blocks import FAST_DECODING_DEFAULTS
from ..model.generation_utils import SoftMaskDreamGenerationConfig, resolve_steps

# Keyword arguments passed through to `diffusion_generate` unchanged: Dream's `eps`,
# `stop_when_finished`, and the fast-decoding options (block length, KV caches, confidence threshold,
# ReMDM remasking). Extend this tuple when the generation API gains an option; any other model
# argument is refused.
PASS_THROUGH_GENERATION_ARGS = ("eps", "stop_when_finished", "sampling_draws", *FAST_DECODING_DEFAULTS)
# Request gen_kwargs that are not generation settings but are used by the lm-eval model itself.
REQUEST_KEYS = ("until", "max_gen_toks", "max_new_tokens")
NUMBERS = ("nfe_budget", "alg_temp", "temperature", "top_p", "sm_threshold")
INTEGERS = ("max_new_tokens", "steps", "top_k", "sm_top_k", "seed")
LENGTH_FOR_CHECKS = 1024  # a task length at which a budget's step count is checked before loading


def _check_types(settings: "GenerationSettings") -> None:
    """lm-eval parses `k=v` into int/float/bool/str: refuse a value of the wrong kind by name."""
    for name in NUMBERS + INTEGERS:
        value = getattr(settings, name)
        integer_ok = name not in INTEGERS or (isinstance(value, (int, float)) and value == int(value))
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or not integer_ok):
            kind = "an integer" if name in INTEGERS else "a finite number"
            raise ValueError(f"{name}={value!r} must be {kind}.")
    for name in INTEGERS:
        if getattr(settings, name) is not None:
            setattr(settings, name, int(getattr(settings, name)))
    if settings.soft_masking is not None and not isinstance(settings.soft_masking, bool):
        raise ValueError(f"soft_masking={settings.soft_masking!r} must be true or false (or unset: the checkpoint's).")


@dataclass
class GenerationSettings:
    """What `diffusion_generate` is called with, apart from the prompt and the task's length."""

    max_new_tokens: Optional[int] = None  # None: the task's max_gen_toks (else 256)
    steps: Optional[int] = None
    nfe_budget: Optional[float] = None  # steps / max_new_tokens; 1.0 when neither is given
    alg: str = "entropy"
    alg_temp: Optional[float] = None
    temperature: float = 0.1
    top_p: Optional[float] = 0.9
    top_k: Optional[int] = None
    soft_masking: Optional[bool] = None  # None: the checkpoint's sm_enabled
    sm_top_k: Optional[int] = None  # None: the checkpoint's config
    sm_schedule: Optional[str] = None
    sm_threshold: Optional[float] = None
    seed: int = 1234
    extra: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.validate()

    def validate(self, task_length: Optional[int] = None) -> None:
        """Raise `ValueError` naming the first argument that cannot work (see the module docstring);
        `task_length`: the length of the task these settings generate for, when known."""
        unknown = sorted(set(self.extra) - set(PASS_THROUGH_GENERATION_ARGS))
        if unknown:
            raise ValueError(
                f"Unknown model argument(s) {unknown}. Generation settings: {sorted(SETTING_NAMES)}; passed "
                f"through to diffusion_generate: {list(PASS_THROUGH_GENERATION_ARGS)}."
            )
        _check_types(self)
        if self.steps is not None and self.nfe_budget is not None:
            raise ValueError(f"Give steps={self.steps} or nfe_budget={self.nfe_budget}, not both.")
        positive_int("sm_top_k", self.sm_top_k, allow_none=True, whole_floats=True)
        length = self.max_new_tokens or task_length or LENGTH_FOR_CHECKS
        config = self.generation_config(length)
        config.validate()
        if self.nfe_budget is not None or self.max_new_tokens is not None:
            try:
                resolve_steps(config, length)  # e.g. nfe_budget=2 with a count-based alg
            except ValueError as err:
                if self.max_new_tokens is not None or task_length is not None:
                    raise
                # Each task has its own length: quote the rule, not a made-up length's step count.
                raise ValueError(
                    f"nfe_budget={self.nfe_budget:g} gives {self.nfe_budget:g} denoising steps per new token, more "
                    f"than one with alg={self.alg!r}: steps beyond one per token unmask nothing. Use nfe_budget "
                    "<= 1 or alg='origin'.") from err

    def generation_config(self, max_new_tokens: int) -> SoftMaskDreamGenerationConfig:
        """The model's generation config for these settings and a task of `max_new_tokens` tokens."""
        kwargs = self.generate_kwargs(max_new_tokens)
        kwargs.setdefault("steps", max_new_tokens)
        return SoftMaskDreamGenerationConfig(**kwargs)

    def generate_kwargs(self, max_new_tokens: int) -> Dict[str, Any]:
        """Keyword arguments of `diffusion_generate` for a task with `max_new_tokens` new tokens (the
        step count is derived there from `nfe_budget`: round(budget * max_new_tokens), >= 1)."""
        kwargs = dict(max_new_tokens=max_new_tokens, alg=self.alg, alg_temp=self.alg_temp, temperature=self.temperature,
                      top_p=self.top_p, top_k=self.top_k)
        if self.steps is not None:
            kwargs["steps"] = self.steps
        else:
            kwargs["nfe_budget"] = 1.0 if self.nfe_budget is None else self.nfe_budget
        optional = {"soft_masking": self.soft_masking, "sm_schedule": self.sm_schedule,
                    "sm_threshold": self.sm_threshold}
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        kwargs.update(self.extra)
        return kwargs

    def with_overrides(self, overrides: Dict[str, Any], task_length: Optional[int] = None) -> "GenerationSettings":
        """These settings with a request's overrides (validated for a task of `task_length` tokens; a
        new `steps` drops the budget and vice versa)."""
        if not overrides:
            return self
        known = {k: v for k, v in overrides.items() if k in SETTING_NAMES}
        extra = {**self.extra, **{k: v for k, v in overrides.items() if k not in SETTING_NAMES}}
        if "steps" in known and "nfe_budget" not in known:
            known["nfe_budget"] = None
        if "nfe_budget" in known and "steps" not in known:
            known["steps"] = None
        changed = copy.copy(self)  # not `replace`: its __post_init__ would check at a made-up length
        for key, value in {**known, "extra": extra}.items():
            setattr(changed, key, value)
        changed.validate(task_length)
        return changed

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


SETTING_NAMES = frozenset(f.name for f in fields(GenerationSettings)) - {"extra"}


def slow_path_warning(settings: GenerationSettings) -> Optional[str]:
    """A line for temperature 0 with top_p < 1 or top_k: greedy ignores them, and they turn off the
    greedy path of shared reductions (docs/generation.md), so the run is slower for nothing."""
    if settings.temperature != 0:
        return None
    ignored = [f"{name}={value}" for name, value in (("top_p", settings.top_p), ("top_k", settings.top_k))
               if value is not None and not (name == "top_p" and value >= 1.0)]
    if not ignored:
        return None
    return (f"temperature=0 is greedy: it ignores {' and '.join(ignored)}, which still turn"
            f"{'s' if len(ignored) == 1 else ''} off the fast greedy path; pass top_p=1.0 (and no top_k) "
            "with temperature=0.")


def request_overrides(gen_kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """The generation-setting overrides in a request's gen_kwargs (`--gen_kwargs` merged into the
    task's `generation_kwargs`); `do_sample=false` means greedy (temperature 0). Raises for keys that
    sm_dream cannot apply, rather than ignoring them."""
    overrides = {}
    for key, value in gen_kwargs.items():
        if key in REQUEST_KEYS:
            continue
        if key == "do_sample":
            if value is False and "temperature" not in gen_kwargs:
                overrides["temperature"] = 0.0
        elif key in SETTING_NAMES or key in PASS_THROUGH_GENERATION_ARGS:
            overrides[key] = value
        else:
            raise ValueError(
                f"gen_kwargs {key}={value!r} cannot be applied by sm_dream; "
                f"accepted: {sorted(REQUEST_KEYS)}, do_sample, "
                f"{sorted(SETTING_NAMES)} and {list(PASS_THROUGH_GENERATION_ARGS)}."
            )
    return overrides
