"""Generation throughput: soft-masked vs binary decoding at the same NFE, and the NFE budgets 1/4, 1/2, 1/1.

    python benchmarks/bench_generation.py [--rounds 3 --budget_rounds 2 --threads 1]

Batch 1, 32-token prompt, 256 new tokens, entropy unmasking, temperature 0. Tokens per second = new
tokens / time of one `diffusion_generate` call, on wall time and on this process's CPU time (one
thread: steady on a shared machine, where wall time also counts other jobs). Variants are interleaved
round by round (the order alternates) and medians reported, so drift hits all of them alike.

1. SM / binary time at NFE budget 1/4 (64 forward passes each; target <= 1.02). SM adds, per step,
   `feedback_from_logits` on the masked rows (softmax entropy and top-k over the vocabulary) and the
   k-row blend. That cost scales with vocabulary x masked rows, the forward with parameters x tokens,
   so the ratio depends on the model's proportions. Two models:
   - "vocab-heavy": hidden 512, 8 layers, vocab 32,000 (55M parameters): the LM head costs 0.7x the
     rest of the network per token, and SM's per-row work weighs ~60x more than in Dream-7B.
   - "Dream-proportioned": hidden 1024, 8 layers, vocab 4,096: LM head 0.05x the body per token
     (Dream-7B, 3584 hidden, 28 layers, 152,064 vocab: 0.08x); SM's per-row work ~2x Dream-7B's share.
2. Tokens per second at budgets 1/4, 1/2, 1/1 with SM on (vocab-heavy model): cost linear in steps.
3. `--cases sm_cost`: what SM costs on a mid-size model with Dream's vocabulary (hidden 512, 6 layers,
   vocab 152,064, LM head scaled by `--logit_scale` so that decisions are not float ties; 64-token
   prompt, `entropy`, temperature 0): SM on / SM off time for 64 new tokens in 16 steps, and for 256
   new tokens in 64 steps with blocks of 32 in each mode (plain, block, prefix cache, dual cache,
   prefix cache + threshold 0.9). Targets: <= 1.05 and <= 1.10. `--baseline DIR` also times SM off
   with another copy of the decoding loop (DIR: a `sm_dream/model` directory, e.g. an older checkout's,
   loaded as its own package; its `denoise` replaces this one's while it runs), interleaved in the
   same rounds: "SM off, baseline / this" > 1 means this code is faster. `--horizons 0 256` also
   times SM on with those `sm_feedback_horizon` values in the block cases (256: the whole suffix).
"""

import argparse
import contextlib
import importlib
import statistics
import sys
import time
from pathlib import Path

import torch

from sm_dream import SoftMaskDreamForDiffusionLM
from sm_dream.model import generation_utils
from sm_dream.tiny import DREAM_VOCAB_SIZE, small_vocab_config, tiny_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from check_token_identity import load_package  # noqa: E402  (one loader of an old package copy)

MODELS = {"vocab-heavy": dict(hidden=512, layers=8, vocab=32000),
          "Dream-proportioned": dict(hidden=1024, layers=8, vocab=4096)}


def _model(hidden: int, layers: int, vocab: int, k: int) -> SoftMaskDreamForDiffusionLM:
    config = small_vocab_config(
        vocab_size=vocab, mask_token_id=vocab - 1, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=hidden // 64, num_key_value_heads=max(1, hidden // 256),
        intermediate_size=int(hidden * 2.75), sm_top_k=k, sm_init_scale=0.5,
    )
    return SoftMaskDreamForDiffusionLM(config).eval()


def _interleaved(variants: dict, rounds: int) -> dict:
    """name -> medians of (wall seconds, CPU seconds, wall ratio, CPU ratio) to the first variant.

    CPU time (`time.process_time`, one thread) counts only this process's cycles: on a shared
    machine it is far steadier than wall time, which also counts the time other jobs held the CPU.
    """
    names = list(variants)
    samples = {name: [] for name in names}
    for r in range(rounds):
        round_times = {}
        for name in names if r % 2 == 0 else names[::-1]:
            wall, cpu = time.perf_counter(), time.process_time()
            variants[name]()
            round_times[name] = (time.perf_counter() - wall, time.process_time() - cpu)
        first = round_times[names[0]]
        for name in names:
            wall, cpu = round_times[name]
            samples[name].append((wall, cpu, wall / first[0], cpu / first[1]))
    return {name: tuple(statistics.median(column) for column in zip(*samples[name])) for name in names}


