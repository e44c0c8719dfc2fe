"""The `sm_dream` lm-eval model in-process, on a tiny random checkpoint with the real Dream tokenizer:
argument checks, which settings win, batching, cutting, chat template, statistics, adapters."""

import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.api.registry import get_model
from lm_eval_testing import shared_tiny_model

from sm_dream.evaluation.lm_eval_model import SMDreamLM, batch_seed, first_stop_lengths
from sm_dream.model.modeling_sm_dream import SoftMaskDreamForDiffusionLM

EOS = 151643


@pytest.fixture(scope="module")
def tiny_dir():
    return shared_tiny_model()


@pytest.fixture(scope="module")
def lm(tiny_dir):
    return SMDreamLM(pretrained=tiny_dir, device="cuda", batch_size=2, nfe_budget=0.5, sm_top_k=1,
                     sm_schedule="sm_then_binary")


@pytest.fixture
def settings(lm, monkeypatch):
    """Change the module model's generation settings for one test."""
    return lambda **changes: monkeypatch.setattr(lm, "settings", replace(lm.settings, **changes))


def request(context, until=(), max_gen_toks=4, task="t", idx=0, **gen_kwargs):
    return Instance("generate_until", {}, (context, {"until": list(until), "max_gen_toks": max_gen_toks, **gen_kwargs}),
                    idx, (task, idx, 1))


def test_registered_next_to_lm_evals_own_models():
    assert get_model("sm_dream") is SMDreamLM
    assert get_model("hf").__name__ == "HFLM"  # registering sm_dream did not hide the built-ins


@pytest.mark.parametrize("args,message", [
    ("pretrained={tiny},foo=1", r"Unknown model argument\(s\) \['foo'\]"),
    ("pretrained={tiny},nfe_budget=0", "nfe_budget=0"),
    ("pretrained={tiny},nfe_budget=-0.5", "nfe_budget=-0.5"),
    ("pretrained={tiny},steps=0", "steps=0"),
    ("pretrained={tiny},steps=64,nfe_budget=0.5", "steps=64 or nfe_budget=0.5, not both"),
    ("pretrained=/no/such/model", "pretrained='/no/such/model'"),
    ("pretrained={tiny},peft=./no_such_adapter", "peft='./no_such_adapter'"),
    ("pretrained={tiny},alg=greedy", "alg='greedy'"),
    ("pretrained={tiny},top_p=1.5", "top_p=1.5"),
    ("pretrained={tiny},sm_schedule=sometimes", "sm_schedule='sometimes'"),
    ("pretrained={tiny},dtype=float8", "dtype='float8'"),
    ("pretrained={tiny},batch_size=auto", "batch_size='auto'"),
    ("pretrained={tiny},nfe_budget=2", "nfe_budget=2 gives 2 denoising steps per new token, more than one with"),
    ("pretrained={tiny},block_length=0", "block_length=0"),
    ("pretrained={tiny},temperature=warm", "temperature='warm' must be a finite number"),
    ("pretrained={tiny},steps=2.5", "steps=2.5 must be an integer"),
    ("pretrained={tiny},soft_masking=maybe", "soft_masking='maybe'"),
    ("pretrained={tiny},sampling_draws=fast", r"sampling_draws='fast' is invalid: choose one of"),
    ("pretrained={empty}", "has no {empty}/config.json"),
    ("nfe_budget=0.5", "pretrained is required"),
])
def test_bad_model_args_fail_before_loading(args, message, tiny_dir, monkeypatch, tmp_path):
    def no_loading(*a, **k):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(SoftMaskDreamForDiffusionLM, "from_pretrained", no_loading)
    empty = str(tmp_path)
    with pytest.raises(ValueError, match=message.format(empty=empty)):
        SMDreamLM.create_from_arg_string(args.format(tiny=tiny_dir, empty=empty), {"device": "cpu"})


def test_batch_size_in_model_args_wins_over_the_cli_default(tiny_dir, caplog):
    lm = SMDreamLM.create_from_arg_string(f"pretrained={tiny_dir},batch_size=3", {"batch_size": "1", "device": "cpu"})
    assert lm.batch_size == 3 and "batch_size=3 in --model_args wins over --batch_size '1'" in caplog.text
    assert SMDreamLM.create_from_arg_obj({"pretrained": tiny_dir}, {"batch_size": "4", "device": None}).batch_size == 4


def test_soft_masking_follows_the_checkpoint_unless_given(tiny_dir, tmp_path):
    binary = SoftMaskDreamForDiffusionLM.from_pretrained(tiny_dir)
    binary.config.sm_enabled = False
    binary.save_pretrained(tmp_path / "binary")
    lm = SMDreamLM(pretrained=str(tmp_path / "binary"), tokenizer=tiny_dir, device="cpu")
    assert "soft_masking" not in lm.settings.generate_kwargs(8)  # diffusion_generate then uses sm_enabled
    assert lm.get_model_info()["sm_dream"]["soft_masking"]["enabled"] is False
    assert SMDreamLM(pretrained=tiny_dir, device="cpu",
                     soft_masking=False).settings.generate_kwargs(8)["soft_masking"] is False


