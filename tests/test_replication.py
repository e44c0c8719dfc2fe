"""The small replication: data, the structured task's verifier, metrics, statistics, report, and the
quick mode end to end."""

import dataclasses
import json
import math
import random
import re
import sys
import zlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sm_dream.training.noise import sample_noise


def _recipes_on_path() -> None:
    """The replication is research code under recipes/, not in the package: import it from there."""
    recipes = str(Path(__file__).resolve().parents[1] / "recipes")
    if recipes not in sys.path:
        sys.path.insert(0, recipes)


_recipes_on_path()

from replication.train import (  # noqa: E402
    QUICK_OVERRIDES,
    ReplicationArgs,
    build_model,
    main,
    parse_args,
    summarize,
    train_phase,
)
from replication.data import (  # noqa: E402
    STRUCTURED_FAMILIES,
    document_text,
    exact_match,
    read_texts,
    split_files,
    stdlib_files,
    structured_documents,
    structured_problem,
    structured_prompts,
    TASK_FAMILIES,
    task_documents,
    task_problem,
    task_symbols_are_tokens,
    token_windows,
    train_tokenizer,
    window_order,
)
from replication.evaluate import (  # noqa: E402
    diffusion_nll,
    diffusion_nll_rows,
    distinct_bigrams,
    heldout_nll,
    unigram_entropy,
)
from replication.report import markdown_report  # noqa: E402
from replication.stats import bootstrap_ci, paired_differences, verdict  # noqa: E402
from replication.claims import claim_rows, combine, interval_verdict  # noqa: E402

QUICK = ReplicationArgs(**QUICK_OVERRIDES)


@pytest.fixture(scope="module")
def small_data():
    train, held = split_files(stdlib_files(), max_files=6)
    tokenizer = train_tokenizer(read_texts(train), 400)
    return tokenizer, token_windows(tokenizer, read_texts(train), 32), token_windows(tokenizer, read_texts(held), 32)


def test_split_is_by_file_name_crc_and_disjoint():
    files = stdlib_files()
    train, held = split_files(files, heldout_every=10)
    assert set(train).isdisjoint(held) and len(train) + len(held) == len(files)
    assert all(zlib.crc32(f.name.encode()) % 10 == 0 for f in held)
    assert all(zlib.crc32(f.name.encode()) % 10 != 0 for f in train)
    few_train, few_held = split_files(files, heldout_every=10, max_files=12)
    assert few_train == train[:12] and few_held == held[:1]
    with pytest.raises(ValueError, match="heldout_every=1"):
        split_files(files, heldout_every=1)


def test_tokenizer_has_exact_vocab_mask_last_and_round_trips(small_data):
    tokenizer, train, _ = small_data
    assert tokenizer.get_vocab_size() == 400
    assert tokenizer.token_to_id("<|endoftext|>") == 0 and tokenizer.token_to_id("<|mask|>") == 399
    text = "def f(x):\n    return {'a': x ** 2}  # ünïcode\n"
    assert tokenizer.decode(tokenizer.encode(text).ids) == text
    assert int(train.max()) < 399  # the mask never occurs in the data
    again = train_tokenizer(read_texts(split_files(stdlib_files(), max_files=6)[0]), 400)
    assert again.to_str() == tokenizer.to_str()  # deterministic
    with pytest.raises(ValueError, match="vocab_size=100"):
        train_tokenizer([], 100)


def test_window_order_is_seeded_epochs_of_permutations():
    order = window_order(num_windows=10, num_steps=7, batch_size=3, seed=4)  # 21 draws = 3 epochs (cut)
    assert order.shape == (7, 3)
    assert sorted(order.flatten()[:10].tolist()) == list(range(10))
    assert sorted(order.flatten()[10:20].tolist()) == list(range(10))
    assert torch.equal(order, window_order(10, 7, 3, seed=4))
    assert not torch.equal(order, window_order(10, 7, 3, seed=5))


def test_diversity_metrics_against_hand_values():
    assert unigram_entropy(torch.tensor([[0, 0, 1, 1]])) == pytest.approx(1.0)
    assert unigram_entropy(torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])) == pytest.approx(3.0)
    assert unigram_entropy(torch.full((2, 5), 7)) == 0.0
    assert distinct_bigrams(torch.tensor([[1, 2, 1, 2], [3, 3, 3, 3]])) == pytest.approx((2 / 3 + 1 / 3) / 2)


