# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""The model card (README.md) of a merged export: where it comes from, how it was trained, how to use it.

Its YAML front matter names the base model (`base_model`, as the Hub expects) and the run folder it
was exported from (`sm_dream_source`), which tells a re-export of the same run from an export that
would overwrite a different model.
"""

import json
import os
from typing import Optional

from .run_folder import RUN_CONFIG, read_run_config

CARD = "README.md"

USAGE = '''```python
import torch
from transformers import AutoModel, AutoTokenizer

path = "{path}"
model = AutoModel.from_pretrained(path, trust_remote_code=True, dtype=torch.bfloat16).eval()
tokenizer = AutoTokenizer.from_pretrained(path)
messages = [{{"role": "user", "content": "Write a function that reverses a string."}}]
ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
out = model.diffusion_generate(ids["input_ids"], attention_mask=ids["attention_mask"], max_new_tokens=256,
                               steps=256, alg="entropy", temperature=0.1, top_p=0.9, soft_masking=True,
                               return_dict_in_generate=True)
print(tokenizer.decode(out.sequences[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
```'''


def _read_json(path: str) -> Optional[dict]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def run_folder_of(source: str) -> str:
    """The run's output_dir for a run folder or one of its checkpoint-N folders."""
    source = os.path.abspath(source)
    parent = os.path.dirname(source)
    return parent if os.path.basename(source).startswith("checkpoint-") and \
        os.path.exists(os.path.join(parent, RUN_CONFIG)) else source


def _data_lines(stats: Optional[dict]) -> str:
    if not stats:
        return "not recorded"
    return "; ".join(f"{name}: {counts.get('ok', 0)} kept of {sum(v for k, v in counts.items() if k != 'truncated')}"
                     for name, counts in stats.items())


def model_card(source: str, base_model: str, config, sm_values: dict, export_dir: str):
    """The `huggingface_hub.ModelCard` of a model exported from `source` (a run folder or checkpoint)
    into `export_dir`."""
    from huggingface_hub import ModelCard, ModelCardData

    run = run_folder_of(source)
    run_config = read_run_config(run) or {}
    state = _read_json(os.path.join(source, "trainer_state.json")) or {}
    k = getattr(config, "sm_top_k", "?")
    if "tau" in sm_values:
        k = f"full vocabulary (tau = {sm_values['tau']:.4g})"
    front = ModelCardData(base_model=base_model, library_name="transformers", pipeline_tag="text-generation",
                          tags=["sm_dream", "soft-masking", "diffusion-language-model", "dream"],
                          sm_dream_source=os.path.abspath(source))
    rows = [("base model", f"`{base_model}`"), ("recipe", f"`{run_config.get('recipe', 'not recorded')}`"),
            ("finetuning", f"{run_config.get('finetuning', '?')} (r = {run_config.get('lora_r', '?')}, "
                           f"alpha = {run_config.get('lora_alpha', '?')}), merged into the weights"),
            ("SM enabled", str(getattr(config, "sm_enabled", "?"))),
            ("SM parameters", ", ".join(f"{n} = {v:.4f}" for n, v in sm_values.items())), ("k (sm_top_k)", str(k)),
            ("p_sm during training", str(run_config.get("p_sm", "?"))),
            ("optimizer steps", str(state.get("global_step", "?"))),
            ("effective batch", str(run_config.get("effective_batch_size", "?"))),
            ("training data", _data_lines(_read_json(os.path.join(run, "data_stats.json"))))]
    table = "\n".join(["| | |", "| --- | --- |"] + [f"| {a} | {b} |" for a, b in rows])
    name = os.path.basename(os.path.abspath(export_dir))
    return ModelCard(
        f"---\n{front.to_yaml()}\n---\n\n# Soft-masked Dream: {name}\n\n"
        f"A Dream masked diffusion language model finetuned with soft-masking (SM; paper: *Soft-Masked Diffusion "
        f"Language Models*): each masked position's input blends the [MASK] embedding with the embeddings of the "
        f"top-k predicted tokens, weighted by lambda = w_s sigmoid(w_a (-H - w_b)) of the prediction entropy H.\n\n"
        f"{table}\n\nThe model code is carried in this folder (`auto_map`): sm_dream need not be installed.\n\n"
        f"## Usage\n\n{USAGE.format(path=os.path.abspath(export_dir))}\n")


def export_source(export_dir: str) -> Optional[str]:
    """The run folder an existing export came from (None: not an sm_dream export, or no card)."""
    import yaml
    from huggingface_hub.repocard import metadata_load

    path = os.path.join(export_dir, CARD)
    try:
        front = metadata_load(path) if os.path.exists(path) else None
    except (ValueError, yaml.YAMLError):  # a README whose YAML header is broken or not a mapping
        return None
    return (front or {}).get("sm_dream_source")