def test_sampling_draws_passes_through(tiny_dir):
    lm = SMDreamLM(pretrained=tiny_dir, device="cpu", sampling_draws="inverse_cdf")
    assert lm.settings.generate_kwargs(8)["sampling_draws"] == "inverse_cdf"


def test_cuda_request_falls_back_to_cpu(lm):
    assert lm.device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_chat_template_continues_the_gen_prefix_verbatim(lm):
    prefix = "Here is the completed function:\n```python\ndef f():\n"
    chat = [{"role": "user", "content": "Write f."}, {"role": "assistant", "content": prefix}]
    text = lm.apply_chat_template(chat, add_generation_prompt=False)
    assert text.endswith("<|im_start|>assistant\n" + prefix)
    assert lm.apply_chat_template(chat[:1]).endswith("<|im_start|>assistant\n")


def test_first_stop_lengths_and_batch_seed():
    new = torch.tensor([[5, EOS, 6], [7, 8, 9], [EOS, 1, EOS]])
    assert first_stop_lengths(new, torch.tensor([EOS])).tolist() == [1, 3, 0]
    assert batch_seed(1, ["a", "b"]) == batch_seed(1, ["a", "b"]) != batch_seed(2, ["a", "b"])


class FakeGenerate:
    """Stands in for `diffusion_generate`: records its calls and appends fixed new tokens."""

    def __init__(self, tokenizer, text_before_eos, text_after_eos):
        before, after = tokenizer.encode(text_before_eos), tokenizer.encode(text_after_eos)
        self.new = before + [EOS] + after
        self.calls = []

    def __call__(self, ids, attention_mask=None, max_new_tokens=None, **kwargs):
        self.calls.append(dict(ids=ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens, **kwargs))
        new = torch.tensor((self.new * max_new_tokens)[:max_new_tokens]).expand(ids.shape[0], -1)
        return SimpleNamespace(sequences=torch.cat([ids, new], dim=1), nfe=7)


def test_gen_kwargs_override_the_model_args_per_request_and_text_is_cut(lm, monkeypatch, caplog):
    fake = FakeGenerate(lm.tokenizer, "alpha\n\nbeta", "gamma")
    monkeypatch.setattr(lm, "model", SimpleNamespace(diffusion_generate=fake))
    requests = [request("a short prompt", until=["\n\n"], max_gen_toks=12, idx=0),
                request("a much longer prompt with more words", until=["\n\n"], max_gen_toks=12, idx=1),
                request("third prompt here", until=[], max_gen_toks=12, idx=2),
                request("greedy, as --gen_kwargs temperature=0 asks", until=["\n\n"], max_gen_toks=12, temperature=0,
                        idx=3),
                request("do_sample=false is greedy too", until=["\n\n"], max_gen_toks=12, do_sample=False, top_p=0.5,
                        idx=4)]
    answers = lm.generate_until(requests)
    assert answers == ["alpha", "alpha", "alpha\n\nbeta", "alpha", "alpha"]  # stop string, then end of text
    assert len(fake.calls) == 4  # two stop-string groups, two override groups; batch_size 2
    call = fake.calls[0]
    assert (call["temperature"], call["top_p"], call["alg"], call["nfe_budget"]) == (0.1, 0.9, "entropy", 0.5)
    assert call["max_new_tokens"] == 12 and call["tokenizer_vocab_size"] == len(lm.tokenizer) == 151667
    mask = call["attention_mask"]  # longest prompt first, the shorter one left-padded
    assert mask[0].all() and not mask[1, 0] and mask[1, -1]
    assert call["ids"][1, 0] == EOS  # pad = eos
    overridden = sorted((c["temperature"], c["top_p"]) for c in fake.calls[2:])
    assert overridden == [(0.0, 0.5), (0.0, 0.9)]
    assert "override the model args" in caplog.text and "'temperature': 0" in caplog.text


def test_stop_strings_cut_at_the_earliest_and_may_be_one_string(lm, monkeypatch):
    fake = FakeGenerate(lm.tokenizer, "alpha\n\nbeta", "gamma")
    monkeypatch.setattr(lm, "model", SimpleNamespace(diffusion_generate=fake))
    one_string = Instance("generate_until", {}, ("p", {"until": "\n\n", "max_gen_toks": 12}), 0, ("t", 0, 1))
    several = request("q", until=["beta", "", "pha"], max_gen_toks=12, idx=1)
    assert lm.generate_until([one_string, several]) == ["alpha", "al"]


