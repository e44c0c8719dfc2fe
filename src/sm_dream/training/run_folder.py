# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""What a run does with its `output_dir`, decided before anything loads (transformers' Trainer names).

- The resolved run arguments are kept in `output_dir/run_config.yaml`.
- Same arguments, finished run (`trainer_state.json` and final weights in `output_dir`): nothing to do.
- Same arguments, interrupted run: resume from the newest *complete* `checkpoint-N` (its
  trainer_state.json and readable weights); incomplete or truncated ones are skipped with a warning.
- Different arguments: refused with the changed keys, unless `--overwrite_output_dir`, which starts
  afresh (old checkpoints and the run markers are removed first).
Only the arguments that change what is computed (`RESULT_ARGS`: model, data, seeds, optimization,
the effective batch) are compared; logging, saving and evaluation schedules, workers, output and
export paths, gradient checkpointing and the per-device split of the effective batch may change on
resume.
- The sha256 of every local data file is part of the run (`data_fingerprints`): a file edited in
  place is refused by name, never resumed on. Hub datasets are not fingerprinted.
- A run_config.yaml whose run never saved a checkpoint (it failed before its first save) is
  provisional: a rerun with corrected arguments replaces it.
- `output_dir/.run.lock` (`RunLock`) keeps a second run out of the folder while one runs.
"""

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

from ..errors import UserError

logger = logging.getLogger(__name__)

RUN_CONFIG = "run_config.yaml"
STATE = "trainer_state.json"
WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json",
                "adapter_model.bin", "pytorch_model.bin", "pytorch_model.bin.index.json")
LOCK = ".run.lock"
FINGERPRINTS = "data_fingerprints"
# The arguments that change what a run computes (see the module docstring): an allow-list, so a new
# TrainingArguments field (logging, saving, memory) never makes a resume refused.
RESULT_ARGS = frozenset({
    # model and finetuning
    "model_name_or_path", "tiny", "model_config_overrides", "tokenizer_name_or_path", "torch_dtype",
    "attn_implementation", "finetuning", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules",
    # data
    "dataset_name", "dataset_config", "dataset_train_split", "dataset_eval_split", "data_files", "dataset_mixture",
    "messages_column", "max_train_samples", "max_eval_samples", "holdout_fraction", "max_context_tokens",
    "min_response_tokens", "max_eos_pad", "max_length", "seed", "data_seed", "group_by_length",
    # soft-masking and optimization
    "p_sm", "t_low", "t_high", "sm_learning_rate", "eval_noise_seed", "effective_batch_size", "learning_rate",
    "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_ratio", "warmup_steps", "weight_decay", "adam_beta1",
    "adam_beta2", "adam_epsilon", "optim", "optim_args", "max_grad_norm", "num_train_epochs", "max_steps",
    "bf16", "fp16", "label_smoothing_factor", "average_tokens_across_devices"})
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class RunPlan:
    """action: "fresh", "resume" (from `checkpoint`) or "finished"; skipped: (folder, why) warnings."""

    action: str
    checkpoint: Optional[str] = None
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    clean: bool = False  # a fresh start over an old run: remove its checkpoints and markers first


def resolved_config(data_args, training_args, model_args) -> dict:
    """The run's arguments as plain YAML-able values, plus the derived effective batch."""
    values = {**asdict(model_args), **asdict(data_args), **training_args.to_dict()}
    values["effective_batch_size"] = (training_args.per_device_train_batch_size
                                      * training_args.gradient_accumulation_steps * training_args.world_size)
    return json.loads(json.dumps(values, default=str))


def data_fingerprints(sources) -> Dict[str, str]:
    """{local data file: sha256 of its bytes} over the sources' training and validation files."""
    files = [f for s in sources for group in (s.local_files(), s.eval_data_files) if group
             for f in ([group] if isinstance(group, str) else group)]
    out = {}
    for path in files:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        out[path] = digest.hexdigest()
    return out


def changed_data(saved: dict, current: dict) -> List[str]:
    """The data files (present in both runs) whose content changed."""
    old, new = saved.get(FINGERPRINTS) or {}, current.get(FINGERPRINTS) or {}
    return [path for path in sorted(set(old) & set(new)) if old[path] != new[path]]


class RunLockedError(UserError):
    """Another live run holds the output folder (a `ValueError`, reported as one line)."""


class RunLock:
    """An exclusive `fcntl.flock` on `output_dir/.run.lock`, held while a run uses the folder.

    The file records the holder (pid, host, start time, command) for the error a second run gets.
    The kernel drops the lock when its process ends however it ends, so a lock file whose holder
    is gone (kill -9, a crash, a reboot) is stale and taken over with a warning. On release the
    file is emptied, not removed: removing it would let two later runs lock two different files.
    flock is per host on network file systems that do not forward it (some NFS setups).
    """

    def __init__(self, output_dir: str):
        self.path = os.path.join(output_dir, LOCK)
        self._file = None

    def acquire(self) -> "RunLock":
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            for _ in range(20):  # the holder writes its details just after locking: give it a moment
                f.seek(0)
                text = f.read()
                if text.strip():
                    break
                time.sleep(0.05)
            holder = _holder_text(text)
            f.close()
            raise RunLockedError(f"output_dir {os.path.dirname(self.path)} is in use by another run ({holder}); "
                                 f"wait for it to end, or choose another output_dir. Lock: {self.path}.") from None
        f.seek(0)
        previous = f.read().strip()
        if previous:
            logger.warning("taking over the stale lock %s: its holder is gone (%s)", self.path, _holder_text(previous))
        f.seek(0)
        f.truncate()
        json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                   "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": " ".join(sys.argv)}, f)
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.seek(0)
            self._file.truncate()
            self._file.flush()
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _holder_text(text: str) -> str:
    try:
        h = json.loads(text)
        return f"pid {h['pid']} on {h['host']}, started {h['started']}: {h['command']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"


