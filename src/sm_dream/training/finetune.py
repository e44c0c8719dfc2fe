# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""The SM finetuning run shared by the recipes: checks, data, model, trainer, train, save, export.

    accelerate launch recipes/finetune_dream_coder.py --config recipes/dream_coder/sft_sm_dora.yaml
    python -m sm_dream.training.finetune --config recipes/tiny/sft_sm_tiny.yaml          # the tiny CPU run

Order: every check that needs no weights (`validation.py`: arguments, model config on the meta
device, data files, export folder) and the output-folder decision (`run_folder.py`: fresh, resume
from the newest complete checkpoint, already finished, or refused) come first; then the tokenizer
and the data (a run with no usable example stops here); the model loads last.

Writes to `output_dir`: `run_config.yaml` (the resolved arguments), checkpoints (Trainer), the final
adapter (with the SM parameters) or full model, `trainer_state.json` (the run is finished), the
tokenizer, `data_stats.json` (records kept / filtered / malformed per source) and, with `export_dir`,
a merged standalone model with a model card that loads with `AutoModel.from_pretrained(...,
trust_remote_code=True)`.
"""

import contextlib
import json
import logging
import os
import sys

import datasets
import torch
import transformers
from transformers import AutoTokenizer, set_seed

from ..errors import as_user_error, debug_requested, is_main_process, strip_debug, user_errors
from ..hub import offline_when_hub_unreachable
from ..model.modeling_sm_dream import SoftMaskDreamForDiffusionLM
from ..tiny import load_dream_tokenizer
from .adapters import prepare_for_finetuning
from .configs import (USAGE, DataArguments, ModelArguments, SMTrainingArguments, config_flag_split, cost_warnings,
                      parse_args, recipe_of)
from .data import ChatPreprocessor, DiffusionDataCollator
from .export import BASE_SUBDIR, check_export_target, export_standalone
from .mixture import build_datasets
from .model_card import export_source
from .run_folder import FINGERPRINTS, RunLock, data_fingerprints, plan_run, prepare_output_dir, resolved_config
from .trainer import SoftMaskTrainer
from .validation import validate_run

logger = logging.getLogger(__name__)


def load_tokenizer(model_args: ModelArguments):
    name = model_args.tokenizer_name_or_path
    if model_args.tiny and not name:
        return load_dream_tokenizer()
    return AutoTokenizer.from_pretrained(name or model_args.model_name_or_path,
                                         trust_remote_code=model_args.trust_remote_code)


def load_model(model_args: ModelArguments, config, seed: int):
    """The model for `config` (validated): the tiny one seeded at random, or the checkpoint's weights."""
    if model_args.tiny:
        torch.manual_seed(seed)
        return SoftMaskDreamForDiffusionLM(config)
    model = SoftMaskDreamForDiffusionLM.from_pretrained(
        model_args.model_name_or_path, config=config, dtype=model_args.torch_dtype,
        trust_remote_code=model_args.trust_remote_code)
    # w_s, w_a, w_b train at lr 1e-2 around values like -5: in bf16 (spacing 0.03 there) most updates
    # would round away, so the three SM parameters stay float32 in a bf16 model.
    model.soft_mask.float()
    return model


def build_data(data_args: DataArguments, tokenizer, training_args: SMTrainingArguments):
    preprocessor = ChatPreprocessor(tokenizer, data_args.max_context_tokens, data_args.min_response_tokens,
                                    data_args.max_eos_pad, seed=training_args.data_seed or training_args.seed,
                                    max_length=data_args.max_length)
    with training_args.main_process_first(desc="preprocessing the data"):
        train, valid, stats = build_datasets(
            data_args.sources(), preprocessor, data_args.max_train_samples, data_args.max_eval_samples,
            data_args.holdout_fraction, training_args.data_seed or training_args.seed,
            data_args.preprocessing_num_workers, require_eval=training_args.eval_strategy != "no")
    if training_args.process_index == 0:
        with open(os.path.join(training_args.output_dir, "data_stats.json"), "w") as f:
            json.dump({name: dict(counts) for name, counts in stats.items()}, f, indent=2)
    return train, valid


