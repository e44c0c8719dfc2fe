"""The SM maths of SPEC section 1, each checked against an independent computation."""

import math

import pytest
import torch

from sm_dream import SoftMaskDreamForDiffusionLM, feedback_from_logits, schedule_factor, shift_right
from sm_dream.model.soft_masking import SM_SCHEDULE_FUNCTIONS, entropy_from_logits
from sm_dream.tiny import small_vocab_config

MASK = 127


def _model(**overrides):
    return SoftMaskDreamForDiffusionLM(small_vocab_config(**overrides)).eval()


def _canvas(b=2, prompt=5, masks=7):
    ids = torch.randint(1, MASK, (b, prompt + masks))
    ids[:, prompt:] = MASK
    ids[:, prompt + 2] = 9  # an already unmasked response position
    return ids


def _set_lambda_one(model):
    """w_s = 1, w_a = 1e4, w_b = -100: lambda = sigmoid(1e4 * (100 - H)) = 1 exactly in float32."""
    with torch.no_grad():
        model.soft_mask.s_raw.fill_(math.inf)
        model.soft_mask.a_raw.fill_(1e4)
        model.soft_mask.b_raw.fill_(100.0)


def _set_moderate_lambda(model):
    """w_a ~ 0.47, w_b ~ 0: lambda ~ w_s * sigmoid(-0.47 H), well inside (0, w_s) for a random model."""
    with torch.no_grad():
        model.soft_mask.a_raw.fill_(-0.5)
        model.soft_mask.b_raw.fill_(-8.0)


def _feedback(model, ids, k, everywhere=False):
    with torch.no_grad():
        logits = shift_right(model(ids).logits)  # (b, l, V)
    positions = torch.ones_like(ids, dtype=torch.bool) if everywhere else ids == MASK
    return logits, feedback_from_logits(logits, positions, k)


def test_entropy_matches_float64_reference_including_zero_probabilities():
    logits = torch.randn(4, 6, 128) * 3
    logits[0, 0, :100] = -math.inf  # 0 log 0 terms
    p = torch.softmax(logits.double(), -1)
    reference = -(torch.where(p > 0, p * p.log(), torch.zeros_like(p))).sum(-1)
    got = entropy_from_logits(logits)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), reference, rtol=1e-5, atol=1e-5)
    fb = feedback_from_logits(logits.to(torch.bfloat16), torch.ones(4, 6, dtype=torch.bool), k=3)
    assert fb.entropy.dtype == torch.float32


def test_feedback_rows_and_full_tensor_agree():
    logits = torch.randn(2, 9, 128)
    positions = torch.rand(2, 9) > 0.5
    a = feedback_from_logits(logits, positions, k=4)
    b = feedback_from_logits(logits[positions], positions, k=4, chunk_size=3)
    for name in ("entropy", "topk_ids", "topk_probs"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name))
    torch.testing.assert_close(a.topk_probs.sum(-1), torch.ones(int(positions.sum())))
    with pytest.raises(ValueError, match="logit rows"):
        feedback_from_logits(logits[positions][:-1], positions, k=4)


def test_lambda_formula():
    model = _model()
    entropy = torch.linspace(0, 5, 11)
    w_s, w_a, w_b = (model.soft_mask.mapped()[k] for k in ("w_s", "w_a", "w_b"))
    expected = torch.tensor([w_s / (1 + math.exp(-w_a * (-h - w_b))) for h in entropy.tolist()])
    torch.testing.assert_close(model.soft_mask(entropy), expected)


@pytest.mark.parametrize("how", ["scale0", "disabled"])
def test_lambda_zero_gives_the_plain_masked_input_exactly(how):
    model = _model(sm_init_scale=0.9, sm_enabled=how != "scale0")
    _set_lambda_one(model)
    ids = _canvas()
    _, fb = _feedback(model, ids, k=3)
    if how == "scale0":
        fb = fb.with_scale(0.0)
    else:
        model.config.sm_enabled = False
    plain = model.build_inputs_embeds(ids, None)
    assert torch.equal(model.build_inputs_embeds(ids, fb), plain)
    assert torch.equal(model(ids, sm_feedback=fb).logits, model(ids).logits)


def test_lambda_one_k1_gives_the_argmax_embedding():
    model = _model()
    _set_lambda_one(model)
    ids = _canvas()
    logits, fb = _feedback(model, ids, k=1)
    soft = model.build_inputs_embeds(ids, fb)
    masked = ids == MASK
    argmax = logits.argmax(-1)  # (b, l)
    E = model.model.embed_tokens.weight
    assert torch.equal(soft[masked], E[argmax[masked]])


