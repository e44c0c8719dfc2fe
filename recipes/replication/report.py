# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""The report of the small replication: a Markdown table (report.md) and curves (report.png).

Every number is a mean over the continuation seeds with its sample standard deviation (ddof 1;
0 for one seed). The held-out comparison is also given per seed as the paired difference
NLL(SM arm, two passes) - NLL(binary arm, one pass), which cancels the shared pretraining and noise.
"""

import math
import statistics
from fractions import Fraction
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

HELDOUT_ROWS = (  # (label, arm, key of the evaluation)
    ("binary arm", "binary", "nll_binary"),
    ("SM arm, two passes (SM input)", "sm", "nll_sm"),
    ("SM arm, one pass (binary input)", "sm", "nll_binary"),
)
SM_PARAMETERS = ("w_s", "w_a", "w_b")


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    values = list(values)
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(values: Sequence[float], digits: int = 4) -> str:
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def budget_label(budget: float) -> str:
    return str(Fraction(budget).limit_denominator(64))


def final_values(results: Dict, arm: str, key: str) -> List[float]:
    return [seed[arm]["final"][key] for seed in results["seeds"].values()]


def heldout_section(results: Dict) -> List[str]:
    base = [h for h in results["pretrain"]["history"] if "nll_binary" in h][-1]["nll_binary"]
    lines = ["## Held-out NLL after continuation", "",
             "| model | NLL (nats/token) | perplexity |", "| --- | --- | --- |",
             f"| pretrained base (start of both arms) | {base:.4f} | {math.exp(base):.2f} |"]
    for label, arm, key in HELDOUT_ROWS:
        nll = final_values(results, arm, key)
        lines.append(f"| {label} | {fmt(nll)} | {fmt([math.exp(v) for v in nll], 2)} |")
    delta = [s - b for s, b in zip(final_values(results, "sm", "nll_sm"), final_values(results, "binary", "nll_binary"))]
    wins = sum(d < 0 for d in delta)
    lines += ["", f"Paired difference SM arm (two passes) - binary arm: {fmt(delta)} nats/token; "
              f"SM is lower in {wins} of {len(delta)} seeds (per seed: {', '.join(f'{d:+.4f}' for d in delta)}).", ""]
    return lines


def parameter_section(results: Dict) -> List[str]:
    init = results["pretrain"]["history"][-1]  # the base never trains its SM parameters
    lines = ["## Learned SM parameters (SM arm, end of continuation)", "",
             "| parameter | initial | final |", "| --- | --- | --- |"]
    lines += [f"| {p} | {init[p]:.4f} | {fmt(final_values(results, 'sm', p))} |" for p in SM_PARAMETERS]
    return lines + [""]


def generation_section(results: Dict) -> List[str]:
    args = results["args"]
    seeds = list(results["seeds"].values())
    lines = [f"## Generation: {args['gen_new_tokens']} tokens after a {args['seq_len'] - args['gen_new_tokens']}-token "
             f"held-out prompt ({args['gen_prompts']} prompts per seed, alg {args['gen_alg']}, temperature "
             f"{args['gen_temperature']}, top_p {args['gen_top_p']})", "",
             "NLL: held-out NLL of the continuation given the prompt under the seed's final binary model. "
             "Unigram entropy and distinct-2 show whether a low NLL comes from repetitive text.", "",
             "| NFE budget | steps | arm | NLL (nats/token) | unigram entropy (bits) | distinct-2 |",
             "| --- | --- | --- | --- | --- | --- |"]
    ref = [s["reference"] for s in seeds]
    lines.append(f"| - | - | reference text | {fmt([r['nll'] for r in ref])} | "
                 f"{fmt([r['unigram_entropy'] for r in ref], 3)} | {fmt([r['distinct2'] for r in ref], 3)} |")
    for budget in args["nfe_budgets"]:
        for arm in ("binary", "sm"):
            m = [s[arm]["generation"][str(budget)] for s in seeds]
            lines.append(f"| {budget_label(budget)} | {m[0]['steps']} | {arm} | {fmt([x['nll'] for x in m])} | "
                         f"{fmt([x['unigram_entropy'] for x in m], 3)} | {fmt([x['distinct2'] for x in m], 3)} |")
    lines += ["", "Paired difference of the generation NLL, SM arm - binary arm (same seed, prompts and scorer): "
              + "; ".join(f"{budget_label(b)}: {fmt(d)} (SM lower in {sum(x < 0 for x in d)} of {len(d)})"
                          for b, d in generation_deltas(results).items()) + "."]
    return lines + [""]


def generation_deltas(results: Dict) -> Dict[float, List[float]]:
    """{budget: [NLL(SM arm) - NLL(binary arm) per seed]} of the generated continuations."""
    seeds = list(results["seeds"].values())
    return {b: [s["sm"]["generation"][str(b)]["nll"] - s["binary"]["generation"][str(b)]["nll"] for s in seeds]
            for b in results["args"]["nfe_budgets"]}


def markdown_report(results: Dict) -> str:
    args, corpus = results["args"], results["corpus"]
    head = [
        "# Small replication: soft-masking vs binary masking", "",
        f"Command: `{results.get('command', 'recipes/replicate_small.py')}`", "",
        f"Corpus: Python {corpus['python']} standard library, {corpus['train_files']} train files "
        f"({corpus['train_tokens']} tokens), {len(corpus['heldout_files'])} held-out files; BPE vocab "
        f"{corpus['vocab_size']}. Model: Dream architecture, hidden {args['hidden_size']}, "
        f"{args['num_hidden_layers']} layers. Pretraining {args['pretrain_steps']} steps (binary), then "
        f"{args['continue_steps']} steps per arm, batch {args['batch_size']} x {args['seq_len']} tokens, "
        f"t ~ U({args['t_low']}, {args['t_high']}), p_sm {args['p_sm']}, k {args['sm_top_k']}, "
        f"lr {args['lr_backbone']} / SM {args['lr_sm']}. Seeds {args['seeds']} (mean ± std). "
        f"Wall time {results['timing']['total_s'] / 60:.1f} min.", "",
    ]
    return "\n".join(head + heldout_section(results) + parameter_section(results) + generation_section(results))


def series(results: Dict, arm: str, key: str) -> Tuple[List[int], List[List[float]]]:
    """(steps, values per step across seeds) of `key` in the arm's continuation histories."""
    histories = [[h for h in seed[arm]["history"] if key in h] for seed in results["seeds"].values()]
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


