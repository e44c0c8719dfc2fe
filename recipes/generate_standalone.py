"""Load a saved soft-masked Dream with only torch + transformers, and generate.

Usage:
    python recipes/generate_standalone.py outputs/demo/merged --prompt "What is 2 plus 3?"

This script never imports sm_dream (it even blocks the import), so it shows what a user without the
package gets: `AutoModel.from_pretrained(dir, trust_remote_code=True)` runs the code saved with the
checkpoint. Soft-masking is on between denoising steps (the model's trained w_s, w_a, w_b).
"""

import argparse
import sys

sys.modules["sm_dream"] = None  # as on a machine where sm_dream is not installed

import torch  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402


TINY_HIDDEN_SIZE = 256  # narrower than any released Dream (3584 / 4096): the random tiny model


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--prompt", default="What is 2 plus 3?")
    parser.add_argument("--max_new_tokens", type=int, default=24)
    parser.add_argument("--nfe_budget", type=float, default=0.5, help="steps / max_new_tokens")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    model = AutoModel.from_pretrained(args.model_dir, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir, trust_remote_code=True)
    messages = [{"role": "user", "content": args.prompt}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.diffusion_generate(ids["input_ids"], attention_mask=ids["attention_mask"],
                                   max_new_tokens=args.max_new_tokens, nfe_budget=args.nfe_budget, alg="entropy",
                                   temperature=0.1, top_p=0.9, soft_masking=True, return_dict_in_generate=True)
    text = tokenizer.decode(out.sequences[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    sm = model.soft_mask
    print(f"loaded {type(model).__module__}.{type(model).__name__} (sm_dream importable: False)")
    print(f"SM parameters: w_s={sm.w_s.item():.4f} w_a={sm.w_a.item():.3f} w_b={sm.w_b.item():.3f}; "
          f"{out.nfe} forward passes")
    print(f"prompt: {args.prompt!r}\ngenerated: {text!r}")
    if model.config.hidden_size < TINY_HIDDEN_SIZE:
        print(f"note: this is a tiny model (hidden size {model.config.hidden_size}, {model.config.num_hidden_layers} "
              "layers) from random weights and a few training steps: gibberish is expected. The demo checks the "
              "pipeline (train, merge, load without sm_dream, generate), not answer quality.")


if __name__ == "__main__":
    main()
