# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Token identity with another copy of the model package: every decoding mode gives the same tokens.

    python scripts/check_token_identity.py OLD_MODEL_DIR [--quick] [--write-pins FILE]

OLD_MODEL_DIR is a `sm_dream/model` directory of another checkout, e.g. the previous main's:

    mkdir -p /tmp/old && git archive main src/sm_dream/model | tar -x -C /tmp/old
    python scripts/check_token_identity.py /tmp/old/src/sm_dream/model

The old package is loaded as its own package (its files import only torch, transformers and each
other); a tiny model is built from each package with the same weights (LM head scaled, so that
decisions are never float ties), and `diffusion_generate` runs on both over a grid: plain, block,
prefix-cache, dual-cache (with and without refreshes inside a block, feedback horizons, a shorter last
block) and threshold decoding (0 and above 1 included); SM on and off, SM schedules, top-k and
full-vocabulary SM; greedy and sampling (temperature 0.1 top-p 0.9, top-k, both `sampling_draws`); the
four unmasking algorithms, alg_temp, more steps than tokens; ReMDM schedules; logits and tokens hooks;
early stop; a left-padded batch of 2. Each case compares the tokens, the history and the SM trace
(candidate, weight and lambda per soft-masked position) exactly. A last case perturbs the old
model's lambda and must be told apart. Exit status 0 when every case is identical.

`--write-pins FILE` stores the old package's tokens of the quick grid as JSON (the pinned
references of tests/test_token_identity.py).
"""

import argparse
import importlib
import importlib.util
import itertools
import json
import sys
from pathlib import Path

import torch

MODEL_FIELDS = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=256, rope_theta=1e6, mask_token_id=127,
                    pad_token_id=0, bos_token_id=0, eos_token_id=0, sm_init_scale=0.9, sm_init_offset=-4.0,
                    initializer_range=0.2)  # peaked rows, SM strong enough to change tokens
LOGIT_SCALE = 2.0
PROMPTS = torch.tensor([[5, 17, 42, 9, 33, 61], [0, 0, 11, 23, 8, 90]])
PROMPT_MASK = torch.tensor([[1] * 6, [0, 0] + [1] * 4])

MODES = {
    "plain": {},
    "block": dict(block_length=4),
    "block_refresh2": dict(block_length=4, cache_refresh_interval=2),
    "prefix": dict(block_length=4, use_cache=True),
    "prefix_refresh2": dict(block_length=4, use_cache=True, cache_refresh_interval=2),
    "prefix_horizon0": dict(block_length=4, use_cache=True, sm_feedback_horizon=0),
    "dual": dict(block_length=4, dual_cache=True),
    "dual_horizon_all": dict(block_length=4, dual_cache=True, sm_feedback_horizon=64),
    "prefix_uneven": dict(block_length=5, use_cache=True),  # a shorter last block
    "dual_uneven": dict(block_length=5, dual_cache=True, cache_refresh_interval=3),
    "threshold": dict(threshold=0.9),
    "threshold_prefix": dict(block_length=4, use_cache=True, threshold=0.9),
    "threshold_dual": dict(block_length=4, dual_cache=True, threshold=0.5),
    "threshold_zero": dict(block_length=4, threshold=0.0),  # a block per step
    "threshold_above_one": dict(block_length=6, use_cache=True, threshold=1.5),  # a token per step
}
SAMPLING = {
    "greedy": dict(temperature=0.0),
    "top_p": dict(temperature=0.1, top_p=0.9),
    "top_k": dict(temperature=0.7, top_k=5),
    "top_p_inverse_cdf": dict(temperature=0.1, top_p=0.9, sampling_draws="inverse_cdf"),
}
ALGS = ("origin", "maskgit_plus", "topk_margin", "entropy")
REMASKING = {
    "cap": dict(remasking="cap", remasking_eta=0.3),
    "rescale": dict(remasking="rescale", remasking_eta=0.5),
    "loop": dict(remasking="loop", remasking_eta=0.3),
}
FIXED_MODES = [m for m in MODES if "threshold" not in m]


def load_package(directory: str, name: str = "old_sm_dream_model"):
    """Another copy of the model package (its files import only torch, transformers and each other),
    imported as the package `name`; also benchmarks/bench_generation.py's `--baseline`."""
    init = Path(directory) / "__init__.py"
    if not init.is_file():
        raise SystemExit(f"{directory!r} has no __init__.py; pass a sm_dream/model directory.")
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[directory])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    return package


