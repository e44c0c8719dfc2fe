# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Metadata lives in setup.cfg; this file only adds one build step for the lm-eval integration.

`src/sm_dream-lm_eval.pth` is installed at the top of site-packages (normal and `pip install -e`
installs). It runs `sm_dream/evaluation/registration.py`, which registers `--model sm_dream` and
sm_dream's tasks in any `lm_eval` process (lm-eval 0.4.13 has no plugin discovery). It is listed in the
wheel's RECORD, so `pip uninstall` removes it. The task folder `eval_tasks/` is the package
`sm_dream.eval_tasks` (setup.cfg `package_dir`), not a build step.
"""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "sm_dream-lm_eval.pth"


class BuildPyWithLmEval(build_py):
    """build_py + the .pth file."""

    def run(self):
        super().run()
        # An editable install builds into a staging folder: the .pth goes to install_lib there.
        target = self.get_finalized_command("install").install_lib if self.editable_mode else self.build_lib
        self.copy_file(os.path.join("src", PTH), os.path.join(target, PTH), preserve_mode=False)

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        return outputs if self.editable_mode else outputs + [os.path.join(self.build_lib, PTH)]


setup(cmdclass={"build_py": BuildPyWithLmEval})
