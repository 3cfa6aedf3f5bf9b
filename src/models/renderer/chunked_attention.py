"""Scaled dot-product attention in query chunks: softmax(q k^T * scale) v without the full score matrix.

``sdpa_kernel`` says which kernel ``F.scaled_dot_product_attention`` dispatches to for the given tensors (flash,
memory-efficient, cuDNN or math; under autocast, for the autocast dtype). The flash, memory-efficient and cuDNN
kernels (CUDA; flash also on the CPU) never build the score matrix, so they get all queries in one call. Only for
the math kernel (e.g. fp32 with a head width a fused kernel does not take, or an old GPU) are queries sent in
chunks of ``chunk`` tokens, so no call sees more than ``chunk x S`` scores per head; it builds scores and softmax
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

KERNELS = {0: "math", 1: "flash", 2: "efficient", 3: "cudnn", 4: "overrideable"}  # torch's SDPBackend values
FUSED = ("flash", "efficient", "cudnn")  # kernels that never build the score matrix


def sdpa_kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str:
    """The kernel SDPA runs for these tensors (their metadata only: device, dtype, widths, grad), as torch's own
    dispatcher chooses it; "unknown" when this torch cannot say."""
    if torch.is_autocast_enabled(q.device.type):
        dtype = torch.get_autocast_dtype(q.device.type)
        q, k, v = (x[:, :, :1].to(dtype) for x in (q, k, v))  # (B, nh, 1, e): the same choice, cheap casts
    try:
        return KERNELS.get(int(torch._fused_sdp_choice(q, k, v)), "unknown")
    except (AttributeError, RuntimeError):
        return "unknown"


def chunked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None,
                      chunk: int | None = None, recompute: bool = False) -> torch.Tensor:
    """q (B, nh, T, e), k (B, nh, S, e), v (B, nh, S, e_v) -> (B, nh, T, e_v); ``chunk`` None, or a fused kernel
    (``FUSED``), = one call; ``recompute`` applies under autograd only, to the math kernel's chunks."""
    if chunk is None or sdpa_kernel(q, k, v) in FUSED:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)  # (B, nh, T, e_v)
    recompute = recompute and torch.is_grad_enabled()
    outs = []
    for start in range(0, q.shape[2], chunk):
        q_chunk = q[:, :, start:start + chunk]  # (B, nh, <=chunk, e)
        if recompute:
            outs.append(checkpoint(F.scaled_dot_product_attention, q_chunk, k, v, scale=scale, use_reentrant=False))
        else:
            outs.append(F.scaled_dot_product_attention(q_chunk, k, v, scale=scale))  # (B, nh, <=chunk, e_v)
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)  # (B, nh, T, e_v)
