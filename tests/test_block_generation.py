"""Fast decoding end to end: block loop, KV caches, threshold decoding, ReMDM, SM, batching."""

import pytest
import torch

from sm_dream import SoftMaskDreamForDiffusionLM, shift_right
from sm_dream.model.blocks import plan_blocks
from sm_dream.model.generation_utils import SoftMaskDreamGenerationConfig
from sm_dream.model.soft_masking import feedback_from_logits
from sm_dream.tiny import small_vocab_config

MASK, PAD, N = 127, 0, 16


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    # w_s = 0.9, so that soft inputs change the predictions; initializer_range 0.2 (10x the default) makes
    # the random rows peaked, so that decisions compared across code paths are never float ties.
    config = small_vocab_config(sm_init_scale=0.9, sm_init_offset=-4.0, initializer_range=0.2)
    return SoftMaskDreamForDiffusionLM(config).eval()


def _prompts():
    """Two prompts of lengths 6 and 4, left-padded to 6."""
    torch.manual_seed(1)
    ids = torch.randint(1, 100, (2, 6))
    ids[1, :2] = PAD
    attention = torch.ones_like(ids)
    attention[1, :2] = 0
    return ids, attention


def _assert_same_decoding(a, b):
    """The same tokens, and the same soft inputs (positions, top ids, lambda) at every step."""
    assert torch.equal(a.sequences, b.sequences)
    for x, y in zip(a.sm_trace, b.sm_trace):
        assert (x is None) == (y is None)
        if x is not None:
            assert torch.equal(x.positions, y.positions) and torch.equal(x.top_ids, y.top_ids)
            torch.testing.assert_close(x.lam, y.lam, rtol=0, atol=0)


def _generate(model, **kwargs):
    ids, attention = _prompts()
    settings = dict(attention_mask=attention, max_new_tokens=N, steps=8, alg="entropy", return_dict_in_generate=True)
    settings.update(kwargs)
    return model.diffusion_generate(ids, **settings)


def test_one_block_without_cache_is_the_plain_loop(model):
    plain = _generate(model, output_history=True)
    block = _generate(model, block_length=N, output_history=True)
    assert torch.equal(block.sequences, plain.sequences) and block.nfe == plain.nfe == 8
    for a, b in zip(plain.history, block.history):
        assert torch.equal(a, b)
    assert plain.sm_trace[-1] is None and block.sm_trace[-1] is None
    for a, b in zip(plain.sm_trace[:-1], block.sm_trace[:-1]):  # the same soft inputs at every step
        assert torch.equal(a.positions, b.positions) and torch.equal(a.top_ids, b.top_ids)
        torch.testing.assert_close(a.lam, b.lam, rtol=0, atol=0)


@pytest.mark.parametrize("cache", ["use_cache", "dual_cache"])
@pytest.mark.parametrize("block_length", [N, 4])
def test_cache_refreshed_every_step_gives_the_uncached_tokens(model, cache, block_length):
    # Refreshing every step also refreshes the suffix feedback at every step, so the uncached
    # reference refreshes every step too (without a cache, `cache_refresh_interval` sets how often
    # the suffix feedback is refreshed).
    uncached = _generate(model, block_length=block_length, cache_refresh_interval=1)
    cached = _generate(model, block_length=block_length, cache_refresh_interval=1, **{cache: True})
    assert torch.equal(cached.sequences, uncached.sequences)
    if block_length == N:
        assert torch.equal(cached.sequences, _generate(model).sequences)


def test_without_sm_the_refresh_interval_changes_nothing_without_a_cache(model):
    refreshed = _generate(model, soft_masking=False, block_length=4, cache_refresh_interval=1)
    assert torch.equal(refreshed.sequences, _generate(model, soft_masking=False, block_length=4).sequences)


