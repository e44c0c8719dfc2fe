import json
from collections import Counter
from pathlib import Path

import pytest

from sm_dream.training.data import (
    ChatPreprocessor,
    DiffusionDataCollator,
    load_local_chat_files,
    preprocess,
    read_chat_file,
    split_conversation,
)
from sm_dream.training.mixture import DataSource, build_datasets
from sm_dream.tiny import DREAM_EOS_ID, load_dream_tokenizer

TINY_DATA = Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "data" / "chat_tiny.jsonl"


@pytest.fixture(scope="module")
def tokenizer():
    return load_dream_tokenizer()


def U(text):
    return {"role": "user", "content": text}


def A(text):
    return {"role": "assistant", "content": text}


ANSWER = "Here is a full and proper answer."
# (messages, expected status): a hand-made set covering every filter and malformed reason.
HAND_MADE = [
    ([U("hi"), A(ANSWER)], "ok"),
    ([{"role": "system", "content": "Be brief."}, U("a"), A("first reply is here"), U("b"), A(ANSWER)], "ok"),
    ([U("hi"), A(ANSWER), U("trailing question")], "ok"),
    ([{"role": "HUMAN", "content": "hi"}, {"role": "ASSISTANT", "content": ANSWER}], "ok"),
    ([U("hi"), A("one two three four five")], "ok"),  # exactly 5 tokens
    ([U("hi"), A("one two three four")], "response_too_short"),  # 4 tokens
    ([U("hi"), A("Hi.")], "response_too_short"),
    ([U("word " * 2100), A(ANSWER)], "context_too_long"),
    ([U("call it"), A("<tool_call>\n{\"name\": \"f\"}\n</tool_call>")], "tool_call"),
    ([U("x"), {"role": "assistant", "content": "", "tool_calls": [{"type": "function",
      "function": {"name": "f", "arguments": {}}}]}, {"role": "tool", "content": "42"}, A(ANSWER)], "tool_call"),
    ([U("see </tool_call> here"), A(ANSWER)], "tool_call"),
    ([{"content": "no role"}, A(ANSWER)], "missing_role"),
    ([{"role": "narrator", "content": "x"}, U("hi"), A(ANSWER)], "unknown_role"),
    ([{"role": 3, "content": "x"}, A(ANSWER)], "unknown_role"),
    ([U("hi"), {"role": "assistant"}], "missing_content"),
    ([U("hi"), {"role": "assistant", "content": None}], "missing_content"),
    ([U("hi"), {"role": "assistant", "content": 17}], "non_text_content"),
    ([{"role": "user", "content": [{"type": "image", "url": "x.png"}]}, A(ANSWER)], "non_text_content"),
    ([U("   "), A(ANSWER)], "empty_content"),
    ([U("hi"), A("")], "empty_content"),
    (["just a string", A(ANSWER)], "message_not_a_dict"),
    ({"role": "user", "content": "hi"}, "not_a_list"),
    ([], "no_messages"),
    ([U("hi"), U("anyone?")], "no_assistant_message"),
    ([{"role": "system", "content": "s"}, A(ANSWER)], "no_user_message"),
    ("[{not json", "invalid_json"),
    ("plain text, not a list", "not_a_list"),
]


def test_split_conversation_takes_the_last_assistant_message():
    context, response = split_conversation([U("a"), A("b"), U("c"), A("d"), U("e")])
    assert [m["content"] for m in context] == ["a", "b", "c"] and response == {"role": "assistant", "content": "d"}
    context, response = split_conversation(json.dumps([{"role": "Human", "content": "q"},
                                                       {"role": "gpt", "content": "r"}]))
    assert context == [U("q")] and response == A("r")


def test_each_hand_made_record_gets_its_status(tokenizer):
    pre = ChatPreprocessor(tokenizer)
    got = [pre(messages, i)[0] for i, (messages, _) in enumerate(HAND_MADE)]
    assert got == [status for _, status in HAND_MADE]


def test_example_layout_prompt_answer_and_eos(tokenizer):
    pre = ChatPreprocessor(tokenizer, max_eos_pad=50)
    messages = [U("hi"), A(ANSWER)]
    status, ex = pre(messages, 7)
    assert status == "ok"
    ids, start, n = ex["input_ids"], ex["response_start"], ex["num_eos"]
    prompt = tokenizer.apply_chat_template([U("hi")], tokenize=False, add_generation_prompt=True)
    assert tokenizer.decode(ids[:start]) == prompt
    assert tokenizer.decode(ids[start:len(ids) - n]) == ANSWER + "<|im_end|>\n"
    assert ids[len(ids) - n:] == [DREAM_EOS_ID] * n
    assert pre(messages, 7)[1] == ex  # the eos count is a function of (seed, index)


