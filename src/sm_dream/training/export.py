# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""How a finished run becomes a standalone model: adapters merged into the weights, the SM module with
its trained values, the model code carried along (`auto_map`) and a model card (`model_card.py`), so
that `AutoModel.from_pretrained(path, trust_remote_code=True)` loads it without sm_dream installed.
An export never replaces a different model in its folder unless asked to (`overwrite=True`).

An export is atomic: it is written into `<export_dir>.partial-export` and moved into place when
complete, the model card last, so the card marks a finished export and a killed one leaves either
the previous export or nothing (finetune redoes it from the finished training on rerun)."""

import os
import shutil
from typing import Optional

from .model_card import CARD, export_source, model_card

BASE_SUBDIR = "base_model"  # where a tiny run keeps its random base weights, for merging later
PARTIAL = ".partial-export"  # suffix of the folder an export is written into before it is moved into place


def check_export_target(output_dir: str, source: str, overwrite: bool = False, flag: str = "--overwrite") -> None:
    """ValueError if `output_dir` holds a model that was not exported from `source` (unless `overwrite`)."""
    if overwrite or not os.path.isdir(output_dir) or not os.listdir(output_dir):
        return
    found = export_source(output_dir)
    if found is not None and os.path.abspath(found) == os.path.abspath(source):
        return  # the same run exported again
    what = f"a model exported from {found}" if found else "files that are not an export of this run"
    raise ValueError(f"export folder {output_dir} already holds {what}; pass {flag} to replace it, "
                     "or choose another folder.")


def export_standalone(model_or_path, output_dir: str, tokenizer=None, base_model_path: Optional[str] = None,
                      overwrite: bool = False) -> str:
    """Write a checkpoint that `AutoModel.from_pretrained(output_dir, trust_remote_code=True)` loads.

    model_or_path: a trained (PEFT or plain) model, or a directory: a training output/checkpoint with
        an adapter (its base from `base_model_path` or the adapter config) or a full model.
    Adapters are merged into the weights; the SM module keeps its trained values. With a directory,
    a model card (README.md) records the base model, recipe, SM values, steps and data counts, and
    an existing different model in `output_dir` is refused unless `overwrite`.
    """
    from_path = isinstance(model_or_path, str)
    if from_path:
        check_export_target(output_dir, model_or_path, overwrite)
        model, base = _load_for_export(model_or_path, base_model_path)
    else:
        model, base = model_or_path, base_model_path
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    final = os.path.normpath(output_dir)
    partial = final + PARTIAL
    if os.path.exists(partial):  # left by an interrupted export
        shutil.rmtree(partial)
    model.save_pretrained(partial)
    tokenizer = tokenizer if tokenizer is not None or not from_path else _run_tokenizer(model_or_path)
    if tokenizer is not None:
        tokenizer.save_pretrained(partial)
    if from_path:
        model_card(model_or_path, base or model.config.name_or_path, model.config, model.soft_mask.mapped(),
                   final).save(os.path.join(partial, CARD))
    _move_into_place(partial, final)
    return output_dir


def _move_into_place(partial: str, final: str) -> None:
    """`partial` becomes `final`. A missing, empty or earlier-export `final` is swapped whole (rename);
    any other folder (replaced with overwrite=True) keeps its other files and gets the export's files
    moved in one by one, its old card removed first and the new card moved last."""
    from .model_card import export_source

    old = final + ".old-export"
    if os.path.exists(old):
        shutil.rmtree(old)
    if not os.path.exists(final):
        os.rename(partial, final)
        return
    if not os.listdir(final) or export_source(final) is not None:
        os.rename(final, old)
        os.rename(partial, final)
        shutil.rmtree(old)
        return
    if os.path.exists(os.path.join(final, CARD)):
        os.remove(os.path.join(final, CARD))
    names = sorted(os.listdir(partial), key=lambda name: name == CARD)
    for name in names:
        target = os.path.join(final, name)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        os.replace(os.path.join(partial, name), target)
    os.rmdir(partial)


def _run_tokenizer(path: str):
    """The run's tokenizer: in the folder, or one up for a checkpoint-N folder."""
    found = [d for d in (path, os.path.dirname(os.path.abspath(path)))
             if os.path.exists(os.path.join(d, "tokenizer_config.json"))]
    if not found:
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(found[0])


def _base_for(path: str, base_model_path: Optional[str]) -> str:
    """The base model of an adapter folder; a moved tiny run finds its base_model/ next to it."""
    if base_model_path:
        return base_model_path
    from peft import PeftConfig

    base = PeftConfig.from_pretrained(path).base_model_name_or_path
    if not base:
        raise ValueError(f"{path} holds an adapter without a base model path; pass base_model_path (--base_model).")
    if os.path.isabs(base) and not os.path.exists(base):
        for run in (path, os.path.dirname(os.path.abspath(path))):
            if os.path.basename(base) == BASE_SUBDIR and os.path.exists(os.path.join(run, BASE_SUBDIR, "config.json")):
                return os.path.join(run, BASE_SUBDIR)
        raise ValueError(f"{path}: the adapter's base model {base} does not exist (was the run folder moved?); "
                         "pass the base model with --base_model PATH_OR_HUB_ID.")
    return base


def _load_for_export(path: str, base_model_path: Optional[str]):
    """(model, base model name or path) from a run or checkpoint folder."""
    from ..model.modeling_sm_dream import SoftMaskDreamForDiffusionLM

    if not os.path.exists(os.path.join(path, "adapter_config.json")):
        if not os.path.exists(os.path.join(path, "config.json")):
            raise ValueError(f"{path} holds neither an adapter (adapter_config.json) nor a model (config.json).")
        model = SoftMaskDreamForDiffusionLM.from_pretrained(path)
        return model, base_model_path or model.config.name_or_path
    from peft import PeftModel

    base = _base_for(path, base_model_path)
    try:
        base_model = SoftMaskDreamForDiffusionLM.from_pretrained(base)
    except OSError as err:
        raise ValueError(f"cannot load the base model {base!r} of the adapter in {path}: {err}\n"
                         "Pass the base model with --base_model PATH_OR_HUB_ID.") from None
    return PeftModel.from_pretrained(base_model, path), base