def _model(vocab=400, mask=399, **kw):
    torch.manual_seed(0)
    args = dataclasses.replace(QUICK, **kw)
    return build_model(args, vocab, 0, mask).eval(), args


def test_diffusion_nll_matches_a_direct_computation(small_data):
    _, _, held = small_data
    model, args = _model(eval_repeats=2, eval_batch_size=3)
    windows = held[:4]
    response = torch.zeros_like(windows, dtype=torch.bool)
    response[:, 10:] = True
    ids = windows.repeat(2, 1)
    resp = response.repeat(2, 1)
    draw = sample_noise(resp, args.t_low, args.t_high, p_sm=0.0, seeds=torch.arange(8))
    with torch.no_grad():
        logits = model(ids.masked_fill(draw.masked, 399)).logits  # (b, l, V) raw
    aligned = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)  # row j predicts token j
    nll = F.cross_entropy(aligned.transpose(1, 2), ids, reduction="none")  # (b, l)
    expected = ((nll * draw.masked).sum(1) / draw.t).sum() / resp.sum()
    assert diffusion_nll(model, windows, response, args, soft=False) == pytest.approx(expected.item(), rel=1e-5)


def test_heldout_nll_two_passes_only_differ_when_sm_is_strong(small_data):
    _, _, held = small_data
    model, args = _model()
    untrained = heldout_nll(model, held[:6], args, soft=False)
    assert 0.5 * math.log(400) < untrained < 1.5 * math.log(400)  # about log V before training
    # lambda <= w_s * sigmoid(w_a (-H - w_b)) ~ 0 at the near-uniform entropy of an untrained model
    assert heldout_nll(model, held[:6], args, soft=True) == pytest.approx(untrained, abs=1e-6)
    with torch.no_grad():
        model.soft_mask.s_raw.fill_(6.0)
        model.soft_mask.a_raw.fill_(-5.0)  # w_a ~ 0: lambda ~ w_s / 2 whatever the entropy
    assert abs(heldout_nll(model, held[:6], args, soft=True) - untrained) > 1e-3


def test_arms_share_data_order_and_noise(small_data):
    """With lambda ~ 0 (untrained model) the SM arm's losses equal the binary arm's: same windows, same masks."""
    _, train, _ = small_data
    histories = {}
    for p_sm in (0.0, 0.8):
        model, args = _model(log_every=1, batch_size=2)
        histories[p_sm] = train_phase(model.train(), train, args, steps=3, p_sm=p_sm, seed=7)
    losses = {p: [h["train_loss"] for h in hist] for p, hist in histories.items()}
    assert losses[0.8] == pytest.approx(losses[0.0], rel=1e-5)
    model, args = _model(log_every=1, batch_size=2)
    other_seed = [h["train_loss"] for h in train_phase(model.train(), train, args, steps=3, p_sm=0.0, seed=8)]
    assert other_seed != pytest.approx(losses[0.0], rel=1e-5)


@pytest.mark.parametrize("cooldown", [0, 4])
def test_learning_rate_warms_up_then_cools_down_linearly(cooldown):
    from replication.train import make_optimizer

    args = dataclasses.replace(QUICK, warmup_steps=2, lr_backbone=1e-3, lr_sm=5e-2)
    model = build_model(args, 64, 0, 63)
    optimizer, schedule = make_optimizer(model, args, steps=10, cooldown=cooldown)
    rates = []
    for _ in range(10):
        rates.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        schedule.step()
    factors = [r[0] / 1e-3 for r in rates]
    assert all(r[-1] / 5e-2 == pytest.approx(f) for r, f in zip(rates, factors))  # one schedule for both groups
    expected = [0.5] + [1.0] * 9 if cooldown == 0 else [0.5, 1, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25]
    assert factors == pytest.approx(expected)


def test_parse_args_quick_overrides_and_flags_win():
    args, out, quick = parse_args(["--quick", "--seeds", "4", "5", "--nfe_budgets", "0.5", "1", "--lr_sm", "0.02"])
    assert quick and out == "outputs/replicate_small_quick"
    assert args.seeds == [4, 5] and args.nfe_budgets == [0.5, 1.0] and args.lr_sm == 0.02
    assert args.pretrain_steps == QUICK_OVERRIDES["pretrain_steps"]
    full, out, quick = parse_args([])
    assert not quick and full == ReplicationArgs() and out == "outputs/replicate_small"


