# Copyright 2026 The sm_dream authors. Licensed under the Apache License, Version 2.0.
"""Row kernels of a decoding step: float32 (c, V) logit rows processed in cache-sized chunks.

`rows_per_chunk` and `RowBuffers` bound the work buffers, `raw_softmax` is a softmax with one exp
per element, `row_dot` and `row_topk` are per-row reductions that are fast on CPU. The SM feedback
(`soft_masking.py`), the fused step pass (`logit_rows.py`) and the sampler (`sampling.py`) build on them.

This file is carried inside saved checkpoints: it imports only torch.
"""

from typing import Optional

import torch


def rows_per_chunk(rows: torch.Tensor, cache_bytes: int = 1 << 21) -> int:
    """How many (V,)-rows to process at a time: on CPU a float32 chunk of about `cache_bytes` (2 MB)
    stays in cache across the several passes of softmax / top-k / confidence (2-3x faster than
    whole-matrix passes at V = 32k); on accelerators all rows at once."""
    if rows.device.type != "cpu":
        return max(1, rows.shape[0])
    return max(1, cache_bytes // (4 * max(1, rows.shape[-1])))


class RowBuffers:
    """Three float32 (c, V) work buffers reused across the chunks of `rows`: fresh (rows, V)
    temporaries per chunk cost more in page faults than the arithmetic itself.

    `load(chunk)` returns (f, z, p) views of the chunk's size, f holding the chunk in float32 (the
    one read of the logits; every later pass runs on cache-sized float32 rows)."""

    def __init__(self, rows: torch.Tensor, chunk_size: int):
        width = max(1, min(chunk_size, rows.shape[0]))
        self._bufs = [torch.empty(width, rows.shape[-1], dtype=torch.float32, device=rows.device) for _ in range(3)]

    def load(self, chunk: torch.Tensor):
        f, z, p = (buf[: chunk.shape[0]] for buf in self._bufs)
        f.copy_(chunk)
        return f, z, p


def raw_softmax(f: torch.Tensor, z: torch.Tensor, p: torch.Tensor, shift: Optional[torch.Tensor] = None):
    """Softmax of float32 rows `f` with one exp per element, into the buffers z and p.

    z = f - shift (default: the row max; floored at -1e30 so that 0 * z = 0 where f = -inf),
    p = softmax(z) = exp(z) / S. Returns (z, p, log S) with log S = -log max_v p_v when the shift is
    the row max (exp(0) / S is the largest p). Then log p = z - log S and the entropy is
    log S - sum_v p_v z_v.
    """
    if shift is None:
        shift = f.amax(-1, keepdim=True)  # (c, 1)
    torch.sub(f, shift, out=z)
    z.clamp_min_(-1e30)
    torch.ops.aten._softmax.out(z, -1, False, out=p)  # torch.softmax into the buffer
    return z, p, -p.amax(-1).log()


def row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_v a_v b_v per row of two (c, V) float32 matrices, without a (c, V) temporary on CPU."""
    if a.device.type != "cpu":
        return torch.linalg.vecdot(a, b)
    return torch.stack([torch.dot(x, y) for x, y in zip(a, b)]) if a.shape[0] else a.new_zeros(0)


_BLOCK = 256  # the block width of `row_topk`'s two-level search


def row_topk(x: torch.Tensor, k: int):
    """`x.topk(k, dim=-1)` of float32 (c, V) rows, fast for small k on CPU.

    CPU `topk` and `argmax` over a long row run at a fraction of a vectorised max: here block maxima
    (a vectorised max over blocks of 256) pick the k blocks that can hold the top k, and topk runs on
    those k * 256 entries. With k = 1 the index is the first maximum, as `argmax` returns.
    """
    c, V = x.shape
    if x.device.type != "cpu" or V < 64 * _BLOCK or k > 16:
        return x.topk(k, dim=-1) if k > 1 else (x.amax(-1, keepdim=True), x.argmax(-1, keepdim=True))
    head = V - V % _BLOCK
    block_max = x[:, :head].reshape(c, head // _BLOCK, _BLOCK).amax(-1)  # (c, nb)
    if head < V:
        block_max = torch.cat([block_max, x[:, head:].amax(-1, keepdim=True)], dim=-1)
    blocks = block_max.topk(k, dim=-1).indices if k > 1 else block_max.argmax(-1, keepdim=True)  # (c, k)
    idx = (blocks.unsqueeze(-1) * _BLOCK + torch.arange(_BLOCK, device=x.device)).view(c, -1)  # (c, k * B)
    inside = idx < V  # the last block may be short
    values = x.gather(-1, idx.clamp_max(V - 1)).masked_fill(~inside, float("-inf"))
    if k == 1:
        pos = values.argmax(-1, keepdim=True)  # first maximum of the first block holding the maximum
        return values.gather(-1, pos), idx.gather(-1, pos)
    top, pos = values.topk(k, dim=-1)
    return top, idx.gather(-1, pos)
