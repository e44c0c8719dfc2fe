"""diffusion_generate: Dream's sampler, soft-masking between steps, NFE budgets, batching, traces."""

import importlib
import importlib.util
import math
import sys

import pytest
import torch

from sm_dream import SoftMaskDreamForDiffusionLM, schedule_factor
from sm_dream.model.decoding_trace import render_decoding
from sm_dream.model.denoising import unmask_step
from sm_dream.model.generation_utils import SoftMaskDreamGenerationConfig
from sm_dream.resources import DREAM_FIXTURE
from sm_dream.model.soft_masking import SM_SCHEDULE_FUNCTIONS, entropy_from_logits
from sm_dream.tiny import load_dream_tokenizer, small_vocab_config, tiny_config
from sm_dream.model.unmasking import (
    UNMASKING_ALGORITHMS,
    StepPlan,
    diffusion_timesteps,
    get_unmasking_algorithm,
    select_most_confident,
    tokens_to_unmask,
)
from sm_dream.model.logit_rows import step_rows
from sm_dream.model.sampling import sample_tokens

MASK = 127
CONFIDENCE_ALGS = ["maskgit_plus", "topk_margin", "entropy"]


def _model(**overrides):
    fields = dict(initializer_range=0.2)  # a peaked random model: distinct confidences, no ties
    fields.update(overrides)
    return SoftMaskDreamForDiffusionLM(small_vocab_config(**fields)).eval()


def _strong_sm(**overrides):
    """A model whose lambda is ~w_s = 0.9 whatever the entropy (w_b = -10 puts the sigmoid at ~1)."""
    return _model(sm_init_scale=0.9, sm_init_offset=-10.0, **overrides)


def _prompts(b=2, length=6):
    return torch.randint(1, 100, (b, length))


def _reference_decode(model, ids, new_tokens, steps, alg, vocab_limit=MASK + 1):
    """A plain binary Dream loop, written independently: full logits, row by row, torch.topk."""
    x = torch.cat([ids, torch.full((ids.shape[0], new_tokens), MASK)], dim=1)
    ts = torch.linspace(1, 1e-3, steps + 1)
    for i in range(steps):
        masked = x == MASK
        with torch.no_grad():
            raw = model(x).logits
        logits = torch.cat([raw[:, :1], raw[:, :-1]], dim=1).float()  # Dream's shift
        logits[..., vocab_limit:] = -math.inf
        logits[..., MASK] = -math.inf
        p = logits.softmax(-1)
        conf = {
            "maskgit_plus": p.max(-1).values,
            "topk_margin": p.topk(2, -1).values[..., 0] - p.topk(2, -1).values[..., 1],
            "entropy": (p * torch.log(p + 1e-10)).sum(-1),
        }[alg]
        x0 = p.argmax(-1)
        for r in range(x.shape[0]):
            m = int(masked[r].sum())
            k = m if i == steps - 1 else int(m * (1 - ts[i + 1] / ts[i]))
            idx = conf[r].masked_fill(~masked[r], -math.inf).topk(k).indices
            x[r, idx] = x0[r, idx]
    return x


class ForwardSpy:
    """Wraps model.forward: counts calls and records (input_ids, sm_feedback, logits)."""

    def __init__(self, model):
        self.calls, self._forward = [], model.forward
        model.forward = self

    def __call__(self, *args, **kwargs):
        out = self._forward(*args, **kwargs)
        ids = args[0] if args else kwargs["input_ids"]
        self.calls.append((ids.clone(), kwargs.get("sm_feedback"), out.logits.detach().clone()))
        return out


# ---------------------------------------------------------------------------------------------
# Equivalence with a plain binary loop; SM changes the outcome only when lambda > 0


@pytest.mark.parametrize("alg", CONFIDENCE_ALGS)
def test_binary_decoding_equals_a_plain_reference_loop(alg):
    model, ids = _strong_sm(), _prompts()
    expected = _reference_decode(model, ids, new_tokens=12, steps=6, alg=alg)
    off = model.diffusion_generate(ids, max_new_tokens=12, steps=6, alg=alg, soft_masking=False)
    assert torch.equal(off, expected)
    assert not (off == MASK).any()