def test_gen_kwargs_that_cannot_apply_are_refused_before_generation(lm, monkeypatch):
    fake = FakeGenerate(lm.tokenizer, "x", "y")
    monkeypatch.setattr(lm, "model", SimpleNamespace(diffusion_generate=fake))
    with pytest.raises(ValueError, match="gen_kwargs repetition_penalty=1.2 cannot be applied"):
        lm.generate_until([request("p"), request("q", repetition_penalty=1.2)])
    with pytest.raises(ValueError, match="temperature"):
        lm.generate_until([request("p", temperature=-1)])
    with pytest.raises(ValueError, match="nfe_budget"):
        lm.generate_until([request("p", nfe_budget=2)])  # more steps than tokens with entropy unmasking
    with pytest.raises(ValueError, match="steps=8 exceeds max_new_tokens=4"):
        lm.generate_until([request("p", max_gen_toks=12), request("q", max_gen_toks=4, steps=8)])
    assert fake.calls == []


def test_model_max_new_tokens_overrides_every_task(lm, settings, monkeypatch):
    settings(max_new_tokens=5, steps=3, nfe_budget=None, temperature=0.0)
    fake = FakeGenerate(lm.tokenizer, "x", "y")
    monkeypatch.setattr(lm, "model", SimpleNamespace(diffusion_generate=fake))
    lm.generate_until([request("p", max_gen_toks=768)])
    assert (fake.calls[0]["max_new_tokens"], fake.calls[0]["steps"], fake.calls[0]["temperature"]) == (5, 3, 0.0)
    assert "nfe_budget" not in fake.calls[0]


def test_real_generation_records_nfe_and_does_not_depend_on_batch_company(lm, settings, monkeypatch):
    settings(nfe_budget=0.25)
    monkeypatch.setattr(lm, "batch_size", 1)
    lm.stats.clear()
    a, b = (request("first prompt", max_gen_toks=4, task="ta"),
            request("second, longer prompt", max_gen_toks=4, task="tb", idx=1))
    together = lm.generate_until([a, b])
    info = lm.get_model_info()["sm_dream"]
    assert info["tasks"]["ta"]["nfe_per_sample"] == 1 and math.isclose(info["tasks"]["ta"]["nfe_budget"], 0.25)
    assert info["tasks"]["tb"]["samples"] == 1 and info["tasks"]["tb"]["tokens_per_second"] > 0
    assert lm.generate_until([b]) == together[1:]  # same seed per prompt: order and company do not matter
    assert all(isinstance(t, str) for t in together)


def test_model_info_reports_the_sm_parameters_in_use(lm, settings):
    settings(soft_masking=False)
    sm = lm.get_model_info()["sm_dream"]["soft_masking"]
    expected = lm.base_model.soft_mask.mapped()
    assert sm["w_s"] == pytest.approx(0.5) and sm["w_a"] == pytest.approx(float(expected["w_a"]))
    assert (sm["top_k"], sm["schedule"], sm["enabled"]) == (1, "sm_then_binary", False)
    assert lm.base_model.config.sm_top_k == 1


def test_peft_adapter_loads_merged_or_not(tiny_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                        modules_to_save=["soft_mask"])
    adapted = get_peft_model(SoftMaskDreamForDiffusionLM.from_pretrained(tiny_dir), config).eval()
    with torch.no_grad():
        adapted.base_model.model.soft_mask.modules_to_save["default"].a_raw.fill_(2.0)  # a "trained" w_a
    adapted.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        expected = adapted(input_ids=ids).logits
        with adapted.disable_adapter():
            plain = adapted(input_ids=ids).logits
    assert not torch.allclose(expected, plain, atol=1e-5)
    for merge in (False, True):
        lm = SMDreamLM(pretrained=tiny_dir, peft=str(tmp_path / "adapter"), merge_peft=merge, device="cpu",
                       nfe_budget=0.25)
        with torch.no_grad():
            assert torch.allclose(lm.model(input_ids=ids).logits, expected, atol=1e-5)
        assert lm.soft_mask_parameters()["w_a"] == pytest.approx(math.log1p(math.exp(2.0)), rel=1e-5)
        if not merge:  # diffusion_generate is reached through the PEFT wrapper
            assert isinstance(lm.generate_until([request("p", max_gen_toks=2)])[0], str)
    # The adapter folder given as `pretrained` (a training output_dir) loads as base + adapter.
    lm = SMDreamLM(pretrained=str(tmp_path / "adapter"), device="cpu")
    assert (lm.pretrained, lm.peft) == (tiny_dir, str(tmp_path / "adapter"))
    with torch.no_grad():
        assert torch.allclose(lm.model(input_ids=ids).logits, expected, atol=1e-5)
    with pytest.raises(ValueError, match="is a PEFT adapter folder and peft="):
        SMDreamLM(pretrained=str(tmp_path / "adapter"), peft=str(tmp_path / "adapter"), device="cpu")
