"""The adversarial corpus of the code-execution sandbox: each probe (a program in this folder)
with the verdict it must get and what must hold outside it afterwards. Used by
tests/test_verdicts.py, and runnable on its own under any interpreter layout (standard library
only; sm_dream's runner is loaded from the source tree when the package is not installed):

    python tests/adversarial/run_probes.py [--slow] [probe ...]

prints one line per probe: name, expected verdict, verdict, and whether everything held.
"""

import argparse
import importlib.util
import os
import shutil
import socket
import stat
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    from sm_dream.evaluation import code_execution
except ImportError:  # a bare interpreter: load the runner (standard library only) from the source tree
    _spec = importlib.util.spec_from_file_location(
        "code_execution", os.path.join(HERE, "..", "..", "src", "sm_dream", "evaluation", "code_execution.py"))
    code_execution = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(code_execution)

TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\nassert abs(add(0.5, 0.25) - 0.75) < 1e-9\n"
SECRET_ENV = ("HF_TOKEN", "hf_do_not_leak")


# Probes of the machine's protection (not of the verdict): they hold only when contained.
NEEDS_CONTAINMENT = {"kill_parent", "write_outside", "local_server", "evaluator_environ", "judge_memory", "fork_bomb",
                     "memory_tree", "memory_tree_6gb"}


def expected(name: str) -> str:
    with open(os.path.join(HERE, name + ".py"), encoding="utf-8") as f:
        return f.readline().split("expect:")[1].split(".")[0].strip()


def alive(marker: str) -> int:
    """How many processes have `marker` in their command line."""
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                count += marker.encode() in f.read()
        except OSError:
            continue
    return count


class Outside:
    """Files and folders outside the work folder that no probe may touch, a server on 127.0.0.1,
    a unique marker; `broken()` lists what changed."""

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="sm_dream_outside_")
        os.chmod(self.root, 0o755)
        self.folder = os.path.join(self.root, "keep")
        os.mkdir(self.folder, 0o755)
        with open(os.path.join(self.folder, "file"), "w") as f:
            f.write("kept")
        self.targets = [os.path.join(self.root, "pwned"), os.path.join(self.folder, "pwned"),
                        os.path.join(os.path.dirname(code_execution.__file__), "pwned.py"),
                        os.path.join(sys.prefix, "pwned.pth"), os.path.join(os.path.expanduser("~"), "pwned")]
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.server.settimeout(0.2)
        self.marker = f"{time.time() % 1000 + 500:.6f}"  # a unique sleep length
        self.modes = self._modes()

    def _modes(self):
        paths = (self.root, self.folder, os.path.join(self.folder, "file"))
        return {p: stat.S_IMODE(os.lstat(p).st_mode) for p in paths}

    def fill(self, program: str) -> str:
        return (program.replace("__TARGETS__", repr(self.targets))
                .replace("__FOLDERS__", repr([self.folder, self.root]))
                .replace("__PORT__", str(self.server.getsockname()[1])).replace("__MARKER__", self.marker))

    def broken(self) -> list:
        found = [f"wrote {t}" for t in self.targets if os.path.exists(t)]
        if self._modes() != self.modes:
            found.append(f"modes changed: {self._modes()}")
        if sorted(os.listdir(self.folder)) != ["file"] or open(os.path.join(self.folder, "file")).read() != "kept":
            found.append("the outside folder changed")
        try:
            self.server.accept()
            found.append("reached the 127.0.0.1 server")
        except OSError:
            pass
        time.sleep(0.1)
        left = alive(self.marker)
        if left:
            found.append(f"{left} processes left behind")
        return found

    def close(self):
        self.server.close()
        for t in self.targets:
            if os.path.exists(t):
                os.remove(t)
        shutil.rmtree(self.root, ignore_errors=True)


