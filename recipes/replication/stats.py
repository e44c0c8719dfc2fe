# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Statistics of the small replication: paired differences and a two-level bootstrap.

Both arms of a seed are scored on the same held-out windows (with the same masks) or the same
prompts, so the comparison is made per item (window or prompt) within a seed:

    d[s][i] = value(SM arm, seed s, item i) - value(binary arm, seed s, item i)

The estimate is the mean over seeds of the per-seed mean difference. Its interval is a percentile
bootstrap with two levels, because seeds (training runs) and items (prompts) both vary: each resample
draws S seeds with replacement, then, within each drawn seed, its items with replacement, and takes
the same mean. The (1 - level) / 2 and (1 + level) / 2 quantiles of the resampled means bound the
interval. A cell reads "SM better" / "SM worse" when the 95% interval excludes 0 on that side, else
"no difference at 95%".
"""

from typing import Sequence, Tuple

import torch


def paired_differences(sm: Sequence[Sequence[float]], binary: Sequence[Sequence[float]]) -> list:
    """[[sm[s][i] - binary[s][i] for each item i] for each seed s]; the shapes must agree."""
    if len(sm) != len(binary) or any(len(a) != len(b) for a, b in zip(sm, binary)):
        raise ValueError(f"paired values need the same seeds and items: {[len(a) for a in sm]} SM vs "
                         f"{[len(b) for b in binary]} binary.")
    return [[a - b for a, b in zip(sa, sb)] for sa, sb in zip(sm, binary)]


def bootstrap_ci(values: Sequence[Sequence[float]], resamples: int = 2000, level: float = 0.95,
                 seed: int = 0) -> Tuple[float, float, float]:
    """(estimate, low, high) of the mean over seeds of the per-seed mean of `values` (seeds x items,
    the same number of items per seed): a two-level percentile bootstrap, seeds then items."""
    if not values or any(len(v) != len(values[0]) or not v for v in values):
        raise ValueError(f"bootstrap_ci needs seeds with the same, non-zero number of items; "
                         f"got {[len(v) for v in values]}.")
    if not 0 < level < 1:
        raise ValueError(f"level={level} must lie in (0, 1), e.g. 0.95.")
    d = torch.tensor(values, dtype=torch.float64)  # (S, P)
    s, p = d.shape
    g = torch.Generator().manual_seed(seed)
    means = torch.empty(resamples, dtype=torch.float64)
    for chunk in torch.arange(resamples).split(256):  # (c, S, P) index draws per chunk bound the memory
        seeds = torch.randint(s, (len(chunk), s), generator=g)  # (c, S)
        items = torch.randint(p, (len(chunk), s, p), generator=g)  # (c, S, P)
        means[chunk] = d[seeds.unsqueeze(-1), items].mean(dim=(1, 2))
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    low, high = torch.quantile(means, q).tolist()
    return float(d.mean(1).mean()), low, high


def verdict(low: float, high: float, lower_is_better: bool) -> str:
    """'SM better', 'SM worse' or 'no difference' for an interval of SM - binary."""
    if high < 0:
        return "SM better" if lower_is_better else "SM worse"
    if low > 0:
        return "SM worse" if lower_is_better else "SM better"
    return "no difference"
