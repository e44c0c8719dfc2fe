# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""How a finished run becomes a standalone model: adapters merged into the weights, the SM module with
its trained values, the model code carried along (`auto_map`), so that
`AutoModel.from_pretrained(path, trust_remote_code=True)` loads it without sm_dream installed."""

import json
import os
from typing import Optional


def export_standalone(model_or_path, output_dir: str, tokenizer=None, base_model_path: Optional[str] = None) -> str:
    """Write a checkpoint that `AutoModel.from_pretrained(output_dir, trust_remote_code=True)` loads.

    model_or_path: a trained (PEFT or plain) model, or a directory: a training output/checkpoint with
        an adapter (its base from `base_model_path` or the adapter config) or a full model.
    Adapters are merged into the weights; the SM module keeps its trained values.
    """
    model = _load_for_export(model_or_path, base_model_path) if isinstance(model_or_path, str) else model_or_path
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(output_dir)
    if tokenizer is None and isinstance(model_or_path, str):  # a checkpoint-N folder: the run's tokenizer is one up
        found = [d for d in (model_or_path, os.path.dirname(os.path.abspath(model_or_path)))
                 if os.path.exists(os.path.join(d, "tokenizer_config.json"))]
        if found:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(found[0])
    if tokenizer is not None:
        tokenizer.save_pretrained(output_dir)
    return output_dir


def _load_for_export(path: str, base_model_path: Optional[str]):
    from ..model.modeling_sm_dream import SoftMaskDreamForDiffusionLM

    adapter_config = os.path.join(path, "adapter_config.json")
    if not os.path.exists(adapter_config):
        return SoftMaskDreamForDiffusionLM.from_pretrained(path)
    from peft import PeftModel

    with open(adapter_config) as f:
        base = base_model_path or json.load(f).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{path} holds an adapter without a base model path; pass base_model_path (--base_model).")
    return PeftModel.from_pretrained(SoftMaskDreamForDiffusionLM.from_pretrained(base), path)
