import json
import math

import pytest
from transformers import AutoConfig

from sm_dream import SoftMaskDreamConfig
from sm_dream.resources import DREAM_FIXTURE
from sm_dream.tiny import small_vocab_config


def test_released_dream_config_loads_unchanged():
    config = AutoConfig.from_pretrained(str(DREAM_FIXTURE))
    assert isinstance(config, SoftMaskDreamConfig)
    raw = json.loads((DREAM_FIXTURE / "config.json").read_text())
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "rope_theta", "mask_token_id", "pad_token_id", "tie_word_embeddings"):
        assert getattr(config, key) == raw[key], key
    assert config.head_dim == 128
    assert config.eos_token_id == 151643
    # SM fields take their defaults
    assert config.sm_enabled and config.sm_top_k == 3 and config.sm_schedule == "none"


def test_sm_raw_init_inverts_the_maps():
    import torch
    from sm_dream.model.soft_masking import SoftMaskParams

    config = small_vocab_config(sm_full_vocab=True, sm_init_temperature=0.7)
    params = SoftMaskParams(config.sm_raw_init())
    mapped = params.mapped()
    assert mapped["w_s"] == pytest.approx(1 / (1 + math.exp(5)), rel=1e-6)
    assert mapped["w_a"] == pytest.approx(10 / 1.5, rel=1e-6)
    assert mapped["w_b"] == pytest.approx(-0.75, rel=1e-6)
    assert mapped["tau"] == pytest.approx(0.7, rel=1e-6)
    assert all(p.shape == torch.Size([1]) for p in params.parameters())


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("sm_top_k", 0, "sm_top_k=0"),
        ("sm_top_k", 129, "sm_top_k=129 exceeds vocab_size=128"),
        ("sm_top_k", 2.5, "sm_top_k=2.5"),
        ("sm_init_scale", 0.0, "sm_init_scale=0.0"),
        ("sm_init_scale", 1.5, "sm_init_scale=1.5"),
        ("sm_init_steepness", -1.0, "sm_init_steepness=-1.0"),
        ("sm_init_offset", 0.5, "sm_init_offset=0.5"),
        ("sm_init_temperature", 0.0, "sm_init_temperature=0.0"),
        ("sm_schedule", "cosine", "sm_schedule='cosine'"),
        ("sm_threshold", 1.2, "sm_threshold=1.2"),
        ("rope_scaling", {"rope_type": "yarn", "factor": 4.0}, "rope_scaling="),
    ],
)
def test_bad_values_raise_naming_the_field(field, value, words):
    with pytest.raises(ValueError) as err:
        small_vocab_config(**{field: value})
    assert words in str(err.value)


def test_head_count_mismatch_is_reported():
    with pytest.raises(ValueError, match="num_key_value_heads=3"):
        small_vocab_config(num_key_value_heads=3)
