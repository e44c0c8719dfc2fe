# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""`python -m sm_dream.evaluation.cli ...` (or `sm-dream-eval ...`): lm-eval's command line with sm_dream's
model and tasks registered in-process.

The plain `lm_eval --model sm_dream ...` works after `pip install sm_dream` thanks to the installed
start-up hook (`sm_dream-lm_eval.pth`); this wrapper does the same explicitly, for environments
that skip `.pth` files (`python -S`, some embedded interpreters) and for `accelerate launch -m
sm_dream.evaluation.cli` / `torchrun -m sm_dream.evaluation.cli`. Arguments are lm-eval's, unchanged:

    python -m sm_dream.evaluation.cli --model sm_dream --model_args pretrained=PATH,nfe_budget=0.5 \\
        --tasks humaneval_instruct --apply_chat_template --confirm_run_unsafe_code
"""

import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> None:
    """Run lm-eval's CLI with `argv` (default: this process's arguments)."""
    from ..errors import debug_requested, strip_debug, user_errors
    from . import registration  # noqa: F401  (registers sm_dream's model and tasks with lm-eval)
    from lm_eval.__main__ import cli_evaluate

    argv = sys.argv[1:] if argv is None else list(argv)
    debug = debug_requested(argv)
    sys.argv = ["lm_eval", *strip_debug(argv)]
    with user_errors(debug=debug):  # a bad --model_args value: one `error:` line, status 2 (--debug: traceback)
        cli_evaluate()


if __name__ == "__main__":
    main()
