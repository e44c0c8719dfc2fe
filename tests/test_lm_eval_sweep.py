"""The sweep: Table 2 Markdown from saved runs, metric choice, plot, and a tiny end-to-end sweep."""

import json
import os

import pytest
from lm_eval_testing import shared_tiny_model, write_jsonl

from sm_dream.evaluation import sweep


@pytest.fixture(autouse=True)
def _no_environment_report(monkeypatch):
    monkeypatch.setattr("lm_eval.evaluator.add_env_info", lambda results: None)


def record(feedback, budget, task, value, stderr=None):
    return dict(feedback=feedback, nfe_budget=budget, task=task, metric="pass@1,create_test", value=value,
                stderr=stderr)


def test_markdown_table_has_the_table_2_layout():
    records = [record("binary", 0.25, "he", 0.19, 0.017), record("sm", 0.25, "he", 0.248, 0.018),
               record("binary", 1.0, "he", 0.595), record("sm", 1.0, "he", 0.578),
               record("binary", 0.25, "mbpp", 0.27), record("sm", 0.25, "mbpp", 0.323)]
    lines = sweep.markdown_table(records).splitlines()
    assert lines[:8] == [
        "| NFE budget | Feedback | he | mbpp |",
        "|---|---|---|---|",
        "| 1/4 | Binary | 19.0 (± 1.7) | 27.0 |",
        "|  | SM | 24.8 (± 1.8) | 32.3 |",
        "| | *Gain* | *+5.8* | *+5.3* |",
        "| 1/1 | Binary | 59.5 | - |",
        "|  | SM | 57.8 | - |",
        "| | *Gain* | *-1.7* | - |",
    ]


def test_primary_metric_and_budget_labels():
    gsm = {"exact_match,strict-match": 0.1, "exact_match_stderr,strict-match": 0.01,
           "exact_match,flexible-extract": 0.8, "exact_match_stderr,flexible-extract": 0.02, "alias": "gsm8k"}
    assert sweep.primary_metric(gsm) == ("exact_match,flexible-extract", 0.8, 0.02)
    assert (sweep.primary_metric({"pass@1,create_test": 0.5, "pass@1_stderr,create_test": "N/A"})
            == ("pass@1,create_test", 0.5, None))
    assert sweep.primary_metric({"alias": "x"}) is None
    assert [sweep.budget_label(b) for b in (0.25, 0.5, 1.0, 0.125)] == ["1/4", "1/2", "1/1", "1/8"]


def test_render_needs_runs(tmp_path):
    with pytest.raises(ValueError, match="No results"):
        sweep.render(str(tmp_path))


def _runs(folder):
    """{(feedback, budget): file name} of a sweep folder (names: <feedback>_nfe<budget>_<key>.json)."""
    names = sorted(os.listdir(folder / "runs"))
    return {tuple(n.split("_")[:2]): n for n in names}, {n.rsplit("_", 1)[1][:-5] for n in names}


def test_tiny_sweep_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("SM_DREAM_LM_EVAL_TASKS", "sm_dream")  # skip indexing lm-eval's built-in tasks
    model = shared_tiny_model()
    data = write_jsonl(tmp_path / "math.jsonl", [{"problem": "What is $1+1$?", "answer": "2"}])
    argv = ["--model_args", f"pretrained={model},max_new_tokens=4,temperature=0", "--tasks", "math500_smd",
            "--nfe_budgets", "0.25", "1",
            "--metadata", json.dumps({"math500_file": data}), "--device", "cpu", "--output_dir", str(tmp_path / "out")]
    sweep.main(argv)  # --metadata in lm-eval's JSON form
    runs, keys = _runs(tmp_path / "out")
    assert (sorted(runs) == [("binary", "nfe0.25"), ("binary", "nfe1"), ("sm", "nfe0.25"), ("sm", "nfe1")]
            and len(keys) == 1)
    with open(tmp_path / "out" / "runs" / runs[("sm", "nfe0.25")]) as f:
        run = json.load(f)
    info = run["config"]["sm_dream"]
    assert info["tasks"]["math500_smd"]["nfe_per_sample"] == 1 and info["generation"]["soft_masking"] is True
    assert run["key_fields"]["metadata"] == {"math500_file": data} and run["key_fields"]["tasks"] == ["math500_smd"]
    with open(tmp_path / "out" / "runs" / runs[("binary", "nfe1")]) as f:
        assert json.load(f)["config"]["sm_dream"]["tasks"]["math500_smd"]["nfe_per_sample"] == 4
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| 1/4 | Binary | 0.0 |" in table and "| 1/1 | Binary | 0.0 |" in table and "*Gain*" in table
    assert (tmp_path / "out" / "accuracy_vs_nfe.png").stat().st_size > 0

    calls = []
    real = sweep.evaluate_run
    monkeypatch.setattr(sweep, "evaluate_run", lambda *a, **k: calls.append(a[3:]) or real(*a, **k))
    sweep.main(argv)  # resumes: every pair has results with the same key
    assert calls == []
    sweep.main([*argv[:-2], "--limit", "1", "--feedback", "sm", "--nfe_budgets", "1",
                "--output_dir", str(tmp_path / "out")])
    assert calls == [(1.0, "sm")]  # another limit: evaluated again, not reused
    runs, keys = _runs(tmp_path / "out")
    assert len(keys) == 2
    with pytest.raises(ValueError, match="holds two runs of"):
        sweep.main(["--render_only", "--output_dir", str(tmp_path / "out")])


def test_metadata_and_model_args_accept_json_and_name_bad_json():
    assert (sweep.parse_model_args('{"gsm8k_file": "a.jsonl", "n": 2}', "--metadata")
            == {"gsm8k_file": "a.jsonl", "n": 2})
    assert sweep.parse_model_args("pretrained=x,nfe_budget=0.5") == {"pretrained": "x", "nfe_budget": 0.5}
    with pytest.raises(ValueError, match="--metadata .* is not valid JSON"):
        sweep.parse_model_args('{"gsm8k_file": }', "--metadata")


def test_sweep_rejects_bad_budgets(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        sweep.main(["--model_args", "pretrained=x", "--nfe_budgets", "0", "--output_dir", str(tmp_path)])
    assert stop.value.code == 2
    assert capsys.readouterr().err == "error: --nfe_budgets [0.0]: every budget must be > 0 (e.g. 0.25 0.5 1).\n"
