"""The latent positional embedding P of Lip- and Face-Attention (paper 3.2; docs/design.md, "Stage 2"), added to
both Q and K so that attention knows where in the aligned face crop a cell sits.

    P (1, C, h_max, w_max), learnable; at latent size h x w -> tokens (1, h*w, C), resized bilinearly

``init="sincos"`` (the default) starts P as a same-place prior: a 2-D sin/cos code of the head width e, repeated
for every head, with |P|^2 = ``scale`` * e per cell per head. Together with to_q = to_k (the attention's
``tie_projections``) every head's q.k then peaks where target and reference cells coincide: attention starts
as a copy of the same place in the references instead of a uniform average, a blur the decoder must first
unlearn. ``init="normal"``: a small random P (attention starts near uniform).

Letters: c width, h w latent rows and columns, e head width.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

INITS = ("sincos", "normal")


def axis_code(n: int, dim: int) -> torch.Tensor:
    """sin/cos code of cells 0..n-1 along one latent axis -> (n, dim), dim even: dim/2 frequencies spaced
    geometrically from one period over the axis to one period per 4 cells, so neighbouring cells differ."""
    k = torch.arange(dim // 2, dtype=torch.float32)
    omega = 2 * torch.pi / (n * (4 / n) ** (k / max(dim // 2 - 1, 1)))  # (dim/2,) rad per cell, 2pi/n .. pi/2
    angles = torch.arange(n, dtype=torch.float32)[:, None] * omega[None, :]  # (n, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (n, dim)


class LatentPosition(nn.Module):
    """P `(1, C, h, w)`; ``forward(h, w)`` -> tokens `(1, h*w, C)` at any latent size."""

    def __init__(self, dim: int, heads: int, latent_size, init: str = "sincos", scale: float = 2.0) -> None:
        super().__init__()
        if len(latent_size) != 2 or min(latent_size) < 1:
            raise ValueError(f"LatentPosition: latent_size must be (h, w) positive, got {latent_size}")
        if init not in INITS:
            raise ValueError(f"LatentPosition: pos_init must be one of {INITS}, got {init!r}")
        if init == "sincos" and (dim // heads) % 4:
            raise ValueError(f"LatentPosition: pos_init 'sincos' needs a head width dim / heads divisible by 4, "
                             f"got {dim} / {heads}")
        self.init, self.heads = init, heads
        self.weight = nn.Parameter(torch.empty(1, dim, *latent_size))  # (1, C, h_max, w_max)
        if init == "sincos":
            self._same_place(scale)
        else:
            nn.init.trunc_normal_(self.weight, std=0.02)

    @property
    def same_place(self) -> bool:
        """True when P starts as the same-place prior (the attention then ties to_k to to_q)."""
        return self.init == "sincos"

    @torch.no_grad()
    def _same_place(self, scale: float) -> None:
        c, h, w = self.weight.shape[1:]
        e = c // self.heads
        code = torch.cat([axis_code(h, e // 2)[:, None, :].expand(h, w, e // 2),   # (h, w, e/2) rows
                          axis_code(w, e // 2)[None, :, :].expand(h, w, e // 2)], -1)  # (h, w, e) + columns
        code = code * (scale * e / code.pow(2).sum(-1, keepdim=True)).sqrt()  # |code|^2 = scale * e per cell
        self.weight.copy_(rearrange(code.repeat(1, 1, self.heads), "h w c -> 1 c h w"))  # (1, C, h, w)

    def forward(self, h: int, w: int) -> torch.Tensor:
        pos = self.weight
        if pos.shape[-2:] != (h, w):
            pos = F.interpolate(pos, size=(h, w), mode="bilinear", align_corners=False)  # (1, C, h, w)
        return rearrange(pos, "b c h w -> b (h w) c")  # (1, h*w, C)
