# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Configuration of soft-masked Dream models.

`SoftMaskDreamConfig` reads the released Dream `config.json` files unchanged (`model_type: "Dream"`)
and adds the soft-masking (SM) fields, all prefixed `sm_`. This file is copied into every saved
checkpoint, so it imports only `transformers`, the standard library and its sibling `soft_masking`
(whose schedule table names the valid `sm_schedule` values), with that sibling's own import `row_ops`.
"""

import math
import numbers

from transformers import PretrainedConfig

from .soft_masking import SM_SCHEDULE_FUNCTIONS

# `soft_masking`'s own sibling, named here too: transformers 4.x copies into its module cache only the
# files that an `auto_map` file imports relatively itself (not their imports in turn), and this file is
# `auto_map`'s AutoConfig entry, loaded first. tests/test_modeling.py keeps this complete.
from .row_ops import row_topk  # noqa: F401, E402

SM_SCHEDULES = tuple(SM_SCHEDULE_FUNCTIONS)  # the names of the one schedule table, in its order


def is_integer(value) -> bool:
    """An integer (int, numpy integer) that is not a bool (True is an int in Python, never a valid count).
    The one integer check of the model's and the generation config's validators."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


class SoftMaskDreamConfig(PretrainedConfig):
    r"""Dream's configuration plus the soft-masking fields.

    Backbone fields (defaults are Dream's constructor defaults; the released 7B values come from its
    `config.json`):
        vocab_size (`int`, 151936): rows of the input and output embedding matrices.
        hidden_size (`int`, 4096): width of the residual stream.
        intermediate_size (`int`, 22016): width of the SiLU-gated MLP.
        num_hidden_layers (`int`, 32): number of decoder blocks.
        num_attention_heads (`int`, 32): query heads.
        num_key_value_heads (`int`, 32): key/value heads (grouped-query attention); None means = heads.
        hidden_act (`str`, "silu"): MLP activation.
        max_position_embeddings (`int`, 32768): longest sequence the RoPE tables are meant for.
        initializer_range (`float`, 0.02): std of the normal init of linear and embedding weights.
        rms_norm_eps (`float`, 1e-6): epsilon of the RMS norms.
        use_cache (`bool`, False): kept for compatibility; Dream's own forward ignores it.
        tie_word_embeddings (`bool`, False): Dream's input and output embeddings are separate.
        rope_theta (`float`, 10000.0): RoPE base (1e6 in the released models).
        rope_scaling (`dict`, None): only None / the default RoPE type is supported.
        attention_dropout (`float`, 0.0): dropout on attention probabilities in training.
        mask_token_id (`int`, 151666): the [MASK] token.
        pad_token_id (`int`, 151643): padding (= eos in Dream).

    Soft-masking fields (paper Section 3 and Appendix A.2):
        sm_enabled (`bool`, True): use the SM feedback at all; False gives plain binary masking.
        sm_top_k (`int`, 3): k, the number of top predicted tokens blended into a masked position.
        sm_full_vocab (`bool`, False): the k = |V| variant (paper B.3): blend softmax(logits / tau)
            over the whole vocabulary with a trainable temperature tau instead of the top-k.
        sm_init_scale (`float`, sigmoid(-5) ~ 0.0067): initial w_s in (0, 1), the maximum of lambda.
        sm_init_steepness (`float`, 10 / 1.5): initial w_a > 0, the slope of lambda in -entropy.
        sm_init_offset (`float`, -0.75): initial w_b < 0, the -entropy at which lambda = w_s / 2.
        sm_init_temperature (`float`, 1.0): initial tau > 0 of the full-vocabulary variant.
        sm_schedule (`str`, "none"): time-dependent SM at inference, one of `SM_SCHEDULES`.
        sm_threshold (`float`, 0.2): t' of the stepwise schedules, in [0, 1].
    """

    model_type = "Dream"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]

    def __init__(
        self,
        vocab_size=151936,
        hidden_size=4096,
        intermediate_size=22016,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        hidden_act="silu",
        max_position_embeddings=32768,
        initializer_range=0.02,
        rms_norm_eps=1e-6,
        use_cache=False,
        tie_word_embeddings=False,
        rope_theta=10000.0,
        rope_scaling=None,
        use_sliding_window=False,
        sliding_window=None,
        max_window_layers=28,
        attention_dropout=0.0,
        mask_token_id=151666,
        pad_token_id=151643,
        sm_enabled=True,
        sm_top_k=3,
        sm_full_vocab=False,
        sm_init_scale=1.0 / (1.0 + math.exp(5.0)),
        sm_init_steepness=10.0 / 1.5,
        sm_init_offset=-0.75,
        sm_init_temperature=1.0,
        sm_schedule="none",
        sm_threshold=0.2,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.use_cache = use_cache
        self.rope_theta = rope_theta
        # Only the default RoPE exists in Dream; `rope_scaling` is checked, not stored (transformers 5
        # turns that attribute into `rope_parameters` with a deprecation warning).
        self._check_rope_scaling(rope_scaling)
        self.use_sliding_window = use_sliding_window
        self.sliding_window = sliding_window if use_sliding_window else None
        self.max_window_layers = max_window_layers
        self.attention_dropout = attention_dropout
        self.sm_enabled = sm_enabled
        self.sm_top_k = sm_top_k
        self.sm_full_vocab = sm_full_vocab
        self.sm_init_scale = sm_init_scale
        self.sm_init_steepness = sm_init_steepness
        self.sm_init_offset = sm_init_offset
        self.sm_init_temperature = sm_init_temperature
        self.sm_schedule = sm_schedule
        self.sm_threshold = sm_threshold
        super().__init__(tie_word_embeddings=tie_word_embeddings, pad_token_id=pad_token_id, **kwargs)
        # Dream sets these after the base constructor; keep them even if kwargs held other values.
        self.mask_token_id = mask_token_id
        self.pad_token_id = pad_token_id
        self.validate_soft_masking()

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def validate_soft_masking(self) -> None:
        """Raise `ValueError` naming the field for any backbone or SM value that cannot work."""
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} must be divisible by num_attention_heads={self.num_attention_heads}."
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} must be a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}."
            )
        if not is_integer(self.sm_top_k) or self.sm_top_k < 1:
            raise ValueError(f"sm_top_k={self.sm_top_k!r} must be an integer >= 1 (the paper uses 1 or 3).")
        if self.sm_top_k > self.vocab_size:
            raise ValueError(
                f"sm_top_k={self.sm_top_k} exceeds vocab_size={self.vocab_size}; use sm_full_vocab=True "
                "for the whole-vocabulary variant."
            )
        if not 0.0 < self.sm_init_scale < 1.0:
            raise ValueError(
                f"sm_init_scale={self.sm_init_scale} must lie strictly inside (0, 1): w_s = sigmoid(raw) "
                "cannot reach 0 or 1 exactly (the paper starts near 0, e.g. sigmoid(-5) = 0.0067)."
            )
        if not self.sm_init_steepness > 0.0:
            raise ValueError(f"sm_init_steepness={self.sm_init_steepness} must be > 0 (w_a = softplus(raw)).")
        if not self.sm_init_offset < 0.0:
            raise ValueError(f"sm_init_offset={self.sm_init_offset} must be < 0 (w_b = -softplus(raw)).")
        if not self.sm_init_temperature > 0.0:
            raise ValueError(f"sm_init_temperature={self.sm_init_temperature} must be > 0.")
        if self.sm_schedule not in SM_SCHEDULES:
            raise ValueError(f"sm_schedule={self.sm_schedule!r} is unknown; choose one of {list(SM_SCHEDULES)}.")
        if not 0.0 <= self.sm_threshold <= 1.0:
            raise ValueError(f"sm_threshold={self.sm_threshold} must lie in [0, 1] (a fraction of the steps).")

    @staticmethod
    def _check_rope_scaling(scaling) -> None:
        if scaling is not None and scaling.get("rope_type", scaling.get("type", "default")) != "default":
            raise ValueError(f"rope_scaling={scaling!r} is not supported: "
                             "Dream uses the default RoPE (set it to null).")

    def sm_raw_init(self) -> dict:
        """The unconstrained initial values of the SM parameters (inverse of their maps)."""
        softplus_inv = lambda y: y + math.log(-math.expm1(-y))  # noqa: E731 (inverse of softplus)
        raw = {
            "s_raw": _logit(self.sm_init_scale),
            "a_raw": softplus_inv(self.sm_init_steepness),
            "b_raw": softplus_inv(-self.sm_init_offset),
        }
        if self.sm_full_vocab:
            raw["tau_raw"] = softplus_inv(self.sm_init_temperature)
        return raw
