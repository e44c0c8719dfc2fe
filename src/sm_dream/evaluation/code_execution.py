# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Run generated programs for the code tasks in `eval_tasks/`: one fresh, resource-limited Python
process per program, with a timeout.

A program passes when it exits with status 0 (its asserts hold) within `timeout` seconds. Each one
runs as `python -I program.py` in its own empty temporary folder, in a new session (the whole
process group is killed on timeout), with stdin closed, limits on address space, CPU time, written
file size and core dumps (POSIX), and one thread for numeric libraries. This is isolation against
mistakes, not a security boundary: run untrusted model output inside a container.

Nothing here downloads anything (lm-eval's built-in code tasks load the `code_eval` metric from the
Hub when their module is imported). Running code is opted into per run by lm-eval's
`--confirm_run_unsafe_code`, which every code task here requires (`unsafe_code: true`).

pass@k (Chen et al., 2021), unbiased, from n samples of which c pass:

    pass@k = 1 - C(n - c, k) / C(n, k)
"""

import math
import os
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import List, Sequence

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_MB = 4096
# Keep numeric libraries to one thread: many programs may run at once on a shared machine.
_SINGLE_THREAD_ENV = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


@dataclass
class ProgramResult:
    """status: "passed", "failed" or "timeout"; detail: the last lines of stderr (why it failed)."""

    status: str
    returncode: int
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _limit_resources(memory_mb: int, cpu_s: int):
    """A `preexec_fn` that caps address space, CPU seconds, file size and core dumps."""

    def apply():
        import resource

        limits = {
            "RLIMIT_AS": memory_mb * 2**20,
            "RLIMIT_CPU": cpu_s,
            "RLIMIT_FSIZE": 64 * 2**20,
            "RLIMIT_CORE": 0,
        }
        for name, value in limits.items():
            if hasattr(resource, name):
                resource.setrlimit(getattr(resource, name), (value, value))

    return apply


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, AttributeError):
        process.kill()


def run_program(program: str, timeout: float = DEFAULT_TIMEOUT_S, memory_mb: int = DEFAULT_MEMORY_MB) -> ProgramResult:
    """Run `program` (Python source) in a separate, limited interpreter; see the module docstring."""
    if timeout <= 0:
        raise ValueError(f"timeout={timeout} must be > 0 seconds.")
    posix = os.name == "posix"
    with tempfile.TemporaryDirectory(prefix="sm_dream_exec_") as workdir:
        path = os.path.join(workdir, "program.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(program)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "CUDA"))}
        env.update(_SINGLE_THREAD_ENV, SM_DREAM_LM_EVAL_HOOK="0", CUDA_VISIBLE_DEVICES="")
        process = subprocess.Popen(
            [sys.executable, "-I", path],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=posix,
            preexec_fn=_limit_resources(memory_mb, int(math.ceil(timeout)) + 1) if posix else None,
        )
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            process.communicate()
            return ProgramResult("timeout", -1, f"timed out after {timeout:g} s")
    detail = "\n".join(stderr.decode("utf-8", "replace").strip().splitlines()[-3:])
    return ProgramResult("passed" if process.returncode == 0 else "failed", process.returncode, detail)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n - c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}.")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def run_programs(programs: Sequence[str], timeout: float = DEFAULT_TIMEOUT_S, workers: int = 4) -> List[ProgramResult]:
    """`run_program` on each program, `workers` at a time, results in input order."""
    if len(programs) <= 1 or workers <= 1:
        return [run_program(p, timeout) for p in programs]
    with ThreadPoolExecutor(max_workers=min(workers, len(programs))) as pool:
        return list(pool.map(lambda p: run_program(p, timeout), programs))


def pass_at_1(programs: Sequence[str], timeout: float = DEFAULT_TIMEOUT_S) -> float:
    """pass@1 of one problem from its n sampled programs (each already joined with its tests): c / n."""
    if not programs:
        raise ValueError("pass_at_1 needs at least one program (got none).")
    results = run_programs(programs, timeout)
    return pass_at_k(len(results), sum(r.passed for r in results), 1)


def code_before_fence(completion: str) -> str:
    """The completion up to the first closing ``` fence (all of it if there is none).

    The instruct tasks open a ```python block in the assistant turn (`gen_prefix`), so the code is
    what comes before the fence that closes it; an unclosed block (the answer ran out of tokens)
    keeps all of its text rather than scoring as empty.
    """
    end = completion.find("```")
    return completion if end < 0 else completion[:end]
