# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Sweep a model over tasks x NFE budgets x feedback (binary / soft-masking) and write the paper's
Table 2 layout (Markdown) and a plot of accuracy against the NFE budget.

Usage:
    python -m sm_dream.evaluation.sweep --model_args pretrained=PATH[,peft=ADAPTER,merge_peft=true] \\
        --tasks humaneval_instruct humaneval_plus_instruct mbpp_instruct_smd mbpp_plus_instruct_smd \\
                gsm8k_instruct_smd math500_smd \\
        --nfe_budgets 0.25 0.5 1 --feedback binary sm --confirm_run_unsafe_code --output_dir outputs/sweep

    # the paper's comparison: a binary fine-tune as the baseline row, the SM fine-tune as the SM row
    python -m sm_dream.evaluation.sweep --model_args pretrained=SM_MODEL \\
        --baseline_model_args pretrained=BINARY_MODEL ...

    # data parallel (each process evaluates every W-th document), CPU or GPU:
    torchrun --nproc_per_node 8 -m sm_dream.evaluation.sweep ...

Each (feedback, budget) pair is one lm-eval run over all tasks (zero-shot, chat template, the
paper's sampling); its results are saved as `runs/<feedback>_nfe<budget>_<key>.json` (with the NFE,
tokens per second and SM parameters that `sm_dream` records), where the key hashes everything that
decides the numbers (model args, tasks, limit, shots, chat template, metadata, task folder). A
rerun with the same key reuses them unless `--overwrite`; a run with another key never does.
`table.md` and `accuracy_vs_nfe.png` are rebuilt at the end from this sweep's runs
(`--render_only`: from all saved runs, refusing a folder that holds two settings of the same cell).
Each model is loaded once. `--model_args` and `--metadata` take lm-eval's forms: `k=v,k2=v2` or JSON.
"""

import argparse
import hashlib
import json
import os
import sys
from dataclasses import replace
from fractions import Fraction
from typing import Dict, List, Optional, Tuple

from ..errors import UserError, debug_requested, strip_debug, user_errors

FEEDBACK_LABELS = {"binary": "Binary", "sm": "SM"}
# Metrics reported for a task, in order of preference (the first one a task has is used).
METRIC_PREFERENCE = ("pass@1", "exact_match,flexible-extract", "exact_match", "acc")
# The paper's tasks: code (Table 2) and math.
DEFAULT_TASKS = ("humaneval_instruct", "humaneval_plus_instruct", "mbpp_instruct_smd", "mbpp_plus_instruct_smd",
                 "gsm8k_instruct_smd", "math500_smd")


def parse_model_args(text: Optional[str], name: str = "--model_args") -> dict:
    """`k=v,k2=v2` or a JSON object (lm-eval's two forms) into typed values."""
    if not text:
        return {}
    if text.strip().startswith("{"):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{name} {text!r} is not valid JSON ({error}); use k=v,k2=v2 or a JSON object.") from error
        if not isinstance(parsed, dict):
            raise ValueError(f"{name} {text!r} must be a JSON object.")
        return parsed
    from lm_eval.utils import simple_parse_args_string

    return simple_parse_args_string(text)


def run_key(args, model_args: str) -> Tuple[str, dict]:
    """(short hash, fields) of everything that decides a run's numbers, apart from feedback and budget."""
    fields = {"model_args": parse_model_args(model_args), "tasks": sorted(args.tasks), "limit": args.limit,
              "num_fewshot": args.num_fewshot, "chat_template": not args.no_chat_template,
              "metadata": parse_model_args(args.metadata, "--metadata"), "include_path": args.include_path}
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12], fields


def budget_label(budget: float) -> str:
    """0.25 -> "1/4", 1 -> "1/1", 0.3 -> "3/10"."""
    fraction = Fraction(budget).limit_denominator(64)
    return f"{fraction.numerator}/{fraction.denominator}"


def primary_metric(task_results: dict) -> Optional[Tuple[str, float, Optional[float]]]:
    """(metric key, value, stderr) of a task's lm-eval results, by `METRIC_PREFERENCE`: an entry with a
    filter ("exact_match,flexible-extract") must match exactly, one without matches any filter."""
    keys = [k for k in task_results if "," in k and "_stderr" not in k and isinstance(task_results[k], (int, float))]
    for wanted in METRIC_PREFERENCE:
        for key in keys:
            if key == wanted or ("," not in wanted and key.split(",")[0] == wanted):
                name, _, filt = key.partition(",")
                stderr = task_results.get(f"{name}_stderr,{filt}")
                return key, float(task_results[key]), float(stderr) if isinstance(stderr, (int, float)) else None
    return None


