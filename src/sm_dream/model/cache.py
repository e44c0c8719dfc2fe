# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Key/value caches for block-wise diffusion decoding (Fast-dLLM, Wu et al. 2025, Algorithm 1).

A diffusion LM attends bidirectionally, so no key/value is ever final. Fast-dLLM's approximation:
once per block, run one full forward over the whole canvas (the *refresh*) and keep its keys and
values; until the next refresh, each step runs only a *window* of queries against those keys.

    prefix cache   keeps K/V of positions [0, start); the window is [start, L) (active block and
                   every later position); attended keys = cat(cached prefix, window keys).
    dual cache     keeps K/V of all positions [0, L); the window is [start, end) (the active block);
                   the window's new K/V are written into the cache in place, so the suffix K/V stay
                   those of the refresh.

Dream predicts the token at j from the hidden state at j - 1. The decoding loop therefore starts
the window one position *before* the active block (`start = block_start - 1`): the first block
position is predicted from a freshly computed hidden state instead of from the refresh pass, and no
token has to be committed without a confidence test (the public Fast-dLLM code does that).

Both classes implement the protocol the attention layers call (see `DreamAttention`):
`update(k, v, layer_idx) -> (k_all, v_all)`, `get_seq_length()` (cached positions before the
queries) and `kv_length(q_len)` (number of keys attended to). While *recording* (between
`begin_refresh()` and `set_window()`), `update` stores the keys/values of the full pass and returns
them unchanged, so the refresh pass is exactly the uncached forward.

This file is carried inside saved checkpoints: it imports only torch.
"""

from typing import Dict, List, Optional, Tuple, Type

import torch


class BlockKVCache:
    """Shared state: per-layer keys/values (b, kv_heads, L, hd) of the last refresh pass."""

    def __init__(self):
        self.key_cache: List[torch.Tensor] = []
        self.value_cache: List[torch.Tensor] = []
        self.start: Optional[int] = None  # first query position; None while recording
        self.end: Optional[int] = None  # one past the last query position

    @property
    def recording(self) -> bool:
        return self.start is None

    def begin_refresh(self) -> None:
        """Drop the cached keys/values; the next forward (over the whole canvas) records new ones."""
        self.key_cache, self.value_cache = [], []
        self.start = self.end = None

    def set_window(self, start: int, end: int) -> None:
        """Later forwards run the queries of canvas positions [start, end) against the cache."""
        if not self.key_cache:
            raise ValueError("set_window() needs a recorded refresh pass; "
                             "call begin_refresh() and run the full canvas first.")
        length = self.key_cache[0].shape[-2]
        if not 0 <= start < end <= length:
            raise ValueError(f"window [{start}, {end}) is not inside the cached length {length}.")
        self.start, self.end = start, end

    def _record(self, k: torch.Tensor, v: torch.Tensor, layer_idx: int) -> Tuple[torch.Tensor, torch.Tensor]:
        if layer_idx != len(self.key_cache):
            raise ValueError(f"layer {layer_idx} recorded out of order (expected {len(self.key_cache)}).")
        self.key_cache.append(k)
        self.value_cache.append(v)
        return k, v

    def get_seq_length(self) -> int:
        return 0 if self.recording else self.start

    def __len__(self) -> int:
        return len(self.key_cache)


class PrefixKVCache(BlockKVCache):
    """Keeps the refresh pass's K/V of [0, start); queries are the window [start, L)."""

    def set_window(self, start: int, end: int) -> None:
        length = self.key_cache[0].shape[-2] if self.key_cache else 0
        if end != length:
            raise ValueError(f"a prefix-cache window must run to the end of the canvas ({length}), got end={end}.")
        super().set_window(start, end)
        # Keep only the prefix: the window's own keys are recomputed at every step.
        self.key_cache = [k[:, :, :start].contiguous() for k in self.key_cache]
        self.value_cache = [v[:, :, :start].contiguous() for v in self.value_cache]

    def update(self, k: torch.Tensor, v: torch.Tensor, layer_idx: int) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.recording:
            return self._record(k, v, layer_idx)
        if k.shape[-2] != self.end - self.start:
            raise ValueError(f"got {k.shape[-2]} queries for the window [{self.start}, {self.end}).")
        k_all = torch.cat([self.key_cache[layer_idx], k], dim=-2)  # (b, kvh, start + w, hd)
        v_all = torch.cat([self.value_cache[layer_idx], v], dim=-2)
        return k_all, v_all

    def kv_length(self, q_len: int) -> int:
        return q_len + self.get_seq_length()


class DualKVCache(BlockKVCache):
    """Keeps the refresh pass's K/V of every position; the window [start, end) is rewritten in place."""

    def update(self, k: torch.Tensor, v: torch.Tensor, layer_idx: int) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.recording:
            return self._record(k, v, layer_idx)
        if k.shape[-2] != self.end - self.start:
            raise ValueError(f"got {k.shape[-2]} queries for the window [{self.start}, {self.end}).")
        self.key_cache[layer_idx][:, :, self.start : self.end] = k  # (b, kvh, L, hd), in place
        self.value_cache[layer_idx][:, :, self.start : self.end] = v
        return self.key_cache[layer_idx], self.value_cache[layer_idx]

    def kv_length(self, q_len: int) -> int:
        return q_len if self.recording else self.key_cache[0].shape[-2]


KV_CACHE_CLASSES: Dict[str, Type[BlockKVCache]] = {"prefix": PrefixKVCache, "dual": DualKVCache}


def make_kv_cache(kind: str) -> BlockKVCache:
    """A new, empty cache of kind `kind` ("prefix" or "dual")."""
    if kind not in KV_CACHE_CLASSES:
        raise ValueError(f"cache kind {kind!r} is unknown; choose one of {list(KV_CACHE_CLASSES)}.")
    return KV_CACHE_CLASSES[kind]()