def build_model(package_name: str, state=None, **overrides):
    """The tiny model of `package_name` ("sm_dream.model" or the old copy), with `state` if given."""
    config_cls = importlib.import_module(f"{package_name}.configuration_sm_dream").SoftMaskDreamConfig
    model_cls = importlib.import_module(f"{package_name}.modeling_sm_dream").SoftMaskDreamForDiffusionLM
    model = model_cls(config_cls(**{**MODEL_FIELDS, **overrides})).eval()
    with torch.no_grad():
        if state is None:
            model.lm_head.weight.mul_(LOGIT_SCALE)
        else:
            model.load_state_dict(state)
    return model


def cases(quick: bool = False):
    """(name, diffusion_generate kwargs, model variant) of the grid; `quick`: a fast subset."""
    base = dict(max_new_tokens=12, steps=6, stop_when_finished=False)
    out = []
    modes = ("plain", "prefix", "dual", "threshold_prefix", "block_refresh2") if quick else MODES
    samplings = ("greedy", "top_p") if quick else SAMPLING
    algs = ("origin", "entropy") if quick else ALGS
    for mode, sampling, alg, sm in itertools.product(modes, samplings, algs, (False, True)):
        out.append((f"{mode}/{sampling}/{alg}/sm={sm}",
                    dict(base, **MODES[mode], **SAMPLING[sampling], alg=alg, soft_masking=sm), "topk"))
    if quick:
        out.append(("prefix/top_k/maskgit_plus/remask=cap/sm=True", dict(
            base, **MODES["prefix"], **SAMPLING["top_k"], **REMASKING["cap"], alg="maskgit_plus", soft_masking=True,
            steps=12), "topk"))
        out.append(("plain/greedy/entropy/schedule=sm_then_binary/hook", dict(
            base, alg="entropy", soft_masking=True, sm_schedule="sm_then_binary", sm_threshold=0.5), "hook"))
        return out
    for mode, remask, alg, sm, sampling in itertools.product(
            FIXED_MODES, REMASKING, ("origin", "maskgit_plus", "entropy"), (False, True), ("greedy", "top_k")):
        out.append((f"{mode}/{sampling}/{alg}/remask={remask}/sm={sm}",
                    dict(base, **MODES[mode], **SAMPLING[sampling], **REMASKING[remask], alg=alg, soft_masking=sm,
                         steps=12 if remask != "loop" else 16), "topk"))
    schedules = ("sm_then_binary", "binary_then_sm", "linear_sm_to_binary", "linear_binary_to_sm")
    for mode, schedule, sampling in itertools.product(MODES, schedules, ("greedy", "top_p")):
        out.append((f"{mode}/{sampling}/entropy/schedule={schedule}",
                    dict(base, **MODES[mode], **SAMPLING[sampling], alg="entropy", soft_masking=True,
                         sm_schedule=schedule, sm_threshold=0.5), "topk"))
    for mode, sampling, alg in itertools.product(MODES, ("greedy", "top_p"), ("origin", "entropy")):
        for variant in ("full_vocab", "hook", "tokens_hook"):
            out.append((f"{mode}/{sampling}/{alg}/{variant}",
                        dict(base, **MODES[mode], **SAMPLING[sampling], alg=alg, soft_masking=True), variant))
    for mode, alg in itertools.product(MODES, ("maskgit_plus", "entropy")):
        out.append((f"{mode}/greedy/{alg}/alg_temp/stop", dict(base, **MODES[mode], alg=alg, alg_temp=0.5,
                                                                soft_masking=True, stop_when_finished=True), "topk"))
        out.append((f"{mode}/greedy/{alg}/nfe_budget", dict(base, **MODES[mode], alg=alg, soft_masking=True,
                                                             steps=None, nfe_budget=1.0), "topk"))
    for mode, sm in itertools.product(FIXED_MODES, (False, True)):  # more steps than tokens
        out.append((f"{mode}/top_p/origin/steps=24/sm={sm}", dict(base, **MODES[mode], **SAMPLING["top_p"],
                                                                  alg="origin", soft_masking=sm, steps=24), "topk"))
    return out