def test_soft_masking_with_zero_scale_is_binary_and_positive_scale_differs():
    model, ids = _strong_sm(), _prompts(b=3)
    kwargs = dict(max_new_tokens=12, steps=6, alg="entropy")
    expected = _reference_decode(model, ids, 12, 6, "entropy")
    soft = model.diffusion_generate(ids, soft_masking=True, **kwargs)
    assert not torch.equal(soft, expected)
    with torch.no_grad():
        model.soft_mask.s_raw.fill_(-math.inf)  # w_s = 0: lambda = 0 exactly
    assert model.soft_mask.mapped()["w_s"] == 0.0
    assert torch.equal(model.diffusion_generate(ids, soft_masking=True, **kwargs), expected)


def test_feedback_is_the_raw_softmax_of_the_previous_step_at_positions_still_masked():
    model, ids = _strong_sm(), _prompts()
    spy = ForwardSpy(model)
    model.diffusion_generate(ids, max_new_tokens=10, steps=5, alg="maskgit_plus", temperature=0.5, top_p=0.8,
                             soft_masking=True, generator=torch.Generator().manual_seed(1))
    assert len(spy.calls) == 5 and spy.calls[0][1] is None  # the first step has no feedback
    for (prev_ids, _, prev_rows), (ids_now, feedback, _) in zip(spy.calls, spy.calls[1:]):
        still = ids_now == MASK
        assert torch.equal(feedback.positions, still)
        keep = still[prev_ids == MASK]  # rows of the previous step that are still masked
        raw = prev_rows[keep]  # untempered, untruncated logits
        torch.testing.assert_close(feedback.entropy, entropy_from_logits(raw))
        assert torch.equal(feedback.topk_ids[:, 0], raw.argmax(-1))
        torch.testing.assert_close(feedback.scale, torch.ones(ids.shape[0]))


def test_logits_hook_changes_sampling_but_not_the_feedback():
    model, ids = _strong_sm(), _prompts()

    def force_seven(step, x, logits):
        logits[..., 7] = 1e4
        return logits

    spy = ForwardSpy(model)
    out = model.diffusion_generate(ids, max_new_tokens=8, steps=4, alg="entropy", soft_masking=True,
                                   generation_logits_hook_func=force_seven)
    assert (out[:, 6:] == 7).all()
    prev_ids, _, prev_logits = spy.calls[0]
    feedback = spy.calls[1][1]
    raw = torch.cat([prev_logits[:, :1], prev_logits[:, :-1]], dim=1)[feedback.positions]
    torch.testing.assert_close(feedback.entropy, entropy_from_logits(raw))
    assert not (feedback.topk_ids[:, 0] == 7).all()


# ---------------------------------------------------------------------------------------------
# NFE budgets and step counts


@pytest.mark.parametrize("budget,steps", [(0.25, 4), (0.5, 8), (1.0, 16)])
@pytest.mark.parametrize("soft", [False, True])
def test_forward_calls_equal_the_steps_of_each_nfe_budget(budget, steps, soft):
    model = _strong_sm()
    spy = ForwardSpy(model)
    out = model.diffusion_generate(_prompts(), max_new_tokens=16, nfe_budget=budget, alg="entropy",
                                   soft_masking=soft, return_dict_in_generate=True)
    assert out.nfe == steps == len(spy.calls)
    assert out.sequences.shape == (2, 6 + 16) and not (out.sequences == MASK).any()


def test_tokens_per_step_follow_dreams_schedule_per_row():
    def simulate(n, steps):
        ts, left, counts = diffusion_timesteps(steps, 1e-3), torch.tensor([n]), []
        for i in range(steps):
            k = tokens_to_unmask(left, ts, i)
            counts.append(int(k))
            left = left - k
        return counts

    assert simulate(256, 64) == [3] + [4] * 62 + [5]
    assert simulate(256, 256) == [0] + [1] * 254 + [2]
    assert simulate(512, 256) == [1] + [2] * 254 + [3]
    rows = tokens_to_unmask(torch.tensor([10, 40]), diffusion_timesteps(4, 1e-3), 0)
    assert rows.tolist() == [2, 9]  # each row from its own count, not the batch mean (25 -> 6, 6)


