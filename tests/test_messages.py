"""The lines a user sees for their own mistakes: one `error:` line, exit status 2, no traceback (unless
--debug); warnings for settings that silently cost a lot; the quick replication and the demo say what
they are."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sm_dream import errors, hub
from sm_dream.errors import UserError, did_you_mean, positive_int
from sm_dream.evaluation.eval_settings import GenerationSettings, slow_path_warning
from sm_dream.training.configs import cost_warnings, gradient_accumulation_for, parse_args

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes" / "tiny" / "sft_sm_tiny.yaml"
RECIPE = ROOT / "recipes" / "finetune_dream_coder.py"
VENV_BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false"}
ENV.pop(errors.DEBUG_ENV, None)


def run(*args, env=None):
    return subprocess.run([*map(str, args)], cwd=ROOT, env=env or ENV, capture_output=True, text=True, timeout=600)


def recipe(*flags, env=None):
    return run(sys.executable, RECIPE, "--config", TINY, *flags, env=env)


@pytest.fixture(scope="module")
def typo_yaml(tmp_path_factory):
    text = TINY.read_text().replace("\nlearning_rate:", "\nlerning_rate:")
    text = text.replace("data/chat_tiny.jsonl", str(TINY.parent / "data" / "chat_tiny.jsonl"))
    path = tmp_path_factory.mktemp("recipe") / "typo.yaml"
    path.write_text(text)
    return path


def error_lines(stderr: str):
    return [line for line in stderr.splitlines() if "error:" in line]


# ------------------------------------------------------------------ recipe command line (subprocess)
def test_yaml_key_typo_is_one_line_with_did_you_mean(typo_yaml):
    out = run(sys.executable, RECIPE, "--config", typo_yaml)
    assert out.returncode == 2
    assert error_lines(out.stderr) == [
        f"error: {typo_yaml}: unknown keys ['lerning_rate'] (lerning_rate: did you mean 'learning_rate'?); "
        "see `--help` for the valid keys."]
    assert "Traceback" not in out.stderr + out.stdout


def test_cli_flag_typo_names_the_closest_flag():
    out = recipe("--lerning_rate", "1")
    assert out.returncode == 2
    assert error_lines(out.stderr) == [
        "error: unknown flag --lerning_rate on the command line (did you mean '--learning_rate'?); "
        "see --help for the valid flags."]
    assert "Traceback" not in out.stderr and "not used by the HfArgumentParser" not in out.stderr


def test_bad_flag_value_gets_the_short_usage_not_every_trainer_flag():
    out = recipe("--max_steps", "four")
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "usage: finetune_dream_coder.py --config RECIPE.yaml [--KEY VALUE ...]",
        "finetune_dream_coder.py: error: argument --max_steps/--max-steps: invalid int value: 'four'"]


def test_missing_local_model_path_is_not_called_a_bad_hub_id():
    out = recipe("--tiny", "false", "--model_name_or_path", "./no/such/model")
    assert out.returncode == 2
    assert error_lines(out.stderr) == [
        "error: model_name_or_path='./no/such/model': model path ./no/such/model does not exist (no such folder); "
        "give an existing folder or a Hub id like 'org/name'."]
    assert "Repo id must be" not in out.stderr and "Traceback" not in out.stderr


def test_debug_shows_the_traceback():
    plain = recipe("--warmup_ratio", "2")
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert error_lines(plain.stderr) == [
        "error: --warmup_ratio on the command line: warmup_ratio=2.0 must lie in [0, 1) (the paper uses 0.03)."]
    debug = recipe("--warmup_ratio", "2", "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert debug.stderr.rstrip().endswith(
        "sm_dream.errors.UserError: --warmup_ratio on the command line: warmup_ratio=2.0 must lie in [0, 1) "
        "(the paper uses 0.03).")


@pytest.mark.parametrize("launcher", [
    ("accelerate", "launch", "--cpu", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
     "--dynamo_backend", "no"),
    ("torchrun", "--nproc_per_node", "1"),
], ids=["accelerate", "torchrun"])
def test_under_a_launcher_a_user_error_is_one_line_and_status_2(typo_yaml, launcher):
    """The launcher exits 2 without its own traceback of the child's failure (the child tells it
    through the file named by SM_DREAM_USER_ERROR_FILE, which the installed start-up hook sets)."""
    out = run(VENV_BIN / launcher[0], *launcher[1:], RECIPE, "--config", typo_yaml)
    assert out.returncode == 2, out.stderr
    assert error_lines(out.stderr) == [
        f"error: {typo_yaml}: unknown keys ['lerning_rate'] (lerning_rate: did you mean 'learning_rate'?); "
        "see `--help` for the valid keys."]
    assert "Traceback" not in out.stderr and "CalledProcessError" not in out.stderr


def test_under_a_launcher_an_internal_error_keeps_its_traceback(tmp_path):
    """Only user errors are relayed quietly: a child that crashes leaves the launcher's traceback."""
    crash = tmp_path / "crash.py"
    crash.write_text("raise RuntimeError('boom')\n")
    out = run(VENV_BIN / "accelerate", "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", crash)
    assert out.returncode == 1
    assert "RuntimeError: boom" in out.stderr and "CalledProcessError" in out.stderr


