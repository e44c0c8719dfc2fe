"""Pass 1 with adapters folded into their weights equals PEFT's forward; what cannot fold is left alone."""

import pytest
import torch

from sm_dream import SoftMaskDreamForDiffusionLM
from sm_dream.training.losses import first_pass_feedback, sm_two_pass_loss
from sm_dream.training.folding import folded_adapters
from sm_dream.tiny import small_vocab_config

peft = pytest.importorskip("peft")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def _adapted(use_dora=True, dropout=0.0):
    """A PEFT model whose adapters are far from their identity init (B != 0, magnitude != ||W||)."""
    torch.manual_seed(0)
    model = SoftMaskDreamForDiffusionLM(small_vocab_config(initializer_range=0.2))
    config = peft.LoraConfig(use_dora=use_dora, r=4, lora_alpha=8, lora_dropout=dropout, target_modules=TARGETS,
                             modules_to_save=["soft_mask"])
    wrapped = peft.get_peft_model(model, config)
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.3)
            if "lora_magnitude_vector" in name:
                param.mul_(torch.linspace(0.5, 1.5, param.numel()))
    return wrapped


def _inputs():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1, 120, (2, 10), generator=g)
    ids[:, 5:] = 127
    return ids


@pytest.mark.parametrize("use_dora", [True, False])
def test_folded_forward_equals_the_adapter_forward(use_dora):
    model = _adapted(use_dora).eval()
    ids = _inputs()
    with torch.no_grad():
        reference = model(input_ids=ids).logits
        with folded_adapters(model) as folded:
            logits = model(input_ids=ids).logits
    assert folded == 2 * len(TARGETS)  # every adapted layer of both decoder layers
    with torch.no_grad(), model.disable_adapter():
        base = model(input_ids=ids).logits
    assert (reference - base).abs().max() > 1e-2  # the adapters matter, so the comparison can fail
    torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the patch is gone afterwards
        assert torch.equal(model(input_ids=ids).logits, reference)


def test_layers_that_cannot_fold_keep_their_forward():
    model = _adapted(dropout=0.1).train()  # dropout draws a mask per call: folding would change pass 1
    with folded_adapters(model) as folded:
        assert folded == 0
    plain = SoftMaskDreamForDiffusionLM(small_vocab_config())
    with folded_adapters(plain) as folded:
        assert folded == 0
    merged = _adapted().eval()
    merged.merge_adapter()
    with folded_adapters(merged) as folded:
        assert folded == 0


def test_the_patch_is_removed_when_the_forward_raises():
    model = _adapted().eval()
    with pytest.raises(RuntimeError, match="boom"):
        with folded_adapters(model):
            raise RuntimeError("boom")
    assert not any("forward" in vars(m) for m in model.modules())


def test_the_sm_loss_first_pass_runs_folded_and_gives_the_adapter_feedback():
    model = _adapted().train()
    ids = _inputs()
    masked = ids == 127
    sm_on = torch.tensor([True, True])
    calls = []
    for module in model.modules():
        if hasattr(module, "lora_A") and hasattr(module, "get_delta_weight"):
            module.lora_A["default"].register_forward_hook(lambda *a: calls.append(torch.is_grad_enabled()))
    config = model.get_base_model().config
    with torch.no_grad():
        folded = first_pass_feedback(model, ids, None, masked, sm_on, config)
    assert calls == []  # pass 1 never ran an adapter matmul
    with torch.no_grad():
        logits = model(input_ids=ids, target_mask=masked).logits  # PEFT's own forward
    from sm_dream.model.soft_masking import feedback_from_logits

    reference = feedback_from_logits(logits, masked, k=config.sm_top_k)
    # Tie-proof: the folded top-k ids carry the reference's top-k probabilities (under PEFT's logits),
    # so a near-tie flipped by float rounding cannot fail the test, a wrong candidate does.
    probs = logits.float().softmax(-1)  # (n, V)
    top = probs.topk(config.sm_top_k).values
    torch.testing.assert_close(probs.gather(-1, folded.topk_ids), top, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(folded.topk_probs, reference.topk_probs, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(folded.entropy, reference.entropy, rtol=1e-5, atol=1e-5)
    calls.clear()
    out = sm_two_pass_loss(model, ids, None, masked, masked, torch.full((2,), 0.5), sm_on)
    out.loss.backward()
    assert len(calls) >= 2 * len(TARGETS) and all(calls)  # the loss pass runs every adapter, with gradient
