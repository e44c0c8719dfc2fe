"""Does refreshing the suffix SM feedback only at each block's refresh lose quality against refreshing
it at every step? Block decoding without a cache, on a small model trained like the replication's.

    python benchmarks/bench_sm_refresh_quality.py [--pretrain_steps 400 --continue_steps 200 --prompts 64]

Trains a small Dream-architecture model on the Python standard library (`sm_dream.replication`:
binary pretraining, then a soft-masking continuation at p_sm 0.8), then continues held-out prompts
with blocks (`--block_length`, no cache), SM on, at NFE budgets 1/4 and 1, under two rules:
    every step     `cache_refresh_interval=1`: every masked position gets fresh feedback at every step
    block refresh  the default: the suffix (after the active block) keeps the feedback of the block's
                   first step; the block's masks get fresh feedback at every step
and, for scale, with SM off. Reported per rule and budget (`sm_dream.replication_eval`): NLL of the
continuation under the binary pretrained model (nats per token, lower is better; `--alg`
`entropy` at temperature 0 by default, so every difference comes from the rule), exact match of the
generated tokens with the held-out continuation (token accuracy), unigram entropy and distinct
bigrams (collapse check), and the share of tokens both rules generate alike. A quick, small-sample
check (one seed, a few minutes of training): differences within noise are what to expect. A small
model learns a small w_s (SM barely changes its tokens), so `--stress_w_s 0.9` repeats the comparison
with w_s set to 0.9: a model that leans on its soft inputs far more than it learned to.
"""

import argparse
import dataclasses
import math
import time

import torch

from sm_dream.replication import ReplicationArgs, build_model, prepare_data, train_phase
from sm_dream.replication_eval import continuation_metrics

RULES = {"every step": dict(cache_refresh_interval=1), "block refresh": {}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain_steps", type=int, default=400)
    parser.add_argument("--continue_steps", type=int, default=200)
    parser.add_argument("--max_files", type=int, default=200)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new_tokens", type=int, default=32)
    parser.add_argument("--block_length", type=int, default=8)
    parser.add_argument("--alg", default="entropy")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--stress_w_s", type=float, nargs="*", default=[0.9], help="also compare with these w_s")
    ns = parser.parse_args()
    torch.set_num_threads(ns.threads)
    args = ReplicationArgs(max_files=ns.max_files, vocab_size=1024, seq_len=96, gen_new_tokens=ns.new_tokens,
                           gen_prompts=ns.prompts, eval_windows=ns.prompts, eval_repeats=2, seeds=[1], workers=1)
    args.validate()
    start = time.time()
    data = prepare_data(args)
    torch.manual_seed(0)
    base = build_model(args, data["mask_id"] + 1, data["eos_id"], data["mask_id"])
    train_phase(base, data["train"], args, ns.pretrain_steps, 0.0, seed=0)
    model = build_model(args, data["mask_id"] + 1, data["eos_id"], data["mask_id"])
    model.load_state_dict(base.state_dict())
    train_phase(model, data["train"], args, ns.continue_steps, args.p_sm, seed=1)
    model.eval()
    print(f"trained in {time.time() - start:.0f} s: {dataclasses.asdict(args)['hidden_size']} hidden, "
          f"{ns.pretrain_steps} + {ns.continue_steps} steps; SM {model.soft_mask.mapped()}")
    windows = data["gen_windows"]
    prompt_length = args.seq_len - ns.new_tokens
    print(f"{windows.shape[0]} held-out prompts, {ns.new_tokens} new tokens, blocks of {ns.block_length}, no cache, "
          f"alg {ns.alg}, temperature {ns.temperature}")
    print(f"  reference continuation: {_format(continuation_metrics(base, windows, prompt_length, args))}")
    compare(model, base, windows, prompt_length, args, ns)
    for w_s in ns.stress_w_s:
        with torch.no_grad():
            model.soft_mask.s_raw.fill_(math.log(w_s / (1 - w_s)))  # w_s = sigmoid(s_raw)
        print(f"  with w_s set to {w_s} (stress):")
        compare(model, base, windows, prompt_length, args, ns)


def compare(model, base, windows, prompt_length: int, args, ns) -> None:
    """Metrics of SM off and of both rules at NFE budgets 1/4 and 1."""
    reference = windows[:, prompt_length:]
    for budget in (0.25, 1.0):
        outputs = {}
        for name, extra in {"SM off": dict(soft_masking=False), **RULES}.items():
            kwargs = dict(max_new_tokens=ns.new_tokens, nfe_budget=budget, alg=ns.alg, temperature=ns.temperature,
                          block_length=ns.block_length, soft_masking=True, generator=torch.Generator().manual_seed(7))
            kwargs.update(extra)
            with torch.no_grad():
                outputs[name] = model.diffusion_generate(windows[:, :prompt_length], **kwargs)
            metrics = continuation_metrics(base, outputs[name], prompt_length, args)
            metrics["exact_match"] = float((outputs[name][:, prompt_length:] == reference).float().mean())
            print(f"  NFE {budget:>4} {name:>13}: {_format(metrics)}")
        same = (outputs["every step"][:, prompt_length:] == outputs["block refresh"][:, prompt_length:]).float().mean()
        print(f"  NFE {budget:>4}: tokens alike under both rules: {float(same):.3f}", flush=True)


def _format(metrics) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())


if __name__ == "__main__":
    main()
