# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""The SM finetuning run shared by the recipes: seed, data, model, trainer, train, save, export.

    accelerate launch recipes/finetune_dream_coder.py --config recipes/dream_coder/sft_sm_dora.yaml
    python -m sm_dream.training.finetune --config recipes/tiny/sft_sm_tiny.yaml          # the tiny CPU run

Writes to `output_dir`: checkpoints (Trainer), the final adapter (with the SM parameters) or full
model, the tokenizer, `data_stats.json` (records kept / filtered / malformed per source) and, with
`export_dir`, a merged standalone model that loads with `AutoModel.from_pretrained(...,
trust_remote_code=True)`.
"""

import json
import logging
import os
import sys

import torch
from transformers import AutoTokenizer, set_seed
from transformers.trainer_utils import get_last_checkpoint

from ..model.modeling_sm_dream import SoftMaskDreamForDiffusionLM
from ..tiny import load_dream_tokenizer, tiny_config
from .adapters import prepare_for_finetuning
from .configs import DataArguments, ModelArguments, SMTrainingArguments, parse_args
from .data import ChatPreprocessor, DiffusionDataCollator, build_datasets
from .export import export_standalone
from .trainer import SoftMaskTrainer

logger = logging.getLogger(__name__)
BASE_SUBDIR = "base_model"  # where a --tiny run keeps its random base weights, for merging later


def load_model_and_tokenizer(model_args: ModelArguments, seed: int):
    """(model, tokenizer): a released/saved Dream checkpoint, or the tiny config (seeded random init)."""
    overrides = dict(model_args.model_config_overrides)
    if model_args.attn_implementation:
        overrides["attn_implementation"] = model_args.attn_implementation
    if model_args.tiny:
        torch.manual_seed(seed)
        model = SoftMaskDreamForDiffusionLM(tiny_config(**overrides))
        name = model_args.tokenizer_name_or_path
        return model, (AutoTokenizer.from_pretrained(name) if name else load_dream_tokenizer())
    model = SoftMaskDreamForDiffusionLM.from_pretrained(
        model_args.model_name_or_path, dtype=model_args.torch_dtype, trust_remote_code=model_args.trust_remote_code,
        **overrides)
    # w_s, w_a, w_b train at lr 1e-2 around values like -5: in bf16 (spacing 0.03 there) most updates
    # would round away, so the three SM parameters stay float32 in a bf16 model.
    model.soft_mask.float()
    tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name_or_path or model_args.model_name_or_path,
                                              trust_remote_code=model_args.trust_remote_code)
    return model, tokenizer


def build_data(data_args: DataArguments, tokenizer, training_args: SMTrainingArguments):
    preprocessor = ChatPreprocessor(tokenizer, data_args.max_context_tokens, data_args.min_response_tokens,
                                    data_args.max_eos_pad, seed=training_args.data_seed or training_args.seed,
                                    max_length=data_args.max_length)
    with training_args.main_process_first(desc="preprocessing the data"):
        train, valid, stats = build_datasets(
            data_args.sources(), preprocessor, data_args.max_train_samples, data_args.max_eval_samples,
            data_args.holdout_fraction, training_args.data_seed or training_args.seed,
            data_args.preprocessing_num_workers)
    if training_args.process_index == 0:
        os.makedirs(training_args.output_dir, exist_ok=True)
        with open(os.path.join(training_args.output_dir, "data_stats.json"), "w") as f:
            json.dump({name: dict(counts) for name, counts in stats.items()}, f, indent=2)
    return train, valid


def _base_model_path(model, model_args: ModelArguments, training_args: SMTrainingArguments) -> str:
    """The path adapters are merged into later: the hub/local checkpoint, or the saved tiny base."""
    if not model_args.tiny:
        return model_args.model_name_or_path
    path = os.path.abspath(os.path.join(training_args.output_dir, BASE_SUBDIR))
    if training_args.process_index == 0 and not os.path.exists(os.path.join(path, "config.json")):
        model.save_pretrained(path)
    return path


def _leave_zero3() -> None:
    """After a ZeRO-3 run, models loaded in this process would come back sharded (empty weights)."""
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled, unset_hf_deepspeed_config

    if is_deepspeed_zero3_enabled():
        unset_hf_deepspeed_config()


def main(data_args: DataArguments, training_args: SMTrainingArguments, model_args: ModelArguments):
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO,
                        handlers=[logging.StreamHandler(sys.stdout)])
    set_seed(training_args.seed)
    model, tokenizer = load_model_and_tokenizer(model_args, training_args.seed)
    train, valid = build_data(data_args, tokenizer, training_args)
    base_path = _base_model_path(model, model_args, training_args)
    model = prepare_for_finetuning(model, model_args.finetuning, model_args.lora_r, model_args.lora_alpha,
                                   model_args.lora_dropout, model_args.lora_target_modules)
    if hasattr(model, "peft_config"):
        model.peft_config["default"].base_model_name_or_path = base_path
        model.print_trainable_parameters()
    trainer = SoftMaskTrainer(
        model=model, args=training_args, train_dataset=train,
        eval_dataset=valid if training_args.eval_strategy != "no" else None,
        data_collator=DiffusionDataCollator(pad_token_id=tokenizer.eos_token_id))
    # The tokenizer is saved by hand: as Trainer's `processing_class` it would rewrite the model
    # config's bos id with the tokenizer's (151665 vs Dream's 151643).
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(training_args.output_dir)
    checkpoint = training_args.resume_from_checkpoint
    if checkpoint is None and os.path.isdir(training_args.output_dir):
        checkpoint = get_last_checkpoint(training_args.output_dir)  # a killed run continues where it stopped
    result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.log_metrics("train", result.metrics)
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.wait_for_everyone()
    if training_args.export_dir and trainer.is_world_process_zero():
        _leave_zero3()
        export_standalone(training_args.output_dir, training_args.export_dir, tokenizer, base_model_path=base_path)
        logger.info("standalone model written to %s", training_args.export_dir)
    trainer.accelerator.end_training()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return trainer


def run_recipe(default_config, argv=None):
    """A recipe script's entry point: `default_config` unless the flags name a --config."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--config" not in argv:
        argv = ["--config", str(default_config), *argv]
    return main(*parse_args(argv))


if __name__ == "__main__":
    main(*parse_args())
