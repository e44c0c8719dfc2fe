"""KV caches for block decoding: a cached window forward equals the uncached forward after a refresh."""

import pytest
import torch

from sm_dream import SoftMaskDreamForDiffusionLM, SoftMaskFeedback, feedback_from_logits, shift_right
from sm_dream.model.cache import DualKVCache, PrefixKVCache, make_kv_cache
from sm_dream.model.modeling_sm_dream import default_position_ids
from sm_dream.tiny import small_vocab_config

MASK, PAD = 127, 0


def _model():
    # w_s = 0.9 so that the SM blend visibly changes the inputs; peaked random rows (initializer_range
    # 0.2) so that decisions compared across code paths are never float ties.
    config = small_vocab_config(sm_init_scale=0.9, sm_init_offset=-4.0, initializer_range=0.2)
    return SoftMaskDreamForDiffusionLM(config).eval()


def _canvas():
    """Two left-padded rows: prompt, a few decoded tokens, then masks. (b, L) = (2, 20)."""
    ids = torch.randint(1, 100, (2, 20))
    ids[:, 9:] = MASK
    ids[:, 10] = 5  # a decoded token inside the masked region
    ids[1, :3] = PAD
    attention = torch.ones_like(ids)
    attention[1, :3] = 0
    return ids, attention


def _feedback(model, ids, attention):
    """SM feedback at every masked position, from an uncached pass (as a previous step would give)."""
    with torch.no_grad():
        logits = shift_right(model(ids, attention_mask=attention).logits)
    return feedback_from_logits(logits, ids == MASK, k=3)


def _full(model, ids, attention, feedback):
    with torch.no_grad():
        return model(ids, attention_mask=attention, sm_feedback=feedback).logits  # (b, L, V)


def _windowed(model, cache, ids, attention, feedback, start, end):
    """Refresh (full pass, recorded) then the window [start, end) against the cache."""
    position_ids = default_position_ids(attention, ids.shape[0], ids.shape[1], 0, ids.device)
    with torch.no_grad():
        cache.begin_refresh()
        refresh = model(ids, attention_mask=attention, position_ids=position_ids, past_key_values=cache,
                        sm_feedback=feedback).logits
        cache.set_window(start, end)
        window = model(ids[:, start:end], attention_mask=attention, position_ids=position_ids[:, start:end],
                       past_key_values=cache, sm_feedback=feedback and feedback.window(start, end)).logits
    return refresh, window


@pytest.mark.parametrize("kind,start,end", [("prefix", 8, 20), ("dual", 8, 14), ("dual", 15, 20)])
def test_window_forward_after_refresh_equals_uncached_forward(kind, start, end):
    model, (ids, attention) = _model(), _canvas()
    feedback = _feedback(model, ids, attention)
    full = _full(model, ids, attention, feedback)
    refresh, window = _windowed(model, make_kv_cache(kind), ids, attention, feedback, start, end)
    torch.testing.assert_close(refresh, full, rtol=0, atol=0)  # recording does not change the pass
    torch.testing.assert_close(window, full[:, start:end], rtol=1e-5, atol=1e-5)
    # The soft inputs matter here: without feedback the logits differ.
    assert (full - _full(model, ids, attention, None)).abs().max() > 1e-3


def test_window_started_one_position_early_predicts_the_first_block_position():
    """Block [9, 14): the window starts at 8, so the shift gives block position 9 a fresh prediction."""
    model, (ids, attention) = _model(), _canvas()
    block = torch.zeros_like(ids, dtype=torch.bool)
    block[:, 9:14] = True
    targets = block & (ids == MASK)
    with torch.no_grad():
        expected = model(ids, attention_mask=attention, target_mask=targets).logits  # (n, V), aligned
        cache = DualKVCache()
        position_ids = default_position_ids(attention, 2, 20, 0, ids.device)
        cache.begin_refresh()
        model(ids, attention_mask=attention, position_ids=position_ids, past_key_values=cache)
        cache.set_window(8, 14)
        got = model(ids[:, 8:14], attention_mask=attention, position_ids=position_ids[:, 8:14],
                    past_key_values=cache, target_mask=targets[:, 8:14]).logits
    assert got.shape == (int(targets.sum()), 128)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_batched_left_padded_window_equals_one_row_at_a_time():
    model, (ids, attention) = _model(), _canvas()
    _, batched = _windowed(model, PrefixKVCache(), ids, attention, None, 8, 20)
    pad = 3
    _, single = _windowed(model, PrefixKVCache(), ids[1:, pad:], attention[1:, pad:], None, 8 - pad, 20 - pad)
    torch.testing.assert_close(batched[1:], single, rtol=1e-5, atol=1e-5)


