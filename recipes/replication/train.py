# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""A small, CPU-sized replication of the paper's language-modelling experiment (Section 4.1).

    python recipes/replicate_small.py [--quick] [--output_dir outputs/replicate_small]

Per corpus (`--corpora stdlib structured`):
1. Data (`replication.data`): the Python standard library's sources, or a synthetic corpus of
   code-like lines whose continuations can be checked exactly; a BPE trained on the fly.
2. Pretraining: a tiny Dream-architecture model from scratch with binary masking.
3. Continuation, per seed, two arms from the same checkpoint for the same steps, with the same data
   order and the same noise draws: `binary` (p_sm = 0) and `sm` (p_sm = 0.8, k = 3); with claims C5 / C6
   the task corpus's first `ablation_seeds` seeds add SM arms with another p_sm or k (`arm_settings`). Both train with
   `sm_dream.training.losses.sm_two_pass_loss` (the one training step), t ~ U(t_low, t_high) per sample, and
   AdamW with two groups (backbone lr, SM lr, no weight decay on either).
4. Evaluation (`replication.evaluate`): held-out diffusion NLL per window (two passes for SM, as the
   paper measures it) averaged over the last `final_evals` evaluations, w_s / w_a / w_b over steps,
   and generation at NFE budgets 1/4, 1/2, 1: NLL of sampled continuations (stdlib) or exact-match
   accuracy of greedy continuations with `origin` and `entropy` unmasking (structured, tasks); with
   claims C7 / C8 a decoding sweep (blocks, KV cache, threshold) and the SM arm under two SM schedules.
5. Statistics and report (`replication.stats`, `replication.report`): paired per-window / per-prompt
   differences with bootstrap intervals over prompts and seeds; results.json, report.md, report.png.

