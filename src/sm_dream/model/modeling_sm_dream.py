# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Dream (a bidirectional Qwen2) with soft-masked inputs.

Parameter names and shapes are those of the released Dream checkpoints (`model.embed_tokens`,
`model.layers.N.self_attn.{q,k,v,o}_proj`, `model.norm`, `lm_head`), so `from_pretrained` loads them
unchanged; the only new parameters are the three SM scalars in `soft_mask`.

The layers are written here rather than imported from transformers' Qwen2, whose internals change
between major versions: a saved checkpoint carries this file and must load on any recent
transformers, with only torch and transformers installed (`trust_remote_code=True`).
"""

import logging as std_logging
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, ModelOutput
from transformers.utils import logging

from .configuration_sm_dream import SoftMaskDreamConfig
from .generation_utils import SoftMaskDreamGenerationMixin
from .positions import default_position_ids, shift_right  # noqa: F401 (public here too)
from .soft_masking import SoftMaskFeedback, SoftMaskParams, soft_masked_embeddings

# Every other carried module, named here too: transformers 4.x copies into its module cache only the
# files that the modeling file itself imports relatively (not their imports in turn), so a saved
# checkpoint would fail to load there without these lines. tests/test_modeling.py keeps the list complete.
from .blocks import plan_blocks  # noqa: F401, E402
from .cache import make_kv_cache  # noqa: F401, E402
from .decoding_trace import trace_step  # noqa: F401, E402
from .denoising import denoise  # noqa: F401, E402
from .logit_rows import step_rows  # noqa: F401, E402
from .remasking import get_remasking_schedule  # noqa: F401, E402
from .row_ops import row_topk  # noqa: F401, E402
from .sampling import truncated_candidates  # noqa: F401, E402
from .unmasking import get_unmasking_algorithm  # noqa: F401, E402

logger = logging.get_logger(__name__)

# The loggers of transformers' load report (4.x: modeling_utils; 5.x: utils.loading_report).
LOAD_REPORT_LOGGERS = ("transformers.modeling_utils", "transformers.utils.loading_report")


def _errors_only(record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.ERROR


class DreamRMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        dtype = hidden_states.dtype
        x = hidden_states.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x.to(dtype)


class DreamRotaryEmbedding(nn.Module):
    """Default RoPE (rotate-half). Frequencies are computed per call: no buffer to save or restore."""

    def __init__(self, config: SoftMaskDreamConfig):
        super().__init__()
        self.dim = config.head_dim
        self.base = float(config.rope_theta)

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        exponent = torch.arange(0, self.dim, 2, device=x.device, dtype=torch.float32) / self.dim
        inv_freq = 1.0 / (self.base**exponent)  # (hd/2,)
        freqs = position_ids.float().unsqueeze(-1) * inv_freq  # (b, l, hd/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (b, l, hd)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin):
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (b, 1, l, hd)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(b, kv_heads, l, hd) -> (b, kv_heads * n_rep, l, hd)."""
    if n_rep == 1:
        return x
    b, h, length, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, length, d).reshape(b, h * n_rep, length, d)


def sdpa_attention(q, k, v, mask, dropout: float) -> Tuple[torch.Tensor, None]:
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=False)
    return out, None


def eager_attention(q, k, v, mask, dropout: float) -> Tuple[torch.Tensor, torch.Tensor]:
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (b, h, lq, lk)
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool else scores + mask
    weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    out = F.dropout(weights, p=dropout, training=dropout > 0) @ v
    return out, weights


ATTENTION_FUNCTIONS: Dict[str, Callable] = {"sdpa": sdpa_attention, "eager": eager_attention}


