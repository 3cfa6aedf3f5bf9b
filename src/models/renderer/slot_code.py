"""An optional code of each reference's slot for Lip- and Face-Attention: a fixed sin/cos code (Vaswani et al.
2017) of the slot index 0..N-1, added to K, for callers whose reference order means something. Without it (the
paper) the references are a set: the output is invariant to their order. Any N either way.

Letters: n reference slots, c width.
"""
from __future__ import annotations

import torch
from torch import nn


def sinusoidal_code(n: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Fixed sin/cos code of slots 0..n-1 -> (n, dim), dim even; no parameters, so any n. (Not stage 1's
    SinusoidalPosition: importing src.models.geometry pulls in transformers.)"""
    inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)  # (dim/2,)
    angles = torch.arange(n, dtype=torch.float32)[:, None] * inv_freq[None, :]  # (n, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (n, dim)


class SlotCode(nn.Module):
    """``forward(n)`` -> `(n, C)`, the code of slots 0..n-1."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"SlotCode: dim must be even (sin and cos halves), got {dim}")
        self.dim = dim

    def forward(self, n: int) -> torch.Tensor:
        return sinusoidal_code(n, self.dim)  # (n, C)