def test_gather_blend_equals_dense_blend_and_leaves_other_positions():
    model = _model(sm_init_scale=0.6, sm_top_k=5)
    _set_moderate_lambda(model)
    ids = _canvas()
    logits, fb = _feedback(model, ids, k=5, everywhere=True)  # feedback offered at every position
    soft = model.build_inputs_embeds(ids, fb)
    plain = model.build_inputs_embeds(ids, None)
    masked = ids == MASK
    # dense reference: pi as a |V|-wide vector, e = (1 - lam) E[mask] + lam * pi @ E
    p = torch.softmax(logits.double(), -1)
    top_p, top_i = p.topk(5, -1)
    pi = torch.zeros_like(p).scatter(-1, top_i, top_p / top_p.sum(-1, keepdim=True))
    H = -(p * p.log()).sum(-1)
    m = model.soft_mask.mapped()
    lam = m["w_s"] / (1 + torch.exp(-m["w_a"] * (-H - m["w_b"])))  # (b, l)
    E = model.model.embed_tokens.weight.double()
    dense = (1 - lam)[..., None] * E[MASK] + lam[..., None] * (pi @ E)
    torch.testing.assert_close(soft[masked].double(), dense[masked], rtol=1e-5, atol=1e-6)
    assert (soft[masked] - plain[masked]).abs().max() > 1e-3  # the blend did something
    assert torch.equal(soft[~masked], plain[~masked])  # prompt and unmasked positions untouched


def test_per_sequence_scale_switches_rows():
    model = _model(sm_init_scale=0.6)
    _set_moderate_lambda(model)
    ids = _canvas()
    _, fb = _feedback(model, ids, k=3)
    soft = model.build_inputs_embeds(ids, fb.with_scale(torch.tensor([0.0, 1.0])))
    plain = model.build_inputs_embeds(ids, None)
    assert torch.equal(soft[0], plain[0])
    assert not torch.equal(soft[1], plain[1])


def test_full_vocab_variant_is_a_tempered_softmax_blend():
    model = _model(sm_full_vocab=True, sm_init_scale=0.5, sm_init_temperature=2.0)
    ids = _canvas()
    with torch.no_grad():
        logits = shift_right(model(ids).logits)
    masked = ids == MASK
    fb = feedback_from_logits(logits, masked, k=3, full_vocab=True)
    soft = model.build_inputs_embeds(ids, fb)
    pi = torch.softmax(logits[masked].double() / 2.0, -1)
    lam = model.soft_mask(fb.entropy).double()
    E = model.model.embed_tokens.weight.double()
    expected = (1 - lam)[:, None] * E[MASK] + lam[:, None] * (pi @ E)
    torch.testing.assert_close(soft[masked].double(), expected, rtol=1e-5, atol=1e-6)


def test_gradients_reach_the_sm_parameters():
    model = _model(sm_full_vocab=True, sm_init_scale=0.5).train()
    ids = _canvas()
    with torch.no_grad():
        fb = feedback_from_logits(shift_right(model(ids).logits), ids == MASK, k=3, full_vocab=True)
    model(ids, sm_feedback=fb).logits.pow(2).mean().backward()
    for name in ("s_raw", "a_raw", "b_raw", "tau_raw"):
        grad = getattr(model.soft_mask, name).grad
        assert grad is not None and grad.abs().item() > 0, name


@pytest.mark.parametrize(
    "name, expected",  # factor at f = 0, 0.5, 1 with t' = 0.2
    [
        ("none", (1.0, 1.0, 1.0)),
        ("sm_then_binary", (1.0, 1.0, 0.0)),
        ("binary_then_sm", (0.0, 0.0, 1.0)),
        ("linear_sm_to_binary", (1.0, 0.5, 0.0)),
        ("linear_binary_to_sm", (0.0, 0.5, 1.0)),
    ],
)
def test_schedules_at_start_middle_end(name, expected):
    got = tuple(schedule_factor(name, step, 10, threshold=0.2) for step in (0, 5, 10))
    assert got == expected


def test_schedule_threshold_and_errors():
    assert set(SM_SCHEDULE_FUNCTIONS) == {"none", "sm_then_binary", "binary_then_sm", "linear_sm_to_binary",
                                           "linear_binary_to_sm"}
    # sm_then_binary with t' = 0.2: SM on for steps 0..7 of 10, off for 8, 9
    assert [schedule_factor("sm_then_binary", s, 10, 0.2) for s in range(10)] == [1.0] * 8 + [0.0] * 2
    with pytest.raises(ValueError, match="sm_schedule='cosine'"):
        schedule_factor("cosine", 0, 10)
    with pytest.raises(ValueError, match="total_steps=0"):
        schedule_factor("none", 0, 0)
