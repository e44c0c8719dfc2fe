# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Run arguments of SM finetuning: three dataclasses, read by `trl.TrlParser` from a YAML recipe plus CLI flags.

    python recipes/finetune_dream_coder.py --config recipes/dream_coder/sft_sm_dora.yaml --p_sm 0.8

The YAML holds flat keys, each the name of a field below or of `transformers.TrainingArguments`
(and, as with trl, an optional `env:` mapping of environment variables); it sets the defaults and
flags on the command line win. Everything is checked while parsing, before anything loads: an
unknown key or flag fails with the closest valid one, a YAML value of the wrong type names the
YAML file and the key. Relative input paths in a YAML (`data_files`, mixture `path` / `data_files` /
`eval_data_files`, `deepspeed`, and local model, tokenizer or dataset folders) are resolved against
the YAML's folder; `output_dir` / `export_dir` stay relative to the working directory.
"""

import argparse
import json
import os
import sys
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import List, Optional

from transformers import TrainingArguments
from trl import TrlParser

from ..errors import did_you_mean, positive_int
from .adapters import DEFAULT_LORA_TARGETS, SM_LEARNING_RATE
from .data import is_local_data_file
from .mixture import DataSource


def _json_or_value(value):
    """YAML gives dicts and lists as is; the command line gives them as JSON text."""
    return json.loads(value) if isinstance(value, str) else value


@dataclass
class ModelArguments:
    """The model and how it is finetuned (paper A.2: DoRA r = alpha = 16 on q/k/v/o)."""

    _argument_group_name = "model"  # HfArgumentParser's --help groups

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
            raise ValueError(f"model_config_overrides={self.model_config_overrides!r} must be a mapping of "
                             "config fields.")
        if self.model_name_or_path is None and not self.tiny:
            raise ValueError("Set model_name_or_path (e.g. Dream-org/Dream-Coder-v0-Instruct-7B) or tiny: true.")


@dataclass
class DataArguments:
    """The data recipe (paper A.2 items 1-4). One source via dataset_name/data_files, or a mixture."""

    _argument_group_name = "data"

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
    max_length: Optional[int] = field(default=None, metadata={
        "help": "Cap on prompt + answer + eos tokens: longer examples are cut at the right, "
                "dropped if no answer is left."})
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
    no sample on any rank uses SM. With `global_batch_size`, gradient_accumulation_steps is derived
    from the number of launched processes (`WORLD_SIZE`), so one recipe trains with the same batch
    on any GPU count.
    """

    _argument_group_name = "soft-masking and training (the paper's defaults)"

    p_sm: float = field(default=0.5, metadata={"help": "Probability that a sample gets the SM input (0 = binary)."})
    t_low: float = field(default=0.2, metadata={"help": "b_l: t ~ U(b_l, b_h)."})
    t_high: float = field(default=0.8, metadata={"help": "b_h: t ~ U(b_l, b_h)."})
    sm_learning_rate: float = field(default=SM_LEARNING_RATE, metadata={"help": "Learning rate of w_s, w_a, w_b."})
    warmup_ratio: Optional[float] = field(default=None, metadata={"help": "Warmup as a fraction of the steps."})
    eval_noise_seed: int = field(default=1234, metadata={"help": "Seeds the validation noise per example."})
    export_dir: Optional[str] = field(default=None, metadata={
        "help": "Also write a merged standalone model here (recipes: default OUTPUT_DIR/merged; none: no export)."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start afresh where output_dir holds a finished or different run "
                                         "(its checkpoints are deleted); without it such a run is refused."})
    global_batch_size: Optional[int] = field(
        default=None, metadata={"help": "Examples per optimizer step over all processes (the paper: 8); sets "
                                        "gradient_accumulation_steps = global / (processes x per-device batch)."})
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
        if self.global_batch_size is not None:
            self.gradient_accumulation_steps = gradient_accumulation_for(
                self.global_batch_size, launch_world_size(), self.per_device_train_batch_size,
                self.gradient_accumulation_steps)
        super().__post_init__()


