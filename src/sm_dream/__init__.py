# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""sm_dream: soft-masking for masked diffusion language models (Dream-7B, Dream-Coder-7B).

Importing the package registers the config and model with transformers' Auto classes
(`model_type "Dream"`), so `AutoModel.from_pretrained` returns `SoftMaskDreamForDiffusionLM` for
released Dream checkpoints and saved SM models alike. Saved models also carry their code
(`auto_map`), so they load with `trust_remote_code=True` where sm_dream is not installed.
"""

from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

from .model.configuration_sm_dream import SM_SCHEDULES, SoftMaskDreamConfig
from .model.modeling_sm_dream import SoftMaskDreamForDiffusionLM, SoftMaskDreamModel, shift_right
from .model.soft_masking import SoftMaskFeedback, SoftMaskParams, feedback_from_logits, schedule_factor

__version__ = "0.1.0"

AutoConfig.register("Dream", SoftMaskDreamConfig, exist_ok=True)
AutoModel.register(SoftMaskDreamConfig, SoftMaskDreamForDiffusionLM, exist_ok=True)
AutoModelForMaskedLM.register(SoftMaskDreamConfig, SoftMaskDreamForDiffusionLM, exist_ok=True)
SoftMaskDreamConfig.register_for_auto_class()
SoftMaskDreamForDiffusionLM.register_for_auto_class("AutoModel")

__all__ = [
    "SM_SCHEDULES",
    "SoftMaskDreamConfig",
    "SoftMaskDreamForDiffusionLM",
    "SoftMaskDreamModel",
    "SoftMaskFeedback",
    "SoftMaskParams",
    "feedback_from_logits",
    "schedule_factor",
    "shift_right",
]