@pytest.mark.parametrize(
    "field, value, message",
    [("seeds", [], "seeds is empty"), ("gen_new_tokens", 48, "gen_new_tokens=48"),
     ("nfe_budgets", [2.0], "nfe_budgets"), ("corpora", ["web"], "corpora=\\['web'\\]"),
     ("task_new_tokens", 0, "task_new_tokens=0"),
     ("final_evals", 0, "final_evals=0"), ("cooldown_steps", 9, "cooldown_steps=9"),
     ("cooldown_steps", -1, "cooldown_steps=-1")],
)
def test_invalid_args_raise_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(QUICK, **{field: value}).validate()




def test_per_window_nll_averages_repeats_and_its_mean_is_the_nll(small_data):
    _, _, held = small_data
    model, args = _model(eval_repeats=3, eval_batch_size=4)
    windows = held[:5]
    response = torch.zeros_like(windows, dtype=torch.bool)
    response[:, 8:] = True  # the same number of scored tokens in every window
    rows = diffusion_nll_rows(model, windows, response, args, soft=False)
    assert len(rows) == 5
    assert sum(rows) / 5 == pytest.approx(diffusion_nll(model, windows, response, args, soft=False), rel=1e-5)
    # window 2 alone, scored with the seeds its repeats get in the batch (2, 7, 12): the same masks
    ids, resp = windows[2:3].repeat(3, 1), response[2:3].repeat(3, 1)
    draw = sample_noise(resp, args.t_low, args.t_high, p_sm=0.0, seeds=torch.tensor([2, 7, 12]))
    with torch.no_grad():
        logits = model(ids.masked_fill(draw.masked, 399)).logits
    aligned = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
    nll = F.cross_entropy(aligned.transpose(1, 2), ids, reduction="none")
    expected = ((nll * draw.masked).sum(1) / draw.t / resp.sum(1)).mean()
    assert rows[2] == pytest.approx(expected.item(), rel=1e-5)


def test_summarize_averages_the_last_evaluations_and_drops_rows():
    history = [{"step": s, "train_loss": 1.0, "w_s": s / 100} for s in (10, 20, 30, 40)]
    for h, rows in zip(history[1:], ([1.0, 3.0], [2.0, 6.0], [4.0, 8.0])):
        h.update(nll_binary=sum(rows) / 2, nll_binary_rows=rows)
    slim, final = summarize(history, final_evals=2)
    assert final["nll_binary_rows"] == [3.0, 7.0] and final["nll_binary"] == 5.0
    assert final["final_steps"] == [30, 40] and final["w_s"] == 0.4 and "train_loss" in final
    assert all(not k.endswith("_rows") for h in slim for k in h) and slim[-1]["nll_binary"] == 6.0


# ---------------------------------------------------------------- the structured task


@pytest.mark.parametrize("family", STRUCTURED_FAMILIES)
def test_structured_tail_is_the_only_continuation_of_its_head(family):
    """Each family's tail, recomputed from the head alone by another route, equals the generator's."""
    rng = random.Random(3)
    for _ in range(50):
        head, tail = structured_problem(rng, family)
        if family == "progression":
            a, b = map(int, re.fullmatch(r"xs = \[(\d+), (\d+)", head).groups())
            expected = "".join(f", {a + i * (b - a)}" for i in range(2, 10)) + "]"
        elif family == "sorted":
            letters = re.fullmatch(r"sorted\(\[(.*)\]\) == \[", head).group(1).split(", ")
            expected = ", ".join(sorted(letters)) + "]"
        else:
            name = re.fullmatch(r"def set_(\w+)\(self, value\):", head).group(1)
            expected = f" self.{name} = value; self.{name}_set = True; return self.{name}"
        assert tail == expected
    with pytest.raises(ValueError, match="unknown structured family 'tables'"):
        structured_problem(rng, "tables")


@pytest.fixture(scope="module")
def structured_data():
    docs = structured_documents(30, 12, seed=1)
    tokenizer = train_tokenizer((document_text(d) for d in docs), 600)
    return tokenizer, structured_documents(6, 12, seed=2)


