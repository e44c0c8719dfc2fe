# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""The paper's claims (C1-C8) and their verdicts from a run's results (the claims table of report.md).

A verdict is read off a 95% interval of SM - binary (or of the claim's own contrast), never tuned:

    reproduced      the interval lies entirely on the side the paper claims;
    not reproduced  it lies entirely on the other side (the opposite effect, at 95%);
    inconclusive    it contains the null value.

C1 held-out NLL, SM arm (two passes) - binary arm, per window; the paper claims lower.
C2 final w_s of the SM arm, interval over seeds; the paper's w_s rises to about 1. Null value 0.5:
   reproduced when the interval lies above 0.5 (more than half way from its start near 0 to 1).
C3 generation NLL at NFE 1/4 (stdlib), per prompt; claimed lower. Diversity guard: when the SM arm's
   unigram entropy or distinct-2 falls more than 5% below the binary arm's, a "reproduced" becomes
   "inconclusive (diversity guard)", since a low NLL can come from repetitive text.
C4 exact-match accuracy on the task corpus, per unmasking order: the gain SM - binary at NFE 1/4 must
   be above 0 and above the gain at NFE 1 (the contrast gain(1/4) - gain(1) per prompt). Both
   intervals above 0: reproduced; either below 0: not reproduced; else inconclusive.
C5-C8 are not run by this recipe; the table says why (`NOT_RUN`).
"""

import statistics
from typing import Dict, List, Sequence, Tuple

from .stats import bootstrap_ci, paired_differences

CLAIMS = {  # claim -> (what the paper claims, where, the paper's number)
    "C1": ("held-out NLL lower with SM", "Fig. 3a", "-0.056 nats (perplexity 21.63 vs 22.88)"),
    "C2": ("w_s rises toward 1 during continuation", "Fig. 3b", "about 1 at the end"),
    "C3": ("generation better with SM at low NFE", "Table 1", "higher MAUVE, largest gap at low NFE"),
    "C4": ("accuracy gain from SM largest at NFE 1/4", "Tables 2-3", "largest pass@1 gains at the lowest budget"),
    "C5": ("p_sm 0.8 beats 0.5; 1.0 worse", "Fig. 5a", "p_sm 0.8 best"),
    "C6": ("k 3 beats k 1; k 5 about k 3", "Fig. 5b", "k 3 best, k 5 close"),
    "C7": ("SM keeps its gain with blocks, KV cache and threshold", "Fig. 4", "higher accuracy at equal tokens/s"),
    "C8": ("early SM beats late SM at NFE 1/4", "Table 5", "sm_then_binary above binary_then_sm"),
}
NOT_RUN = {
    "C5": "needs two more trained arms per seed (p_sm 0.5 and 1.0) on the task corpus; not built yet",
    "C6": "needs two more trained arms per seed (k 1 and 5, sm_top_k) on the task corpus; not built yet",
    "C7": "a decoding sweep on the task models (block lengths, KV cache, threshold, tokens/s); not built yet",
    "C8": "at NFE 1/4 the 6-symbol answers take 2 steps and the first step has no feedback to give, so "
          "SM in the early half of the steps is no SM at all; the comparison needs longer answers",
}
VERDICTS = ("reproduced", "not reproduced", "inconclusive")


def interval_verdict(low: float, high: float, claimed: str, null: float = 0.0) -> str:
    """Verdict of an interval [low, high] for a claim that the value is `claimed` ('above' / 'below') `null`."""
    if claimed not in ("above", "below"):
        raise ValueError(f"claimed={claimed!r} must be 'above' or 'below'.")
    if low > null:
        return "reproduced" if claimed == "above" else "not reproduced"
    if high < null:
        return "reproduced" if claimed == "below" else "not reproduced"
    return "inconclusive"


def combine(verdicts: Sequence[str]) -> str:
    """All parts reproduced: reproduced; any part not reproduced: not reproduced; else inconclusive."""
    if any(v == "not reproduced" for v in verdicts):
        return "not reproduced"
    return "reproduced" if all(v == "reproduced" for v in verdicts) else "inconclusive"


def _seeds(corpus: Dict) -> List[Dict]:
    return list(corpus["seeds"].values())


def _ci(values, resamples: int) -> Tuple[float, float, float]:
    return bootstrap_ci(values, resamples=resamples)


def claim_rows(results: Dict) -> List[Dict]:
    """One row per (claim, corpus) tested in `results`, and one "not run" row per other claim."""
    args, corpora = results["args"], results["corpora"]
    r = args["bootstrap_resamples"]
    rows = []

    def row(claim, measure, ci, verdict, digits=4):
        rows.append({"claim": claim, "measure": measure, "ci": list(ci), "verdict": verdict, "digits": digits})

    for name in ("stdlib", "structured"):
        if name in corpora:
            seeds = _seeds(corpora[name])
            d = paired_differences([s["sm"]["final"]["nll_sm_rows"] for s in seeds],
                                   [s["binary"]["final"]["nll_binary_rows"] for s in seeds])
            ci = _ci(d, r)
            row("C1", f"{name}: held-out NLL, SM - binary (nats/token)", ci, interval_verdict(ci[1], ci[2], "below"))
    for name in ("stdlib", "structured"):
        if name in corpora:
            ws = [[s["sm"]["final"]["w_s"]] for s in _seeds(corpora[name])]
            ci = _ci(ws, r)
            row("C2", f"{name}: final w_s (interval over seeds)", ci,
                interval_verdict(ci[1], ci[2], "above", null=0.5), 3)
    if "stdlib" in corpora and 0.25 in args["nfe_budgets"]:
        seeds = _seeds(corpora["stdlib"])
        gen = [s["generation"] for s in seeds]
        d = paired_differences([g["sm"]["0.25"]["nll_rows"] for g in gen],
                               [g["binary"]["0.25"]["nll_rows"] for g in gen])
        ci = _ci(d, r)
        v = interval_verdict(ci[1], ci[2], "below")
        guard = all(statistics.fmean(g["sm"]["0.25"][k] for g in gen)
                    >= 0.95 * statistics.fmean(g["binary"]["0.25"][k] for g in gen)
                    for k in ("unigram_entropy", "distinct2"))
        row("C3", "stdlib: generation NLL at NFE 1/4, SM - binary", ci,
            v if guard or v != "reproduced" else "inconclusive (diversity guard)")
    if "tasks" in corpora and {0.25, 1.0} <= set(args["nfe_budgets"]):
        seeds = _seeds(corpora["tasks"])
        for alg in args["task_algs"]:
            def correct(arm, b):
                return [s["generation"][arm][alg][str(b)]["correct"] for s in seeds]
            gain = {b: paired_differences(correct("sm", b), correct("binary", b)) for b in (0.25, 1.0)}
            ci_low = _ci(gain[0.25], r)
            ci_contrast = _ci(paired_differences(gain[0.25], gain[1.0]), r)
            v = combine([interval_verdict(ci_low[1], ci_low[2], "above"),
                         interval_verdict(ci_contrast[1], ci_contrast[2], "above")])
            row("C4", f"tasks, {alg}: accuracy gain at NFE 1/4", ci_low, v, 3)
            row("C4", f"tasks, {alg}: gain at 1/4 - gain at 1", ci_contrast, v, 3)
    tested = {x["claim"] for x in rows}
    for claim in CLAIMS:
        if claim not in tested:
            reason = NOT_RUN.get(claim, "its corpus was not run (see --claims)")
            rows.append({"claim": claim, "measure": "", "ci": None, "verdict": f"not run ({reason})", "digits": 4})
    return sorted(rows, key=lambda x: x["claim"])


def claims_markdown(results: Dict) -> List[str]:
    lines = ["## Claims of the paper: verdicts from 95% intervals", "",
             "| claim | paper | where | paper's number | our measure | ours [95% CI] | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for x in claim_rows(results):
        text, where, number = CLAIMS[x["claim"]]
        ci = x["ci"]
        ours = "" if ci is None else f"{ci[0]:+.{x['digits']}f} [{ci[1]:+.{x['digits']}f}, {ci[2]:+.{x['digits']}f}]"
        lines.append(f"| {x['claim']} | {text} | {where} | {number} | {x['measure']} | {ours} | {x['verdict']} |")
    return lines + [""]