def test_sm_dream_unknown_command():
    out = run(VENV_BIN / "sm-dream", "trian")
    assert out.returncode == 2
    assert out.stderr.strip() == "sm-dream: error: unknown command 'trian' (did you mean 'train'?); " \
                                 "choose one of ['train', 'export']."


def test_sm_dream_export_of_a_missing_run(tmp_path):
    out = run(VENV_BIN / "sm-dream", "export", tmp_path / "nope", tmp_path / "out")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    [line] = error_lines(out.stderr)
    assert line.startswith("sm-dream: error: ") and "nope" in line


def test_sm_dream_eval_missing_model_folder():
    out = run(VENV_BIN / "sm-dream-eval", "--model", "sm_dream", "--model_args", "pretrained=./no/such/model",
              "--tasks", "gsm8k_instruct_smd", "--device", "cpu", env={**ENV, "SM_DREAM_LM_EVAL_TASKS": "sm_dream"})
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert error_lines(out.stderr) == [
        "error: pretrained='./no/such/model': model path ./no/such/model does not exist (no such folder); "
        "give an existing folder or a Hub id like 'org/name'."]


# ------------------------------------------------------------------ in-process checks
def test_did_you_mean_and_positive_int_are_the_shared_rules():
    assert did_you_mean("lerning_rate", ["learning_rate", "seed"]) == " (did you mean 'learning_rate'?)"
    assert did_you_mean("lerning_rate", ["learning_rate"], prefix="--") == " (did you mean '--learning_rate'?)"
    assert did_you_mean("zzz", ["learning_rate"]) == ""
    assert positive_int("n", 3) == 3 and positive_int("n", None, allow_none=True) is None
    assert positive_int("n", 3.0, whole_floats=True) == 3
    for bad in (True, 0, -1, 2.5, "3", None):
        with pytest.raises(UserError, match=r"^n=.* must be a positive integer\.$"):
            positive_int("n", bad)
    with pytest.raises(UserError, match="must be a positive integer"):
        positive_int("n", 3.0)  # a float is a count only where lm-eval parses k=3.0
    with pytest.raises(UserError, match=r"^global_batch_size=True must be a positive integer \(the paper uses 8\)\.$"):
        gradient_accumulation_for(True, 1, 1)


def test_budget_error_without_a_task_length_quotes_the_rule_not_a_made_up_length():
    with pytest.raises(ValueError) as err:
        GenerationSettings(nfe_budget=3)
    assert str(err.value) == (
        "nfe_budget=3 gives 3 denoising steps per new token, more than one with alg='entropy': steps beyond one "
        "per token unmask nothing. Use nfe_budget <= 1 or alg='origin'.")


def test_budget_error_of_a_request_names_the_task_and_its_length(monkeypatch):
    from dataclasses import replace

    from lm_eval.api.instance import Instance

    from sm_dream.evaluation.lm_eval_model import SMDreamLM

    lm = SMDreamLM.__new__(SMDreamLM)  # the request planning needs only the settings and the batch size
    lm.settings, lm.batch_size = replace(GenerationSettings(), nfe_budget=1.0), 1
    request = Instance("generate_until", {}, ("p", {"until": [], "max_gen_toks": 768, "nfe_budget": 3}), 0,
                       ("humaneval_instruct", 0, 1))
    with pytest.raises(UserError) as err:
        lm._plan_batches([request])
    assert str(err.value) == (
        "task humaneval_instruct (max_gen_toks=768): nfe_budget=3 gives 3 denoising steps per new token: "
        "steps=2304 exceeds max_new_tokens=768 with alg='entropy': steps beyond one token each unmask nothing. "
        "Use steps <= max_new_tokens (nfe_budget <= 1) or alg='origin'.")


def test_costly_settings_warn():
    data, training, model = parse_args(["--config", str(TINY), "--bf16", "true", "--max_length", "1024"])
    assert cost_warnings(data, training, model) == [
        "warning: bf16=true on CPU: PyTorch emulates bf16 matmuls there, slower than float32 "
        "(2.1x on the tiny recipe); pass --bf16 false for a CPU run.",
        "warning: tiny: true keeps Dream's full vocabulary (152064 tokens), so at max_length=1024 the output "
        "layer and its loss take most of each step; use max_length <= 512 for a quick run."]
    assert cost_warnings(*parse_args(["--config", str(TINY)])) == []


