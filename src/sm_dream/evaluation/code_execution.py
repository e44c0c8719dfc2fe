# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Run generated programs for the code tasks in `eval_tasks/`: contained, with a verdict decided
outside the program's process (docs/evaluation.md, "Running generated code").

**Verdict.** `sandbox_runner.py` is a judge: it holds the task's tests (never in the program's
memory, files or reach) and runs them in its own process, where each function of the program is a
proxy that sends the arguments to the program process as plain data (JSON with tags for tuples,
sets, dicts, bytes, complex, big integers) and gets plain data back. An object cannot answer `==`
for itself, and nothing the program patches in its own process (builtins, frames, trace functions,
its memory) touches the tests. A call that raises, a value that is not plain data, a dead, hung or
oversized program: failed. Per call and per program: `call_timeout` and `timeout` (wall clock,
from the launch; the evaluator kills the whole run at `timeout + 0.2 s`).

**Containment** is decided once, before any program runs (`containment()`); without it the
evaluation refuses to run generated code unless the environment has
`SM_DREAM_ALLOW_UNCONTAINED_CODE=1`. Every result records it (`ProgramResult.contained`; the tasks
report a `contained` metric). Contained means, all of them:

- new PID, network, mount and IPC namespaces (util-linux `unshare`; root, or unprivileged user
  namespaces); the judge is PID 1, so when it ends every process of the program ends;
- the whole file system read-only for the program, private tmpfs on /tmp, /var/tmp, /dev/shm and
  /run/lock, the work folder a tmpfs discarded with the namespace (nothing to clean up);
- as root the program runs as uid 65534 with a process cap; without root, in a nested user
  namespace without capabilities over the judge (which is not dumpable: no ptrace, no /proc/1/mem);
- always: an allow-listed environment, stdin /dev/null, output to a file capped by RLIMIT_FSIZE,
  RLIMIT_AS / CPU / CORE per process, and the resident memory of the whole process tree polled
  every 20 ms, the tree killed above `memory_mb`.

pass@k (Chen et al., 2021), unbiased, from n samples of which c pass:

    pass@k = 1 - C(n - c, k) / C(n, k)
"""

import atexit
import functools
import json
import logging
import math
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_MB = 4096  # per process (RLIMIT_AS) and for the whole process tree (polled)
FILE_LIMIT_MB = 64  # RLIMIT_FSIZE: also bounds the captured output
PROCESS_LIMIT = 256  # RLIMIT_NPROC of the unprivileged uid, shared by the programs running at once
UNPRIVILEGED_UID = 65534  # nobody
TAIL_BYTES = 2048
KILL_MARGIN_S = 0.2  # the evaluator kills a run at timeout + this
OPT_IN = "SM_DREAM_ALLOW_UNCONTAINED_CODE"
RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_runner.py")
NAMESPACE_FLAGS = ("--pid", "--net", "--mount", "--ipc", "--fork", "--kill-child", "--mount-proc")
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


class UncontainedError(RuntimeError):
    """Generated code would run uncontained and the user did not opt in."""


@dataclass
class ProgramResult:
    """status: "passed", "failed" or "timeout"; detail: why it failed; contained: how it ran."""

    status: str
    returncode: int = 0
    detail: str = ""
    contained: bool = True

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class Tests:
    """What the judge runs: `prelude` (trusted code: imports, set-up, HumanEval's prompt), then the
    program's functions as proxies (`proxied`: names that must be the program's even if the prelude
    defines them; other functions of the program only where the prelude and builtins have no such
    name), then `code` (the tests)."""

    __test__ = False  # not a pytest test class

    code: str = ""
    prelude: str = ""
    proxied: Tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Containment:
    """How programs run on this machine (see the module docstring)."""

    prefix: tuple  # command before `python`: ("unshare", ...) or ()
    uid: int  # unprivileged uid the program runs as, or -1
    nested_userns: bool
    contained: bool
    reason: str = ""  # why not contained

    @property
    def level(self) -> str:
        return "contained" if self.contained else "uncontained"

    def describe(self) -> str:
        if self.contained:
            who = f"uid {self.uid}" if self.uid >= 0 else "a nested user namespace"
            return ("contained: own PID/network/mount/IPC namespaces, read-only file system, private tmpfs work "
                    f"folder, {who}, tests judged in a separate process")
        return (f"UNCONTAINED ({OPT_IN}=1): {self.reason}; the program can reach the network, your processes "
                "and your files; tests still judged in a separate process")


PROBE_PROGRAM = """import hashlib, json, math, os, re, socket
def facts(runner_dir):
    try:
        open(os.path.join(runner_dir, ".sm_dream_probe"), "w").close()
        wrote = True
    except OSError:
        wrote = False
    return [wrote, os.getpid(), sorted(n for _, n in socket.if_nameindex()), math.isclose(0.1 + 0.2, 0.3)]
