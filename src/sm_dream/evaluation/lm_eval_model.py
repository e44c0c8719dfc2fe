# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""`lm_eval --model sm_dream`: soft-masked Dream models in lm-evaluation-harness (0.4.13 and up).

    lm_eval --model sm_dream \\
        --model_args pretrained=Dream-org/Dream-v0-Instruct-7B,nfe_budget=0.25,soft_masking=true \\
        --tasks humaneval_instruct --apply_chat_template --confirm_run_unsafe_code

Model args (named as lm-eval's `hf` model names them): `pretrained` (a local folder or Hub id; a
PEFT adapter folder loads as its base + the adapter), `peft` (adapter folder or id) and
`merge_peft`, `tokenizer`, `revision`, `dtype` (auto: bfloat16 on GPU, float32 on CPU),
`max_length`, `batch_size`, `trust_remote_code`, and the generation settings of
`eval_settings.GenerationSettings` (max_new_tokens, steps or nfe_budget, alg, alg_temp,
temperature, top_p, top_k, soft_masking, sm_top_k, sm_schedule, sm_threshold, seed, and the
pass-through options). Unknown or invalid arguments raise `ValueError` before anything loads.
`batch_size`/`device` in `--model_args` win over the `--batch_size`/`--device` flags (a warning
names both when they differ). A request's generation kwargs (`--gen_kwargs`) override the model
args' sampling per request, with a warning (see `eval_settings`).

Generation: requests with the same stop strings and length are sorted by prompt length, batched
with left padding (lm-eval's `Collator`) and generated with `diffusion_generate`; each continuation
is cut at the first end-of-text / end-of-turn token, then at the task's stop strings (lm-eval's
`postprocess_generated_text`). Each batch is seeded
from `seed` and its prompts, so with `batch_size=1` an answer does not depend on the order of the
documents or on how many processes share them. The run's results record the settings, the SM
parameters, and per task the NFE, the new tokens and the tokens per second.
"""

import hashlib
import json
import logging
import os
import re
import time
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.utils import Collator, handle_stop_sequences, postprocess_generated_text
from tqdm import tqdm

from ..model.generation_utils import resolve_steps
from ..errors import UserError, as_user_error, check_local_model_path, positive_int
from ..hub import offline_when_hub_unreachable
from .eval_settings import GenerationSettings, request_overrides, slow_path_warning
from .lm_eval_distributed import DistributedLM

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's default when a task gives no max_gen_toks
END_OF_TURN_TOKENS = ("<|im_end|>", "<|endoftext|>")
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def parse_batch_size(batch_size) -> int:
    """An integer batch size from lm-eval's `--batch_size` (int or str)."""
    if isinstance(batch_size, str) and batch_size.strip().isdigit():
        batch_size = int(batch_size)
    return positive_int("batch_size", batch_size, hint=" (no 'auto': the memory of diffusion generation "
                        "depends on each task's max_new_tokens)")


def check_model_path(name: str, value) -> None:
    """Fail now, naming the argument, for a path that does not exist and is no Hub id ("org/name")."""
    if value is None or os.path.exists(os.path.expanduser(str(value))):
        return
    check_local_model_path(name, value)  # ./x, /x, ~/x: a missing folder, not a malformed Hub id
    if not HUB_ID.fullmatch(str(value)) or str(value).startswith("."):
        raise ValueError(f"{name}={str(value)!r} is neither an existing path nor a Hub id like 'org/name'.")


def resolve_checkpoint(pretrained, peft) -> Tuple[str, object]:
    """(model, adapter) to load: a local folder holding `adapter_config.json` (a PEFT/training output
    folder) is the adapter of the base model it names; a local folder without `config.json` fails
    now, naming the file."""
    path = os.path.expanduser(str(pretrained))
    if not os.path.isdir(path):
        return str(pretrained), peft
    adapter_config = os.path.join(path, "adapter_config.json")
    if os.path.isfile(adapter_config):
        if peft:
            raise ValueError(f"pretrained={pretrained!r} is a PEFT adapter folder and peft={peft!r} is given too; "
                             "pass pretrained=<base model>,peft=<adapter folder>.")
        from peft import PeftConfig

        base = PeftConfig.from_pretrained(path).base_model_name_or_path
        if not base:
            raise ValueError(f"{adapter_config} names no base_model_name_or_path; "
                             f"pass pretrained=<base model>,peft={pretrained}.")
        check_model_path("the adapter's base_model_name_or_path", base)
        logger.warning("pretrained=%r is a PEFT adapter: loading its base %r with this adapter "
                       "(the same as pretrained=%s,peft=%s).", pretrained, base, base, pretrained)
        return str(base), str(pretrained)
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"pretrained={pretrained!r} has no {os.path.join(path, 'config.json')}: "
                         "give a folder saved with save_pretrained (or an exported model), "
                         "a PEFT adapter folder, or a Hub id.")
    return str(pretrained), peft


