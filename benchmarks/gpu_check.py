"""GPU acceptance in one command: correctness, generation, training and launchers at Dream-7B shapes.

    python benchmarks/gpu_check.py                          # one CUDA GPU, <= 8 minutes (docs/gpu_check.md)
    python benchmarks/gpu_check.py --device cpu --tiny      # every stage on tiny shapes (the test suite)

Offline: random weights with the shapes of the Dream-7B config shipped with the package (28 layers,
hidden 3584, MLP 18944, 28 heads, 4 KV heads, vocabulary 152,064). Each stage runs in its own
process under its own time limit (defaults below, times `--time_scale`): a stage that runs out of
time or fails is reported and skipped, the next one runs. Every figure is appended to
OUT/figures.jsonl as soon as it is measured (a killed run keeps what it measured); at the end
OUT/gpu_check.json and OUT/gpu_check.md (the table for docs/gpu_check.md, "GPU figures") are written
and the table printed. Exit status 1 only when a correctness check fails.

--tiny replaces the 7B shapes by small ones with the same structure (Dream's vocabulary, grouped
query attention, several layers) and shortens prompts and outputs, so that every code path runs
in seconds on a CPU.
"""

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

# Time limit per stage in seconds on an H100/H200 (docs/gpu_check.md derives them); sum 470 s.
STAGE_LIMITS = {"correctness": 110, "generation": 200, "training": 80, "launchers": 80}
# Pass criteria of bf16 SDPA vs float32 eager logits (justified in docs/gpu_check.md, "Correctness").
BF16_REL_MEAN = 0.02  # mean |difference| / std of the float32 logits
BF16_TOP1 = 0.97  # top-1 agreement on rows whose float32 top-2 margin is >= 4 x the mean |difference|
TARGETS = {"generation_sm_ratio": 1.03, "train_p0.5": 1.25, "train_p1.0": 1.45, "train_memory": 1.05}


# ---------------------------------------------------------------------------------------------- rows


class Recorder:
    """Appends one JSON line per figure to `path`, flushed at once."""

    def __init__(self, path: Path, stage: str):
        self.path, self.stage = path, stage

    def __call__(self, name, value, unit="", target=None, ok=None, note=""):
        row = dict(stage=self.stage, name=name, value=value, unit=unit, target=target, ok=ok, note=note)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        print(f"[{self.stage}] {name}: {value} {unit} {'' if ok is None else ('ok' if ok else 'FAILED')} {note}",
              flush=True)
        return row


def check(record, name, fn):
    """A correctness check: fn() -> (value, ok, note); an exception is a failed check, not a crash."""
    try:
        value, ok, note = fn()
    except Exception as err:  # reported as a failure of this check; the others still run
        value, ok, note = None, False, f"{type(err).__name__}: {str(err)[:300]}"
    row = record(name, value, ok=bool(ok), note=note)
    # tests' forced failure (--fail_check): stop at the first failed check
    if not ok and os.environ.get("SM_DREAM_GPU_CHECK_FAIL") and record.stage == "correctness":
        raise SystemExit(3)
    return row


# ---------------------------------------------------------------------------------------------- models


def shapes(args, layers=None):
    """The model config: the shipped Dream-7B config (optionally fewer layers), or a tiny stand-in."""
    from sm_dream import SoftMaskDreamConfig
    from sm_dream.resources import DREAM_FIXTURE
    from sm_dream.tiny import tiny_config

    if args.tiny:
        return tiny_config(hidden_size=64, intermediate_size=128, num_hidden_layers=layers or 3,
                           num_attention_heads=4, num_key_value_heads=2, sm_init_scale=0.5)
    config = SoftMaskDreamConfig.from_pretrained(str(DREAM_FIXTURE))
    if layers:
        config.num_hidden_layers = layers
    config.sm_init_scale = 0.5
    return config


def build(config, device, dtype, seed=0):
    """Random weights created in float32 on `device`, then cast (the SM scalars stay float32, as
    `training.finetune.load_model` keeps them)."""
    import torch

    from sm_dream import SoftMaskDreamForDiffusionLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = SoftMaskDreamForDiffusionLM(config)
    model = model.to(dtype).eval()
    model.soft_mask.float()
    return model


def sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def peak_gib(device):
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if str(device).startswith("cuda") else None


