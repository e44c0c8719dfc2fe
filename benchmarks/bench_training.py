"""Cost of the soft-masking training step against the binary step, on the same model in one run.

    python benchmarks/bench_training.py                      # DoRA and full finetuning, p_sm 0.5 and 1.0
    python benchmarks/bench_training.py --checkpointing         # as the 7B recipes run
    python benchmarks/bench_training.py --hidden 512 --rounds 15 --device cuda

A step is what the trainer does per optimizer step: noise, [pass 1 without gradient on the SM samples],
the loss pass, backward, optimizer step. Time: the variants run interleaved, round after round, and
each SM step is divided by the binary step of the same round; the median of these ratios is reported
(machine-load drift cancels). Peak memory: on CUDA, max_memory_allocated per variant (interleaved);
on CPU, the peak resident memory during the step above its value before the step (sampled in a
thread, interleaved rounds, medians): what the step itself allocates on top of weights and
optimizer state.
Targets (DoRA, no checkpointing): time <= 1.20x binary at p_sm 0.5, <= 1.35x at p_sm 1.0; peak
memory <= 1.05x binary. The paper's SM pretraining ran 2.17x slower than binary. docs/training.md
("Cost") has the measurements and why a two-pass DoRA step cannot go below ~1.45x at p_sm 1.0 on CPU.
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import torch

from sm_dream import SoftMaskDreamForDiffusionLM
from sm_dream.training.adapters import optimizer_groups, prepare_for_finetuning
from sm_dream.training import losses
from sm_dream.training.losses import sm_two_pass_loss
from sm_dream.training.noise import sample_noise
from sm_dream.tiny import tiny_config

VARIANTS = {"binary": 0.0, "sm_p0.5": 0.5, "sm_p1.0": 1.0, "sm_p1.0_peft": 1.0}
# sm_p1.0_peft: pass 1 through PEFT's adapter forward, not folded (`training.folding`): the
# cost folding removes, in the same run (with full finetuning there is nothing to fold: the same step).


def build(args, mode):
    torch.manual_seed(0)
    config = tiny_config(vocab_size=args.vocab, mask_token_id=args.vocab - 1, pad_token_id=0, bos_token_id=0,
                         eos_token_id=0, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                         num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64 or 1,
                         num_key_value_heads=max(args.hidden // 128, 1))
    model = prepare_for_finetuning(SoftMaskDreamForDiffusionLM(config), mode).to(args.device)
    if args.checkpointing:  # as the 7B recipes run: activations recomputed in backward
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    optimizer = torch.optim.AdamW(optimizer_groups(model, 1e-5, 1e-2, 0.0, []))
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, args.vocab - 1, (args.batch, args.seq), generator=g).to(args.device)
    response = torch.zeros(args.batch, args.seq, dtype=torch.bool, device=args.device)
    response[:, args.seq // 4:] = True  # a quarter prompt, three quarters response (+ eos)
    return model, optimizer, ids, response


def step(model, optimizer, ids, response, p_sm, fold=True):
    """One optimizer step. SM goes to exactly round(p_sm * b) random samples, the expected share, so
    that the p_sm = 0.5 ratio shows the expected cost rather than one Binomial(b, p_sm) draw.
    fold=False: pass 1 through PEFT's own adapter forward."""
    noise = sample_noise(response, 0.2, 0.8, p_sm)
    b = response.shape[0]
    sm_on = (torch.randperm(b) < round(p_sm * b)).to(response.device)  # (b,)
    with contextlib.nullcontext() if fold else unfolded():
        out = sm_two_pass_loss(model, ids, None, response, noise.masked, noise.t, sm_on)
    out.loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@contextlib.contextmanager
def unfolded():
    """Pass 1 through PEFT's own adapter forward while inside."""
    own = losses.folded_adapters
    losses.folded_adapters = lambda model: contextlib.nullcontext(0)
    try:
        yield
    finally:
        losses.folded_adapters = own


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
            step(model, optimizer, ids, response, p_sm, fold=not variant.endswith("_peft"))
            sync(args.device)
            if r >= args.warmup:
                times[variant].append(time.perf_counter() - start)
                if args.device.startswith("cuda"):
                    peaks[variant] = max(peaks[variant], torch.cuda.max_memory_allocated())
    base = times["binary"]
    ratios = {v: statistics.median(t / b for t, b in zip(times[v], base)) for v in VARIANTS}
    return ratios, {v: statistics.median(t) for v, t in times.items()}, peaks


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class StepMemory:
    """Peak resident memory during a block above its value at entry (MiB), sampled in a thread.

    Run in a child process with MALLOC_MMAP_THRESHOLD_ set (`cpu_step_memory`): large tensors are then
    mmapped and returned to the system when freed, so the resident size follows the live tensors (it
    also slows allocation, which is why the timing runs in the parent, without it).
    """

    def __init__(self, interval: float = 0.0005):
        self.interval, self.peak, self._stop = interval, 0.0, threading.Event()

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, current_rss_mib() - self.start)
            time.sleep(self.interval)

    def __enter__(self):
        self.start = current_rss_mib()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss_mib() - self.start)


def cpu_step_memory(args, mode):
    """{variant: median peak step memory}, measured in a child process (see StepMemory)."""
    cmd = [sys.executable, __file__, *sys.argv[1:], "--memory_only", mode]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def memory_only(args, mode):
    """Child: median over interleaved rounds of each variant's peak step memory (MiB above its start)."""
    model, optimizer, ids, response = build(args, mode)
    for p_sm in VARIANTS.values():  # the optimizer state exists from here on, as in training
        step(model, optimizer, ids, response, p_sm)
    peaks = {v: [] for v in VARIANTS}
    for _ in range(args.memory_rounds):
        for variant, p_sm in VARIANTS.items():
            with StepMemory() as memory:
                step(model, optimizer, ids, response, p_sm, fold=not variant.endswith("_peft"))
            peaks[variant].append(memory.peak)
    print(json.dumps({v: statistics.median(p) for v, p in peaks.items()}))


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
    parser.add_argument("--checkpointing", action="store_true", help="activation checkpointing (7B recipes)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--memory_rounds", type=int, default=5)
    parser.add_argument("--memory_only", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_only:
        return memory_only(args, args.memory_only)
    print(f"model: hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}; batch {args.batch} x seq "
          f"{args.seq}; {args.rounds} interleaved rounds after {args.warmup} warm-up; device {args.device}, "
          f"{torch.get_num_threads()} threads; activation checkpointing {args.checkpointing}")
    for mode in args.modes.split(","):
        ratios, medians, cuda_peaks = time_ratios(args, mode)
        memory = cuda_peaks if args.device.startswith("cuda") else cpu_step_memory(args, mode)
        for variant in VARIANTS:
            line = f"{mode:5s} {variant:8s} step {medians[variant] * 1e3:8.1f} ms  time x{ratios[variant]:.3f}"
            if args.device.startswith("cuda"):
                line += f"  peak {memory[variant] / 2**20:8.1f} MiB  x{memory[variant] / memory['binary']:.3f}"
            else:
                line += f"  step peak RSS {memory[variant]:7.1f} MiB  x{memory[variant] / memory['binary']:.3f}"
            print(line)


if __name__ == "__main__":
    main()
