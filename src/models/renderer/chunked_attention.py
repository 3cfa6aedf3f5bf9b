"""Scaled dot-product attention in query chunks: softmax(q k^T * scale) v without the full score matrix.

Queries go to ``F.scaled_dot_product_attention`` in chunks of ``chunk`` tokens, so no call sees more than
``chunk x S`` scores per head, whichever kernel SDPA picks. Flash and memory-efficient kernels (CUDA, and CPU
flash in recent torch) never build even the chunk's scores; the math fallback builds scores and their softmax
for one chunk: about ``2 * B * heads * chunk * S * 4`` bytes in fp32 (256 px, S = 25 * 4096, 4 heads,
chunk 1024, B = 1: 3.4 GB; chunk 256: 0.84 GB). Under autograd the math kernel keeps every chunk's weights
for backward (the full matrix again, spread over chunks); ``recompute=True`` recomputes them per chunk in
backward instead (activation checkpointing).

Letters: b batch, nh heads, t queries, s keys, e head width.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def chunked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None,
                      chunk: int | None = None, recompute: bool = False) -> torch.Tensor:
    """q (B, nh, T, e), k (B, nh, S, e), v (B, nh, S, e_v) -> (B, nh, T, e_v); ``chunk`` None = one call;
    ``recompute`` applies under autograd only."""
    chunk = q.shape[2] if chunk is None else chunk
    recompute = recompute and torch.is_grad_enabled()
    outs = []
    for start in range(0, q.shape[2], chunk):
        q_chunk = q[:, :, start:start + chunk]  # (B, nh, <=chunk, e)
        if recompute:
            outs.append(checkpoint(F.scaled_dot_product_attention, q_chunk, k, v, scale=scale, use_reentrant=False))
        else:
            outs.append(F.scaled_dot_product_attention(q_chunk, k, v, scale=scale))  # (B, nh, <=chunk, e_v)
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)  # (B, nh, T, e_v)
