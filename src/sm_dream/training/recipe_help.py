# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Short usage and `--help` of the finetuning entry points: `--config` first, then the recipe's own
options (model, data, soft-masking); `--help-all` adds every `transformers.TrainingArguments` flag."""

from dataclasses import MISSING, fields
from pathlib import Path
from typing import List, Optional

from transformers import TrainingArguments

USAGE = "usage: {prog} --config RECIPE.yaml [--KEY VALUE ...]"


def shipped_recipes(root: Optional[Path] = None) -> List[str]:
    """The finetuning recipes under `root` (the repository's recipes/ folder), as paths from its parent."""
    root = root or Path("recipes")
    return sorted(str(p.relative_to(root.parent)) for p in root.glob("*/sft_*.yaml")) if root.is_dir() else []


def usage(prog: str, root: Optional[Path] = None) -> str:
    """What a bare recipe script prints: how to call it and which recipes ship."""
    recipes = shipped_recipes(root)
    lines = [USAGE.format(prog=prog), "", "A recipe YAML is required; shipped recipes:"]
    lines += [f"  {r}" for r in recipes] or ["  (none found: pass the path of a recipe YAML)"]
    lines += ["", "Any key of the recipe can be overridden with a flag (--p_sm 0 --max_steps 100).",
              f"{prog} --help lists the recipe options; --help-all adds every TrainingArguments flag."]
    return "\n".join(lines)


def _default(f) -> str:
    if f.default is not MISSING:
        return repr(f.default)
    return repr(f.default_factory()) if f.default_factory is not MISSING else "required"


def _options(cls, names=None) -> List[str]:
    rows = []
    for f in fields(cls):
        if f.init and (names is None or f.name in names):
            rows.append(f"  --{f.name:<28} {f.metadata.get('help', '')} (default: {_default(f)})")
    return rows


def print_help(parser, argument_classes, full: bool = False, prog: str = "sm-dream train") -> None:
    """`--config` and the sm_dream options (SM fields and the paper's changed defaults) first.
    `argument_classes`: (DataArguments, SMTrainingArguments, ModelArguments), as the parser takes them."""
    DataArguments, SMTrainingArguments, ModelArguments = argument_classes
    base = {f.name for f in fields(TrainingArguments)}
    own = {f.name for f in fields(SMTrainingArguments)} - base
    changed = base & set(SMTrainingArguments.__annotations__)
    lines = [USAGE.format(prog=prog), "",
             "  --config RECIPE.yaml           the run recipe (YAML); flags below override its keys", "",
             "model:", *_options(ModelArguments), "", "data:", *_options(DataArguments), "",
             "soft-masking and batch:", *_options(SMTrainingArguments, own), "",
             "training (the paper's defaults):", *_options(SMTrainingArguments, changed), ""]
    if full:
        print("\n".join(lines) + "\nall transformers.TrainingArguments flags:\n")
        parser.print_help()
        return
    lines.append("Every other transformers.TrainingArguments field is accepted too (--help-all lists them).")
    print("\n".join(lines))
