"""The small replication's ablation arms and decoding runs (claims C5-C8): each arm and decoding run
receives the setting it claims (p_sm and k in the loss, k and the schedule in the decoder), and the
verdicts of the new claims on hand-made results."""

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

recipes = str(Path(__file__).resolve().parents[1] / "recipes")
if recipes not in sys.path:
    sys.path.insert(0, recipes)

import replication.train as train_module  # noqa: E402
from replication.claims import claim_rows, equivalence_verdict  # noqa: E402
from replication.evaluate import evaluate_decoding_sweep, evaluate_schedules  # noqa: E402
from replication.train import (  # noqa: E402
    QUICK_OVERRIDES,
    ReplicationArgs,
    arm_config,
    arm_settings,
    build_model,
    continue_arm,
    corpus_args,
    main,
    prepare_data,
)

QUICK = dataclasses.replace(ReplicationArgs(**QUICK_OVERRIDES), claims=["C5", "C6", "C7", "C8"], seeds=[1, 2],
                            ablation_seeds=1)


@pytest.fixture(scope="module")
def task_model():
    args = corpus_args(QUICK, "tasks")
    data = prepare_data(args, "tasks")
    torch.manual_seed(0)
    model = build_model(args, data["mask_id"] + 1, data["eos_id"], data["mask_id"])
    return args, data, model


def test_arm_settings_per_corpus_seed_and_claims():
    arms = arm_settings(QUICK, "tasks", 1)
    assert arms == {"binary": {"p_sm": 0.0, "sm_top_k": 3}, "sm": {"p_sm": 0.8, "sm_top_k": 3},
                    "sm_p0.5": {"p_sm": 0.5, "sm_top_k": 3}, "sm_p1": {"p_sm": 1.0, "sm_top_k": 3},
                    "sm_k1": {"p_sm": 0.8, "sm_top_k": 1}, "sm_k5": {"p_sm": 0.8, "sm_top_k": 5}}
    assert list(arm_settings(QUICK, "tasks", 2)) == ["binary", "sm"]  # past ablation_seeds
    assert list(arm_settings(QUICK, "stdlib", 1)) == ["binary", "sm"]
    assert list(arm_settings(dataclasses.replace(QUICK, claims=["C5"]), "tasks", 1)) == [
        "binary", "sm", "sm_p0.5", "sm_p1"]


@pytest.mark.parametrize("settings", [{"p_sm": 0.0, "sm_top_k": 3}, {"p_sm": 1.0, "sm_top_k": 5},
                                      {"p_sm": 0.5, "sm_top_k": 1}])
def test_p_sm_and_k_reach_the_loss(task_model, monkeypatch, settings):
    """Every training step's loss sees the arm's k in the model config and SM switches drawn with its p_sm."""
    args, data, model = task_model
    seen = []
    loss = train_module.sm_two_pass_loss

    def spy(model, ids, labels, response, masked, t, sm_on):
        seen.append((model.config.sm_top_k, sm_on.clone()))
        return loss(model, ids, labels, response, masked, t, sm_on)

    monkeypatch.setattr(train_module, "sm_two_pass_loss", spy)
    base = (model.config, model.state_dict())
    continue_arm(base, data["train"], data["eval_windows"], dataclasses.replace(args, continue_steps=6), settings,
                 seed=1, log=lambda m: None)
    assert len(seen) == 6 and {k for k, _ in seen} == {settings["sm_top_k"]}
    switches = torch.cat([s for _, s in seen])
    if settings["p_sm"] in (0.0, 1.0):
        assert switches.all() if settings["p_sm"] == 1.0 else not switches.any()
    else:
        assert 0 < switches.float().mean() < 1
    assert model.config.sm_top_k == 3  # the pretrained model's config is copied, not changed


def _traced(model, calls):
    """Wrap model.diffusion_generate to keep the SM trace (what the decoder fed back) of every call."""
    original = model.diffusion_generate

    def generate(inputs, **kwargs):
        wants_dict = kwargs.pop("return_dict_in_generate", False)
        out = original(inputs, return_dict_in_generate=True, output_history=True, **kwargs)
        calls.append((kwargs, out.sm_trace))
        return out if wants_dict else out.sequences

    model.diffusion_generate = generate


