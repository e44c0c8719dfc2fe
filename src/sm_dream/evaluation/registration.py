# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Makes `lm_eval --model sm_dream` and sm_dream's tasks work in a plain `lm_eval` process.

lm-eval 0.4.13 has no plugin discovery: `--model NAME` is looked up in an in-process registry and
`--tasks` in the folders a `TaskManager` indexes. The installed `sm_dream-lm_eval.pth` runs this file
at interpreter start-up, by path and under the name `_sm_dream_lm_eval_hook`, without importing the
`sm_dream` package (which would import torch and transformers into every Python process). It costs
well under a millisecond and does nothing until lm-eval itself is imported. Then, right after
lm-eval's own module has run:

- `lm_eval.api.registry`: lm-eval's built-in models are registered first (a registry that is not
  empty is never filled with them, so `--model hf` would disappear), then `sm_dream` and
  `sm_dream_reference` as lazy "module:Class" placeholders (nothing heavy is imported).
- `lm_eval.tasks.manager`: every `TaskManager` that includes the built-in tasks also indexes
  sm_dream's task folder, before any `--include_path` (a user's task of the same name wins).

The same hook makes launchers quiet about user errors: in an `accelerate launch` or `torchrun`
process (`accelerate.commands.launch` / `torch.distributed.run` imported), a launched sm_dream
process that stops on a user error has printed its one line, and the launcher exits with status 2
instead of adding a traceback of the child's failure (`relay_user_errors`).

Environment: `SM_DREAM_LM_EVAL_HOOK=0` switches the hook off (both parts). `SM_DREAM_LM_EVAL_TASKS=sm_dream`
makes every `TaskManager` index only sm_dream's tasks and `--include_path`, not lm-eval's ~15,000
built-in YAML files, which saves 15-30 s of start-up per `lm_eval` run (built-in tasks such as
`gsm8k` are then unknown). Only `os` and `sys` are imported here (both are loaded at start-up).
"""

import os
import sys

MODELS = {
    "sm_dream": "sm_dream.evaluation.lm_eval_model:SMDreamLM",
    "sm_dream_reference": "sm_dream.evaluation.lm_eval_reference:ReferenceLM",
}


def task_dir():
    """sm_dream's lm-eval task folder (a str), or None when it is not installed: the package
    `sm_dream.eval_tasks` (the repository's `eval_tasks/`, mapped by setup.cfg `package_dir`; the same
    lookup in wheels and editable installs). Imports `sm_dream`, so it runs only once lm-eval builds a
    `TaskManager`, never at interpreter start-up."""
    from importlib import resources

    try:
        folder = resources.files("sm_dream.eval_tasks")
    except ModuleNotFoundError:
        return None
    return os.path.normpath(str(folder)) if folder.is_dir() else None


def register_models(registry_module) -> None:
    """Register sm_dream's models after lm-eval's built-ins (see the module docstring)."""
    import lm_eval.models  # noqa: F401  (fills the registry with the built-in models first)

    for name, target in MODELS.items():
        if name not in registry_module.model_registry:
            registry_module.model_registry.register(name, target=target)


def only_sm_dream_tasks() -> bool:
    """Whether `SM_DREAM_LM_EVAL_TASKS=sm_dream` asks to skip lm-eval's built-in tasks."""
    return os.environ.get("SM_DREAM_LM_EVAL_TASKS", "all") == "sm_dream"


def with_sm_dream_tasks(include_path, include_defaults=True):
    """`include_path` as a list with sm_dream's task folder first when the built-in tasks are
    included; None stays None when there is nothing to add."""
    if include_path is None:
        paths = []
    elif isinstance(include_path, (list, tuple)):
        paths = list(include_path)
    else:
        paths = [include_path]
    tasks = task_dir()
    if include_defaults and tasks is not None and tasks not in {os.path.normpath(str(p)) for p in paths}:
        paths.insert(0, tasks)
    return paths or None


