"""Inputs that never stop a run, and run folders that two runs, edited data or a kill cannot spoil
(docs/training.md, "Run folders")."""

import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from sm_dream.tiny import load_dream_tokenizer
from sm_dream.training.configs import parse_args
from sm_dream.training.data import (
    ChatPreprocessor,
    check_local_files,
    is_local_data_file,
    load_local_chat_files,
    preprocess,
    read_chat_file,
)

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
TINY = RECIPES / "tiny" / "sft_sm_tiny.yaml"
CHAT = RECIPES / "tiny" / "data" / "chat_tiny.jsonl"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "PYTHONPATH": str(ROOT / "src")}


@pytest.fixture(scope="module")
def tokenizer():
    return load_dream_tokenizer()


def _chat(user, answer):
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


GOOD = json.dumps(_chat("What is two plus two?", "Two plus two is four, of course."))
# Each hostile row alone in a line, with the reason it is counted under.
HOSTILE = {
    "lone_surrogate": json.dumps(_chat("broken \ud800 text", "an answer of some length here")),
    "too_deeply_nested": '{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "number_too_large": '{"messages": ' + "9" * 5000 + "}",
}


def test_hostile_rows_are_counted_and_skipped_with_their_reason(tokenizer, tmp_path):
    path = tmp_path / "hostile.jsonl"
    as_string = json.dumps(_chat("q?", "a surrogate \ud800 inside messages stored as JSON text")["messages"])
    lines = [GOOD, *HOSTILE.values(), GOOD, json.dumps({"messages": as_string})]
    path.write_text("\n".join(lines) + "\n")
    statuses = [r["load_error"] for r in read_chat_file(str(path))]
    assert statuses == [None, *HOSTILE, None, None]
    dataset, column = load_local_chat_files(str(path))
    kept, counts = preprocess(dataset, ChatPreprocessor(tokenizer), column)
    assert len(kept) == 2
    assert {r: counts[r] for r in HOSTILE} == {r: 1 for r in HOSTILE} | {"lone_surrogate": 2}


def test_a_byte_order_mark_keeps_the_first_row(tokenizer, tmp_path):
    for suffix, text in ((".jsonl", GOOD + "\n" + GOOD + "\n"), (".json", json.dumps([json.loads(GOOD)] * 2))):
        path = tmp_path / f"bom{suffix}"
        path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
        assert [r["load_error"] for r in read_chat_file(str(path))] == [None, None], suffix
        dataset, column = load_local_chat_files(str(path))
        kept, counts = preprocess(dataset, ChatPreprocessor(tokenizer), column)
        assert len(kept) == 2 and counts["ok"] == 2


def test_a_directory_or_fifo_is_named_as_such(tmp_path):
    folder = tmp_path / "data.jsonl"
    folder.mkdir()
    with pytest.raises(ValueError, match=f"^data file {folder} is a directory"):
        check_local_files([str(folder)])
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=f"^data file {fifo} is not a regular file"):
        check_local_files(str(fifo))
    with pytest.raises(ValueError, match=f"^data file {tmp_path / 'gone.jsonl'} does not exist"):
        check_local_files(str(tmp_path / "gone.jsonl"))


def test_one_rule_says_what_a_local_data_file_is(tmp_path):
    from sm_dream.training.configs import resolve_recipe_paths
    from sm_dream.training.mixture import DataSource

    assert [is_local_data_file(v) for v in ("a.json", "b.jsonl", "c.parquet", "org/name", None, "x.csv")] == [
        True, True, True, False, False, False]
    assert DataSource(path="c.parquet").local_files() == ["c.parquet"]
    assert DataSource(path="org/name").local_files() is None
    assert DataSource(path="org/name", data_files="a.jsonl").local_files() == ["a.jsonl"]
    resolved = resolve_recipe_paths({"dataset_name": "d.parquet", "dataset_mixture": ["org/name", "e.json"]},
                                    tmp_path)
    assert resolved == {"dataset_name": str(tmp_path / "d.parquet"),
                        "dataset_mixture": ["org/name", str(tmp_path / "e.json")]}


# ---- the run folder lock ------------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys
    from sm_dream.training.run_folder import RunLock, RunLockedError
    try:
        lock = RunLock(sys.argv[1]).acquire()
    except RunLockedError as err:
        print("refused:", err, flush=True)
        sys.exit(3)
    print("locked", flush=True)
    sys.stdin.read()  # hold the lock until the test closes stdin
    lock.release()