@pytest.mark.parametrize("k", [1, 5])
def test_k_reaches_the_decoder(task_model, k):
    """With k = 1 the feedback is the top token alone (weight 1); with k = 5 its weight is below 1."""
    args, data, model = task_model
    arm = train_module.SoftMaskDreamForDiffusionLM(arm_config(model.config, {"sm_top_k": k}))
    arm.load_state_dict(model.state_dict())
    calls = []
    _traced(arm, calls)
    evaluate_schedules(arm, data, dataclasses.replace(args, nfe_budgets=[1.0], task_algs=["origin"]), 1,
                       log=lambda m: None)
    probs = torch.cat([s.top_probs for _, trace in calls for s in trace if s is not None])
    assert probs.numel() > 0
    assert torch.all(probs == 1.0) if k == 1 else torch.all(probs < 1.0)


def test_schedules_reach_the_decoder(task_model):
    """sm_then_binary (t' 0.2) feeds back in the first 80% of the steps, binary_then_sm (t' 0.8) in the
    last 80%: on 4 masked tokens decoded in 4 steps the trace's lambda is 0 exactly where the factor is."""
    args, data, model = task_model
    calls = []
    _traced(model, calls)
    try:
        out = evaluate_schedules(model, data, dataclasses.replace(args, nfe_budgets=[1.0], task_algs=["origin"]), 1,
                                 log=lambda m: None)
    finally:
        del model.diffusion_generate
    assert [c[0]["sm_schedule"] for c in calls] == ["sm_then_binary", "binary_then_sm"]
    assert [c[0]["sm_threshold"] for c in calls] == [0.2, 0.8]
    for (kwargs, trace), name in zip(calls, ("sm_then_binary", "binary_then_sm")):
        factors = out[name]["origin"]["1.0"]["factors"]
        assert factors == ([1.0, 1.0, 1.0, 1.0] if name == "sm_then_binary" else [0.0, 1.0, 1.0, 1.0])
        # trace[i] is the feedback the pass of step i + 1 receives
        for step, s in enumerate(trace[:-1], start=1):
            applied = s is not None and bool((s.lam > 0).any())
            assert applied == (factors[step] > 0), (name, step)


def test_decoding_sweep_runs_each_setting_on_both_arms(task_model):
    args, data, model = task_model
    calls = []
    _traced(model, calls)
    try:
        out = evaluate_decoding_sweep({"binary": model, "sm": model}, data,
                                      dataclasses.replace(args, sweep_block_lengths=[2, 4]), log=lambda m: None)
    finally:
        del model.diffusion_generate
    assert list(out) == ["block 2, cache off, NFE 0.5", "block 2, cache off, threshold 0.9",
                         "block 2, cache on, NFE 0.5", "block 2, cache on, threshold 0.9",
                         "block 4, cache off, NFE 0.5", "block 4, cache off, threshold 0.9",
                         "block 4, cache on, NFE 0.5", "block 4, cache on, threshold 0.9"]
    assert [c[0]["soft_masking"] for c in calls] == [False, True] * 8
    assert [(c[0]["block_length"], c[0]["use_cache"], c[0]["threshold"]) for c in calls[::2]] == [
        (b, cache, th) for b in (2, 4) for cache in (False, True) for th in (None, 0.9)]
    fixed = out["block 2, cache off, NFE 0.5"]
    assert fixed["binary"]["nfe"] == 2 and len(fixed["sm"]["correct"]) == len(data["gen_windows"])
    assert all(1 <= cell[arm]["nfe"] <= 4 for cell in out.values() for arm in ("binary", "sm"))


def test_equivalence_verdict_on_hand_made_intervals():
    assert equivalence_verdict(-0.004, 0.006, 0.01) == "reproduced"
    assert equivalence_verdict(0.012, 0.03, 0.01) == "not reproduced"
    assert equivalence_verdict(-0.05, -0.02, 0.01) == "not reproduced"
    assert equivalence_verdict(-0.005, 0.02, 0.01) == "inconclusive"
    with pytest.raises(ValueError, match="margin=0"):
        equivalence_verdict(0.0, 0.0, 0)


