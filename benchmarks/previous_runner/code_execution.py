# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Run generated programs for the code tasks in `eval_tasks/`: each one contained, with a verdict
the program cannot forge (docs/evaluation.md, "Running generated code").

**Verdict.** A program passes only when its test code ran to its end: `sandbox_runner.py` executes
program + tests as a module named `__sm_dream_program__` (not `__main__`, so a main block with
`unittest.main()`, `exit()` or `input()` does not run) and, only after that execution returns,
writes a per-run random secret to a pipe that the evaluator reads. Any exception (`SystemExit(0)`
included), `os._exit`, a signal, a hang or the timeout leaves the pipe without the secret: failed.
The exit status is never looked at.

**Containment** (the strongest `containment()` finds; printed once per run):

- always: a fresh work folder as cwd, HOME and TMPDIR; an allow-listed environment (PATH, locale,
  one thread per numeric library: no tokens, no `PYTHON*`, no `CUDA*`); stdin `/dev/null`; stdout
  and stderr to a file outside the work folder, of which only the last 2 KB are read (its size is
  capped by RLIMIT_FSIZE); limits on address space, CPU seconds, file size and core dumps; an
  intermediate supervisor process between the evaluator and the program; the process group killed
  after every run; any error of a broken work folder scored as a failure;
- `namespaces` (root, or unprivileged user namespaces; needs util-linux `unshare`): new PID, network,
  mount and IPC namespaces. The program sees no process of the evaluator, cannot open network
  connections (only a down loopback), and its /tmp, /var/tmp, /dev/shm are private tmpfs; killing
  the supervisor (PID 1 there) kills every process it left behind, `setsid` daemons included;
- as root, also an unprivileged uid (65534) with a process cap (RLIMIT_NPROC): it cannot signal the
  evaluator, read its `/proc/*/environ` or write outside its folder (files of other users).

pass@k (Chen et al., 2021), unbiased, from n samples of which c pass:

    pass@k = 1 - C(n - c, k) / C(n, k)
"""

import atexit
import functools
import hmac
import logging
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import List, Optional, Sequence

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_MB = 4096
FILE_LIMIT_MB = 64  # RLIMIT_FSIZE: also bounds the captured output
PROCESS_LIMIT = 256  # RLIMIT_NPROC of the unprivileged uid, shared by the programs running at once
UNPRIVILEGED_UID = 65534  # nobody
TAIL_BYTES = 2048
RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_runner.py")
NAMESPACE_FLAGS = ("--pid", "--net", "--mount", "--ipc", "--fork", "--kill-child", "--mount-proc")
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass
class ProgramResult:
    """status: "passed", "failed" or "timeout"; detail: the end of its output (why it failed)."""

    status: str
    returncode: int
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class Containment:
    """How programs are contained on this machine (see the module docstring)."""

    prefix: tuple  # command before `python`: () or ("unshare", ...)
    uid: Optional[int]  # unprivileged uid the program runs as, or None
    private_tmp: bool

    @property
    def level(self) -> str:
        return "namespaces" if self.prefix else "process"

    def describe(self) -> str:
        parts = [f"supervised process, allow-listed environment, rlimits ({self.level})"]
        if self.prefix:
            parts.append("own PID/network/mount/IPC namespaces, private /tmp, whole tree killed at the end")
        else:
            parts.append("NOT contained: no namespaces (no `unshare` or not allowed), so a program can open "
                         "network connections, see and signal your processes and leave daemons behind")
        if self.uid is not None:
            parts.append(f"unprivileged uid {self.uid} with at most {PROCESS_LIMIT} processes")
        else:
            parts.append("runs as your user: it can write wherever you can (run evaluations of untrusted models "
                         "as root in a container, or in a VM)")
        return "; ".join(parts)


PROBE = "import hashlib, json, math, re, socket, traceback\nassert math.isclose(0.1 + 0.2, 0.3)\n"


def _candidates():
    """Containments to try, strongest first."""
    unshare = shutil.which("unshare") if os.name == "posix" else None
    root = os.name == "posix" and os.geteuid() == 0
    uid = UNPRIVILEGED_UID if root else None
    found = []
    if unshare:
        prefix = (unshare, *(() if root else ("--user", "--map-root-user")), *NAMESPACE_FLAGS)
        found += [Containment(prefix, uid, True)] + ([Containment(prefix, None, True)] if root else [])
    found += [Containment((), uid, False)] if root else []
    return found + [Containment((), None, False)]


_PROBE_LOCK = threading.Lock()


def containment() -> Containment:
    """The strongest containment under which a probe program passes here (probed once per process,
    printed once; thread-safe: `run_programs` calls it from its workers)."""
    with _PROBE_LOCK:
        return _probe()


@functools.lru_cache(maxsize=None)
def _probe() -> Containment:
    for box in _candidates():
        workdir, output = _prepare(PROBE, box)
        try:
            works = _execute(workdir, output, box, 20.0, DEFAULT_MEMORY_MB).passed
        finally:
            _remove(workdir)
            _remove(output)
        if works:
            break
    message = "Generated programs run contained: " + box.describe() + "."
    print(f"[sm_dream] {message}", file=sys.stderr)
    logger.info(message)
    return box


def program_env(workdir: str) -> dict:
    """The program's whole environment (an allow-list: nothing of the evaluator's is passed)."""
    threads = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")}
    return {"PATH": SAFE_PATH, "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1", "SM_DREAM_LM_EVAL_HOOK": "0", "CUDA_VISIBLE_DEVICES": "", **threads}


@functools.lru_cache(maxsize=None)
def _work_root() -> str:
    """A folder for the work folders: traversable by the unprivileged uid, not listable."""
    root = tempfile.mkdtemp(prefix="sm_dream_sandbox_")
    os.chmod(root, 0o711)
    atexit.register(shutil.rmtree, root, True)
    return root


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def _read_tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - TAIL_BYTES))
            text = f.read(TAIL_BYTES).decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-3:])


def _remove(path: str) -> None:
    """Remove a work folder whatever the program made of it (a file, a read-only tree, nothing)."""
    if os.path.isdir(path) and not os.path.islink(path):
        for folder, dirs, _ in os.walk(path):
            for d in dirs:
                try:
                    os.chmod(os.path.join(folder, d), 0o700)
                except OSError:
                    pass
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.remove(path)
        except OSError:
            pass


def _prepare(program: str, box: Containment):
    """A fresh work folder with program.py, owned by the program's uid; (workdir, output file)."""
    workdir = tempfile.mkdtemp(prefix="run_", dir=_work_root())
    with open(os.path.join(workdir, "program.py"), "w", encoding="utf-8") as f:
        f.write(program)
    if box.uid is not None:
        os.chown(workdir, box.uid, box.uid)
        os.chown(os.path.join(workdir, "program.py"), box.uid, box.uid)
    return workdir, workdir + ".out"


