"""The fused per-step pass `step_rows` against the separate functions a step calls without it."""

from types import SimpleNamespace

import pytest
import torch

from sm_dream import SoftMaskDreamForDiffusionLM, shift_right
from sm_dream.model.logit_rows import step_rows, suppress_tokens
from sm_dream.model.row_ops import row_topk
from sm_dream.model.sampling import sample_tokens
from sm_dream.model.soft_masking import feedback_from_logits
from sm_dream.model.unmasking import (
    UNMASKING_ALGORITHMS,
    UnmaskingAlgorithm,
    get_unmasking_algorithm,
    max_prob_confidence,
    register_unmasking_algorithm,
    select_most_confident,
)
from sm_dream.tiny import small_vocab_config

MASK = 127
ALGORITHMS = ["origin", "maskgit_plus", "topk_margin", "entropy"]


def _config(temperature=0.0, top_p=None, top_k=None, limit=MASK + 1, mask=MASK):
    return SimpleNamespace(mask_token_id=mask, tokenizer_vocab_size=limit, temperature=temperature, top_p=top_p,
                           top_k=top_k, sampling_draws="multinomial")


def _decisive_rows():
    """Masked rows of an `initializer_range=0.2` model (decisive argmax and confidence gaps)."""
    torch.manual_seed(0)
    model = SoftMaskDreamForDiffusionLM(small_vocab_config(initializer_range=0.2)).eval()
    ids = torch.randint(1, MASK, (3, 14))
    ids[:, 4:] = MASK
    ids[1, 6] = 5
    positions = ids == MASK
    with torch.no_grad():
        rows = shift_right(model(ids).logits)[positions]  # (n, V), n = 29
    return rows, positions


def _separate(rows, algorithm, config, chunk, generator=None, sm_k=None, positions=None):
    """Today's calls: suppress_tokens -> sample_tokens -> confidence per chunk, feedback_from_logits."""
    alg, tokens, confidences = get_unmasking_algorithm(algorithm), [], []
    for part in rows.split(chunk):
        part = suppress_tokens(part, config.mask_token_id, config.tokenizer_vocab_size)
        x0, probs = sample_tokens(part, config.temperature, config.top_p, config.top_k, generator)
        tokens.append(x0)
        confidences.append(alg.confidence(probs, x0, generator))
    feedback = feedback_from_logits(rows, positions, k=sm_k, chunk_size=chunk) if sm_k else None
    return torch.cat(tokens), torch.cat(confidences), feedback


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("sm_k", [None, 3])
@pytest.mark.parametrize("chunk", [4, 29, 7])  # does not divide / equals / divides into 29 rows unevenly
def test_fused_pass_equals_separate_calls_at_temperature_zero(algorithm, sm_k, chunk):
    rows, positions = _decisive_rows()
    config = _config()
    want = _separate(rows, algorithm, config, chunk, torch.Generator().manual_seed(3), sm_k, positions)
    got = step_rows(rows, algorithm, config, sm_k, torch.Generator().manual_seed(3), positions, chunk_size=chunk)
    assert torch.equal(got.tokens, want[0])
    assert got.confidence.dtype == torch.float32
    torch.testing.assert_close(got.confidence, want[1], rtol=1e-5, atol=1e-5)  # entropy: Dream's +1e-10 dropped
    # the order of the confidences, hence which positions unmask, is the same
    assert torch.equal(got.confidence.argsort(stable=True), want[1].argsort(stable=True))
    if sm_k is None:
        assert got.feedback is None
    else:
        assert torch.equal(got.feedback.positions, positions)
        assert torch.equal(got.feedback.topk_ids, want[2].topk_ids)
        torch.testing.assert_close(got.feedback.entropy, want[2].entropy, rtol=0, atol=0)
        torch.testing.assert_close(got.feedback.topk_probs, want[2].topk_probs, rtol=0, atol=0)


@pytest.mark.parametrize("settings", [dict(temperature=0.7), dict(temperature=0.0, top_p=0.8),
                                      dict(temperature=1.3, top_k=5)])
