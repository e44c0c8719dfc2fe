# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Adapters folded into their base weight for a forward without gradient (the SM loss's first pass).

A PEFT LoRA layer computes W x + s B A x; with DoRA, m / ||W + s B A||_row * (W x + s B A x) (PEFT
treats the row norm as a constant). Both are one linear map W' x with

    W' = W + s B A                                   (LoRA)
    W' = m / ||W + s B A||_row * (W + s B A)         (DoRA)

Inside `folded_adapters(model)` every such layer runs `F.linear(x, W', bias)`: W' is built when the
layer runs and freed after it (the same out x in temporary PEFT's DoRA builds for its norm), so the
pass costs what the base model costs, without the adapter matmuls and DoRA's elementwise rescaling
of every output. The result equals PEFT's forward up to float rounding (the sum is formed before the
product). Layers this cannot fold exactly keep PEFT's forward: more than one active adapter, adapter
dropout > 0 (it draws a mask per call), merged or disabled adapters, a non-`Linear` base layer, and
weights partitioned by DeepSpeed ZeRO-3 (the base weight is gathered only when PEFT calls it).
Use it only without gradient: W' is built under `torch.no_grad()`.
"""

import contextlib
from typing import Iterator, List

import torch
import torch.nn.functional as F
from torch import nn


def _foldable(module: nn.Module) -> bool:
    """A PEFT LoRA/DoRA `Linear` whose forward is exactly one linear map (see the module docstring)."""
    if not (hasattr(module, "lora_A") and hasattr(module, "get_delta_weight") and hasattr(module, "base_layer")):
        return False
    base = module.get_base_layer()
    active = list(getattr(module, "active_adapters", []))
    if type(base) is not nn.Linear or len(active) != 1 or active[0] not in module.lora_A:
        return False
    if getattr(module, "merged", False) or getattr(module, "disable_adapters", False):
        return False
    if hasattr(base.weight, "ds_id") or base.weight.numel() == 0:  # partitioned by ZeRO-3
        return False
    dropout = module.lora_dropout[active[0]]
    return isinstance(dropout, nn.Identity) or (isinstance(dropout, nn.Dropout) and dropout.p == 0)


def folded_weight(module: nn.Module) -> torch.Tensor:
    """W' of a foldable PEFT layer (its active adapter), in the base weight's dtype."""
    adapter = module.active_adapters[0]
    base = module.get_base_layer()
    weight = base.weight
    with torch.no_grad():
        combined = weight + module.get_delta_weight(adapter).to(weight.dtype)  # W + s B A
        use_dora = getattr(module, "use_dora", {}).get(adapter, False)
        if use_dora:
            magnitude = module.lora_magnitude_vector[adapter].weight
            norm = combined.float().norm(p=2, dim=1)  # (out,)
            combined = combined * (magnitude.float() / norm).to(weight.dtype).unsqueeze(1)
    return combined


def _folded_forward(module: nn.Module):
    base = module.get_base_layer()

    def forward(x, *args, **kwargs):
        weight = folded_weight(module)
        return F.linear(x.to(weight.dtype), weight, base.bias)

    return forward


@contextlib.contextmanager
def folded_adapters(model: nn.Module) -> Iterator[int]:
    """Run the foldable adapter layers of `model` as one linear map each (no gradient); yields how
    many layers are folded (0 for a model without adapters: nothing changes)."""
    patched: List[nn.Module] = [m for m in model.modules() if _foldable(m)]
    try:
        for module in patched:
            module.forward = _folded_forward(module)  # an instance attribute shadows the class's forward
        yield len(patched)
    finally:
        for module in patched:
            module.__dict__.pop("forward", None)
