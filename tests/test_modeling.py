"""The model: Dream checkpoint compatibility, attention masks, padding, alignment, save/load."""

import json
import logging
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModel

from sm_dream import SoftMaskDreamConfig, SoftMaskDreamForDiffusionLM, shift_right
from sm_dream.resources import DREAM_FIXTURE
from sm_dream.tiny import small_vocab_config

MASK = 127


def _model(**overrides):
    return SoftMaskDreamForDiffusionLM(small_vocab_config(**overrides)).eval()


def _released_weight_names():
    return set(json.loads((DREAM_FIXTURE / "model.safetensors.index.json").read_text())["weight_map"])


def test_parameter_names_and_shapes_match_the_released_checkpoint():
    config = AutoConfig.from_pretrained(str(DREAM_FIXTURE))
    with torch.device("meta"):
        model = SoftMaskDreamForDiffusionLM(config)
    shapes = {name: tuple(p.shape) for name, p in model.state_dict().items()}
    backbone = {n for n in shapes if not n.startswith("soft_mask.")}
    assert backbone == _released_weight_names() and len(backbone) == 339
    assert sorted(n for n in shapes if n.startswith("soft_mask.")) == [
        "soft_mask.a_raw", "soft_mask.b_raw", "soft_mask.s_raw"]
    assert shapes["model.embed_tokens.weight"] == shapes["lm_head.weight"] == (152064, 3584)
    assert shapes["model.layers.0.self_attn.q_proj.bias"] == (3584,)
    assert shapes["model.layers.0.self_attn.k_proj.weight"] == (512, 3584)
    assert shapes["model.layers.27.mlp.down_proj.weight"] == (3584, 18944)


def _write_dream_format_checkpoint(path, config):
    """A tiny checkpoint as Dream's repository has it: its config.json keys and its tensor names."""
    reference = SoftMaskDreamForDiffusionLM(config)
    tensors = {k: v.contiguous() for k, v in reference.state_dict().items() if not k.startswith("soft_mask.")}
    save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    released = json.loads((DREAM_FIXTURE / "config.json").read_text())
    dims = {k: getattr(config, k) for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                            "num_attention_heads", "num_key_value_heads", "mask_token_id",
                                            "pad_token_id", "bos_token_id", "eos_token_id")}
    released.update(dims, torch_dtype="float32")
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(released, f)
    return reference


def test_dream_format_checkpoint_loads_every_weight_and_says_so_once(tmp_path, caplog):
    reference = _write_dream_format_checkpoint(tmp_path, small_vocab_config())
    with caplog.at_level(logging.WARNING):
        model, info = SoftMaskDreamForDiffusionLM.from_pretrained(tmp_path, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["soft_mask.a_raw", "soft_mask.b_raw", "soft_mask.s_raw"]
    assert not info["unexpected_keys"]
    sm_lines = [r for r in caplog.records if "soft-masking parameters" in r.getMessage()]
    assert len(sm_lines) == 1 and "w_s=0.00669" in sm_lines[0].getMessage()
    assert not [r for r in caplog.records if "missing from the checkpoint" in r.getMessage()]
    for name, tensor in reference.state_dict().items():
        if not name.startswith("soft_mask."):
            assert torch.equal(model.state_dict()[name], tensor), name
    assert model.soft_mask.mapped()["w_a"] == pytest.approx(10 / 1.5, rel=1e-6)
    # the Auto class picks the plugin for model_type "Dream"
    assert isinstance(AutoModel.from_pretrained(tmp_path), SoftMaskDreamForDiffusionLM)


def test_from_pretrained_leaves_the_global_logging_verbosity_alone(tmp_path, monkeypatch, caplog):
    """The load report is hidden for the call only: transformers' verbosity is never changed, and the
    report loggers get their filters back afterwards."""
    from transformers import PreTrainedModel
    from transformers.utils import logging as hf_logging

    _write_dream_format_checkpoint(tmp_path, small_vocab_config())
    seen = []
    original = PreTrainedModel.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.append(hf_logging.get_verbosity())
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(spy))
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_info()
    try:
        with caplog.at_level(logging.INFO):
            SoftMaskDreamForDiffusionLM.from_pretrained(tmp_path)
        assert seen == [hf_logging.INFO] and hf_logging.get_verbosity() == hf_logging.INFO
    finally:
        hf_logging.set_verbosity(previous)
    assert [r for r in caplog.records if "soft-masking parameters" in r.getMessage()]
    report = [r for r in caplog.records
              if r.name.startswith(("transformers.modeling_utils", "transformers.utils.loading"))
              and r.levelno < logging.ERROR and "soft_mask." in r.getMessage()]
    assert not report
    assert all(not logging.getLogger(name).filters for name in ("transformers.modeling_utils",
                                                                "transformers.utils.loading_report"))


