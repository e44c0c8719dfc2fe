import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sm_dream.training.configs import parse_args

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
TINY = RECIPES / "tiny" / "sft_sm_tiny.yaml"
PAIRS = [(RECIPES / d / "sft_sm_dora.yaml", RECIPES / d / "sft_binary_dora.yaml") for d in ("dream_coder", "dream")]
ONE_THREAD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


RUN_RECIPES = sorted(p for d in ("dream_coder", "dream", "tiny") for p in (RECIPES / d).glob("*.yaml"))


@pytest.mark.parametrize("recipe", RUN_RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_recipe_parses(recipe):
    data_args, training_args, model_args = parse_args(["--config", str(recipe), "--use_cpu", "true"])
    assert data_args.sources() and model_args.finetuning in ("dora", "full")
    assert training_args.max_grad_norm == 7.0 and training_args.warmup_ratio == 0.03
    assert training_args.get_warmup_steps(1000) == 30  # the ratio reaches the scheduler on every release
    assert training_args.lr_scheduler_type == "cosine" and training_args.remove_unused_columns is False


@pytest.mark.parametrize("sm, binary", PAIRS, ids=["dream_coder", "dream"])
def test_binary_baseline_is_the_same_recipe_with_sm_off(sm, binary):
    a, b = yaml.safe_load(sm.read_text()), yaml.safe_load(binary.read_text())
    differing = {k for k in set(a) | set(b) if a.get(k) != b.get(k)}
    assert differing == {"p_sm", "model_config_overrides", "output_dir"}
    assert a["p_sm"] == 0.5 and b["p_sm"] == 0.0 and b["model_config_overrides"] == {"sm_enabled": False}
    assert (a["lora_r"], a["lora_alpha"], a["learning_rate"], a["sm_learning_rate"]) == (16, 16, 1e-5, 1e-2)
    assert a["lora_target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert a["global_batch_size"] == 8 and "gradient_accumulation_steps" not in a
    assert 8 % (8 * a["per_device_train_batch_size"]) == 0  # divides over 1, 2, 4 and 8 GPUs
    assert a["max_length"] == 4096 and a["max_context_tokens"] == 2048


def test_recipe_flags_win_over_yaml_and_unknown_keys_fail(tmp_path):
    data_args, training_args, model_args = parse_args(["--config", str(TINY), "--p_sm", "0.8", "--finetuning", "full"])
    assert training_args.p_sm == 0.8 and model_args.finetuning == "full" and data_args.max_eos_pad == 50
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text() + "\nlerning_rate: 1.0\n")
    with pytest.raises(ValueError, match=r"unknown keys \['lerning_rate'\]"):
        parse_args(["--config", str(bad)])
    with pytest.raises(ValueError, match="--no_such_flag"):
        parse_args(["--config", str(TINY), "--no_such_flag", "1"])


def test_yaml_sets_the_defaults_and_flags_win_as_with_trl(tmp_path, monkeypatch):
    """TrlParser's contract (`python -m trl ... --config x.yaml`): YAML values replace the dataclass
    defaults, command-line flags replace the YAML's, `env:` sets environment variables."""
    data_args, training_args, model_args = parse_args(["--config", str(TINY)])
    assert (training_args.learning_rate, training_args.max_steps, data_args.max_length) == (1e-3, 4, 512)  # YAML
    assert training_args.max_grad_norm == 7.0 and data_args.messages_column == "messages"  # dataclass defaults
    _, training_args, _ = parse_args([f"--config={TINY}", "--learning_rate", "0.02", "--max_steps", "9"])
    assert (training_args.learning_rate, training_args.max_steps) == (0.02, 9)
    monkeypatch.delenv("SM_DREAM_RECIPE_ENV_TEST", raising=False)
    parse_args(["--config", str(_yaml(tmp_path, "env: {SM_DREAM_RECIPE_ENV_TEST: seven}"))])
    assert os.environ.pop("SM_DREAM_RECIPE_ENV_TEST") == "seven"


@pytest.mark.parametrize("flags, expected", [
    (["--bf16", "false", "--gradient_checkpointing", "true"], {"bf16": False, "gradient_checkpointing": True}),
    (["--use_cpu", "yes", "--disable_tqdm", "0"], {"use_cpu": True, "disable_tqdm": False}),
    (["--gradient_checkpointing"], {"gradient_checkpointing": True}),  # a bare bool flag is true
    (["--report_to", "none"], {"report_to": []}),
    (["--lora_target_modules", "q_proj", "v_proj"], {"lora_target_modules": ["q_proj", "v_proj"]}),
    (["--data_files", "a.jsonl", "b.jsonl"], {"data_files": ["a.jsonl", "b.jsonl"]}),  # CLI paths: as given
])
def test_bool_and_list_flags(flags, expected):
    args = parse_args(["--config", str(TINY), *flags])
    assert {k: next(getattr(a, k) for a in args if hasattr(a, k)) for k in expected} == expected


def test_yaml_lists_and_bools_are_read_like_their_flags(tmp_path):
    recipe = _yaml(tmp_path, "gradient_checkpointing: true\nbf16: false")
    recipe.write_text(recipe.read_text().replace("lora_target_modules: [q_proj, k_proj, v_proj, o_proj]",
                                                 "lora_target_modules: q_proj"))
    _, training_args, model_args = parse_args(["--config", str(recipe)])
    assert training_args.gradient_checkpointing is True and training_args.bf16 is False
    assert model_args.lora_target_modules == ["q_proj"]  # one value where a list is expected: a list of one
    assert training_args.report_to == []  # `report_to: none`


@pytest.mark.parametrize("argv, message", [
    (["--lerning_rate", "1"], "unknown flag --lerning_rate on the command line (did you mean '--learning_rate'?)"),
    (["--p-smm=0.3"], "unknown flag --p-smm on the command line (did you mean '--p_sm'?)"),
    (["stray"], "unexpected value 'stray' on the command line"),
])
def test_unknown_flags_name_the_closest(argv, message):
    with pytest.raises(ValueError) as err:
        parse_args(["--config", str(TINY), *argv])
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_configs_validate(stage):
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.config import DeepSpeedConfig
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    path = RECIPES / "accelerate_configs" / f"ds_zero{stage}.json"
    raw = json.loads(path.read_text())
    assert "optimizer" not in raw and "scheduler" not in raw  # else DeepSpeed drops the SM learning-rate group
    _, training_args, _ = parse_args(["--config", str(PAIRS[0][0]), "--use_cpu", "true", "--bf16", "false"])
    filled = HfTrainerDeepSpeedConfig(str(path))
    filled.trainer_config_process(training_args)
    ds = DeepSpeedConfig(filled.config)
    assert ds.zero_optimization_stage == stage and ds.gradient_clipping == 7.0
    assert ds.gradient_accumulation_steps == 8 and ds.train_micro_batch_size_per_gpu == 1  # one process
    if stage == 3:
        assert ds.zero_config.gather_16bit_weights_on_model_save
    typo = json.loads(json.dumps(filled.config))
    typo["zero_optimization"]["stagee"] = typo["zero_optimization"].pop("stage")
    with pytest.raises(Exception, match="stagee"):
        DeepSpeedConfig(typo)  # the validation is strict, so the shipped files really passed it


@pytest.mark.parametrize("name, kind", [("ddp.yaml", "MULTI_GPU"), ("zero2.yaml", "DEEPSPEED"),
                                        ("zero3.yaml", "DEEPSPEED")])
def test_accelerate_configs_load(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(RECIPES / "accelerate_configs" / name))
    assert config.distributed_type == kind
    if kind == "DEEPSPEED":
        assert (ROOT / config.deepspeed_config["deepspeed_config_file"]).exists()


def _corpus_with_bad_rows(path: Path) -> dict:
    """24 good records from the shipped file and one bad row of each kind; returns the bad counts."""
    good = (RECIPES / "tiny" / "data" / "chat_tiny.jsonl").read_text().splitlines()[:24]
    bad = {
        "invalid_json": ['{"messages": [oops'],
        "missing_role": [json.dumps({"messages": [{"content": "hi"},
                                                  {"role": "assistant", "content": "hello there you"}]})],
        "non_text_content": [json.dumps({"messages": [{"role": "user", "content": 3},
                                                      {"role": "assistant", "content": "x"}]})],
        "empty_content": [json.dumps({"messages": [{"role": "user", "content": "q"},
                                                   {"role": "assistant", "content": ""}]})],
        "no_assistant_message": [json.dumps({"messages": [{"role": "user", "content": "anyone?"}]})],
        "missing_messages": [json.dumps({"text": "not a chat"})],
        "tool_call": [json.dumps({"messages": [{"role": "user", "content": "run"},
                                               {"role": "assistant",
                                                "content": "<tool_call>{}</tool_call> done now"}]})],
        "response_too_short": [json.dumps({"messages": [{"role": "user", "content": "hi"},
                                                        {"role": "assistant", "content": "Hi."}]})],
    }
    lines = good[:8] + [line for rows in bad.values() for line in rows] + good[8:]
    path.write_text("\n".join(lines) + "\n")
    return {reason: len(rows) for reason, rows in bad.items()}


def test_tiny_recipe_end_to_end_with_malformed_rows(tmp_path):
    """Train with SM on a corpus with bad rows (each skipped and counted), export, reload without
    sm_dream (trust_remote_code) and generate."""
    from sm_dream.training.finetune import main

    corpus = tmp_path / "corpus.jsonl"
    expected_bad = _corpus_with_bad_rows(corpus)
    out = tmp_path / "run"
    trainer = main(*parse_args([
        "--config", str(TINY), "--data_files", str(corpus), "--output_dir", str(out),
        "--export_dir", str(out / "merged"), "--max_train_samples", "1000", "--holdout_fraction", "0.1",
        "--max_steps", "2", "--gradient_accumulation_steps", "1", "--eval_strategy", "no", "--save_strategy", "no"]))
    assert trainer.state.global_step == 2
    stats = json.loads((out / "data_stats.json").read_text())
    totals = {}
    for counts in stats.values():
        for reason, n in counts.items():
            totals[reason] = totals.get(reason, 0) + n
    assert {r: totals.get(r, 0) for r in expected_bad} == expected_bad
    assert totals["ok"] == 24 and sum(totals.values()) - totals.get("truncated", 0) == 24 + len(expected_bad)
    trained = {k: v for k, v in trainer.state.log_history[-2].items() if k.startswith("sm/w_")}
    proc = subprocess.run([sys.executable, str(RECIPES / "generate_standalone.py"), str(out / "merged"),
                           "--max_new_tokens", "4"], capture_output=True, text=True, env=ONE_THREAD_ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "sm_dream importable: False" in proc.stdout and "4 forward passes" not in proc.stdout
    assert f"w_s={trained['sm/w_s']:.4f}" in proc.stdout, (proc.stdout, trained)
    assert "generated: " in proc.stdout
    assert "note: this is a tiny model (hidden size 32, 2 layers) from random weights" in proc.stdout  # not a result


def _run_tiny(out: Path, launcher, *extra, env=None, timeout=900):
    """The tiny recipe for 3 steps in a subprocess; returns the log history of checkpoint-3."""
    cmd = [*launcher, str(RECIPES / "finetune_dream_coder.py"), "--config", str(TINY), "--output_dir", str(out),
           "--max_steps", "3", "--save_steps", "3", "--eval_strategy", "no", "--export_dir", str(out / "merged"),
           *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**ONE_THREAD_ENV, **(env or {})},
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _run_tiny.stdout = proc.stdout
    return json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())["log_history"]


def _sm_and_losses(history):
    return [(e["loss"], e["sm/w_s"], e["sm/w_a"], e["sm/w_b"]) for e in history if "loss" in e]


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` is DDP on gloo here (`--cpu` would start one process)."""
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", "29561"]
    history = _run_tiny(tmp_path / "ddp", launcher)
    # the tiny recipe's global_batch_size 4 over 2 processes x 2 per device: no accumulation
    assert "effective batch 4 = 2 processes x 2 per device x 1 gradient accumulation steps" in _run_tiny.stdout
    steps = _sm_and_losses(history)
    assert len(steps) == 3 and all(loss == loss and loss > 0 for loss, *_ in steps)
    assert steps[-1][1] != steps[0][1]  # w_s trained
    assert (tmp_path / "ddp" / "merged" / "model.safetensors").exists()


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_matches_a_plain_run(tmp_path, stage):
    """One DeepSpeed process on CPU (the first run compiles a comm op, ~1-6 min): same losses and SM values."""
    pytest.importorskip("deepspeed")
    plain = _sm_and_losses(_run_tiny(tmp_path / "plain", [sys.executable]))
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(29570 + stage)}
    ds = _sm_and_losses(_run_tiny(tmp_path / "ds", [sys.executable], "--deepspeed",
                                  str(RECIPES / "accelerate_configs" / f"ds_zero{stage}.json"), env=env))
    assert len(ds) == len(plain) == 3
    for a, b in zip(ds, plain):
        assert a == pytest.approx(b, rel=1e-4)
    assert (tmp_path / "ds" / "merged" / "model.safetensors").exists()


# ---- checks before anything loads ---------------------------------------------------------------

def _yaml(tmp_path, extra: str, name="recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(TINY.read_text().replace("data/chat_tiny.jsonl", str(RECIPES / "tiny" / "data" / "chat_tiny.jsonl"))
                    + "\n" + extra + "\n")
    return path


@pytest.mark.parametrize("extra, message", [
    ("max_steps: four", r"recipe.yaml: max_steps: 'four' is not an int"),
    ("save_strategy: no", r"recipe.yaml: save_strategy: False is not one of .*quote it"),
    ("use_cpu: maybe", r"recipe.yaml: use_cpu: 'maybe' is not true or false"),
    ("learning_rate: [1]", r"recipe.yaml: learning_rate: \[1\] is not a float"),
    ("lerning_rate: 1.0", r"unknown keys \['lerning_rate'\] \(lerning_rate: did you mean 'learning_rate'\?\)"),
])
def test_yaml_value_errors_name_the_file_and_key(tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        parse_args(["--config", str(_yaml(tmp_path, extra))])


def test_yaml_numbers_written_as_text_are_read(tmp_path):
    _, training_args, _ = parse_args(["--config", str(_yaml(tmp_path, "learning_rate: 1e-5\nmax_steps: 3"))])
    assert training_args.learning_rate == 1e-5 and training_args.max_steps == 3  # YAML reads 1e-5 as text


def test_yaml_input_paths_resolve_against_the_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data_args, training_args, _ = parse_args(["--config", str(TINY)])
    assert data_args.data_files == [str(RECIPES / "tiny" / "data" / "chat_tiny.jsonl")]
    assert training_args.output_dir == "outputs/tiny_sm"  # outputs stay relative to the working directory
    assert training_args.export_dir == os.path.join("outputs/tiny_sm", "merged")
    mixture = tmp_path / "sub" / "mix.yaml"
    mixture.parent.mkdir()
    (mixture.parent / "a.jsonl").write_text("{}\n")
    mixture.write_text("tiny: true\ndataset_mixture:\n  - {data_files: a.jsonl}\n  - HuggingFaceTB/smoltalk\n")
    data_args, _, _ = parse_args(["--config", str(mixture), "--use_cpu", "true"])
    assert [s.data_files for s in data_args.sources()] == [str(mixture.parent / "a.jsonl"), None]
    assert data_args.sources()[1].path == "HuggingFaceTB/smoltalk"


@pytest.mark.parametrize("flags, message", [
    (["--finetuning", "doraa"], r"finetuning='doraa' is unknown \(did you mean 'dora'\?\)"),
    (["--lora_target_modules", "q_projj", "v_proj"], r"'q_projj' matches no Linear layer .*did you mean 'q_proj'"),
    (["--data_files", "nowhere.jsonl"], r"data file nowhere.jsonl does not exist"),
    (["--data_files", "train.csv"], r"must be a .json, .jsonl or .parquet file"),
    (["--model_config_overrides", '{"sm_topk": 2}'], r"unknown config field 'sm_topk' \(did you mean 'sm_top_k'\?\)"),
    (["--dataset_mixture", '[{"data_files": "x.jsonl", "splitt": "train"}]'], r"unknown keys \['splitt'\]"),
    (["--model_config_overrides", '{"sm_enabled": false}'], "sm_enabled=False"),
])
def test_bad_arguments_fail_before_the_model_or_data_load(tmp_path, monkeypatch, flags, message):
    from sm_dream.training import finetune

    def never(*args, **kwargs):
        raise AssertionError("loaded although the arguments were bad")

    monkeypatch.setattr(finetune, "load_model", never)
    monkeypatch.setattr(finetune, "build_data", never)
    monkeypatch.setattr(finetune, "load_tokenizer", never)
    recipe = _without_data_files(tmp_path) if "--dataset_mixture" in flags else str(TINY)
    argv = ["--config", recipe, "--output_dir", str(tmp_path / "run"), *flags]
    with pytest.raises(ValueError, match=message):
        finetune.main(*parse_args(argv))
    assert not (tmp_path / "run").exists()


def _without_data_files(tmp_path) -> str:
    text = "\n".join(line for line in TINY.read_text().splitlines() if not line.startswith("data_files"))
    path = tmp_path / "no_data.yaml"
    path.write_text(text + "\n")
    return str(path)


def test_an_unreachable_model_id_is_named(monkeypatch, tmp_path):
    import huggingface_hub.constants

    from sm_dream.training.configs import ModelArguments
    from sm_dream.training.validation import load_model_config

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"(?s)model_name_or_path='no-such-org/no-such-model'.*Offline\?"):
        load_model_config(ModelArguments(model_name_or_path="no-such-org/no-such-model"))


@pytest.mark.parametrize("world, per_device, expected", [(1, 1, 8), (2, 1, 4), (4, 1, 2), (8, 1, 1), (1, 2, 4),
                                                         (2, 2, 2), (4, 2, 1)])
def test_gradient_accumulation_is_derived_from_the_global_batch(world, per_device, expected):
    from sm_dream.training.configs import gradient_accumulation_for

    assert gradient_accumulation_for(8, world, per_device) == expected
    assert gradient_accumulation_for(8, world, per_device, given=expected) == expected


def test_global_batch_errors_and_the_launched_process_count(monkeypatch):
    from sm_dream.training import configs

    with pytest.raises(ValueError, match=r"global_batch_size=8 is not a multiple of 8 processes x "
                                         r"per_device_train_batch_size=2 = 16"):
        configs.gradient_accumulation_for(8, 8, 2)
    with pytest.raises(ValueError, match="gradient_accumulation_steps=4 contradicts global_batch_size=8"):
        configs.gradient_accumulation_for(8, 4, 1, given=4)
    for world, steps in ((1, 2), (2, 1)):  # the tiny recipe: global 4, 2 per device
        monkeypatch.setattr(configs, "launch_world_size", lambda world=world: world)
        _, training_args, _ = parse_args(["--config", str(TINY)])
        assert training_args.gradient_accumulation_steps == steps
    monkeypatch.setattr(configs, "launch_world_size", lambda: 8)
    with pytest.raises(ValueError, match="global_batch_size=8 is not a multiple"):
        parse_args(["--config", str(PAIRS[0][0]), "--use_cpu", "true", "--bf16", "false",
                    "--per_device_train_batch_size", "2"])


def test_bare_recipe_script_prints_a_usage_and_help_leads_with_config():
    script = str(RECIPES / "finetune_dream_coder.py")
    proc = subprocess.run([sys.executable, script], capture_output=True, text=True, env=ONE_THREAD_ENV, timeout=300)
    assert proc.returncode == 2 and "--config RECIPE.yaml" in proc.stderr
    assert "recipes/tiny/sft_sm_tiny.yaml" in proc.stderr and "recipes/dream_coder/sft_sm_dora.yaml" in proc.stderr
    proc = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, env=ONE_THREAD_ENV,
                          timeout=300)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and len(lines) < 120, len(lines)
    assert "--config" in lines[0] + lines[2] and any("--p_sm" in line for line in lines)
    assert any("--global_batch_size" in line for line in lines) and "--help-all" in proc.stdout


# ---- output folder, resume, export --------------------------------------------------------------

RUN_FLAGS = ["--max_steps", "2", "--save_steps", "1", "--eval_strategy", "no", "--max_train_samples", "64"]


def _train(out: Path, *extra):
    from sm_dream.training.finetune import main

    argv = ["--config", str(TINY), "--output_dir", str(out), "--export_dir", str(out / "merged"), *RUN_FLAGS, *extra]
    return main(*parse_args(argv), recipe=str(TINY))


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in folder.rglob("*") if p.is_file() and p.name != ".run.lock"}  # the lock is taken by every run


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    trainer = _train(out)
    assert trainer.state.global_step == 2
    return out


def test_rerunning_a_finished_run_changes_nothing_and_a_changed_config_is_refused(finished_run, monkeypatch):
    from sm_dream.training import finetune

    before = _snapshot(finished_run)
    assert _train(finished_run) is None  # "already finished": exit 0, nothing written
    assert _train(finished_run, "--gradient_checkpointing", "true", "--logging_steps", "5") is None  # the same run
    assert _snapshot(finished_run) == before
    monkeypatch.setattr(finetune, "load_model", lambda *a, **k: pytest.fail("loaded the model"))
    with pytest.raises(ValueError, match=r"different arguments \(p_sm: 0.5 -> 0.0\).*--overwrite_output_dir"):
        _train(finished_run, "--p_sm", "0")
    with pytest.raises(ValueError, match=r"finetuning: 'dora' -> 'full'"):
        _train(finished_run, "--finetuning", "full")
    assert _snapshot(finished_run) == before
    saved = yaml.safe_load((finished_run / "run_config.yaml").read_text())
    assert saved["p_sm"] == 0.5 and saved["effective_batch_size"] == 4 and saved["recipe"] == str(TINY)


def test_resume_compares_only_the_arguments_that_change_the_result(tmp_path):
    """Run identity is an allow-list (`RESULT_ARGS`): gradient checkpointing, logging, saving, workers,
    output paths and the per-device split of the batch may change on resume; lr, seed, data may not."""
    from sm_dream.training.run_folder import RunPlan, data_fingerprints, plan_run, resolved_config

    run = tmp_path / "run"
    (run / "checkpoint-1").mkdir(parents=True)
    (run / "checkpoint-1" / "trainer_state.json").write_text('{"global_step": 1}')
    (run / "checkpoint-1" / "adapter_model.bin").write_bytes(b"weights")

    def config(*flags):
        args = parse_args(["--config", str(TINY), "--output_dir", str(run), *flags])
        return {**resolved_config(*args), "data_fingerprints": data_fingerprints(args[0].sources())}

    (run / "run_config.yaml").write_text(yaml.safe_dump(config()))
    resume = RunPlan("resume", str(run / "checkpoint-1"))
    assert plan_run(str(run), config()) == resume
    assert plan_run(str(run), config(
        "--gradient_checkpointing", "true", "--logging_steps", "3", "--report_to", "tensorboard", "--save_steps", "5",
        "--eval_steps", "2", "--dataloader_num_workers", "2", "--export_dir", "elsewhere", "--run_name", "again",
        "--per_device_train_batch_size", "1", "--disable_tqdm", "false")) == resume  # the same effective batch
    other = tmp_path / "other.jsonl"
    other.write_text((RECIPES / "tiny" / "data" / "chat_tiny.jsonl").read_text())
    for flags, change in [(["--learning_rate", "0.01"], "learning_rate: 0.001 -> 0.01"),
                          (["--seed", "7"], "seed: 0 -> 7"),
                          (["--data_files", str(other)],
                           f"data_files: ['{RECIPES}/tiny/data/chat_tiny.jsonl'] -> ['{other}']"),
                          (["--global_batch_size", "8"], "effective_batch_size: 4 -> 8")]:
        with pytest.raises(ValueError) as err:
            plan_run(str(run), config(*flags))
        assert str(err.value) == (f"output_dir {run} holds a run with different arguments ({change}). Pass "
                                  "--overwrite_output_dir true to start afresh there (its checkpoints are deleted), "
                                  "or choose another output_dir.")


def test_an_interrupted_run_resumes_from_the_newest_complete_checkpoint(finished_run, tmp_path, caplog):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "trainer_state.json").unlink()  # not finished: it was cut after checkpoint-2 ...
    weights = run / "checkpoint-2" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # ... and checkpoint-2 is truncated
    (run / "checkpoint-3").mkdir()  # an empty folder left by a kill during the next save
    shutil.rmtree(run / "merged")
    caplog.set_level("INFO")
    trainer = _train(run)
    assert trainer.state.global_step == 2
    log = caplog.text
    assert "skipping incomplete checkpoint" in log and "checkpoint-3 (no trainer_state.json)" in log
    assert "checkpoint-2 (adapter_model.safetensors is truncated)" in log
    assert f"resuming the run in {run} from {run / 'checkpoint-1'}" in log
    assert "effective batch 4 = 1 processes x 2 per device x 2 gradient accumulation steps" in log
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    reference = json.loads((finished_run / "trainer_state.json").read_text())["log_history"]
    assert losses == pytest.approx([e["loss"] for e in reference if "loss" in e], rel=1e-5)
    assert (run / "merged" / "model.safetensors").exists()


def test_overwrite_output_dir_starts_afresh(tmp_path):
    from sm_dream.training.run_folder import RunPlan, plan_run, prepare_output_dir

    run = tmp_path / "run"
    (run / "checkpoint-7").mkdir(parents=True)
    (run / "checkpoint-7" / "trainer_state.json").write_text('{"global_step": 7}')
    with pytest.raises(ValueError, match="holds a run without run_config.yaml"):
        plan_run(str(run), {"p_sm": 0.5})
    plan = plan_run(str(run), {"p_sm": 0.5}, overwrite=True)
    assert plan == RunPlan("fresh", clean=True)
    prepare_output_dir(str(run), plan, {"p_sm": 0.5})
    assert sorted(p.name for p in run.iterdir()) == ["run_config.yaml"]
    assert plan_run(str(run), {"p_sm": 0.5}) == RunPlan("fresh")  # nothing saved yet: starts again
    assert plan_run(str(run), {"p_sm": 0.5, "logging_steps": 3, "output_dir": "elsewhere"}) == RunPlan("fresh")


def test_exports_carry_model_cards_and_refuse_to_replace_another_model(finished_run, tmp_path, capsys):
    import shutil

    from huggingface_hub import ModelCard

    from sm_dream.cli import main as cli

    card = (finished_run / "merged" / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    base = str(finished_run / "base_model")
    assert front["base_model"] == base and front["sm_dream_source"] == str(finished_run)
    loaded = ModelCard.load(finished_run / "merged" / "README.md")  # the Hub's own reader
    assert (loaded.data.base_model, loaded.data.sm_dream_source) == (base, str(finished_run))
    state = json.loads((finished_run / "trainer_state.json").read_text())
    sm = [e for e in state["log_history"] if "sm/w_s" in e][-1]
    for name in ("w_s", "w_a", "w_b"):
        assert f"{name} = {sm['sm/' + name]:.4f}" in card
    assert "| optimizer steps | 2 |" in card and "| k (sm_top_k) | 3 |" in card and "64 kept of 64" in card
    assert "AutoModel.from_pretrained" in card and str(TINY) in card
    adapter_card = yaml.safe_load((finished_run / "README.md").read_text().split("---")[1])
    assert adapter_card["base_model"] == base and f"base_model:adapter:{base}" in adapter_card["tags"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text("{}")
    with pytest.raises(SystemExit) as stop:
        cli(["export", str(finished_run), str(other)])
    assert stop.value.code == 2  # one `sm-dream: error:` line on stderr
    assert re.search(f"sm-dream: error: export folder {other} already holds files .* pass --overwrite",
                     capsys.readouterr().err)
    moved = tmp_path / "moved"  # the run folder moved: its adapter config names the old base_model/ path
    shutil.copytree(finished_run, moved, ignore=shutil.ignore_patterns("merged"))
    config = json.loads((moved / "adapter_config.json").read_text())
    (moved / "adapter_config.json").write_text(json.dumps({**config,
                                                           "base_model_name_or_path": "/gone/run/base_model"}))
    cli(["export", str(moved), str(tmp_path / "m0")])  # the tiny base moved with the run: found there
    shutil.rmtree(moved / "base_model")
    with pytest.raises(SystemExit) as stop:
        cli(["export", str(moved), str(tmp_path / "m1")])
    assert stop.value.code == 2 and re.search(r"was the run folder moved\?.*--base_model", capsys.readouterr().err)
    cli(["export", str(moved), str(other), "--base_model", base, "--overwrite"])
    assert yaml.safe_load((other / "README.md").read_text().split("---")[1])["sm_dream_source"] == str(moved)
    cli(["export", str(moved), str(other), "--base_model", base])  # the same run again: allowed


def test_export_source_reads_only_the_header_of_an_sm_dream_card(tmp_path):
    from sm_dream.training.model_card import export_source

    assert export_source(str(tmp_path)) is None  # no README.md
    for text in ("# A plain README\n", "---\n[a, b\n---\n", "---\n- a list\n---\n", "---\nlicense: mit\n---\n"):
        (tmp_path / "README.md").write_text(text)
        assert export_source(str(tmp_path)) is None, text
    (tmp_path / "README.md").write_text("---\nsm_dream_source: /runs/a\n---\n\n# Card\n")
    assert export_source(str(tmp_path)) == "/runs/a"


@pytest.mark.parametrize("flags, expected", [
    ([], os.path.join("elsewhere", "merged")),  # follows an overridden output_dir
    (["--export_dir", "my_export"], "my_export"),
    (["--export_dir", "none"], None),
])
def test_export_dir_defaults_to_the_run_folder(tmp_path, flags, expected):
    _, training_args, _ = parse_args(["--config", str(TINY), "--output_dir", "elsewhere", *flags])
    assert training_args.export_dir == expected


def test_export_dir_given_in_the_yaml_wins(tmp_path):
    recipe = _yaml(tmp_path, "export_dir: exports/a")
    _, training_args, _ = parse_args(["--config", str(recipe), "--output_dir", "runs/b"])
    assert training_args.export_dir == "exports/a"
