# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Evaluation of the small replication: held-out NLL and generation quality at NFE budgets.

Held-out NLL (nats per token; perplexity = exp). The training objective on held-out windows, with
noise fixed per row (`sample_noise(seeds=...)`), so every model and step is scored on the same masks:

    NLL = sum_rows (1/t) sum_{j masked} -log p(x0_j | input) / (number of scored tokens)

    t ~ U(t_low, t_high) per row; input = x_t (binary, one pass) or, with `soft=True`, x_t with the
    SM blend built from a first pass on x_t (two passes, as the paper measures its SM models).

It is computed by `sm_dream.training.losses.sm_two_pass_loss` (no second loss implementation). With t over
(0, 1) it is MDLM's ELBO bound; restricted to [t_low, t_high] it is the same bound with the t < t_low
part left out, for every arm alike.

Per-window values (`*_rows`): the same sum restricted to one window's tokens, averaged over its
repeats. Every window has the same number of scored tokens here, so their mean is the NLL above; the
paired per-window differences between arms are what `replication.stats` bootstraps.

Generation quality (stdlib). Held-out windows give a prompt (first seq_len - N tokens) and a reference
continuation (last N tokens). Each arm continues every prompt at each NFE budget (steps = budget * N),
with SM between steps for the SM arm. Each continuation is scored by:
- `nll`: the held-out NLL above of the continuation given the prompt (only continuation tokens are
  masked and scored) under one *scorer*, the seed's final binary model (the SM arm's samples are
  judged by the other arm's model, which favours the binary arm if anything);
- `unigram_entropy` (bits, over all generated tokens pooled) and `distinct2` (distinct bigrams /
  bigrams, per continuation, averaged): repetitive or collapsed text gets a low NLL but also far
  lower values of both than the reference continuations, so a low NLL only counts as better
  quality when these stay near the reference's.

Exact-match accuracy (structured corpus, `evaluate_task`). Each prompt's last `task_new_tokens` tokens
are the only correct continuation (`replication.data.structured_prompts`). Each arm regenerates them
greedily (temperature 0) at each NFE budget with each unmasking order in `task_algs` (`origin`:
random positions; `entropy`: the most confident first), and `exact_match` scores 1 or 0 per prompt.

Decoding sweep (task corpus, claim C7, `evaluate_decoding_sweep`): the binary and SM arms decode the
same prompts with semi-autoregressive blocks (`sweep_block_lengths`), with and without the prefix KV
cache, at fixed steps (`sweep_nfe_budget`) and with a confidence threshold (`sweep_thresholds`); per
setting the exact match per prompt, the forward passes (NFE) and tokens per second.