def test_eos_padding_counts_lie_in_0_to_50(tokenizer):
    records = [json.loads(line)["messages"] for line in TINY_DATA.read_text().splitlines()]
    pre = ChatPreprocessor(tokenizer, max_eos_pad=50, seed=3)
    counts = []
    for i, messages in enumerate(records):
        status, ex = pre(messages, i)
        assert status == "ok"
        n = ex["num_eos"]
        tail = ex["input_ids"][len(ex["input_ids"]) - n:]
        assert tail == [DREAM_EOS_ID] * n and ex["input_ids"][len(ex["input_ids"]) - n - 1] != DREAM_EOS_ID
        counts.append(n)
    assert min(counts) >= 0 and max(counts) <= 50
    assert min(counts) <= 3 and max(counts) >= 47 and len(set(counts)) > 40  # the whole range is used
    other = [ChatPreprocessor(tokenizer, seed=4)(m, i)[1]["num_eos"] for i, m in enumerate(records[:20])]
    assert other != counts[:20]


def test_preprocess_drops_exactly_the_bad_rows_and_counts_them(tokenizer):
    from datasets import Dataset

    ds = Dataset.from_dict({"messages": [m if isinstance(m, str) else json.dumps(m) for m, _ in HAND_MADE]})
    kept, counts = preprocess(ds, ChatPreprocessor(tokenizer), "messages")
    expected = Counter(status for _, status in HAND_MADE)
    assert {k: v for k, v in counts.items() if k != "truncated"} == dict(expected)
    assert len(kept) == expected["ok"]
    assert sorted(kept["example_id"]) == [i for i, (_, s) in enumerate(HAND_MADE) if s == "ok"]
    assert set(kept.column_names) == {"input_ids", "response_start", "num_eos", "example_id"}


def test_lenient_jsonl_reader_counts_broken_lines(tokenizer, tmp_path):
    path = tmp_path / "chat.jsonl"
    lines = [json.dumps({"messages": [U("hi"), A(ANSWER)]}), "{broken json", json.dumps([1, 2]),
             json.dumps({"conversation": []}), json.dumps({"messages": [U("hi"), {"role": "assistant", "content": 5}]}),
             json.dumps({"messages": "not a list"})]
    path.write_text("\n".join(lines) + "\n")
    ds, column = load_local_chat_files(str(path))
    assert len(ds) == 6
    kept, counts = preprocess(ds, ChatPreprocessor(tokenizer), column)
    assert len(kept) == 1
    assert counts["invalid_json"] == 1 and counts["record_not_an_object"] == 1 and counts["missing_messages"] == 1
    assert counts["non_text_content"] == 1 and counts["not_a_list"] == 1


def test_max_length_truncates_and_counts(tokenizer):
    from datasets import Dataset

    ds = Dataset.from_dict({"messages": [json.dumps([U("hi"), A(ANSWER * 4)])]})
    kept, counts = preprocess(ds, ChatPreprocessor(tokenizer, max_length=30), "messages")
    assert len(kept[0]["input_ids"]) == 30 and counts["truncated"] == 1


def test_collator_pads_right_and_marks_responses():
    features = [{"input_ids": [5, 6, 7, 8], "response_start": 2, "example_id": 3},
                {"input_ids": [5, 6, 7, 8, 9, 10], "response_start": 3, "example_id": 9}]
    batch = DiffusionDataCollator(pad_token_id=0, pad_to_multiple_of=4)(features)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 0, 0, 0, 0], [5, 6, 7, 8, 9, 10, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0, 0]]
    assert batch["response_mask"].int().tolist() == [[0, 0, 1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1, 0, 0]]
    assert batch["example_id"].tolist() == [3, 9] and "labels" not in batch


def test_build_datasets_holds_out_and_samples(tokenizer):
    source = DataSource.parse({"data_files": str(TINY_DATA)})
    train, valid, stats = build_datasets([source], ChatPreprocessor(tokenizer), max_train_samples=100,
                                         max_eval_samples=None, holdout_fraction=0.01, seed=0)
    assert len(train) == 100 and len(valid) == 4  # 1% of 320, rounded up
    again, _, _ = build_datasets([source], ChatPreprocessor(tokenizer), max_train_samples=100, seed=0)
    assert train["input_ids"] == again["input_ids"]
    assert stats["train:" + str(TINY_DATA)]["ok"] == 100