def _base_model_path(model, model_args: ModelArguments, training_args: SMTrainingArguments, fresh: bool) -> str:
    """The path adapters are merged into later: the hub/local checkpoint, or the saved tiny base."""
    if not model_args.tiny:
        return model_args.model_name_or_path
    path = os.path.abspath(os.path.join(training_args.output_dir, BASE_SUBDIR))
    if training_args.process_index == 0 and (fresh or not os.path.exists(os.path.join(path, "config.json"))):
        model.save_pretrained(path)
    return path


def _model_to_train(model_args: ModelArguments, training_args: SMTrainingArguments, config, fresh: bool):
    """(the model wrapped for finetuning, the base model path its adapters merge into later)."""
    model = load_model(model_args, config, training_args.seed)
    base_path = _base_model_path(model, model_args, training_args, fresh)
    model.name_or_path = model.config.name_or_path = base_path  # the adapter card names its base model
    model = prepare_for_finetuning(model, model_args.finetuning, model_args.lora_r, model_args.lora_alpha,
                                   model_args.lora_dropout, model_args.lora_target_modules)
    if hasattr(model, "peft_config"):
        model.peft_config["default"].base_model_name_or_path = base_path
        model.print_trainable_parameters()
    return model, base_path


def _leave_zero3() -> None:
    """After a ZeRO-3 run, models loaded in this process would come back sharded (empty weights)."""
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled, unset_hf_deepspeed_config

    if is_deepspeed_zero3_enabled():
        unset_hf_deepspeed_config()


def _export(training_args: SMTrainingArguments, base_path, tokenizer=None) -> None:
    _leave_zero3()
    export_standalone(training_args.output_dir, training_args.export_dir, tokenizer, base_model_path=base_path,
                      overwrite=True)  # checked against the run before anything loaded
    logger.info("standalone model written to %s", training_args.export_dir)


def check_before_loading(data_args, training_args, model_args, recipe=None, config=None):
    """(model config, output-folder plan, resolved config): every check that needs no weights or data.
    Run it holding the folder's `RunLock` (the plan reads the folder)."""
    config = validate_run(data_args, training_args, model_args) if config is None else config
    run_config = {**resolved_config(data_args, training_args, model_args), "recipe": recipe,
                  FINGERPRINTS: data_fingerprints(data_args.sources())}
    plan = plan_run(training_args.output_dir, run_config, training_args.overwrite_output_dir,
                    training_args.resume_from_checkpoint)
    if training_args.export_dir:
        check_export_target(training_args.export_dir, training_args.output_dir,
                            overwrite=training_args.overwrite_output_dir, flag="--overwrite_output_dir true")
    return config, plan, run_config


def configure_logging(training_args) -> int:
    """transformers' convention (its example scripts): the main process logs at `--log_level`, the
    others at `--log_level_replica` (warning), so an N-process run prints its progress once. A
    'passive' main process logs sm_dream's progress at INFO and leaves the libraries' verbosity as
    it is. Returns the level."""
    explicit = training_args.should_log and training_args.log_level != "passive"
    level = logging.INFO if training_args.should_log and not explicit else training_args.get_process_log_level()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level,
                        handlers=[logging.StreamHandler(sys.stdout)])
    logging.getLogger("sm_dream").setLevel(level)
    if explicit or not training_args.should_log:
        transformers.utils.logging.set_verbosity(level)
        datasets.utils.logging.set_verbosity(level)
    return level


def main(data_args: DataArguments, training_args: SMTrainingArguments, model_args: ModelArguments, recipe=None):
    """Run (or resume, or skip as finished) the recipe; returns the trainer (None when already finished).

    The main process holds `output_dir/.run.lock` from the folder check to the end (a second run
    into the folder is refused, naming this one)."""
    configure_logging(training_args)
    with as_user_error():  # arguments and paths: the user's to fix
        config = validate_run(data_args, training_args, model_args)  # before the lock creates output_dir
    lock = RunLock(training_args.output_dir) if training_args.process_index == 0 else contextlib.nullcontext()
    with lock:  # a second run into the folder: RunLockedError, a UserError
        return _locked_main(data_args, training_args, model_args, recipe, config)


