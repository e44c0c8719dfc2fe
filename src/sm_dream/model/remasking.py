# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""ReMDM remasking schedules (Wang et al. 2025, arXiv 2503.00307) on Dream's time grid.

A step goes from time t to s < t (Dream: `linspace(1, eps, steps + 1)`), with alpha(t) the share of
decoded tokens (Dream and MDLM: alpha(t) = 1 - t). ReMDM lets a token decoded before the step be
masked again with probability sigma_t; a masked token is then decoded with probability

    p_unmask = (alpha_s - (1 - sigma_t) * alpha_t) / (1 - alpha_t)

and stays masked otherwise, which keeps the marginals of the forward process: starting from
(1 - alpha_t) N masks, (1 - alpha_s) N are expected after the step. sigma_t = 0 gives Dream's /
MDLM's p_unmask = (alpha_s - alpha_t) / (1 - alpha_t) = 1 - s / t. Valid sigma lie in
[0, sigma_max], sigma_max = min(1, (1 - alpha_s) / alpha_t); every schedule here stays inside.

Schedules (registry `REMASKING_SCHEDULES`, by name):
    none     sigma_t = 0.
    cap      sigma_t = min(eta, (1 - alpha_s) / alpha_t)                    (ReMDM-cap, eta 0.04)
    rescale  sigma_t = eta * sigma_max                                      (ReMDM-rescale)
    loop     three phases (t_on 0.55, t_off 0.05, alpha_on 0.9, eta 0.02):
             t > t_on:          alpha(t) = alpha_on (1 - t) / (1 - t_on),  sigma = 0
             t_off <= s, t <= t_on: alpha = alpha_on (frozen),           sigma = min(eta, sigma_max)
             t <= t_off:        alpha(t) = 1 - t (1 - alpha_on) / t_off,   sigma = 0
             In the loop phase masks decode with p = alpha_on eta / (1 - alpha_on) while decoded
             tokens remask with probability eta: the expected number of masks stays constant.

The last step of a generation decodes every remaining mask and remasks nothing (`remask_plan`).
Which decoded tokens are remasked: each independently with probability sigma_t (ReMDM's default
for cap/loop), among the positions that were already decoded *before* the step and that the
generation produced (never prompt tokens).

This file is carried inside saved checkpoints: it imports only torch.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Type

import torch


@dataclass(frozen=True)
class RemaskProbabilities:
    """unmask: probability that a masked position is decoded at this step; remask: sigma_t."""

    unmask: float
    remask: float


class RemaskingSchedule:
    """sigma_t = 0 on alpha(t) = 1 - t: plain MDLM / Dream decoding."""

    keeps_dream_alpha = True  # alpha(t) = 1 - t: with sigma_t = 0 a step is exactly Dream's

    def alpha(self, t: float) -> float:
        return 1.0 - t

    def sigma(self, t: float, s: float) -> float:
        return 0.0

    def sigma_max(self, t: float, s: float) -> float:
        """min(1, (1 - alpha_s) / alpha_t), the largest sigma that keeps p_unmask in [0, 1]."""
        alpha_t = self.alpha(t)
        return 1.0 if alpha_t <= 0.0 else min(1.0, (1.0 - self.alpha(s)) / alpha_t)

    def probabilities(self, t: float, s: float) -> RemaskProbabilities:
        """p_unmask = (alpha_s - (1 - sigma) alpha_t) / (1 - alpha_t) and sigma for the step t -> s."""
        alpha_t, alpha_s, sigma = self.alpha(t), self.alpha(s), self.sigma(t, s)
        if alpha_t >= 1.0:
            return RemaskProbabilities(unmask=1.0, remask=0.0)
        unmask = (alpha_s - (1.0 - sigma) * alpha_t) / (1.0 - alpha_t)
        return RemaskProbabilities(unmask=min(1.0, max(0.0, unmask)), remask=sigma)


def _check_eta(eta: float) -> float:
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"remasking_eta={eta!r} must lie in [0, 1] (ReMDM uses 0.02-0.04).")
    return float(eta)


