# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Checks of a finetuning run that need no weights and no data, run before either loads.

On a 7B model "after the model loads" means minutes, so everything that can be decided from the
arguments, the model's config.json and the file system is decided here: the finetuning mode, the
config overrides (unknown keys with a did-you-mean), the adapter target modules (matched against the
model's module names, listed on the meta device), the data sources and local files, and the export
folder.
"""

import inspect
from typing import List

import torch
from torch import nn

from ..errors import check_local_model_path, did_you_mean
from ..model.configuration_sm_dream import SoftMaskDreamConfig
from ..model.modeling_sm_dream import SoftMaskDreamForDiffusionLM
from ..tiny import tiny_config
from .adapters import check_finetuning_mode
from .data import check_local_files

EXTRA_CONFIG_KEYS = {"attn_implementation", "dtype", "torch_dtype"}


def config_keys() -> set:
    """The fields a `model_config_overrides` mapping may set."""
    params = inspect.signature(SoftMaskDreamConfig.__init__).parameters
    named = {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n != "self"}
    return named | set(SoftMaskDreamConfig().to_dict()) | EXTRA_CONFIG_KEYS


def check_config_overrides(overrides: dict) -> None:
    valid = config_keys()
    for key in overrides:
        if key not in valid:
            raise ValueError(f"model_config_overrides: unknown config field {key!r}{did_you_mean(key, valid)}; "
                             "the fields are those of SoftMaskDreamConfig (docs/model.md).")


def load_model_config(model_args) -> SoftMaskDreamConfig:
    """The run's model config with its overrides, from tiny_config or the checkpoint's config.json."""
    overrides = dict(model_args.model_config_overrides)
    check_config_overrides(overrides)
    if model_args.attn_implementation:
        overrides["attn_implementation"] = model_args.attn_implementation
    if model_args.tiny:
        return tiny_config(**overrides)
    name = model_args.model_name_or_path
    check_local_model_path("model_name_or_path", name)
    try:
        return SoftMaskDreamConfig.from_pretrained(name, trust_remote_code=model_args.trust_remote_code, **overrides)
    except OSError as err:
        raise ValueError(f"cannot load the config of model_name_or_path={name!r}: {err}\nOffline? Download the "
                         f"model first (hf download {name}) or pass a local folder.") from None


def check_target_modules(config: SoftMaskDreamConfig, targets: List[str]) -> None:
    """Each target names Linear layers of the model, matched as PEFT does (name or dotted suffix)."""
    if list(targets) == ["all-linear"]:
        return
    with torch.device("meta"):
        model = SoftMaskDreamForDiffusionLM(config)
    linear = {name for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    suffixes = {name.rsplit(".", 1)[-1] for name in linear}
    for target in targets:
        if not any(name == target or name.endswith("." + target) for name in linear):
            raise ValueError(f"lora_target_modules: {target!r} matches no Linear layer of the model"
                             f"{did_you_mean(target, suffixes)}; its Linear layers are {sorted(suffixes)}.")


def check_sources(data_args) -> None:
    """Mixture entries parse (unknown keys listed) and every local data file exists and is non-empty."""
    for source in data_args.sources():
        for files in (source.local_files(), source.eval_data_files):
            if files:
                check_local_files(files)


def validate_run(data_args, training_args, model_args) -> SoftMaskDreamConfig:
    """All checks above; returns the model config (the model is then built or loaded with it)."""
    check_finetuning_mode(model_args.finetuning)
    check_sources(data_args)
    config = load_model_config(model_args)
    if model_args.finetuning != "full":
        check_target_modules(config, model_args.lora_target_modules)
    if training_args.p_sm > 0 and not config.sm_enabled:
        raise ValueError(f"p_sm={training_args.p_sm} trains soft-masking but the model has sm_enabled=False; "
                         "set p_sm: 0 (binary baseline) or sm_enabled: true in model_config_overrides.")
    return config