def _results(nll, correct, sweep=None, schedules=None):
    """Hand-made task results: nll[arm] per window and correct[arm] per prompt, the same for 2 seeds."""
    args = {"bootstrap_resamples": 200, "nfe_budgets": [0.25, 1.0], "task_algs": ["origin"], "p_sm": 0.8,
            "sm_top_k": 3, "ablation_p_sm": [0.5, 1.0], "ablation_top_k": [1, 5], "equivalence_nll": 0.01,
            "equivalence_accuracy": 0.05}
    seeds = {}
    for s in ("1", "2"):
        seed = {arm: {"final": {"nll_sm_rows": rows}} for arm, rows in nll.items()}
        seed["generation"] = {arm: {"origin": {b: {"correct": c} for b in ("0.25", "1.0")}}
                              for arm, c in correct.items()}
        seed["generation"]["binary"] = {"origin": {b: {"correct": [0] * 4} for b in ("0.25", "1.0")}}
        if sweep:
            seed["generation"]["sweep"] = sweep
        if schedules:
            seed["generation"]["schedules"] = schedules
        seeds[s] = seed
    return {"args": args, "corpora": {"tasks": {"seeds": seeds}}}


def _by_claim(results, claim):
    return [r for r in claim_rows(results) if r["claim"] == claim]


def test_c5_c6_rows_from_hand_made_arms():
    w = [2.0] * 4
    good = {"sm": [1.9] * 4, "sm_p0.5": [2.0] * 4, "sm_p1": [2.1] * 4, "sm_k1": [2.0] * 4, "sm_k5": [1.9] * 4}
    right, wrong = [1] * 4, [0] * 4
    acc = {"sm": right, "sm_p0.5": wrong, "sm_p1": wrong, "sm_k1": wrong, "sm_k5": right}
    rows = _by_claim(_results(good, acc), "C5")
    assert [r["measure"].split(",")[0] for r in rows] == ["tasks: p_sm 0.8 - p_sm 0.5", "tasks: p_sm 1 - p_sm 0.8"] * 2
    assert [r["ci"][0] for r in rows] == pytest.approx([-0.1, 0.2, 1.0, -1.0])
    assert {r["verdict"] for r in rows} == {"reproduced (NLL)", "reproduced (accuracy)"}
    rows = _by_claim(_results(good, acc), "C6")
    assert [r["measure"].split(",")[0] for r in rows] == ["tasks: k 3 - k 1", "tasks: k 5 - k 3"] * 2
    assert {r["verdict"] for r in rows} == {"reproduced (NLL)", "reproduced (accuracy)"}
    # the reverse: p_sm 0.5 best, k 5 far from k 3 -> not reproduced
    bad = {"sm": [2.0] * 4, "sm_p0.5": [1.9] * 4, "sm_p1": [2.1] * 4, "sm_k1": [2.0] * 4, "sm_k5": [1.5] * 4}
    assert {r["verdict"] for r in _by_claim(_results(bad, acc), "C5")} >= {"not reproduced (NLL)"}
    c6 = _by_claim(_results(bad, acc), "C6")
    assert c6[0]["verdict"] == "not reproduced (NLL)"  # k 5 - k 3 = -0.5, far outside +-0.01
    # equal arms: inconclusive where a difference is claimed
    same = {a: w for a in good}
    assert {r["verdict"] for r in _by_claim(_results(same, {a: right for a in acc}), "C5")} == {
        "inconclusive (NLL)", "inconclusive (accuracy)"}
    # no ablation arms in the results: not run
    only = _results({"sm": w, "binary": w}, {"sm": right})
    assert _by_claim(only, "C5")[0]["verdict"].startswith("not run (")