def test_each_row_unmasks_its_own_count_also_when_sampling_positions():
    confidence = torch.rand(2, 12)
    candidates = torch.ones(2, 12, dtype=torch.bool)
    candidates[0, 6:] = False
    for alg_temp in (None, 0.5):
        plan = StepPlan(counts=torch.tensor([2, 5]), transfer_prob=0.5, alg_temp=alg_temp, generator=None)
        chosen = select_most_confident(confidence, candidates, plan)
        assert chosen.sum(-1).tolist() == [2, 5] and not (chosen & ~candidates).any()
    plan = StepPlan(counts=torch.tensor([2, 5]), transfer_prob=0.5)
    top = select_most_confident(confidence, candidates, plan)
    assert torch.equal(top[1], confidence[1] >= confidence[1].topk(5).values[-1])


# ---------------------------------------------------------------------------------------------
# Batching


@pytest.mark.parametrize("soft", [False, True])
def test_left_padded_batch_gives_the_tokens_of_one_prompt_at_a_time(soft):
    model = _strong_sm()
    prompts = [torch.randint(1, 100, (n,)) for n in (3, 8, 5)]
    width = max(len(p) for p in prompts)
    ids = torch.zeros(3, width, dtype=torch.long)  # pad = eos = 0
    mask = torch.zeros(3, width, dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):], mask[r, width - len(p):] = p, 1
    kwargs = dict(max_new_tokens=10, steps=5, alg="entropy", soft_masking=soft)
    batched = model.diffusion_generate(ids, attention_mask=mask, **kwargs)
    for r, p in enumerate(prompts):
        alone = model.diffusion_generate(p[None], **kwargs)
        assert torch.equal(batched[r, width:], alone[0, len(p):])
    # the tolerance behind the equality: first-step logits agree to float noise
    with torch.no_grad():
        x = torch.cat([ids, torch.full((3, 10), MASK)], dim=1)
        full = torch.cat([mask, torch.ones(3, 10, dtype=torch.long)], dim=1)
        rows = model(x, full, target_mask=x == MASK).logits.view(3, 10, -1)  # (b, N, V), shift-aligned
        for r, p in enumerate(prompts):  # raw rows p-1 .. p+8 predict the 10 masked positions
            single = model(torch.cat([p, torch.full((10,), MASK)])[None]).logits[0, len(p) - 1 : len(p) + 9]
            assert (rows[r] - single).abs().max() < 1e-5  # observed: ~2e-6 on logits of size ~5


def test_right_padding_and_mismatched_masks_are_rejected():
    model, ids = _model(), _prompts()
    with pytest.raises(ValueError, match="padding_side='left'"):
        model.diffusion_generate(ids, attention_mask=torch.tensor([[1, 1, 1, 1, 0, 0]] * 2), max_new_tokens=4, steps=2)
    with pytest.raises(ValueError, match="must match inputs"):
        model.diffusion_generate(ids, attention_mask=torch.ones(2, 3), max_new_tokens=4, steps=2)


def test_num_return_sequences_and_max_length_follow_dream():
    model, ids = _model(), _prompts(b=2, length=6)
    assert model.diffusion_generate(ids, steps=4, alg="maskgit_plus").shape == (2, 6 + 20)  # default: 20 new
    assert model.diffusion_generate(ids, max_length=10, steps=4, alg="maskgit_plus").shape == (2, 10)
    out = model.diffusion_generate(ids, max_new_tokens=4, steps=2, alg="maskgit_plus", num_return_sequences=3)
    assert out.shape == (6, 10) and torch.equal(out[:3, :6], ids[:1].expand(3, 6))


# ---------------------------------------------------------------------------------------------
# Algorithms, schedules, sampling