def launch_world_size() -> int:
    """The number of processes this run was launched with (accelerate / torchrun set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def gradient_accumulation_for(global_batch: int, world_size: int, per_device: int, given: int = 1) -> int:
    """global_batch / (world_size x per_device), or ValueError when it does not divide.

    `given` is a gradient_accumulation_steps set alongside: only 1 (the default) or the derived value.
    """
    positive_int("global_batch_size", global_batch, hint=" (the paper uses 8)")
    per_step = world_size * per_device
    if global_batch % per_step:
        raise ValueError(
            f"global_batch_size={global_batch} is not a multiple of {world_size} processes x "
            f"per_device_train_batch_size={per_device} = {per_step}; change per_device_train_batch_size "
            f"(e.g. 1) or the number of processes.")
    steps = global_batch // per_step
    if given not in (1, steps):
        raise ValueError(f"gradient_accumulation_steps={given} contradicts global_batch_size={global_batch} "
                         f"({world_size} processes x {per_device} per device needs {steps}); set only one of them.")
    return steps


ARGUMENT_CLASSES = (DataArguments, SMTrainingArguments, ModelArguments)
USAGE = "usage: {prog} --config RECIPE.yaml [--KEY VALUE ...]"
INPUT_PATH_KEYS = ("data_files", "deepspeed")  # resolved against the YAML's folder
LOCAL_OR_HUB_KEYS = ("model_name_or_path", "tokenizer_name_or_path", "dataset_name")  # resolved if they exist there
SOURCE_PATH_KEYS = ("path", "data_files", "eval_data_files")  # inside dataset_mixture entries


def _resolve(value, folder: Path, must: bool):
    """A relative path string (or list of them) joined to `folder`; with must=False only if it exists."""
    if isinstance(value, list):
        return [_resolve(v, folder, must) for v in value]
    if not isinstance(value, str) or os.path.isabs(value) or value.startswith(("{", "[")):
        return value
    candidate = folder / value
    return str(candidate) if must or is_local_data_file(value) or candidate.exists() else value


def resolve_recipe_paths(values: dict, folder: Path) -> dict:
    """Input paths of a recipe read relative to the recipe's folder (see the module docstring)."""
    out = dict(values)
    for key in INPUT_PATH_KEYS:
        if key in out and out[key] is not None:
            out[key] = _resolve(out[key], folder, must=True)
    for key in LOCAL_OR_HUB_KEYS:
        if key in out:
            out[key] = _resolve(out[key], folder, must=False)
    if isinstance(out.get("dataset_mixture"), list):
        out["dataset_mixture"] = [
            {k: _resolve(v, folder, must=k != "path") if k in SOURCE_PATH_KEYS else v for k, v in item.items()}
            if isinstance(item, dict) else _resolve(item, folder, must=False) for item in out["dataset_mixture"]]
    return out


def config_flag_split(argv) -> List[str]:
    """`--config=X` as `--config X`, the one form TrlParser reads."""
    return [part for arg in argv for part in (arg.split("=", 1) if arg.startswith("--config=") else [arg])]


def recipe_of(argv: List[str]) -> Optional[str]:
    """The --config value of a (split) command line, or None."""
    return argv[argv.index("--config") + 1] if "--config" in argv[:-1] else None


class RecipeParser(TrlParser):
    """`trl.TrlParser`: `--config RECIPE.yaml` sets the defaults (its `env:` mapping the environment) and
    flags on the command line win. Added here, as TrlParser has none of them: relative input paths read
    against the YAML's folder, unknown keys named with a did-you-mean, and each YAML value checked and
    converted as its flag would be (TrlParser makes the values argparse defaults, which argparse neither
    checks nor, unless they are text, converts), the error naming the file and the key."""

    config, yaml_keys = None, set()  # the --config path of the current parse and its keys

    def parse_args_and_config(self, args, **kwargs):
        import yaml

        self.config = recipe_of(args)
        try:
            return super().parse_args_and_config(args, **kwargs)
        except OSError as err:
            raise ValueError(f"--config {self.config}: cannot read the recipe ({err.strerror or err}).") from None
        except yaml.YAMLError as err:
            raise ValueError(f"--config {self.config}: not valid YAML ({err}).") from None

    def set_defaults_with_config(self, **values):
        values = resolve_recipe_paths(values, Path(self.config).resolve().parent)
        valid = {f.name for cls in self.dataclass_types for f in fields(cls) if f.init}
        self.yaml_keys, unknown = set(values), sorted(set(values) - valid)
        if unknown:
            hint = "; ".join(f"{k}: {did_you_mean(k, valid)[2:-1]}" for k in unknown if did_you_mean(k, valid))
            raise ValueError(f"{self.config}: unknown keys {unknown}{' (' + hint + ')' if hint else ''}; "
                             "see `--help` for the valid keys.")
        actions = {a.dest: a for a in self._actions}  # argparse keeps them private; TrlParser reads them too
        return super().set_defaults_with_config(
            **{k: _checked(actions[k], self.config, k, v) for k, v in values.items()})


def _type_error(source: str, key: str, value, expected: str) -> ValueError:
    hint = " (YAML reads a bare no/yes/off/on as a boolean: quote it)" if isinstance(value, bool) else ""
    return ValueError(f"{source}: {key}: {value!r} is not {expected}{hint}.")


def _checked(action, source: str, key: str, value):
    """The YAML value converted as `--key value` would be; ValueError naming the file and the key."""
    if value is None or action.nargs not in ("+", "*"):
        return _checked_one(action, source, key, value)
    return [_checked_one(action, source, key, v) for v in (value if isinstance(value, list) else [value])]


def _checked_one(action, source: str, key: str, value):
    if value is None:
        return None
    kind = getattr(action.type, "__name__", "")
    expected = (f"one of {[getattr(c, 'value', c) for c in action.choices]}" if action.choices is not None
                else {"string_to_bool": "true or false", "int": "an int", "float": "a float"}.get(kind))
    if expected is None:  # a text field; JSON fields take YAML mappings and lists as they are
        if isinstance(value, bool):
            raise _type_error(source, key, value, "a string")
        return str(value) if isinstance(value, (int, float)) else value
    if (isinstance(value, bool) != (kind == "string_to_bool") or isinstance(value, (list, dict))
            or (kind == "int" and isinstance(value, float))):
        raise _type_error(source, key, value, expected)
    try:
        converted = action.type(str(value))
    except Exception:  # noqa: BLE001  (ValueError, or argparse's ArgumentTypeError)
        raise _type_error(source, key, value, expected) from None
    if action.choices is not None and converted not in action.choices:
        raise _type_error(source, key, value, expected)
    return converted