def test_attention_is_bidirectional_and_sdpa_equals_eager():
    model = _model()
    ids = torch.randint(1, MASK, (2, 12))
    changed = ids.clone()
    changed[:, -1] = (changed[:, -1] + 1) % MASK
    with torch.no_grad():
        assert (model(ids).logits[:, 0] - model(changed).logits[:, 0]).abs().max() > 1e-4
        sdpa = model(ids, attention_mask=torch.ones_like(ids)).logits
        model.config._attn_implementation = "eager"
        eager = model(ids).logits
    torch.testing.assert_close(sdpa, eager, rtol=1e-5, atol=1e-5)


def test_mask_forms_agree():
    model = _model()
    ids = torch.randint(1, MASK, (2, 10))
    ones = torch.ones(2, 10, dtype=torch.long)
    with torch.no_grad():
        ref = model(ids).logits
        for mask in ("full", ones, ones.bool()[:, None, None, :].expand(2, 1, 10, 10)):
            torch.testing.assert_close(model(ids, attention_mask=mask).logits, ref, rtol=1e-6, atol=1e-6)
        embeds = model.get_input_embeddings()(ids)
        torch.testing.assert_close(model(inputs_embeds=embeds).logits, ref, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model.model()


def test_left_padded_batch_matches_rows_alone():
    """Per-row tolerance: 1e-5 absolute on float32 logits at the real positions."""
    model = _model()
    rows = [torch.randint(1, MASK, (n,)) for n in (12, 7, 3)]
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)  # pad id 0, left padding
    att = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = r
        att[i, width - len(r):] = 1
    with torch.no_grad():
        batched = model(ids, attention_mask=att).logits
        assert torch.isfinite(batched).all()
        for i, r in enumerate(rows):
            alone = model(r[None]).logits[0]
            torch.testing.assert_close(batched[i, width - len(r):], alone, rtol=0, atol=1e-5)


def test_padding_rows_never_produce_nan():
    model = _model()
    ids = torch.randint(1, MASK, (2, 6))
    att = torch.tensor([[0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1]])  # a fully padded row too
    dream_4d = (att.bool()[:, None, None, :] & att.bool()[:, None, :, None])  # Dream's own mask, empty rows
    with torch.no_grad():
        for mask in (att, dream_4d):
            assert torch.isfinite(model(ids, attention_mask=mask).logits).all()


def test_target_mask_logits_are_the_shifted_rows_and_labels_loss():
    model = _model()
    ids = torch.randint(1, MASK, (2, 9))
    target = torch.rand(2, 9) > 0.5
    target[:, 0] = False
    with torch.no_grad():
        full = model(ids).logits
        rows = model(ids, target_mask=target).logits
        torch.testing.assert_close(rows, shift_right(full)[target])
        labels = torch.where(target, ids, torch.full_like(ids, -100))
        loss = model(ids, labels=labels).loss
    reference = torch.nn.functional.cross_entropy(full[:, :-1][target[:, 1:]], ids[:, 1:][target[:, 1:]])
    torch.testing.assert_close(loss, reference)
    assert isinstance(model(ids, return_dict=False), tuple)


def test_save_and_from_pretrained_roundtrip(tmp_path):
    model = _model(sm_init_scale=0.3)
    with torch.no_grad():
        model.soft_mask.b_raw.fill_(0.1234)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "Dream"
    assert saved["auto_map"] == {"AutoConfig": "configuration_sm_dream.SoftMaskDreamConfig",
                                 "AutoModel": "modeling_sm_dream.SoftMaskDreamForDiffusionLM"}
    for f in ("configuration_sm_dream.py", "modeling_sm_dream.py", "soft_masking.py"):
        assert (tmp_path / f).exists(), f
    loaded = SoftMaskDreamForDiffusionLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(1, MASK, (2, 8))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert loaded.soft_mask.b_raw.item() == pytest.approx(0.1234)


_FRESH = """
import sys, torch
sys.modules["sm_dream"] = None  # a Python where sm_dream is not importable
from transformers import AutoModel
ref = torch.load(sys.argv[1] + "/ref.pt")
model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
assert "transformers_modules" in type(model).__module__, type(model).__module__
out = model.diffusion_generate(ref["ids"][:, :4], max_new_tokens=8, steps=4, block_length=4, use_cache=True,
                               alg="entropy", soft_masking=True, return_dict_in_generate=True)
assert torch.equal(out.sequences, ref["sequences"]), (out.sequences, ref["sequences"])
with torch.no_grad():
    print((model(ref["ids"]).logits - ref["logits"]).abs().max().item())
"""