@pytest.mark.parametrize("alg", sorted(UNMASKING_ALGORITHMS))
@pytest.mark.parametrize("schedule", sorted(SM_SCHEDULE_FUNCTIONS))
def test_every_algorithm_and_schedule_runs_and_never_samples_suppressed_ids(alg, schedule):
    model = _strong_sm(mask_token_id=90)  # a tokenizer of 91 ids: 91..127 are embedding rows only
    with torch.no_grad():  # make the mask and the ids without a tokenizer entry the likeliest predictions
        model.lm_head.weight[90:] = model.lm_head.weight[90:] * 0 + model.model.norm.weight * 5
    spy = ForwardSpy(model)
    out = model.diffusion_generate(_prompts(), max_new_tokens=8, steps=4, alg=alg, sm_schedule=schedule,
                                   sm_threshold=0.5, temperature=0.7, top_k=20, alg_temp=0.3,
                                   return_dict_in_generate=True)
    assert out.nfe == 4 and (out.sequences[:, 6:] < 90).all()
    for step, (_, feedback, _) in enumerate(spy.calls):
        factor = schedule_factor(schedule, step, 4, 0.5) if step else 0.0
        assert (feedback is None) == (factor == 0.0)
        if feedback is not None:
            torch.testing.assert_close(feedback.scale, torch.full((2,), factor))


def test_vocabulary_limit_defaults_to_the_mask_id_plus_one_and_can_be_set():
    def favour(token):
        def hook(step, x, logits):
            logits[..., token] = 1e4
            return logits
        return hook

    model, ids = _model(), _prompts()
    out = model.diffusion_generate(ids, max_new_tokens=8, steps=8, alg="origin",
                                   generation_logits_hook_func=favour(MASK))
    assert not (out == MASK).any()
    wide, kwargs = _model(mask_token_id=90), dict(max_new_tokens=8, steps=8, generation_logits_hook_func=favour(120))
    assert not (wide.diffusion_generate(ids, alg="entropy", **kwargs) == 120).any()
    assert (wide.diffusion_generate(ids, alg="entropy", tokenizer_vocab_size=128, **kwargs)[:, 6:] == 120).all()


def test_confidences_are_float32_where_bfloat16_would_tie():
    probs_differ = torch.tensor([[3.0] + [0.0] * 127, [3.001] + [0.0] * 127])  # two masked rows
    p = probs_differ.softmax(-1)[:, 0]
    assert p[1] > p[0] and p.bfloat16()[0] == p.bfloat16()[1]  # a tie in Dream's bf16 buffer
    x = torch.full((1, 2), MASK)
    config = SoftMaskDreamGenerationConfig(mask_token_id=MASK, tokenizer_vocab_size=128, temperature=0.0)
    plan = StepPlan(counts=torch.tensor([1]), transfer_prob=0.5)
    rows = step_rows(probs_differ, "maskgit_plus", config)
    out = unmask_step(x, x == MASK, rows, get_unmasking_algorithm("maskgit_plus"), plan)
    assert out.tolist() == [[MASK, 0]]  # float32 picks the more confident right-hand position


def test_top_p_and_top_k_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = sample_tokens(logits, top_p=0.7)[1] > 0
    assert kept.tolist() == [[True, True, False, False]]  # mass before the 3rd token is 0.8 > 0.7
    assert (sample_tokens(logits, top_p=0.1)[1] > 0).tolist() == [[True, False, False, False]]
    x0, probs = sample_tokens(torch.randn(50, 128), temperature=1.0, top_k=1)
    assert torch.equal(probs.argmax(-1), x0) and torch.equal(probs.max(-1).values, torch.ones(50))