""")


def _holder(folder: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=ENV)


def test_a_second_run_into_a_locked_folder_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    holder = _holder(out)
    try:
        assert holder.stdout.readline() == "locked\n"
        proc = subprocess.run([sys.executable, str(RECIPES / "finetune_dream_coder.py"), "--config", str(TINY),
                               "--output_dir", str(out), "--max_steps", "1"],
                              capture_output=True, text=True, env=ENV, timeout=600)
        assert proc.returncode != 0
        expected = (f"output_dir {out} is in use by another run (pid {holder.pid} on {socket.gethostname()}, "
                    "started ")
        assert expected in proc.stderr, proc.stderr[-3000:]
        assert "wait for it to end, or choose another output_dir" in proc.stderr
        assert sorted(p.name for p in out.iterdir()) == [".run.lock"]  # nothing else written
    finally:
        holder.communicate("")
    assert holder.returncode == 0
    assert (out / ".run.lock").read_text() == ""  # released: emptied, the file stays


def test_two_runs_started_together_get_one_lock(tmp_path):
    out = tmp_path / "run"
    first, second = _holder(out), _holder(out)
    try:
        lines = {first.pid: first.stdout.readline(), second.pid: second.stdout.readline()}
    finally:
        for p in (first, second):
            p.communicate("")
    winners = [pid for pid, line in lines.items() if line == "locked\n"]
    assert len(winners) == 1, lines
    loser = next(line for pid, line in lines.items() if pid != winners[0])
    assert loser.startswith(f"refused: output_dir {out} is in use by another run (pid {winners[0]} on ")
    assert sorted(p.returncode for p in (first, second)) == [0, 3]


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path, caplog):
    from sm_dream.training.run_folder import RunLock

    out = tmp_path / "run"
    holder = _holder(out)
    assert holder.stdout.readline() == "locked\n"
    holder.kill()  # SIGKILL: no release, the holder's details stay in the file
    holder.wait()
    assert json.loads((out / ".run.lock").read_text())["pid"] == holder.pid
    caplog.set_level("WARNING")
    with RunLock(str(out)):
        info = json.loads((out / ".run.lock").read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
    assert f"taking over the stale lock {out / '.run.lock'}: its holder is gone (pid {holder.pid} on" in caplog.text


# ---- provisional run_config, data fingerprints, atomic export -----------------------------------

def _args(out: Path, data: Path, *extra):
    return ["--config", str(TINY), "--output_dir", str(out), "--export_dir", str(out / "merged"),
            "--data_files", str(data), "--max_steps", "2", "--save_steps", "1", "--eval_strategy", "no",
            "--max_train_samples", "32", *extra]


def test_a_run_that_failed_before_its_first_step_does_not_block_the_corrected_rerun(tmp_path):
    from sm_dream.training.finetune import check_before_loading, main
    from sm_dream.training.run_folder import RunPlan

    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([HOSTILE["lone_surrogate"], '{"text": "no messages"}']) + "\n")
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="no records|nothing|left"):
        main(*parse_args(_args(out, bad)), recipe=str(TINY))
    assert yaml.safe_load((out / "run_config.yaml").read_text())["data_files"] == [str(bad)]
    _, plan, run_config = check_before_loading(*parse_args(_args(out, CHAT)), recipe=str(TINY))
    assert plan == RunPlan("fresh") and run_config["data_files"] == [str(CHAT)]


STALLED_EXPORT = textwrap.dedent("""
    import os, sys, time
    import sm_dream.training.export as export
    def stalled(*args, **kwargs):  # the card is written last: stop just before it, as a kill would
        open(os.environ["EXPORT_STARTED"], "w").close()
        time.sleep(3600)
    export.model_card = stalled
    from sm_dream.training.finetune import run_recipe
    run_recipe(argv=sys.argv[1:], prog="finetune")
""")


def test_a_killed_export_is_redone_without_retraining_and_edited_data_is_refused(tmp_path, caplog):
    from sm_dream.training import finetune
    from sm_dream.training.model_card import export_source

    data = tmp_path / "chat.jsonl"
    data.write_bytes(CHAT.read_bytes())
    out, flag = tmp_path / "run", tmp_path / "export_started"
    run = subprocess.Popen([sys.executable, "-c", STALLED_EXPORT, *_args(out, data)], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, env={**ENV, "EXPORT_STARTED": str(flag)})
    try:
        while not flag.exists() and run.poll() is None:
            time.sleep(0.2)
    finally:
        run.kill()  # kill -9 in the middle of the export
        log = run.communicate()[0]
    assert flag.exists(), log[-3000:]
    assert not (out / "merged").exists() and (out / "merged.partial-export" / "model.safetensors").exists()
    saved = yaml.safe_load((out / "run_config.yaml").read_text())
    assert saved["data_fingerprints"] == {str(data): hashlib.sha256(data.read_bytes()).hexdigest()}
    trained = {p: p.stat().st_mtime_ns for p in out.rglob("*")
               if p.is_file() and "merged" not in str(p) and p.name != ".run.lock"}

    caplog.set_level("WARNING")
    args = parse_args(_args(out, data))
    assert finetune.main(*args, recipe=str(TINY)) is None  # finished: only the export is redone
    assert f"taking over the stale lock {out / '.run.lock'}: its holder is gone (pid {run.pid} on" in caplog.text
    assert export_source(str(out / "merged")) == str(out) and (out / "merged" / "model.safetensors").exists()
    assert not (out / "merged.partial-export").exists()
    assert {p: p.stat().st_mtime_ns for p in trained} == trained  # no training, no checkpoint touched

    data.write_text(data.read_text().replace("a", "b", 1))  # edited in place
    with pytest.raises(ValueError, match=f"holds a run trained on other contents of {data} .*"
                                         "--overwrite_output_dir"):
        finetune.main(*parse_args(_args(out, data)), recipe=str(TINY))
