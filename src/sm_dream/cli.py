# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Console entry points (`sm-dream <command>`), thin wrappers over the library.

    sm-dream train --config recipes/tiny/sft_sm_tiny.yaml [--p_sm 0.8 ...]
    sm-dream export outputs/run/checkpoint-2000 outputs/run-merged [--base_model PATH] [--overwrite]

`export` merges a trained adapter (and the SM parameters saved with it) into its base model, or
re-saves a fully finetuned checkpoint, as a standalone model that loads with
`AutoModel.from_pretrained(dir, trust_remote_code=True)` where sm_dream is not installed, with a
model card (README.md). It refuses to replace a different model in the target folder without
`--overwrite`; a moved run folder whose base model is gone needs `--base_model`.
"""

import argparse
import os
import sys
from typing import Callable, Dict, List, Optional

from .errors import DEBUG_ENV, UserError, as_user_error, did_you_mean, debug_requested, strip_debug, user_errors


def train(argv: List[str]) -> None:
    """Run the finetuning recipe given by --config (YAML) and flags."""
    from .training.finetune import run_recipe

    run_recipe(argv=argv, prog="sm-dream train")


def export(argv: List[str]) -> None:
    """Merge a run's adapter into its base model and save a standalone checkpoint."""
    parser = argparse.ArgumentParser(prog="sm-dream export", description=export.__doc__)
    parser.add_argument("checkpoint", help="training output_dir or checkpoint-N folder")
    parser.add_argument("output_dir")
    parser.add_argument("--base_model", default=None,
                        help="base model (hub id or folder) when the adapter config's is missing or moved")
    parser.add_argument("--overwrite", action="store_true", help="replace a different model in output_dir")
    args = parser.parse_args(argv)
    from .training.export import export_standalone

    with as_user_error():
        path = export_standalone(args.checkpoint, args.output_dir, base_model_path=args.base_model,
                                 overwrite=args.overwrite)
    print(f"standalone model written to {path}")


COMMANDS: Dict[str, Callable[[List[str]], None]] = {"train": train, "export": export}


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    debug, argv = debug_requested(argv), strip_debug(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    with user_errors(prog="sm-dream", debug=debug):
        if argv[0] not in COMMANDS:
            raise UserError(f"unknown command {argv[0]!r}{did_you_mean(argv[0], COMMANDS)}; "
                            f"choose one of {list(COMMANDS)}.")
        if debug:
            os.environ[DEBUG_ENV] = "1"  # seen by the recipe's own handler
        COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