def test_structured_prompts_end_with_the_fixed_tail(structured_data):
    tokenizer, heldout = structured_data
    prompts = structured_prompts(tokenizer, heldout, seq_len=48, new_tokens=8, count=20)
    windows, families = prompts["windows"], prompts["families"]
    assert windows.shape == (20, 48) and set(families) <= set(STRUCTURED_FAMILIES)
    tails = {head + tail: tail for doc in heldout for _, head, tail in doc}
    for row in windows.tolist():
        text = tokenizer.decode(row)
        line = text.split("\n")[-1]  # the window ends at the end of a line
        assert any(line.endswith(full) or full.endswith(line) for full in tails), line
        checked = tokenizer.decode(row[-8:])
        assert any(line.endswith(full) and tails[full].endswith(checked) for full in tails) or \
            any(full.endswith(line) and tails[full].endswith(checked) for full in tails)
    with pytest.raises(ValueError, match="no structured prompt"):
        structured_prompts(tokenizer, heldout, seq_len=48, new_tokens=40, count=4)


def test_exact_match_scores_a_correct_continuation_1_and_a_one_token_change_0(structured_data):
    tokenizer, heldout = structured_data
    windows = structured_prompts(tokenizer, heldout, seq_len=48, new_tokens=8, count=10)["windows"]
    for row in windows.tolist():
        reference = row[-8:]
        assert exact_match(tokenizer, list(reference), reference) == 1
        for position in (0, 4, 7):
            changed = list(reference)
            changed[position] = tokenizer.token_to_id("Ġzz") or tokenizer.token_to_id("z")
            assert changed != reference and exact_match(tokenizer, changed, reference) == 0
    # the same text in another tokenisation is the same continuation
    ids = tokenizer.encode(" 17, 18]").ids
    spelled = [tokenizer.token_to_id(c) for c in tokenizer.decode(ids).replace(" ", "Ġ")]
    assert spelled != ids and exact_match(tokenizer, spelled, ids) == 1


# ---------------------------------------------------------------- statistics


def test_paired_differences_per_seed_and_item():
    assert paired_differences([[3.0, 5.0], [1.0, 1.0]], [[1.0, 6.0], [0.5, 2.0]]) == [[2.0, -1.0], [0.5, -1.0]]
    with pytest.raises(ValueError, match="same seeds and items"):
        paired_differences([[1.0, 2.0]], [[1.0]])


def test_bootstrap_ci_against_hand_computed_distributions():
    # constant differences: every resample has the same mean
    assert bootstrap_ci([[0.3] * 4, [0.3] * 4], resamples=500) == pytest.approx((0.3, 0.3, 0.3))
    # one seed, items (0, 0, 1): the resampled mean is k/3 with k ~ Binomial(3, 1/3), so
    # P = 8/27, 12/27, 6/27, 1/27 at 0, 1/3, 2/3, 1; its 5% and 95% quantiles are 0 and 2/3.
    est, low, high = bootstrap_ci([[0.0, 0.0, 1.0]], resamples=20000, level=0.9, seed=1)
    assert est == pytest.approx(1 / 3) and low == 0.0 and high == pytest.approx(2 / 3)
    # two seeds, constant within: only the seed draw varies; the mean is 0, 1/2, 1 w.p. 1/4, 1/2, 1/4,
    # so the 95% interval is [0, 1] and the 40% interval (quantiles 0.3, 0.7) is [1/2, 1/2]
    assert bootstrap_ci([[0.0] * 5, [1.0] * 5], resamples=20000, seed=2) == pytest.approx((0.5, 0.0, 1.0))
    assert bootstrap_ci([[0.0] * 5, [1.0] * 5], resamples=20000, level=0.4, seed=2) == pytest.approx((0.5, 0.5, 0.5))
    # the estimate is the mean over seeds of the per-seed means; the interval narrows with more items
    est, low, high = bootstrap_ci([[1.0, 2.0, 3.0, 6.0], [2.0, 2.0]][:1] + [[2.0] * 4], resamples=4000)
    assert est == pytest.approx((3.0 + 2.0) / 2) and low < est < high
    assert bootstrap_ci([[1.0, 2.0], [3.0, 4.0]], seed=5) == bootstrap_ci([[1.0, 2.0], [3.0, 4.0]], seed=5)
    with pytest.raises(ValueError, match="same, non-zero number of items"):
        bootstrap_ci([[1.0, 2.0], [1.0]])


