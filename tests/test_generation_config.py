"""The generation config: defaults (steps), the one validator of decoding settings, the progress bar."""

import shutil

import pytest
import torch

from sm_dream import SoftMaskDreamForDiffusionLM
from sm_dream.model.generation_utils import SoftMaskDreamGenerationConfig
from sm_dream.resources import DREAM_FIXTURE
from sm_dream.tiny import small_vocab_config

MASK = 127


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SoftMaskDreamForDiffusionLM(small_vocab_config(initializer_range=0.2)).eval()


@pytest.fixture(scope="module")
def released(tmp_path_factory, model):
    """The tiny model saved with Dream's released generation_config.json (steps=512, alg origin)."""
    folder = tmp_path_factory.mktemp("released")
    model.save_pretrained(folder)
    shutil.copy(DREAM_FIXTURE / "generation_config.json", folder / "generation_config.json")
    loaded = SoftMaskDreamForDiffusionLM.from_pretrained(folder).eval()
    assert loaded.generation_config.steps == 512
    return loaded


def _ids(b=2):
    return torch.randint(1, 100, (b, 5), generator=torch.Generator().manual_seed(3))


# ---------------------------------------------------------------------------------------------
# Steps: one per new token unless passed; a stored 512 never blames the user


def test_without_steps_one_step_per_new_token(model):
    assert SoftMaskDreamGenerationConfig().steps is None
    out = model.diffusion_generate(_ids(), max_new_tokens=12, alg="entropy", return_dict_in_generate=True)
    assert out.nfe == 12 and not (out.sequences == MASK).any()
    default = model.diffusion_generate(_ids(), return_dict_in_generate=True)  # Dream: max_length 20 new tokens
    assert default.sequences.shape[1] == 5 + 20 and default.nfe == 20


def test_released_stored_steps_are_clamped_to_max_new_tokens(released):
    out = released.diffusion_generate(_ids(), max_new_tokens=16, alg="entropy", return_dict_in_generate=True)
    assert out.nfe == 16 and not (out.sequences == MASK).any()
    assert released.diffusion_generate(_ids(), return_dict_in_generate=True).nfe == 20  # 20 tokens, not 512 passes
    long = released.diffusion_generate(_ids(1), max_new_tokens=600, alg="origin", return_dict_in_generate=True)
    assert long.nfe == 512  # a stored value that fits is used as stored


def test_explicit_steps_keep_dreams_behaviour(released, model):
    origin = released.diffusion_generate(_ids(), max_new_tokens=4, steps=9, return_dict_in_generate=True)
    assert origin.nfe == 9  # origin may take more steps than tokens, as in Dream
    with pytest.raises(ValueError, match="steps=9 exceeds max_new_tokens=4"):
        released.diffusion_generate(_ids(), max_new_tokens=4, steps=9, alg="entropy")
    config = SoftMaskDreamGenerationConfig(steps=6, alg="origin")  # a config passed to the call is explicit too
    assert model.diffusion_generate(_ids(), generation_config=config, max_new_tokens=3,
                                    return_dict_in_generate=True).nfe == 6
    budget = released.diffusion_generate(_ids(), max_new_tokens=16, nfe_budget=0.25, return_dict_in_generate=True)
    assert budget.nfe == 4


# ---------------------------------------------------------------------------------------------
# The validator: types, ranges, combinations, before any forward pass


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(max_new_tokens=2.5), r"max_new_tokens=2.5 is invalid: it must be an integer >= 1"),
        (dict(max_new_tokens=True), r"max_new_tokens=True is invalid"),
        (dict(steps=2.5), r"steps=2.5 is invalid: it must be an integer >= 1"),
        (dict(steps="8"), r"steps='8' is invalid"),
        (dict(temperature=1e-40), r"temperature=1e-40 is invalid: use 0 \(greedy\) or a finite value >= 1e-05"),
        (dict(temperature=float("inf")), r"temperature=inf is invalid"),
        (dict(temperature=float("nan")), r"temperature=nan is invalid"),
        (dict(alg_temp=1e-40), r"alg_temp=1e-40 is invalid"),
        (dict(alg_temp=float("inf")), r"alg_temp=inf is invalid"),
        (dict(alg_temp=float("nan")), r"alg_temp=nan is invalid"),
        (dict(output_history=True), r"output_history=True is invalid: .* return_dict_in_generate=True"),
        (dict(top_p=float("nan")), r"top_p=nan is invalid"),
        (dict(top_k=2.0), r"top_k=2.0 is invalid"),
        (dict(eps=1.5), r"eps=1.5 is invalid"),
        (dict(nfe_budget=float("inf")), r"nfe_budget=inf is invalid"),
        (dict(threshold=float("nan")), r"threshold=nan is invalid"),
        (dict(remasking="remdm"), r"remasking='remdm' is invalid: choose one of"),
        (dict(remasking="cap", remasking_eta=2.0), r"remasking_eta=2.0 must lie in \[0, 1\]"),
        (dict(stop_when_finished="yes"), r"stop_when_finished='yes' is invalid: it must be True or False"),
        (dict(progress_bar=1), r"progress_bar=1 is invalid"),
        (dict(num_return_sequences=0), r"num_return_sequences=0 is invalid"),
        (dict(alg=["entropy"]), r"alg=\['entropy'\] is invalid: choose one of"),
        (dict(sm_schedule="cosine"), r"sm_schedule='cosine' is invalid: choose one of \['none', 'sm_then_binary'"),
    ],
)
def test_invalid_settings_name_the_field_and_the_fix(model, kwargs, message):
    calls = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    try:
        with pytest.raises(ValueError, match=message):
            model.diffusion_generate(_ids(), **{"max_new_tokens": 8, **kwargs})
    finally:
        handle.remove()
    assert not calls  # rejected before the first forward pass
    with pytest.raises(ValueError, match=message):  # the same validator guards a config built directly
        SoftMaskDreamGenerationConfig(**{"return_dict_in_generate": False, **kwargs})


def test_small_but_valid_temperatures_sample(model):
    for settings in (dict(temperature=1e-5), dict(alg="maskgit_plus", alg_temp=1e-5), dict(temperature=0)):
        out = model.diffusion_generate(_ids(), max_new_tokens=6, **settings)
        assert not (out == MASK).any()


def test_output_history_with_a_dict_output(model):
    out = model.diffusion_generate(_ids(), max_new_tokens=6, steps=3, output_history=True, return_dict_in_generate=True)
    assert len(out.history) == 3 and torch.equal(out.history[-1], out.sequences)


# ---------------------------------------------------------------------------------------------
# Progress bar


def test_progress_bar_is_opt_in(model, capsys):
    model.diffusion_generate(_ids(), max_new_tokens=6, steps=3)
    assert "3/3" not in capsys.readouterr().err
    model.diffusion_generate(_ids(), max_new_tokens=6, steps=3, progress_bar=True)
    assert "3/3" in capsys.readouterr().err
    model.diffusion_generate(_ids(), max_new_tokens=6, threshold=0.5, block_length=3, progress_bar=True)
    assert "step" in capsys.readouterr().err  # threshold decoding: a count without a total