def test_greedy_with_top_p_or_top_k_warns_that_they_only_cost_speed():
    assert slow_path_warning(GenerationSettings(temperature=0.0)) == (
        "temperature=0 is greedy: it ignores top_p=0.9, which still turns off the fast greedy path; "
        "pass top_p=1.0 (and no top_k) with temperature=0.")
    assert "ignores top_p=0.5 and top_k=4, which still turn off" in slow_path_warning(
        GenerationSettings(temperature=0.0, top_p=0.5, top_k=4))
    assert slow_path_warning(GenerationSettings(temperature=0.0, top_p=1.0)) is None
    assert slow_path_warning(GenerationSettings()) is None  # sampling: top_p applies


def test_recipes_go_offline_when_the_hub_does_not_answer(monkeypatch, capsys):
    import huggingface_hub.constants
    import transformers.utils.hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    if hasattr(transformers.utils.hub, "_is_offline_mode"):  # transformers 4.x's copy, taken at import
        monkeypatch.setattr(transformers.utils.hub, "_is_offline_mode", False)
    assert not transformers.utils.hub.is_offline_mode()
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=hub.HUB_PROBE_SECONDS: False)
    assert hub.offline_when_hub_unreachable() is True
    # what huggingface_hub (every release) and transformers (4.x and 5.x) read when they are asked to download
    assert os.environ["HF_HUB_OFFLINE"] == "1" and huggingface_hub.constants.HF_HUB_OFFLINE is True
    assert transformers.utils.hub.is_offline_mode()
    assert "Hub is unreachable: running offline (HF_HUB_OFFLINE=1)" in capsys.readouterr().err
    # an explicit setting is the user's: no probe, no change
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=0: pytest.fail("probed"))
    assert hub.offline_when_hub_unreachable() is False


def test_lm_eval_model_goes_offline_for_a_hub_id_when_the_hub_does_not_answer(monkeypatch, capsys):
    import huggingface_hub.constants
    import transformers.utils.hub

    from sm_dream.evaluation.lm_eval_model import SMDreamLM

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    if hasattr(transformers.utils.hub, "_is_offline_mode"):
        monkeypatch.setattr(transformers.utils.hub, "_is_offline_mode", False)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=hub.HUB_PROBE_SECONDS: False)
    with pytest.raises(ValueError, match="pretrained='no-such-org/no-such-model' / peft=None could not be loaded"):
        SMDreamLM(pretrained="no-such-org/no-such-model", device="cpu")
    assert "Hub is unreachable: running offline (HF_HUB_OFFLINE=1)" in capsys.readouterr().err
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_hub_probe_fails_fast_on_an_unreachable_endpoint(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: refused
    assert hub.hub_reachable(timeout=1.0) is False


def test_quick_replication_report_says_it_is_a_pipeline_check():
    sys.path.insert(0, str(ROOT / "recipes"))
    from replication import report

    assert report.is_quick({"command": "python recipes/replicate_small.py --quick"})
    assert not report.is_quick({"command": "python recipes/replicate_small.py"})
    from test_replication import _fake_results  # a results dict with known values

    results = _fake_results()
    assert report.QUICK_NOTE not in report.markdown_report(results)
    quick = report.markdown_report({**results, "command": "python recipes/replicate_small.py --quick"})
    assert quick.splitlines()[2] == (
        "**Pipeline check (`--quick`): a few steps on a tiny model, to show that every stage runs. Its numbers "
        "support no claim about soft-masking; `make replicate` gives the comparison.**")
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    ax.plot([0, 1], [1e-7, -1e-7])  # float noise between two identical arms
    report._min_span(ax, 0.02)
    low, high = ax.get_ylim()
    assert low <= -0.01 and high >= 0.01


def test_the_launcher_relay_installs_once_per_process(monkeypatch):
    """accelerate's launcher imports torch.distributed.run as well: one marker folder, one excepthook."""
    from sm_dream.evaluation import registration

    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    monkeypatch.delenv(registration.USER_ERROR_FILE, raising=False)
    registration.relay_user_errors(None)
    marker, hook = os.environ[registration.USER_ERROR_FILE], sys.excepthook
    registration.relay_user_errors(None)
    assert os.environ[registration.USER_ERROR_FILE] == marker and sys.excepthook is hook
    assert os.path.isdir(os.path.dirname(marker)) and not os.path.exists(marker)
