"""Cost of the soft-masking training step against the binary step, on the same model in one run.

    python benchmarks/bench_training.py                      # DoRA and full finetuning, p_sm 0.5 and 1.0
    python benchmarks/bench_training.py --hidden 512 --rounds 15 --device cuda

A step is what the trainer does per optimizer step: noise, [pass 1 without gradient on the SM samples],
the loss pass, backward, optimizer step. Time: the variants run interleaved, round after round, and
each SM step is divided by the binary step of the same round; the median of these ratios is reported
(machine-load drift cancels). Peak memory: on CUDA, max_memory_allocated per variant (interleaved);
on CPU, each variant runs alone in a subprocess and reports its peak RSS, in total and above the RSS
after the model and optimizer were built (the step's own memory).
Targets (issue 4): time <= 1.25x binary at p_sm 0.5 with DoRA, <= 1.5x at p_sm 1.0; peak memory
<= 1.05x binary. The paper's SM pretraining ran 2.17x slower than binary.
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from sm_dream import SoftMaskDreamForDiffusionLM
from sm_dream.adapters import optimizer_groups, prepare_for_finetuning
from sm_dream.losses import sm_two_pass_loss
from sm_dream.noise import sample_noise
from sm_dream.tiny import tiny_config

VARIANTS = {"binary": 0.0, "sm_p0.5": 0.5, "sm_p1.0": 1.0}


def build(args, mode):
    torch.manual_seed(0)
    config = tiny_config(vocab_size=args.vocab, mask_token_id=args.vocab - 1, pad_token_id=0, bos_token_id=0,
                         eos_token_id=0, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                         num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64 or 1,
                         num_key_value_heads=max(args.hidden // 128, 1))
    model = prepare_for_finetuning(SoftMaskDreamForDiffusionLM(config), mode).to(args.device)
    optimizer = torch.optim.AdamW(optimizer_groups(model, 1e-5, 1e-2, 0.0, []))
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, args.vocab - 1, (args.batch, args.seq), generator=g).to(args.device)
    response = torch.zeros(args.batch, args.seq, dtype=torch.bool, device=args.device)
    response[:, args.seq // 4:] = True  # a quarter prompt, three quarters response (+ eos)
    return model, optimizer, ids, response


def step(model, optimizer, ids, response, p_sm):
    noise = sample_noise(response, 0.2, 0.8, p_sm)
    out = sm_two_pass_loss(model, ids, None, response, noise.masked, noise.t, noise.sm_on)
    out.loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_ratios(args, mode):
    """Median over rounds of (variant step time / binary step time of the same round)."""
    model, optimizer, ids, response = build(args, mode)
    times = {v: [] for v in VARIANTS}
    peaks = {v: 0 for v in VARIANTS}
    for r in range(args.warmup + args.rounds):
        for variant, p_sm in VARIANTS.items():
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            sync(args.device)
            start = time.perf_counter()
            step(model, optimizer, ids, response, p_sm)
            sync(args.device)
            if r >= args.warmup:
                times[variant].append(time.perf_counter() - start)
                if args.device.startswith("cuda"):
                    peaks[variant] = max(peaks[variant], torch.cuda.max_memory_allocated())
    base = times["binary"]
    ratios = {v: statistics.median(t / b for t, b in zip(times[v], base)) for v in VARIANTS}
    return ratios, {v: statistics.median(t) for v, t in times.items()}, peaks


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def memory_child(args, mode, variant):
    """Runs in a subprocess: one variant alone; prints its peak RSS (total, above the built state)."""
    model, optimizer, ids, response = build(args, mode)
    step(model, optimizer, ids, response, 0.0)  # optimizer state exists from here on, as in training
    optimizer.zero_grad(set_to_none=True)
    built = rss_mib()
    for _ in range(3):
        step(model, optimizer, ids, response, VARIANTS[variant])
    print(json.dumps({"total": rss_mib(), "step": rss_mib() - built}))


def memory_ratios(args, mode):
    peaks = {}
    for variant in VARIANTS:
        cmd = [sys.executable, __file__, "--memory_child", f"{mode}:{variant}"] + sys.argv[1:]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        peaks[variant] = json.loads(out.strip().splitlines()[-1])
    return peaks


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--modes", default="dora,full")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--memory_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        return memory_child(args, *args.memory_child.split(":"))
    print(f"model: hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}; batch {args.batch} x seq "
          f"{args.seq}; {args.rounds} interleaved rounds after {args.warmup} warm-up; device {args.device}, "
          f"{torch.get_num_threads()} threads")
    for mode in args.modes.split(","):
        ratios, medians, cuda_peaks = time_ratios(args, mode)
        memory = cuda_peaks if args.device.startswith("cuda") else memory_ratios(args, mode)
        for variant in VARIANTS:
            line = f"{mode:5s} {variant:8s} step {medians[variant] * 1e3:8.1f} ms  time x{ratios[variant]:.3f}"
            if args.device.startswith("cuda"):
                line += f"  peak {memory[variant] / 2**20:8.1f} MiB  x{memory[variant] / memory['binary']:.3f}"
            else:
                m, b = memory[variant], memory["binary"]
                line += (f"  peak RSS {m['total']:7.1f} MiB x{m['total'] / b['total']:.3f}"
                         f"  step memory {m['step']:6.1f} MiB x{m['step'] / max(b['step'], 1e-9):.3f}")
            print(line)


if __name__ == "__main__":
    main()
