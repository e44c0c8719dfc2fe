"""Sort-free top-p / top-k sampling (`sampling.py`) against the sort-based sampler it replaces.

The reference below is the previous implementation (Dream's): sort every row, cumulative mass, softmax
over the whole vocabulary, `torch.multinomial`. Its sort is stable here, so that tied logits are ranked
by id as `sampling.py` ranks them (torch's default sort leaves the order of ties unspecified).
"""

from types import SimpleNamespace

import pytest
import torch

from sm_dream import SoftMaskDreamForDiffusionLM
from sm_dream.model import logit_rows, sampling
from sm_dream.model.generation_utils import SoftMaskDreamGenerationConfig
from sm_dream.model.logit_rows import _model_p, step_rows
from sm_dream.model.sampling import MAX_CANDIDATES, SAMPLING_DRAWS, draw, sample_tokens, truncated_candidates
from sm_dream.model.unmasking import get_unmasking_algorithm
from sm_dream.tiny import DREAM_MASK_ID, DREAM_VOCAB_SIZE, small_vocab_config

INF = float("inf")


def reference_sample_tokens(logits, temperature=0.0, top_p=None, top_k=None, generator=None):
    """The sort-based sampler: tokens (n,) and the truncated distribution (n, V)."""
    logits = logits.float()
    if temperature > 0:
        logits = logits / temperature
    if top_p is not None and top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True, stable=True)
        probs = ordered.softmax(dim=-1)
        drop = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, probs.cumsum(-1) - probs > top_p)
        logits = logits.masked_fill(drop, -INF)
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -INF)
    probs = logits.softmax(dim=-1)
    if temperature > 0 and probs.shape[0] > 0:
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1), probs
    return probs.argmax(dim=-1), probs


def exact_kept(logits, temperature, top_p, top_k):
    """The kept set (n, V) bool of Dream's rule with masses in float64: sorted, unnormalised weights
    exp(z - max), dropped where the weight ranked before exceeds top_p * total (the sort-based sampler
    sums in float32, whose rounding can move a cut inside a very large nucleus by a few tokens)."""
    z = logits.float() / temperature if temperature > 0 else logits.float()
    z = z.double()
    if top_p is not None and top_p < 1.0:
        ordered, order = z.sort(dim=-1, descending=True, stable=True)
        weights = (ordered - ordered[:, :1]).exp()
        before = weights.cumsum(-1) - weights
        drop = before > top_p * weights.sum(-1, keepdim=True)
        z = z.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), -INF)
    if top_k is not None:
        z = z.masked_fill(z < z.topk(min(top_k, z.shape[-1]), dim=-1).values[:, -1:], -INF)
    return z.float().softmax(-1) > 0  # float32, as the sampler: underflowing tokens have probability 0


def _assert_same_as_reference(logits, temperature, top_p, top_k, seed=0):
    """The kept set of the exact rule; the sort-based sampler's kept set (rows with a huge nucleus: up to
    1e-4 of it apart, float32 rounding), distribution, tokens (rows with the same set) and generator state."""
    g_ref, g_new = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    want_tokens, want_probs = reference_sample_tokens(logits, temperature, top_p, top_k, g_ref)
    tokens, probs = sample_tokens(logits, temperature, top_p, top_k, g_new)
    assert torch.equal(probs > 0, exact_kept(logits, temperature, top_p, top_k)), "not the exact kept set"
    kept = (want_probs > 0).sum(-1)  # (n,)
    rounding = torch.where(kept > 10000, (kept * 1e-4).ceil(), 0)  # float32 masses: a few tokens of a huge set
    assert (((probs > 0) != (want_probs > 0)).sum(-1) <= rounding).all(), "not the sort's kept set"
    rows = ((probs > 0) == (want_probs > 0)).all(-1)
    torch.testing.assert_close(probs[rows], want_probs[rows], rtol=1e-5, atol=1e-7)
    assert torch.equal(tokens[rows], want_tokens[rows])
    assert torch.equal(g_new.get_state(), g_ref.get_state()), "the generator advanced differently"


def _rows(n, vocab, scale, seed):
    return torch.randn(n, vocab, generator=torch.Generator().manual_seed(seed)) * scale


HARD_ROWS = {  # name -> (n, V) logits
    "flat": lambda: torch.zeros(3, 100),
    "one dominant token": lambda: torch.cat([torch.full((2, 1), 30.0), _rows(2, 99, 1.0, 1)], dim=1),
    "ties at the cut": lambda: (_rows(4, 300, 1.5, 2)).round(),
    "suppressed ids": lambda: _rows(3, 200, 2.0, 3).index_fill_(-1, torch.arange(150, 200), -INF),
    "mostly suppressed": lambda: _rows(2, 64, 1.0, 4).index_fill_(-1, torch.arange(1, 64), -INF),
    "peaked": lambda: _rows(5, 1000, 8.0, 5),
    "broad": lambda: _rows(3, 5000, 0.05, 6),
}


