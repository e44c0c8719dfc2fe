"""Fast decoding throughput: plain vs prefix cache vs dual cache, each with and without threshold
decoding, SM on and off, at 256 and 512 new tokens, in one run.

    python benchmarks/bench_fast_decoding.py [--hidden 128 --layers 4 --vocab 4096 --prompt 64 --rounds 3]

Variants (batch 1, alg entropy, temperature 0, block length 32 wherever blocks are used):
    plain        Dream's loop, steps = new tokens (NFE budget 1), no blocks, no cache
    plain+tau    blocks of 32, no cache, threshold decoding (tau = 0.9)
    prefix       prefix KV cache, steps = new tokens (one token per step)
    prefix+tau   prefix KV cache, threshold decoding
    dual         prefix + suffix KV cache, steps = new tokens
    dual+tau     dual cache, threshold decoding
Reported per variant: NFE, tokens per second (new tokens / wall time, median over interleaved rounds
whose order alternates), speedup = median of the per-round time ratios plain / variant at the same
length and SM setting, and forward FLOPs of the whole generation: matmuls and attention of every
pass, counted from the shapes each pass runs (queries, attended keys, LM-head rows) during the
first timed round; the count is checked against torch's FlopCounterMode on one forward at start.

The model is random. A random model is unsure everywhere, so threshold decoding would commit one
token per step; `--logit-scale` multiplies the LM head so that, like a trained model, it is confident
at some positions (the default, 64, gives about 3 tokens per step at tau = 0.9 on this model: the
range Fast-dLLM reports for Dream). Threshold speedups scale with that parallelism; the mean tokens
per step is printed next to them. The default width/vocabulary keep the LM head's share of the
compute (vocab / (12 layers hidden)) within a few times Dream-7B's (~0.13). Target: prefix+tau with SM
on >= 3x plain at 512 tokens.
"""

import argparse
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from sm_dream import SoftMaskDreamForDiffusionLM
from sm_dream.tiny import small_vocab_config

VARIANTS = {
    "plain": {},
    "plain+tau": dict(block_length=32, threshold=0.9),
    "prefix": dict(block_length=32, use_cache=True),
    "prefix+tau": dict(block_length=32, use_cache=True, threshold=0.9),
    "dual": dict(block_length=32, dual_cache=True),
    "dual+tau": dict(block_length=32, dual_cache=True, threshold=0.9),
}