def test_sampling_is_reproducible_with_a_generator():
    model, ids = _model(), _prompts()
    kwargs = dict(max_new_tokens=8, steps=4, alg="origin", temperature=1.0, soft_masking=True)
    a = model.diffusion_generate(ids, generator=torch.Generator().manual_seed(3), **kwargs)
    b = model.diffusion_generate(ids, generator=torch.Generator().manual_seed(3), **kwargs)
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(alg="greedy"), "alg='greedy' is invalid: choose one of"),
        (dict(alg="entropy", steps=9), "steps=9 exceeds max_new_tokens=8"),
        (dict(alg="entropy", nfe_budget=2.0), "steps=16 exceeds max_new_tokens=8"),
        (dict(nfe_budget=0.0), "nfe_budget=0.0 is invalid"),
        (dict(nfe_budget=-0.5), "nfe_budget=-0.5 is invalid"),
        (dict(steps=4, nfe_budget=0.5), "pass only one"),
        (dict(sm_schedule="cosine"), "sm_schedule='cosine' is invalid"),
        (dict(soft_mask=True), r"unknown arguments \['soft_mask'\]"),
        (dict(temperature=-1.0), "temperature=-1.0 is invalid"),
        (dict(tokenizer_vocab_size=50), "tokenizer_vocab_size=50 must lie in"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _model().diffusion_generate(_prompts(), **{"max_new_tokens": 8, **kwargs})


def test_origin_may_take_more_steps_than_tokens_and_sm_needs_an_sm_model():
    out = _model().diffusion_generate(_prompts(), max_new_tokens=4, steps=9, alg="origin", return_dict_in_generate=True)
    assert out.nfe == 9 and not (out.sequences == MASK).any()
    with pytest.raises(ValueError, match="sm_enabled is False"):
        _model(sm_enabled=False).diffusion_generate(_prompts(), max_new_tokens=4, steps=2, soft_masking=True)


# ---------------------------------------------------------------------------------------------
# Hooks, history, trace, early stop


def test_hooks_are_called_like_dreams_and_history_has_one_canvas_per_step():
    model, seen = _model(), []

    def tokens_hook(step, x, logits):
        seen.append((step, None if logits is None else tuple(logits.shape)))
        return x

    out = model.diffusion_generate(_prompts(), max_new_tokens=6, steps=3, alg="maskgit_plus", output_history=True,
                                   return_dict_in_generate=True, generation_tokens_hook_func=tokens_hook)
    assert seen == [(None, None), (0, (2, 12, 128)), (1, (2, 12, 128)), (2, (2, 12, 128))]
    masks_left = [int((h == MASK).sum()) for h in out.history]
    assert len(out.history) == 3 and masks_left == sorted(masks_left, reverse=True) and masks_left[-1] == 0
    assert torch.equal(out.history[-1], out.sequences)


def test_sm_trace_records_candidate_and_lambda_and_renders():
    model, ids = _strong_sm(), _prompts()
    out = model.diffusion_generate(ids, max_new_tokens=8, steps=4, alg="entropy", soft_masking=True,
                                   sm_schedule="linear_sm_to_binary", output_history=True,
                                   return_dict_in_generate=True)
    assert len(out.sm_trace) == 4 and out.sm_trace[-1] is None
    for step, state in enumerate(out.sm_trace[:-1]):
        assert torch.equal(state.positions, out.history[step] == MASK)
        factor = schedule_factor("linear_sm_to_binary", step + 1, 4)
        assert 0.0 < factor < 1.0 and torch.allclose(state.lam, torch.full_like(state.lam, 0.9 * factor), atol=1e-3)
    text = render_decoding(out, mask_token_id=MASK, prompt_length=6)
    lines = text.splitlines()
    assert len(lines) == 4 and lines[0].count("[") == int((out.history[0][0] == MASK).sum())
    first = out.sm_trace[0]
    assert f"[{int(first.top_ids[0])} {float(first.lam[0]):.2f}]" in lines[0]
    assert "[" not in lines[-1]
    with pytest.raises(ValueError, match="output_history=True"):
        render_decoding(model.diffusion_generate(ids, max_new_tokens=4, steps=2, return_dict_in_generate=True),
                        mask_token_id=MASK)


def test_stop_when_finished_keeps_the_text_up_to_eos_with_fewer_passes():
    model, ids = _model(), _prompts(b=1)
    eos_at = 6 + 5  # canvas column whose prediction is eos (= 0); every other column predicts 9

    def left_to_right(step, x, logits):  # equal confidences: decoding goes left to right
        logits = torch.zeros_like(logits)
        logits[..., 9] = 10.0
        logits[:, eos_at:, 9], logits[:, eos_at:, 0] = 0.0, 10.0
        return logits

    kwargs = dict(max_new_tokens=16, steps=16, alg="maskgit_plus", return_dict_in_generate=True,
                  generation_logits_hook_func=left_to_right)
    full = model.diffusion_generate(ids, **kwargs)
    early = model.diffusion_generate(ids, stop_when_finished=True, output_history=True, **kwargs)
    assert full.nfe == 16 and early.nfe == 7  # step 0 unmasks nothing, then one column per step
    assert torch.equal(early.sequences[0, : eos_at + 1], full.sequences[0, : eos_at + 1])
    assert (early.sequences[0, eos_at:] == 0).all()
    assert len(early.history) == 7 and torch.equal(early.history[-1], early.sequences)


# ---------------------------------------------------------------------------------------------
# Generation config: Dream's files, the real tokenizer, saving and remote code


def test_released_generation_config_is_read_and_the_mask_comes_from_the_model():
    config = SoftMaskDreamGenerationConfig.from_pretrained(str(DREAM_FIXTURE))
    assert (config.alg, config.steps, config.eps, config.temperature, config.mask_token_id) == (
        "origin", 512, 0.001, 0.0, None)
    model = SoftMaskDreamForDiffusionLM(tiny_config(sm_init_scale=0.5)).eval()
    tokenizer = load_dream_tokenizer()
    ids = tokenizer("def add(a, b):", return_tensors="pt").input_ids
    out = model.diffusion_generate(ids, generation_config=config, max_new_tokens=6, steps=3, alg="entropy",
                                   output_history=True, return_dict_in_generate=True)
    new = out.sequences[0, ids.shape[1]:]
    assert not (new == 151666).any() and (new < len(tokenizer)).all()
    assert isinstance(tokenizer.decode(new), str)
    assert len(render_decoding(out, tokenizer, prompt_length=ids.shape[1]).splitlines()) == 3


def test_generation_config_is_saved_and_loaded_with_the_model(tmp_path):
    model = _model()
    model.generation_config.nfe_budget, model.generation_config.alg = 0.5, "entropy"
    model.save_pretrained(tmp_path)
    loaded = SoftMaskDreamForDiffusionLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded.generation_config, SoftMaskDreamGenerationConfig)
    assert (loaded.generation_config.nfe_budget, loaded.generation_config.alg) == (0.5, "entropy")
    out = loaded.diffusion_generate(_prompts(), max_new_tokens=8, return_dict_in_generate=True)
    assert out.nfe == 4  # the stored budget
    assert loaded.diffusion_generate(_prompts(), max_new_tokens=8, steps=2, return_dict_in_generate=True).nfe == 2


