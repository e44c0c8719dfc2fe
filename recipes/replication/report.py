# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""The report of the small replication: Markdown tables (report.md) and curves (report.png).

Per corpus, every number is a mean over the continuation seeds with its sample standard deviation
(ddof 1; 0 for one seed). Each comparison of the arms is a paired difference SM arm - binary arm per
held-out window or prompt, with a 95% bootstrap interval over items and seeds and a verdict
(`replication.stats`).
"""

import math
import statistics
import sys
from fractions import Fraction
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

if __package__:
    from .claims import claims_markdown
    from .stats import bootstrap_ci, paired_differences, verdict
else:  # run as a script (see the end of this file): import the package next to this file
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from replication.claims import claims_markdown
    from replication.stats import bootstrap_ci, paired_differences, verdict

HELDOUT_ROWS = (  # (label, arm, key of the evaluation)
    ("binary arm", "binary", "nll_binary"),
    ("SM arm, two passes (SM input)", "sm", "nll_sm"),
    ("SM arm, one pass (binary input)", "sm", "nll_binary"),
)
SM_PARAMETERS = ("w_s", "w_a", "w_b")
ARM_NAMES = ("binary", "sm")


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    values = list(values)
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(values: Sequence[float], digits: int = 4) -> str:
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_ci(ci: Tuple[float, float, float], digits: int = 4) -> str:
    return f"{ci[0]:+.{digits}f} [{ci[1]:+.{digits}f}, {ci[2]:+.{digits}f}]"


def budget_label(budget: float) -> str:
    return str(Fraction(budget).limit_denominator(64))


def seeds_of(corpus: Dict) -> List[Dict]:
    return list(corpus["seeds"].values())


def final_values(corpus: Dict, arm: str, key: str) -> List[float]:
    return [seed[arm]["final"][key] for seed in seeds_of(corpus)]


def compare(sm_rows, binary_rows, args: Dict, lower_is_better: bool) -> Dict:
    """Paired per-item differences (seeds x items), their bootstrap interval and the verdict."""
    diffs = paired_differences(sm_rows, binary_rows)
    est, low, high = bootstrap_ci(diffs, resamples=args["bootstrap_resamples"])
    return {"per_seed": [statistics.fmean(d) for d in diffs], "ci": (est, low, high),
            "verdict": verdict(low, high, lower_is_better)}


def heldout_comparison(corpus: Dict, args: Dict) -> Dict:
    seeds = seeds_of(corpus)
    return compare([s["sm"]["final"]["nll_sm_rows"] for s in seeds],
                   [s["binary"]["final"]["nll_binary_rows"] for s in seeds], args, lower_is_better=True)


def generation_comparisons(corpus: Dict, args: Dict) -> Dict[float, Dict]:
    """{budget: comparison of the per-prompt generation NLL} (stdlib)."""
    seeds = seeds_of(corpus)
    return {b: compare([s["generation"]["sm"][str(b)]["nll_rows"] for s in seeds],
                       [s["generation"]["binary"][str(b)]["nll_rows"] for s in seeds], args, lower_is_better=True)
            for b in args["nfe_budgets"]}


def task_cells(corpus: Dict, args: Dict) -> Dict[Tuple[str, float], Dict]:
    """{(alg, budget): per-arm accuracies with intervals and the paired comparison} (structured)."""
    seeds = seeds_of(corpus)
    cells = {}
    for alg in args["task_algs"]:
        for b in args["nfe_budgets"]:
            correct = {arm: [s["generation"][arm][alg][str(b)]["correct"] for s in seeds] for arm in ARM_NAMES}
            cell = {arm: bootstrap_ci(c, resamples=args["bootstrap_resamples"]) for arm, c in correct.items()}
            cell["steps"] = seeds[0]["generation"]["binary"][alg][str(b)]["steps"]
            cell["diff"] = compare(correct["sm"], correct["binary"], args, lower_is_better=False)
            cells[(alg, b)] = cell
    return cells


def heldout_section(name: str, corpus: Dict, args: Dict) -> List[str]:
    base = corpus["pretrain"]["final"]["nll_binary"]
    steps = seeds_of(corpus)[0]["sm"]["final"]["final_steps"]
    lines = [f"### Held-out NLL after continuation (mean of the evaluations at steps {', '.join(map(str, steps))})", "",
             "| model | NLL (nats/token) | perplexity |", "| --- | --- | --- |",
             f"| pretrained base (start of both arms) | {base:.4f} | {math.exp(base):.2f} |"]
    for label, arm, key in HELDOUT_ROWS:
        nll = final_values(corpus, arm, key)
        lines.append(f"| {label} | {fmt(nll)} | {fmt([math.exp(v) for v in nll], 2)} |")
    c = heldout_comparison(corpus, args)
    d = c["per_seed"]
    lines += ["", f"Paired difference SM arm (two passes) - binary arm: {fmt(d)} nats/token over seeds; "
              f"SM is lower in {sum(x < 0 for x in d)} of {len(d)} seeds "
              f"(per seed: {', '.join(f'{x:+.4f}' for x in d)}). "
              f"Per window, bootstrap over windows and seeds: {fmt_ci(c['ci'])} (95%): **{c['verdict']}**.", ""]
    return lines


def parameter_section(corpus: Dict) -> List[str]:
    init = corpus["pretrain"]["final"]  # the base never trains its SM parameters
    lines = ["### Learned SM parameters (SM arm, end of continuation)", "",
             "| parameter | initial | final |", "| --- | --- | --- |"]
    lines += [f"| {p} | {init[p]:.4f} | {fmt(final_values(corpus, 'sm', p))} |" for p in SM_PARAMETERS]
    return lines + [""]


def generation_section(corpus: Dict, args: Dict) -> List[str]:
    seeds = seeds_of(corpus)
    n = args["gen_new_tokens"]
    ref = [s["generation"]["reference"] for s in seeds]
    lines = [f"### Generation: {n} tokens after a {args['seq_len'] - n}-token held-out prompt "
             f"({len(ref[0]['nll_rows'])} prompts per seed, alg {args['gen_alg']}, temperature "
             f"{args['gen_temperature']}, top_p {args['gen_top_p']})", "",
             "NLL: held-out NLL of the continuation given the prompt under the seed's final binary model; "
             "the difference is paired per prompt, with a 95% bootstrap interval over prompts and seeds. "
             "Unigram entropy (bits) and distinct-2 show whether a low NLL comes from repetitive text; the "
             f"reference continuations have NLL {fmt([r['nll'] for r in ref])}, unigram entropy "
             f"{fmt([r['unigram_entropy'] for r in ref], 3)} and distinct-2 "
             f"{fmt([r['distinct2'] for r in ref], 3)}.", "",
             "| NFE budget | steps | binary NLL | SM NLL | SM - binary [95% CI] | verdict | entropy binary / SM | "
             "distinct-2 binary / SM |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    comparisons = generation_comparisons(corpus, args)
    for b in args["nfe_budgets"]:
        m = {arm: [s["generation"][arm][str(b)] for s in seeds] for arm in ARM_NAMES}
        c = comparisons[b]
        lines.append(
            f"| {budget_label(b)} | {m['binary'][0]['steps']} | {fmt([x['nll'] for x in m['binary']])} | "
            f"{fmt([x['nll'] for x in m['sm']])} | {fmt_ci(c['ci'])} | {c['verdict']} | "
            + " / ".join(f"{statistics.fmean(x['unigram_entropy'] for x in m[a]):.3f}" for a in ARM_NAMES) + " | "
            + " / ".join(f"{statistics.fmean(x['distinct2'] for x in m[a]):.3f}" for a in ARM_NAMES) + " |")
    return lines + [""]


def task_section(corpus: Dict, args: Dict, name: str = "structured") -> List[str]:
    prompts = len(
        seeds_of(corpus)[0]["generation"]["binary"][args["task_algs"][0]][str(args["nfe_budgets"][0])]["correct"])
    checked = args.get("task_length", 4) if name == "tasks" else args["task_new_tokens"]
    lines = [f"### Exact-match accuracy: {checked} checked tokens after a held-out prompt "
             f"({prompts} prompts per seed, greedy tokens)", "",
             "Accuracy: share of prompts whose continuation is exactly the only correct one, mean over seeds "
             "with a 95% bootstrap interval over prompts and seeds; the difference is paired per prompt.", "",
             "| unmasking | NFE budget | steps | binary | SM | SM - binary [95% CI] | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for (alg, b), cell in task_cells(corpus, args).items():
        arm = {a: f"{cell[a][0]:.3f} [{cell[a][1]:.3f}, {cell[a][2]:.3f}]" for a in ARM_NAMES}
        lines.append(f"| {alg} | {budget_label(b)} | {cell['steps']} | {arm['binary']} | {arm['sm']} | "
                     f"{fmt_ci(cell['diff']['ci'], 3)} | {cell['diff']['verdict']} |")
    return lines + [""]


def corpus_section(name: str, corpus: Dict, args: Dict) -> List[str]:
    c = corpus["corpus"]
    extra = ""
    if "heldout_lines_in_train" in c:
        extra = f" {100 * c['heldout_lines_in_train']:.1f}% of the held-out lines also occur in the training text."
    lines = [f"## Corpus `{name}`: {c['source']}", "",
             f"{c['train_files']} train texts ({c['train_tokens']} tokens), held-out {c['heldout_tokens']} tokens; "
             f"BPE vocab {c['vocab_size']}.{extra}", ""]
    lines += heldout_section(name, corpus, args) + parameter_section(corpus)
    if name == "stdlib":
        lines += generation_section(corpus, args)
    else:
        lines += task_section(corpus, args, name)
    if name == "tasks":
        lines += ablation_section(corpus, args) + sweep_section(corpus) + schedule_section(corpus, args)
    return lines


def ablation_section(corpus: Dict, args: Dict) -> List[str]:
    """C5 / C6: every trained arm of the seeds that have the ablation arms (mean over those seeds)."""
    seeds = seeds_of(corpus)
    trained = [a for a in seeds[0] if isinstance(seeds[0][a], dict) and "settings" in seeds[0][a]]
    arms = [a for a in ARM_NAMES if a in trained] + sorted(a for a in trained if a not in ARM_NAMES)
    if len(arms) <= len(ARM_NAMES):
        return []
    have = [s for s in seeds if all(a in s for a in arms)]
    budgets = [str(b) for b in args["nfe_budgets"]]
    lines = [f"### Ablation arms (claims C5, C6): {len(have)} seeds", "",
             "Held-out NLL with two passes (one pass for the binary arm); exact match per NFE budget, "
             f"{' / '.join(args['task_algs'])} unmasking, mean over the seeds.", "",
             "| arm | p_sm | k | held-out NLL | " + " | ".join(f"NFE {budget_label(float(b))}" for b in budgets) + " |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in budgets) + " |"]
    for arm in arms:
        settings = have[0][arm]["settings"]
        key = "nll_binary" if settings["p_sm"] == 0 else "nll_sm"
        acc = [" / ".join(f"{statistics.fmean(s['generation'][arm][alg][b]['accuracy'] for s in have):.3f}"
                          for alg in args["task_algs"]) for b in budgets]
        lines.append(f"| {arm} | {settings['p_sm']:g} | {settings['sm_top_k']} | "
                     f"{fmt([s[arm]['final'][key] for s in have])} | " + " | ".join(acc) + " |")
    return lines + [""]


def sweep_section(corpus: Dict) -> List[str]:
    """C7: per decoding setting, accuracy, NFE and tokens/s of both arms (mean over seeds)."""
    seeds = [s for s in seeds_of(corpus) if "sweep" in s.get("generation", {})]
    if not seeds:
        return []
    lines = [f"### Decoding sweep (claim C7): {len(seeds)} seeds, greedy", "",
             "Tokens/s: generated tokens / wall seconds of the call, one thread, on a shared machine (noisy).", "",
             "| setting | binary | SM | SM - binary | NFE binary / SM | tokens/s binary / SM |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name in seeds[0]["generation"]["sweep"]:
        cell = {arm: [s["generation"]["sweep"][name][arm] for s in seeds] for arm in ARM_NAMES}
        mean = {arm: {k: statistics.fmean(c[k] for c in cell[arm]) for k in ("accuracy", "nfe", "tokens_per_s")}
                for arm in ARM_NAMES}
        lines.append(f"| {name} | {mean['binary']['accuracy']:.3f} | {mean['sm']['accuracy']:.3f} | "
                     f"{mean['sm']['accuracy'] - mean['binary']['accuracy']:+.3f} | "
                     f"{mean['binary']['nfe']:.2f} / {mean['sm']['nfe']:.2f} | "
                     f"{mean['binary']['tokens_per_s']:.0f} / {mean['sm']['tokens_per_s']:.0f} |")
    return lines + [""]


def schedule_section(corpus: Dict, args: Dict) -> List[str]:
    """C8: the SM arm's exact match with SM in the first or the last 80% of the steps."""
    seeds = [s for s in seeds_of(corpus) if "schedules" in s.get("generation", {})]
    if not seeds:
        return []
    lines = [f"### SM schedules (claim C8): SM arm, {len(seeds)} seeds, greedy", "",
             "Factors: the schedule's factor on lambda at each step (step 0 has no feedback to scale).", "",
             "| unmasking | NFE budget | steps | factors sm_then_binary / binary_then_sm | sm_then_binary | "
             "binary_then_sm | SM, no schedule |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for alg in args["task_algs"]:
        for b in args["nfe_budgets"]:
            cells = {n: [s["generation"]["schedules"][n][alg][str(b)] for s in seeds]
                     for n in ("sm_then_binary", "binary_then_sm")}
            plain = statistics.fmean(s["generation"]["sm"][alg][str(b)]["accuracy"] for s in seeds)
            factors = " / ".join(",".join(f"{f:g}" for f in cells[n][0]["factors"]) for n in cells)
            lines.append(f"| {alg} | {budget_label(b)} | {cells['sm_then_binary'][0]['steps']} | {factors} | "
                         + " | ".join(f"{statistics.fmean(c['accuracy'] for c in cells[n]):.3f}" for n in cells)
                         + f" | {plain:.3f} |")
    return lines + [""]


QUICK_NOTE = ("**Pipeline check (`--quick`): a few steps on a tiny model, to show that every stage runs. "
              "Its numbers support no claim about soft-masking; `make replicate` gives the comparison.**")
MIN_SPAN = {"nll": 0.02, "accuracy": 0.1}  # smallest y-range of a difference panel (nats/token; accuracy)


def is_quick(results: Dict) -> bool:
    """A `--quick` run (a pipeline check), from its results."""
    return bool(results.get("quick")) or "--quick" in str(results.get("command", "")).split()


def _min_span(ax, span: float) -> None:
    """Widen the y-axis to at least `span` around 0 (matplotlib would otherwise zoom differences of
    1e-7, float noise between two identical arms, into a full-height spike)."""
    low, high = ax.get_ylim()
    ax.set_ylim(min(low, -span / 2), max(high, span / 2))


def markdown_report(results: Dict) -> str:
    args, timing = results["args"], results["timing"]
    versions = results.get("versions", {})
    load = results.get("load_average")
    head = [
        "# Small replication: soft-masking vs binary masking", "",
        *([QUICK_NOTE, ""] if is_quick(results) else []),
        f"Command: `{results.get('command', 'recipes/replicate_small.py')}`", "",
        f"Model: Dream architecture, hidden {args['hidden_size']}, {args['num_hidden_layers']} layers. Pretraining "
        f"{args['pretrain_steps']} steps (binary), then {args['continue_steps']} steps per arm, batch "
        f"{args['batch_size']} x {args['seq_len']} tokens, t ~ U({args['t_low']}, {args['t_high']}), p_sm "
        f"{args['p_sm']}, k {args['sm_top_k']}, lr {args['lr_backbone']} / SM {args['lr_sm']}, "
        f"{args.get('warmup_steps', 0)} warmup steps, " + (
            f"linear cooldown over the last {args['cooldown_steps']} steps" if args.get("cooldown_steps")
            else "then constant")
        + f". Seeds {args['seeds']} "
        f"(mean ± std over seeds). Wall time {timing['total_s'] / 60:.1f} min with {args['workers']} worker "
        f"process(es)" + (f", load average {load[0]:.1f} at the end" if load else "") + ". Versions: "
        + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".", "",
    ] + claims_markdown(results) + [
        "## Summary: SM arm - binary arm, 95% bootstrap intervals over items and seeds", "",
        "| corpus | measure | SM - binary [95% CI] | verdict | seeds with SM better |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, corpus in results["corpora"].items():
        c = heldout_comparison(corpus, args)
        head.append(f"| {name} | held-out NLL (nats/token) | {fmt_ci(c['ci'])} | {c['verdict']} | "
                    f"{sum(x < 0 for x in c['per_seed'])} of {len(c['per_seed'])} |")
        if name == "stdlib":
            for b, c in generation_comparisons(corpus, args).items():
                head.append(f"| {name} | generation NLL, NFE {budget_label(b)} | {fmt_ci(c['ci'])} | {c['verdict']} | "
                            f"{sum(x < 0 for x in c['per_seed'])} of {len(c['per_seed'])} |")
        else:
            for (alg, b), cell in task_cells(corpus, args).items():
                c = cell["diff"]
                head.append(f"| {name} | exact match, {alg}, NFE {budget_label(b)} | {fmt_ci(c['ci'], 3)} | "
                            f"{c['verdict']} | {sum(x > 0 for x in c['per_seed'])} of {len(c['per_seed'])} |")
    head.append("")
    body = []
    for name, corpus in results["corpora"].items():
        body += corpus_section(name, corpus, args)
    return "\n".join(head + body)


def series(corpus: Dict, arm: str, key: str) -> Tuple[List[int], List[List[float]]]:
    """(steps, values per step across seeds) of `key` in the arm's continuation histories."""
    histories = [[h for h in seed[arm]["history"] if key in h] for seed in seeds_of(corpus)]
    steps = [h["step"] for h in histories[0]]
    return steps, [[hist[i][key] for hist in histories] for i in range(len(steps))]


def _band(ax, steps, values, label, style="-", start=None, color=None):
    """Mean line with a min-max band over seeds; `start` prepends (0, value) to the curve."""
    mean = [statistics.fmean(v) for v in values]
    low, high = [min(v) for v in values], [max(v) for v in values]
    if start is not None:
        steps, mean, low, high = [0] + steps, [start] + mean, [start] + low, [start] + high
    (line,) = ax.plot(steps, mean, style, label=label, color=color)
    ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2)


def _plot_heldout_delta(ax, name: str, corpus: Dict, args: Dict) -> None:
    """Held-out NLL minus the binary arm's per step (band = min-max over seeds), and the final
    paired difference with its bootstrap interval."""
    steps, reference = series(corpus, "binary", "nll_binary")
    for (label, arm, key), color in zip(HELDOUT_ROWS[1:], ("C1", "C2")):
        delta = [[a - b for a, b in zip(v, r)] for v, r in zip(series(corpus, arm, key)[1], reference)]
        _band(ax, steps, delta, f"{label} - binary arm", "--" if key == "nll_binary" else "-", start=0.0, color=color)
    est, low, high = heldout_comparison(corpus, args)["ci"]
    final_steps = seeds_of(corpus)[0]["sm"]["final"]["final_steps"]
    ax.errorbar([statistics.fmean(final_steps)], [est], yerr=[[est - low], [high - est]], fmt="s", color="k",
                capsize=3, label=f"final (steps {final_steps[0]}-{final_steps[-1]}), 95% CI")
    ax.axhline(0.0, color="gray", lw=0.8)
    _min_span(ax, MIN_SPAN["nll"])
    ax.set(title=f"held-out NLL minus the binary arm's: {name}", xlabel="continuation step")
    ax.legend(fontsize=7)


def _plot_generation(ax, corpus: Dict, args: Dict) -> None:
    budgets = args["nfe_budgets"]
    comparisons = generation_comparisons(corpus, args)
    for i, b in enumerate(budgets):
        per_seed = comparisons[b]["per_seed"]
        ax.plot([i] * len(per_seed), per_seed, "o", color="C1", alpha=0.5, label="per seed" if i == 0 else None)
        est, low, high = comparisons[b]["ci"]
        ax.errorbar([i + 0.15], [est], yerr=[[est - low], [high - est]], fmt="s", color="k", capsize=3,
                    label="mean, 95% CI" if i == 0 else None)
    ax.axhline(0.0, color="gray", lw=0.8)
    _min_span(ax, MIN_SPAN["nll"])
    ax.set_xticks(range(len(budgets)), [budget_label(b) for b in budgets])
    ax.set(title="stdlib: generation NLL, SM arm minus binary arm", xlabel="NFE budget (steps / new tokens)")
    ax.legend(fontsize=7)


def _plot_task(ax_acc, ax_diff, corpus: Dict, args: Dict, name: str = "structured") -> None:
    cells = task_cells(corpus, args)
    budgets = args["nfe_budgets"]
    for j, alg in enumerate(args["task_algs"]):
        for k, arm in enumerate(ARM_NAMES):
            x = [i + 0.1 * (2 * j + k) - 0.15 for i in range(len(budgets))]
            ci = [cells[(alg, b)][arm] for b in budgets]
            ax_acc.errorbar(x, [c[0] for c in ci], yerr=[[c[0] - c[1] for c in ci], [c[2] - c[0] for c in ci]],
                            fmt="o-" if arm == "sm" else "s--", color=f"C{j}", alpha=1.0 if arm == "sm" else 0.6,
                            capsize=3, label=f"{arm} arm, {alg}")
        x = [i + 0.1 * j for i in range(len(budgets))]
        ci = [cells[(alg, b)]["diff"]["ci"] for b in budgets]
        ax_diff.errorbar(x, [c[0] for c in ci], yerr=[[c[0] - c[1] for c in ci], [c[2] - c[0] for c in ci]],
                         fmt="s", color=f"C{j}", capsize=3, label=f"{alg}, 95% CI")
    for ax in (ax_acc, ax_diff):
        ax.set_xticks(range(len(budgets)), [budget_label(b) for b in budgets])
        ax.set(xlabel="NFE budget (steps / new tokens)")
        ax.legend(fontsize=7)
    ax_diff.axhline(0.0, color="gray", lw=0.8)
    _min_span(ax_diff, MIN_SPAN["accuracy"])
    ax_acc.set(title=f"{name}: exact-match accuracy, 95% CI")
    ax_diff.set(title=f"{name}: accuracy, SM arm minus binary arm")


def plot_report(results: Dict, path: Path) -> None:
    """Per corpus the held-out NLL difference over steps, w_s over steps, and the generation
    comparison per NFE budget (stdlib NLL; structured exact-match accuracy and its difference)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    args, corpora = results["args"], results["corpora"]
    rows = 3 if len(corpora) > 2 else 2
    fig = Figure(figsize=(15, 4.25 * rows))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.07, top=0.9, wspace=0.25, hspace=0.35)
    axes = fig.subplots(rows, 3).flatten()
    panels = iter(axes)
    for name, corpus in corpora.items():
        _plot_heldout_delta(next(panels), name, corpus, args)
    ax = next(panels)
    for i, (name, corpus) in enumerate(corpora.items()):
        _band(ax, *series(corpus, "sm", "w_s"), f"{name}: SM arm w_s", start=corpus["pretrain"]["final"]["w_s"],
              color=f"C{i}")
    ax.set(title="learned w_s (band = min-max over seeds)", xlabel="continuation step")
    ax.legend(fontsize=7)
    if "stdlib" in corpora:
        _plot_generation(next(panels), corpora["stdlib"], args)
    for name in ("tasks", "structured"):
        if name in corpora:
            _plot_task(next(panels), next(panels), corpora[name], args, name)
    for ax in panels:
        ax.set_visible(False)
    fig.suptitle(("PIPELINE CHECK (--quick), NO CLAIMS. " if is_quick(results) else "")
                 + f"Soft-masking vs binary masking, {len(args['seeds'])} seed(s): curves = mean over seeds, "
                 "bars = 95% bootstrap intervals over items and seeds")
    fig.savefig(path, dpi=90)


def write_report(results: Dict, output_dir: Path) -> None:
    """report.md, and report.png when matplotlib (the `plots` extra) is installed."""
    (Path(output_dir) / "report.md").write_text(markdown_report(results))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    plot_report(results, Path(output_dir) / "report.png")


if __name__ == "__main__":  # re-render a run's report: python recipes/replication/report.py OUTPUT_DIR
    import json

    from replication.report import write_report as _write  # the package's module

    _write(json.loads((Path(sys.argv[1]) / "results.json").read_text()), Path(sys.argv[1]))