def test_c7_c8_rows_from_hand_made_runs():
    sweep = {"block 2": {"sm": {"correct": [1, 1, 0, 1], "nfe": 2, "tokens_per_s": 100.0},
                         "binary": {"correct": [0, 1, 0, 0], "nfe": 2, "tokens_per_s": 110.0}}}
    early, late = {"correct": [1, 1, 1, 0]}, {"correct": [0, 1, 0, 0]}

    def schedules(factors_low, factors_high):
        cell = lambda c, f, n: {**c, "steps": n, "factors": f}  # noqa: E731
        return {"sm_then_binary": {"origin": {"0.25": cell(early, factors_low[0], 2),
                                              "1.0": cell(early, factors_high[0], 6)}},
                "binary_then_sm": {"origin": {"0.25": cell(late, factors_low[1], 2),
                                              "1.0": cell(late, factors_high[1], 6)}}}

    w = [2.0] * 4
    res = _results({"sm": w, "binary": w}, {"sm": [1] * 4}, sweep=sweep,
                   schedules=schedules(([1.0, 1.0], [0.0, 1.0]),
                                       ([1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1])))
    (c7,) = _by_claim(res, "C7")
    assert c7["ci"][0] == pytest.approx(0.5) and c7["verdict"] == "reproduced"
    assert "tokens/s 100 / 110" in c7["measure"]
    (c8,) = _by_claim(res, "C8")  # identical after step 0 at NFE 1/4: measured at NFE 1, and said so
    assert c8["ci"][0] == pytest.approx(0.5) and c8["verdict"] == "reproduced"
    assert "at NFE 1 (6 steps)" in c8["measure"] and "at NFE 1/4 (2 steps) both schedules decode alike" in c8["measure"]
    res = _results({"sm": w, "binary": w}, {"sm": [1] * 4},
                   schedules=schedules(([1.0, 1.0], [0.0, 1.0]), ([1, 1, 1], [0, 1, 1])))
    (c8,) = _by_claim(res, "C8")
    assert c8["ci"] is None and c8["verdict"].startswith("not testable here")
    res = _results({"sm": w, "binary": w}, {"sm": [1] * 4},
                   schedules=schedules(([1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]), ([1], [1])))
    (c8,) = _by_claim(res, "C8")
    assert "at NFE 0.25 (2 steps)" in c8["measure"] and "alike" not in c8["measure"]


def test_quick_claims_c5_to_c8_end_to_end(tmp_path):
    """The task corpus at quick size with every new claim: the ablation arms train with their settings,
    the sweep and schedules run, and every claim row C4-C8 gets a value or a stated reason."""
    results = main(["--quick", "--claims", "C4", "C5", "C6", "C7", "C8", "--ablation_seeds", "1",
                    "--output_dir", str(tmp_path)])
    assert list(results["corpora"]) == ["tasks"]
    seed = results["corpora"]["tasks"]["seeds"]["1"]
    assert {a: seed[a]["settings"] for a in ("sm_p0.5", "sm_p1", "sm_k1", "sm_k5")} == {
        "sm_p0.5": {"p_sm": 0.5, "sm_top_k": 3}, "sm_p1": {"p_sm": 1.0, "sm_top_k": 3},
        "sm_k1": {"p_sm": 0.8, "sm_top_k": 1}, "sm_k5": {"p_sm": 0.8, "sm_top_k": 5}}
    from sm_dream import SoftMaskDreamForDiffusionLM

    assert SoftMaskDreamForDiffusionLM.from_pretrained(tmp_path / "models" / "tasks" / "sm_k5").config.sm_top_k == 5
    assert len(seed["generation"]["sweep"]) == 12 and set(seed["generation"]["schedules"]) == {
        "sm_then_binary", "binary_then_sm"}
    rows = {r["claim"]: r for r in claim_rows(results)}
    assert all(rows[c]["ci"] is not None for c in ("C4", "C5", "C6", "C7"))
    assert rows["C8"]["verdict"].startswith("not testable here")  # 4-symbol answers: 1, 2, 4 steps
    report = (tmp_path / "report.md").read_text()
    assert "| C5 | p_sm 0.8 beats 0.5; 1.0 worse |" in report and "| C7 |" in report