"""
PROBE_TESTS = "assert facts({runner_dir!r}) == [False, 2, ['lo'], True], facts({runner_dir!r})\n"


def _candidate() -> Containment:
    unshare = shutil.which("unshare", path=SAFE_PATH) if sys.platform.startswith("linux") else None
    root = os.geteuid() == 0 if hasattr(os, "geteuid") else False
    if not unshare:
        return Containment((), UNPRIVILEGED_UID if root else -1, False, False, "util-linux `unshare` not found")
    prefix = (unshare, *(() if root else ("--user", "--map-root-user")), *NAMESPACE_FLAGS)
    return Containment(prefix, UNPRIVILEGED_UID if root else -1, not root, True)


_PROBE_LOCK = threading.Lock()


def containment() -> Containment:
    """The containment of this machine, probed once per process (a program that must pass under
    full containment); raises UncontainedError if there is none and the user did not opt in."""
    with _PROBE_LOCK:
        box = _probe()
    if not box.contained and os.environ.get(OPT_IN) != "1":
        raise UncontainedError(
            f"Refusing to run generated code: it cannot be contained here ({box.reason}). Run the evaluation "
            f"as root in a container or VM with util-linux `unshare`, or allow unprivileged user namespaces; "
            f"to run it uncontained anyway, at your own risk, set {OPT_IN}=1.")
    return box


@functools.lru_cache(maxsize=None)
def _probe() -> Containment:
    box = _candidate()
    if box.contained:
        tests = Tests(PROBE_TESTS.format(runner_dir=os.path.dirname(RUNNER)))
        result = _run(PROBE_PROGRAM, tests, box, 20.0, 20.0, DEFAULT_MEMORY_MB)
        if not result.passed:
            box = Containment((), box.uid, False, False, f"the containment probe failed: {result.detail}")
    if not box.contained and box.uid >= 0:  # uncontained as root: uid 65534 only if it can run the interpreter
        if not _run(PROBE_PROGRAM, Tests("assert callable(facts)\n"), box, 20.0, 20.0, DEFAULT_MEMORY_MB).passed:
            box = Containment((), -1, False, False, box.reason + "; the interpreter is not readable by uid "
                              f"{UNPRIVILEGED_UID}, so programs run as root")
    message = "Generated programs run " + box.describe() + "."
    print(f"[sm_dream] {message}", file=sys.stderr)
    logger.info(message)
    return box


def program_env() -> dict:
    """The judge's and the program's whole environment (an allow-list: nothing of the evaluator's
    is passed); HOME, TMPDIR and PWD are set to the work folder by the runner."""
    threads = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")}
    return {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
            "SM_DREAM_LM_EVAL_HOOK": "0", "CUDA_VISIBLE_DEVICES": "", **threads}


@functools.lru_cache(maxsize=None)
def _work_root() -> str:
    """A folder for output files (and uncontained work folders): traversable, not listable."""
    root = tempfile.mkdtemp(prefix="sm_dream_sandbox_")
    os.chmod(root, 0o711)
    atexit.register(remove_tree, root)
    return root


def _read_tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - TAIL_BYTES))
            text = f.read(TAIL_BYTES).decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-3:])


_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _open_dir(name: str, parent_fd: int) -> int:
    try:
        return os.open(name, _NOFOLLOW_DIR, dir_fd=parent_fd)
    except PermissionError:  # a folder the program made unreadable (only matters without root)
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            raise
        try:
            os.chmod(name, 0o700, dir_fd=parent_fd, follow_symlinks=False)
        except NotImplementedError:
            os.chmod(name, 0o700, dir_fd=parent_fd)
        return os.open(name, _NOFOLLOW_DIR, dir_fd=parent_fd)


def remove_tree(path: str) -> None:
    """Remove `path` whatever a program made of it: never follows a symlink (every step is relative
    to an open folder, opened with O_NOFOLLOW), has no depth limit (iterative; one open folder at a
    time, climbing back by `..` checked against the device and inode it came from), and never
    raises: what cannot be removed stays."""
    try:
        parent = os.open(os.path.dirname(os.path.abspath(path)) or "/", _NOFOLLOW_DIR)
    except OSError:
        return
    try:
        _remove_below(parent, os.path.basename(os.path.abspath(path)))
    except OSError:
        pass
    finally:
        os.close(parent)


def _remove_below(parent: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=parent)
        return
    except FileNotFoundError:
        return
    except OSError:
        pass  # a folder
    ids = [(os.fstat(parent).st_dev, os.fstat(parent).st_ino)]
    names = [name]
    fd = _open_dir(name, parent)
    try:
        while names:
            sub = None
            with os.scandir(fd) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        sub = entry.name
                        break
                    try:
                        os.unlink(entry.name, dir_fd=fd)
                    except FileNotFoundError:
                        pass
            if sub is not None:
                inner = _open_dir(sub, fd)
                st = os.fstat(fd)
                ids.append((st.st_dev, st.st_ino))
                names.append(sub)
                os.close(fd)
                fd = inner
                continue
            up = os.open("..", _NOFOLLOW_DIR, dir_fd=fd)
            st = os.fstat(up)
            if (st.st_dev, st.st_ino) != ids.pop():
                os.close(up)
                return  # the tree was moved under us: stop rather than remove elsewhere
            os.close(fd)
            fd = up
            os.rmdir(names.pop(), dir_fd=fd)
    finally:
        os.close(fd)


def _frame(data: bytes) -> bytes:
    return len(data).to_bytes(8, "big") + data


def _feed(stdin, data: bytes) -> None:
    try:
        stdin.write(data)
        stdin.close()
    except OSError:
        pass


def _run(program: str, tests: Tests, box: Containment, timeout: float, call_timeout: float,
         memory_mb: int) -> ProgramResult:
    launch = time.time()
    root = _work_root()
    workdir = None
    if not box.contained:
        workdir = tempfile.mkdtemp(prefix="run_", dir=root)
        if box.uid >= 0:
            os.chown(workdir, box.uid, box.uid)
    fd, output = tempfile.mkstemp(prefix="out_", dir=root)
    read_fd, write_fd = os.pipe()
    cfg = {"contained": box.contained, "uid": box.uid, "nested_userns": box.nested_userns, "workdir": workdir,
           "result_fd": write_fd, "deadline": launch + timeout, "call_timeout": call_timeout,
           "limits": {"memory_mb": memory_mb, "tree_mb": memory_mb, "cpu_s": int(math.ceil(timeout)) + 1,
                      "file_mb": FILE_LIMIT_MB, "nproc": PROCESS_LIMIT}}
    spec = json.dumps({"prelude": tests.prelude, "tests": tests.code, "proxied": list(tests.proxied)})
    data = _frame(program.encode("utf-8", "surrogatepass")) + _frame(spec.encode("utf-8", "surrogatepass"))
    received = b""
    try:
        with os.fdopen(fd, "wb") as out:
            process = subprocess.Popen([*box.prefix, sys.executable, "-I", RUNNER, json.dumps(cfg)], cwd="/",
                                       env=program_env(), stdin=subprocess.PIPE, stdout=out, stderr=out,
                                       pass_fds=(write_fd,), start_new_session=True)
        os.close(write_fd)
        write_fd = -1
        if len(data) <= 32768:  # fits the pipe: no thread needed
            _feed(process.stdin, data)
        else:
            threading.Thread(target=_feed, args=(process.stdin, data), daemon=True).start()
        hard = launch + timeout + KILL_MARGIN_S
        while True:
            wait = hard - time.time()
            if wait <= 0 or not select.select([read_fd], [], [], wait)[0]:
                break
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            received += chunk
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the judge (and with it its namespace)
        except OSError:
            pass
        process.wait()
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
        detail = _read_tail(output)
        remove_tree(output)
        if workdir:
            remove_tree(workdir)
    try:
        verdict = json.loads(received)
        status, why = verdict["status"], verdict["detail"]
    except (ValueError, KeyError, TypeError):
        status, why = ("timeout", f"timed out after {timeout:g} s") if time.time() >= launch + timeout else \
            ("failed", "the judge gave no verdict")
    if status == "passed":
        return ProgramResult("passed", process.returncode, "", box.contained)
    return ProgramResult(status, process.returncode, "\n".join(x for x in (why, detail) if x)[-TAIL_BYTES:],
                         box.contained)


def run_program(program: str, tests: Union[Tests, str] = "", timeout: float = DEFAULT_TIMEOUT_S,
                memory_mb: int = DEFAULT_MEMORY_MB, call_timeout: Optional[float] = None) -> ProgramResult:
    """Run `program` (untrusted source) and judge it with `tests` (trusted: a `Tests`, or test code
    alone) outside its process; see the module docstring. With no tests, the program passes when
    its own code runs to its end. Raises UncontainedError before running anything when the machine
    cannot contain it and the user did not opt in; otherwise never raises for anything the program does."""
    if not timeout > 0:
        raise ValueError(f"timeout={timeout} must be > 0 seconds.")
    box = containment()
    tests = Tests(tests) if isinstance(tests, str) else tests
    try:
        return _run(program, tests, box, timeout, call_timeout or timeout, memory_mb)
    except Exception as error:  # noqa: BLE001  (a sabotaged run is a failed program, not a failed evaluation)
        return ProgramResult("failed", -1, f"the run broke: {type(error).__name__}: {error}", box.contained)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n - c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}.")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


Job = Union[str, Tuple[str, Union[Tests, str]]]


def run_programs(programs: Sequence[Job], timeout: float = DEFAULT_TIMEOUT_S, workers: int = 4) -> List[ProgramResult]:
    """`run_program` on each program (source, or (source, tests)), `workers` at a time, in input order."""
    containment()  # decided (or refused) before any program runs
    jobs = [(p, "") if isinstance(p, str) else p for p in programs]
    if len(jobs) <= 1 or workers <= 1:
        return [run_program(p, t, timeout) for p, t in jobs]
    with ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        return list(pool.map(lambda job: run_program(job[0], job[1], timeout), jobs))


def score(programs: Sequence[str], tests: Union[Tests, str], timeout: float = DEFAULT_TIMEOUT_S) -> dict:
    """The metrics of one problem from its n sampled programs: pass@1 (c / n) and `contained`
    (1.0 when every program ran contained)."""
    if not programs:
        raise ValueError("score needs at least one program (got none).")
    results = run_programs([(p, tests) for p in programs], timeout)
    return {"pass@1": pass_at_k(len(results), sum(r.passed for r in results), 1),
            "contained": float(all(r.contained for r in results))}


def code_before_fence(completion: str) -> str:
    """The completion up to the first closing ``` fence (all of it if there is none).

    The instruct tasks open a ```python block in the assistant turn (`gen_prefix`), so the code is
    what comes before the fence that closes it; an unclosed block (the answer ran out of tokens)
    keeps all of its text rather than scoring as empty.
    """
    end = completion.find("```")
    return completion if end < 0 else completion[:end]
