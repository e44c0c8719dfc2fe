# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Metadata lives in setup.cfg; this file only adds two build steps for the lm-eval integration.

- `src/sm_dream-lm_eval.pth` is installed at the top of site-packages (normal and `pip install -e`
  installs). It runs `sm_dream/evaluation/registration.py`, which registers `--model sm_dream` and sm_dream's
  tasks in any `lm_eval` process (lm-eval 0.4.13 has no plugin discovery). It is listed in the
  wheel's RECORD, so `pip uninstall` removes it.
- The repository's `eval_tasks/` (lm-eval YAMLs and their helpers) is copied into the wheel as
  `sm_dream/eval_tasks/`, where the hook finds it. Editable installs use the repository folder.
"""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "sm_dream-lm_eval.pth"
TASKS = "eval_tasks"


def task_files():
    """Relative paths of the files under eval_tasks/ (no caches)."""
    found = []
    for root, dirs, files in os.walk(TASKS):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        found += [os.path.join(root, f) for f in sorted(files) if not f.endswith((".pyc", ".pyo"))]
    return sorted(found)


class BuildPyWithLmEval(build_py):
    """build_py + the .pth file + eval_tasks/ as package data of sm_dream."""

    def run(self):
        super().run()
        # An editable install builds into a staging folder: the .pth goes to install_lib there.
        target = self.get_finalized_command("install").install_lib if self.editable_mode else self.build_lib
        self.copy_file(os.path.join("src", PTH), os.path.join(target, PTH), preserve_mode=False)
        if not self.editable_mode:
            for path in task_files():
                dest = os.path.join(self.build_lib, "sm_dream", path)
                self.mkpath(os.path.dirname(dest))
                self.copy_file(path, dest, preserve_mode=False)

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        if self.editable_mode:
            return outputs
        extra = [os.path.join(self.build_lib, PTH)]
        extra += [os.path.join(self.build_lib, "sm_dream", path) for path in task_files()]
        return outputs + extra


setup(cmdclass={"build_py": BuildPyWithLmEval})
