"""Shared helpers of the lm-eval tests: a tiny random sm_dream checkpoint and small local task files."""

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile

import torch

from sm_dream import SoftMaskDreamForDiffusionLM
from sm_dream.tiny import load_dream_tokenizer, tiny_config

VENV_BIN = os.path.dirname(sys.executable)
# Offline, and only sm_dream's tasks indexed: lm-eval's ~15k built-in YAMLs cost 15-30 s per start.
CLI_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "SM_DREAM_LM_EVAL_TASKS": "sm_dream"}


def save_tiny_model(path, seed: int = 0) -> str:
    """A 2-layer random sm_dream model with the released vocabulary and the shipped Dream tokenizer.
    Its rows are peaked (initializer_range 0.2, 10x the default): over 152k near-uniform logits the top
    two would tie to the last ulp, and batched vs single decoding could then differ by the BLAS kernel."""
    torch.manual_seed(seed)
    model = SoftMaskDreamForDiffusionLM(tiny_config(sm_init_scale=0.5, initializer_range=0.2)).eval()
    model.save_pretrained(path)
    load_dream_tokenizer().save_pretrained(path)
    return str(path)


_SHARED = {}


def shared_tiny_model() -> str:
    """One tiny checkpoint for the whole test session (saving one costs seconds), removed at exit."""
    if "path" not in _SHARED:
        folder = tempfile.mkdtemp(prefix="sm_dream_tiny_")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _SHARED["path"] = save_tiny_model(folder)
    return _SHARED["path"]


def write_jsonl(path, rows) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    return str(path)


def run_cli(args, cwd, timeout=600, env=None):
    """Run a command of the venv (e.g. ["lm_eval", ...]) offline; returns the CompletedProcess."""
    command = [os.path.join(VENV_BIN, args[0]), *args[1:]]
    full_env = {**os.environ, **CLI_ENV, **(env or {})}
    return subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def read_results(output_dir) -> dict:
    """The aggregated results JSON that `lm_eval --output_path DIR` wrote (one run)."""
    found = [os.path.join(root, f) for root, _, files in os.walk(output_dir) for f in files
             if f.startswith("results_") and f.endswith(".json")]
    if len(found) != 1:
        raise AssertionError(f"expected one results file under {output_dir}, found {found}")
    with open(found[0], encoding="utf-8") as f:
        return json.load(f)


def read_samples(output_dir, task: str) -> list:
    found = [os.path.join(root, f) for root, _, files in os.walk(output_dir) for f in files
             if f.startswith(f"samples_{task}_") and f.endswith(".jsonl")]
    if len(found) != 1:
        raise AssertionError(f"expected one samples file for {task} under {output_dir}, found {found}")
    with open(found[0], encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_task(name: str, **metadata):
    """One of sm_dream's shipped tasks, as lm-eval loads it (`metadata`: e.g. its local data file)."""
    from lm_eval.tasks import TaskManager

    from sm_dream.evaluation.registration import task_dir

    manager = TaskManager(include_path=task_dir(), include_defaults=False, metadata=metadata)
    return manager.load([name])["tasks"][name]


def score_responses(task, pairs) -> list:
    """(filtered answer, scores) of each (response, doc) pair, as lm-eval's evaluator computes them:
    the task's filter pipelines on the responses, then its process_results on the filtered answers."""
    from lm_eval.api.instance import Instance

    instances = [Instance("generate_until", doc, ("", {}), idx=0, resps=[response]) for response, doc in pairs]
    for pipeline in task._filters:  # what Task.apply_filters runs on the task's own instances
        pipeline.apply(instances)
    return [(answer, task.process_results(inst.doc, [answer]))
            for inst in instances for answer in inst.filtered_resps.values()]
