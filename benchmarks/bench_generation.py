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
"""

import argparse
import statistics
import time

import torch

from sm_dream import SoftMaskDreamForDiffusionLM
from sm_dream.tiny import small_vocab_config

MODELS = {"vocab-heavy": dict(hidden=512, layers=8, vocab=32000), "Dream-proportioned": dict(hidden=1024, layers=8, vocab=4096)}


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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
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
            print(f"  {variant:>6}: {args.new / wall:6.1f} tokens/s wall ({wall:6.2f} s), {args.new / cpu:6.1f} tokens/s "
                  f"CPU ({cpu:6.2f} s)  time / binary: CPU {cpu_ratio:.4f}, wall {wall_ratio:.4f}")
        if name == "vocab-heavy" and not args.no_budgets:
            budgets = _interleaved({f"1/{d}": run(nfe_budget=1 / d, soft_masking=True) for d in (4, 2, 1)},
                                   args.budget_rounds)
            print(f"  NFE budgets with SM, {args.budget_rounds} rounds:")
            for budget, (wall, cpu, wall_ratio, cpu_ratio) in budgets.items():
                passes = round(args.new / int(budget[2:]))
                print(f"  budget {budget:>3} ({passes:>3} passes): {args.new / wall:6.1f} tokens/s wall, {args.new / cpu:6.1f}"
                      f" tokens/s CPU  time / budget 1/4: CPU {cpu_ratio:.2f}, wall {wall_ratio:.2f}")


if __name__ == "__main__":
    main()
