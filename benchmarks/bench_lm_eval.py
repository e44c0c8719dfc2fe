"""Costs of the lm-eval integration, each as a ratio against a baseline measured in the same run
(interleaved rounds, medians):

1. start-up hook: the installed `sm_dream-lm_eval.pth` runs in every Python process of the
   environment; its time (load `evaluation/registration.py`, install the finder) over the time of a bare
   interpreter start (`python -c pass`). Target: < 2% (a millisecond or so).
2. batching: tokens per second of `lm_eval --model sm_dream` requests at batch_size=B over B=1, on
   the tiny CPU model (prompts of different lengths, left-padded).

    python benchmarks/bench_lm_eval.py [--processes 15 --rounds 3 --batch 4]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PTH = os.path.join(ROOT, "src", "sm_dream-lm_eval.pth")
# In a fresh interpreter without site processing: time the .pth line as site.py would run it (with
# `os` imported first, as it is by the time site.py reads .pth files).
HOOK_PROBE = (
    "import os, sys, time; sys.path.insert(0, sys.argv[1]); line = open(sys.argv[2]).read(); "
    "t = time.perf_counter(); exec(line); dt = time.perf_counter() - t; "
    "assert '_sm_dream_lm_eval_hook' in sys.modules; print(dt)"
)


def _wall(command) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def bench_hook(processes: int) -> None:
    hook, bare = [], []
    for _ in range(processes):  # interleaved
        out = subprocess.run([sys.executable, "-S", "-c", HOOK_PROBE, os.path.join(ROOT, "src"), PTH],
                             check=True, capture_output=True, text=True)
        hook.append(float(out.stdout))
        bare.append(_wall([sys.executable, "-c", "pass"]))
    h, b = statistics.median(hook), statistics.median(bare)
    print(f"hook: {1e3 * h:.2f} ms per process start; bare interpreter start {1e3 * b:.1f} ms; ratio {h / b:.4f}")


def bench_batching(rounds: int, batch: int) -> None:
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from lm_eval.api.instance import Instance
    from lm_eval_testing import save_tiny_model

    from sm_dream.evaluation.lm_eval_model import SMDreamLM

    with tempfile.TemporaryDirectory() as folder:
        path = save_tiny_model(folder)
        models = {b: SMDreamLM(pretrained=path, device="cpu", batch_size=b, nfe_budget=0.5) for b in (1, batch)}
    prompts = [f"Question {i}: " + "word " * (4 * i + 3) for i in range(2 * batch)]
    requests = [Instance("generate_until", {}, (p, {"until": [], "max_gen_toks": 16}), i, ("bench", i, 1))
                for i, p in enumerate(prompts)]
    speed = {b: [] for b in models}
    for _ in range(rounds):
        for b, lm in models.items():
            lm.stats.clear()
            lm.generate_until(requests, disable_tqdm=True)
            stats = lm.stats["bench"]
            speed[b].append(stats["samples"] * 16 / stats["seconds"])  # all generated positions per second
    one, many = statistics.median(speed[1]), statistics.median(speed[batch])
    print(f"batching: {one:.1f} tokens/s at batch 1, {many:.1f} at batch {batch}; ratio {many / one:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    bench_hook(args.processes)
    bench_batching(args.rounds, args.batch)


if __name__ == "__main__":
    main()