def test_two_sources_share_the_sample_in_proportion(tokenizer, tmp_path):
    small = tmp_path / "small.jsonl"
    small.write_text("".join(json.dumps({"messages": [U(f"q{i}"), A(ANSWER)]}) + "\n" for i in range(80)))
    sources = [DataSource(data_files=str(TINY_DATA)), DataSource(data_files=str(small))]
    train, valid, stats = build_datasets(sources, ChatPreprocessor(tokenizer), max_train_samples=100, seed=0)
    counts = [stats[k]["ok"] for k in stats if k.startswith("train:")]
    assert sorted(counts) == [20, 80] and len(train) == 100
    assert len(set(valid["example_id"])) == len(valid)  # ids stay unique across sources


def test_data_source_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown keys \['splt'\]"):
        DataSource.parse({"path": "x", "splt": "train"})
    with pytest.raises(ValueError, match="needs `path` or `data_files`"):
        DataSource.parse({"name": "all"})


def test_reader_counts_undecodable_and_blank_lines_and_parses_json_string_messages(tokenizer, tmp_path):
    path = tmp_path / "chat.jsonl"
    good = json.dumps({"messages": [U("hi"), A(ANSWER)]}).encode()
    as_string = json.dumps({"messages": json.dumps([U("q"), A(ANSWER)])}).encode()  # messages as JSON text
    bad_byte = b'{"messages": [{"role": "user", "content": "caf\xe9"}]}'  # latin-1 byte: not UTF-8
    path.write_bytes(b"\n".join([good, b"", bad_byte, b"   ", as_string, good]) + b"\n")
    statuses = [r["load_error"] for r in read_chat_file(str(path))]
    assert statuses == [None, "blank_line", "undecodable_line", "blank_line", None, None]
    ds, column = load_local_chat_files(str(path))
    kept, counts = preprocess(ds, ChatPreprocessor(tokenizer), column)
    assert len(kept) == 3 and counts["ok"] == 3
    assert counts["blank_line"] == 2 and counts["undecodable_line"] == 1


def test_json_array_file_and_empty_file(tokenizer, tmp_path):
    array = tmp_path / "chat.json"
    array.write_text(json.dumps([{"messages": [U("hi"), A(ANSWER)]}, {"text": "x"}]))
    assert [r["load_error"] for r in read_chat_file(str(array))] == [None, "missing_messages"]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match=f"data file {empty} is empty"):
        load_local_chat_files(str(empty))
    with pytest.raises(ValueError, match="does not exist"):
        load_local_chat_files(str(tmp_path / "missing.jsonl"))


def test_rows_without_a_response_token_after_the_cut_are_dropped_and_counted(tokenizer):
    from datasets import Dataset

    prompt = tokenizer.apply_chat_template([U("hi")], tokenize=False, add_generation_prompt=True)
    prompt_len = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    ds = Dataset.from_dict({"messages": [json.dumps([U("hi"), A(ANSWER)]), json.dumps([U("hi"), A(ANSWER * 3)])]})
    kept, counts = preprocess(ds, ChatPreprocessor(tokenizer, max_length=prompt_len), "messages")
    assert len(kept) == 0 and counts["no_response_after_truncation"] == 2
    kept, counts = preprocess(ds, ChatPreprocessor(tokenizer, max_length=prompt_len + 1), "messages")
    assert len(kept) == 2 and counts["truncated"] == 2
    assert all(len(ids) == prompt_len + 1 and start == prompt_len
               for ids, start in zip(kept["input_ids"], kept["response_start"]))
    with pytest.raises(ValueError, match="max_length=0"):
        ChatPreprocessor(tokenizer, max_length=0)


@pytest.mark.parametrize("text", ["ends <|im_end|> early", "a <|mask|> inside", "<|endoftext|> eos"])
def test_special_token_strings_in_content_are_dropped_and_counted(tokenizer, text):
    prep = ChatPreprocessor(tokenizer)
    assert prep([U(text), A(ANSWER)], 0) == ("special_token_in_content", None)
    assert prep([U("hi"), A(ANSWER + " " + text)], 0) == ("special_token_in_content", None)
    assert prep([U("hi <im_end> fine"), A(ANSWER)], 0)[0] == "ok"


def test_one_row_and_all_bad_files_fail_naming_the_file(tokenizer, tmp_path):
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"messages": [U("hi"), A(ANSWER)]}) + "\n")
    with pytest.raises(ValueError, match=f"{one} holds a single record"):
        build_datasets([DataSource(data_files=str(one))], ChatPreprocessor(tokenizer))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n\n" + json.dumps({"messages": [U("hi"), A("Hi.")]}) + "\n" + "[1]\n" * 20)
    with pytest.raises(ValueError, match=rf"no usable train example .*{bad}.*'record_not_an_object': \d+"):
        build_datasets([DataSource(data_files=str(bad))], ChatPreprocessor(tokenizer), holdout_fraction=0.1)
