"""Forward-pass cost of soft-masking: (feedback from the last step's logits + soft-masked forward) over a
plain forward of the same canvas, measured interleaved in one run (median of per-round ratios).

    python benchmarks/bench_forward.py [--hidden 1024 --layers 12 --prompt 256 --masks 256]

The default model has Dream's vocabulary (152,064 rows) and ~450M parameters. Its vocabulary share of the
compute is larger than at 7B, so the ratio here is an upper bound for Dream-7B. Target: <= 1.02.
"""

import argparse
import statistics
import time

import torch

from sm_dream import SoftMaskDreamForDiffusionLM, feedback_from_logits
from sm_dream.tiny import tiny_config


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--prompt", type=int, default=256)
    parser.add_argument("--masks", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--k", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = tiny_config(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64,
                         num_key_value_heads=max(1, args.hidden // 256), intermediate_size=int(args.hidden * 2.75),
                         sm_top_k=args.k, sm_init_scale=0.5)
    model = SoftMaskDreamForDiffusionLM(config).eval()
    n_params = sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, 151_000, (1, args.prompt + args.masks))
    ids[:, args.prompt:] = config.mask_token_id
    masked = ids == config.mask_token_id

    def plain():  # one binary decoding step: logits at the masked positions
        return model(ids, target_mask=masked).logits

    with torch.no_grad():
        rows = plain()  # the previous step's logits, as generation holds them

        def soft():  # one SM decoding step: feedback from the last logits, then the soft-masked forward
            feedback = feedback_from_logits(rows, masked, k=args.k)
            return model(ids, sm_feedback=feedback, target_mask=masked).logits

        for fn in (plain, soft):  # warm-up
            fn()
        ratios, t_plain, t_soft, t_feedback = [], [], [], []
        for r in range(args.rounds):
            order = (plain, soft) if r % 2 == 0 else (soft, plain)
            times = {fn.__name__: _timed(fn)[0] for fn in order}
            t_feedback.append(_timed(lambda: feedback_from_logits(rows, masked, k=args.k))[0])
            t_plain.append(times["plain"])
            t_soft.append(times["soft"])
            ratios.append(times["soft"] / times["plain"])
    print(f"model: {n_params / 1e6:.0f}M parameters (hidden {args.hidden}, {args.layers} layers, vocab "
          f"{config.vocab_size}); canvas {args.prompt} prompt + {args.masks} masked tokens; k = {args.k}; "
          f"{torch.get_num_threads()} threads")
    print(f"plain forward      median {statistics.median(t_plain):.3f} s")
    print(f"SM step            median {statistics.median(t_soft):.3f} s "
          f"(feedback_from_logits alone {statistics.median(t_feedback) * 1e3:.1f} ms)")
    print(f"ratio SM / plain   median {statistics.median(ratios):.4f}  (min {min(ratios):.4f}, max {max(ratios):.4f}, "
          f"{args.rounds} interleaved rounds)  target <= 1.02")
    # The SM step is the plain forward plus a k-row gather blend plus the feedback; on a shared CPU the
    # composed figure is steadier than the ratio of two noisy forwards.
    composed = 1 + statistics.median(t_feedback) / statistics.median(t_plain)
    print(f"composed 1 + feedback / plain = {composed:.4f}")


if __name__ == "__main__":
    main()
