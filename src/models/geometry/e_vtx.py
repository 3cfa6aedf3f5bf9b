"""E_vtx, the vertex encoder of PersonaTalk (paper 3.2, docs/design.md, "Stage 1"): fully connected layers `3L -> D`.

One instance serves twice in the stage-1 network: on the reference clip's expression vertices Vtx_exp
(for the style code S) and on the identity template Vtx_temp (for template driving). The caller passes
vertices relative to the face model's mean shape, in the model's units; `input_scale` brings them to
order one (e.g. 1/10 for millimetres -> centimetres).

Letters: b batch, t frames, l vertices, d width.
"""
from __future__ import annotations

import torch
from einops import rearrange
from torch import nn


class VertexEncoder(nn.Module):
    """E_vtx: vertices `(B, T, L, 3)` -> `(B, T, D)`, or `(B, L, 3)` -> `(B, D)`.

    `hidden` adds one hidden layer with GELU (`3L -> hidden -> D`); None is a single linear map.
    """

    def __init__(self, n_vertices: int, dim: int, hidden: int | None = None, input_scale: float = 1.0) -> None:
        super().__init__()
        self.n_vertices, self.dim, self.input_scale = n_vertices, dim, float(input_scale)
        if hidden is None:
            self.net = nn.Linear(3 * n_vertices, dim)
        else:
            self.net = nn.Sequential(nn.Linear(3 * n_vertices, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, vertices: torch.Tensor) -> torch.Tensor:
        if vertices.ndim not in (3, 4) or vertices.shape[-2:] != (self.n_vertices, 3):
            raise ValueError(
                f"VertexEncoder: vertices must be (B, T, {self.n_vertices}, 3) or (B, {self.n_vertices}, 3), "
                f"got {tuple(vertices.shape)}"
            )
        flat = rearrange(vertices, "... l c -> ... (l c)") * self.input_scale  # (B, [T,] 3L)
        return self.net(flat)  # (B, [T,] D)