def generate(model, kwargs, variant: str):
    """Tokens, history and SM trace (as plain lists) of one call, from a fixed generator."""
    kwargs = dict(kwargs)
    if variant == "hook":
        kwargs["generation_logits_hook_func"] = lambda step, x, logits: logits
    if variant == "tokens_hook":
        kwargs["generation_tokens_hook_func"] = lambda step, x, logits: x
    out = model.diffusion_generate(PROMPTS, attention_mask=PROMPT_MASK, generator=torch.Generator().manual_seed(7),
                                   return_dict_in_generate=True, output_history=True, **kwargs)
    trace = []
    for step in out.sm_trace:
        if step is None:
            trace.append(None)
        else:
            trace.append([step.positions.nonzero().tolist(), step.top_ids.tolist(), step.top_probs.tolist(),
                          step.lam.tolist()])
    return {"sequences": out.sequences.tolist(), "history": [h.tolist() for h in out.history], "trace": trace,
            "nfe": out.nfe}


class Pair:
    """The current and the old package's models, per variant, with the same weights."""

    def __init__(self, old_name: str):
        self.old_name, self.models = old_name, {}

    def get(self, variant: str):
        if variant not in self.models:
            overrides = dict(sm_full_vocab=True) if variant == "full_vocab" else {}
            torch.manual_seed(0)
            new = build_model("sm_dream.model", **overrides)
            self.models[variant] = (new, build_model(self.old_name, new.state_dict(), **overrides))
        return self.models[variant]


def compare(pair: Pair, grid, log=print):
    """Run every case on both models; returns the names of the cases that differ."""
    differ = []
    for name, kwargs, variant in grid:
        new, old = pair.get(variant)
        a, b = generate(new, kwargs, variant), generate(old, kwargs, variant)
        if a != b:
            fields = [k for k in a if a[k] != b[k]]
            differ.append(name)
            log(f"DIFFERS {name}: {fields}")
    return differ


def perturbed_lambda_is_detected(pair: Pair) -> bool:
    """With the old model's lambda offset moved slightly, SM cases must differ (the check can fail)."""
    new, old = pair.get("topk")
    saved = old.soft_mask.b_raw.detach().clone()
    with torch.no_grad():
        old.soft_mask.b_raw.add_(1e-3)
    try:
        grid = [(n, k, v) for n, k, v in cases(quick=True) if k["soft_masking"] and v == "topk"]
        return len(compare(pair, grid, log=lambda *a: None)) == len(grid)
    finally:
        with torch.no_grad():
            old.soft_mask.b_raw.copy_(saved)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("old_model_dir")
    parser.add_argument("--quick", action="store_true", help="the fast subset (the pinned test's grid)")
    parser.add_argument("--write-pins", help="write the old package's outputs of the quick grid to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load_package(args.old_model_dir)
    pair = Pair("old_sm_dream_model")
    if args.write_pins:
        pins = {name: generate(pair.get(variant)[1], kwargs, variant)["sequences"]
                for name, kwargs, variant in cases(quick=True)}
        lines = [f"{json.dumps(name)}: {json.dumps(tokens)}" for name, tokens in pins.items()]
        Path(args.write_pins).write_text("{\n" + ",\n".join(lines) + "\n}\n")
        print(f"wrote {len(pins)} pinned cases to {args.write_pins}")
    grid = cases(quick=args.quick)
    differ = compare(pair, grid)
    detected = perturbed_lambda_is_detected(pair)
    print(f"{len(grid) - len(differ)}/{len(grid)} cases identical (tokens, history, SM trace); "
          f"perturbed lambda detected: {detected}")
    return 0 if not differ and detected else 1


if __name__ == "__main__":
    sys.exit(main())
