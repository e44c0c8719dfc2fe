# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""The embedded default: tiny Dream-architecture configs and the real Dream tokenizer (shipped).

Used by the tests, the demo and the tiny CPU recipe, so that everything runs offline on a laptop.
"""

from .model.configuration_sm_dream import SoftMaskDreamConfig
from .resources import DREAM_FIXTURE

# Released Dream special ids (Dream-v0-Instruct-7B config.json).
DREAM_MASK_ID = 151666
DREAM_EOS_ID = 151643
DREAM_VOCAB_SIZE = 152064


def tiny_config(**overrides) -> SoftMaskDreamConfig:
    """A 2-layer, 32-wide Dream with the released vocabulary and special ids (~10M parameters,
    nearly all in the two embedding matrices), usable with the real Dream tokenizer."""
    fields = dict(
        vocab_size=DREAM_VOCAB_SIZE,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rope_theta=1e6,
        mask_token_id=DREAM_MASK_ID,
        pad_token_id=DREAM_EOS_ID,
        bos_token_id=DREAM_EOS_ID,
        eos_token_id=DREAM_EOS_ID,
    )
    fields.update(overrides)
    return SoftMaskDreamConfig(**fields)


def small_vocab_config(**overrides) -> SoftMaskDreamConfig:
    """A 2-layer model with a 128-token vocabulary (mask = 127, pad = eos = 0) for fast unit tests."""
    fields = dict(vocab_size=128, mask_token_id=127, pad_token_id=0, bos_token_id=0, eos_token_id=0)
    fields.update(overrides)
    return tiny_config(**fields)


def load_dream_tokenizer():
    """The released Dream tokenizer (vocab, merges, chat template), from the shipped fixture."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(DREAM_FIXTURE))