PROBES = {  # name -> (timeout s, memory MiB, substitutions, slow)
    "frame_walk": (5.0, 4096, {}, False),
    "traceback_walk": (5.0, 4096, {}, False),
    "memory_scan": (10.0, 4096, {}, False),
    "settrace_check": (5.0, 4096, {}, False),
    "read_program_files": (5.0, 4096, {}, False),
    "eq_forgery": (5.0, 4096, {}, False),
    "patch_builtins": (5.0, 4096, {}, False),
    "kill_parent": (5.0, 4096, {}, False),
    "signal_pid1": (5.0, 4096, {}, False),
    "write_outside": (5.0, 4096, {}, False),
    "local_server": (5.0, 4096, {}, False),
    "evaluator_environ": (5.0, 4096, {}, False),
    "judge_memory": (10.0, 4096, {}, False),
    "fork_bomb": (10.0, 4096, {}, False),
    "symlink_work_folder": (5.0, 4096, {}, False),
    "nested_folders": (20.0, 4096, {}, False),
    "memory_tree": (20.0, 512, {"__CHILDREN__": "3", "__MIB__": "256"}, False),
    "memory_tree_6gb": (60.0, 4096, {"__CHILDREN__": "4", "__MIB__": "1536"}, True),
    "wall_time": (2.0, 4096, {}, True),
}


def previous_runner():
    """The runner before the judge (benchmarks/previous_runner): program and tests in one process."""
    spec = importlib.util.spec_from_file_location(
        "previous_runner", os.path.join(HERE, "..", "..", "benchmarks", "previous_runner", "code_execution.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return lambda program, tests, timeout, memory_mb: module.run_program(program + "\n" + tests, timeout, memory_mb)


def run_probe(name: str, runner=None):
    """(expected verdict, verdict, what broke outside, seconds); `runner`: run_program by default."""
    timeout, memory_mb, subs, _ = PROBES[name]
    source = "memory_tree" if name.startswith("memory_tree") else name
    with open(os.path.join(HERE, source + ".py"), encoding="utf-8") as f:
        program = f.read()
    for key, value in subs.items():
        program = program.replace(key, value)
    outside = Outside()
    os.environ[SECRET_ENV[0]] = SECRET_ENV[1]
    try:
        started = time.monotonic()
        run = runner or code_execution.run_program
        result = run(outside.fill(program), TESTS, timeout=timeout, memory_mb=memory_mb)
        seconds = time.monotonic() - started
        broken = outside.broken()
    finally:
        del os.environ[SECRET_ENV[0]]
        outside.close()
    if name == "wall_time" and seconds > timeout + code_execution.KILL_MARGIN_S + 0.3:
        broken.append(f"ran {seconds:.2f} s for a {timeout:g} s budget")
    if name.startswith("memory_tree") and "memory" not in result.detail:
        broken.append(f"not stopped for memory: {result.detail[-200:]}")
    return expected(source), result.status, broken, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", action="store_true", help="also the slow probes (6 GB tree, wall time)")
    parser.add_argument("--previous", action="store_true", help="against the previous runner, for comparison")
    parser.add_argument("--uncontained", action="store_true",
                        help="as on a machine without `unshare`, with the opt-in (for comparison)")
    parser.add_argument("names", nargs="*")
    args = parser.parse_args()
    runner = previous_runner() if args.previous else None
    if args.uncontained:
        box = code_execution._candidate()
        code_execution._candidate = lambda: code_execution.Containment((), box.uid, False, False, "--uncontained")
        os.environ[code_execution.OPT_IN] = "1"
    names = args.names or [n for n, p in PROBES.items() if args.slow or not p[3]]
    box = code_execution.containment()
    print(f"# python {sys.executable} (prefix {sys.prefix}), uid {os.getuid()}: {box.describe()}")
    bad = 0
    for name in names:
        want, got, broken, seconds = run_probe(name, runner)
        ok = want == got and not broken
        bad += not ok
        print(f"{name:22s} expected {want:8s} got {got:8s} {'ok' if ok else 'WRONG: ' + '; '.join(broken)}"
              f"  ({seconds:.2f} s)", flush=True)
    marker = uuid.uuid4().hex
    right = f"def add(a, b):\n    return a + b  # {marker}\n"
    assert code_execution.run_program(right, TESTS).passed, "evaluator broken"
    print(f"# evaluator alive and scoring; {bad} wrong")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