def _generator(model, args):
    ids = torch.randint(1, model.config.vocab_size - 1, (1, args.prompt))

    def run(**kwargs):
        return lambda: model.diffusion_generate(ids, max_new_tokens=args.new, alg="entropy", temperature=0.0, **kwargs)

    run(nfe_budget=1 / 32, soft_masking=True)()  # warm-up
    return run


SM_COST_CASES = {  # name -> (new tokens, steps, diffusion_generate arguments)
    "64 tokens / 16 steps": (64, 16, {}),
    "plain": (256, 64, {}),
    "block": (256, 64, dict(block_length=32)),
    "prefix": (256, 64, dict(block_length=32, use_cache=True)),
    "dual": (256, 64, dict(block_length=32, dual_cache=True)),
    "prefix+tau0.9": (256, None, dict(block_length=32, use_cache=True, threshold=0.9)),
}


def _mid_model(logit_scale: float, k: int) -> SoftMaskDreamForDiffusionLM:
    """Hidden 512, 6 layers, Dream's vocabulary and special ids, LM head scaled by `logit_scale`."""
    config = tiny_config(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=2,
                         intermediate_size=1408, sm_top_k=k, sm_init_scale=0.5)
    model = SoftMaskDreamForDiffusionLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(logit_scale)
    return model


def _load_baseline(directory: str):
    """The `denoise` of another copy of the model package, loaded as its own package."""
    load_package(directory, "baseline_model")
    return importlib.import_module("baseline_model.denoising").denoise


@contextlib.contextmanager
def _using(denoise):
    """`diffusion_generate` with `denoise` as its loop while inside."""
    own = generation_utils.denoise
    generation_utils.denoise = denoise
    try:
        yield
    finally:
        generation_utils.denoise = own


def sm_cost(args) -> None:
    """Case 3 of the module docstring."""
    torch.manual_seed(0)
    model = _mid_model(args.logit_scale, args.k)
    baseline = _load_baseline(args.baseline) if args.baseline else None
    ids = torch.randint(1, DREAM_VOCAB_SIZE - 1000, (1, 64))
    print(f"[mid model: hidden 512, 6 layers, vocab {DREAM_VOCAB_SIZE}, LM head x{args.logit_scale}] 64-token prompt, "
          f"entropy, T=0, {args.rounds} rounds, medians")
    for name, (new, steps, extra) in SM_COST_CASES.items():
        if args.sm_cases and name not in args.sm_cases:
            continue

        def run(sm, loop=None, new=new, steps=steps, extra=extra):
            kwargs = dict(max_new_tokens=new, alg="entropy", temperature=0.0, stop_when_finished=False,
                          soft_masking=sm, return_dict_in_generate=True, **extra)
            if steps is not None:
                kwargs["steps"] = steps

            def call():
                with _using(loop) if loop is not None else contextlib.nullcontext():
                    return model.diffusion_generate(ids, **kwargs)
            return call

        variants = {"SM off": run(False), "SM on": run(True)}
        if "block_length" in extra:  # other SM feedback horizons (docs/fast_decoding.md)
            variants.update({f"SM on, horizon {h}": run(True, extra={**extra, "sm_feedback_horizon": h})
                             for h in args.horizons})
        if baseline is not None:
            variants.update({"SM off, baseline": run(False, baseline), "SM on, baseline": run(True, baseline)})
        outputs = {variant: call() for variant, call in variants.items()}  # warm-up, passes run and tokens
        result = _interleaved(variants, args.rounds)
        print(f"  {name} (NFE SM off {outputs['SM off'].nfe}, SM on {outputs['SM on'].nfe}):")
        for variant, (wall, cpu, wall_ratio, cpu_ratio) in result.items():
            print(f"    {variant:>17}: {cpu:6.2f} s CPU ({wall:6.2f} s wall)  time / SM off: CPU {cpu_ratio:.3f}, "
                  f"wall {wall_ratio:.3f}")
        if baseline is not None:
            base_off, base_on = result["SM off, baseline"], result["SM on, baseline"]
            same = {sm: torch.equal(outputs[f"SM {sm}"].sequences, outputs[f"SM {sm}, baseline"].sequences)
                    for sm in ("off", "on")}
            ratio = base_on[1] / base_off[1]
            print(f"    SM on / off: this {result['SM on'][3]:.3f}, baseline {ratio:.3f} (CPU, medians); "
                  f"same tokens as the baseline: SM off {same['off']}, SM on {same['on']}", flush=True)