def parse_args(argv=None, prog: str = "sm-dream train"):
    """(data_args, training_args, model_args) from `--config recipe.yaml` and CLI flags."""
    argv = config_flag_split(sys.argv[1:] if argv is None else argv)
    # The short usage: argparse would print every TrainingArguments flag (11 kB) above a bad value's line.
    parser = RecipeParser(ARGUMENT_CLASSES, prog=prog, usage=USAGE.format(prog=prog).removeprefix("usage: "),
                          description="--config RECIPE.yaml: the run recipe; the flags below override its keys.",
                          epilog=None if "--help-all" in argv else "Every other transformers.TrainingArguments "
                          "field is accepted too (--help-all lists them).",
                          formatter_class=partial(argparse.ArgumentDefaultsHelpFormatter, width=100))
    if "--help-all" in argv:
        argv[argv.index("--help-all")] = "--help"
    else:  # --help: the recipe's own options; the inherited TrainingArguments flags only with --help-all
        inherited = {f.name for f in fields(TrainingArguments)} - set(SMTrainingArguments.__annotations__)
        for action in parser._actions:
            action.help = argparse.SUPPRESS if action.dest in inherited else action.help
    try:
        *parsed, remaining = parser.parse_args_and_config(argv, return_remaining_strings=True)
    except ValueError as err:
        if parser.config and str(err).startswith((f"{parser.config}: ", f"--config {parser.config}: ")):
            raise
        where = _origin(str(err), argv, parser)
        if "bf16" not in str(err):
            raise ValueError(f"{where}{err}") from None
        raise ValueError(f"{where}{err}\n{parser.config or 'This run'} asks for bf16 on a machine without a GPU "
                         "that supports it: for a CPU run use recipes/tiny/sft_sm_tiny.yaml, or pass --bf16 false "
                         "--use_cpu true.") from None
    if remaining:
        valid = {f.name for cls in ARGUMENT_CLASSES for f in fields(cls) if f.init}
        raise ValueError(unknown_flag_message(remaining, valid))
    training_args = next(a for a in parsed if isinstance(a, SMTrainingArguments))
    training_args.export_dir = recipe_export_dir(training_args.export_dir, training_args.output_dir)
    return tuple(parsed)


NO_EXPORT = ("", "none")


def recipe_export_dir(export_dir: Optional[str], output_dir: str) -> Optional[str]:
    """A recipe exports into `<output_dir>/merged` unless `export_dir` is given (YAML or command line),
    so a run whose `--output_dir` is overridden never exports into another run's folder; `none` skips
    the export."""
    if export_dir is None:
        return os.path.join(output_dir, "merged")
    return None if str(export_dir).strip().lower() in NO_EXPORT else export_dir


def unknown_flag_message(remaining: List[str], valid) -> str:
    """The first unknown command-line flag with the closest valid one (HfArgumentParser would only say
    "Some specified arguments are not used")."""
    flags = [a for a in remaining if a.startswith("-")]
    if not flags:
        return f"unexpected value {remaining[0]!r} on the command line: flags take the form --KEY VALUE."
    flag = flags[0].split("=", 1)[0]
    return (f"unknown flag {flag} on the command line{did_you_mean(flag.lstrip('-'), valid, prefix='--')}; "
            "see --help for the valid flags.")


def _origin(message: str, argv: List[str], parser: RecipeParser) -> str:
    """'--KEY on the command line: ' / 'RECIPE.yaml: ' for the first `KEY=` of a dataclass check's
    message, or ''."""
    import re

    for key in re.findall(r"(\w+)=", message):
        if any(a == f"--{key}" or a.startswith(f"--{key}=") for a in argv):
            return f"--{key} on the command line: "
        if key in parser.yaml_keys:
            return f"{parser.config}: "
    return ""


def cost_warnings(data_args, training_args, model_args) -> List[str]:
    """Settings that are accepted but silently cost a lot, as one line each (printed by the recipe)."""
    import torch

    out = []
    half = "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else None
    if half and (training_args.use_cpu or not torch.cuda.is_available()):
        out.append(f"warning: {half}=true on CPU: PyTorch emulates {half} matmuls there, slower than "
                   f"float32 (2.1x on the tiny recipe); pass --{half} false for a CPU run.")
    if model_args.tiny and (data_args.max_length or data_args.max_context_tokens) > 512:
        length = data_args.max_length or data_args.max_context_tokens
        out.append(f"warning: tiny: true keeps Dream's full vocabulary (152064 tokens), so at max_length={length} "
                   "the output layer and its loss take most of each step; use max_length <= 512 for a quick run.")
    return out