def _plot_generation(ax, results: Dict) -> None:
    """(f) per budget: generation NLL of the SM arm minus the binary arm's, each seed and the mean +- std."""
    budgets = results["args"]["nfe_budgets"]
    deltas = generation_deltas(results)
    for i, b in enumerate(budgets):
        ax.plot([i] * len(deltas[b]), deltas[b], "o", color="C1", alpha=0.5, label="per seed" if i == 0 else None)
        mean, std = mean_std(deltas[b])
        ax.errorbar([i + 0.15], [mean], yerr=[std], fmt="s", color="k", capsize=3, label="mean ± std" if i == 0 else None)
    ax.axhline(0.0, color="gray", lw=0.8)
    ax.set_xticks(range(len(budgets)), [budget_label(b) for b in budgets])
    ax.set(title="(f) generation NLL, SM arm minus binary arm", xlabel="NFE budget (steps / new tokens)")
    ax.legend(fontsize=7)


def _plot_heldout(ax_nll, ax_delta, results: Dict) -> None:
    """(a) held-out NLL of each arm and input; (b) the paired difference to the binary arm, per step."""
    base = [h for h in results["pretrain"]["history"] if "nll_binary" in h][-1]["nll_binary"]
    steps, reference = series(results, "binary", "nll_binary")
    for (label, arm, key), color in zip(HELDOUT_ROWS, ("C0", "C1", "C2")):
        style = "--" if arm == "sm" and key == "nll_binary" else "-"
        _band(ax_nll, *series(results, arm, key), label, style, start=base, color=color)
        if arm == "sm":
            delta = [[a - b for a, b in zip(v, r)] for v, r in zip(series(results, arm, key)[1], reference)]
            _band(ax_delta, steps, delta, f"{label} - binary arm", style, start=0.0, color=color)
    ax_delta.axhline(0.0, color="gray", lw=0.8)
    ax_nll.set(title="(a) held-out NLL (nats/token)", xlabel="continuation step")
    ax_delta.set(title="(b) held-out NLL minus the binary arm's (same seed)", xlabel="continuation step")
    ax_nll.legend(fontsize=7)
    ax_delta.legend(fontsize=7)


def plot_report(results: Dict, path: Path) -> None:
    """Six panels: held-out NLL and its paired difference, w_s, w_a and w_b over continuation
    steps, and the paired generation-NLL difference per NFE budget."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 8.5))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.07, top=0.9, wspace=0.25, hspace=0.35)
    axes = fig.subplots(2, 3).flatten()
    _plot_heldout(axes[0], axes[1], results)
    init = results["pretrain"]["history"][-1]  # the base never trains its SM parameters
    for ax, name, letter in zip(axes[2:5], SM_PARAMETERS, "cde"):
        _band(ax, *series(results, "sm", name), f"SM arm {name}", start=init[name])
        ax.set(title=f"({letter}) learned {name}", xlabel="continuation step")
    _plot_generation(axes[5], results)
    fig.suptitle(f"Soft-masking vs binary masking, {len(results['seeds'])} seed(s): mean, band = min-max over "
                 "seeds; bars = std")
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
    import sys

    write_report(json.loads((Path(sys.argv[1]) / "results.json").read_text()), Path(sys.argv[1]))