def test_verdict_reads_the_interval_with_the_metric_direction():
    assert verdict(-0.03, -0.01, lower_is_better=True) == "SM better"
    assert verdict(-0.03, -0.01, lower_is_better=False) == "SM worse"
    assert verdict(0.01, 0.2, lower_is_better=False) == "SM better"
    assert verdict(-0.01, 0.02, lower_is_better=True) == "no difference"


# ---------------------------------------------------------------- report and end to end


def _fake_results():
    """One corpus of each kind, two seeds, two windows / prompts, with known values."""
    args = dataclasses.asdict(ReplicationArgs(seeds=[1, 2], nfe_budgets=[0.5, 1.0], task_algs=["entropy"]))
    init = {"nll_binary": 4.0, "w_s": 0.0067, "w_a": 6.67, "w_b": -0.75}

    def arm(rows, sm_rows=None, w_s=0.1):
        final = {"nll_binary": sum(rows) / 2, "nll_binary_rows": rows, "w_s": w_s, "w_a": 6.0, "w_b": -0.7,
                 "final_steps": [900, 1000]}
        if sm_rows is not None:
            final.update(nll_sm=sum(sm_rows) / 2, nll_sm_rows=sm_rows)
        history = [{"step": 1000, **{k: v for k, v in final.items() if not k.endswith("_rows") and k != "final_steps"}}]
        return {"history": history, "final": final}

    def gen(shift):
        return {str(b): {"nll": 3.0 + b + shift, "nll_rows": [3.0 + b + shift] * 2, "unigram_entropy": 7.0,
                         "distinct2": 0.9, "steps": int(32 * b)} for b in (0.5, 1.0)}

    def task(correct_sm):
        return {arm: {"entropy": {str(b): {"correct": correct_sm if arm == "sm" else [0, 1], "steps": int(16 * b),
                                           "accuracy": 0.5} for b in (0.5, 1.0)}} for arm in ("binary", "sm")}

    ref = {"nll": 2.5, "nll_rows": [2.5, 2.5], "unigram_entropy": 7.5, "distinct2": 0.95}
    stdlib = {"corpus": {"source": "Python 3.x standard library", "train_files": 1, "train_tokens": 10,
                         "heldout_tokens": 5, "vocab_size": 9},
              "pretrain": {"final": init},
              "seeds": {"1": {"binary": arm([3.0, 3.0]), "sm": arm([3.2, 3.2], [2.9, 2.9], w_s=0.2),
                              "generation": {"binary": gen(0.0), "sm": gen(-0.1), "reference": ref}},
                        "2": {"binary": arm([3.2, 3.2]), "sm": arm([3.4, 3.4], [3.0, 3.0], w_s=0.4),
                              "generation": {"binary": gen(0.0), "sm": gen(-0.1), "reference": ref}}}}
    structured = {"corpus": {"source": "synthetic", "train_files": 1, "train_tokens": 10, "heldout_tokens": 5,
                             "vocab_size": 9, "heldout_lines_in_train": 0.25},
                  "pretrain": {"final": init},
                  "seeds": {s: {"binary": arm([1.0, 1.0]), "sm": arm([1.0, 1.0], [1.0, 1.0]),
                                "generation": task([1, 1])} for s in ("1", "2")}}
    return {"args": args, "command": "python recipes/replicate_small.py",
            "corpora": {"stdlib": stdlib, "structured": structured},
            "timing": {"total_s": 600.0}, "versions": {"torch": "2.x", "transformers": "5.x"},
            "load_average": [3.0, 2.0, 1.0]}


def test_markdown_report_means_intervals_and_verdicts():
    text = markdown_report(_fake_results())
    assert "| binary arm | 3.1000 ± 0.1414 |" in text
    assert "| SM arm, two passes (SM input) | 2.9500 ± 0.0707 |" in text
    assert "SM is lower in 2 of 2 seeds (per seed: -0.1000, -0.2000)" in text
    # per-window differences: seed 1 all -0.1, seed 2 all -0.2 -> the interval is the seed resampling's
    assert "| stdlib | held-out NLL (nats/token) | -0.1500 [-0.2000, -0.1000] | SM better | 2 of 2 |" in text
    assert "| stdlib | generation NLL, NFE 1/2 | -0.1000 [-0.1000, -0.1000] | SM better | 2 of 2 |" in text
    assert "| w_s | 0.0067 | 0.3000 ± 0.1414 |" in text
    assert "| 1 | 32 | 4.0000 ± 0.0000 | 3.9000 ± 0.0000 | -0.1000 [-0.1000, -0.1000] | SM better |" in text
    # structured: binary correct on prompt 2 only, SM on both -> SM - binary is (+1, 0) per seed
    assert ("| entropy | 1/2 | 8 | 0.500 [0.000, 1.000] | 1.000 [1.000, 1.000] | +0.500 [+0.000, +1.000] "
            "| no difference |") in text
    assert "| structured | held-out NLL (nats/token) | +0.0000 [+0.0000, +0.0000] | no difference | 0 of 2 |" in text
    assert "Corpus `stdlib`: Python 3.x standard library" in text and "25.0% of the held-out lines" in text
    assert "torch 2.x, transformers 5.x" in text and "load average 3.0" in text