@pytest.mark.parametrize("rows", list(HARD_ROWS))
@pytest.mark.parametrize("temperature", [0.0, 1e-5, 0.1, 1.0, 100.0])
@pytest.mark.parametrize("top_p,top_k", [(0.9, None), (1.0, None), (1e-6, None), (0.5, 3), (None, 4), (0.999, None)])
def test_same_kept_set_tokens_and_draws_as_the_sort(rows, temperature, top_p, top_k):
    _assert_same_as_reference(HARD_ROWS[rows](), temperature, top_p, top_k)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("scale", [0.11, 1.0, 10.0])  # a random tiny model's spread (huge nuclei) .. decisive
def test_dream_vocabulary_rows_match_the_sort(dtype, scale):
    logits = _rows(3, DREAM_VOCAB_SIZE, scale, 7).to(dtype)
    logits[:, 151667:] = -INF  # ids without a tokenizer entry, as a decoding step suppresses them
    logits[:, DREAM_MASK_ID] = -INF
    for seed, (temperature, top_p) in enumerate([(0.1, 0.9), (1.0, 0.9), (0.1, 0.5), (0.0, 0.95)]):
        _assert_same_as_reference(logits, temperature, top_p, None, seed)


def test_exact_masses_at_the_cut():
    # probabilities 1/2, 1/4, 1/8, 1/8: the mass before the 3rd token is exactly 0.75
    logits = torch.log(torch.tensor([[0.125, 0.5, 0.125, 0.25]]))
    assert (sample_tokens(logits, top_p=0.75)[1] > 0).tolist() == [[True, True, False, True]]  # 0.75 is not > 0.75
    assert (sample_tokens(logits, top_p=0.7)[1] > 0).tolist() == [[False, True, False, True]]
    # four tied tokens, top_p 0.5: the masses before them are 0, 1/4, 1/2, 3/4 in id order
    probs = sample_tokens(torch.zeros(1, 4), top_p=0.5)[1]
    torch.testing.assert_close(probs, torch.tensor([[1 / 3, 1 / 3, 1 / 3, 0.0]]))
    # top-k keeps ties at the k-th value
    assert (sample_tokens(torch.tensor([[3.0, 1.0, 2.0, 2.0, 0.0]]), top_k=2)[1] > 0).tolist() == [
        [True, False, True, True, False]]


def test_each_way_of_finding_the_nucleus_is_used_and_exact():
    """Peaked rows settle in the first candidates; a cut inside a run of ties, and broad rows, go through
    the histogram, kept as candidates while small and as whole rows when large."""
    peaked = _rows(4, 20000, 10.0, 8)
    tied = torch.zeros(2, 20000)
    tied[:, :41] = 20.0  # 41 tied leaders with nearly all the mass: the cut falls inside them
    broad = _rows(2, 20000, 0.3, 9)
    assert truncated_candidates(peaked, 0.0, 0.9).probs.shape[-1] == sampling.FIRST_K
    narrow = truncated_candidates(tied, 0.0, 0.9)
    assert narrow.ids is not None and sampling.FIRST_K < narrow.probs.shape[-1] <= MAX_CANDIDATES
    assert truncated_candidates(broad, 0.0, 0.9).ids is None
    for logits in (peaked, tied, broad, torch.cat([peaked[:1], tied[:1], broad[:1]])):
        _assert_same_as_reference(logits, 1.0, 0.9, None)


@pytest.mark.parametrize("fast_uniforms", [True, False])
def test_draw_is_torch_multinomial(fast_uniforms, monkeypatch):
    """`draw` gives multinomial's tokens and leaves the generator where multinomial leaves it, on the
    float64-uniform path and on the exponential_ one."""
    assert sampling._uniforms_reproduce_exponentials(), "this torch build draws exponentials differently (slower)"
    monkeypatch.setitem(sampling._EXACT_UNIFORMS, "cpu", fast_uniforms)
    logits = _rows(64, 3000, 3.0, 10)
    for top_p in (0.9, None):
        candidates = truncated_candidates(logits, 0.5, top_p)
        g_ref, g_new = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
        want = torch.multinomial(candidates.dense(), 1, generator=g_ref).squeeze(-1)
        assert torch.equal(candidates.vocabulary_ids(draw(candidates, 0.5, g_new)), want)
        assert torch.equal(g_new.get_state(), g_ref.get_state())


def _reference_sampled_chunk(f, p, algorithm, config, generator, model_confidence):
    """`logit_rows._sampled_chunk` as the sort-based sampler computed it."""
    x0, probs = reference_sample_tokens(f, config.temperature or 0.0, config.top_p, config.top_k, generator)
    if model_confidence:
        return x0, _model_p(f, p, x0)
    return x0, get_unmasking_algorithm(algorithm).confidence(probs, x0, generator)


DECODING_MODES = {
    "plain": {},
    "block": dict(block_length=8),
    "prefix cache": dict(block_length=8, use_cache=True),
    "dual cache": dict(block_length=8, dual_cache=True),
    "threshold": dict(block_length=8, use_cache=True, threshold=0.5, steps=None),
    "remasking": dict(remasking="rescale", remasking_eta=0.5),
}


