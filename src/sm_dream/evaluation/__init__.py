# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""lm-eval integration (docs/evaluation.md): the `sm_dream` lm-eval model and its settings, task data,
sandboxed code execution, answer checking, the sweep, the `sm-dream-eval` CLI and the registration of
sm_dream's model and tasks with lm-eval. Importing this package imports nothing heavy; its modules
that need lm-eval (the `eval` extra) import it themselves."""