def reset_peak(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# ---------------------------------------------------------------------------------------------- stage 1


def logits_agreement(reference, other):
    """(max |diff|, mean |diff|, relative mean, top-1 agreement overall, on decisive rows)."""
    ref, oth = reference.float(), other.float()
    diff = (ref - oth).abs()
    mean = diff.mean().item()
    top2 = ref.topk(2, dim=-1).values
    decisive = (top2[:, 0] - top2[:, 1]) >= 4 * mean
    same = ref.argmax(-1) == oth.argmax(-1)
    agree_decisive = same[decisive].float().mean().item() if decisive.any() else 1.0
    return diff.max().item(), mean, mean / ref.std().item(), same.float().mean().item(), agree_decisive


def stage_correctness(args, record):
    import torch

    from sm_dream.model import logit_rows

    device, low = args.device, args.dtype
    for label in ("tiny", "7B-like" if args.tiny else "7B"):
        if label == "tiny":
            from sm_dream.tiny import tiny_config

            config = tiny_config(initializer_range=0.2, sm_init_scale=0.5)
        else:
            config = shapes(args)
        length = 64 if (args.tiny or label == "tiny") else 256
        gen = torch.Generator().manual_seed(1)
        ids = torch.randint(0, 150000, (2, length), generator=gen)
        ids[:, length // 2:][torch.rand(2, length - length // 2, generator=gen) < 0.7] = config.mask_token_id
        attention = torch.ones(2, length, dtype=torch.long)
        attention[1, :length // 8] = 0  # left padding in row 1
        ids, attention = ids.to(device), attention.to(device)
        rows = attention.bool().view(-1)

        model = build(config, device, torch.float32)
        model.config._attn_implementation = "eager"
        with torch.no_grad():
            reference = model(ids, attention_mask=attention).logits.view(-1, config.vocab_size)[rows].cpu()
        model = model.to(low)
        model.soft_mask.float()
        model.config._attn_implementation = "sdpa"

        def precision(reference=reference):
            with torch.no_grad():
                got = model(ids, attention_mask=attention).logits.view(-1, config.vocab_size)[rows].cpu()
            mx, mean, rel, top1, top1_decisive = logits_agreement(reference, got)
            ok = rel <= BF16_REL_MEAN and top1_decisive >= BF16_TOP1
            return (dict(max=round(mx, 4), mean=round(mean, 5), rel_mean=round(rel, 4), top1=round(top1, 4),
                         top1_decisive=round(top1_decisive, 4)), ok,
                    f"{low} sdpa vs float32 eager; need rel_mean <= {BF16_REL_MEAN}, top1_decisive >= {BF16_TOP1}")

        check(record, f"{label}: {str(low).replace('torch.', '')} SDPA vs fp32 eager logits", precision)
        del reference
        check(record, f"{label}: compiled T=0 row pass == eager",
              lambda: compiled_vs_eager(model, ids, attention, args))
        check(record, f"{label}: batched == single", lambda: batched_vs_single(model, args, label))
        check(record, f"{label}: SM off == scale 0", lambda: sm_off_vs_scale_zero(model, ids, attention, args, label))
        if label == "tiny" and not args.tiny:  # --tiny: the reload below covers it
            check(record, f"{label}: save on {device} -> trust_remote_code reload", lambda: save_reload(model, args))
        del model
        reset_peak(device)
    # The reload at 7B width with 2 layers (3 GB on disk instead of 15 GB); --tiny: the small stand-in.
    model = build(shapes(args, layers=2), device, low)
    name = "7B-like, 2 layers" if args.tiny else "7B width, 2 layers"
    check(record, f"{name}: save on {device} -> trust_remote_code reload", lambda: save_reload(model, args))
    logit_rows._COMPILED.clear()


@contextlib.contextmanager
def row_pass(runner_for):
    """`step_rows` runs its temperature-0 chunks through `runner_for(device)` while inside."""
    from sm_dream.model import logit_rows

    own = logit_rows._fast_chunk_runner
    logit_rows._fast_chunk_runner = runner_for
    try:
        yield
    finally:
        logit_rows._fast_chunk_runner = own


def compiled_runner(device):
    """The package's runner on CUDA (torch.compile with Inductor). Elsewhere the package runs the pass
    eagerly; to exercise the same comparison there, `_fast_chunk` is compiled with the `aot_eager`
    backend (Dynamo and AOTAutograd tracing, no code generation: no C++ toolchain needed)."""
    import torch

    from sm_dream.model import logit_rows

    if device.type == "cuda":
        return logit_rows._fast_chunk_runner(device)
    compiled = torch.compile(logit_rows._fast_chunk, dynamic=True, backend="aot_eager")
    return lambda chunk, f, *args: compiled(f, *args)


def compiled_vs_eager(model, ids, attention, args):
    import torch

    from sm_dream.model import logit_rows

    def eager_runner(device):
        return lambda chunk, f, *rest: logit_rows._fast_chunk(f, *rest)

    with torch.no_grad():
        logits = model(ids, attention_mask=attention).logits
    positions = ids == model.config.mask_token_id
    rows = logits[positions]
    config = SimpleNamespace(mask_token_id=model.config.mask_token_id, tokenizer_vocab_size=model.config.vocab_size,
                             temperature=0.0, top_p=None, top_k=None, sampling_draws="multinomial")
    compiled = compiled_runner(torch.device(args.device))
    with row_pass(lambda device: compiled):
        got = logit_rows.step_rows(rows, "entropy", config, 3, positions=positions)
    if logit_rows._COMPILED.get("fast_chunk", True) is None:
        return None, False, "torch.compile failed here; the decoding step fell back to eager"
    with row_pass(eager_runner):
        want = logit_rows.step_rows(rows, "entropy", config, 3, positions=positions)
    # bf16 logits over 152,064 ids tie exactly now and then: a different id counts only if its value differs
    differ = got.tokens != want.tokens
    values = rows.float()
    tied = torch.equal(values[differ, got.tokens[differ]], values[differ, want.tokens[differ]])
    ids_differ = (got.feedback.topk_ids != want.feedback.topk_ids).any(-1)
    probs = (got.feedback.topk_probs - want.feedback.topk_probs).abs().max().item()  # ties: the same values
    conf = (got.confidence - want.confidence).abs().max().item()
    entropy = (got.feedback.entropy - want.feedback.entropy).abs().max().item()
    ok = tied and max(conf, probs, entropy) <= 1e-4
    return (dict(rows=rows.shape[0], tokens_differ=int(differ.sum()), topk_ids_differ=int(ids_differ.sum()),
                 max_conf_diff=conf, max_probs_diff=probs, max_entropy_diff=entropy), ok,
            "entropy, SM k=3; a differing id must tie in value; float diffs <= 1e-4")


def _generate(model, ids, mask, new, **kwargs):
    return model.diffusion_generate(ids, attention_mask=mask, max_new_tokens=new, alg="entropy", temperature=0.0,
                                    return_dict_in_generate=True, stop_when_finished=False, **kwargs)


def batched_vs_single(model, args, label):
    """Two left-padded sequences run together and each alone: the first step's logits agree within
    the bf16 criterion (batched matmuls round differently), and, on the tiny float32 model (peaked
    rows, no near-ties), the SM decodings (plain, block + prefix cache) give identical tokens."""
    import torch

    dev, mask_id = args.device, model.config.mask_token_id
    gen = torch.Generator().manual_seed(2)
    prompt, new = (16, 16) if args.tiny or label == "tiny" else (64, 64)
    a = torch.randint(0, 150000, (1, prompt), generator=gen)
    b = torch.randint(0, 150000, (1, prompt - 4), generator=gen)
    pad = model.config.pad_token_id
    both = torch.cat([a, torch.cat([torch.full((1, 4), pad), b], 1)]).to(dev)
    mask = torch.ones_like(both)
    mask[1, :4] = 0
    canvas = torch.cat([both, torch.full((2, new), mask_id, device=dev)], 1)
    canvas_mask = torch.cat([mask, torch.ones(2, new, dtype=mask.dtype, device=dev)], 1)
    with torch.no_grad():
        together = model(canvas, attention_mask=canvas_mask).logits
        one = model(canvas[:1]).logits[0]
        two = model(canvas[1:, 4:]).logits[0]
    rows_together = torch.cat([together[0], together[1, 4:]]).cpu()
    rows_alone = torch.cat([one, two]).cpu()
    mx, mean, rel, top1, decisive = logits_agreement(rows_alone, rows_together)
    value = dict(max=round(mx, 5), rel_mean=round(rel, 5), top1_decisive=round(decisive, 4))
    ok = rel <= BF16_REL_MEAN and decisive >= BF16_TOP1
    note = f"first-step logits, rel_mean <= {BF16_REL_MEAN}, top1_decisive >= {BF16_TOP1}"
    if label == "tiny":
        from sm_dream.tiny import tiny_config

        exact = build(tiny_config(initializer_range=0.2, sm_init_scale=0.5), dev, torch.float32)
        same = True
        for extra in ({}, dict(block_length=8, use_cache=True)):
            kw = dict(steps=new // 2, soft_masking=True, **extra)
            pair = _generate(exact, both, mask, new, **kw).sequences
            same &= torch.equal(pair[0], _generate(exact, both[:1], None, new, **kw).sequences[0])
            same &= torch.equal(pair[1, 4:], _generate(exact, both[1:, 4:], None, new, **kw).sequences[0])
        value["fp32_tokens_identical"] = same
        ok = ok and same
        note += "; float32 SM decodings (plain, block+prefix cache): identical tokens"
    return value, ok, note


def sm_off_vs_scale_zero(model, ids, attention, args, label):
    """w_s = sigmoid(-inf) = 0 makes lambda 0: the logits with SM feedback equal those without,
    exactly. On the tiny model (peaked rows) SM decodings also give SM off's tokens exactly; on random
    7B rows the positions' confidences nearly tie, and SM on computes them from the shared softmax
    (rounded differently in the last bits), so the unmasking order may differ there without error."""
    import torch

    from sm_dream import feedback_from_logits

    s_raw = model.soft_mask.s_raw
    saved = s_raw.detach().clone()
    mask_id = model.config.mask_token_id
    try:
        with torch.no_grad():
            plain = model(ids, attention_mask=attention).logits
            feedback = feedback_from_logits(plain, ids == mask_id, 3)
            s_raw.fill_(float("-inf"))
            zero = model(ids, attention_mask=attention, sm_feedback=feedback).logits
        value = {"logits_identical": torch.equal(plain, zero)}
        if label == "tiny":
            prompt = ids[:, :16]
            mask = torch.ones_like(prompt)
            mask[1, :4] = 0
            new = 16
            runs = {}
            for sm in (False, True):
                runs[sm] = [_generate(model, prompt, mask, new, steps=new // 2, soft_masking=sm, **e).sequences
                            for e in ({}, dict(block_length=8, dual_cache=True))]
            value["tokens_identical"] = all(torch.equal(x, y) for x, y in zip(runs[False], runs[True]))
    finally:
        with torch.no_grad():
            s_raw.copy_(saved)
    ok = all(value.values())
    return value, ok, "logits with SM feedback at w_s = 0 vs without" + \
        ("; SM decodings (plain, block+dual cache): identical tokens" if label == "tiny" else "")


RELOAD = """
import sys
sys.modules["sm_dream"] = None  # a Python where sm_dream cannot be imported: the checkpoint's own code
import torch
from transformers import AutoModel
folder, device = sys.argv[1], sys.argv[2]
saved = torch.load(folder + "/probe.pt")
model = AutoModel.from_pretrained(folder, trust_remote_code=True, dtype="auto").to(device).eval()
dtypes = sorted({str(p.dtype) for p in model.soft_mask.parameters()})
model.soft_mask.float()  # as sm_dream's loaders keep them (like for like)
feedback = sys.modules[type(model).__module__].SoftMaskFeedback(**saved["feedback"])
with torch.no_grad():
    got = model(saved["ids"].to(device), sm_feedback=feedback).logits.cpu()
print("RESULT", type(model).__module__, (got.float() - saved["logits"].float()).abs().max().item(),
      str(got.dtype) == str(saved["logits"].dtype), ",".join(dtypes))
"""


def save_reload(model, args):
    """save_pretrained from the device; a fresh process without sm_dream loads it with
    AutoModel.from_pretrained(trust_remote_code=True): the checkpoint's own code, identical logits
    (with SM feedback) in the same dtype."""
    import torch

    from sm_dream import feedback_from_logits

    dev = args.device
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 150000, (2, 32), generator=gen)
    ids[:, 16:] = model.config.mask_token_id
    ids = ids.to(dev)
    with torch.no_grad():
        feedback = feedback_from_logits(model(ids).logits, ids == model.config.mask_token_id, 3)
        want = model(ids, sm_feedback=feedback).logits.cpu()
    feedback = {k: (v.cpu() if torch.is_tensor(v) else v) for k, v in vars(feedback).items()}
    with tempfile.TemporaryDirectory(dir=args.work_dir) as folder:
        model.save_pretrained(folder)
        torch.save({"ids": ids.cpu(), "feedback": feedback, "logits": want}, f"{folder}/probe.pt")
        proc = subprocess.run([sys.executable, "-c", RELOAD, folder, dev], capture_output=True, text=True)
    result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    if proc.returncode or not result:
        return None, False, f"reload failed: {(proc.stderr.strip().splitlines() or [''])[-1][:300]}"
    _, module, diff, same_dtype, sm_dtypes = result[0].split()
    own_code = "transformers_modules" in module
    ok = own_code and float(diff) == 0.0 and same_dtype == "True"
    return float(diff), ok, (f"own code {own_code}, logits dtype kept {same_dtype}, SM scalars reloaded as "
                             f"{sm_dtypes}; max |logits diff| must be 0")


# ---------------------------------------------------------------------------------------------- stage 2


GEN_MODES = {  # name -> diffusion_generate arguments (blocks of 32, Fast-dLLM's)
    "plain": {},
    "block": dict(block_length=32),
    "prefix": dict(block_length=32, use_cache=True),
    "dual": dict(block_length=32, dual_cache=True),
    "threshold0.9": dict(block_length=32, use_cache=True, threshold=0.9),
}


def stage_generation(args, record):
    import torch

    dev = args.device
    prompt, new, wide = (16, 32, 2) if args.tiny else (256, 512, 8)
    model = build(shapes(args), dev, args.dtype)
    gen = torch.Generator().manual_seed(4)
    record("setup", f"prompt {prompt}, {new} new tokens, entropy, T=0, blocks of 32", note="SM k=3")

    def timed(batch, budget, mode, sm):
        ids = torch.randint(0, 150000, (batch, prompt), generator=gen).to(dev)
        kwargs = dict(GEN_MODES[mode], soft_masking=sm)
        if "threshold" not in kwargs:
            kwargs["nfe_budget"] = budget
        sync(dev)
        start = time.perf_counter()
        out = _generate(model, ids, None, new, **kwargs)
        sync(dev)
        return time.perf_counter() - start, out.nfe

    timed(1, 0.25, "dual", True)  # warm-up: kernels, the compiled row pass
    # Most informative first: every mode at budget 1/4 (batch 1, then 8), then budgets 1/2 and 1.
    plan = [(1, 0.25, m) for m in GEN_MODES] + [(wide, 0.25, m) for m in ("plain", "prefix", "dual")]
    later = ["plain", "dual"] if args.tiny else [m for m in GEN_MODES if m != "threshold0.9"]
    plan += [(1, b, m) for b in (0.5, 1.0) for m in later]
    for batch, budget, mode in plan:
        reset_peak(dev)
        off, nfe_off = timed(batch, budget, mode, False)
        on, nfe_on = timed(batch, budget, mode, True)
        where = f"batch {batch}, {mode}" + ("" if mode.startswith("threshold") else f", budget {budget:g}")
        record(f"{where}: tokens/s SM off / on", [round(batch * new / off, 1), round(batch * new / on, 1)], "tok/s",
               note=f"NFE {nfe_off} / {nfe_on}" + (f"; peak {peak_gib(dev)} GiB" if peak_gib(dev) else ""))
        ratio = on / off
        record(f"{where}: time SM on / off", round(ratio, 3), "x", TARGETS["generation_sm_ratio"],
               ok=None if args.tiny else ratio <= TARGETS["generation_sm_ratio"])


# ---------------------------------------------------------------------------------------------- stage 3


def stage_training(args, record):
    import torch
    from bench_training import step, unfolded

    from sm_dream.training.adapters import optimizer_groups, prepare_for_finetuning
    from sm_dream.training.folding import folded_adapters

    dev = args.device
    seqs = [(64, 2)] if args.tiny else [(2048, 2), (2048, 28), (4096, 28)]
    for seq, layers in seqs:
        label = f"{layers} layers, 2 x {seq} tokens"
        model = None
        try:
            reset_peak(dev)
            model = prepare_for_finetuning(build(shapes(args, layers=layers), dev, args.dtype), "dora")
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.train()
            optimizer = torch.optim.AdamW(optimizer_groups(model, 1e-5, 1e-2, 0.0, []))
            with torch.no_grad():  # adapters away from their zero start, so that folding has work to do
                for name, p in model.named_parameters():
                    if "lora_B" in name:
                        p.normal_(0, 0.01)
            gen = torch.Generator().manual_seed(5)
            ids = torch.randint(1, 150000, (2, seq), generator=gen).to(dev)
            response = torch.zeros(2, seq, dtype=torch.bool, device=dev)
            response[:, seq // 4:] = True

            def folded_check(model=model, ids=ids):
                with torch.no_grad():
                    with folded_adapters(model) as n:
                        folded = model(ids[:, :256]).logits
                    peft = model(ids[:, :256]).logits
                width = peft.shape[-1]
                mx, mean, rel, top1, _ = logits_agreement(peft.view(-1, width), folded.view(-1, width))
                return dict(layers_folded=n, max=round(mx, 4), rel_mean=round(rel, 5), top1=round(top1, 4)), \
                    n > 0 and rel <= BF16_REL_MEAN, f"folded pass 1 vs PEFT's forward; rel_mean <= {BF16_REL_MEAN}"

            check(record, f"{label}: folded pass 1 == PEFT", folded_check)
            variants = {"binary": (0.0, True), "sm_p0.5": (0.5, True), "sm_p1.0": (1.0, True),
                        "sm_p1.0_peft": (1.0, False)}
            times = {v: [] for v in variants}
            peaks = {}
            rounds = 1 if args.tiny else 3
            for r in range(1 + rounds):  # one warm-up round
                for variant, (p_sm, fold) in variants.items():
                    reset_peak(dev)
                    sync(dev)
                    start = time.perf_counter()
                    with contextlib.nullcontext() if fold else unfolded():
                        step(model, optimizer, ids, response, p_sm)
                    sync(dev)
                    if r:
                        times[variant].append(time.perf_counter() - start)
                        peaks[variant] = max(peaks.get(variant) or 0, peak_gib(dev) or 0) or None
            base = min(times["binary"])
            record(f"{label}: binary step", round(base, 3), "s",
                   note=f"peak {peaks['binary']} GiB" if peaks["binary"] else "")
            for variant, key in (("sm_p0.5", "train_p0.5"), ("sm_p1.0", "train_p1.0"), ("sm_p1.0_peft", None)):
                ratio = min(times[variant]) / base
                target = TARGETS.get(key) if key else None
                record(f"{label}: {variant} / binary step time", round(ratio, 3), "x", target,
                       ok=None if (args.tiny or target is None) else ratio <= target)
            if peaks["binary"]:
                ratio = peaks["sm_p1.0"] / peaks["binary"]
                record(f"{label}: peak memory SM p1.0 / binary", round(ratio, 3), "x", TARGETS["train_memory"],
                       ok=ratio <= TARGETS["train_memory"], note=f"{peaks['sm_p1.0']} / {peaks['binary']} GiB")
            else:
                record(f"{label}: peak memory SM p1.0 / binary", None, note="CUDA only")
        except torch.OutOfMemoryError as err:
            record(f"{label}: skipped", None, note=f"out of memory: {str(err)[:120]}")
        finally:
            model = optimizer = None  # freed before the next shape
            reset_peak(dev)


# ---------------------------------------------------------------------------------------------- stage 4


def stage_launchers(args, record):
    import torch

    out = Path(args.work_dir) / "tiny_recipe"
    shutil.rmtree(out, ignore_errors=True)
    if args.device.startswith("cuda"):
        launch = ["--config_file", str(ROOT / "recipes/accelerate_configs/zero2.yaml"), "--num_processes", "1"]
        extra, what = ["--use_cpu", "false"], "accelerate launch, ZeRO-2 (DeepSpeed), 1 GPU"
    else:  # DeepSpeed's CPU path first JIT-compiles a communication op (minutes): the plain launcher here
        launch = ["--cpu", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
                  "--dynamo_backend", "no"]
        extra, what = [], "accelerate launch --cpu (no DeepSpeed on CPU)"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *launch, str(ROOT / "recipes/finetune_dream_coder.py"),
           "--config", str(ROOT / "recipes/tiny/sft_sm_tiny.yaml"), "--output_dir", str(out), "--max_steps", "3",
           "--save_strategy", "no", "--eval_strategy", "no", "--export_dir", str(out / "merged"), *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    seconds = time.perf_counter() - start
    state = out / "trainer_state.json"
    steps = json.loads(state.read_text())["global_step"] if state.exists() else None
    exported = (out / "merged" / "model.safetensors").exists()
    (Path(args.out) / "launch.log").write_text(proc.stdout + proc.stderr)
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "Error" in line] if proc.returncode else []
    where = f"; {errors[0][:200]} (launch.log)" if errors else ""
    record("tiny recipe, 3 steps", round(seconds, 1), "s", ok=proc.returncode == 0 and steps == 3 and exported,
           note=f"{what}; exit {proc.returncode}, steps {steps}, merged export {exported}{where}")

    # lm-eval: the sm_dream model on 4 HumanEval prompts at NFE 1/4 (random weights: scores meaningless)
    import lm_eval
    from lm_eval.tasks import TaskManager

    from sm_dream.evaluation.lm_eval_model import SMDreamLM
    from sm_dream.evaluation.registration import task_dir
    from sm_dream.tiny import load_dream_tokenizer

    model = build(shapes(args), args.device, args.dtype)
    with tempfile.TemporaryDirectory(dir=args.work_dir) as folder:
        # The checkpoint folder only carries config and tokenizer here; the random 7B weights are
        # handed over in memory (writing and reading 15 GB would cost half a minute of the budget).
        small = build(shapes(args, layers=1) if args.tiny else _one_layer(args), "cpu", torch.float32)
        small.save_pretrained(folder)
        load_dream_tokenizer().save_pretrained(folder)
        lm = SMDreamLM(pretrained=folder, device=args.device, batch_size=4, nfe_budget=0.25)
    lm.model = lm.base_model = model
    gen_kwargs = "max_gen_toks=32" if args.tiny else None
    start = time.perf_counter()
    results = lm_eval.simple_evaluate(model=lm, tasks=["humaneval_instruct_smd"], limit=4,
                                      task_manager=TaskManager(include_path=task_dir(), include_defaults=False),
                                      confirm_run_unsafe_code=True, gen_kwargs=gen_kwargs)
    seconds = time.perf_counter() - start
    n = results["n-samples"]["humaneval_instruct_smd"]["effective"]
    record("lm-eval sm_dream, HumanEval x4, NFE 1/4", round(n / seconds, 3), "requests/s", ok=n == 4,
           note=f"{n} requests in {seconds:.1f} s, batch 4, " + ("32" if args.tiny else "768") + " new tokens")


def _one_layer(args):
    from sm_dream.tiny import tiny_config

    return tiny_config(num_hidden_layers=1)  # the folder's weights are replaced: only the vocabulary matters


STAGES = {"correctness": stage_correctness, "generation": stage_generation, "training": stage_training,
          "launchers": stage_launchers}


# ---------------------------------------------------------------------------------------------- parent


def environment(device):
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "device": device}
    for name in ("transformers", "peft", "accelerate", "deepspeed", "lm_eval"):
        try:
            from importlib.metadata import version

            info[name] = version(name)
        except Exception:
            info[name] = None
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            info["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired, IndexError):
            info["driver"] = None
    else:
        info["gpu"] = f"none ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs)"
    return info


def run_stage(args, stage, limit, figures):
    """The stage in a child process under `limit` seconds: None, or why it was skipped."""
    cmd = [sys.executable, __file__, "--child", stage, "--device", args.device, "--out", str(args.out),
           "--dtype", str(args.dtype).replace("torch.", "")] + (["--tiny"] if args.tiny else [])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "SM_DREAM_LM_EVAL_TASKS": "sm_dream"}
    if args.fail_check:
        env["SM_DREAM_GPU_CHECK_FAIL"] = "1"
    log = args.out / f"{stage}.log"
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            return f"time limit {limit:.0f} s reached (figures measured before are kept)"
    print(f"== {stage}: {time.perf_counter() - start:.1f} s, exit {rc}", flush=True)
    if rc:
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        return f"failed (exit {rc}): {lines[-1][:200] if lines else ''} (see {log.name})"
    return None


def cell(value):
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    if isinstance(value, list):
        return " / ".join(str(v) for v in value)
    return "" if value is None else str(value)


def markdown(report):
    env = report["environment"]
    lines = [f"GPU: {env.get('gpu')}" + (f" ({env.get('gpu_memory_gib')} GiB)" if env.get("gpu_memory_gib") else ""),
             f"driver {env.get('driver')}, CUDA {env.get('cuda')}, torch {env.get('torch')}, transformers "
             f"{env.get('transformers')}, peft {env.get('peft')}, accelerate {env.get('accelerate')}, deepspeed "
             f"{env.get('deepspeed')}, lm_eval {env.get('lm_eval')}; shapes {report['shapes']}; dtype "
             f"{report['dtype']}; total {report['total_seconds']} s", "",
             "| stage | figure | value | unit | target | ok | note |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in report["figures"]:
        ok = "" if row["ok"] is None else ("yes" if row["ok"] else "**NO**")
        target = "" if row["target"] is None else f"<= {row['target']}"
        lines.append(f"| {row['stage']} | {row['name']} | {cell(row['value'])} | {row['unit']} | {target} | {ok} | "
                     f"{row['note']} |")
    lines += ["", "| stage | limit (s) | seconds | skipped |", "| --- | --- | --- | --- |"]
    for stage, s in report["stages"].items():
        lines.append(f"| {stage} | {s['limit']:.0f} | {s['seconds']} | {s['skipped'] or ''} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes for every stage (CPU, tests)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "gpu_check")
    parser.add_argument("--time_scale", type=float, default=1.0, help="factor on every stage's time limit")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset, in order")
    parser.add_argument("--dtype", default=None, help="low-precision dtype (default bfloat16)")
    parser.add_argument("--child", choices=list(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--fail_check", action="store_true", help=argparse.SUPPRESS)  # tests: a failing check
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    import torch

    args.dtype = getattr(torch, args.dtype or "bfloat16")
    if args.child:
        return child(args)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device here: run with --device cpu --tiny for the CPU check")
    if args.out.exists() and any(args.out.iterdir()) and not (args.out / "figures.jsonl").exists():
        parser.error(f"--out {args.out} holds other files; give a new folder or an earlier gpu_check's")
    shutil.rmtree(args.out, ignore_errors=True)  # an earlier run's report is replaced
    args.out.mkdir(parents=True)
    figures = args.out / "figures.jsonl"
    figures.touch()
    stages, start = {}, time.perf_counter()
    for stage in args.stages.split(","):
        limit = STAGE_LIMITS[stage] * args.time_scale
        t = time.perf_counter()
        skipped = run_stage(args, stage, limit, figures)
        stages[stage] = {"limit": limit, "seconds": round(time.perf_counter() - t, 1), "skipped": skipped}
    rows = [json.loads(line) for line in figures.read_text().splitlines() if line.strip()]
    report = {"environment": environment(args.device), "shapes": "tiny" if args.tiny else "Dream-7B",
              "dtype": str(args.dtype).replace("torch.", ""), "total_seconds": round(time.perf_counter() - start, 1),
              "stages": stages, "figures": rows}
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    table = markdown(report)
    (args.out / "gpu_check.md").write_text(table)
    print(table)
    failed = [r["name"] for r in rows if r["stage"] == "correctness" and r["ok"] is False]
    if failed:
        print(f"correctness FAILED: {failed}", file=sys.stderr)
        return 1
    return 0


def child(args):
    import torch

    if args.tiny:
        torch.set_num_threads(1)
    args.work_dir = str(args.out / "work")
    os.makedirs(args.work_dir, exist_ok=True)
    global BF16_REL_MEAN
    if os.environ.get("SM_DREAM_GPU_CHECK_FAIL") and args.child == "correctness":  # tests: a tolerance nothing meets
        BF16_REL_MEAN = -1.0
    STAGES[args.child](args, Recorder(args.out / "figures.jsonl", args.child))
    return 0


if __name__ == "__main__":
    sys.exit(main())
