"""benchmarks/gpu_check.py on tiny CPU shapes: every stage runs and reports its figures; a failed
correctness check, and only that, makes the exit status non-zero."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
# A loaded 2-core machine runs the tiny stages several times slower than their GPU limits allow.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _run(out, *extra):
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--time_scale", "6", "--out", str(out), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=1500)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    return _run(out), out


def test_every_stage_reports_its_figures(tiny_run):
    proc, out = tiny_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert {s: v["skipped"] for s, v in report["stages"].items()} == dict.fromkeys(
        ["correctness", "generation", "training", "launchers"])
    names = {(row["stage"], row["name"]) for row in report["figures"]}
    lines = (out / "figures.jsonl").read_text().splitlines()
    assert len(lines) == len(report["figures"])  # the JSON lines written as measured are the report's rows
    for label in ("tiny", "7B-like"):
        for check in ("bfloat16 SDPA vs fp32 eager logits", "compiled T=0 row pass == eager", "batched == single",
                      "SM off == scale 0"):
            assert ("correctness", f"{label}: {check}") in names
    assert ("correctness", "7B-like, 2 layers: save on cpu -> trust_remote_code reload") in names
    correctness = [r for r in report["figures"] if r["stage"] == "correctness"]
    assert all(r["ok"] is True for r in correctness), [r for r in correctness if not r["ok"]]
    for batch, modes in ((1, ["plain", "block", "prefix", "dual", "threshold0.9"]), (2, ["plain", "prefix", "dual"])):
        for mode in modes:
            budget = "" if mode.startswith("threshold") else ", budget 0.25"
            row = next(r for r in report["figures"]
                       if r["name"] == f"batch {batch}, {mode}{budget}: time SM on / off")
            assert row["value"] > 0 and row["target"] == 1.03
    for budget in ("0.5", "1"):
        assert ("generation", f"batch 1, plain, budget {budget}: tokens/s SM off / on") in names
    training = {r["name"]: r for r in report["figures"] if r["stage"] == "training"}
    assert training["2 layers, 2 x 64 tokens: folded pass 1 == PEFT"]["ok"] is True
    assert training["2 layers, 2 x 64 tokens: sm_p1.0 / binary step time"]["target"] == 1.45
    launchers = {r["name"]: r for r in report["figures"] if r["stage"] == "launchers"}
    assert launchers["tiny recipe, 3 steps"]["ok"] is True
    assert launchers["lm-eval sm_dream, HumanEval x4, NFE 1/4"]["ok"] is True
    table = (out / "gpu_check.md").read_text()
    assert table in proc.stdout
    assert "| correctness | tiny: SM off == scale 0 | logits_identical True, tokens_identical True |" in table
    assert "| launchers | 480 |" in table  # every stage's limit, scaled


def test_a_failed_correctness_check_exits_1(tmp_path):
    proc = _run(tmp_path, "--stages", "correctness,training", "--fail_check")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "correctness FAILED: ['tiny: bfloat16 SDPA vs fp32 eager logits']" in proc.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["stages"]["correctness"]["skipped"].startswith("failed (exit 3)")
    assert report["stages"]["training"]["skipped"] is None  # the next stage still ran
    assert any(r["stage"] == "training" for r in report["figures"])


def test_a_stage_over_its_limit_is_skipped_and_the_run_goes_on(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--time_scale", "0.02",
                           "--stages", "generation", "--out", str(tmp_path)], capture_output=True, text=True,
                          env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["stages"]["generation"]["skipped"] == \
        "time limit 4 s reached (figures measured before are kept)"
    assert "| generation | 4 | " in (tmp_path / "gpu_check.md").read_text()


def test_an_output_folder_with_other_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 2 and "holds other files" in proc.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"
