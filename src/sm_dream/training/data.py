# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Chat records -> SM finetuning examples (paper Appendix A.2 items 2-4).

For one record with a `messages` list:

    response = the last assistant message;  context = every message before it
    prompt   = chat_template(context, add_generation_prompt=True)          (ends "<|im_start|>assistant\\n")
    answer   = chat_template(context + [response])[len(prompt):]           (content + "<|im_end|>\\n")
    ids      = tok(prompt) + tok(answer) + [eos] * n,   n ~ U{0, ..., max_eos_pad}

The eos tokens are response tokens (masked and scored), so the model learns where to stop. n is
drawn from a generator seeded with (seed, record index): the same data on every run and on resume.

Every record ends with one status: "ok", a filter reason (`FILTER_REASONS`: tool calls, context
longer than `max_context_tokens`, answer shorter than `min_response_tokens`) or a malformed-record
reason (`MALFORMED_REASONS`). Nothing raises on bad data; `preprocess` counts the statuses, logs
them and keeps the "ok" rows.
"""

import json
import logging
import random
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch

logger = logging.getLogger(__name__)

ROLE_ALIASES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant"}
KNOWN_ROLES = ("system", "user", "assistant", "tool")
TOOL_MARKERS = ("<tool_call>", "</tool_call>")
FILTER_REASONS = ("tool_call", "context_too_long", "response_too_short")
MALFORMED_REASONS = (
    "invalid_json", "record_not_an_object", "missing_messages", "not_a_list", "no_messages", "message_not_a_dict", "missing_role", "unknown_role",
    "missing_content", "non_text_content", "empty_content", "no_assistant_message", "no_user_message",
    "template_error",
)


class MalformedRecord(ValueError):
    """A record that cannot become an example; `reason` is one of `MALFORMED_REASONS`."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _normalise_message(message) -> Dict[str, object]:
    if not isinstance(message, dict):
        raise MalformedRecord("message_not_a_dict")
    role = message.get("role")
    if role is None:
        raise MalformedRecord("missing_role")
    if not isinstance(role, str) or ROLE_ALIASES.get(role.lower(), role.lower()) not in KNOWN_ROLES:
        raise MalformedRecord("unknown_role")
    content = message.get("content")
    tool_calls = message.get("tool_calls") or None
    if content is None and tool_calls is None:
        raise MalformedRecord("missing_content")
    if content is not None and not isinstance(content, str):
        raise MalformedRecord("non_text_content")
    if tool_calls is None and not content.strip():
        raise MalformedRecord("empty_content")
    out = {"role": ROLE_ALIASES.get(role.lower(), role.lower()), "content": content or ""}
    if tool_calls is not None:
        out["tool_calls"] = tool_calls
    return out


def split_conversation(messages) -> Tuple[List[dict], dict]:
    """(context, response): the last assistant message and every message before it (later ones dropped).

    `messages` is a list of {"role", "content"} dicts or its JSON text. Roles are lower-cased and
    "human"/"gpt"/"bot"/"model" mapped to user/assistant. Raises `MalformedRecord`.
    """
    if isinstance(messages, str):
        try:
            messages = json.loads(messages)
        except json.JSONDecodeError:
            raise MalformedRecord("invalid_json") from None
    if not isinstance(messages, list):
        raise MalformedRecord("not_a_list")
    if not messages:
        raise MalformedRecord("no_messages")
    normalised = [_normalise_message(m) for m in messages]
    last = max((i for i, m in enumerate(normalised) if m["role"] == "assistant"), default=None)
    if last is None:
        raise MalformedRecord("no_assistant_message")
    context = normalised[:last]
    if not any(m["role"] == "user" for m in context):
        raise MalformedRecord("no_user_message")
    return context, normalised[last]


def has_tool_call(context: List[dict], response: dict, texts: Tuple[str, ...]) -> bool:
    """Tool use anywhere: a tool role, structured tool_calls, or the <tool_call> markers in the text."""
    if any(m["role"] == "tool" or "tool_calls" in m for m in context + [response]):
        return True
    return any(marker in text for text in texts for marker in TOOL_MARKERS)


