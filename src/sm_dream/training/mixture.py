# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""The data mixture of a recipe: sources (hub datasets or local chat files), hold-out, sampling in
proportion to the source sizes, preprocessing (`sm_dream.training.data`) and the per-reason counts.
A run stops here, before the model loads, when a source is empty or nothing survives the filters."""

from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Optional

from .data import ChatPreprocessor, _as_list, is_local_data_file, load_local_chat_files, preprocess


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
            raise ValueError(f"dataset entry {value!r} must be a name/path or a mapping of "
                             f"{list(cls.__annotations__)}.")
        unknown = sorted(set(value) - set(cls.__annotations__))
        if unknown:
            raise ValueError(f"dataset entry has unknown keys {unknown}; valid keys: {list(cls.__annotations__)}.")
        source = cls(**value)
        if source.path is None and source.data_files is None:
            raise ValueError(f"dataset entry {value!r} needs `path` or `data_files`.")
        return source

    def local_files(self) -> Optional[List[str]]:
        """The local training files (`data_files`, or `path` naming a local file); None for a Hub dataset."""
        if self.data_files:
            return _as_list(self.data_files)
        return [self.path] if is_local_data_file(self.path) else None


def load_source(source: DataSource):
    """(train, validation or None, messages column) for one source."""
    from datasets import load_dataset

    local = source.local_files()
    if local is not None:
        train, column = load_local_chat_files(local, source.messages_column)
        valid = (load_local_chat_files(source.eval_data_files, source.messages_column)[0] if source.eval_data_files
                 else None)
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


def source_name(source: DataSource) -> str:
    return source.path or ", ".join(_as_list(source.data_files))


def _hold_out(source: DataSource, train, fraction: float, seed: int):
    """(train, validation) of a source without a validation split; clear errors for 0 or 1 records."""
    if len(train) == 0:
        raise ValueError(f"data source {source_name(source)} holds no records.")
    if len(train) < 2:
        raise ValueError(f"data source {source_name(source)} holds a single record: holding out a validation "
                         "part needs at least 2 (add records, or give eval_data_files / eval_split).")
    split = train.train_test_split(test_size=fraction, seed=seed)
    return split["train"], split["test"]


def _check_something_left(kind: str, stats: Dict[str, Counter]) -> None:
    """Before the model loads: a split with no usable example fails with the files and the reasons."""
    parts = {name: counts for name, counts in stats.items() if name.startswith(f"{kind}:")}
    if sum(counts.get("ok", 0) for counts in parts.values()) > 0:
        return
    detail = "; ".join(f"{name[len(kind) + 1:]}: {dict((k, v) for k, v in counts.items() if v)}"
                       for name, counts in parts.items())
    raise ValueError(f"no usable {kind} example is left after filtering ({detail}). See the reasons in "
                     "docs/training.md (e.g. max_length shorter than the prompts, wrong messages_column).")


def build_datasets(sources: List[DataSource], preprocessor: ChatPreprocessor, max_train_samples: Optional[int] = None,
                   max_eval_samples: Optional[int] = None, holdout_fraction: float = 0.01, seed: int = 0,
                   num_proc: Optional[int] = None, require_eval: bool = True):
    """The recipe's train and validation sets, and the status counts per part.

    Per source: hold out `holdout_fraction` where it has no validation split; then sample
    `max_train_samples` / `max_eval_samples` records over the sources in proportion to their sizes
    (before filtering, as in the paper: ~270k of 300k survive); then preprocess, concatenate, shuffle.
    Raises ValueError naming the source when one is empty, and with the per-reason counts when no
    training example (or, with `require_eval`, validation example) survives the filters.
    """
    from datasets import concatenate_datasets

    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction={holdout_fraction} must lie in (0, 1) (the paper holds out 0.01).")
    parts = []
    for source in sources:
        train, valid, column = load_source(source)
        if valid is None:
            train, valid = _hold_out(source, train, holdout_fraction, seed)
        parts.append((source, train, valid, column))
    out, stats = {}, {}
    for kind, limit, pick in (("train", max_train_samples, 1), ("eval", max_eval_samples, 2)):
        counts = _proportional_counts([len(p[pick]) for p in parts], limit)
        done, offset = [], 0
        for (source, *splits, column), n in zip(parts, counts):
            raw = splits[pick - 1].shuffle(seed=seed).select(range(n))
            name = f"{kind}:{source_name(source)}"
            kept, stats[name] = preprocess(raw, preprocessor, column, num_proc, name, index_offset=offset)
            done.append(kept)
            offset += n
        if kind == "train" or require_eval:
            _check_something_left(kind, stats)
        out[kind] = concatenate_datasets(done).shuffle(seed=seed) if len(done) > 1 else done[0]
    return out["train"], out["eval"], stats
