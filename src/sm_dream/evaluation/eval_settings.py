# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""The generation settings of an lm-eval run (`--model_args`), validated before anything loads.

Defaults follow the paper's evaluation (Appendix A.2): temperature 0.1, top_p 0.9, entropy
unmasking, NFE budget 1 (steps = max_new_tokens). The budget is one argument:

    NFE budget = steps / max_new_tokens        (paper eq. 3; 1/4, 1/2 and 1/1 in Tables 2-3)

so `nfe_budget=0.25` runs each task at a quarter as many denoising steps as it has new tokens,
whatever its length; `steps=N` fixes the step count instead (not both).

These settings win over a task's sampling `gen_kwargs` (`do_sample`, `temperature`, `top_p`,
`top_k`: lm-eval's code tasks ask for greedy decoding, the paper samples); a task's `until` and
`max_gen_toks` are used, unless `max_new_tokens` is given here, which then applies to every task.
"""

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional

from ..model.block_generation import FAST_DECODING_DEFAULTS
from ..model.configuration_sm_dream import SM_SCHEDULES
from ..model.unmasking import UNMASKING_ALGORITHMS

# Keyword arguments passed through to `diffusion_generate` unchanged (it validates them): Dream's
# `eps`, `stop_when_finished`, and the fast-decoding options (block length, KV caches, confidence
# threshold, ReMDM remasking). Extend this tuple when the generation API gains an option; any other
# model argument is refused.
PASS_THROUGH_GENERATION_ARGS = ("eps", "stop_when_finished", *FAST_DECODING_DEFAULTS)
# Task gen_kwargs that these settings replace (see the module docstring).
TASK_SAMPLING_KEYS = ("do_sample", "temperature", "top_p", "top_k")


def positive_int(name: str, value, allow_none: bool = True) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer.")
    return int(value)


def _finite(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r} must be a finite number.")
    return float(value)


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
    soft_masking: bool = True
    sm_top_k: Optional[int] = None  # None: the checkpoint's config
    sm_schedule: Optional[str] = None
    sm_threshold: Optional[float] = None
    seed: int = 1234
    extra: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise `ValueError` naming the first argument that cannot work."""
        self.max_new_tokens = positive_int("max_new_tokens", self.max_new_tokens)
        self.steps = positive_int("steps", self.steps)
        self.top_k = positive_int("top_k", self.top_k)
        self.sm_top_k = positive_int("sm_top_k", self.sm_top_k)
        if self.steps is not None and self.nfe_budget is not None:
            raise ValueError(f"Give steps={self.steps} or nfe_budget={self.nfe_budget}, not both.")
        if self.nfe_budget is not None and not _finite("nfe_budget", self.nfe_budget) > 0:
            raise ValueError(f"nfe_budget={self.nfe_budget} must be > 0 (steps / max_new_tokens, e.g. 0.25, 0.5, 1).")
        if self.alg not in UNMASKING_ALGORITHMS:
            raise ValueError(f"alg={self.alg!r} is unknown; choose one of {sorted(UNMASKING_ALGORITHMS)}.")
        if not _finite("temperature", self.temperature) >= 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0 (0 = argmax).")
        if self.top_p is not None and not 0 < _finite("top_p", self.top_p) <= 1:
            raise ValueError(f"top_p={self.top_p} must lie in (0, 1] (or None for no nucleus filter).")
        if self.alg_temp is not None and not _finite("alg_temp", self.alg_temp) >= 0:
            raise ValueError(f"alg_temp={self.alg_temp} must be >= 0 (or None).")
        if not isinstance(self.soft_masking, bool):
            raise ValueError(f"soft_masking={self.soft_masking!r} must be true or false.")
        if self.sm_schedule is not None and self.sm_schedule not in SM_SCHEDULES:
            raise ValueError(f"sm_schedule={self.sm_schedule!r} is unknown; choose one of {list(SM_SCHEDULES)}.")
        if self.sm_threshold is not None and not 0 <= _finite("sm_threshold", self.sm_threshold) <= 1:
            raise ValueError(f"sm_threshold={self.sm_threshold} must lie in [0, 1].")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed={self.seed!r} must be an integer.")
        unknown = sorted(set(self.extra) - set(PASS_THROUGH_GENERATION_ARGS))
        if unknown:
            raise ValueError(
                f"Unknown model argument(s) {unknown}. Generation options passed through: "
                f"{list(PASS_THROUGH_GENERATION_ARGS)}; see `sm_dream.evaluation.eval_settings`."
            )

    def generate_kwargs(self, max_new_tokens: int) -> Dict[str, Any]:
        """Keyword arguments of `diffusion_generate` for a task with `max_new_tokens` new tokens (the
        step count is derived there from `nfe_budget`: round(budget * max_new_tokens), >= 1)."""
        kwargs = dict(
            max_new_tokens=max_new_tokens,
            alg=self.alg,
            alg_temp=self.alg_temp,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            soft_masking=self.soft_masking,
        )
        if self.steps is not None:
            kwargs["steps"] = self.steps
        else:
            kwargs["nfe_budget"] = self.nfe_budget or 1.0
        optional = {"sm_schedule": self.sm_schedule, "sm_threshold": self.sm_threshold}
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        kwargs.update(self.extra)
        return kwargs

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)