@pytest.mark.parametrize("mode", list(DECODING_MODES))
@pytest.mark.parametrize("alg", ["entropy", "origin", "maskgit_plus", "topk_margin"])
@pytest.mark.parametrize("soft_masking", [True, False])
def test_decoding_gives_the_sort_based_tokens(mode, alg, soft_masking, monkeypatch):
    """Every decoding mode at the paper's sampling settings: the same tokens as the sort-based sampler."""
    torch.manual_seed(0)
    model = SoftMaskDreamForDiffusionLM(small_vocab_config(initializer_range=0.2, sm_init_scale=0.5)).eval()
    ids = torch.randint(1, 100, (2, 5))
    settings = dict(max_new_tokens=16, steps=8, alg=alg, temperature=0.1, top_p=0.9, soft_masking=soft_masking,
                    stop_when_finished=False)
    settings.update(DECODING_MODES[mode])
    if mode == "remasking" and alg == "origin":
        settings.update(alg="entropy")
    new = model.diffusion_generate(ids, generator=torch.Generator().manual_seed(4), **settings)
    monkeypatch.setattr(logit_rows, "_sampled_chunk", _reference_sampled_chunk)
    old = model.diffusion_generate(ids, generator=torch.Generator().manual_seed(4), **settings)
    assert torch.equal(new, old)


def test_step_rows_confidences_equal_the_dense_distribution():
    """Built-in confidences read the candidates; they equal those of the (n, V) distribution."""
    rows = _rows(12, 4000, 2.0, 12)
    for top_p, top_k in ((0.9, None), (0.5, 2), (None, 5)):
        config = SimpleNamespace(mask_token_id=3999, tokenizer_vocab_size=3990, temperature=0.7, top_p=top_p,
                                 top_k=top_k, sampling_draws="multinomial")
        allowed = rows.clone()
        allowed[:, 3990:], allowed[:, 3999] = -INF, -INF
        for algorithm in ("entropy", "maskgit_plus", "topk_margin", "origin"):
            g_ref, g_new = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
            x0, probs = reference_sample_tokens(allowed, 0.7, top_p, top_k, g_ref)
            want = get_unmasking_algorithm(algorithm).confidence(probs, x0, g_ref)
            got = step_rows(rows, algorithm, config, generator=g_new)
            assert torch.equal(got.tokens, x0)
            torch.testing.assert_close(got.confidence, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("top_p", [0.95, None])  # candidates, and whole rows
def test_inverse_cdf_draws_follow_the_distribution(top_p):
    """One uniform per row: token frequencies over 40,000 rows match the kept distribution (4 sigma), the
    draws are reproducible with a generator, and only kept tokens are drawn."""
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.04, 0.01])).repeat(40000, 1)
    candidates = truncated_candidates(logits, 1.0, top_p)
    probs = candidates.dense()[0]
    tokens = candidates.vocabulary_ids(draw(candidates, 1.0, torch.Generator().manual_seed(0), "inverse_cdf"))
    again = candidates.vocabulary_ids(draw(candidates, 1.0, torch.Generator().manual_seed(0), "inverse_cdf"))
    assert torch.equal(tokens, again)
    frequency = torch.bincount(tokens, minlength=5).double() / tokens.numel()
    sigma = (probs.double() * (1 - probs.double()) / tokens.numel()).sqrt()
    assert ((frequency - probs.double()).abs() <= 4 * sigma + 1e-12).all(), (frequency, probs)
    assert (frequency[probs == 0] == 0).all()


def test_sampling_draws_is_validated_and_reaches_the_sampler(monkeypatch):
    choices = r"\['multinomial', 'inverse_cdf'\]"
    with pytest.raises(ValueError, match=r"sampling_draws='fast' is invalid: choose one of " + choices):
        SoftMaskDreamGenerationConfig(sampling_draws="fast").validate()
    assert list(SAMPLING_DRAWS) == ["multinomial", "inverse_cdf"]
    seen = []
    real_draw = logit_rows.draw
    monkeypatch.setattr(logit_rows, "draw", lambda *args: seen.append(args[3]) or real_draw(*args))
    model = SoftMaskDreamForDiffusionLM(small_vocab_config(initializer_range=0.2)).eval()
    ids = torch.randint(1, 100, (1, 4))
    kwargs = dict(max_new_tokens=8, steps=4, alg="entropy", temperature=0.5, top_p=0.9)
    default = model.diffusion_generate(ids, generator=torch.Generator().manual_seed(1), **kwargs)
    assert seen and set(seen) == {"multinomial"}
    seen.clear()
    other = model.diffusion_generate(ids, generator=torch.Generator().manual_seed(1), sampling_draws="inverse_cdf",
                                     **kwargs)
    assert seen and set(seen) == {"inverse_cdf"} and other.shape == default.shape