def _locked_main(data_args, training_args, model_args, recipe, config):
    with as_user_error():  # the output folder and the data files: the user's to fix
        config, plan, run_config = check_before_loading(data_args, training_args, model_args, recipe, config)
    main_process = training_args.process_index == 0
    if plan.action == "finished":
        logger.info("%s holds this run, already finished: nothing to do (--overwrite_output_dir true trains "
                    "it again).", training_args.output_dir)
        if training_args.export_dir and export_source(training_args.export_dir) is None and main_process:
            _export(training_args, None)  # the run finished but its export did not
        return None
    prepare_output_dir(training_args.output_dir, plan, run_config, main_process)
    logger.info("effective batch %d = %d processes x %d per device x %d gradient accumulation steps",
                run_config["effective_batch_size"], training_args.world_size,
                training_args.per_device_train_batch_size, training_args.gradient_accumulation_steps)
    set_seed(training_args.seed)
    tokenizer = load_tokenizer(model_args)
    with as_user_error():  # no usable example, a source with no records
        train, valid = build_data(data_args, tokenizer, training_args)
    model, base_path = _model_to_train(model_args, training_args, config, fresh=plan.action == "fresh")
    trainer = SoftMaskTrainer(
        model=model, args=training_args, train_dataset=train,
        eval_dataset=valid if training_args.eval_strategy != "no" else None,
        data_collator=DiffusionDataCollator(pad_token_id=tokenizer.eos_token_id))
    # The tokenizer is saved by hand: as Trainer's `processing_class` it would rewrite the model
    # config's bos id with the tokenizer's (151665 vs Dream's 151643).
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(training_args.output_dir)
    result = trainer.train(resume_from_checkpoint=plan.checkpoint)
    trainer.log_metrics("train", result.metrics)
    trainer.save_model(training_args.output_dir)
    trainer.save_state()  # output_dir/trainer_state.json, written last: the run is finished
    trainer.accelerator.wait_for_everyone()
    if training_args.export_dir and trainer.is_world_process_zero():
        _export(training_args, base_path, tokenizer)
    trainer.accelerator.end_training()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return trainer


def usage(prog: str, recipes_dir=None) -> str:
    """What a bare recipe script prints: how to call it and which recipes ship."""
    from pathlib import Path

    root = Path(recipes_dir or "recipes")
    recipes = sorted(str(p.relative_to(root.parent)) for p in root.glob("*/sft_*.yaml"))
    return "\n".join([USAGE.format(prog=prog), "", "A recipe YAML is required; shipped recipes:",
                      *([f"  {r}" for r in recipes] or ["  (none found: pass the path of a recipe YAML)"]), "",
                      "Any key of the recipe can be overridden with a flag (--p_sm 0 --max_steps 100).",
                      f"{prog} --help lists the recipe options; --help-all adds every TrainingArguments flag."])


def run_recipe(recipes_dir=None, argv=None, prog=None):
    """A recipe script's entry point: a short usage naming the shipped recipes unless flags are given."""
    argv = config_flag_split(sys.argv[1:] if argv is None else argv)
    debug, argv = debug_requested(argv), strip_debug(argv)
    prog = prog or os.path.basename(sys.argv[0])
    if not argv or (recipe_of(argv) is None and not {"-h", "--help", "--help-all"} & set(argv)):
        print(usage(prog, recipes_dir), file=sys.stderr)
        raise SystemExit(2)
    with user_errors(debug=debug):  # one `error:` line and status 2; --debug: the traceback
        with as_user_error():
            args = parse_args(argv, prog=prog)
        if is_main_process():
            for line in cost_warnings(*args):
                print(line, file=sys.stderr)
        offline_when_hub_unreachable()
        return main(*args, recipe=recipe_of(argv))


if __name__ == "__main__":
    run_recipe(prog="python -m sm_dream.training.finetune")
