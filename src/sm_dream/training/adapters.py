# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""What is trained and with which learning rate (export of a finished run: `export.py`).

Finetuning modes (a registry keyed by name, `--finetuning`):
- "dora" (paper A.2): DoRA adapters (r = alpha = 16) on q/k/v/o; the SM module is a PEFT
  `modules_to_save` entry, so w_s, w_a, w_b train and are saved with the adapter.
- "lora": the same with plain LoRA.
- "full": every weight trains (the SM parameters included).

Optimizer groups: the backbone/adapters at `learning_rate` (1e-5), split into weight-decay and
no-decay parameters as `transformers.Trainer` does, and the SM parameters at `sm_learning_rate`
(1e-2) without weight decay. One schedule scales all groups.
"""

from typing import Callable, Dict, List, Optional

from accelerate.utils import extract_model_from_parallel
from torch import nn


SM_MODULE = "soft_mask"  # the model attribute holding w_s, w_a, w_b (a PEFT `modules_to_save` entry)
SM_LEARNING_RATE = 1e-2  # the SM group's learning rate (paper A.2), the default of `sm_learning_rate`
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")  # paper A.2: adapters on attention q/k/v/o


def is_sm_parameter(name: str) -> bool:
    """True for the SM parameters, under PEFT (`...soft_mask.modules_to_save.default.s_raw`) or not."""
    return f"{SM_MODULE}." in name


def _adapters(model: nn.Module, r: int, alpha: int, dropout: float, targets: List[str], use_dora: bool):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                        use_dora=use_dora, modules_to_save=[SM_MODULE], bias="none")
    return get_peft_model(model, config)


def _full(model: nn.Module, **_) -> nn.Module:
    model.requires_grad_(True)
    return model


FINETUNING_MODES: Dict[str, Callable[..., nn.Module]] = {
    "dora": lambda model, **kw: _adapters(model, use_dora=True, **kw),
    "lora": lambda model, **kw: _adapters(model, use_dora=False, **kw),
    "full": _full,
}


def check_finetuning_mode(mode: str) -> None:
    if mode not in FINETUNING_MODES:
        from ..errors import did_you_mean

        raise ValueError(f"finetuning={mode!r} is unknown{did_you_mean(mode, FINETUNING_MODES)}; "
                         f"choose one of {list(FINETUNING_MODES)}.")


def prepare_for_finetuning(model: nn.Module, mode: str = "dora", r: int = 16, alpha: int = 16, dropout: float = 0.0,
                           targets: Optional[List[str]] = None) -> nn.Module:
    """The model to hand to the trainer: wrapped with adapters, or with every weight trainable."""
    check_finetuning_mode(mode)
    targets = list(targets or DEFAULT_LORA_TARGETS)
    return FINETUNING_MODES[mode](model, r=r, alpha=alpha, dropout=dropout, targets=targets)


def optimizer_groups(model: nn.Module, learning_rate: float, sm_learning_rate: float, weight_decay: float,
                     decay_names: List[str]) -> List[dict]:
    """Parameter groups: [decay, no-decay] at `learning_rate`, then the SM group at `sm_learning_rate`."""
    decay, no_decay, sm = [], [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (sm if is_sm_parameter(name) else decay if name in decay_names else no_decay).append(param)
    groups = [{"params": decay, "lr": learning_rate, "weight_decay": weight_decay},
              {"params": no_decay, "lr": learning_rate, "weight_decay": 0.0},
              {"params": sm, "lr": sm_learning_rate, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def sm_module(model: nn.Module) -> nn.Module:
    """The module holding the SM parameters in use (PEFT's trained copy when wrapped)."""
    module = getattr(extract_model_from_parallel(model), SM_MODULE)
    copies = getattr(module, "modules_to_save", None)
    return copies[module.active_adapter if isinstance(module.active_adapter, str) else module.active_adapter[0]] \
        if copies is not None else module


def sm_values(model: nn.Module) -> Dict[str, float]:
    """The mapped SM values (w_s, w_a, w_b), gathered first under DeepSpeed ZeRO-3."""
    module = sm_module(model)
    params = list(module.parameters())
    if any(getattr(p, "ds_id", None) is not None for p in params):  # ZeRO-3 partitioned: gather to read
        import deepspeed

        with deepspeed.zero.GatheredParameters(params):
            return module.mapped()
    return module.mapped()