def run_records(run: dict) -> List[dict]:
    """One record per task of a saved run: feedback, budget, task, metric, value, stderr, NFE, speed."""
    records = []
    info = run.get("config", {}).get("sm_dream", {}).get("tasks", {})
    for task, results in sorted(run.get("results", {}).items()):
        metric = primary_metric(results)
        if metric is None:
            continue
        stats = info.get(task, {})
        records.append(dict(feedback=run["feedback"], nfe_budget=run["nfe_budget"], task=task, metric=metric[0],
                            value=metric[1], stderr=metric[2], nfe_per_sample=stats.get("nfe_per_sample"),
                            tokens_per_second=stats.get("tokens_per_second")))
    return records


def _cell(value: Optional[float], stderr: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}" + (f" (± {100 * stderr:.1f})" if stderr else "")


def markdown_table(records: List[dict]) -> str:
    """Table 2 layout: rows NFE budget x feedback (+ a Gain row), columns tasks, values in %."""
    tasks = sorted({r["task"] for r in records})
    budgets = sorted({r["nfe_budget"] for r in records})
    feedbacks = [f for f in FEEDBACK_LABELS if any(r["feedback"] == f for r in records)]
    value = {(r["nfe_budget"], r["feedback"], r["task"]): r for r in records}
    lines = ["| NFE budget | Feedback | " + " | ".join(tasks) + " |", "|---|---|" + "---|" * len(tasks)]
    for budget in budgets:
        for i, feedback in enumerate(feedbacks):
            cells = [value.get((budget, feedback, t)) for t in tasks]
            row = [_cell(c["value"], c["stderr"]) if c else "-" for c in cells]
            lines.append(f"| {budget_label(budget) if i == 0 else ''} | {FEEDBACK_LABELS[feedback]} | "
                         + " | ".join(row) + " |")
        if len(feedbacks) == 2:
            gains = []
            for t in tasks:
                a, b = value.get((budget, "binary", t)), value.get((budget, "sm", t))
                gains.append(f"*{100 * (b['value'] - a['value']):+.1f}*" if a and b else "-")
            lines.append("| | *Gain* | " + " | ".join(gains) + " |")
    metrics = sorted({f"{r['task']}: {r['metric']}" for r in records})
    return "\n".join(lines) + "\n\nAccuracy in %, (± lm-eval's standard error). Metrics: " + "; ".join(metrics) + ".\n"