def test_corpus_dir_is_named_in_the_report(tmp_path):
    for name in ("a.py", "b.py", "c.py"):
        (tmp_path / name).write_text("def f(x):\n    return x + 1\n" * 200)
    args = dataclasses.replace(QUICK, corpus_dir=str(tmp_path), heldout_every=2)
    from replication.train import prepare_data

    corpus = prepare_data(args, "stdlib")["corpus"]
    assert corpus["source"] == f"the *.py files of {tmp_path}"
    assert prepare_data(dataclasses.replace(QUICK, max_files=3),
                        "stdlib")["corpus"]["source"].endswith("standard library")


def test_quick_mode_end_to_end(tmp_path):
    """The pipeline runs and its outputs are complete and sane (quick mode makes no claim)."""
    results = main(["--quick", "--output_dir", str(tmp_path)])  # the recipe's entry point
    for name in ("results.json", "report.md", "report.png", "tokenizer_stdlib.json", "tokenizer_structured.json",
                 "tokenizer_tasks.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["args"] == dataclasses.asdict(QUICK) and saved["command"].endswith(f"--quick --output_dir {tmp_path}")
    assert set(saved["versions"]) == {"python", "torch", "transformers"}
    log_v = math.log(QUICK.vocab_size)
    for name in ("stdlib", "structured"):
        seed = results["corpora"][name]["seeds"]["1"]
        for arm, keys in (("binary", ["nll_binary"]), ("sm", ["nll_binary", "nll_sm"])):
            final = seed[arm]["final"]
            assert all(0.0 < final[k] < 1.5 * log_v for k in keys)
            assert all(len(final[f"{k}_rows"]) == QUICK.eval_windows for k in keys)
            assert final["final_steps"] == [4, 8]
            assert 0.0 < final["w_s"] < 1.0 and final["w_a"] > 0.0 and final["w_b"] < 0.0
            assert [h["step"] for h in seed[arm]["history"]] == list(range(2, 9, 2))
        assert seed["binary"]["final"]["w_s"] == pytest.approx(1 / (1 + math.exp(5)))  # binary arm never trains SM
    gen = results["corpora"]["stdlib"]["seeds"]["1"]["generation"]
    for arm in ("binary", "sm"):
        assert [gen[arm][str(b)]["steps"] for b in QUICK.nfe_budgets] == [4, 8, 16]
        for m in gen[arm].values():
            assert math.isfinite(m["nll"]) and 0.0 <= m["unigram_entropy"] <= math.log2(QUICK.vocab_size)
            assert 0.0 < m["distinct2"] <= 1.0 and len(m["nll_rows"]) == QUICK.gen_prompts
    task = results["corpora"]["structured"]["seeds"]["1"]["generation"]
    for arm in ("binary", "sm"):
        for alg in QUICK.task_algs:
            cells = [task[arm][alg][str(b)] for b in QUICK.nfe_budgets]
            assert [c["steps"] for c in cells] == [2, 4, 8]
            assert all(set(c["correct"]) <= {0, 1} and len(c["correct"]) == QUICK.gen_prompts for c in cells)
    task = results["corpora"]["tasks"]["seeds"]["1"]["generation"]
    for arm in ("binary", "sm"):  # 4-symbol answers: 1, 2 and 4 steps
        cells = [task[arm]["origin"][str(b)] for b in QUICK.nfe_budgets]
        assert [c["steps"] for c in cells] == [1, 2, 4] and all(len(c["correct"]) == QUICK.gen_prompts for c in cells)
    assert results["corpora"]["tasks"]["corpus"]["settings"]["hidden_size"] == QUICK.task_hidden_size
    # seed 1's arms are saved as checkpoints that load and reproduce the run's final held-out NLL
    from sm_dream import SoftMaskDreamForDiffusionLM

    for name in ("stdlib", "structured"):
        for arm in ("binary", "sm"):
            folder = tmp_path / "models" / name / arm
            model = SoftMaskDreamForDiffusionLM.from_pretrained(folder)
            mapped = model.soft_mask.mapped()
            last = results["corpora"][name]["seeds"]["1"][arm]["history"][-1]
            assert mapped["w_s"] == pytest.approx(last["w_s"], rel=1e-6), (name, arm)
            assert (folder / "tokenizer.json").read_text() == (tmp_path / f"tokenizer_{name}.json").read_text()
            assert torch.load(folder / "prompts.pt").shape == (QUICK.gen_prompts, QUICK.seq_len)
    report = (tmp_path / "report.md").read_text()
    # the documented re-render from results.json gives the same report
    import subprocess

    (tmp_path / "report.md").unlink()
    script = Path(__file__).resolve().parents[1] / "recipes" / "replication" / "report.py"
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, capture_output=True)
    assert (tmp_path / "report.md").read_text() == report
    for row in ("| binary arm |", "| SM arm, two passes (SM input) |", "| w_s |", "| stdlib | held-out NLL",
                "| structured | exact match, entropy, NFE 1/4 |", "| origin | 1/2 | 4 |", "| 1 | 16 |",
                "| tasks | exact match, origin, NFE 1/4 |", "| C1 | held-out NLL lower with SM |",
                "| C4 | accuracy gain from SM largest at NFE 1/4 |", "| C8 | early SM"):
        assert row in report, row