def test_saved_model_generates_with_its_own_code_files(tmp_path, monkeypatch):
    """The files save_pretrained writes (as loaded by trust_remote_code) generate without sm_dream."""
    _strong_sm().save_pretrained(tmp_path)
    (tmp_path / "__init__.py").write_text("")
    monkeypatch.setitem(sys.modules, "sm_dream", None)  # any `import sm_dream...` now fails
    spec = importlib.util.spec_from_file_location("saved_ckpt", tmp_path / "__init__.py",
                                                  submodule_search_locations=[str(tmp_path)])
    monkeypatch.setitem(sys.modules, "saved_ckpt", importlib.util.module_from_spec(spec))
    try:
        modeling = importlib.import_module("saved_ckpt.modeling_sm_dream")
        model = modeling.SoftMaskDreamForDiffusionLM.from_pretrained(tmp_path).eval()
        out = model.diffusion_generate(torch.tensor([[5, 6, 7]]), max_new_tokens=8, nfe_budget=0.5, alg="entropy",
                                       soft_masking=True, return_dict_in_generate=True)
    finally:
        for name in [n for n in sys.modules if n.startswith("saved_ckpt.")]:
            del sys.modules[name]
    assert type(model.generation_config).__module__ == "saved_ckpt.generation_utils"
    assert out.nfe == 4 and not (out.sequences == MASK).any()