class CapSchedule(RemaskingSchedule):
    """ReMDM-cap: sigma_t = min(eta, (1 - alpha_s) / alpha_t)."""

    def __init__(self, eta: float = 0.04):
        self.eta = _check_eta(eta)

    def sigma(self, t: float, s: float) -> float:
        return min(self.eta, self.sigma_max(t, s))


class RescaleSchedule(RemaskingSchedule):
    """ReMDM-rescale: sigma_t = eta * sigma_max."""

    def __init__(self, eta: float = 0.015):
        self.eta = _check_eta(eta)

    def sigma(self, t: float, s: float) -> float:
        return self.eta * self.sigma_max(t, s)


class LoopSchedule(RemaskingSchedule):
    """ReMDM-loop: decode to alpha_on by t_on, remask/decode in equilibrium until t_off, then finish."""

    keeps_dream_alpha = False

    def __init__(self, eta: float = 0.02, t_on: float = 0.55, t_off: float = 0.05, alpha_on: float = 0.9):
        if not 0.0 < t_off < t_on < 1.0:
            raise ValueError(f"remasking_t_on={t_on!r}, remasking_t_off={t_off!r} need 0 < t_off < t_on < 1.")
        if not 0.0 < alpha_on < 1.0:
            raise ValueError(f"remasking_alpha_on={alpha_on!r} must lie in (0, 1) (ReMDM uses 0.9).")
        self.eta, self.t_on, self.t_off, self.alpha_on = _check_eta(eta), float(t_on), float(t_off), float(alpha_on)

    def alpha(self, t: float) -> float:
        if t > self.t_on:
            return self.alpha_on * (1.0 - t) / (1.0 - self.t_on)
        if t >= self.t_off:
            return self.alpha_on
        return 1.0 - t * (1.0 - self.alpha_on) / self.t_off

    def sigma(self, t: float, s: float) -> float:
        in_loop = t <= self.t_on and s >= self.t_off
        return min(self.eta, self.sigma_max(t, s)) if in_loop else 0.0


REMASKING_SCHEDULES: Dict[str, Type[RemaskingSchedule]] = {
    "none": RemaskingSchedule,
    "cap": CapSchedule,
    "rescale": RescaleSchedule,
    "loop": LoopSchedule,
}


def remasks(name: Optional[str]) -> bool:
    """Whether `remasking=name` turns ReMDM on (None and "none" keep Dream's decoding)."""
    return name not in (None, "none")


def get_remasking_schedule(name: Optional[str], **params) -> RemaskingSchedule:
    """The schedule `name` (None = "none") built with `params` (eta, t_on, t_off, alpha_on)."""
    name = "none" if name is None else name
    if name not in REMASKING_SCHEDULES:
        raise ValueError(f"remasking={name!r} is unknown; choose one of {list(REMASKING_SCHEDULES)}.")
    params = {k: v for k, v in params.items() if v is not None}
    try:
        return REMASKING_SCHEDULES[name](**params)
    except TypeError:
        raise ValueError(f"remasking={name!r} takes no parameters {sorted(params)}.") from None


def remask_plan(schedule: RemaskingSchedule, timesteps: torch.Tensor) -> List[RemaskProbabilities]:
    """Per-step probabilities on `timesteps` (length steps + 1, from 1 down to eps).

    The last step decodes every remaining mask and remasks nothing, so that no mask is left.
    """
    ts = [float(t) for t in timesteps]
    plan = [schedule.probabilities(ts[i], ts[i + 1]) for i in range(len(ts) - 2)]
    return plan + [RemaskProbabilities(unmask=1.0, remask=0.0)]


def sample_remask(candidates: torch.Tensor, sigma: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(b, l) bool: each candidate (a decoded generated position) is remasked with probability sigma."""
    if sigma <= 0.0:  # draws no random numbers, so sigma = 0 leaves the sampling stream untouched
        return torch.zeros_like(candidates)
    draws = torch.rand(candidates.shape, generator=generator, device=candidates.device)
    return candidates & (draws < sigma)