class DreamAttention(nn.Module):
    """Grouped-query attention, fully bidirectional (never causal).

    `past_key_values`, when given, is a cache object with `update(k, v, layer_idx) -> (k, v)` (the
    keys/values to attend to for this layer), `get_seq_length()` (cached positions before the
    queries, for default position ids) and `kv_length(q_len)` (the key length attended to).
    """

    def __init__(self, config: SoftMaskDreamConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=True)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=True)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=False)

    def forward(self, hidden_states, cos, sin, attention_mask=None, past_key_values=None, output_attentions=False):
        b, length, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(b, length, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(hidden_states).view(b, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(hidden_states).view(b, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)  # (b, h, l, hd)
        if past_key_values is not None:  # a cache returns the full keys/values for this layer
            k, v = past_key_values.update(k, v, self.layer_idx)
        n_rep = self.num_heads // self.num_kv_heads
        k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
        impl = "eager" if output_attentions else (getattr(self.config, "_attn_implementation", None) or "sdpa")
        if impl not in ATTENTION_FUNCTIONS:
            raise ValueError(f"attn_implementation={impl!r} is not supported; "
                             f"choose one of {list(ATTENTION_FUNCTIONS)}.")
        dropout = self.config.attention_dropout if self.training else 0.0
        out, weights = ATTENTION_FUNCTIONS[impl](q, k, v, attention_mask, dropout)
        out = out.transpose(1, 2).reshape(b, length, -1)  # (b, l, d)
        return self.o_proj(out), weights


class DreamMLP(nn.Module):
    def __init__(self, config: SoftMaskDreamConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        if config.hidden_act != "silu":
            raise ValueError(f"hidden_act={config.hidden_act!r} is not supported; Dream uses 'silu'.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DreamDecoderLayer(nn.Module):
    def __init__(self, config: SoftMaskDreamConfig, layer_idx: int):
        super().__init__()
        self.self_attn = DreamAttention(config, layer_idx)
        self.mlp = DreamMLP(config)
        self.input_layernorm = DreamRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = DreamRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states, cos, sin, attention_mask=None, past_key_values=None, output_attentions=False):
        attn, weights = self.self_attn(
            self.input_layernorm(hidden_states), cos, sin, attention_mask, past_key_values, output_attentions
        )
        hidden_states = hidden_states + attn
        hidden_states = hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states, weights


class DreamEmbedding(nn.Embedding):
    """An `nn.Embedding` that also takes a float (..., V) distribution and returns its mix `pi @ E`.

    Both paths run inside a module call, so sharded weights (DeepSpeed ZeRO-3) are gathered.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.is_floating_point():
            return input.to(self.weight.dtype) @ self.weight
        return super().forward(input)


def prepare_attention_mask(attention_mask, batch: int, q_len: int, kv_len: int) -> Optional[torch.Tensor]:
    """Turn Dream's accepted masks into a bool (b, 1, q_len, kv_len) mask (True = attend) or None.

    None or a string (Dream passes "full") means no mask. A 2D (b, kv_len) padding mask becomes a
    key mask; when queries and keys are the same positions each query also attends to itself, so a
    padding row never has an empty softmax (Dream's own mask gives such rows NaN). 3D/4D bool masks
    get the same diagonal; float 4D masks are additive and passed through.
    """
    if attention_mask is None or isinstance(attention_mask, str):
        return None
    if attention_mask.dim() == 2:
        if bool(attention_mask.all()):
            return None
        mask = attention_mask.bool()[:, None, None, :].expand(batch, 1, q_len, kv_len)
    elif attention_mask.dim() in (3, 4):
        mask = attention_mask if attention_mask.dim() == 4 else attention_mask[:, None]
        if mask.is_floating_point():
            return mask
        mask = mask.bool()
    else:
        raise ValueError(f"attention_mask of shape {tuple(attention_mask.shape)} is not 2D, 3D or 4D.")
    if q_len == kv_len:
        mask = mask | torch.eye(q_len, dtype=torch.bool, device=mask.device)
    return mask


class SoftMaskDreamPreTrainedModel(PreTrainedModel):
    config_class = SoftMaskDreamConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DreamDecoderLayer"]
    _supports_sdpa = True
    _keys_to_ignore_on_load_unexpected = [r"rotary_emb\.inv_freq"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.normal_(0.0, std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(0.0, std)
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, DreamRMSNorm):
            module.weight.fill_(1.0)
        elif isinstance(module, SoftMaskParams):
            module.reset_parameters()


class SoftMaskDreamModel(SoftMaskDreamPreTrainedModel):
    """The backbone (Dream's `DreamBaseModel`): embeddings, decoder layers, final norm."""

    def __init__(self, config: SoftMaskDreamConfig):
        super().__init__(config)
        pad = (config.pad_token_id if config.pad_token_id is not None and config.pad_token_id < config.vocab_size
               else None)
        self.embed_tokens = DreamEmbedding(config.vocab_size, config.hidden_size, padding_idx=pad)
        self.layers = nn.ModuleList(DreamDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = DreamRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = DreamRotaryEmbedding(config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        inputs_embeds=None,
        output_attentions=False,
        output_hidden_states=False,
        **kwargs,
    ) -> BaseModelOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        hidden = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # (b, l, d)
        b, length, _ = hidden.shape
        offset = past_key_values.get_seq_length() if past_key_values is not None else 0
        kv_len = past_key_values.kv_length(length) if past_key_values is not None else length
        if position_ids is None:
            position_ids = default_position_ids(attention_mask, b, length, offset, hidden.device)
        mask = prepare_attention_mask(attention_mask, b, length, kv_len)
        cos, sin = self.rotary_emb(hidden, position_ids)
        all_hidden, all_attn = [], []
        for layer in self.layers:
            if output_hidden_states:
                all_hidden.append(hidden)
            if self.gradient_checkpointing and self.training:
                hidden, weights = self._gradient_checkpointing_func(
                    layer.__call__, hidden, cos, sin, mask, past_key_values, output_attentions
                )
            else:
                hidden, weights = layer(hidden, cos, sin, mask, past_key_values, output_attentions)
            if output_attentions:
                all_attn.append(weights)
        hidden = self.norm(hidden)
        if output_hidden_states:
            all_hidden.append(hidden)
        return BaseModelOutput(
            last_hidden_state=hidden,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(all_attn) if output_attentions else None,
        )


@dataclass
class SoftMaskDreamOutput(ModelOutput):
    """loss: masked-token CE when `labels` are given; logits: raw (b, l, V) logits, or shift-aligned
    (n, V) rows for the positions of `target_mask`."""

    loss: Optional[torch.FloatTensor] = None
    logits: Optional[torch.FloatTensor] = None
    # Named `cache`, not `past_key_values`: transformers >= 5.24 renames that keyword to `cache` in the
    # constructor of every ModelOutput, so only this name builds on every supported release.
    cache: Optional[object] = None
    hidden_states: Optional[Tuple[torch.FloatTensor, ...]] = None
    attentions: Optional[Tuple[torch.FloatTensor, ...]] = None


class SoftMaskDreamForDiffusionLM(SoftMaskDreamGenerationMixin, SoftMaskDreamPreTrainedModel):
    """Dream with soft-masking: the backbone, the LM head and the SM parameters.

    `forward(input_ids, ..., sm_feedback=...)` builds the input embeddings itself: token embeddings
    everywhere, and at positions that are [MASK] in `input_ids` and have feedback, the SM blend
    (1 - lambda) E[mask] + lambda sum_i pi_i E[topk_i]. Without feedback it is Dream's forward.
    """

    def __init__(self, config: SoftMaskDreamConfig):
        super().__init__(config)
        self.model = SoftMaskDreamModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.soft_mask = SoftMaskParams(config.sm_raw_init())
        # PEFT's CAUSAL_LM wrapper reads this attribute. Bound per instance: defined on the class,
        # transformers would take the model for an autoregressive `generate()` model.
        self.prepare_inputs_for_generation = self._prepare_inputs_for_generation
        self.post_init()
        # Ours on every transformers release (4.x would build a plain GenerationConfig here).
        self.generation_config = self.generation_config_class.from_model_config(config)

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def build_inputs_embeds(self, input_ids: torch.Tensor, sm_feedback: Optional[SoftMaskFeedback]) -> torch.Tensor:
        """Token embeddings, with the SM blend at masked positions that have feedback. (b, l, d)"""
        embeds = self.model.embed_tokens(input_ids)
        if sm_feedback is None or not self.config.sm_enabled:
            return embeds
        return soft_masked_embeddings(
            embeds, input_ids, self.config.mask_token_id, sm_feedback, self.soft_mask, self.model.embed_tokens
        )

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        sm_feedback: Optional[SoftMaskFeedback] = None,
        target_mask: Optional[torch.Tensor] = None,
        **kwargs,
    ):
        r"""
        sm_feedback: the previous step's `SoftMaskFeedback` (from `feedback_from_logits`), or None.
        target_mask: (b, l) bool; if given, `logits` are only the shift-aligned rows predicting these
            positions, shape (n, V), and the LM head runs only there.
        labels: (b, l) token ids, -100 where not scored; the loss is the mean cross-entropy of the
            shift-aligned logits at the scored positions (no 1/t weight: see `sm_dream.training.losses`).
        """
        if inputs_embeds is not None and sm_feedback is not None:
            raise ValueError("sm_feedback needs input_ids (the model builds the soft inputs itself).")
        if input_ids is not None and inputs_embeds is None:
            inputs_embeds = self.build_inputs_embeds(input_ids, sm_feedback)
        outputs = self.model(
            input_ids=None if inputs_embeds is not None else input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            output_attentions=bool(output_attentions),
            output_hidden_states=bool(output_hidden_states),
        )
        hidden = outputs.last_hidden_state  # (b, l, d)
        if target_mask is not None:
            logits = self.lm_head(shift_right(hidden)[target_mask])  # (n, V), aligned to targets
        else:
            logits = self.lm_head(hidden)  # (b, l, V), raw (Dream's convention)
        loss = None
        if labels is not None:
            scored = labels != -100
            aligned = logits if target_mask is not None else shift_right(logits)[scored]
            target = labels[target_mask] if target_mask is not None else labels[scored]
            loss = F.cross_entropy(aligned.float(), target, ignore_index=-100)
        out = SoftMaskDreamOutput(
            loss=loss,
            logits=logits,
            cache=past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return out if return_dict is not False else out.to_tuple()

    def _prepare_inputs_for_generation(self, input_ids, **kwargs):
        """Present so that PEFT's CAUSAL_LM wrapper can be built; generate with `diffusion_generate`."""
        return {"input_ids": input_ids, **kwargs}

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained`, saying once and plainly which SM parameters were
        initialised because the checkpoint (e.g. a released Dream model) does not have them."""
        want_info = kwargs.pop("output_loading_info", False)
        # transformers' per-key load report would list each SM scalar: drop it (records below ERROR
        # from the loggers that write it) for this call only; global verbosity stays as it is.
        report_loggers = [std_logging.getLogger(name) for name in LOAD_REPORT_LOGGERS]
        for report_logger in report_loggers:
            report_logger.addFilter(_errors_only)
        try:
            model, info = super().from_pretrained(
                pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
            )
        finally:
            for report_logger in report_loggers:
                report_logger.removeFilter(_errors_only)
        if not isinstance(model.generation_config, cls.generation_config_class):
            # transformers 4.x reads generation_config.json as a plain GenerationConfig and never calls
            # adjust_generation_fn: do what 5.x does.
            model.generation_config = cls.generation_config_class.from_model_config(model.config)
            hub_kwargs = {k: v for k, v in kwargs.items() if k != "generation_config"}
            model.adjust_generation_fn(kwargs.get("generation_config"), False, False, pretrained_model_name_or_path,
                                       **hub_kwargs)
        missing = list(info.get("missing_keys", []))
        sm_missing = [k for k in missing if k.startswith("soft_mask.")]
        other = [k for k in missing if not k.startswith("soft_mask.")]
        if sm_missing:
            values = ", ".join(f"{k}={v:.4g}" for k, v in model.soft_mask.mapped().items())
            logger.warning(
                f"The checkpoint has no soft-masking parameters; they start from the paper's initialisation ({values})."
            )
        if other:
            logger.warning(f"Weights missing from the checkpoint and newly initialised: {other}")
        unexpected = list(info.get("unexpected_keys", []))
        if unexpected:
            logger.warning(f"Checkpoint weights not used by {cls.__name__}: {unexpected}")
        return (model, info) if want_info else model