@pytest.mark.slow  # spawns two worker processes (each imports torch and transformers)
def test_parallel_jobs_match_in_process_jobs(tmp_path):
    args = ["--quick", "--seeds", "1", "2", "--continue_steps", "4"]
    parallel = main(args + ["--workers", "2", "--output_dir", str(tmp_path / "w2")])
    inline = main(args + ["--workers", "1", "--output_dir", str(tmp_path / "w1")])
    assert parallel["corpora"] == inline["corpora"]


# ---------------------------------------------------------------- the task corpus and the claims


@pytest.mark.parametrize("family", TASK_FAMILIES)
def test_task_answer_recomputed_from_the_head_by_another_route(family):
    rng = random.Random(5)
    for _ in range(100):
        head, tail = task_problem(rng, family, 5)
        words = head.split()
        assert len(tail.split()) == 5 and tail.startswith(" ")
        if family == "add":
            plus = words.index("+")
            a, b = int("".join(words[1:plus])), int("".join(words[plus + 1:-1]))
            expected = f"{a + b:05d}"
        elif family == "sort":
            expected = "".join(sorted(words[1:-1]))
        elif family == "reverse":
            expected = "".join(reversed(words[1:-1]))
        else:  # replay the brackets on a stack
            stack = []
            for w in words[1:-1]:
                if w in "([{<":
                    stack.append(w)
                else:
                    assert "([{<"[")]}>".index(w)] == stack.pop()
            expected = "".join(")]}>"["([{<".index(w)] for w in reversed(stack))
        assert tail.replace(" ", "") == expected
    with pytest.raises(ValueError, match="unknown task family 'mul'"):
        task_problem(rng, "mul", 4)


@pytest.fixture(scope="module")
def task_data():
    train = task_documents(TASK_FAMILIES, 4, 40, 12, seed=1)
    tokenizer = train_tokenizer((document_text(d) for d in train), 300)
    return tokenizer, task_documents(TASK_FAMILIES, 4, 6, 12, seed=2)


