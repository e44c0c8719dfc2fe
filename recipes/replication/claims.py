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
C5 p_sm ablation on the task corpus (extra SM arms, the first `ablation_seeds` seeds): for a lower p_sm
   (0.5) the contrast p_sm(0.8) arm - lower arm, for a higher one (1.0) higher arm - p_sm(0.8) arm; on
   the held-out NLL (two passes; the paper's Fig. 5 measure: 0.8 lower than 0.5, 1.0 higher than 0.8)
   and on exact match pooled over NFE budgets and unmasking orders (the reverse signs). Each measure's
   verdict combines its two contrasts.
C6 top-k ablation, the same way: k(3) - k(1) claimed lower NLL / higher accuracy; k(5) - k(3) claimed
   "about equal", an equivalence test: reproduced when the interval lies within +-`equivalence_nll`
   (+-`equivalence_accuracy` for exact match), not reproduced when it lies entirely outside, else
   inconclusive.
C7 decoding sweep on the task models (blocks x KV cache x fixed steps / confidence threshold): SM -
   binary exact match pooled over the settings (per prompt and setting); claimed above 0.
C8 sm_then_binary (SM in the first 80% of the steps) - binary_then_sm (the last 80%), SM arm, exact
   match pooled over the unmasking orders; claimed above 0, at NFE 1/4 when the two schedules differ
   there, else at the lowest budget where they do (the row says so); with too few steps everywhere
   (step 0 never has feedback) the two decode alike and the claim is not testable.
Claims whose corpus or arms were not run are listed as "not run" with the reason (`NOT_RUN`).
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
    "C5": "needs the task corpus with its p_sm ablation arms: --claims C5",
    "C6": "needs the task corpus with its top-k ablation arms: --claims C6",
    "C7": "needs the task corpus and its decoding sweep: --claims C7",
    "C8": "needs the task corpus and its schedule runs: --claims C8",
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


def equivalence_verdict(low: float, high: float, margin: float) -> str:
    """Verdict of an interval for a claim that the value is about 0: reproduced within [-margin, margin],
    not reproduced entirely outside it, else inconclusive."""
    if margin <= 0:
        raise ValueError(f"margin={margin} must be > 0.")
    if -margin <= low and high <= margin:
        return "reproduced"
    if low > margin or high < -margin:
        return "not reproduced"
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
    if "tasks" in corpora:
        rows += _ablation_rows(args, _seeds(corpora["tasks"]), r)
        rows += _sweep_rows(_seeds(corpora["tasks"]), r)
        rows += _schedule_rows(args, _seeds(corpora["tasks"]), r)
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


def _row(claim, measure, ci, verdict, digits):
    return {"claim": claim, "measure": measure, "ci": list(ci), "verdict": verdict, "digits": digits}


def _pooled_correct(seed: Dict, arm: str, args: Dict) -> List[int]:
    """An arm's exact-match scores pooled over the NFE budgets and unmasking orders (one list per seed)."""
    return [c for alg in args["task_algs"] for b in args["nfe_budgets"]
            for c in seed["generation"][arm][alg][str(b)]["correct"]]


def _ablation_rows(args: Dict, seeds: List[Dict], r: int) -> List[Dict]:
    """C5 (p_sm arms `sm_p<p>`) and C6 (top-k arms `sm_k<k>`) against the default SM arm."""
    out = []
    specs = [("C5", f"sm_p{p:g}", "p_sm", p, args["p_sm"]) for p in args.get("ablation_p_sm", [])] + \
            [("C6", f"sm_k{k}", "k", k, args["sm_top_k"]) for k in args.get("ablation_top_k", [])]
    for claim in ("C5", "C6"):
        parts = {"NLL": [], "accuracy": []}
        for _, arm, label, value, default in [x for x in specs if x[0] == claim]:
            have = [s for s in seeds if arm in s and "generation" in s]
            if not have or value == default:
                continue
            n = len(have)
            low_arm, high_arm = (arm, "sm") if value < default else ("sm", arm)
            lo, hi = (value, default) if value < default else (default, value)
            name = f"tasks: {label} {hi:g} - {label} {lo:g}"
            nll = _ci(paired_differences([s[high_arm]["final"]["nll_sm_rows"] for s in have],
                                         [s[low_arm]["final"]["nll_sm_rows"] for s in have]), r)
            acc = _ci(paired_differences([_pooled_correct(s, high_arm, args) for s in have],
                                         [_pooled_correct(s, low_arm, args) for s in have]), r)
            if claim == "C6" and value > default:  # "about equal": an equivalence test
                v_nll = equivalence_verdict(nll[1], nll[2], args.get("equivalence_nll", 0.01))
                v_acc = equivalence_verdict(acc[1], acc[2], args.get("equivalence_accuracy", 0.05))
                how = "about 0"
            else:  # the default beats a lower value (C5, C6) and a higher p_sm is worse (C5)
                better_high = value < default
                v_nll = interval_verdict(nll[1], nll[2], "below" if better_high else "above")
                v_acc = interval_verdict(acc[1], acc[2], "above" if better_high else "below")
                how = "lower" if better_high else "higher"
            parts["NLL"].append((f"{name}, held-out NLL (two passes; claimed {how}), {n} seeds", nll, v_nll, 4))
            acc_how = {"lower": "higher", "higher": "lower"}.get(how, how)
            parts["accuracy"].append((f"{name}, exact match pooled over budgets and orders (claimed {acc_how}), "
                                      f"{n} seeds", acc, v_acc, 3))
        for measure, items in parts.items():
            verdict = combine([v for _, _, v, _ in items])
            for text, ci, _, digits in items:
                out.append(_row(claim, text, ci, f"{verdict} ({measure})", digits))
    return out


def _sweep_rows(seeds: List[Dict], r: int) -> List[Dict]:
    """C7: SM - binary exact match pooled over the decoding sweep's settings."""
    have = [s for s in seeds if "sweep" in s.get("generation", {})]
    if not have:
        return []
    names = list(have[0]["generation"]["sweep"])
    correct = {arm: [[c for name in names for c in s["generation"]["sweep"][name][arm]["correct"]] for s in have]
               for arm in ("sm", "binary")}
    ci = _ci(paired_differences(correct["sm"], correct["binary"]), r)
    speed = {arm: statistics.fmean(s["generation"]["sweep"][n][arm]["tokens_per_s"] for s in have for n in names)
             for arm in ("sm", "binary")}
    nfe = {arm: statistics.fmean(s["generation"]["sweep"][n][arm]["nfe"] for s in have for n in names)
           for arm in ("sm", "binary")}
    text = (f"tasks: exact match SM - binary over {len(names)} decoding settings (blocks x KV cache x fixed steps / "
            f"threshold), {len(have)} seeds; mean NFE {nfe['sm']:.1f} / {nfe['binary']:.1f}, "
            f"tokens/s {speed['sm']:.0f} / {speed['binary']:.0f} (SM / binary)")
    return [_row("C7", text, ci, interval_verdict(ci[1], ci[2], "above"), 3)]


def _schedule_rows(args: Dict, seeds: List[Dict], r: int) -> List[Dict]:
    """C8: sm_then_binary - binary_then_sm at NFE 1/4, or at the lowest budget where they differ."""
    have = [s for s in seeds if "schedules" in s.get("generation", {})]
    if not have:
        return []
    sched = have[0]["generation"]["schedules"]
    alg0 = args["task_algs"][0]

    def cell(s, name, b):
        return s["generation"]["schedules"][name]

    def differ(b):  # steps >= 1 (step 0 has no feedback) with another factor
        a, c = (sched[name][alg0][str(b)]["factors"][1:] for name in ("sm_then_binary", "binary_then_sm"))
        return a != c

    budgets = sorted(args["nfe_budgets"])
    usable = [b for b in budgets if differ(b)]
    if not usable:
        return [{"claim": "C8", "measure": "", "ci": None, "digits": 3,
                 "verdict": "not testable here (at every budget the two schedules give the same factor at every "
                            "step after the first, which has no feedback; the answers need more steps)"}]
    b = 0.25 if 0.25 in usable else usable[0]
    steps = sched["sm_then_binary"][alg0][str(b)]["steps"]
    note = "" if b == 0.25 or 0.25 not in budgets else (
        f"; at NFE 1/4 ({sched['sm_then_binary'][alg0]['0.25']['steps']} steps) both schedules decode alike")
    correct = {name: [[c for alg in args["task_algs"] for c in cell(s, name, b)[alg][str(b)]["correct"]]
                      for s in have] for name in ("sm_then_binary", "binary_then_sm")}
    ci = _ci(paired_differences(correct["sm_then_binary"], correct["binary_then_sm"]), r)
    text = (f"tasks, SM arm: exact match sm_then_binary - binary_then_sm at NFE {b:g} ({steps} steps), "
            f"orders pooled, {len(have)} seeds{note}")
    return [_row("C8", text, ci, interval_verdict(ci[1], ci[2], "above"), 3)]
