# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""The masked-diffusion loss, one pass (binary masking) or two passes (soft-masking).

For a batch with clean tokens x0, response mask r, noise draw (t, m) and SM switch sm (see
`sm_dream.training.noise`), and p_theta the model's prediction from Dream's shifted logits (the logit row at
j-1 predicts the token at j; the model's `target_mask` does the shift and runs the LM head only there):

    L = ( sum_i sum_j m_ij * (-log p_theta(x0_ij | input_i)) / t_i ) / N,     N = sum_ij r_ij

Normalisation: N is the number of *response* tokens of the batch (all micro-batches of one optimizer
step, all ranks, when the trainer passes `num_items`). Dividing by response tokens rather than by
masked tokens makes L an unbiased estimate of the per-token negative ELBO of the response,
E_t,m[L] = -ELBO / N (as in MDLM / LLaDA SFT); dividing by the masked count (~ t N) would weight each
sample by 1/t^2 instead of 1/t. N depends only on the data, not on the random masks, so the trainer
can count it before the forward passes and the loss is exactly the same for one batch of 8 and for
4 accumulated micro-batches of 2, on one rank or several.

Inputs of the loss pass:
- binary (one pass): input_i = x_t, [MASK] at the masked positions.
- SM (Algorithm 1): pass 1 without gradient on x_t gives the feedback (entropy, top-k) at the masked
  positions; pass 2 with gradient blends it into the [MASK] embeddings inside the model's forward
  (so gradients reach w_s, w_a, w_b). Samples with sm_i = 0 get lambda scaled by 0, i.e. exactly the
  [MASK] embedding, through the same code path, so every rank runs the same graph.
  Pass 1 runs the LM head at the masked positions of SM samples only, keeps no autograd state, and
  runs LoRA/DoRA layers with their adapter folded into the weight (`folding`): the base
  model's cost, equal to PEFT's forward up to float rounding.
"""

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from accelerate.utils import extract_model_from_parallel

from .folding import folded_adapters
from .noise import apply_mask
from ..model.soft_masking import SoftMaskFeedback, feedback_from_logits


@dataclass
class DiffusionLossOutput:
    """loss: the normalised loss L (with gradient); nll_sum: its numerator; num_items: N.
    num_masked: scored tokens; first_pass: whether pass 1 ran; lam: (m,) detached float32 lambda at
    the soft-masked positions of samples with SM on (None when pass 1 did not run);
    nll_per_sample: (b,) detached sum_j m_ij CE_ij / t_i of each sample."""

    loss: torch.Tensor
    nll_sum: torch.Tensor
    num_items: torch.Tensor
    num_masked: int
    first_pass: bool
    lam: Optional[torch.Tensor] = None
    nll_per_sample: Optional[torch.Tensor] = None


def _check_masks(response_mask: torch.Tensor, masked: torch.Tensor) -> None:
    if masked.shape != response_mask.shape:
        raise ValueError(f"masked {tuple(masked.shape)} and response_mask {tuple(response_mask.shape)} "
                         "differ in shape.")
    if bool((masked & ~response_mask.bool()).any()):
        raise ValueError("masked has positions outside response_mask: only response tokens may be masked.")


def weighted_masked_nll(
    model,
    x_t: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    masked: torch.Tensor,
    t: torch.Tensor,
    sm_feedback: Optional[SoftMaskFeedback] = None,
) -> torch.Tensor:
    """m_ij * CE(shifted logits_ij, x0_ij) / t_i at the n masked positions (row-major), shape (n,).

    Vocabulary logits are computed only at the masked positions (the model's `target_mask`).
    """
    logits = model(input_ids=x_t, attention_mask=attention_mask, sm_feedback=sm_feedback, target_mask=masked).logits
    nll = F.cross_entropy(logits.float(), input_ids[masked], reduction="none")  # (n,)
    t_rows = t[:, None].expand_as(masked)[masked]  # (n,) the t of each scored token's sample
    return nll / t_rows


def _output(weighted, masked, response_mask, num_items, first_pass, lam=None) -> "DiffusionLossOutput":
    """Sum the (n,) weighted token losses, normalise by N and keep the per-sample sums."""
    nll_sum = weighted.sum()
    n = _normaliser(response_mask, num_items)
    sample_of_token = masked.nonzero()[:, 0]  # (n,)
    per_sample = torch.zeros(masked.shape[0], device=weighted.device).index_add_(0, sample_of_token, weighted.detach())
    return DiffusionLossOutput(nll_sum / n, nll_sum, n, int(masked.sum()), first_pass, lam, per_sample)


def _normaliser(response_mask: torch.Tensor, num_items) -> torch.Tensor:
    if num_items is None:
        num_items = response_mask.sum()
    return torch.as_tensor(num_items, dtype=torch.float32, device=response_mask.device).clamp_min(1.0)


def masked_diffusion_loss(model, input_ids, attention_mask, response_mask, masked, t, num_items=None,
                          mask_token_id: Optional[int] = None) -> DiffusionLossOutput:
    """The binary (one-pass) loss L of the module docstring: `sm_two_pass_loss` with SM off everywhere."""
    sm_off = torch.zeros(masked.shape[0], dtype=torch.bool, device=masked.device)
    return sm_two_pass_loss(model, input_ids, attention_mask, response_mask, masked, t, sm_off, first_pass=False,
                            num_items=num_items, mask_token_id=mask_token_id)


def sm_two_pass_loss(
    model,
    input_ids: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    response_mask: torch.Tensor,
    masked: torch.Tensor,
    t: torch.Tensor,
    sm_on: torch.Tensor,
    first_pass: Optional[bool] = None,
    num_items=None,
    mask_token_id: Optional[int] = None,
) -> DiffusionLossOutput:
    """The SM loss (Algorithm 1): pass 1 without gradient, then the (1/t)-weighted loss pass.

    sm_on: (b,) bool, samples whose masked positions get the soft input; the others get [MASK].
    first_pass: run pass 1; default `sm_on.any()`. In distributed training pass the decision taken
        across ranks (True if any rank has a sample with SM) so that every rank runs the same graph.
    With `first_pass=False` this is exactly `masked_diffusion_loss`.
    """
    _check_masks(response_mask, masked)
    config = extract_model_from_parallel(model).config
    mask_token_id = config.mask_token_id if mask_token_id is None else mask_token_id
    first_pass = bool(sm_on.any()) if first_pass is None else bool(first_pass)
    x_t = apply_mask(input_ids, masked, mask_token_id)  # (b, l)
    feedback, lam = None, None
    if first_pass:
        with torch.no_grad():
            feedback = first_pass_feedback(model, x_t, attention_mask, masked, sm_on, config)
            lam = _lambda_of_sm_rows(model, feedback, sm_on)
    weighted = weighted_masked_nll(model, x_t, input_ids, attention_mask, masked, t, sm_feedback=feedback)
    return _output(weighted, masked, response_mask, num_items, first_pass, lam)


def first_pass_feedback(model, x_t, attention_mask, masked, sm_on, config) -> SoftMaskFeedback:
    """Pass 1 (call under no_grad) on the samples with SM only, trimmed to their attended length.

    Its cost scales with the share of SM samples (about p_sm). When no local sample uses SM (pass 1
    runs because another rank needs it) one sample goes through with lambda scaled by 0, so that
    every rank runs the same modules and the SM parameters are in every rank's graph.
    """
    rows = sm_on.nonzero()[:, 0]
    if rows.numel() == 0:
        rows = masked.any(-1).float().argmax().view(1)  # first sample with a masked token
    length, sub_att = masked.shape[1], attention_mask
    if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2:
        length = int(attention_mask[rows].bool().any(0).nonzero().max()) + 1  # drop all-padding tail columns
        sub_att = attention_mask[rows, :length]
    elif isinstance(attention_mask, torch.Tensor):
        sub_att = attention_mask[rows]  # 3D / 4D masks: rows only
    sub_mask = masked[rows, :length]  # (r, l')
    with folded_adapters(model):  # adapters folded into their weights: the base model's cost
        logits = model(input_ids=x_t[rows, :length], attention_mask=sub_att, target_mask=sub_mask).logits  # (n, V)
    feedback = feedback_from_logits(logits, sub_mask, k=config.sm_top_k, full_vocab=config.sm_full_vocab)
    positions = torch.zeros_like(masked)
    positions[rows, :length] = sub_mask  # rows ascend, so the row-major order of the feedback is kept
    feedback.positions = positions
    return feedback.with_scale(sm_on.float())


def _lambda_of_sm_rows(model, feedback: SoftMaskFeedback, sm_on: torch.Tensor) -> torch.Tensor:
    """lambda at the fed-back positions of samples with SM on (a module call: ZeRO-3 gathers w)."""
    sample_of_row = feedback.positions.nonzero()[:, 0]  # (n,)
    keep = sm_on[sample_of_row]
    return extract_model_from_parallel(model).soft_mask(feedback.entropy[keep]).detach().float()
