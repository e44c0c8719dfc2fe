# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Console entry points (`sm-dream <command>`), thin wrappers over the library.

    sm-dream train --config recipes/tiny/sft_sm_tiny.yaml [--p_sm 0.8 ...]
    sm-dream export outputs/run/checkpoint-2000 outputs/run-merged [--base_model PATH]

`export` merges a trained adapter (and the SM parameters saved with it) into its base model, or
re-saves a fully finetuned checkpoint, as a standalone model that loads with
`AutoModel.from_pretrained(dir, trust_remote_code=True)` where sm_dream is not installed.
"""

import argparse
import sys
from typing import Callable, Dict, List, Optional


def train(argv: List[str]) -> None:
    """Run the finetuning recipe given by --config (YAML) and flags."""
    from .training.configs import parse_args
    from .training.finetune import main

    main(*parse_args(argv))


def export(argv: List[str]) -> None:
    """Merge a run's adapter into its base model and save a standalone checkpoint."""
    parser = argparse.ArgumentParser(prog="sm-dream export", description=export.__doc__)
    parser.add_argument("checkpoint", help="training output_dir or checkpoint-N folder")
    parser.add_argument("output_dir")
    parser.add_argument("--base_model", default=None, help="base model, if the adapter config lacks it")
    args = parser.parse_args(argv)
    from .training.export import export_standalone

    print("standalone model written to "
          f"{export_standalone(args.checkpoint, args.output_dir, base_model_path=args.base_model)}")


COMMANDS: Dict[str, Callable[[List[str]], None]] = {"train": train, "export": export}


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    if argv[0] not in COMMANDS:
        raise SystemExit(f"sm-dream: unknown command {argv[0]!r}; choose one of {list(COMMANDS)}.")
    COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
