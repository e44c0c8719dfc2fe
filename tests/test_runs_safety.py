"""Inputs that never stop a run, and run folders that two runs, edited data or a kill cannot spoil
(docs/training.md, "Run folders")."""

import json
import os
from pathlib import Path

import pytest

from sm_dream.tiny import load_dream_tokenizer
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