def test_trust_remote_code_loads_without_sm_dream(tmp_path):
    model = _model(sm_init_scale=0.3)
    model.save_pretrained(tmp_path)
    ids = torch.randint(1, MASK, (2, 8))
    sequences = model.diffusion_generate(ids[:, :4], max_new_tokens=8, steps=4, block_length=4, use_cache=True,
                                         alg="entropy", soft_masking=True)  # every carried module runs
    with torch.no_grad():
        torch.save({"ids": ids, "logits": model(ids).logits, "sequences": sequences}, tmp_path / "ref.pt")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    out = subprocess.run([sys.executable, "-c", _FRESH, str(tmp_path)], capture_output=True, text=True, env=env,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert float(out.stdout.strip().splitlines()[-1]) == 0.0


def test_peft_causal_lm_task_type_wraps_and_runs():
    from peft import LoraConfig, get_peft_model

    model = _model()
    peft_model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=4, use_dora=True,
                                                  target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                                  modules_to_save=["soft_mask"]))
    ids = torch.randint(1, MASK, (2, 8))
    out = peft_model(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert out.logits.shape == (2, 8, 128)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert any("soft_mask" in n and n.endswith("s_raw") for n in trainable)
    assert any("lora_magnitude_vector" in n for n in trainable)


def test_gradient_checkpointing_gives_the_same_gradients():
    ids = torch.randint(1, MASK, (2, 8))
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = _model().train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            assert model.model.gradient_checkpointing
        model(ids).logits.square().mean().backward()
        grads.append(model.model.layers[0].self_attn.q_proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_config_class_is_the_registered_one():
    assert AutoConfig.for_model("Dream").__class__ is SoftMaskDreamConfig


def test_every_auto_map_file_names_every_module_it_needs(tmp_path):
    """transformers 4.x copies into its module cache only the modules that an `auto_map` file imports
    relatively itself, then reads every module of its relative-import closure (FileNotFoundError for a
    module imported only by another carried module); 5.x copies the closure. So each entry point's own
    relative imports must be its whole closure, measured with transformers' own import scanners, and
    the saved folder must hold every model module, each one reachable from an entry point."""
    from pathlib import Path

    from transformers.dynamic_module_utils import get_relative_import_files, get_relative_imports

    import sm_dream.model as model_package

    _model().save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    entries = {reference.split(".")[0] for reference in auto_map.values()}
    assert entries == {"configuration_sm_dream", "modeling_sm_dream"}
    reachable = set(entries)
    for entry in sorted(entries):
        closure = {Path(f).stem for f in get_relative_import_files(tmp_path / f"{entry}.py")}
        direct = set(get_relative_imports(tmp_path / f"{entry}.py"))
        assert direct == closure, f"{entry}.py should also import {sorted(closure - direct)} relatively"
        reachable |= closure
    package = {p.stem for p in Path(model_package.__file__).parent.glob("*.py")} - {"__init__"}
    assert {p.stem for p in tmp_path.glob("*.py")} == package == reachable


def test_generation_config_is_ours_built_or_loaded(tmp_path):
    from sm_dream.model.generation_utils import SoftMaskDreamGenerationConfig

    model = _model()
    assert isinstance(model.generation_config, SoftMaskDreamGenerationConfig)
    assert model.generation_config.mask_token_id == MASK
    model.generation_config.steps = 7
    model.save_pretrained(tmp_path)
    loaded = SoftMaskDreamForDiffusionLM.from_pretrained(tmp_path)
    assert isinstance(loaded.generation_config, SoftMaskDreamGenerationConfig)
    assert (loaded.generation_config.steps, loaded.generation_config.mask_token_id) == (7, MASK)


def test_a_generation_config_passed_to_from_pretrained_is_used_as_ours(tmp_path):
    from sm_dream.model.generation_utils import SoftMaskDreamGenerationConfig

    _model().save_pretrained(tmp_path)
    given = SoftMaskDreamGenerationConfig(steps=5, alg="entropy")
    loaded = SoftMaskDreamForDiffusionLM.from_pretrained(tmp_path, generation_config=given)
    assert isinstance(loaded.generation_config, SoftMaskDreamGenerationConfig)
    assert (loaded.generation_config.steps, loaded.generation_config.alg) == (5, "entropy")