@dataclass
class ChatPreprocessor:
    """Turns one record into (status, example); see the module docstring for the recipe.

    tokenizer: the model's tokenizer (with its chat template); eos = `tokenizer.eos_token_id`.
    max_context_tokens / min_response_tokens: the filters (2048 / 5 in the paper); the response
        length is that of the assistant message's text, before the template's end tokens and eos.
    max_eos_pad: n ~ U{0..max_eos_pad} eos tokens appended (50). seed: seeds n per record index.
    max_length: optional cap on the whole example; longer answers are cut at the right (counted).
    """

    tokenizer: object
    max_context_tokens: int = 2048
    min_response_tokens: int = 5
    max_eos_pad: int = 50
    seed: int = 0
    max_length: Optional[int] = None

    def render(self, context: List[dict], response: dict) -> Tuple[str, str, str]:
        """(prompt text, answer text, the answer's content part) through the chat template."""
        try:
            prompt = self.tokenizer.apply_chat_template(context, tokenize=False, add_generation_prompt=True)
            full = self.tokenizer.apply_chat_template(context + [response], tokenize=False)
        except Exception as err:  # a template can reject odd message layouts: count, never crash
            logger.debug("chat template failed: %s", err)
            raise MalformedRecord("template_error") from None
        if not full.startswith(prompt):
            raise MalformedRecord("template_error")
        answer = full[len(prompt):]
        content = response["content"] if answer.startswith(response["content"]) else answer
        return prompt, answer, content

    def __call__(self, messages, index: int) -> Tuple[str, Optional[dict]]:
        try:
            context, response = split_conversation(messages)
            prompt, answer, content = self.render(context, response)
        except MalformedRecord as bad:
            return bad.reason, None
        if has_tool_call(context, response, (prompt, answer)):
            return "tool_call", None
        encode = lambda text: self.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        prompt_ids = encode(prompt)
        if len(prompt_ids) > self.max_context_tokens:
            return "context_too_long", None
        content_ids = encode(content)
        if len(content_ids) < self.min_response_tokens:
            return "response_too_short", None
        answer_ids = content_ids + encode(answer[len(content):])
        n_eos = random.Random(f"{self.seed}-{index}").randint(0, self.max_eos_pad)
        ids = prompt_ids + answer_ids + [self.tokenizer.eos_token_id] * n_eos
        truncated = self.max_length is not None and len(ids) > self.max_length
        ids = ids[: self.max_length] if truncated else ids
        return "ok", {"input_ids": ids, "response_start": len(prompt_ids), "num_eos": n_eos,
                      "example_id": index, "truncated": truncated}


def preprocess(dataset, preprocessor: ChatPreprocessor, messages_column: str = "messages",
               num_proc: Optional[int] = None, name: str = "data", index_offset: int = 0):
    """Map a `datasets.Dataset` of chat records to examples; returns (kept dataset, status counts).

    Record i gets example_id = index_offset + i. The counts (kept, each filter, each malformed
    reason, truncated) are logged at INFO, or WARNING when records were malformed.
    """

    def process(batch, indices):
        out = {"input_ids": [], "response_start": [], "num_eos": [], "example_id": [], "truncated": [], "status": []}
        errors = batch.get("load_error") or [None] * len(indices)
        for messages, error, index in zip(batch[messages_column], errors, (index_offset + i for i in indices)):
            status, example = (error, None) if error else preprocessor(messages, index)
            example = example or {"input_ids": [], "response_start": 0, "num_eos": 0, "example_id": index,
                                  "truncated": False}
            for key, value in example.items():
                out[key].append(value)
            out["status"].append(status)
        return out

    mapped = dataset.map(process, batched=True, with_indices=True, remove_columns=dataset.column_names,
                         num_proc=num_proc, desc=f"preprocessing {name}")
    counts = Counter(mapped["status"])
    counts["truncated"] = int(sum(mapped["truncated"]))
    log_counts(name, len(dataset), counts)
    kept = mapped.filter(lambda s: s == "ok", input_columns="status").remove_columns(["status", "truncated"])
    return kept, counts


