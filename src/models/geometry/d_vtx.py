"""D_vtx, the vertex decoder of PersonaTalk (paper 3.2, docs/design.md, "Stage 1"): FC `D -> 3 |lower|`, lower-face
vertex offsets from the identity template, one set per frame.

The last layer starts at zero, so an untrained network predicts the template itself (zero offset) and
training starts from a valid face rather than from noise.

Letters: b batch, t frames, l lower-face vertices, d width.
"""
from __future__ import annotations

import torch
from einops import rearrange
from torch import nn


class VertexDecoder(nn.Module):
    """D_vtx: features `(B, T, D)` -> lower-face offsets `(B, T, n_lower, 3)`.

    `hidden` adds one hidden layer with GELU (`D -> hidden -> 3 n_lower`).
    """

    def __init__(self, dim: int, n_lower: int, hidden: int | None = None) -> None:
        super().__init__()
        self.dim, self.n_lower = dim, n_lower
        last = nn.Linear(dim if hidden is None else hidden, 3 * n_lower)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = last if hidden is None else nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"VertexDecoder: x must be (B, T, {self.dim}), got {tuple(x.shape)}")
        return rearrange(self.net(x), "b t (l c) -> b t l c", c=3)  # (B, T, 3 n_lower) -> (B, T, n_lower, 3)
