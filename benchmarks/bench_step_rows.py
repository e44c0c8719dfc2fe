"""Per-step cost of a decoding step's work on its masked logit rows: the fused `step_rows` against the
separate calls (suppress -> sample -> confidence per chunk, then `feedback_from_logits` for SM).

    python benchmarks/bench_step_rows.py [--rows 64 --vocab 152064 --rounds 15 --threads 1]

Rows are random logits scaled so that decisions are not float ties (Dream's vocabulary by default,
float32 on CPU). Variants run interleaved, round after round; each fused time is divided by the
separate time of the same round and the median ratio reported (CPU time of this process, one thread).
"""

import argparse
import statistics
import time
from types import SimpleNamespace

import torch

from sm_dream.model.soft_masking import feedback_from_logits
from sm_dream.model.logit_rows import step_rows, suppress_tokens
from sm_dream.model.row_ops import rows_per_chunk
from sm_dream.model.sampling import sample_tokens
from sm_dream.model.unmasking import get_unmasking_algorithm


def separate(rows, alg, config, sm_k, positions):
    """What a step does without the fused pass."""
    algorithm, tokens, confidences = get_unmasking_algorithm(alg), [], []
    for part in rows.split(rows_per_chunk(rows)):
        part = suppress_tokens(part, config.mask_token_id, config.tokenizer_vocab_size)
        x0, probs = sample_tokens(part, config.temperature, config.top_p, config.top_k)
        tokens.append(x0)
        confidences.append(algorithm.confidence(probs, x0))
    if sm_k:
        feedback_from_logits(rows, positions, k=sm_k, chunk_size=rows_per_chunk(rows))
    return torch.cat(tokens), torch.cat(confidences)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=152064)
    parser.add_argument("--tokenizer_vocab", type=int, default=151667, help="ids >= this are suppressed")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--algs", default="entropy,maskgit_plus")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = torch.randn(args.rows, args.vocab) * 4
    positions = torch.ones(1, args.rows, dtype=torch.bool)
    config = SimpleNamespace(mask_token_id=args.tokenizer_vocab - 1, tokenizer_vocab_size=args.tokenizer_vocab,
                             sampling_draws="multinomial",
                             temperature=args.temperature, top_p=None, top_k=None)
    print(f"{args.rows} rows x {args.vocab} vocab, float32, temperature {args.temperature}, k = {args.k}, "
          f"{torch.get_num_threads()} thread(s); median of {args.rounds} interleaved rounds (CPU time)")
    for alg in args.algs.split(","):
        for sm_k in (None, args.k):
            variants = {"separate": lambda: separate(rows, alg, config, sm_k, positions),
                        "fused": lambda: step_rows(rows, alg, config, sm_k, positions=positions)}
            times = {name: [] for name in variants}
            for r in range(args.rounds + 1):
                for name in (list(variants) if r % 2 else list(variants)[::-1]):
                    start = time.process_time()
                    variants[name]()
                    if r:  # round 0 warms up
                        times[name].append(time.process_time() - start)
            ratio = statistics.median(f / s for f, s in zip(times["fused"], times["separate"]))
            sep, fused = (statistics.median(times[n]) * 1e3 for n in ("separate", "fused"))
            print(f"  {alg:>12} SM {'on ' if sm_k else 'off'}: separate {sep:7.1f} ms, fused {fused:7.1f} ms, "
                  f"fused / separate {ratio:.3f}")


if __name__ == "__main__":
    main()
