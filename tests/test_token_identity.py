"""Every decoding mode keeps its tokens: the fast grid of scripts/check_token_identity.py against tokens
pinned from the decoding code before its modules were regrouped (plain, block, prefix/dual cache,
threshold; SM on/off; greedy and top-p sampling; `origin` and `entropy`; ReMDM; a logits hook)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PINS = json.loads((ROOT / "tests" / "data" / "token_identity_pins.json").read_text())


@pytest.fixture(scope="module")
def grid():
    spec = importlib.util.spec_from_file_location("check_token_identity", ROOT / "scripts" / "check_token_identity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model(grid):
    torch.manual_seed(0)
    return grid.build_model("sm_dream.model")


def test_the_fast_grid_gives_the_pinned_tokens(grid, model):
    cases = grid.cases(quick=True)
    assert sorted(name for name, _, _ in cases) == sorted(PINS)
    got = {name: grid.generate(model, kwargs, variant)["sequences"] for name, kwargs, variant in cases}
    assert [name for name in PINS if got[name] != PINS[name]] == []


def test_the_pins_see_soft_masking_and_a_changed_lambda(grid, model):
    # SM changes the tokens of every pinned SM case, so a lost or altered feedback shows in the tokens.
    for name in PINS:
        if name.endswith("sm=True") and name.replace("sm=True", "sm=False") in PINS:
            assert PINS[name] != PINS[name.replace("sm=True", "sm=False")], name
    name, kwargs, variant = next(c for c in grid.cases(quick=True) if c[0] == "prefix/greedy/entropy/sm=True")
    saved = model.soft_mask.a_raw.detach().clone()
    with torch.no_grad():
        model.soft_mask.a_raw.add_(2.0)
    try:
        assert grid.generate(model, kwargs, variant)["sequences"] != PINS[name]
    finally:
        with torch.no_grad():
            model.soft_mask.a_raw.copy_(saved)