def _execute(workdir: str, output: str, box: Containment, timeout: float, memory_mb: int) -> ProgramResult:
    secret = secrets.token_hex(16).encode()
    read_fd, write_fd = os.pipe()
    limits = f"{memory_mb},{int(math.ceil(timeout)) + 1},{FILE_LIMIT_MB},{PROCESS_LIMIT}"
    uid = -1 if box.uid is None else box.uid
    command = [*box.prefix, sys.executable, "-I", RUNNER, workdir, str(write_fd), str(uid), str(int(box.private_tmp)),
               limits]
    try:
        with open(output, "wb") as out:
            process = subprocess.Popen(command, cwd=workdir, env=program_env(workdir), stdin=subprocess.PIPE,
                                       stdout=out, stderr=out, pass_fds=(write_fd,), start_new_session=True)
        os.close(write_fd)
        write_fd = -1
        try:
            process.stdin.write(secret)
            process.stdin.close()
        except OSError:
            pass
        try:
            process.wait(timeout=timeout + 1.0)  # +1 s: the supervisor's own start-up
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        _kill_group(process.pid)  # the supervisor and anything left in its group (it takes its namespace along)
        process.wait()
        os.set_blocking(read_fd, False)
        try:
            received = os.read(read_fd, 64)
        except (BlockingIOError, OSError):
            received = b""
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
    if hmac.compare_digest(received, secret):
        return ProgramResult("passed", process.returncode)
    if timed_out:
        return ProgramResult("timeout", -1, f"timed out after {timeout:g} s")
    return ProgramResult("failed", process.returncode, _read_tail(output) or "the tests did not run to their end")


def run_program(program: str, timeout: float = DEFAULT_TIMEOUT_S, memory_mb: int = DEFAULT_MEMORY_MB) -> ProgramResult:
    """Run `program` (Python source: solution + tests) contained; see the module docstring. Never
    raises for anything the program does: every failure of the run is a failed verdict."""
    if not timeout > 0:
        raise ValueError(f"timeout={timeout} must be > 0 seconds.")
    box = containment()
    workdir = output = None
    try:
        workdir, output = _prepare(program, box)
        return _execute(workdir, output, box, timeout, memory_mb)
    except Exception as error:  # noqa: BLE001  (a sabotaged run is a failed program, not a failed evaluation)
        return ProgramResult("failed", -1, f"the run broke: {type(error).__name__}: {error}")
    finally:
        for path in (workdir, output):
            if path:
                _remove(path)


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