def merge_model_args(arg_dict: dict, additional_config: Optional[dict]) -> dict:
    """`--model_args` merged with lm-eval's `--batch_size`/`--max_batch_size`/`--device`: the model
    args win (lm-eval passes its defaults even when the flags are not given)."""
    merged = dict(arg_dict)
    for key, value in (additional_config or {}).items():
        if value is None:
            continue
        if key in merged and str(merged[key]) != str(value):
            logger.warning("%s=%r in --model_args wins over --%s %r.", key, merged[key], key, value)
            continue
        merged.setdefault(key, value)
    return merged


def first_stop_lengths(new_ids: torch.Tensor, stop_ids: torch.Tensor) -> torch.Tensor:
    """(b,) number of tokens before the first stop id of each row of `new_ids` (b, N); N if none."""
    positions = torch.arange(new_ids.shape[1]).expand_as(new_ids)  # (b, N)
    at_stop = torch.isin(new_ids, stop_ids)
    return torch.where(at_stop, positions, new_ids.shape[1]).min(dim=1).values


def batch_seed(seed: int, contexts) -> int:
    """A 63-bit seed from the run's seed and the batch's prompts."""
    digest = hashlib.sha256("\x00".join([str(seed), *contexts]).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@register_model("sm_dream")
class SMDreamLM(DistributedLM):
    """lm-eval model for soft-masked Dream checkpoints (see the module docstring)."""

    def __init__(self, pretrained=None, peft=None, merge_peft=False, tokenizer=None, revision=None, dtype="auto",
                 max_length=None, trust_remote_code=False, batch_size=1, max_batch_size=None, device="cuda", **kwargs):
        if not pretrained:
            raise ValueError("pretrained is required: "
                             "a local model folder or a Hub id (e.g. Dream-org/Dream-v0-Instruct-7B).")
        known = set(GenerationSettings.__dataclass_fields__) - {"extra"}
        with as_user_error():  # --model_args checks, before anything loads
            self.settings = GenerationSettings(**{k: v for k, v in kwargs.items() if k in known},
                                               extra={k: v for k, v in kwargs.items() if k not in known})
            self.batch_size = parse_batch_size(batch_size)
            self.max_length = positive_int("max_length", max_length, allow_none=True, whole_floats=True)
            if dtype not in ("auto", *DTYPES):
                raise ValueError(f"dtype={dtype!r} is unknown; choose one of {['auto', *DTYPES]}.")
            for name, value in (("pretrained", pretrained), ("peft", peft), ("tokenizer", tokenizer)):
                check_model_path(name, value)
            pretrained, peft = resolve_checkpoint(pretrained, peft)
        if (tokenizer is None and peft
                and os.path.isfile(os.path.join(os.path.expanduser(str(peft)), "tokenizer_config.json"))):
            tokenizer = peft  # a training output folder carries the run's tokenizer
        if any(name and not os.path.exists(os.path.expanduser(str(name))) for name in (pretrained, peft, tokenizer)):
            offline_when_hub_unreachable()  # a Hub id: fail in seconds when the Hub does not answer
        super().__init__(device)
        self.pretrained, self.peft = str(pretrained), peft
        torch_dtype = DTYPES.get(dtype) or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        if self.device.type == "cpu" and torch_dtype != torch.float32:
            logger.warning("dtype=%s on CPU: PyTorch emulates half-precision matmuls there, several times slower "
                           "than float32; pass dtype=float32 (or dtype=auto) for a CPU run.", dtype)
        if slow_path_warning(self.settings):
            logger.warning(slow_path_warning(self.settings))
        try:
            self.model = self._load_model(pretrained, peft, bool(merge_peft), revision, torch_dtype)
        except OSError as error:
            raise ValueError(f"pretrained={pretrained!r} / peft={peft!r} could not be loaded: {error}") from error
        self.tokenizer = self._load_tokenizer(tokenizer or pretrained, revision, trust_remote_code)
        self.stats: Dict[str, Dict[str, float]] = defaultdict(lambda: defaultdict(float))

    @classmethod
    def create_from_arg_obj(cls, arg_dict, additional_config=None):
        """lm-eval's constructor path: model args merged with the CLI flags (see `merge_model_args`)."""
        return cls(**merge_model_args(arg_dict, additional_config))

    @classmethod
    def create_from_arg_string(cls, arg_string, additional_config=None):
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    # ---------------------------------------------------------------- loading
    def _load_model(self, pretrained, peft, merge_peft, revision, torch_dtype):
        from ..model.modeling_sm_dream import SoftMaskDreamForDiffusionLM

        model = SoftMaskDreamForDiffusionLM.from_pretrained(pretrained, revision=revision, dtype=torch_dtype)
        if peft:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, peft)
            model = model.merge_and_unload() if merge_peft else model
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        if self.settings.sm_top_k is not None:
            if self.settings.sm_top_k > base.config.vocab_size:
                raise ValueError(f"sm_top_k={self.settings.sm_top_k} exceeds the vocabulary "
                                 f"({base.config.vocab_size}).")
            base.config.sm_top_k = self.settings.sm_top_k
        self.base_model = base
        return model.to(self.device).eval()

    def _load_tokenizer(self, name, revision, trust_remote_code):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(name), revision=revision, trust_remote_code=trust_remote_code)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token_id = self.base_model.config.pad_token_id
        return tokenizer

    # ---------------------------------------------------------------- chat template
    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def chat_template(self, chat_template=False):
        return getattr(self.tokenizer, "chat_template", None) if chat_template else None

    def apply_chat_template(self, chat_history, add_generation_prompt=True) -> str:
        """The chat as text. A final assistant message (a task's `gen_prefix`) is left open and
        continued verbatim rather than closed."""
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt,
        )

    # ---------------------------------------------------------------- requests
    def loglikelihood(self, requests):
        raise NotImplementedError("sm_dream evaluates generation tasks (generate_until) only, not loglikelihood.")

    def loglikelihood_rolling(self, requests):
        raise NotImplementedError("sm_dream evaluates generation tasks (generate_until) only, not perplexity.")

    def generate_until(self, requests, disable_tqdm: bool = False) -> List[str]:
        """Continuations of every request, in request order (see the module docstring)."""
        batches = self._plan_batches(requests)
        answers: List[str] = []
        progress = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc="sm_dream generate")
        for batch in batches.get_batched(n=self.batch_size):
            _, until, max_new_tokens, settings = batch[0]
            contexts = [r.args[0] for r, *_ in batch]
            texts = self._generate_batch(contexts, max_new_tokens, [r.task_name for r, *_ in batch], settings)
            for (request, *_), text in zip(batch, texts):
                answers.append(postprocess_generated_text(text, until, think_end_token=None))
                self.cache_hook.add_partial("generate_until", request.args, answers[-1])
            progress.update(len(batch))
        progress.close()
        self._gather_stats()
        return batches.get_original(answers)

    def _task_length(self, gen_kwargs: dict) -> int:
        if self.settings.max_new_tokens is not None:
            return self.settings.max_new_tokens
        return int(gen_kwargs.get("max_gen_toks") or gen_kwargs.get("max_new_tokens") or DEFAULT_MAX_GEN_TOKS)

    def _request_settings(self, gen_kwargs: dict, cache: dict) -> GenerationSettings:
        """The settings of one request: the model args with its gen_kwargs overrides (validated at the
        task's length)."""
        overrides = request_overrides(gen_kwargs)
        key = json.dumps([overrides, self._task_length(gen_kwargs)], sort_keys=True, default=str)
        if key not in cache:
            cache[key] = self.settings.with_overrides(overrides, self._task_length(gen_kwargs))
            if overrides and slow_path_warning(cache[key]):
                logger.warning(slow_path_warning(cache[key]))
            if overrides:
                logger.warning("gen_kwargs %s override the model args: generating with %s.", overrides,
                               {k: getattr(cache[key], k, cache[key].extra.get(k)) for k in overrides})
        return cache[key]

    def _plan_batches(self, requests) -> Collator:
        """lm-eval's Collator over (request, stop strings, length, settings): batches of the same stop
        strings, length and settings, longest prompts first. Every request's settings are checked before
        anything is generated."""
        planned, settings_by_key = [], {}
        for request in requests:
            gen_kwargs = dict(request.args[1])
            length = self._task_length(gen_kwargs)
            try:
                until = handle_stop_sequences(gen_kwargs.get("until"), eos=None)  # end of text: cut by token id
                settings = self._request_settings(gen_kwargs, settings_by_key)
                config = settings.generation_config(length)
                config.validate()
                resolve_steps(config, length)  # e.g. steps=512 for a task of 256 tokens with a count-based alg
            except ValueError as err:  # the settings are the user's: name the task and the length it uses
                raise UserError(f"task {request.task_name} (max_gen_toks={length}): {err}") from err
            planned.append((request, until, length, settings))
        return Collator(planned, sort_fn=lambda item: -len(item[0].args[0]), group_by="gen_kwargs",
                        group_fn=lambda item: {"until": item[1], "length": item[2], "settings": id(item[3])})

    # ---------------------------------------------------------------- generation
    def _encode(self, contexts: List[str], max_new_tokens: int):
        """Left-padded ids and mask; prompts longer than max_length - max_new_tokens keep their end."""
        encoded = self.tokenizer(contexts, add_special_tokens=False, padding=True, return_tensors="pt")
        ids, mask = encoded["input_ids"], encoded["attention_mask"]
        limit = (self.max_length or self.base_model.config.max_position_embeddings) - max_new_tokens
        if limit < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt "
                             f"in max_length={self.max_length}.")
        if ids.shape[1] > limit:
            logger.warning("Prompts of %d tokens are cut to their last %d tokens.", ids.shape[1], limit)
            ids, mask = ids[:, -limit:], mask[:, -limit:]
        return ids.to(self.device), mask.to(self.device)

    def _stop_ids(self) -> torch.Tensor:
        ids = {self.base_model.config.eos_token_id, self.tokenizer.eos_token_id}
        ids |= {self.tokenizer.convert_tokens_to_ids(t) for t in END_OF_TURN_TOKENS if t in self.tokenizer.get_vocab()}
        return torch.tensor(sorted(i for i in ids if isinstance(i, int)))

    def _generate_batch(self, contexts: List[str], max_new_tokens: int, task_names: List[str],
                        settings: Optional[GenerationSettings] = None) -> List[str]:
        """Generate for one batch, record its statistics, return the texts cut at the first stop token."""
        settings = settings or self.settings
        ids, mask = self._encode(contexts, max_new_tokens)
        generator = torch.Generator(device=self.device).manual_seed(batch_seed(self.settings.seed, contexts))
        vocab = min(len(self.tokenizer), self.base_model.config.vocab_size)
        started = time.perf_counter()
        output = self.model.diffusion_generate(
            ids, attention_mask=mask, generator=generator, return_dict_in_generate=True,
            tokenizer_vocab_size=vocab, **settings.generate_kwargs(max_new_tokens),
        )
        seconds = (time.perf_counter() - started) / len(contexts)
        new = output.sequences[:, ids.shape[1] :].cpu()  # (b, N)
        lengths = first_stop_lengths(new, self._stop_ids()).tolist()
        texts = [self.tokenizer.decode(row[:n], skip_special_tokens=True) for row, n in zip(new, lengths)]
        for name, n, text in zip(task_names, lengths, texts):
            self._record(name or "unknown", samples=1, nfe=output.nfe, new_tokens=n, empty=int(not text.strip()),
                         max_new_tokens=max_new_tokens, seconds=seconds)
        return texts

    # ---------------------------------------------------------------- statistics
    def _record(self, task: str, **values) -> None:
        for key, value in values.items():
            self.stats[task][key] += value

    def _gather_stats(self) -> None:
        """Sum every rank's statistics (all ranks call generate_until once per run)."""
        merged: Dict[str, Dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for rank_stats in self.gather_object({k: dict(v) for k, v in self.stats.items()}):
            for task, values in rank_stats.items():
                for key, value in values.items():
                    merged[task][key] += value
        self.stats = merged

    def soft_mask_parameters(self) -> Dict[str, float]:
        """The mapped SM parameters (w_s, w_a, w_b) in use (an adapter's trained copy under PEFT)."""
        from ..training.adapters import sm_values

        return {k: float(v) for k, v in sm_values(self.base_model).items()}

    def get_model_info(self) -> dict:
        """Added to the results file's `config`: settings, SM parameters and per-task NFE and speed."""
        per_task = {}
        for task, s in sorted(self.stats.items()):
            n = max(s["samples"], 1)
            per_task[task] = {
                "samples": int(s["samples"]),
                "nfe_per_sample": s["nfe"] / n,
                "nfe_budget": s["nfe"] / max(s["max_new_tokens"], 1),
                "max_new_tokens": s["max_new_tokens"] / n,
                "new_tokens_per_sample": s["new_tokens"] / n,
                "empty_answers": int(s["empty"]),
                "tokens_per_second": s["new_tokens"] / s["seconds"] if s["seconds"] else None,
                "seconds": s["seconds"],
            }
        config = self.base_model.config
        enabled = config.sm_enabled if self.settings.soft_masking is None else self.settings.soft_masking
        soft_masking = {"enabled": enabled, "top_k": config.sm_top_k, "full_vocab": config.sm_full_vocab,
                        "schedule": self.settings.sm_schedule or config.sm_schedule,
                        "threshold": (self.settings.sm_threshold if self.settings.sm_threshold is not None
                                      else config.sm_threshold),
                        **self.soft_mask_parameters()}
        return {"sm_dream": {"pretrained": self.pretrained, "peft": self.peft, "generation": self.settings.to_dict(),
                             "soft_masking": soft_masking, "tasks": per_task, "world_size": self.world_size}}