def test_dual_cache_writes_the_window_in_place_and_keeps_the_rest():
    model, (ids, attention) = _model(), _canvas()
    cache = DualKVCache()
    _windowed(model, cache, ids, attention, None, 8, 14)
    before = [k.clone() for k in cache.key_cache]
    changed = ids.clone()
    changed[:, 11] = 7  # a token committed in the block
    position_ids = default_position_ids(attention, 2, 20, 0, ids.device)
    with torch.no_grad():
        model(changed[:, 8:14], attention_mask=attention, position_ids=position_ids[:, 8:14], past_key_values=cache)
        fresh = make_kv_cache("dual")
        fresh.begin_refresh()
        model(changed, attention_mask=attention, position_ids=position_ids, past_key_values=fresh)
    for layer, (old, new) in enumerate(zip(before, cache.key_cache)):
        torch.testing.assert_close(new[:, :, :8], old[:, :, :8], rtol=0, atol=0)
        torch.testing.assert_close(new[:, :, 14:], old[:, :, 14:], rtol=0, atol=0)
        assert (new[:, :, 11] - old[:, :, 11]).abs().max() > 1e-4
    # Layer-0 keys depend only on token and position: the rewritten window equals a fresh refresh.
    torch.testing.assert_close(cache.key_cache[0][:, :, 8:14], fresh.key_cache[0][:, :, 8:14], rtol=1e-5, atol=1e-6)
    assert cache.get_seq_length() == 8 and cache.kv_length(6) == 20


def test_prefix_cache_keeps_only_the_prefix():
    model, (ids, attention) = _model(), _canvas()
    cache = PrefixKVCache()
    _windowed(model, cache, ids, attention, None, 8, 20)
    assert len(cache) == 2 and cache.key_cache[0].shape[-2] == 8
    assert cache.get_seq_length() == 8 and cache.kv_length(12) == 20


def test_cache_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown; choose one of \\['prefix', 'dual'\\]"):
        make_kv_cache("paged")
    with pytest.raises(ValueError, match="needs a recorded refresh pass"):
        DualKVCache().set_window(0, 4)
    model, (ids, attention) = _model(), _canvas()
    cache = PrefixKVCache()
    with torch.no_grad():
        cache.begin_refresh()
        model(ids, attention_mask=attention, past_key_values=cache)
    with pytest.raises(ValueError, match="must run to the end of the canvas \\(20\\)"):
        cache.set_window(8, 14)
    with pytest.raises(ValueError, match="not inside the cached length 20"):
        cache.set_window(25, 20)


def test_window_and_merge_feedback_keep_rows_with_their_positions():
    torch.manual_seed(1)
    logits = torch.randn(2, 10, 128)
    old_pos = torch.zeros(2, 10, dtype=torch.bool)
    old_pos[:, 4:] = True
    new_pos = torch.zeros(2, 10, dtype=torch.bool)
    new_pos[0, 5:7] = True
    new_pos[1, 2] = True
    old = feedback_from_logits(logits, old_pos, k=2)
    new = feedback_from_logits(logits * 3.0, new_pos, k=2)
    merged = SoftMaskFeedback.merge(old, new)
    assert torch.equal(merged.positions, old_pos | new_pos)
    # Reference: per position, the newest logits that produced a row.
    reference_logits = torch.where(new_pos[..., None], logits * 3.0, logits)
    reference = feedback_from_logits(reference_logits, old_pos | new_pos, k=2)
    torch.testing.assert_close(merged.entropy, reference.entropy)
    assert torch.equal(merged.topk_ids, reference.topk_ids)
    window = merged.window(3, 8)
    expected = feedback_from_logits(reference_logits[:, 3:8], (old_pos | new_pos)[:, 3:8], k=2)
    assert torch.equal(window.positions, expected.positions)
    torch.testing.assert_close(window.topk_probs, expected.topk_probs)
    assert SoftMaskFeedback.merge(None, new) is new and SoftMaskFeedback.merge(old, None) is old
    keep = torch.zeros(2, 10, dtype=torch.bool)
    keep[:, 6:] = True  # e.g. the positions still masked
    pruned = SoftMaskFeedback.merge(old, None, keep=keep)
    assert torch.equal(pruned.positions, old_pos & keep)
    torch.testing.assert_close(pruned.entropy, feedback_from_logits(logits, old_pos & keep, k=2).entropy)
    assert SoftMaskFeedback.merge(old, new, keep=torch.zeros_like(keep)) is None
    assert old.window(0, 4) is None  # no feedback row inside the window
