"""ReMDM schedules: probabilities against hand-derived values and the marginal-preservation identity."""

import math

import pytest
import torch

from sm_dream.model.remasking import (
    REMASKING_SCHEDULES,
    CapSchedule,
    LoopSchedule,
    RescaleSchedule,
    get_remasking_schedule,
    remask_plan,
    sample_remask,
)


# (schedule, t, s, expected unmask probability, expected sigma), derived by hand from ReMDM's
# posterior: masked -> decoded w.p. (a_s - (1 - sigma) a_t) / (1 - a_t).
CASES = [
    # cap, eta 0.04, a = 1 - t: a_t = .5, a_s = .51, sigma = min(.04, .49/.5); p = (.51 - .96*.5)/.5
    (CapSchedule(0.04), 0.5, 0.49, 0.06, 0.04),
    # near the end the cap binds: sigma = (1 - .99)/.98, and then every mask is decoded
    (CapSchedule(0.04), 0.02, 0.01, 1.0, 0.01 / 0.98),
    # t = 1: nothing decoded yet, a_t = 0: p = a_s = .1 (sigma is irrelevant: no decoded token)
    (CapSchedule(0.04), 1.0, 0.9, 0.1, 0.04),
    # rescale, eta .5: sigma_max = min(1, .49/.5) = .98, sigma = .49; p = (.51 - .51*.5)/.5
    (RescaleSchedule(0.5), 0.5, 0.49, 0.51, 0.49),
    # loop phase 1: a(t) = .9 (1 - t)/.45: a(.8) = .4, a(.79) = .42, sigma 0: p = .02/.6
    (LoopSchedule(0.02, 0.55, 0.05, 0.9), 0.8, 0.79, 1.0 / 30.0, 0.0),
    # loop phase 2: a frozen at .9, sigma = eta: p = .9 * .02 / .1
    (LoopSchedule(0.02, 0.55, 0.05, 0.9), 0.3, 0.29, 0.18, 0.02),
    # loop phase 3: a(t) = 1 - t * .1/.05: a(.04) = .92, a(.03) = .94: p = .02/.08
    (LoopSchedule(0.02, 0.55, 0.05, 0.9), 0.04, 0.03, 0.25, 0.0),
    # crossing t_on: a(.56) = .9 * .44/.45, a(.54) = .9, sigma 0 (not inside the loop yet)
    (LoopSchedule(0.02, 0.55, 0.05, 0.9), 0.56, 0.54, (0.9 - 0.88) / (1 - 0.88), 0.0),
]


@pytest.mark.parametrize("schedule,t,s,unmask,sigma", CASES)
def test_probabilities_match_hand_derived_values(schedule, t, s, unmask, sigma):
    got = schedule.probabilities(t, s)
    assert got.unmask == pytest.approx(unmask, abs=1e-9)
    assert got.remask == pytest.approx(sigma, abs=1e-9)


@pytest.mark.parametrize("name,params", [("cap", {"eta": 0.3}), ("rescale", {"eta": 0.7}),
                                         ("loop", {"eta": 0.05, "t_on": 0.7, "t_off": 0.2, "alpha_on": 0.6})])
def test_expected_mask_count_follows_the_schedule_marginals(name, params):
    """(1 - a_t) N masks, a_t N decoded -> (1 - a_s) N masks expected after the step (sigma < sigma_max)."""
    schedule = get_remasking_schedule(name, **params)
    times = torch.linspace(1, 1e-3, 65).tolist()
    for t, s in zip(times[:-1], times[1:]):
        a_t, a_s = schedule.alpha(t), schedule.alpha(s)
        p = schedule.probabilities(t, s)
        masks_after = (1 - a_t) * (1 - p.unmask) + a_t * p.remask
        assert masks_after == pytest.approx(1 - a_s, abs=1e-9)
        assert 0.0 <= p.remask <= schedule.sigma_max(t, s) + 1e-12


def test_zero_sigma_is_dream_schedule():
    times = torch.linspace(1, 1e-3, 9)
    for schedule in (get_remasking_schedule(None), CapSchedule(0.0), RescaleSchedule(0.0)):
        plan = remask_plan(schedule, times)
        assert len(plan) == 8 and plan[-1].unmask == 1.0 and plan[-1].remask == 0.0
        for i, step in enumerate(plan[:-1]):
            assert step.remask == 0.0
            assert step.unmask == pytest.approx(1 - float(times[i + 1]) / float(times[i]), rel=1e-6)


def test_loop_holds_the_mask_share_constant_inside_the_loop():
    times = torch.linspace(1, 1e-3, 101).tolist()
    plan = remask_plan(LoopSchedule(), torch.tensor(times))
    inside = [p for p, t, s in zip(plan[:-1], times[:-1], times[1:]) if t <= 0.55 and s >= 0.05]
    assert len(inside) >= 45
    for p in inside:
        assert p.remask == pytest.approx(0.02) and p.unmask == pytest.approx(0.9 * 0.02 / 0.1)


def test_sample_remask_draws_only_among_candidates():
    candidates = torch.zeros(4, 1000, dtype=torch.bool)
    candidates[:, :500] = True
    assert not sample_remask(candidates, 0.0).any()
    assert torch.equal(sample_remask(candidates, 1.0), candidates)
    drawn = sample_remask(candidates, 0.25, generator=torch.Generator().manual_seed(0))
    assert not drawn[:, 500:].any()
    assert abs(drawn.float().sum().item() / 2000 - 0.25) < 4 * math.sqrt(0.25 * 0.75 / 2000)


def test_sample_remask_with_sigma_zero_draws_no_random_numbers():
    torch.manual_seed(3)
    sample_remask(torch.ones(2, 8, dtype=torch.bool), 0.0)
    after = torch.rand(1)
    torch.manual_seed(3)
    assert torch.equal(after, torch.rand(1))


def test_registry_and_parameter_errors():
    assert list(REMASKING_SCHEDULES) == ["none", "cap", "rescale", "loop"]
    with pytest.raises(ValueError,
                       match="remasking='conf' is unknown; choose one of \\['none', 'cap', 'rescale', 'loop'\\]"):
        get_remasking_schedule("conf")
    with pytest.raises(ValueError, match="remasking_eta=1.5 must lie in \\[0, 1\\]"):
        get_remasking_schedule("cap", eta=1.5)
    with pytest.raises(ValueError, match="0 < t_off < t_on < 1"):
        get_remasking_schedule("loop", t_on=0.1, t_off=0.2)
    with pytest.raises(ValueError, match="remasking_alpha_on=1.0 must lie in \\(0, 1\\)"):
        get_remasking_schedule("loop", alpha_on=1.0)
    with pytest.raises(ValueError, match="remasking='cap' takes no parameters \\['t_on'\\]"):
        get_remasking_schedule("cap", t_on=0.5)
    assert get_remasking_schedule("cap", eta=None).eta == 0.04  # None means "the default"
