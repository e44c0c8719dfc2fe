import math

import pytest
import torch

from sm_dream import SoftMaskDreamForDiffusionLM
from sm_dream.training.losses import masked_diffusion_loss, sm_two_pass_loss
from sm_dream.training.noise import sample_noise
from sm_dream.tiny import small_vocab_config

MASK = 127


def _model(**overrides):
    torch.manual_seed(0)
    return SoftMaskDreamForDiffusionLM(small_vocab_config(**overrides)).eval()


def _batch(b=3, length=12, seed=1):
    """Prompt tokens first, then response, then right padding (attention 0) in the last row."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 120, (b, length), generator=g)
    att = torch.ones(b, length, dtype=torch.long)
    att[-1, -3:] = 0
    resp = torch.zeros(b, length, dtype=torch.bool)
    for i, start in enumerate([4, 3, 5][:b]):
        resp[i, start:] = att[i, start:].bool()
    noise = sample_noise(resp, 0.3, 0.7, p_sm=0.5, generator=g)
    return ids, att, resp, noise


def _reference_loss(model, ids, att, resp, masked, t, sm_on):
    """Loss computed another way: full (b, l, V) logits, explicit index shift, per-position SM loop."""
    x_t = torch.where(masked, torch.full_like(ids, MASK), ids)
    E = model.model.embed_tokens.weight
    embeds = E[x_t].clone()  # (b, l, d)
    if bool(sm_on.any()):
        with torch.no_grad():
            raw = model(input_ids=x_t, attention_mask=att).logits  # (b, l, V)
        sm = model.soft_mask
        w_s, w_a, w_b = (torch.sigmoid(sm.s_raw), torch.nn.functional.softplus(sm.a_raw),
                         -torch.nn.functional.softplus(sm.b_raw))
        k = model.config.sm_top_k
        for b, j in masked.nonzero().tolist():
            if not sm_on[b]:
                continue
            p = torch.softmax(raw[b, j - 1].double(), -1)
            H = -(p * p.log()).sum()
            lam = (w_s * torch.sigmoid(w_a * (-H.float() - w_b)))[0]
            top = p.topk(k)
            pi = (top.values / top.values.sum()).float()
            target = (pi[:, None] * E[top.indices]).sum(0)
            embeds[b, j] = (1 - lam) * E[MASK] + lam * target
    logits = model(inputs_embeds=embeds, attention_mask=att).logits  # (b, l, V)
    total = 0.0
    for b, j in masked.nonzero().tolist():
        total = total - torch.log_softmax(logits[b, j - 1].float(), -1)[ids[b, j]] / t[b]
    return total / resp.sum()


def _count_forwards(model):
    """Records the input_ids shape of every forward call."""
    calls = []
    model.register_forward_pre_hook(
        lambda m, args, kwargs: calls.append(tuple(kwargs.get("input_ids", kwargs.get("inputs_embeds")).shape[:2])),
        with_kwargs=True)
    return calls


def test_binary_loss_equals_independent_one_pass_loss():
    model = _model()
    ids, att, resp, noise = _batch()
    sm_off = torch.zeros(3, dtype=torch.bool)
    calls = _count_forwards(model)
    out = sm_two_pass_loss(model, ids, att, resp, noise.masked, noise.t, sm_off)
    assert len(calls) == 1 and not out.first_pass and out.lam is None
    ref = _reference_loss(model, ids, att, resp, noise.masked, noise.t, sm_off)
    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-5)
    plain = masked_diffusion_loss(model, ids, att, resp, noise.masked, noise.t)
    assert plain.loss.item() == out.loss.item()
    assert out.num_items.item() == resp.sum().item() and out.num_masked == int(noise.masked.sum())
    assert out.nll_per_sample.shape == (3,) and out.nll_per_sample.sum().item() == pytest.approx(out.nll_sum.item())
    single = masked_diffusion_loss(model, ids[1:2], att[1:2], resp[1:2], noise.masked[1:2], noise.t[1:2])
    assert single.nll_sum.item() == pytest.approx(out.nll_per_sample[1].item(), rel=1e-5)


def test_two_pass_loss_equals_reference_blend():
    model = _model(sm_init_scale=0.7, sm_init_offset=-5.0, sm_init_steepness=1.0)  # lambda ~ 0.37: the blend matters
    ids, att, resp, noise = _batch()
    sm_on = torch.tensor([True, False, True])
    calls = _count_forwards(model)
    out = sm_two_pass_loss(model, ids, att, resp, noise.masked, noise.t, sm_on)
    assert calls == [(2, 12), (3, 12)] and out.first_pass  # pass 1 only on the two SM samples
    ref = _reference_loss(model, ids, att, resp, noise.masked, noise.t, sm_on)
    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-5)
    binary = masked_diffusion_loss(model, ids, att, resp, noise.masked, noise.t)
    assert abs(out.loss.item() - binary.loss.item()) > 1e-4  # SM changed the input
    n_sm_rows = int(noise.masked[sm_on].sum())
    assert out.lam.shape == (n_sm_rows,) and bool((out.lam > 0.2).all()) and bool((out.lam <= 0.7).all())


def test_first_pass_with_no_sm_sample_gives_the_binary_loss():
    """The distributed path: pass 1 runs because another rank needs it, yet no local sample uses SM."""
    model = _model(sm_init_scale=0.7)
    ids, att, resp, noise = _batch()
    sm_off = torch.zeros(3, dtype=torch.bool)
    calls = _count_forwards(model)
    forced = sm_two_pass_loss(model, ids, att, resp, noise.masked, noise.t, sm_off, first_pass=True)
    assert calls == [(1, 12), (3, 12)] and forced.first_pass and forced.lam.numel() == 0
    binary = masked_diffusion_loss(model, ids, att, resp, noise.masked, noise.t)
    assert forced.loss.item() == binary.loss.item()


def test_first_pass_is_trimmed_to_the_attended_length_of_its_samples():
    model = _model()
    ids, att, resp, noise = _batch()
    att[:, -2:] = 0  # every row now ends with padding
    resp &= att.bool()
    masked = noise.masked & resp
    masked[:, 6] = True  # keep a masked token in every row
    calls = _count_forwards(model)
    sm_two_pass_loss(model, ids, att, resp, masked, noise.t, torch.tensor([False, True, True]))
    assert calls == [(2, 10), (3, 12)]


def test_gradients_reach_sm_parameters():
    model = _model()  # paper init: w_s = sigmoid(-5)
    ids, att, resp, noise = _batch()
    out = sm_two_pass_loss(model, ids, att, resp, noise.masked, noise.t, torch.ones(3, dtype=torch.bool))
    out.loss.backward()
    for name in ("s_raw", "a_raw", "b_raw"):
        grad = getattr(model.soft_mask, name).grad
        assert grad is not None and grad.shape == (1,) and grad.abs().item() > 0, name


def test_gradients_reach_dora_adapters_and_sm_copy():
    peft = pytest.importorskip("peft")
    model = _model()
    config = peft.LoraConfig(use_dora=True, r=4, lora_alpha=4, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                             modules_to_save=["soft_mask"])
    wrapped = peft.get_peft_model(model, config)
    ids, att, resp, noise = _batch()
    out = sm_two_pass_loss(wrapped, ids, att, resp, noise.masked, noise.t, torch.ones(3, dtype=torch.bool))
    out.loss.backward()
    grads = {n: p.grad for n, p in wrapped.named_parameters() if p.requires_grad}
    sm = [n for n in grads if "soft_mask" in n]
    assert len(sm) == 3 and all(grads[n].abs().item() > 0 for n in sm)
    for kind in ("lora_B", "lora_magnitude_vector"):
        names = [n for n in grads if kind in n]
        assert len(names) == 2 * 4 and all(grads[n].abs().sum() > 0 for n in names), kind
    assert all(not p.requires_grad for n, p in wrapped.named_parameters() if "embed_tokens" in n)


def test_normalisation_is_consistent_across_micro_batches():
    model = _model(sm_init_scale=0.5)
    ids, att, resp, noise = _batch()
    sm_on = torch.tensor([True, True, False])
    whole = sm_two_pass_loss(model, ids, att, resp, noise.masked, noise.t, sm_on)
    n = resp.sum()
    parts = [sm_two_pass_loss(model, ids[s], att[s], resp[s], noise.masked[s], noise.t[s], sm_on[s], num_items=n)
             for s in (slice(0, 1), slice(1, 3))]
    assert sum(p.loss.item() for p in parts) == pytest.approx(whole.loss.item(), rel=1e-5)


def test_masks_outside_the_response_are_rejected():
    model = _model()
    ids, att, resp, noise = _batch()
    bad = noise.masked.clone()
    bad[0, 0] = True  # a prompt position
    with pytest.raises(ValueError, match="outside response_mask"):
        sm_two_pass_loss(model, ids, att, resp, bad, noise.t, torch.ones(3, dtype=torch.bool))


def test_loss_at_init_is_about_log_vocab():
    """Sanity: a random tiny model is near-uniform, so L * N / sum(m / t) ~ log V."""
    model = _model()
    ids, att, resp, noise = _batch()
    out = masked_diffusion_loss(model, ids, att, resp, noise.masked, noise.t)
    per_token = out.nll_sum / (noise.masked.float() / noise.t[:, None]).sum()
    assert per_token.item() == pytest.approx(math.log(128), rel=0.05)


def test_first_pass_builds_no_graph_and_runs_the_lm_head_on_the_sm_samples_masked_rows_only():
    """Pass 1 at its floor: the LM head sees exactly the masked rows of the SM samples, without autograd."""
    model = _model(sm_init_scale=0.7).train()
    ids, att, resp, noise = _batch()
    sm_on = torch.tensor([True, False, True])
    heads = []

    def record(module, args, output):
        heads.append((args[0].shape, torch.is_grad_enabled(), output.requires_grad, output.grad_fn))

    model.lm_head.register_forward_hook(record)
    out = sm_two_pass_loss(model, ids, att, resp, noise.masked, noise.t, sm_on)
    assert len(heads) == 2
    shape, grad_enabled, out_grad, grad_fn = heads[0]  # pass 1
    assert shape == (int(noise.masked[sm_on].sum()), model.config.hidden_size)
    assert not grad_enabled and not out_grad and grad_fn is None
    assert heads[1][0] == (int(noise.masked.sum()), model.config.hidden_size) and heads[1][2]  # the loss pass
    out.loss.backward()  # the feedback tensors carry no graph into pass 2's backward
    assert model.soft_mask.s_raw.grad is not None