def patch_task_manager(manager_module) -> None:
    """Wrap `TaskManager.__init__` so that it also indexes sm_dream's task folder."""
    import functools
    import inspect

    cls = manager_module.TaskManager
    init = cls.__init__
    if getattr(init, "_sm_dream_patched", False):
        return
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments, only_ours = bound.arguments, only_sm_dream_tasks()
        if "include_path" in arguments:
            add = only_ours or arguments.get("include_defaults", True)
            arguments["include_path"] = with_sm_dream_tasks(arguments["include_path"], add)
            if only_ours and "include_defaults" in arguments:
                arguments["include_defaults"] = False
        init(*bound.args, **bound.kwargs)

    __init__._sm_dream_patched = True
    cls.__init__ = __init__


USER_ERROR_FILE = "SM_DREAM_USER_ERROR_FILE"  # read by sm_dream.errors in the launched processes


def relay_user_errors(_launcher_module) -> None:
    """In a launcher process (`accelerate launch`, `torchrun`): a launched sm_dream process that
    stops on a user error prints its one `error:` line and touches the file named by
    `SM_DREAM_USER_ERROR_FILE` (in a folder only this user can enter); the launcher then exits with
    status 2 instead of printing a traceback of the child's failure. Any other failure of the
    launcher keeps its traceback. Launchers have no option for this (`accelerate launch --quiet`
    exits 1 and hides internal errors too), hence the excepthook."""
    import atexit
    import shutil
    import tempfile

    if getattr(sys.excepthook, "sm_dream_relay", False):  # accelerate imports torch.distributed.run too
        return
    folder = tempfile.mkdtemp(prefix="sm_dream_launch_")
    marker = os.path.join(folder, "user_error")
    os.environ[USER_ERROR_FILE] = marker  # the launchers copy os.environ into their children
    previous = sys.excepthook

    def excepthook(kind, value, traceback):
        user_error = os.path.exists(marker)
        shutil.rmtree(folder, ignore_errors=True)
        if not user_error:
            return previous(kind, value, traceback)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(2)  # the child's `error:` line is the message; argparse's status for user errors

    excepthook.sm_dream_relay = True
    sys.excepthook = excepthook
    atexit.register(shutil.rmtree, folder, ignore_errors=True)


CALLBACKS = {"lm_eval.api.registry": register_models, "lm_eval.tasks.manager": patch_task_manager,
             "accelerate.commands.launch": relay_user_errors, "torch.distributed.run": relay_user_errors}


class PostImportFinder:
    """A `sys.meta_path` finder that runs a callback right after a named module has executed.

    It finds nothing itself: it asks the other finders for the spec and wraps its loader. Duck-typed
    on purpose (importing `importlib.abc` would cost ~20 ms at every interpreter start).
    """

    sm_dream_hook = True

    def __init__(self, callbacks):
        self.callbacks = dict(callbacks)

    def find_spec(self, name, path, target=None):
        callback = self.callbacks.pop(name, None)
        if callback is None:
            return None
        spec = next((s for s in self._other_specs(name, path, target) if s is not None), None)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_callback(module):
            exec_module(module)
            callback(module)

        spec.loader.exec_module = exec_then_callback
        return spec

    def _other_specs(self, name, path, target):
        for finder in list(sys.meta_path):
            if finder is not self and hasattr(finder, "find_spec"):
                yield finder.find_spec(name, path, target)


def install() -> None:
    """Install the finder once per process; for modules lm-eval has already imported, run the
    callbacks now."""
    if os.environ.get("SM_DREAM_LM_EVAL_HOOK", "1") == "0":
        return
    if any(getattr(f, "sm_dream_hook", False) for f in sys.meta_path):
        return
    pending = {}
    for name, callback in CALLBACKS.items():
        if name in sys.modules:
            callback(sys.modules[name])
        else:
            pending[name] = callback
    if pending:
        sys.meta_path.insert(0, PostImportFinder(pending))


install()
