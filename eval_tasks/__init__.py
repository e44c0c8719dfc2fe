# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""sm_dream's lm-eval task folders, installed as the package `sm_dream.eval_tasks` (setup.cfg maps it
to the repository's `eval_tasks/`, in wheels and editable installs alike). Find the folder with
`sm_dream.evaluation.registration.task_dir()`."""