def log_counts(name: str, total: int, counts: Counter) -> None:
    """One line per dataset: kept, filtered by reason, malformed by reason (WARNING if any malformed)."""
    filtered = {r: counts[r] for r in FILTER_REASONS if counts.get(r)}
    malformed = {r: n for r, n in counts.items() if r not in FILTER_REASONS + ("ok", "truncated") and n}
    message = (f"{name}: {counts.get('ok', 0)} of {total} records kept; filtered {sum(filtered.values())} "
               f"{filtered}; skipped {sum(malformed.values())} malformed {malformed}; "
               f"{counts.get('truncated', 0)} truncated to max_length")
    (logger.warning if malformed else logger.info)(message)


@dataclass
class DiffusionDataCollator:
    """Right-pads examples into a batch: input_ids (pad = eos, attention 0 on padding), attention_mask,
    response_mask (True on answer + eos tokens) and example_id (seeds the validation noise).

    No `labels` key on purpose: with one, `transformers.Trainer` would rescale the loss for gradient
    accumulation by its own token count (see `sm_dream.training.trainer`).
    """

    pad_token_id: int
    pad_to_multiple_of: Optional[int] = None

    def __call__(self, features: List[dict]) -> Dict[str, torch.Tensor]:
        length = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        b = len(features)
        input_ids = torch.full((b, length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros(b, length, dtype=torch.long)
        response_mask = torch.zeros(b, length, dtype=torch.bool)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            input_ids[i, :n] = torch.as_tensor(f["input_ids"])
            attention_mask[i, :n] = 1
            response_mask[i, f["response_start"]:n] = True
        example_id = torch.as_tensor([int(f.get("example_id", i)) for i, f in enumerate(features)])
        return {"input_ids": input_ids, "attention_mask": attention_mask, "response_mask": response_mask,
                "example_id": example_id}


# ----------------------------------------------------------------------------------------------
# Sources: hub datasets (fixed schema) and local chat files (JSON/JSONL read leniently, parquet).

JSON_SUFFIXES = (".json", ".jsonl")


@dataclass
class DataSource:
    """One dataset of a mixture.

    path: a hub dataset name, or a local .json/.jsonl/.parquet file (or pass `data_files`).
    name: the hub configuration (e.g. "all" for HuggingFaceTB/smoltalk).
    split / eval_split: the training split and the validation split (None: hold out a fraction).
    data_files / eval_data_files: local files (one or a list) for the training / validation part.
    messages_column: the column with the chat messages.
    """

    path: Optional[str] = None
    name: Optional[str] = None
    split: str = "train"
    eval_split: Optional[str] = None
    data_files: Optional[object] = None
    eval_data_files: Optional[object] = None
    messages_column: str = "messages"

    @classmethod
    def parse(cls, value) -> "DataSource":
        """From a string (hub name or local file) or a mapping of the fields above."""
        if isinstance(value, str):
            return cls(path=value)
        if not isinstance(value, dict):
            raise ValueError(f"dataset entry {value!r} must be a name/path or a mapping of {list(cls.__annotations__)}.")
        unknown = sorted(set(value) - set(cls.__annotations__))
        if unknown:
            raise ValueError(f"dataset entry has unknown keys {unknown}; valid keys: {list(cls.__annotations__)}.")
        source = cls(**value)
        if source.path is None and source.data_files is None:
            raise ValueError(f"dataset entry {value!r} needs `path` or `data_files`.")
        return source


def _as_list(files) -> List[str]:
    return [files] if isinstance(files, str) else list(files)


def _json_records(paths: List[str], column: str, stamps: List[float]):
    """Yield {"messages_json", "load_error"} per record: bad lines and odd records become counted errors.

    `stamps` (mtime + size per file) is unused here: it is part of the cache fingerprint of
    `Dataset.from_generator`, so an edited file is read again instead of served from the cache.
    """
    for path in paths:
        with open(path, encoding="utf-8") as f:
            if path.endswith(".jsonl"):
                raw = [line for line in f if line.strip()]
            else:
                text = f.read()
                try:
                    loaded = json.loads(text)
                    raw = loaded if isinstance(loaded, list) else [loaded]
                except json.JSONDecodeError:
                    raw = [text]
        for item in raw:
            try:
                record = json.loads(item) if isinstance(item, str) else item
            except json.JSONDecodeError:
                yield {"messages_json": None, "load_error": "invalid_json"}
                continue
            if not isinstance(record, dict):
                yield {"messages_json": None, "load_error": "record_not_an_object"}
            elif column not in record:
                yield {"messages_json": None, "load_error": "missing_messages"}
            else:
                yield {"messages_json": json.dumps(record[column]), "load_error": None}


def load_local_chat_files(files, messages_column: str = "messages"):
    """A `datasets.Dataset` from local chat files; returns (dataset, name of its messages column)."""
    import os

    from datasets import Dataset, load_dataset

    paths = _as_list(files)
    if all(p.endswith(JSON_SUFFIXES) for p in paths):
        stamps = [os.path.getmtime(p) + os.path.getsize(p) for p in paths]  # new contents -> new cache entry
        gen_kwargs = {"paths": paths, "column": messages_column, "stamps": stamps}
        return Dataset.from_generator(_json_records, gen_kwargs=gen_kwargs), "messages_json"
    if all(p.endswith(".parquet") for p in paths):
        return load_dataset("parquet", data_files=paths, split="train"), messages_column
    raise ValueError(f"data_files={paths} must all be .json/.jsonl or all .parquet files.")


def load_source(source: DataSource):
    """(train, validation or None, messages column) for one source."""
    from datasets import load_dataset

    local = source.data_files or (source.path if source.path and source.path.endswith(JSON_SUFFIXES + (".parquet",)) else None)
    if local is not None:
        train, column = load_local_chat_files(local, source.messages_column)
        valid = load_local_chat_files(source.eval_data_files, source.messages_column)[0] if source.eval_data_files else None
        return train, valid, column
    train = load_dataset(source.path, source.name, split=source.split)
    valid = load_dataset(source.path, source.name, split=source.eval_split) if source.eval_split else None
    return train, valid, source.messages_column


def _proportional_counts(sizes: List[int], total: Optional[int]) -> List[int]:
    """Split `total` samples over sources in proportion to their sizes (all of them when None)."""
    if total is None or total >= sum(sizes):
        return list(sizes)
    counts = [total * s // max(sum(sizes), 1) for s in sizes]
    counts[sizes.index(max(sizes))] += total - sum(counts)
    return counts


def build_datasets(sources: List[DataSource], preprocessor: ChatPreprocessor, max_train_samples: Optional[int] = None,
                   max_eval_samples: Optional[int] = None, holdout_fraction: float = 0.01, seed: int = 0,
                   num_proc: Optional[int] = None):
    """The recipe's train and validation sets, and the status counts per part.

    Per source: hold out `holdout_fraction` where it has no validation split; then sample
    `max_train_samples` / `max_eval_samples` records over the sources in proportion to their sizes
    (before filtering, as in the paper: ~270k of 300k survive); then preprocess, concatenate, shuffle.
    """
    from datasets import concatenate_datasets

    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction={holdout_fraction} must lie in (0, 1) (the paper holds out 0.01).")
    parts = []
    for source in sources:
        train, valid, column = load_source(source)
        if valid is None:
            split = train.train_test_split(test_size=holdout_fraction, seed=seed)
            train, valid = split["train"], split["test"]
        parts.append((source, train, valid, column))
    out, stats = {}, {}
    for kind, limit, pick in (("train", max_train_samples, 1), ("eval", max_eval_samples, 2)):
        counts = _proportional_counts([len(p[pick]) for p in parts], limit)
        done, offset = [], 0
        for (source, *splits, column), n in zip(parts, counts):
            raw = splits[pick - 1].shuffle(seed=seed).select(range(n))
            name = f"{kind}:{source.path or _as_list(source.data_files)[0]}"
            kept, stats[name] = preprocess(raw, preprocessor, column, num_proc, name, index_offset=offset)
            done.append(kept)
            offset += n
        out[kind] = concatenate_datasets(done).shuffle(seed=seed) if len(done) > 1 else done[0]
    return out["train"], out["eval"], stats