def _model(args) -> SoftMaskDreamForDiffusionLM:
    config = small_vocab_config(
        vocab_size=args.vocab, mask_token_id=args.vocab - 1, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=max(1, args.hidden // 64), num_key_value_heads=1, intermediate_size=int(args.hidden * 2.75),
        max_position_embeddings=4096, sm_top_k=args.k, sm_init_scale=0.5,
    )
    model = SoftMaskDreamForDiffusionLM(config).eval().to(args.device)
    with torch.no_grad():
        model.lm_head.weight.mul_(args.logit_scale)
    return model


class FlopMeter:
    """Forward FLOPs (2 per multiply-add) of every pass, from the shapes it runs: per layer
    q (2 d (H + 2 KV) hd + 2 H hd d + 6 d ff) for the projections and MLP, 4 q kv H hd for attention,
    and 2 rows d V for the LM head."""

    def __init__(self, model):
        c = model.config
        self.layers, self.heads = c.num_hidden_layers, c.num_attention_heads
        self.head_dim, self.vocab = c.head_dim, c.vocab_size
        d, hd = c.hidden_size, c.head_dim
        self.hidden = d
        self.per_token = (2 * d * (c.num_attention_heads + 2 * c.num_key_value_heads) * hd
                          + 2 * c.num_attention_heads * hd * d)
        self.per_token += 6 * d * c.intermediate_size
        self.total = 0
        model.model.register_forward_pre_hook(self._backbone, with_kwargs=True)
        model.lm_head.register_forward_hook(self._head)

    def _backbone(self, module, args, kwargs):
        b, q = kwargs["inputs_embeds"].shape[:2]
        cache = kwargs.get("past_key_values")
        kv = cache.kv_length(q) if cache is not None else q
        self.total += b * self.layers * (q * self.per_token + 4 * q * kv * self.heads * self.head_dim)

    def _head(self, module, inputs, output):
        self.total += 2 * (inputs[0].numel() // self.hidden) * self.hidden * self.vocab


def _check_meter(model, ids, meter: FlopMeter) -> float:
    """Analytic / FlopCounterMode FLOPs of one forward with an LM head on 16 rows. It runs the eager
    attention, whose matmuls FlopCounterMode sees (it does not count CPU SDPA kernels)."""
    target = torch.zeros_like(ids, dtype=torch.bool)
    target[:, -16:] = True
    before, implementation = meter.total, model.config._attn_implementation
    model.config._attn_implementation = "eager"
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(ids, target_mask=target)
    finally:
        model.config._attn_implementation = implementation
    return (meter.total - before) / counter.get_total_flops()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _runs(model, ids, lengths, tau: float):
    """name -> a call of `diffusion_generate` returning its NFE, for every (variant, SM, length)."""
    runs = {}
    for new in lengths:
        for sm in (False, True):
            for name, extra in VARIANTS.items():
                extra = {k: (tau if k == "threshold" else v) for k, v in extra.items()}
                kwargs = dict(max_new_tokens=new, steps=new, alg="entropy", temperature=0.0, soft_masking=sm,
                              return_dict_in_generate=True, **extra)
                runs[(name, sm, new)] = lambda kwargs=kwargs: model.diffusion_generate(ids, **kwargs).nfe
    return runs


def _measure(runs, rounds: int, device: str, meter: FlopMeter):
    """Interleaved timed rounds (the order alternates); FLOPs and NFE from the first round (decoding
    is deterministic, every round runs the same passes)."""
    flops, nfe, times = {}, {}, {key: [] for key in runs}
    keys = list(runs)
    for r in range(rounds):
        for key in keys if r % 2 == 0 else keys[::-1]:
            _sync(device)
            before, start = meter.total, time.perf_counter()
            nfe[key] = runs[key]()
            _sync(device)
            times[key].append(time.perf_counter() - start)
            flops.setdefault(key, meter.total - before)
            print(f"round {r + 1}/{rounds} {key}: {times[key][-1]:.1f} s", file=sys.stderr, flush=True)
    return flops, nfe, times


def _report(flops, nfe, times, lengths) -> None:
    print(f"{'variant':<11} {'SM':<4} {'new':>4} {'NFE':>5} {'tok/step':>8} {'tok/s':>8} {'speedup':>8} "
          f"{'GFLOPs':>8} {'FLOPs/plain':>11}")
    for new in lengths:
        for sm in (False, True):
            base = (("plain", sm, new))
            for name in VARIANTS:
                key = (name, sm, new)
                ratio = statistics.median(b / t for b, t in zip(times[base], times[key]))
                print(f"{name:<11} {'on' if sm else 'off':<4} {new:>4} {nfe[key]:>5} {new / nfe[key]:>8.2f} "
                      f"{new / statistics.median(times[key]):>8.1f} {ratio:>7.2f}x {flops[key] / 1e9:>8.1f} "
                      f"{flops[key] / flops[base]:>11.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--tau", type=float, default=0.9)
    parser.add_argument("--logit-scale", type=float, default=64.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared CPU)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = _model(args)
    ids = torch.randint(1, args.vocab - 1, (1, args.prompt), device=args.device)
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters (hidden {args.hidden}, "
          f"{args.layers} layers, vocab {args.vocab}, LM head x{args.logit_scale:g}); prompt {args.prompt}; "
          f"block 32, tau {args.tau}; {args.device}, {torch.get_num_threads()} thread(s); {args.rounds} interleaved "
          "rounds, medians")
    meter = FlopMeter(model)
    print(f"FLOP count check (analytic / FlopCounterMode, one forward): {_check_meter(model, ids, meter):.4f}")
    runs = _runs(model, ids, args.lengths, args.tau)
    next(iter(runs.values()))()  # warm-up
    flops, nfe, times = _measure(runs, args.rounds, args.device, meter)
    _report(flops, nfe, times, args.lengths)


if __name__ == "__main__":
    main()
