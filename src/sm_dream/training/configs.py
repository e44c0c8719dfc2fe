# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Run arguments of SM finetuning: three dataclasses, read from a YAML recipe plus CLI flags.

    python recipes/finetune_dream_coder.py --config recipes/dream_coder/sft_sm_dora.yaml --p_sm 0.8

The YAML holds flat keys, each the name of a field below or of `transformers.TrainingArguments`;
it sets the defaults, flags on the command line win, and an unknown key in either fails (with the
list of valid keys for the YAML).
"""

import argparse
import json
from dataclasses import dataclass, field, fields
from typing import List, Optional

from transformers import HfArgumentParser, TrainingArguments

from .data import DataSource

DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def _json_or_value(value):
    """YAML gives dicts and lists as is; the command line gives them as JSON text."""
    return json.loads(value) if isinstance(value, str) else value


@dataclass
class ModelArguments:
    """The model and how it is finetuned (paper A.2: DoRA r = alpha = 16 on q/k/v/o)."""

    model_name_or_path: Optional[str] = field(default=None, metadata={"help": "Dream checkpoint (hub name or local)."})
    tiny: bool = field(default=False, metadata={"help": "Build sm_dream.tiny.tiny_config() (random init) instead."})
    model_config_overrides: Optional[str] = field(
        default=None, metadata={"help": "Config fields to override, a mapping (JSON on the CLI), e.g. sm_top_k."})
    tokenizer_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "Default: the model's; the shipped Dream tokenizer for --tiny."})
    torch_dtype: str = field(default="auto", metadata={"help": "auto, bfloat16, float16 or float32."})
    attn_implementation: Optional[str] = field(default=None, metadata={"help": "sdpa (default) or eager."})
    finetuning: str = field(default="dora", metadata={"help": "dora, lora or full (all weights trainable)."})
    lora_r: int = field(default=16, metadata={"help": "Adapter rank r."})
    lora_alpha: int = field(default=16, metadata={"help": "Adapter scale alpha (scaling = alpha / r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the adapter input."})
    lora_target_modules: List[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS),
                                           metadata={"help": "Linear layers that get adapters."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Passed to from_pretrained."})

    def __post_init__(self):
        self.model_config_overrides = _json_or_value(self.model_config_overrides) or {}
        if not isinstance(self.model_config_overrides, dict):
            raise ValueError(f"model_config_overrides={self.model_config_overrides!r} must be a mapping of config fields.")
        if self.model_name_or_path is None and not self.tiny:
            raise ValueError("Set model_name_or_path (e.g. Dream-org/Dream-Coder-v0-Instruct-7B) or tiny: true.")


@dataclass
class DataArguments:
    """The data recipe (paper A.2 items 1-4). One source via dataset_name/data_files, or a mixture."""

    dataset_name: Optional[str] = field(default=None, metadata={"help": "Hub dataset or local chat file."})
    dataset_config: Optional[str] = field(default=None, metadata={"help": "Hub configuration name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Training split."})
    dataset_eval_split: Optional[str] = field(default=None, metadata={"help": "Validation split (None: hold out)."})
    data_files: Optional[List[str]] = field(default=None, metadata={"help": "Local .json/.jsonl/.parquet files."})
    dataset_mixture: Optional[str] = field(
        default=None, metadata={"help": "List of sources (path, name, split, eval_split, data_files, ...)."})
    messages_column: str = field(default="messages", metadata={"help": "Column holding the chat messages."})
    max_train_samples: Optional[int] = field(default=300_000, metadata={"help": "Records sampled for training."})
    max_eval_samples: Optional[int] = field(default=500, metadata={"help": "Records sampled for validation."})
    holdout_fraction: float = field(default=0.01, metadata={"help": "Held out where there is no validation split."})
    max_context_tokens: int = field(default=2048, metadata={"help": "Drop records with a longer context."})
    min_response_tokens: int = field(default=5, metadata={"help": "Drop records with a shorter response."})
    max_eos_pad: int = field(default=50, metadata={"help": "n ~ U{0..max_eos_pad} eos appended per response."})
    max_length: Optional[int] = field(default=None, metadata={"help": "Cut examples longer than this (right)."})
    preprocessing_num_workers: Optional[int] = field(default=None, metadata={"help": "Processes for the map."})

    def __post_init__(self):
        self.dataset_mixture = _json_or_value(self.dataset_mixture)
        if (self.dataset_mixture is None) == (self.dataset_name is None and self.data_files is None):
            raise ValueError("Give exactly one of dataset_mixture or dataset_name/data_files.")

    def sources(self) -> List[DataSource]:
        if self.dataset_mixture is not None:
            return [DataSource.parse(item) for item in self.dataset_mixture]
        return [DataSource(path=self.dataset_name, name=self.dataset_config, split=self.dataset_train_split,
                           eval_split=self.dataset_eval_split, data_files=self.data_files,
                           messages_column=self.messages_column)]


# transformers 4.x has `warmup_ratio` (and wants an int `warmup_steps`); 5.x takes the ratio as warmup_steps < 1.
_TRAINER_HAS_WARMUP_RATIO = "warmup_ratio" in {f.name for f in fields(TrainingArguments)}


@dataclass
class SMTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the paper's defaults (A.2) and the SM fields.

    warmup_ratio is accepted on every release (transformers 5 takes it as a float `warmup_steps` < 1).
    ddp_find_unused_parameters defaults to True: the SM parameters get no gradient in a step where
    no sample on any rank uses SM.
    """

    p_sm: float = field(default=0.5, metadata={"help": "Probability that a sample gets the SM input (0 = binary)."})
    t_low: float = field(default=0.2, metadata={"help": "b_l: t ~ U(b_l, b_h)."})
    t_high: float = field(default=0.8, metadata={"help": "b_h: t ~ U(b_l, b_h)."})
    sm_learning_rate: float = field(default=1e-2, metadata={"help": "Learning rate of w_s, w_a, w_b."})
    warmup_ratio: Optional[float] = field(default=None, metadata={"help": "Warmup as a fraction of the steps."})
    eval_noise_seed: int = field(default=1234, metadata={"help": "Seeds the validation noise per example."})
    export_dir: Optional[str] = field(default=None, metadata={"help": "Also write a merged standalone model here."})
    learning_rate: float = field(default=1e-5, metadata={"help": "Learning rate of the adapters (or all weights)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule."})
    max_grad_norm: float = field(default=7.0, metadata={"help": "Gradient clipping norm."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep response_mask/example_id."})
    ddp_find_unused_parameters: Optional[bool] = field(default=True, metadata={"help": "See the class docstring."})

    def __post_init__(self):
        if self.warmup_ratio is not None and not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio={self.warmup_ratio} must lie in [0, 1) (the paper uses 0.03).")
        if _TRAINER_HAS_WARMUP_RATIO:  # transformers 4.x: its own field, an int warmup_steps
            self.warmup_ratio = self.warmup_ratio or 0.0
        elif self.warmup_ratio is not None:  # transformers 5: a float warmup_steps < 1 is a ratio
            self.warmup_steps = self.warmup_ratio
        if not self.sm_learning_rate >= 0.0:
            raise ValueError(f"sm_learning_rate={self.sm_learning_rate} must be >= 0 (the paper uses 1e-2).")
        from .noise import check_noise_args

        check_noise_args(self.t_low, self.t_high, self.p_sm)
        super().__post_init__()


ARGUMENT_CLASSES = (DataArguments, SMTrainingArguments, ModelArguments)


def parse_args(argv=None, defaults: Optional[dict] = None):
    """(data_args, training_args, model_args) from `--config recipe.yaml`, `defaults` and CLI flags."""
    import yaml

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(argv)
    values = dict(defaults or {})
    if known.config:
        with open(known.config) as f:
            values.update(yaml.safe_load(f) or {})
    valid = {f.name for cls in ARGUMENT_CLASSES for f in fields(cls) if f.init}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ValueError(f"{known.config or 'defaults'}: unknown keys {unknown}; see `--help` for the valid keys.")
    parser = HfArgumentParser(ARGUMENT_CLASSES)
    parser.set_defaults(**values)
    return parser.parse_args_into_dataclasses(args=rest)