@pytest.mark.parametrize("cache", ["use_cache", "dual_cache"])
def test_first_step_after_a_refresh_has_the_uncached_logits(model, cache):
    """Per block: step 0 is the refresh (a full pass); later steps run a window against the cache."""
    seen = []

    def hook(step, x, logits):
        seen.append((step, x.clone(), logits.clone()))
        return logits

    ids, attention = _prompts()
    _generate(model, soft_masking=False, block_length=4, generation_logits_hook_func=hook, **{cache: True})
    assert len(seen) == 8  # 4 blocks x 2 steps
    for step, x, logits in seen:
        block = slice(6 + 4 * (step // 2), 10 + 4 * (step // 2))
        with torch.no_grad():
            full_attention = torch.cat([attention, torch.ones(2, N, dtype=torch.long)], 1)
            reference = shift_right(model(x, attention_mask=full_attention).logits)
        if step % 2 == 0:
            torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5)
        else:  # the window: fresh rows from the block start on (not the stale refresh rows)
            assert torch.isfinite(logits[:, block]).all() and torch.isnan(logits[:, : block.start]).all()
            if cache == "dual_cache":
                assert torch.isnan(logits[:, block.stop:]).all()
            assert (logits[:, block] - reference[:, block]).abs().max() > 1e-4  # stale K/V elsewhere


@pytest.mark.parametrize("extra", [dict(use_cache=True), dict(dual_cache=True),
                                   dict(use_cache=True, threshold=0.2), dict(threshold=0.2)])
def test_batched_left_padded_equals_one_prompt_at_a_time(model, extra):
    batched = _generate(model, block_length=4, **extra).sequences
    ids, _ = _prompts()
    for row, pad in ((0, 0), (1, 2)):
        single = model.diffusion_generate(ids[row:row + 1, pad:], max_new_tokens=N, steps=8, alg="entropy",
                                          block_length=4, **extra)
        assert torch.equal(batched[row:row + 1, pad:], single)


def _commits_per_step(output):
    canvases = [torch.full_like(output.history[0], MASK)] + list(output.history)
    return [((a == MASK) & (b != MASK))[:, 6:].sum(-1).tolist() for a, b in zip(canvases, canvases[1:])]


@pytest.mark.parametrize("cache", [{}, {"use_cache": True}])
def test_threshold_above_one_commits_one_token_per_step(model, cache):
    out = _generate(model, threshold=1.01, block_length=4, output_history=True, **cache)
    assert out.nfe == N and (out.sequences != MASK).all()
    assert _commits_per_step(out) == [[1, 1]] * N


@pytest.mark.parametrize("cache", [{}, {"dual_cache": True}])
def test_threshold_zero_fills_a_block_per_step(model, cache):
    out = _generate(model, threshold=0.0, block_length=4, output_history=True, **cache)
    assert out.nfe == N // 4 and _commits_per_step(out) == [[4, 4]] * (N // 4)
    whole = _generate(model, threshold=0.0)  # no cache, one block: the no-cache variant
    assert whole.nfe == 1 and (whole.sequences != MASK).all()


def test_threshold_commits_exactly_the_confident_positions(model):
    """Reference: with temperature 0, p(x0) = max softmax prob of the suppressed raw logits."""
    seen = []

    def hook(step, x, logits):
        seen.append((x.clone(), logits.clone()))
        return logits

    out = _generate(model, threshold=0.05, block_length=8, generation_logits_hook_func=hook, output_history=True)
    for (x, logits), after in zip(seen, out.history):
        masked = x == MASK
        block = torch.zeros_like(masked)
        first = 6 + 8 * int((x[:, 6:14] != MASK).all())
        block[:, first:first + 8] = True
        probs = logits.float().clone()
        probs[..., MASK] = float("-inf")
        confidence = probs.softmax(-1).max(-1).values.masked_fill(~(masked & block), -1.0)  # (b, l)
        expected = (confidence >= 0.05) | (confidence == confidence.max(-1, keepdim=True).values)
        assert torch.equal((masked & (after != MASK)), expected & masked & block)


def test_threshold_confidence_is_the_model_probability_whatever_the_temperature(model):
    """At temperature 0.1 / top-p 0.9 the sampling distribution is ~one-hot; the test uses softmax(logits)."""
    seen = []

    def hook(step, x, logits):
        seen.append((x.clone(), logits.clone()))
        return logits

    out = _generate(model, threshold=0.3, block_length=N, temperature=0.1, top_p=0.9, output_history=True,
                    generation_logits_hook_func=hook, generator=torch.Generator().manual_seed(0))
    forced = 0
    for (x, logits), after in zip(seen, out.history):
        committed = (x == MASK) & (after != MASK)  # (b, l)
        probs = logits.float().clone()
        probs[..., MASK] = float("-inf")
        p_token = probs.softmax(-1).gather(-1, after.unsqueeze(-1)).squeeze(-1)  # p(committed token)
        below = committed & (p_token < 0.3)
        assert (below.sum(-1) <= 1).all()  # only the one forced commit of a row may be below tau
        forced += int(below.sum())
    assert out.nfe > 1 and forced > 0  # tau binds: blocks are not filled in one step


@pytest.mark.parametrize("horizon", [None, 0, 2, N])
def test_suffix_feedback_comes_from_the_blocks_refresh_up_to_the_horizon(model, horizon):
    # Blocks of 4 from column 6; steps 4..7 decode block 2 (columns 10..13), its refresh is step 4,
    # whose feedback serves steps 5..7. The refresh feeds back the suffix masks up to `horizon`
    # positions after the block (None: one block length), the other steps only the block's masks.
    reach = 14 + (4 if horizon is None else horizon)
    suffix = torch.zeros(2, 6 + N, dtype=torch.bool)
    suffix[:, 14:reach] = True  # the fed-back part of the suffix
    beyond = torch.zeros_like(suffix)
    beyond[:, reach:] = True
    out = _generate(model, use_cache=True, block_length=4, steps=16, output_history=True, sm_feedback_horizon=horizon)
    states = out.sm_trace[4:7]
    assert all(s is not None for s in states)
    first = states[0]
    for state in states:
        assert state.positions[suffix].all() and not state.positions[beyond].any()
        assert torch.equal(state.top_ids[suffix[state.positions]], first.top_ids[suffix[first.positions]])
    # Without a cache the same rule: the suffix feedback comes from the refresh (step 4), the
    # block's from each step. Checked against the logits the steps produced (seen through the logits
    # hook), not by asking that the top candidates change: a random model's near-uniform rows would
    # make that a float tie.
    seen = {}

    def keep_logits(step, x, logits):
        seen[step] = logits.clone()
        return logits

    uncached = _generate(model, block_length=4, steps=16, output_history=True, sm_feedback_horizon=horizon,
                         generation_logits_hook_func=keep_logits)
    for step in range(4, 7):
        state = uncached.sm_trace[step]
        logits = torch.where(suffix.unsqueeze(-1), seen[4], seen[step])  # suffix rows from the refresh
        reference = feedback_from_logits(logits, state.positions, k=model.config.sm_top_k)
        assert state.positions[suffix].all() and not state.positions[beyond].any()
        assert torch.equal(state.top_ids, reference.topk_ids[:, 0])
        torch.testing.assert_close(state.top_probs, reference.topk_probs[:, 0], rtol=0, atol=0)
    # Without the hook, each row is read once (`step_rows`); the same tokens and feedback.
    fused = _generate(model, block_length=4, steps=16, output_history=True, sm_feedback_horizon=horizon)
    _assert_same_decoding(fused, uncached)


def test_the_feedback_horizon_is_validated(model):
    for bad in (-1, 1.5, "next", True):
        with pytest.raises(ValueError, match="sm_feedback_horizon"):
            _generate(model, block_length=4, sm_feedback_horizon=bad)


def test_refreshing_every_step_without_a_cache_feeds_back_the_whole_suffix_every_step(model):
    seen = {}

    def keep_logits(step, x, logits):
        seen[step] = logits.clone()
        return logits

    out = _generate(model, block_length=4, steps=16, output_history=True, cache_refresh_interval=1,
                    sm_feedback_horizon=N, generation_logits_hook_func=keep_logits)
    for step in range(4, 7):
        state = out.sm_trace[step]
        reference = feedback_from_logits(seen[step], state.positions, k=model.config.sm_top_k)
        assert torch.equal(state.top_ids, reference.topk_ids[:, 0])
        torch.testing.assert_close(state.top_probs, reference.topk_probs[:, 0], rtol=0, atol=0)


@pytest.mark.parametrize("cache", [None, "use_cache", "dual_cache"])
def test_a_refresh_feeds_the_suffix_when_the_schedule_turns_sm_on_inside_the_block(model, cache):
    # binary_then_sm with t' = 0.32: factor 0 before step 11 (f = step / 16 < 0.68), 1 from step 11,
    # the last step of block 3 (steps 8..11, columns 14..17). Pass 11 gets the suffix feedback of the
    # block's refresh (step 8, whose own factor is 0) and the block's of step 10 (step 9 commits).
    seen = {}

    def keep_logits(step, x, logits):
        seen[step] = logits.clone()
        return logits

    flags = {cache: True} if cache else {}
    kwargs = dict(block_length=4, steps=16, output_history=True, sm_schedule="binary_then_sm", sm_threshold=0.32,
                  sm_feedback_horizon=N, **flags)
    out = _generate(model, generation_logits_hook_func=keep_logits, **kwargs)
    assert all(state is None for state in out.sm_trace[:10]) and out.sm_trace[10] is not None
    suffix = torch.zeros(2, 6 + N, dtype=torch.bool)
    suffix[:, 18:] = True
    state = out.sm_trace[10]
    logits = torch.where(suffix.unsqueeze(-1), seen[8], seen[10])
    reference = feedback_from_logits(logits, state.positions, k=model.config.sm_top_k)
    assert state.positions[suffix].all()
    assert torch.equal(state.top_ids, reference.topk_ids[:, 0])
    torch.testing.assert_close(state.top_probs, reference.topk_probs[:, 0], rtol=0, atol=0)
    assert torch.equal(_generate(model, **kwargs).sequences, out.sequences)  # the fused pass (no hook) alike


@pytest.mark.parametrize("alg,temperature", [("entropy", 0.0), ("origin", 0.7)])
def test_remasking_with_sigma_zero_is_plain_decoding(model, alg, temperature):
    def run(**extra):
        return _generate(model, alg=alg, temperature=temperature, generator=torch.Generator().manual_seed(5),
                         **extra).sequences

    plain = run()
    assert torch.equal(run(remasking="cap", remasking_eta=0.0), plain)
    assert torch.equal(run(remasking="rescale", remasking_eta=0.0), plain)


@pytest.mark.parametrize("sm", [False, True])
def test_remasking_remasks_generated_tokens_only_and_finishes(model, sm):
    out = _generate(model, alg="origin", temperature=0.7, steps=16, remasking="rescale", remasking_eta=1.0,
                    soft_masking=sm, output_history=True, generator=torch.Generator().manual_seed(0))
    ids, _ = _prompts()
    remasked = 0
    for before, after in zip(out.history, out.history[1:]):
        assert torch.equal(after[:, :6], ids)
        remasked += int(((before != MASK) & (after == MASK)).sum())
    assert remasked > 0 and (out.sequences != MASK).all()
    if sm:  # remasked positions enter the next pass with feedback from the pass that remasked them
        for step, (before, after) in enumerate(zip(out.history, out.history[1:]), start=1):
            again = (before != MASK) & (after == MASK)
            if again.any():
                assert out.sm_trace[step].positions[again].all()


def test_loop_remasking_runs_with_a_cache_and_sm(model):
    out = _generate(model, remasking="loop", use_cache=True, block_length=8, steps=16, alg="maskgit_plus")
    assert out.nfe == 16 and (out.sequences != MASK).all()
    # inference-time scaling: more steps than tokens, allowed with remasking only
    scaled = _generate(model, remasking="loop", steps=2 * N, alg="entropy")
    assert scaled.nfe == 2 * N and (scaled.sequences != MASK).all()
    with pytest.raises(ValueError, match="steps=32 exceeds max_new_tokens=16"):
        _generate(model, steps=2 * N, alg="entropy")


def test_stop_when_finished_stops_after_the_block_with_eos(model):
    def eos_ends_first_block(step, x, logits):
        logits[:, 6:9, 5] = 1e4  # the first block reads 5 5 5 eos; no later position may be eos
        logits[:, 9, PAD] = 1e4
        logits[:, 10:, PAD] = -1e4
        return logits

    out = _generate(model, use_cache=True, block_length=4, stop_when_finished=True,
                    generation_logits_hook_func=eos_ends_first_block)
    assert out.nfe == 2  # the two steps of the first block, nothing after
    assert out.sequences[:, 6:].tolist() == [[5, 5, 5] + [PAD] * (N - 3)] * 2


def test_tokens_hook_sees_the_step_logits_and_can_edit_tokens(model):
    calls = []

    def hook(step, x, logits):
        calls.append((step, None if logits is None else tuple(logits.shape)))
        if step is not None:
            x[:, -1] = 7  # forced last token, as Dream's hooks allow
        return x

    out = _generate(model, dual_cache=True, block_length=8, generation_tokens_hook_func=hook)
    assert calls == [(None, None)] + [(i, (2, 6 + N, 128)) for i in range(8)]
    assert (out.sequences[:, -1] == 7).all()


def test_eval_settings_pass_the_fast_decoding_args_to_diffusion_generate(model):
    from sm_dream.evaluation.eval_settings import GenerationSettings

    settings = GenerationSettings(temperature=0.0, extra=dict(block_length=4, dual_cache=True, threshold=0.0))
    ids, attention = _prompts()
    out = model.diffusion_generate(ids, attention_mask=attention, return_dict_in_generate=True,
                                   **settings.generate_kwargs(N))
    assert out.nfe == N // 4 and (out.sequences != MASK).all()  # tau = 0: one pass per block


@pytest.mark.slow  # imports lm-eval and loads a Dream-vocabulary checkpoint: ~30 s here
def test_lm_eval_model_args_reach_the_block_loop():
    from lm_eval.api.instance import Instance
    from lm_eval.api.registry import get_model
    from lm_eval_testing import shared_tiny_model

    args = f"pretrained={shared_tiny_model()},batch_size=2,block_length=4,use_cache=true,threshold=0.0,temperature=0.0"
    lm = get_model("sm_dream").create_from_arg_string(args)
    assert lm.settings.extra == {"block_length": 4, "use_cache": True, "threshold": 0.0}
    requests = [Instance("generate_until", {}, (text, {"until": [], "max_gen_toks": 8}), i, ("t", i, 1))
                for i, text in enumerate(["a prompt", "another, longer prompt"])]
    answers = lm.generate_until(requests)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert lm.get_model_info()["sm_dream"]["tasks"]["t"]["nfe_per_sample"] == 2  # tau = 0: one pass per block


def test_plan_and_errors():
    config = SoftMaskDreamGenerationConfig(steps=8, threshold=None, block_length=5)
    plan = plan_blocks(config, prompt_length=3, new_tokens=16)
    # Without a cache the first block starts at column 0: masks inside the prompt decode with it.
    assert plan.blocks == [(0, 8), (8, 13), (13, 18), (18, 19)]
    assert plan.steps == [2, 2, 3, 1] and plan.cache_kind is None
    plain = plan_blocks(SoftMaskDreamGenerationConfig(steps=4), prompt_length=3, new_tokens=16)
    assert plain.blocks == [(0, 19)] and plain.steps == [4]  # plain decoding: one block, no cache
    cached = plan_blocks(SoftMaskDreamGenerationConfig(use_cache=True, steps=64), 3, 64)
    assert cached.blocks[0] == (3, 35) and cached.cache_kind == "prefix"  # default B = 32, the prompt is the prefix
    with pytest.raises(ValueError, match="steps=2 cannot give each of the 4 blocks"):
        plan_blocks(SoftMaskDreamGenerationConfig(steps=2, block_length=4), 0, 16)
    for fields, message in [
        (dict(threshold=0.9, remasking="cap"), "remasking='cap' is invalid: ReMDM needs a time grid"),
        (dict(block_length=0), "block_length=0 is invalid"),
        (dict(threshold=-0.1), "threshold=-0.1 is invalid"),
    ]:
        with pytest.raises(ValueError, match=message):  # the generation config's validator
            SoftMaskDreamGenerationConfig(**fields)
    assert SoftMaskDreamGenerationConfig().use_cache is False  # not transformers' autoregressive default


@pytest.mark.parametrize("alg,temperature", [("entropy", 0.0), ("origin", 0.0), ("entropy", 0.7), ("origin", 0.7)])
def test_a_refresh_reads_its_rows_once_with_the_draws_of_the_reference(model, alg, temperature):
    # A refresh predicts the block and the next block. Without a hook the loop reads those rows once
    # (all of them in one pass where nothing is drawn, else the block's rows alone, then the others);
    # with a hook it samples from the block's rows and takes the feedback apart. Same draws, same tokens.
    def run(**extra):
        return _generate(model, alg=alg, temperature=temperature, block_length=4, steps=8, output_history=True,
                         generator=torch.Generator().manual_seed(3), **extra)

    fused, hooked = run(), run(generation_logits_hook_func=lambda step, x, logits: logits)
    _assert_same_decoding(fused, hooked)
    assert any(t is not None and bool(t.positions[:, 14:].any()) for t in fused.sm_trace)  # a horizon was fed