def plot_accuracy(records: List[dict], path: str) -> Optional[str]:
    """One panel per task: accuracy (%) against NFE budget (log2 axis), one line per feedback."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install sm_dream[plots]): no plot written.")
        return None
    tasks = sorted({r["task"] for r in records})
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for feedback, label in FEEDBACK_LABELS.items():
            points = sorted((r["nfe_budget"], 100 * r["value"]) for r in records
                            if r["task"] == task and r["feedback"] == feedback)
            if points:
                ax.plot(*zip(*points), marker="o", label=label)
        top = max(100 * r["value"] for r in records if r["task"] == task)
        ax.set_ylim(0, max(5.0, min(100.0, 1.15 * top)))
        budgets = sorted({r["nfe_budget"] for r in records if r["task"] == task})
        ax.set_xscale("log", base=2)
        ax.set_xticks(budgets, [budget_label(b) for b in budgets])
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("NFE budget")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%)")
    axes[0][-1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def render(output_dir: str, keys: Optional[List[str]] = None) -> Tuple[str, Optional[str]]:
    """Rebuild table.md and accuracy_vs_nfe.png from output_dir/runs/*.json: the runs with one of
    `keys`, or all of them if they do not disagree (two settings for one cell raise `ValueError`)."""
    runs_dir = os.path.join(output_dir, "runs")
    records, source = [], {}
    for name in sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []:
        if not name.endswith(".json"):
            continue
        with open(os.path.join(runs_dir, name), encoding="utf-8") as f:
            run = json.load(f)
        if keys is not None and run.get("key") not in keys:
            continue
        for record in run_records(run):
            cell = (record["feedback"], record["nfe_budget"], record["task"])
            if cell in source:
                raise ValueError(f"{runs_dir} holds two runs of {cell} with different settings ({source[cell]} and "
                                 f"{name}); render one sweep per --output_dir, or delete the stale runs.")
            source[cell] = name
            records.append(record)
    if not records:
        raise ValueError(f"No results in {runs_dir}: run the sweep first (without --render_only).")
    table = os.path.join(output_dir, "table.md")
    with open(table, "w", encoding="utf-8") as f:
        f.write(markdown_table(records))
    return table, plot_accuracy(records, os.path.join(output_dir, "accuracy_vs_nfe.png"))


def evaluate_run(lm, args, task_manager, budget: float, feedback: str) -> Optional[dict]:
    """One lm-eval run of all tasks at one budget and feedback; the results dict on rank 0."""
    from lm_eval import simple_evaluate

    lm.settings = replace(lm.settings, nfe_budget=budget, steps=None, soft_masking=feedback == "sm")
    lm.stats.clear()
    results = simple_evaluate(
        model=lm, tasks=list(args.tasks), task_manager=task_manager, num_fewshot=args.num_fewshot, limit=args.limit,
        apply_chat_template=not args.no_chat_template, confirm_run_unsafe_code=args.confirm_run_unsafe_code,
        log_samples=False, bootstrap_iters=args.bootstrap_iters,
    )
    if results is None:
        return None
    keep = {k: results[k] for k in ("results", "configs", "n-samples", "versions") if k in results}
    keep["config"] = {k: v for k, v in results.get("config", {}).items() if k in ("model_args", "sm_dream", "limit")}
    return {**keep, "feedback": feedback, "nfe_budget": budget}


def sweep(args) -> List[str]:
    """Run every (feedback, budget) pair that has no saved results with the same key yet; one model
    load per model. Returns the keys of this sweep's runs."""
    from lm_eval.tasks import TaskManager

    from .lm_eval_model import SMDreamLM
    from .registration import with_sm_dream_tasks

    runs_dir = os.path.join(args.output_dir, "runs")
    os.makedirs(runs_dir, exist_ok=True)
    metadata = parse_model_args(args.metadata, "--metadata")
    task_manager = TaskManager(include_path=with_sm_dream_tasks(args.include_path), metadata=metadata)
    models: Dict[str, List[str]] = {}  # model args -> feedback rows that use them
    for feedback in args.feedback:
        use_baseline = feedback == "binary" and args.baseline_model_args
        models.setdefault(args.baseline_model_args if use_baseline else args.model_args, []).append(feedback)
    keys = []
    for model_args, feedbacks in models.items():
        key, fields = run_key(args, model_args)
        keys.append(key)
        pending = [(f, b) for f in feedbacks for b in args.nfe_budgets
                   if args.overwrite or not os.path.exists(_run_path(runs_dir, f, b, key))]
        if not pending:
            continue
        lm = SMDreamLM(**{"batch_size": args.batch_size, "device": args.device, **fields["model_args"]})
        for feedback, budget in pending:
            run = evaluate_run(lm, args, task_manager, budget, feedback)
            if run is not None:
                run["config"]["model_args"] = model_args
                run.update(key=key, key_fields=fields)
                with open(_run_path(runs_dir, feedback, budget, key), "w", encoding="utf-8") as f:
                    json.dump(run, f, indent=1, default=str)
        del lm
    return keys


def _run_path(runs_dir: str, feedback: str, budget: float, key: str) -> str:
    return os.path.join(runs_dir, f"{feedback}_nfe{budget:g}_{key}.json")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_args", help="sm_dream model args (k=v,...), e.g. pretrained=PATH,peft=ADAPTER")
    parser.add_argument("--baseline_model_args", help="model args of the binary row (default: --model_args, SM off)")
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS))
    parser.add_argument("--nfe_budgets", nargs="+", type=float, default=[0.25, 0.5, 1.0])
    parser.add_argument("--feedback", nargs="+", choices=list(FEEDBACK_LABELS), default=list(FEEDBACK_LABELS))
    parser.add_argument("--output_dir", default="outputs/sweep")
    parser.add_argument("--limit", type=float, default=None, help="documents per task (testing only)")
    parser.add_argument("--num_fewshot", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--include_path", default=None, help="an extra folder of task YAMLs")
    parser.add_argument("--metadata", default=None,
                        help="task metadata, k=v,... or JSON, e.g. '{\"gsm8k_file\": \"test.jsonl\"}'")
    parser.add_argument("--bootstrap_iters", type=int, default=1000)
    parser.add_argument("--no_chat_template", action="store_true",
                        help="plain prompts (the paper uses the chat template)")
    parser.add_argument("--confirm_run_unsafe_code", action="store_true", help="required by the code tasks")
    parser.add_argument("--overwrite", action="store_true", help="rerun pairs that already have results")
    parser.add_argument("--render_only", action="store_true", help="only rebuild table.md and the plot")
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    with user_errors(debug=debug_requested(argv)):  # one `error:` line and status 2 (--debug: traceback)
        _main(strip_debug(argv))


def _main(argv: List[str]) -> None:
    args = build_parser().parse_args(argv)
    if not args.render_only:
        if not args.model_args:
            raise UserError("--model_args is required (e.g. pretrained=PATH); only --render_only works without it.")
        bad = [b for b in args.nfe_budgets if not b > 0]
        if bad:
            raise UserError(f"--nfe_budgets {bad}: every budget must be > 0 (e.g. 0.25 0.5 1).")
        keys = sweep(args)
    else:
        keys = None
    if int(os.environ.get("RANK", "0")) == 0:
        table, plot = render(args.output_dir, keys)
        print(open(table, encoding="utf-8").read())
        print(f"wrote {table}" + (f" and {plot}" if plot else ""))


if __name__ == "__main__":
    main()