Schedules (task corpus, claim C8, `evaluate_schedules`): the SM arm decodes with SM only in the first
80% of the steps (`sm_then_binary`, t' = 0.2) and only in the last 80% (`binary_then_sm`, t' = 0.8),
paper B.4.1, at every NFE budget; each cell keeps the per-step schedule factors, so the claims code
can tell where the two schedules decode alike (few steps: step 0 never has feedback).
"""

import statistics
import time
from collections import Counter
from typing import Dict, List

import torch

from sm_dream.model.soft_masking import schedule_factor
from sm_dream.training.losses import sm_two_pass_loss
from sm_dream.training.noise import sample_noise

from .data import exact_match


@torch.no_grad()
def diffusion_nll(model, windows: torch.Tensor, response: torch.Tensor, args, soft: bool) -> float:
    """Per-token NLL of `windows` (n, l) at the `response` (n, l) positions; each row scored
    `args.eval_repeats` times with seeds 0, 1, ... (the same masks for every model)."""
    model.eval()
    ids = windows.repeat(args.eval_repeats, 1)  # (n * r, l)
    resp = response.repeat(args.eval_repeats, 1)
    seeds = torch.arange(ids.shape[0])
    nll_sum, items = 0.0, 0.0
    for rows in seeds.split(args.eval_batch_size):
        draw = sample_noise(resp[rows], args.t_low, args.t_high, p_sm=1.0 if soft else 0.0, seeds=rows)
        out = sm_two_pass_loss(model, ids[rows], None, resp[rows], draw.masked, draw.t, draw.sm_on)
        nll_sum += out.nll_sum.item()
        items += out.num_items.item()
    return nll_sum / items


@torch.no_grad()
def diffusion_nll_rows(model, windows: torch.Tensor, response: torch.Tensor, args, soft: bool) -> List[float]:
    """Per window: its (1/t)-weighted masked NLL sum / its response tokens, averaged over the
    `args.eval_repeats` scorings of `diffusion_nll` (the same seeds, so the same masks)."""
    model.eval()
    n = windows.shape[0]
    ids = windows.repeat(args.eval_repeats, 1)  # (n * r, l)
    resp = response.repeat(args.eval_repeats, 1)
    seeds = torch.arange(ids.shape[0])
    per_sample = []
    for rows in seeds.split(args.eval_batch_size):
        draw = sample_noise(resp[rows], args.t_low, args.t_high, p_sm=1.0 if soft else 0.0, seeds=rows)
        out = sm_two_pass_loss(model, ids[rows], None, resp[rows], draw.masked, draw.t, draw.sm_on)
        per_sample.append(out.nll_per_sample.double())
    per_token = torch.cat(per_sample) / resp.sum(1).clamp_min(1)  # (n * r,)
    return per_token.view(args.eval_repeats, n).mean(0).tolist()


def heldout_nll(model, windows: torch.Tensor, args, soft: bool) -> float:
    """`diffusion_nll` with every token of the windows maskable (pretraining's setting)."""
    return diffusion_nll(model, windows, torch.ones_like(windows, dtype=torch.bool), args, soft)


def heldout_nll_rows(model, windows: torch.Tensor, args, soft: bool) -> List[float]:
    """`diffusion_nll_rows` with every token of the windows maskable; their mean is `heldout_nll`."""
    return diffusion_nll_rows(model, windows, torch.ones_like(windows, dtype=torch.bool), args, soft)


def unigram_entropy(tokens: torch.Tensor) -> float:
    """Entropy in bits of the pooled token frequencies of `tokens` (any shape)."""
    counts = torch.tensor(list(Counter(tokens.flatten().tolist()).values()), dtype=torch.float64)
    p = counts / counts.sum()
    return float(-(p * p.log2()).sum())


def distinct_bigrams(tokens: torch.Tensor) -> float:
    """Mean over rows of (distinct bigrams / bigrams) of a (g, n) tensor, n >= 2."""
    rows = tokens.tolist()
    return sum(len(set(zip(r, r[1:]))) / (len(r) - 1) for r in rows) / len(rows)


def continuation_metrics(scorer, sequences: torch.Tensor, prompt_length: int, args) -> Dict:
    """nll (under `scorer`) with its per-prompt values `nll_rows`, unigram_entropy and distinct2 of
    sequences[:, prompt_length:]."""
    response = torch.zeros_like(sequences, dtype=torch.bool)
    response[:, prompt_length:] = True
    continuation = sequences[:, prompt_length:]
    rows = diffusion_nll_rows(scorer, sequences, response, args, soft=False)
    return {
        "nll": sum(rows) / len(rows),
        "nll_rows": rows,
        "unigram_entropy": unigram_entropy(continuation),
        "distinct2": distinct_bigrams(continuation),
    }


@torch.no_grad()
def generate(model, prompts: torch.Tensor, args, budget: float, soft: bool, seed: int, new_tokens=None,
             alg=None, temperature=None, top_p=None) -> torch.Tensor:
    """(g, p + N) prompts continued by `diffusion_generate` at NFE budget `budget` (N, alg, temperature
    and top_p default to the stdlib generation settings in `args`)."""
    model.eval()
    return model.diffusion_generate(
        prompts, max_new_tokens=new_tokens or args.gen_new_tokens, nfe_budget=budget, soft_masking=soft,
        alg=alg or args.gen_alg, temperature=args.gen_temperature if temperature is None else temperature,
        top_p=args.gen_top_p if top_p is None else top_p, generator=torch.Generator().manual_seed(seed),
    )


def evaluate_generation(models: Dict, data: Dict, args, seed: int, log=print) -> Dict:
    """{arm: {budget: metrics}, "reference": metrics} for the seed's arms; scorer = models["binary"]."""
    windows = data["gen_windows"]  # (g, seq_len)
    prompt_length = args.seq_len - args.gen_new_tokens
    scorer = models["binary"]
    results = {"reference": continuation_metrics(scorer, windows, prompt_length, args)}
    for arm, model in models.items():
        results[arm] = {}
        for i, budget in enumerate(args.nfe_budgets):
            sequences = generate(model, windows[:, :prompt_length], args, budget, soft=arm != "binary",
                                 seed=1000 * seed + i)
            metrics = continuation_metrics(scorer, sequences, prompt_length, args)
            metrics["steps"] = max(1, round(args.gen_new_tokens * budget))
            results[arm][str(budget)] = metrics
            log(f"  generation {arm} budget {budget}: "
                + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "nll_rows"))
    return results