def test_task_verifier_scores_the_answer_exactly(task_data):
    tokenizer, heldout = task_data
    assert task_symbols_are_tokens(tokenizer, heldout)
    prompts = structured_prompts(tokenizer, heldout, seq_len=40, new_tokens=4, count=24)
    answers = {head + tail: tail for doc in heldout for _, head, tail in doc}
    digit = tokenizer.token_to_id("Ġ7")
    for row in prompts["windows"].tolist():
        reference = row[-4:]
        line = tokenizer.decode(row).split("\n")[-1]
        assert any(full.endswith(line) and answers[full] == tokenizer.decode(reference) for full in answers)
        assert exact_match(tokenizer, reference, reference) == 1  # the correct answer scores 1
        for position in range(4):  # any one-token change scores 0
            changed = list(reference)
            changed[position] = digit if reference[position] != digit else tokenizer.token_to_id("Ġ3")
            assert exact_match(tokenizer, changed, reference) == 0
    # another tokenisation of the same text (space and digit as separate byte tokens) scores 1, as
    # documented: the verifier compares decoded text, not ids
    ids = tokenizer.encode(" 1 0 4 2").ids
    spelled = [tokenizer.token_to_id(c) for c in "Ġ1Ġ0Ġ4Ġ2"]
    assert len(ids) == 4 and spelled != ids and exact_match(tokenizer, spelled, ids) == 1
    # a different spacing of the same digits is another answer text and scores 0
    assert exact_match(tokenizer, tokenizer.encode(" 10 4 2").ids, ids) == 0


def test_interval_verdicts_on_hand_made_intervals():
    assert interval_verdict(-0.04, -0.01, "below") == "reproduced"
    assert interval_verdict(0.01, 0.04, "below") == "not reproduced"
    assert interval_verdict(-0.01, 0.02, "below") == "inconclusive"
    assert interval_verdict(0.6, 0.8, "above", null=0.5) == "reproduced"
    assert interval_verdict(0.2, 0.45, "above", null=0.5) == "not reproduced"
    assert interval_verdict(0.45, 0.7, "above", null=0.5) == "inconclusive"
    assert interval_verdict(0.0, 0.1, "above") == "inconclusive"  # touching the null value is not excluding it
    assert combine(["reproduced", "reproduced"]) == "reproduced"
    assert combine(["reproduced", "inconclusive"]) == "inconclusive"
    assert combine(["reproduced", "not reproduced"]) == "not reproduced"
    with pytest.raises(ValueError, match="claimed='higher'"):
        interval_verdict(0.0, 1.0, "higher")


def test_c4_rows_from_hand_made_task_results():
    """SM right on every prompt at NFE 1/4 where binary is wrong, both right at NFE 1: C4 reproduced;
    the reverse: not reproduced; identical arms: inconclusive."""
    def results(sm_low, binary_low):
        seeds = {}
        for s in ("1", "2"):
            gen = {arm: {"origin": {"0.25": {"correct": c}, "1.0": {"correct": [1] * 4}}}
                   for arm, c in (("sm", sm_low), ("binary", binary_low))}
            seeds[s] = {"generation": gen}
        args = {"bootstrap_resamples": 200, "nfe_budgets": [0.25, 1.0], "task_algs": ["origin"]}
        return {"args": args, "corpora": {"tasks": {"seeds": seeds}}}

    for sm, binary, expected in (([1] * 4, [0] * 4, "reproduced"), ([0] * 4, [1] * 4, "not reproduced"),
                                 ([1, 0, 1, 0], [1, 0, 1, 0], "inconclusive")):
        rows = [r for r in claim_rows(results(sm, binary)) if r["claim"] == "C4"]
        assert len(rows) == 2 and {r["verdict"] for r in rows} == {expected}, (sm, binary)
    rows = {r["claim"]: r for r in claim_rows(results([1] * 4, [0] * 4))}
    assert rows["C1"]["verdict"].startswith("not run (") and rows["C8"]["verdict"].startswith("not run (")
    assert len({r["claim"] for r in claim_rows(results([1] * 4, [0] * 4))}) == 8


def test_claims_select_the_corpora_and_the_task_corpus_gets_its_own_sizes():
    from replication.train import claim_corpora, corpus_args

    assert claim_corpora(dataclasses.replace(QUICK, claims=["C4"])) == ["tasks"]
    assert claim_corpora(dataclasses.replace(QUICK, claims=["C4", "C1"])) == ["stdlib", "structured", "tasks"]
    assert claim_corpora(dataclasses.replace(QUICK, claims=[], corpora=["stdlib"])) == ["stdlib"]
    task = corpus_args(QUICK, "tasks")
    assert (task.seq_len, task.hidden_size, task.pretrain_steps) == (
        QUICK.task_seq_len, QUICK.task_hidden_size, QUICK.task_pretrain_steps)
    assert corpus_args(QUICK, "stdlib") is QUICK
    with pytest.raises(ValueError, match="unknown \\['C9'\\]"):
        dataclasses.replace(QUICK, claims=["C9"]).validate()
