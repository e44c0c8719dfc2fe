"""The small replication: data, metrics, report, and the quick mode end to end."""

import dataclasses
import json
import math
import sys
import zlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sm_dream.noise import sample_noise


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
    train_phase,
)
from replication.data import split_files, stdlib_files, token_windows, train_tokenizer, window_order  # noqa: E402
from replication.evaluate import diffusion_nll, distinct_bigrams, heldout_nll, unigram_entropy  # noqa: E402
from replication.report import markdown_report  # noqa: E402

QUICK = ReplicationArgs(**QUICK_OVERRIDES)


@pytest.fixture(scope="module")
def small_data():
    train, held = split_files(stdlib_files(), max_files=6)
    tokenizer = train_tokenizer(train, 400)
    return tokenizer, token_windows(tokenizer, train, 32), token_windows(tokenizer, held, 32)


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
    again = train_tokenizer(split_files(stdlib_files(), max_files=6)[0], 400)
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


def test_parse_args_quick_overrides_and_flags_win():
    args, out, quick = parse_args(["--quick", "--seeds", "4", "5", "--nfe_budgets", "0.5", "1", "--lr_sm", "0.02"])
    assert quick and out == "outputs/replicate_small_quick"
    assert args.seeds == [4, 5] and args.nfe_budgets == [0.5, 1.0] and args.lr_sm == 0.02
    assert args.pretrain_steps == QUICK_OVERRIDES["pretrain_steps"]
    full, out, quick = parse_args([])
    assert not quick and full == ReplicationArgs() and out == "outputs/replicate_small"


@pytest.mark.parametrize(
    "field, value, message",
    [("seeds", [], "seeds is empty"), ("gen_new_tokens", 48, "gen_new_tokens=48"), ("nfe_budgets", [2.0], "nfe_budgets")],
)
def test_invalid_args_raise_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(QUICK, **{field: value}).validate()


def _fake_results():
    """Two seeds with known finals, to check the report's arithmetic."""
    def arm(nll_binary, nll_sm=None, w_s=0.1):
        final = {"nll_binary": nll_binary, "w_s": w_s, "w_a": 6.0, "w_b": -0.7}
        if nll_sm is not None:
            final["nll_sm"] = nll_sm
        gen = {str(b): {"nll": 3.0 + b, "unigram_entropy": 7.0, "distinct2": 0.9, "steps": int(64 * b)}
               for b in (0.25, 0.5, 1.0)}
        return {"history": [{"step": 10, **final}], "final": final, "generation": gen}

    ref = {"nll": 2.5, "unigram_entropy": 7.5, "distinct2": 0.95}
    return {
        "args": dataclasses.asdict(ReplicationArgs()), "command": "python recipes/replicate_small.py",
        "corpus": {"python": "3.x", "train_files": 1, "train_tokens": 10, "heldout_files": ["a.py"], "vocab_size": 9},
        "pretrain": {"history": [{"step": 5, "nll_binary": 4.0, "w_s": 0.0067, "w_a": 6.67, "w_b": -0.75}]},
        "seeds": {"1": {"binary": arm(3.0), "sm": arm(3.2, 2.9, w_s=0.2), "reference": ref},
                  "2": {"binary": arm(3.2), "sm": arm(3.4, 3.3, w_s=0.4), "reference": ref}},
        "timing": {"total_s": 600.0},
    }


def test_markdown_report_means_stds_and_paired_differences():
    text = markdown_report(_fake_results())
    assert "| binary arm | 3.1000 ± 0.1414 |" in text
    assert "| SM arm, two passes (SM input) | 3.1000 ± 0.2828 |" in text
    assert "SM is lower in 1 of 2 seeds (per seed: -0.1000, +0.1000)" in text
    assert "| w_s | 0.0067 | 0.3000 ± 0.1414 |" in text
    assert "| 1/4 | 16 | sm | 3.2500 ± 0.0000 | 7.000 ± 0.000 | 0.900 ± 0.000 |" in text
    assert "| - | - | reference text | 2.5000 ± 0.0000 |" in text
    assert "1/4: 0.0000 ± 0.0000 (SM lower in 0 of 2)" in text  # the fake arms generate equally well


def test_quick_mode_end_to_end(tmp_path):
    """The pipeline runs and its outputs are complete and sane (quick mode makes no claim)."""
    results = main(["--quick", "--output_dir", str(tmp_path)])  # the recipe's entry point
    for name in ("results.json", "report.md", "report.png", "tokenizer.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["args"] == dataclasses.asdict(QUICK) and saved["command"].endswith(f"--quick --output_dir {tmp_path}")
    seed = results["seeds"]["1"]
    log_v = math.log(QUICK.vocab_size)
    for arm, keys in (("binary", ["nll_binary"]), ("sm", ["nll_binary", "nll_sm"])):
        final = seed[arm]["final"]
        assert all(0.0 < final[k] < 1.5 * log_v for k in keys)
        assert 0.0 < final["w_s"] < 1.0 and final["w_a"] > 0.0 and final["w_b"] < 0.0
        assert [h["step"] for h in seed[arm]["history"]] == list(range(2, 9, 2))
        gen = seed[arm]["generation"]
        assert [gen[str(b)]["steps"] for b in QUICK.nfe_budgets] == [4, 8, 16]
        for m in gen.values():
            assert math.isfinite(m["nll"]) and 0.0 <= m["unigram_entropy"] <= math.log2(QUICK.vocab_size)
            assert 0.0 < m["distinct2"] <= 1.0
    assert seed["binary"]["final"]["w_s"] == pytest.approx(1 / (1 + math.exp(5)))  # binary arm never trains SM
    report = (tmp_path / "report.md").read_text()
    for row in ("| binary arm |", "| SM arm, two passes (SM input) |", "| w_s |", "| reference text |",
                "| 1/4 | 4 | binary |", "| 1/2 | 8 | sm |", "| 1 | 16 | sm |"):
        assert row in report, row


@pytest.mark.slow  # spawns two worker processes (each imports torch and transformers)
def test_parallel_arms_match_in_process_arms(tmp_path):
    args = ["--quick", "--seeds", "1", "2", "--continue_steps", "4"]
    parallel = main(args + ["--workers", "2", "--output_dir", str(tmp_path / "w2")])
    inline = main(args + ["--workers", "1", "--output_dir", str(tmp_path / "w1")])
    assert parallel["seeds"] == inline["seeds"] and parallel["pretrain"] == inline["pretrain"]