def changed_keys(saved: dict, current: dict) -> Dict[str, Tuple[object, object]]:
    """{key: (saved, current)} over the `RESULT_ARGS` both configs have."""
    both = RESULT_ARGS & set(saved) & set(current)
    return {k: (saved[k], current[k]) for k in sorted(both) if saved[k] != current[k]}


def _safetensors_problem(path: str) -> Optional[str]:
    """None if the header parses and the file holds every tensor it lists, else why not."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n)) if 8 + n <= size else None
    except (OSError, struct.error, ValueError):
        return f"{os.path.basename(path)} is unreadable"
    if header is None:
        return f"{os.path.basename(path)} is truncated"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    return f"{os.path.basename(path)} is truncated" if 8 + n + end > size else None


def checkpoint_problem(folder: str) -> Optional[str]:
    """None for a complete checkpoint (trainer_state.json and readable weights), else what is wrong."""
    state = os.path.join(folder, STATE)
    try:
        with open(state) as f:
            json.load(f)["global_step"]
    except FileNotFoundError:
        return f"no {STATE}"
    except (OSError, ValueError, KeyError, TypeError):
        return f"{STATE} is truncated"
    weights = [os.path.join(folder, w) for w in WEIGHT_FILES if os.path.exists(os.path.join(folder, w))]
    if not weights:
        return "no model or adapter weights"
    problems = [_safetensors_problem(w) for w in weights if w.endswith(".safetensors")]
    return next((p for p in problems if p), None)


def checkpoints(output_dir: str) -> List[str]:
    """checkpoint-N folders, newest (largest N) first."""
    found = [(int(m.group(1)), name) for name in os.listdir(output_dir) if (m := CHECKPOINT.match(name))
             and os.path.isdir(os.path.join(output_dir, name))]
    return [os.path.join(output_dir, name) for _, name in sorted(found, reverse=True)]


def read_run_config(output_dir: str) -> Optional[dict]:
    import yaml

    path = os.path.join(output_dir, RUN_CONFIG)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return yaml.safe_load(f) or {}


def _refuse(output_dir: str, why: str) -> ValueError:
    return ValueError(f"output_dir {output_dir} {why}. Pass --overwrite_output_dir true to start afresh there "
                      "(its checkpoints are deleted), or choose another output_dir.")


def plan_run(output_dir: str, config: dict, overwrite: bool = False,
             resume_from_checkpoint: Optional[str] = None) -> RunPlan:
    """What to do with `output_dir` (see the module docstring); ValueError when it must not be touched."""
    if not os.path.isdir(output_dir) or not set(os.listdir(output_dir)) - {LOCK}:
        return RunPlan("fresh")
    if overwrite:
        return RunPlan("fresh", clean=True)
    saved = read_run_config(output_dir)
    trained = bool(checkpoints(output_dir)) or any(os.path.exists(os.path.join(output_dir, f))
                                                   for f in (STATE, *WEIGHT_FILES))
    if saved is None:
        if trained:
            raise _refuse(output_dir, f"holds a run without {RUN_CONFIG} (another tool or an older version)")
        return RunPlan("fresh")
    changed, edited = changed_keys(saved, config), changed_data(saved, config)
    if (changed or edited) and not trained:
        logger.info("%s: replacing the %s of a run that never saved a checkpoint", output_dir, RUN_CONFIG)
        return RunPlan("fresh")
    if edited:
        raise _refuse(output_dir, "holds a run trained on other contents of " + ", ".join(edited)
                      + " (the file changed since; its sha256 is in run_config.yaml)")
    if changed:
        listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise _refuse(output_dir, f"holds a run with different arguments ({listed})")
    if checkpoint_problem(output_dir) is None:
        return RunPlan("finished")
    if resume_from_checkpoint:
        problem = checkpoint_problem(resume_from_checkpoint)
        if problem:
            raise ValueError(f"resume_from_checkpoint={resume_from_checkpoint} is incomplete ({problem}).")
        return RunPlan("resume", resume_from_checkpoint)
    plan = RunPlan("fresh")
    for folder in checkpoints(output_dir):
        problem = checkpoint_problem(folder)
        if problem is None:
            plan.action, plan.checkpoint = "resume", folder
            break
        plan.skipped.append((folder, problem))
    return plan


def prepare_output_dir(output_dir: str, plan: RunPlan, config: dict, main_process: bool = True) -> None:
    """Log the plan; on the main process clean an overwritten run and write run_config.yaml."""
    import yaml

    for folder, problem in plan.skipped:
        logger.warning("skipping incomplete checkpoint %s (%s)", folder, problem)
    if plan.action == "resume":
        logger.info("resuming the run in %s from %s", output_dir, plan.checkpoint)
    if not main_process or plan.action == "finished":
        return
    os.makedirs(output_dir, exist_ok=True)
    if plan.clean:
        logger.warning("--overwrite_output_dir: removing the checkpoints and run markers in %s", output_dir)
        for folder in checkpoints(output_dir):
            shutil.rmtree(folder)
        for name in (STATE, RUN_CONFIG):
            if os.path.exists(os.path.join(output_dir, name)):
                os.remove(os.path.join(output_dir, name))
    path = os.path.join(output_dir, RUN_CONFIG)
    if plan.action == "fresh" or not os.path.exists(path):
        with open(path + ".tmp", "w") as f:
            yaml.safe_dump(config, f, sort_keys=True)
        os.replace(path + ".tmp", path)