Every stage is a job for a pool of `workers` processes (pretraining of each corpus, each arm of each
seed, each seed's generation), so the two cores stay busy; the results do not depend on `workers`.
"""

import argparse
import contextlib
import copy
import dataclasses
import functools
import json
import math
import multiprocessing
import os
import platform
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from sm_dream import SoftMaskDreamForDiffusionLM
from sm_dream.training.adapters import optimizer_groups
from sm_dream.training.losses import sm_two_pass_loss
from sm_dream.training.noise import sample_noise
from sm_dream.tiny import tiny_config

from .data import (
    document_text,
    special_ids,
    split_files,
    read_texts,
    stdlib_files,
    structured_documents,
    structured_prompts,
    task_documents,
    task_symbols_are_tokens,
    token_windows,
    train_tokenizer,
    window_order,
)
from .evaluate import evaluate_decoding_sweep, evaluate_generation, evaluate_schedules, evaluate_task, heldout_nll_rows
from .report import write_report

CORPORA = ("stdlib", "structured", "tasks")
# claim -> the corpora whose runs test it (C5-C8 add arms or decoding runs to the task corpus)
CLAIM_CORPORA = {"C1": ("stdlib", "structured"), "C2": ("stdlib", "structured"), "C3": ("stdlib",),
                 "C4": ("tasks",), "C5": ("tasks",), "C6": ("tasks",), "C7": ("tasks",), "C8": ("tasks",)}


@dataclass
class ReplicationArgs:
    """Every setting of the run; the defaults are the full mode (`QUICK_OVERRIDES` gives --quick)."""

    corpora: List[str] = field(default_factory=lambda: list(CORPORA))
    # ---- stdlib corpus and tokenizer
    corpus_dir: Optional[str] = None  # None = sysconfig stdlib
    max_files: Optional[int] = None  # None = all; else the first max_files train (and max_files/10 held-out) files
    heldout_every: int = 10  # a file is held out when crc32(name) % heldout_every == 0
    vocab_size: int = 2048  # BPE ids + <|endoftext|> + <|mask|> (last)
    seq_len: int = 128
    # ---- structured corpus (synthetic; train documents from seed 1, held-out ones from seed 2)
    structured_train_docs: int = 1600
    structured_heldout_docs: int = 64
    structured_lines: int = 24  # lines per document
    # ---- task corpus (synthetic lines with one checkable answer each; train from seed 1, held-out from seed 2)
    task_families: List[str] = field(default_factory=lambda: ["sort"])  # of replication.data.TASK_FAMILIES
    task_length: int = 6  # answer symbols (= tokens) per line; the whole answer is checked
    task_train_docs: int = 800
    task_heldout_docs: int = 64
    task_lines: int = 16  # lines per document
    # the task corpus's own data, model and training sizes (the other corpora use the fields below)
    task_vocab_size: int = 300
    task_seq_len: int = 48
    task_hidden_size: int = 96
    task_num_hidden_layers: int = 3
    task_batch_size: int = 16
    task_pretrain_steps: int = 8000  # 2000 / 4000 left the 6-symbol sort under 40% at NFE 1 (docs/replication.md)
    task_continue_steps: int = 400
    task_cooldown_steps: int = 100
    task_lr_backbone: float = 2e-3
    task_eval_every: int = 200
    task_eval_windows: int = 32
    # ---- claims of the paper to test (docs/replication.md); they select the corpora: C1-C3 stdlib and
    # structured, C4-C8 tasks; C5 / C6 add trained ablation arms, C7 / C8 decoding runs on the task models
    claims: List[str] = field(default_factory=list)  # empty = the corpora in `corpora` (no ablations)
    # C5 / C6: extra SM arms of the task corpus (p_sm values besides p_sm; top-k values besides sm_top_k),
    # trained for the first `ablation_seeds` seeds only (they cost one arm each per seed)
    ablation_p_sm: List[float] = field(default_factory=lambda: [0.5, 1.0])
    ablation_top_k: List[int] = field(default_factory=lambda: [1, 5])
    ablation_seeds: int = 3
    equivalence_nll: float = 0.01  # C6 "k 5 about k 3": |difference| within this (nats/token) ...
    equivalence_accuracy: float = 0.05  # ... or this (exact-match share)
    # C7: decoding sweep of the task models (binary and SM arm): block lengths x KV cache x threshold
    sweep_block_lengths: List[int] = field(default_factory=lambda: [2, 3, 6])
    sweep_thresholds: List[float] = field(default_factory=lambda: [0.9])  # confidence threshold (Fast-dLLM)
    sweep_nfe_budget: float = 0.5  # the fixed-step runs of the sweep (threshold off)
    sweep_alg: str = "entropy"
    # C8: stepwise SM schedules (paper B.4.1): SM in the first 80% of steps vs in the last 80%
    schedule_thresholds: List[float] = field(default_factory=lambda: [0.2, 0.8])  # sm_then_binary, binary_then_sm
    # ---- model (Dream architecture)
    hidden_size: int = 64
    intermediate_size: int = 192
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    # ---- training
    batch_size: int = 8
    pretrain_steps: int = 1500
    continue_steps: int = 1000  # long enough for w_s to settle at lr_sm 5e-2 (docs/replication.md)
    lr_backbone: float = 1e-3
    lr_sm: float = 5e-2  # 5x the paper's 1e-2: 1000 steps instead of 100k (paper A.2; docs/replication.md)
    warmup_steps: int = 50  # linear warmup, then constant (as in the paper's continuation)
    cooldown_steps: int = 300  # continuation: linear decay to 0 over its last 300 steps (docs/replication.md)
    max_grad_norm: float = 1.0
    t_low: float = 0.05
    t_high: float = 1.0
    p_sm: float = 0.8
    sm_top_k: int = 3
    pretrain_seed: int = 0
    seeds: List[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    # ---- evaluation
    log_every: int = 20
    eval_every: int = 100
    final_evals: int = 3  # the final held-out NLL is the mean of the last final_evals evaluations
    eval_windows: int = 128  # held-out windows, each scored eval_repeats times with seeded noise
    eval_repeats: int = 2
    eval_batch_size: int = 64
    gen_prompts: int = 128
    gen_new_tokens: int = 32  # stdlib: the prompt is the window's first seq_len - gen_new_tokens tokens
    nfe_budgets: List[float] = field(default_factory=lambda: [0.25, 0.5, 1.0])
    gen_alg: str = "origin"  # MDLM's standard random unmasking, as in the paper's Table 1
    gen_temperature: float = 1.0
    gen_top_p: float = 0.9  # nucleus sampling, as the paper's MAUVE setup
    task_new_tokens: int = 8  # structured: the checked continuation's length
    task_algs: List[str] = field(default_factory=lambda: ["origin", "entropy"])  # greedy tokens
    bootstrap_resamples: int = 2000
    workers: int = 2  # processes running the jobs (1 = all in this process)
    # torch threads per process; 1 is fastest on a shared 2-core machine (2 threads wait on each other under load)
    threads: int = 1

    def validate(self) -> None:
        """Raise ValueError naming the setting that cannot work."""
        unknown = [c for c in self.claims if c not in CLAIM_CORPORA]
        if unknown:
            raise ValueError(f"claims={self.claims}: unknown {unknown}; choose from {list(CLAIM_CORPORA)}.")
        if not self.seeds:
            raise ValueError("seeds is empty; pass at least one continuation seed, e.g. --seeds 1 2 3.")
        if not self.corpora or any(c not in CORPORA for c in self.corpora):
            raise ValueError(f"corpora={self.corpora} must be a non-empty subset of {list(CORPORA)}.")
        for name in ("gen_new_tokens", "task_new_tokens"):
            if not 0 < getattr(self, name) < self.seq_len:
                raise ValueError(f"{name}={getattr(self, name)} must lie in (0, seq_len={self.seq_len}).")
        if any(b <= 0 or b > 1 for b in self.nfe_budgets):
            raise ValueError(f"nfe_budgets={self.nfe_budgets} must lie in (0, 1], e.g. 0.25 0.5 1.")
        if self.workers < 1 or self.threads < 1:
            raise ValueError(f"workers={self.workers} and threads={self.threads} must be >= 1.")
        if not 0 <= self.cooldown_steps <= self.continue_steps:
            raise ValueError(f"cooldown_steps={self.cooldown_steps} must lie in "
                             f"[0, continue_steps={self.continue_steps}].")
        if any(not 0 <= p <= 1 for p in self.ablation_p_sm) or any(k < 1 for k in self.ablation_top_k):
            raise ValueError(f"ablation_p_sm={self.ablation_p_sm} must lie in [0, 1] and "
                             f"ablation_top_k={self.ablation_top_k} be >= 1.")
        if any(b < 1 for b in self.sweep_block_lengths) or not 0 < self.sweep_nfe_budget <= 1:
            raise ValueError(f"sweep_block_lengths={self.sweep_block_lengths} must be >= 1 and "
                             f"sweep_nfe_budget={self.sweep_nfe_budget} lie in (0, 1].")
        if self.eval_every < 1 or self.log_every < 1 or self.final_evals < 1:
            raise ValueError(f"eval_every={self.eval_every}, log_every={self.log_every} and "
                             f"final_evals={self.final_evals} must be >= 1.")


QUICK_OVERRIDES = dict(
    max_files=12, vocab_size=512, seq_len=48, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
    structured_train_docs=40, structured_heldout_docs=4, structured_lines=12,
    task_length=4, task_train_docs=20, task_heldout_docs=4, task_lines=8, task_seq_len=32, task_hidden_size=32,
    task_num_hidden_layers=1, task_batch_size=4, task_pretrain_steps=12, task_continue_steps=8, task_cooldown_steps=4,
    task_eval_every=4, task_eval_windows=8,
    batch_size=4, pretrain_steps=12, continue_steps=8, warmup_steps=2, cooldown_steps=4, seeds=[1], log_every=2,
    eval_every=4,
    final_evals=2, eval_windows=8, eval_repeats=1, gen_prompts=4, gen_new_tokens=16, task_new_tokens=8,
    bootstrap_resamples=200, workers=1,
)  # checks that the pipeline works; no claim can be drawn from it


def corpus_args(args: ReplicationArgs, name: str) -> ReplicationArgs:
    """The settings one corpus runs with: the task corpus takes its own sizes (`task_*` fields)."""
    if name != "tasks":
        return args
    return dataclasses.replace(
        args, vocab_size=args.task_vocab_size, seq_len=args.task_seq_len, hidden_size=args.task_hidden_size,
        intermediate_size=3 * args.task_hidden_size, num_hidden_layers=args.task_num_hidden_layers,
        batch_size=args.task_batch_size, pretrain_steps=args.task_pretrain_steps,
        continue_steps=args.task_continue_steps, cooldown_steps=args.task_cooldown_steps,
        lr_backbone=args.task_lr_backbone, eval_every=args.task_eval_every, eval_windows=args.task_eval_windows)


def claim_corpora(args: ReplicationArgs) -> List[str]:
    """The corpora to run: those of the requested claims (in CORPORA order), else `args.corpora`."""
    if not args.claims:
        return list(args.corpora)
    wanted = {c for claim in args.claims for c in CLAIM_CORPORA[claim]}
    return [c for c in CORPORA if c in wanted]


ARMS = ("binary", "sm")  # the two arms of every corpus and seed


def arm_settings(args: ReplicationArgs, corpus_name: str, seed: int) -> Dict[str, Dict]:
    """{arm: {"p_sm", "sm_top_k"}} of one (corpus, seed): binary (p_sm 0) and sm (p_sm, sm_top_k), and
    on the task corpus, for the first `ablation_seeds` seeds, C5's arms `sm_p<p>` (another p_sm) and C6's
    arms `sm_k<k>` (another top-k) when those claims are requested."""
    arms = {"binary": {"p_sm": 0.0, "sm_top_k": args.sm_top_k}, "sm": {"p_sm": args.p_sm, "sm_top_k": args.sm_top_k}}
    if corpus_name != "tasks" or seed not in args.seeds[: args.ablation_seeds]:
        return arms
    if "C5" in args.claims:
        arms.update({f"sm_p{p:g}": {"p_sm": p, "sm_top_k": args.sm_top_k} for p in args.ablation_p_sm})
    if "C6" in args.claims:
        arms.update({f"sm_k{k}": {"p_sm": args.p_sm, "sm_top_k": k} for k in args.ablation_top_k})
    return arms


def arm_config(config, settings: Dict):
    """A copy of the pretrained model's config with the arm's top-k (read by the loss and the decoder)."""
    config = copy.deepcopy(config)
    config.sm_top_k = settings["sm_top_k"]
    return config


def build_model(args: ReplicationArgs, vocab_size: int, eos_id: int, mask_id: int) -> SoftMaskDreamForDiffusionLM:
    config = tiny_config(
        vocab_size=vocab_size, mask_token_id=mask_id, pad_token_id=eos_id, bos_token_id=eos_id, eos_token_id=eos_id,
        hidden_size=args.hidden_size, intermediate_size=args.intermediate_size,
        num_hidden_layers=args.num_hidden_layers, num_attention_heads=args.num_attention_heads,
        num_key_value_heads=args.num_attention_heads, max_position_embeddings=args.seq_len, sm_top_k=args.sm_top_k,
    )
    return SoftMaskDreamForDiffusionLM(config)


def make_optimizer(model, args: ReplicationArgs, steps: int, cooldown: int = 0):
    """AdamW with the backbone group and the SM group (lr_sm, paper A.1); linear warmup, then constant,
    then (with `cooldown`) a linear decay to 0 over the last `cooldown` of the `steps` steps."""
    groups = optimizer_groups(model, args.lr_backbone, args.lr_sm, weight_decay=0.0, decay_names=[])
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    warmup = max(1, args.warmup_steps)

    def factor(step: int) -> float:  # step: optimizer steps taken so far
        decay = min(1.0, (steps - step) / cooldown) if cooldown > 0 else 1.0
        return min(1.0, (step + 1) / warmup) * decay

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_phase(model, windows: torch.Tensor, args: ReplicationArgs, steps: int, p_sm: float, seed: int,
                evaluate=None, cooldown: int = 0) -> List[Dict]:
    """`steps` optimizer steps; returns the history (train loss, mapped SM values, evaluations).

    The data order and the noise (t, masks, SM switches) depend only on `seed`, not on `p_sm`: the
    two arms of one seed see the same windows with the same masks. `evaluate(model, step)` returns a
    dict merged into the history every `eval_every` steps and at the end.
    """
    order = window_order(windows.shape[0], steps, args.batch_size, seed)  # (steps, b)
    noise = torch.Generator().manual_seed(10_000 + seed)
    optimizer, schedule = make_optimizer(model, args, steps, cooldown)
    history, losses = [], []
    for step in range(1, steps + 1):
        model.train()
        ids = windows[order[step - 1]]  # (b, l)
        response = torch.ones_like(ids, dtype=torch.bool)  # pretraining: every token is maskable
        draw = sample_noise(response, args.t_low, args.t_high, p_sm=p_sm, generator=noise)
        out = sm_two_pass_loss(model, ids, None, response, draw.masked, draw.t, draw.sm_on)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        schedule.step()
        losses.append(out.loss.item())
        if not math.isfinite(losses[-1]):
            raise RuntimeError(f"training loss became {losses[-1]} at step {step}; lower lr_backbone.")
        if step % args.log_every == 0 or step == steps:
            history.append({"step": step, "train_loss": sum(losses) / len(losses), **model.soft_mask.mapped()})
            losses = []
        if evaluate is not None and (step % args.eval_every == 0 or step == steps):
            history[-1].update(evaluate(model, step))
    return history


def prepare_data(args: ReplicationArgs, corpus_name: str) -> Dict:
    """Tokenizer, training windows, held-out NLL windows and generation prompts of one corpus."""
    if corpus_name == "stdlib":
        files = stdlib_files(args.corpus_dir)
        train_files, heldout_files = split_files(files, args.heldout_every, args.max_files)
        train_texts, heldout_texts = list(read_texts(train_files)), list(read_texts(heldout_files))
        source = f"Python {platform.python_version()} standard library" if args.corpus_dir is None else \
            f"the *.py files of {args.corpus_dir}"
        corpus = {"source": source, "python": platform.python_version(), "train_files": len(train_files),
                  "heldout_files": [f.name for f in heldout_files]}
    elif corpus_name == "tasks":
        train_docs = task_documents(args.task_families, args.task_length, args.task_train_docs, args.task_lines, 1)
        heldout_docs = task_documents(args.task_families, args.task_length, args.task_heldout_docs, args.task_lines, 2)
        train_texts, heldout_texts = [document_text(d) for d in train_docs], [document_text(d) for d in heldout_docs]
        seen = {head + tail for d in train_docs for _, head, tail in d}
        heldout_lines = [head + tail for d in heldout_docs for _, head, tail in d]
        corpus = {"source": f"synthetic task lines ({', '.join(args.task_families)}; answers of "
                            f"{args.task_length} symbols)",
                  "train_files": len(train_docs), "heldout_files": len(heldout_docs),
                  "heldout_lines_in_train": sum(line in seen for line in heldout_lines) / len(heldout_lines),
                  "settings": {k: getattr(args, k) for k in (
                      "seq_len", "hidden_size", "num_hidden_layers", "batch_size", "pretrain_steps",
                      "continue_steps", "cooldown_steps", "lr_backbone", "eval_every", "eval_windows")}}
    else:
        train_docs = structured_documents(args.structured_train_docs, args.structured_lines, seed=1)
        heldout_docs = structured_documents(args.structured_heldout_docs, args.structured_lines, seed=2)
        train_texts, heldout_texts = [document_text(d) for d in train_docs], [document_text(d) for d in heldout_docs]
        seen = {head + tail for d in train_docs for _, head, tail in d}
        heldout_lines = [head + tail for d in heldout_docs for _, head, tail in d]
        corpus = {"source": "synthetic structured lines (progression, sorted, repeat)",
                  "train_files": len(train_docs), "heldout_files": len(heldout_docs),
                  "heldout_lines_in_train": sum(line in seen for line in heldout_lines) / len(heldout_lines)}
    tokenizer = train_tokenizer(train_texts, args.vocab_size)
    eos_id, mask_id = special_ids(tokenizer)
    train = token_windows(tokenizer, train_texts, args.seq_len)
    heldout = token_windows(tokenizer, heldout_texts, args.seq_len)
    # Held-out windows for the NLL and the stdlib prompts: spread evenly over the held-out texts.
    pick = lambda n: heldout[torch.linspace(0, heldout.shape[0] - 1, min(n, heldout.shape[0])).long()]  # noqa: E731
    corpus.update(train_tokens=train.numel(), heldout_tokens=heldout.numel(), vocab_size=mask_id + 1)
    data = dict(name=corpus_name, tokenizer=tokenizer.to_str(), eos_id=eos_id, mask_id=mask_id, train=train,
                eval_windows=pick(args.eval_windows), corpus=corpus)
    if corpus_name == "stdlib":
        data["gen_windows"] = pick(args.gen_prompts)
    else:
        if corpus_name == "tasks" and not task_symbols_are_tokens(tokenizer, heldout_docs):
            raise ValueError(f"vocab_size={args.vocab_size} leaves some answer symbols split into several tokens; "
                             "raise vocab_size so that every ' x' symbol is one token.")
        data["new_tokens"] = args.task_length if corpus_name == "tasks" else args.task_new_tokens
        prompts = structured_prompts(tokenizer, heldout_docs, args.seq_len, data["new_tokens"], args.gen_prompts)
        data["gen_windows"], corpus["prompt_families"] = prompts["windows"], prompts["families"]
    return data


def make_evaluator(eval_windows: torch.Tensor, args: ReplicationArgs, soft: bool, log=print):
    """evaluate(model, step) -> held-out NLL, one pass (`nll_binary`) and, if `soft`, two passes
    (`nll_sm`), with the per-window values under `<key>_rows`."""
    def evaluate(model, step: int) -> Dict:
        row = {}
        for key, two_pass in (("nll_binary", False), ("nll_sm", True))[: 2 if soft else 1]:
            rows = heldout_nll_rows(model, eval_windows, args, soft=two_pass)
            row[key], row[f"{key}_rows"] = sum(rows) / len(rows), rows
        log(f"  step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if not k.endswith("_rows")))
        return row

    return evaluate


def summarize(history: List[Dict], final_evals: int) -> Tuple[List[Dict], Dict]:
    """(history without per-window values, final): `final` has the last logged SM values and, per NLL
    key, the mean over the last `final_evals` evaluations (value and per-window `<key>_rows`); a
    constant learning rate leaves the last step alone noisy."""
    evals = [h for h in history if "nll_binary" in h][-final_evals:]
    final = {k: v for k, v in history[-1].items() if k != "step" and not k.startswith("nll")}
    for key in [k for k in evals[-1] if k.endswith("_rows")]:
        rows = [sum(values) / len(evals) for values in zip(*(e[key] for e in evals))]
        final[key], final[key[: -len("_rows")]] = rows, sum(rows) / len(rows)
    final["final_steps"] = [e["step"] for e in evals]
    return [{k: v for k, v in h.items() if not k.endswith("_rows")} for h in history], final


def run_replication(args: ReplicationArgs, output_dir: str, log=print, command: str = "") -> Dict:
    """The whole experiment; writes results.json, report.md and report.png under `output_dir`."""
    args.validate()
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args, Path(output_dir), log, command)
    finally:
        torch.set_num_threads(threads)


def _run(args: ReplicationArgs, out: Path, log, command: str) -> Dict:
    import transformers

    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results = {"args": dataclasses.asdict(args), "command": command, "corpora": {}, "timing": {},
               "versions": {"python": platform.python_version(), "torch": torch.__version__,
                            "transformers": transformers.__version__}}
    datasets = {}
    corpora = claim_corpora(args)
    if not corpora:
        raise ValueError(f"claims={args.claims} need no corpus run here; add one of C1-C8.")
    results["args"]["corpora"] = corpora
    for name in corpora:
        datasets[name] = data = prepare_data(corpus_args(args, name), name)
        (out / f"tokenizer_{name}.json").write_text(data["tokenizer"])
        c = data["corpus"]
        log(f"corpus {name}: {c['source']}, {c['train_files']} train texts ({c['train_tokens']} tokens), "
            f"{c['heldout_tokens']} held-out tokens, vocab {c['vocab_size']}, {len(data['gen_windows'])} prompts")
        results["corpora"][name] = {"corpus": c, "seeds": {str(s): {} for s in args.seeds}}
    with _executor(args.workers) as pool:
        pending: Dict[Future, Tuple] = {}
        for name, data in datasets.items():  # the pretraining of each corpus, in parallel
            pending[pool.submit(pretrain, data, corpus_args(args, name),
                                _job_log(log, f"{name} pretrain", args.workers))] = ("pretrain", name)
        bases, arms = {}, {}
        while pending:
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for future in done:
                kind, name, *key = pending.pop(future)
                value = future.result()
                data, res = datasets[name], results["corpora"][name]
                if kind == "pretrain":  # -> every (seed, arm) continuation
                    bases[name], res["pretrain"], results["timing"][f"{name}_pretrain_s"] = value
                    for seed in args.seeds:
                        for arm, settings in arm_settings(args, name, seed).items():
                            job = pool.submit(continue_arm, bases[name], data["train"], data["eval_windows"],
                                              corpus_args(args, name), settings, seed,
                                              _job_log(log, f"{name} seed {seed}, {arm}", args.workers))
                            pending[job] = ("arm", name, seed, arm)
                elif kind == "arm":  # -> the seed's generation once both arms are done
                    seed, arm = key
                    state, history, final, seconds = value
                    settings = arm_settings(args, name, seed)
                    res["seeds"][str(seed)][arm] = {"history": history, "final": final, "settings": settings[arm]}
                    results["timing"][f"{name}_seed{seed}_{arm}_s"] = seconds
                    arms.setdefault((name, seed), {})[arm] = state
                    if seed == args.seeds[0]:  # kept for checks on trained models (docs/replication.md)
                        save_model(out / "models" / name / arm, arm_config(bases[name][0], settings[arm]), state, data)
                    if len(arms[(name, seed)]) == len(settings):
                        slim = {k: data[k] for k in ("name", "tokenizer", "eos_id", "mask_id", "gen_windows", "corpus",
                                                      "new_tokens") if k in data}
                        job = pool.submit(generation_job, bases[name][0], arms.pop((name, seed)), slim,
                                          corpus_args(args, name), seed,
                                          _job_log(log, f"{name} seed {seed}, generation", args.workers), settings)
                        pending[job] = ("generation", name, seed)
                else:
                    (seed,) = key
                    res["seeds"][str(seed)]["generation"], seconds = value
                    results["timing"][f"{name}_seed{seed}_generation_s"] = seconds
    results["corpora"] = {name: results["corpora"][name] for name in corpora}
    results["timing"]["total_s"] = time.time() - started
    results["load_average"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    (out / "results.json").write_text(json.dumps(results, indent=1))
    write_report(results, out)
    log(f"wrote {out / 'report.md'} and {out / 'report.png'} in {results['timing']['total_s']:.0f} s")
    return results


def save_model(folder: Path, config, state: Dict, data: Dict) -> None:
    """`save_pretrained` of one arm, with the corpus's tokenizer and held-out generation prompts."""
    model = SoftMaskDreamForDiffusionLM(config)
    model.load_state_dict(state)
    model.save_pretrained(folder)
    (folder / "tokenizer.json").write_text(data["tokenizer"])
    torch.save(data["gen_windows"], folder / "prompts.pt")


def pretrain(data: Dict, args: ReplicationArgs, log=print) -> Tuple[Tuple, Dict, float]:
    """((config, state_dict), {"history": ...}, seconds): the binary base model of one corpus."""
    torch.set_num_threads(args.threads)
    start = time.time()
    torch.manual_seed(args.pretrain_seed)
    base = build_model(args, data["mask_id"] + 1, data["eos_id"], data["mask_id"])
    log(f"{sum(p.numel() for p in base.parameters())} parameters, {args.pretrain_steps} steps, binary")
    history = train_phase(base, data["train"], args, args.pretrain_steps, 0.0, args.pretrain_seed,
                          make_evaluator(data["eval_windows"], args, soft=False, log=log))
    history, final = summarize(history, 1)
    return (base.config, base.state_dict()), {"history": history, "final": final}, time.time() - start


def continue_arm(base: Tuple, train: torch.Tensor, eval_windows: torch.Tensor, args: ReplicationArgs,
                 settings: Dict, seed: int, log=print) -> Tuple[Dict, List[Dict], Dict, float]:
    """One arm of one seed, continued from the pretrained (config, state_dict) `base` with the arm's
    `settings` (`arm_settings`: p_sm, sm_top_k): (final state_dict, history, final values, seconds)."""
    torch.set_num_threads(args.threads)
    start = time.time()
    p_sm = settings["p_sm"]
    log(f"{args.continue_steps} steps, p_sm {p_sm}, k {settings['sm_top_k']}")
    model = SoftMaskDreamForDiffusionLM(arm_config(base[0], settings))
    model.load_state_dict(base[1])
    evaluate = make_evaluator(eval_windows, args, soft=p_sm > 0, log=log)
    history, final = summarize(train_phase(model, train, args, args.continue_steps, p_sm, seed, evaluate,
                                           cooldown=args.cooldown_steps), args.final_evals)
    return model.state_dict(), history, final, time.time() - start


def generation_job(config, states: Dict, data: Dict, args: ReplicationArgs, seed: int, log=print,
                   settings: Optional[Dict] = None) -> Tuple[Dict, float]:
    """(generation results, seconds) of one seed's arms: sampled continuations scored by the seed's
    binary model (stdlib), or exact-match accuracy of greedy continuations (structured, tasks); on the
    task corpus also C7's decoding sweep and C8's schedules when those claims are requested. Each
    arm's model gets its own top-k from `settings` (`arm_settings`)."""
    torch.set_num_threads(args.threads)
    start = time.time()
    models = {}
    for arm in [a for a in ARMS if a in states] + sorted(a for a in states if a not in ARMS):
        models[arm] = SoftMaskDreamForDiffusionLM(arm_config(config, settings[arm]) if settings else config)
        models[arm].load_state_dict(states[arm])
    if data["name"] == "stdlib":
        generation = evaluate_generation(models, data, args, seed, log)
    else:
        generation = evaluate_task(models, data, args, seed, log)
    if data["name"] == "tasks" and "C7" in args.claims:
        generation["sweep"] = evaluate_decoding_sweep({a: models[a] for a in ARMS}, data, args, log)
    if data["name"] == "tasks" and "C8" in args.claims:
        generation["schedules"] = evaluate_schedules(models["sm"], data, args, seed, log)
    return generation, time.time() - start


class _InlineExecutor(contextlib.AbstractContextManager):
    """`submit` runs the call at once (workers = 1), returning a finished Future."""

    def __exit__(self, *exc):
        return None

    def submit(self, fn, *args, **kwargs) -> Future:
        future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def _executor(workers: int):
    if workers <= 1:
        return _InlineExecutor()
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def _print_prefixed(prefix: str, message: str) -> None:
    print(f"{prefix} {message}", flush=True)


def _job_log(log, name: str, workers: int):
    """The job's logger: the caller's `log` in process, a picklable print in worker processes."""
    prefix = f"[{name}]"
    return functools.partial(_print_prefixed, prefix) if workers > 1 else lambda message: log(f"{prefix} {message}")


def _field_parser(f: dataclasses.Field):
    """(type, nargs) for an argparse option of a ReplicationArgs field."""
    hint = str(f.type)
    kind = float if "float" in hint else int if "int" in hint else str
    return kind, ("+" if hint.startswith(("List", "typing.List")) else None)


def parse_args(argv=None) -> Tuple[ReplicationArgs, str, bool]:
    """(args, output_dir, quick) from the command line: --quick applies `QUICK_OVERRIDES`, then every
    ReplicationArgs field can be set as --<field> (flags win over the mode's values)."""
    parser = argparse.ArgumentParser(description="Small soft-masking replication on CPU.")
    parser.add_argument("--quick", action="store_true", help="a pipeline check in about a minute (no claims)")
    parser.add_argument("--output_dir", default=None, help="default outputs/replicate_small[_quick]")
    for f in dataclasses.fields(ReplicationArgs):
        kind, nargs = _field_parser(f)
        parser.add_argument(f"--{f.name}", type=kind, nargs=nargs, default=None)
    ns = parser.parse_args(argv)
    values = dict(QUICK_OVERRIDES) if ns.quick else {}
    values.update({k: v for k, v in vars(ns).items() if k not in ("quick", "output_dir") and v is not None})
    output_dir = ns.output_dir or ("outputs/replicate_small_quick" if ns.quick else "outputs/replicate_small")
    return ReplicationArgs(**values), output_dir, ns.quick


def main(argv=None) -> Dict:
    args, output_dir, quick = parse_args(argv)
    command = "python recipes/replicate_small.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results = run_replication(args, output_dir, command=command.strip())
    if quick:
        print("quick mode: a check that the pipeline runs; its numbers support no claim.")
    return results
