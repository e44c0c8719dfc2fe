import pytest
import torch

from sm_dream.training.noise import MIN_T, apply_mask, sample_noise


def _response_mask(prompt_lens, resp_lens, length):
    rows = []
    for p, r in zip(prompt_lens, resp_lens):
        row = torch.zeros(length, dtype=torch.bool)
        row[p : p + r] = True
        rows.append(row)
    return torch.stack(rows)


def test_only_response_tokens_are_masked_and_each_row_gets_one():
    resp = _response_mask([3, 10, 0, 5, 7], [1, 20, 30, 0, 2], length=32)
    for _ in range(50):
        draw = sample_noise(resp, 0.2, 0.8, p_sm=0.5)
        assert not bool((draw.masked & ~resp).any())
        has_response = resp.any(-1)
        assert torch.equal(draw.masked.any(-1), has_response)  # >= 1 masked where there is a response, else none
        assert bool(((draw.t >= 0.2) & (draw.t <= 0.8)).all())
        assert draw.t.shape == (5,) and draw.sm_on.dtype == torch.bool


def test_masked_fraction_follows_t_per_row():
    resp = torch.ones(6, 4000, dtype=torch.bool)
    draw = sample_noise(resp, 0.0, 1.0, p_sm=0.0)
    frac = draw.masked.float().mean(-1)
    # Binomial(4000, t) / 4000 has std <= 0.008: 0.04 is five sigmas.
    assert torch.allclose(frac, draw.t, atol=0.04), (frac, draw.t)


def test_p_sm_extremes_and_rate():
    resp = torch.ones(4000, 4, dtype=torch.bool)
    assert not bool(sample_noise(resp, p_sm=0.0).sm_on.any())
    assert bool(sample_noise(resp, p_sm=1.0).sm_on.all())
    rate = sample_noise(resp, p_sm=0.3).sm_on.float().mean().item()
    assert abs(rate - 0.3) < 0.04


def test_seeded_rows_do_not_depend_on_the_batch():
    resp = _response_mask([2, 4, 1, 6], [10, 8, 12, 5], length=20)
    seeds = torch.tensor([11, 12, 13, 14])
    full = sample_noise(resp, seeds=seeds)
    torch.rand(100)  # moving the global RNG must not matter
    order = torch.tensor([2, 0])
    part = sample_noise(resp[order], seeds=seeds[order])
    assert torch.equal(part.masked, full.masked[order])
    assert torch.equal(part.t, full.t[order])
    assert torch.equal(part.sm_on, full.sm_on[order])
    other = sample_noise(resp, seeds=seeds + 100)
    assert not torch.equal(other.t, full.t)


def test_generator_makes_draws_reproducible():
    resp = torch.ones(3, 9, dtype=torch.bool)
    a = sample_noise(resp, generator=torch.Generator().manual_seed(5))
    b = sample_noise(resp, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.masked, b.masked) and torch.equal(a.t, b.t) and torch.equal(a.sm_on, b.sm_on)


def test_zero_lower_bound_is_clamped():
    resp = torch.ones(2, 4, dtype=torch.bool)
    assert float(sample_noise(resp, 0.0, 0.0).t.min()) == pytest.approx(MIN_T)


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(low=0.8, high=0.2), r"b_l, b_h\)=\(0.8, 0.2\)"), (dict(low=-0.1, high=0.5), "b_l"),
     (dict(p_sm=1.5), "p_sm=1.5")],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_noise(torch.ones(1, 3, dtype=torch.bool), **kwargs)


def test_apply_mask():
    ids = torch.tensor([[1, 2, 3, 4]])
    masked = torch.tensor([[False, True, False, True]])
    assert apply_mask(ids, masked, 9).tolist() == [[1, 9, 3, 9]]