@pytest.mark.parametrize("algorithm", ["entropy", "origin", "topk_margin"])
def test_fused_pass_with_sampling_draws_the_same_tokens_from_the_same_generator(settings, algorithm):
    rows, positions = _decisive_rows()
    config = _config(**settings)
    want = _separate(rows, algorithm, config, 6, torch.Generator().manual_seed(5), 2, positions)
    got = step_rows(rows, algorithm, config, 2, torch.Generator().manual_seed(5), positions, chunk_size=6)
    assert torch.equal(got.tokens, want[0])
    # the candidates' confidences: the dense rows' sums in another order (float32 rounding apart)
    torch.testing.assert_close(got.confidence, want[1], rtol=1e-6, atol=1e-6)
    assert torch.equal(got.confidence.argsort(stable=True), want[1].argsort(stable=True))
    torch.testing.assert_close(got.feedback.entropy, want[2].entropy, rtol=0, atol=0)


def test_confidences_match_a_float64_reference_on_scaled_logits():
    torch.manual_seed(1)
    rows = torch.randn(10, 300) * 4
    config = _config(limit=290, mask=288)
    allowed = rows.double().clone()
    allowed[:, 290:], allowed[:, 288] = float("-inf"), float("-inf")
    p = allowed.softmax(-1)
    logp = allowed.log_softmax(-1)
    top2 = p.topk(2, dim=-1).values
    reference = {"maskgit_plus": p.max(-1).values, "topk_margin": top2[:, 0] - top2[:, 1],
                 "entropy": torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)}
    for algorithm, want in reference.items():
        for sm_k in (None, 4):
            got = step_rows(rows, algorithm, config, sm_k, positions=torch.ones(2, 5, dtype=torch.bool), chunk_size=3)
            assert torch.equal(got.tokens, p.argmax(-1))
            torch.testing.assert_close(got.confidence.double(), want, rtol=1e-5, atol=1e-6)


def test_a_dominant_suppressed_token_does_not_underflow_the_allowed_distribution():
    """The mask id 200 nats above every allowed logit: SM sees it, sampling must not."""
    torch.manual_seed(2)
    rows = torch.randn(4, 64)
    rows[:, 60] = 200.0  # the mask id
    rows[2, 60] = 1.0  # one ordinary row in the same chunk
    config = _config(limit=62, mask=60)
    for algorithm in ("maskgit_plus", "topk_margin", "entropy"):
        want = _separate(rows, algorithm, config, 4)
        got = step_rows(rows, algorithm, config, 2, positions=torch.ones(1, 4, dtype=torch.bool))
        assert torch.equal(got.tokens, want[0])
        torch.testing.assert_close(got.confidence, want[1], rtol=1e-5, atol=1e-5)
        assert got.feedback.topk_ids[0, 0] == 60 and got.feedback.entropy[0] < 1e-6


def test_registered_algorithm_goes_through_its_own_confidence():
    rows, positions = _decisive_rows()
    register_unmasking_algorithm("entropy_test_copy", UnmaskingAlgorithm(max_prob_confidence, select_most_confident))
    try:
        got = step_rows(rows, "entropy_test_copy", _config(), None)
        want = _separate(rows, "maskgit_plus", _config(), 64)
        assert torch.equal(got.tokens, want[0])
        torch.testing.assert_close(got.confidence, want[1], rtol=0, atol=0)
    finally:
        del UNMASKING_ALGORITHMS["entropy_test_copy"]


def test_full_vocabulary_feedback_keeps_the_raw_rows():
    rows, positions = _decisive_rows()
    got = step_rows(rows, "entropy", _config(), 3, positions=positions, full_vocab=True)
    want = feedback_from_logits(rows, positions, k=3, full_vocab=True)
    assert torch.equal(got.feedback.logits, want.logits) and got.feedback.logits.dtype == torch.float32


def test_bfloat16_rows_and_no_rows():
    rows, positions = _decisive_rows()
    got = step_rows(rows.bfloat16(), "entropy", _config(), 3, positions=positions)
    want = _separate(rows.bfloat16().float(), "entropy", _config(), 64, sm_k=3, positions=positions)
    assert torch.equal(got.tokens, want[0]) and torch.equal(got.feedback.topk_ids, want[2].topk_ids)
    empty = step_rows(rows[:0], "entropy", _config(), 3, positions=torch.zeros(2, 3, dtype=torch.bool))
    assert empty.tokens.shape == (0,) and empty.confidence.shape == (0,) and empty.feedback.topk_ids.shape == (0, 3)