def evaluate_task(models: Dict, data: Dict, args, seed: int, log=print) -> Dict:
    """{arm: {alg: {budget: {"accuracy", "correct": [0/1 per prompt], "steps"}}}} of the structured
    prompts `data["gen_windows"]`: each arm regenerates the last `task_new_tokens` tokens greedily."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(data["tokenizer"])
    windows = data["gen_windows"]  # (g, seq_len)
    n = data.get("new_tokens", args.task_new_tokens)
    prompt_length = windows.shape[1] - n
    results = {}
    for arm, model in models.items():
        results[arm] = {}
        for a, alg in enumerate(args.task_algs):
            results[arm][alg] = {}
            for i, budget in enumerate(args.nfe_budgets):
                sequences = generate(model, windows[:, :prompt_length], args, budget, soft=arm != "binary",
                                     seed=1000 * seed + 10 * a + i, new_tokens=n, alg=alg, temperature=0.0, top_p=1.0)
                correct = [exact_match(tokenizer, g, r) for g, r in
                           zip(sequences[:, prompt_length:].tolist(), windows[:, prompt_length:].tolist())]
                families = data["corpus"]["prompt_families"]
                by_family = {f: statistics.fmean(c for c, g in zip(correct, families) if g == f)
                             for f in sorted(set(families))}
                results[arm][alg][str(budget)] = {"accuracy": statistics.fmean(correct), "correct": correct,
                                                  "by_family": by_family, "steps": max(1, round(n * budget))}
                log(f"  task {arm} {alg} budget {budget}: accuracy {statistics.fmean(correct):.3f} "
                    + " ".join(f"{f} {v:.2f}" for f, v in by_family.items()))
    return results


SCHEDULES = ("sm_then_binary", "binary_then_sm")  # C8: early SM, late SM (paper B.4.1)


def _task_reference(data: Dict, args):
    from tokenizers import Tokenizer

    windows = data["gen_windows"]  # (g, seq_len)
    n = data.get("new_tokens", args.task_new_tokens)
    return Tokenizer.from_str(data["tokenizer"]), windows, n, windows.shape[1] - n


def _scores(tokenizer, sequences: torch.Tensor, windows: torch.Tensor, prompt_length: int) -> List[int]:
    return [exact_match(tokenizer, g, r) for g, r in
            zip(sequences[:, prompt_length:].tolist(), windows[:, prompt_length:].tolist())]


@torch.no_grad()
def evaluate_decoding_sweep(models: Dict, data: Dict, args, log=print) -> Dict:
    """C7: {setting name: {arm: {"correct", "accuracy", "nfe", "seconds", "tokens_per_s"}, "settings"}}:
    block length x KV cache (off, prefix) x (fixed steps at `sweep_nfe_budget`, or each threshold),
    greedy, `sweep_alg` unmasking; the arms decode the same prompts with the same settings."""
    tokenizer, windows, n, prompt_length = _task_reference(data, args)
    results = {}
    for block in sorted({min(b, n) for b in args.sweep_block_lengths}):  # a block longer than N is one block
        for cache in (False, True):
            for threshold in [None] + list(args.sweep_thresholds):
                settings = dict(block_length=block, use_cache=cache, threshold=threshold)
                if threshold is None:
                    settings["nfe_budget"] = args.sweep_nfe_budget
                name = f"block {settings['block_length']}, cache {'on' if cache else 'off'}, " + (
                    f"NFE {args.sweep_nfe_budget:g}" if threshold is None else f"threshold {threshold:g}")
                cell = {"settings": settings}
                for arm, model in models.items():
                    model.eval()
                    start = time.perf_counter()
                    out = model.diffusion_generate(
                        windows[:, :prompt_length], max_new_tokens=n, soft_masking=arm != "binary",
                        alg=args.sweep_alg, temperature=0.0, return_dict_in_generate=True, **settings)
                    seconds = time.perf_counter() - start
                    correct = _scores(tokenizer, out.sequences, windows, prompt_length)
                    cell[arm] = {"correct": correct, "accuracy": statistics.fmean(correct), "nfe": int(out.nfe),
                                 "seconds": seconds, "tokens_per_s": windows.shape[0] * n / seconds}
                results[name] = cell
                log(f"  sweep {name}: " + ", ".join(
                    f"{arm} {cell[arm]['accuracy']:.3f} (NFE {cell[arm]['nfe']}, {cell[arm]['tokens_per_s']:.0f} tok/s)"
                    for arm in models))
    return results


@torch.no_grad()
def evaluate_schedules(model, data: Dict, args, seed: int, log=print) -> Dict:
    """C8: {schedule: {alg: {budget: {"correct", "accuracy", "steps", "factors", "threshold"}}}} of the SM
    arm `model`, greedy; `factors` is the schedule's factor on lambda at each step (step 0: no feedback)."""
    tokenizer, windows, n, prompt_length = _task_reference(data, args)
    results = {}
    for schedule, threshold in zip(SCHEDULES, args.schedule_thresholds):
        results[schedule] = {}
        for a, alg in enumerate(args.task_algs):
            results[schedule][alg] = {}
            for i, budget in enumerate(args.nfe_budgets):
                model.eval()
                sequences = model.diffusion_generate(
                    windows[:, :prompt_length], max_new_tokens=n, nfe_budget=budget, soft_masking=True,
                    sm_schedule=schedule, sm_threshold=threshold, alg=alg, temperature=0.0,
                    generator=torch.Generator().manual_seed(1000 * seed + 10 * a + i))
                steps = max(1, round(n * budget))
                correct = _scores(tokenizer, sequences, windows, prompt_length)
                results[schedule][alg][str(budget)] = {
                    "correct": correct, "accuracy": statistics.fmean(correct), "steps": steps, "threshold": threshold,
                    "factors": [schedule_factor(schedule, s, steps, threshold) for s in range(steps)]}
                log(f"  schedule {schedule} {alg} budget {budget}: accuracy {statistics.fmean(correct):.3f}")
    return results
