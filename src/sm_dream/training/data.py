# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Chat records -> SM finetuning examples (paper Appendix A.2 items 2-4).

For one record with a `messages` list:

    response = the last assistant message;  context = every message before it
    prompt   = chat_template(context, add_generation_prompt=True)          (ends "<|im_start|>assistant\\n")
    answer   = chat_template(context + [response])[len(prompt):]           (content + "<|im_end|>\\n")
    ids      = tok(prompt) + tok(answer) + [eos] * n,   n ~ U{0, ..., max_eos_pad}

The eos tokens are response tokens (masked and scored), so the model learns where to stop. n is
drawn from a generator seeded with (seed, record index): the same data on every run and on resume.

Every record ends with one status: "ok", a filter reason (`FILTER_REASONS`: tool calls, a special
token string typed inside a message, context longer than `max_context_tokens`, answer shorter than
`min_response_tokens`, no response token left after the `max_length` cut) or a malformed-record
reason (`MALFORMED_REASONS`, including undecodable and blank lines of local files). Nothing raises
on bad data; `preprocess` counts the statuses, logs them and keeps the "ok" rows.

Special-token strings inside message text (e.g. a literal "<|im_end|>" or "<|mask|>") would be
tokenized as the control tokens themselves and teach the model to end a turn or emit [MASK] inside
an answer, so such records are dropped and counted (`special_token_in_content`), not escaped.
"""

import codecs
import json
import logging
import random
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch

from ..errors import positive_int

logger = logging.getLogger(__name__)

ROLE_ALIASES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant"}
KNOWN_ROLES = ("system", "user", "assistant", "tool")
TOOL_MARKERS = ("<tool_call>", "</tool_call>")
FILTER_REASONS = ("tool_call", "special_token_in_content", "context_too_long", "response_too_short",
                  "no_response_after_truncation")
MALFORMED_REASONS = (
    "undecodable_line", "blank_line", "invalid_json", "record_not_an_object", "missing_messages", "not_a_list",
    "no_messages", "message_not_a_dict", "missing_role", "unknown_role", "missing_content", "non_text_content",
    "empty_content", "no_assistant_message", "no_user_message",
    "template_error", "lone_surrogate", "too_deeply_nested", "number_too_large",
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
    if content is not None and not _encodable(content):
        raise MalformedRecord("lone_surrogate")
    out = {"role": ROLE_ALIASES.get(role.lower(), role.lower()), "content": content or ""}
    if tool_calls is not None:
        out["tool_calls"] = tool_calls
    return out


def _encodable(text: str) -> bool:
    """False for text holding a lone surrogate (e.g. JSON "\\ud800"): no tokenizer or Arrow column takes it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parse_json(text: str):
    """json.loads with every failure a `MalformedRecord`: broken JSON, nesting deeper than Python's
    recursion limit, an integer longer than Python's int-string limit (4300 digits)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise MalformedRecord("invalid_json") from None
    except RecursionError:
        raise MalformedRecord("too_deeply_nested") from None
    except ValueError:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise MalformedRecord("number_too_large") from None


def split_conversation(messages) -> Tuple[List[dict], dict]:
    """(context, response): the last assistant message and every message before it (later ones dropped).

    `messages` is a list of {"role", "content"} dicts or its JSON text. Roles are lower-cased and
    "human"/"gpt"/"bot"/"model" mapped to user/assistant. Raises `MalformedRecord`.
    """
    if isinstance(messages, str):
        try:
            messages = _parse_json(messages)
        except MalformedRecord as bad:  # broken JSON of a list, or plain text where the list should be
            if bad.reason == "invalid_json" and not messages.lstrip().startswith("["):
                raise MalformedRecord("not_a_list") from None
            raise
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


def special_token_strings(tokenizer) -> Tuple[str, ...]:
    """The texts that tokenize to control tokens: the special and added special tokens (not e.g.
    Dream's <tool_call> markers, which are plain added tokens handled by the tool-call filter)."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    strings = set(getattr(tokenizer, "all_special_tokens", []) or [])
    strings.update(str(t) for t in added.values() if getattr(t, "special", False))
    return tuple(sorted(s for s in strings if s))


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

    def __post_init__(self):
        positive_int("max_length", self.max_length, allow_none=True, hint=" (tokens; None: no cap)")
        self._special = special_token_strings(self.tokenizer)

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
        except RecursionError:  # e.g. tool_calls nested beyond the recursion limit (Hub or parquet rows)
            return "too_deeply_nested", None
        if has_tool_call(context, response, (prompt, answer)):
            return "tool_call", None
        if any(token in m["content"] for m in context + [response] for token in self._special):
            return "special_token_in_content", None
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
        if truncated and self.max_length <= len(prompt_ids):
            return "no_response_after_truncation", None
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
# Local chat files: JSON/JSONL read leniently (bad lines are counted records), parquet.

JSON_SUFFIXES = (".json", ".jsonl")
LOCAL_DATA_SUFFIXES = JSON_SUFFIXES + (".parquet",)


def is_local_data_file(value) -> bool:
    """Whether a data path/name means a local chat file (never a Hub dataset): the one rule used by
    recipe path resolution, validation and loading."""
    return isinstance(value, str) and value.endswith(LOCAL_DATA_SUFFIXES)


def _as_list(files) -> List[str]:
    return [files] if isinstance(files, str) else list(files)


def _raw_items(data: bytes, path: str):
    """The file's records before JSON parsing: a JSON document's list, else its lines (bytes or str).
    A UTF-8 byte-order mark at the start of the file is dropped (it would spoil the first record)."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    if not path.endswith(".jsonl"):
        try:
            loaded = json.loads(data.decode("utf-8"))
            return loaded if isinstance(loaded, list) else [loaded]
        except (UnicodeDecodeError, ValueError, RecursionError):
            pass  # a .json file holding JSON lines, or a damaged one: read it line by line
    return data.splitlines()


def read_chat_file(path: str, messages_column: str = "messages"):
    """Yield one {"messages_json": str | None, "load_error": reason | None} per record of a local
    .json/.jsonl chat file; never raises on bad content.

    A .jsonl file (or a .json file that is not one JSON document) is read line by line: a line that
    is not UTF-8 is "undecodable_line", an empty one "blank_line", unparsable JSON "invalid_json",
    "too_deeply_nested" or "number_too_large"; then "record_not_an_object" / "missing_messages" /
    "lone_surrogate". A UTF-8 byte-order mark at the start is dropped. Messages stored as a JSON string are passed
    through as that string (parsed with the record later). Raises ValueError naming the file when it
    is missing or holds no records at all.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise ValueError(f"cannot read data file {path}: {err.strerror or err}.") from None
    if not data:
        raise ValueError(f"data file {path} is empty: it holds no records.")
    for item in _raw_items(data, path):
        yield _record_status(item, messages_column)


def _record_status(item, column: str) -> dict:
    if isinstance(item, bytes):
        try:
            item = item.decode("utf-8")
        except UnicodeDecodeError:
            return {"messages_json": None, "load_error": "undecodable_line"}
        if not item.strip():
            return {"messages_json": None, "load_error": "blank_line"}
        try:
            item = _parse_json(item)
        except MalformedRecord as bad:
            return {"messages_json": None, "load_error": bad.reason}
    if not isinstance(item, dict):
        return {"messages_json": None, "load_error": "record_not_an_object"}
    if column not in item:
        return {"messages_json": None, "load_error": "missing_messages"}
    value = item[column]
    try:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    except RecursionError:
        return {"messages_json": None, "load_error": "too_deeply_nested"}
    except ValueError:
        return {"messages_json": None, "load_error": "number_too_large"}
    if not _encodable(text):  # an Arrow column cannot hold it
        return {"messages_json": None, "load_error": "lone_surrogate"}
    return {"messages_json": text, "load_error": None}


def _json_records(paths: List[str], column: str, stamps: List[float]):
    """`read_chat_file` over several files, for `Dataset.from_generator`.

    `stamps` (mtime + size per file) is unused here: it is part of the cache fingerprint of
    `Dataset.from_generator`, so an edited file is read again instead of served from the cache.
    """
    for path in paths:
        yield from read_chat_file(path, column)


def load_local_chat_files(files, messages_column: str = "messages"):
    """A `datasets.Dataset` from local chat files; returns (dataset, name of its messages column)."""
    import os

    from datasets import Dataset, load_dataset

    paths = check_local_files(files)
    if all(p.endswith(JSON_SUFFIXES) for p in paths):
        stamps = [os.path.getmtime(p) + os.path.getsize(p) for p in paths]  # new contents -> new cache entry
        gen_kwargs = {"paths": paths, "column": messages_column, "stamps": stamps}
        return Dataset.from_generator(_json_records, gen_kwargs=gen_kwargs), "messages_json"
    if all(p.endswith(".parquet") for p in paths):
        return load_dataset("parquet", data_files=paths, split="train"), messages_column
    raise ValueError(f"data_files={paths} must all be .json/.jsonl or all .parquet files.")


def check_local_files(files) -> List[str]:
    """The paths of `files` (one or a list); ValueError naming the first missing, empty, non-regular
    or wrongly-suffixed file. Cheap: run it before anything loads."""
    import os

    paths = _as_list(files)
    for path in paths:
        if not is_local_data_file(path):
            raise ValueError(f"data file {path} must be a .json, .jsonl or .parquet file.")
        if os.path.isdir(path):
            raise ValueError(f"data file {path} is a directory; give the data files inside it.")
        if not os.path.exists(path):
            raise ValueError(f"data file {path} does not exist (relative paths in a recipe YAML are "
                             "resolved against the YAML's folder).")
        if not os.path.isfile(path):
            raise ValueError(f"data file {path} is not a regular file (a FIFO, socket or device cannot be "
                             "read twice, and training reads its data more than once).")
        if os.path.getsize(path) == 0:
            raise ValueError(f"data file {path} is empty: it holds no records.")
    return paths