def test_bad_arguments_are_rejected_with_the_fix():
    rows, positions = _decisive_rows()
    with pytest.raises(ValueError, match="sm_k=3 needs the .* positions of the 29 rows; got None"):
        step_rows(rows, "entropy", _config(), 3)
    fewer = positions.clone()
    fewer[0, -1] = False
    with pytest.raises(ValueError, match="got 28 positions"):
        step_rows(rows, "entropy", _config(), 3, positions=fewer)
    with pytest.raises(ValueError, match="alg='nope' is unknown; choose one of"):
        step_rows(rows, "nope", _config())


@pytest.mark.parametrize("vocab", [64 * 256, 64 * 256 + 37])  # whole blocks / a short last block
def test_row_topk_block_search_equals_topk_and_argmax(vocab):
    torch.manual_seed(4)
    x = torch.randn(6, vocab)
    x[1, -1] = 50.0  # the maximum in the short last block
    x[2, 100], x[2, 9000] = 40.0, 40.0  # a tie: argmax returns the first
    x[3, -3:] = float("-inf")
    x[4] = float("-inf")  # nothing allowed: argmax gives 0
    for k in (1, 2, 5):
        values, ids = row_topk(x, k)
        want = x.topk(k, dim=-1)
        torch.testing.assert_close(values, want.values, rtol=0, atol=0)
        if k == 1:
            assert torch.equal(ids.squeeze(-1), x.argmax(-1))
        else:  # same values; ids may differ only between tied entries
            torch.testing.assert_close(x.gather(-1, ids), want.values, rtol=0, atol=0)


def test_fused_pass_at_a_large_vocabulary_equals_separate_calls():
    """Past 64 blocks of 256 the block search runs: tokens, feedback and confidence order as before."""
    torch.manual_seed(6)
    rows = torch.randn(9, 64 * 256 + 100) * 4
    config = _config(limit=64 * 256 + 90, mask=64 * 256 + 80)
    positions = torch.ones(3, 3, dtype=torch.bool)
    for algorithm in ALGORITHMS:
        want = _separate(rows, algorithm, config, 4, torch.Generator().manual_seed(1), 3, positions)
        got = step_rows(rows, algorithm, config, 3, torch.Generator().manual_seed(1), positions, chunk_size=4)
        assert torch.equal(got.tokens, want[0]) and torch.equal(got.feedback.topk_ids, want[2].topk_ids)
        torch.testing.assert_close(got.confidence, want[1], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got.feedback.entropy, want[2].entropy, rtol=0, atol=0)


def test_compile_never_runs_on_cpu_and_a_failed_compile_falls_back_to_eager(monkeypatch, caplog):
    from sm_dream.model import logit_rows

    rows, positions = _decisive_rows()
    want = step_rows(rows, "entropy", _config(), 3, positions=positions)

    def no_compile(*args, **kwargs):
        raise AssertionError("torch.compile called for CPU rows")

    monkeypatch.setattr(torch, "compile", no_compile)
    monkeypatch.setattr(logit_rows, "_COMPILED", {})
    assert torch.equal(step_rows(rows, "entropy", _config(), 3, positions=positions).tokens, want.tokens)

    def broken(fn, **kwargs):  # what a CUDA machine without a working compiler would give
        def run(f, *args):
            f.fill_(0.0)  # a partial run that already touched the work buffer
            raise RuntimeError("no triton")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    run = logit_rows._fast_chunk_runner(torch.device("cuda"))  # selects the compiled path without a GPU
    f, z, p = (torch.empty_like(rows) for _ in range(3))
    f.copy_(rows)
    with caplog.at_level("WARNING"):
        part, x0, conf = run(rows, f, z, p, 3, "entropy", MASK, MASK + 1)
    assert "running it eagerly" in caplog.text and logit_rows._COMPILED["fast_chunk"] is None
    assert torch.equal(x0, want.tokens) and torch.equal(part[1], want.feedback.topk_ids)
    torch.testing.assert_close(conf, want.confidence, rtol=0, atol=0)
    assert logit_rows._fast_chunk_runner(torch.device("cuda")).__name__ == "eager"  # no second attempt
