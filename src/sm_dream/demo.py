# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""End-to-end smoke run of the model on the embedded tiny default (CPU, offline, seconds).

    python -m sm_dream.demo --output_dir outputs/demo

Builds a tiny Dream with the real tokenizer, runs a plain and a soft-masked forward on a chat prompt,
saves the model, and reloads it in a fresh process where sm_dream is not importable
(`AutoModel.from_pretrained(..., trust_remote_code=True)`), checking the logits match. Finishes with
a short soft-masked `diffusion_generate` (random weights: the text is noise, the mechanics are real).
"""

import argparse
import os
import subprocess
import sys

import torch

from .model.modeling_sm_dream import SoftMaskDreamForDiffusionLM, shift_right
from .model.soft_masking import feedback_from_logits
from .tiny import load_dream_tokenizer, tiny_config

_RELOAD = """
import sys, torch
sys.modules["sm_dream"] = None  # as on a machine without sm_dream
from transformers import AutoModel
ref = torch.load(sys.argv[1] + "/demo_reference.pt")
model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
with torch.no_grad():
    diff = (model(ref["ids"]).logits - ref["logits"]).abs().max().item()
print(f"reloaded {type(model).__module__}.{type(model).__name__}: max |logit diff| = {diff:.3g}")
sys.exit(0 if diff == 0.0 else 1)
"""


def _generate(model, tokenizer, prompt: str) -> None:
    """16 new tokens at NFE budget 1/4 (4 forward passes), SM on, entropy unmasking."""
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    out = model.diffusion_generate(ids, max_new_tokens=16, nfe_budget=0.25, alg="entropy", soft_masking=True,
                                   tokenizer_vocab_size=len(tokenizer), return_dict_in_generate=True)
    text = tokenizer.decode(out.sequences[0, ids.shape[1]:])
    print(f"diffusion_generate (SM on, 16 tokens, {out.nfe} forward passes): {text!r}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="outputs/demo")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    tokenizer = load_dream_tokenizer()
    model = SoftMaskDreamForDiffusionLM(tiny_config(sm_init_scale=0.5)).eval()
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Write a haiku."}], tokenize=False,
                                           add_generation_prompt=True)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    ids = torch.cat([ids, torch.full((1, 16), model.config.mask_token_id)], dim=1)  # prompt + 16 masks
    masked = ids == model.config.mask_token_id
    with torch.no_grad():
        plain = model(ids).logits
        feedback = feedback_from_logits(shift_right(plain), masked, k=model.config.sm_top_k)
        soft = model(ids, sm_feedback=feedback).logits
    lam = model.soft_mask(feedback.entropy)
    print(f"model: {sum(p.numel() for p in model.parameters()):,} parameters; SM {model.soft_mask.mapped()}")
    print(f"{int(masked.sum())} masked positions: mean entropy {feedback.entropy.mean():.3f} nats, "
          f"mean lambda {lam.mean():.4f}, max |soft - plain logits| {(soft - plain).abs().max():.3g}")
    os.makedirs(args.output_dir, exist_ok=True)
    model.save_pretrained(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)
    torch.save({"ids": ids, "logits": plain}, os.path.join(args.output_dir, "demo_reference.pt"))
    subprocess.run([sys.executable, "-c", _RELOAD, args.output_dir], check=True)
    _generate(model, tokenizer, prompt)


if __name__ == "__main__":
    main()