def throughput(args) -> None:
    """Cases 1 and 2 of the module docstring."""
    print(f"prompt {args.prompt}, {args.new} new tokens, batch 1, k = {args.k}, {torch.get_num_threads()} thread(s); "
          f"medians of interleaved rounds")
    for name in args.models:
        shape = MODELS[name]
        torch.manual_seed(0)
        model = _model(k=args.k, **shape)
        run = _generator(model, args)
        n_params = sum(p.numel() for p in model.parameters()) / 1e6
        result = _interleaved({"binary": run(nfe_budget=0.25, soft_masking=False),
                               "SM": run(nfe_budget=0.25, soft_masking=True)}, args.rounds)
        print(f"[{name}: hidden {shape['hidden']}, {shape['layers']} layers, vocab {shape['vocab']}, {n_params:.0f}M "
              f"parameters] budget 1/4 ({round(args.new / 4)} passes), {args.rounds} rounds")
        for variant, (wall, cpu, wall_ratio, cpu_ratio) in result.items():
            print(f"  {variant:>6}: {args.new / wall:6.1f} tokens/s wall ({wall:6.2f} s), "
                  f"{args.new / cpu:6.1f} tokens/s "
                  f"CPU ({cpu:6.2f} s)  time / binary: CPU {cpu_ratio:.4f}, wall {wall_ratio:.4f}")
        if name == "vocab-heavy" and not args.no_budgets:
            budgets = _interleaved({f"1/{d}": run(nfe_budget=1 / d, soft_masking=True) for d in (4, 2, 1)},
                                   args.budget_rounds)
            print(f"  NFE budgets with SM, {args.budget_rounds} rounds:")
            for budget, (wall, cpu, wall_ratio, cpu_ratio) in budgets.items():
                passes = round(args.new / int(budget[2:]))
                print(f"  budget {budget:>3} ({passes:>3} passes): {args.new / wall:6.1f} tokens/s wall, "
                      f"{args.new / cpu:6.1f}"
                      f" tokens/s CPU  time / budget 1/4: CPU {cpu_ratio:.2f}, wall {wall_ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new", type=int, default=256)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the SM / binary comparison")
    parser.add_argument("--budget_rounds", type=int, default=2, help="interleaved rounds of the budget sweep")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared CPU)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--no_budgets", action="store_true", help="skip the budget sweep")
    parser.add_argument("--cases", nargs="+", choices=["throughput", "sm_cost"], default=["throughput", "sm_cost"])
    parser.add_argument("--sm_cases", nargs="+", choices=list(SM_COST_CASES), help="a subset of the sm_cost cases")
    parser.add_argument("--logit_scale", type=float, default=32.0, help="factor on the mid model's LM head")
    parser.add_argument("--baseline", help="a sm_dream/model directory whose loop is also timed (SM off)")
    parser.add_argument("--horizons", nargs="*", type=int, default=[],
                        help="block cases: also time SM on with these sm_feedback_horizon values")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if "sm_cost" in args.cases:
        sm_cost(args)
    if "throughput" in args.cases:
        throughput(args)

if __name__ == "__main__":
    main()
