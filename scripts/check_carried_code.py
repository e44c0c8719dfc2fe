# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""A checkpoint saved here loads elsewhere: the code files a saved model carries must work on every
supported transformers release, in a Python where sm_dream cannot be imported.

    python scripts/check_carried_code.py save DIR   # with sm_dream installed (e.g. the locked .venv)
    python scripts/check_carried_code.py load DIR   # any environment; sm_dream is blocked first

`save` writes a tiny random model (peaked rows, so that decisions are never float ties) with
`save_pretrained`, plus reference logits and SM generations. `load` loads it with
`AutoModel.from_pretrained(DIR, trust_remote_code=True)` and requires identical logits and tokens.
"""

import json
import sys


def _probe(model):
    """Logits on a fixed canvas, and SM generations at temperature 0 (every carried file runs)."""
    import torch

    mask = model.config.mask_token_id
    ids = torch.tensor([[5, 17, 42, 9, mask, mask, 3, mask], [0, 0, 11, 23, mask, 8, mask, mask]])
    attention = torch.tensor([[1] * 8, [0, 0] + [1] * 6])
    with torch.no_grad():
        logits = model(ids, attention_mask=attention).logits
    prompts, prompt_mask = ids[:, :4].clone(), attention[:, :4]
    out = {"logits": logits}
    for name, extra in {"plain": {}, "block_cache": dict(block_length=4, use_cache=True)}.items():
        out[name] = model.diffusion_generate(prompts, attention_mask=prompt_mask, max_new_tokens=8, steps=8,
                                             alg="entropy", temperature=0.0, soft_masking=True,
                                             return_dict_in_generate=True, **extra).sequences
    return out


def save(folder: str) -> None:
    import torch
    import transformers

    from sm_dream import SoftMaskDreamForDiffusionLM
    from sm_dream.tiny import small_vocab_config

    torch.manual_seed(0)
    config = small_vocab_config(initializer_range=0.2, sm_init_scale=0.9, sm_init_offset=-4.0)
    model = SoftMaskDreamForDiffusionLM(config).eval()
    model.save_pretrained(folder)
    torch.save(_probe(model), f"{folder}/reference.pt")
    with open(f"{folder}/saved_with.json", "w") as f:
        json.dump({"torch": torch.__version__, "transformers": transformers.__version__}, f)
    print(f"saved a tiny SM checkpoint to {folder} (transformers {transformers.__version__})")


def load(folder: str) -> None:
    sys.modules["sm_dream"] = None  # a Python where `import sm_dream` fails
    import torch
    import transformers
    from transformers import AutoModel

    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    if "transformers_modules" not in type(model).__module__:
        raise SystemExit(f"loaded {type(model).__module__}, not the checkpoint's own code")
    reference, got = torch.load(f"{folder}/reference.pt"), _probe(model)
    with open(f"{folder}/saved_with.json") as f:
        saved_with = json.load(f)["transformers"]
    diff = (got["logits"] - reference["logits"]).abs().max().item()
    same = {name: torch.equal(got[name], reference[name]) for name in ("plain", "block_cache")}
    print(f"saved with transformers {saved_with}, loaded with {transformers.__version__}: "
          f"max |logits diff| = {diff}, identical generations: {same}")
    if diff != 0.0 or not all(same.values()):
        raise SystemExit("the carried code does not reproduce the saved model's outputs")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("save", "load"):
        raise SystemExit(__doc__)
    {"save": save, "load": load}[sys.argv[1]](sys.argv[2])
