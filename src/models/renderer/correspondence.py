"""An explicit geometric correspondence term for Lip- and Face-Attention (docs/design.md, "Stage 2"; our addition
where the paper is silent): the PNCC colour of a cell is the mean-shape position of the face surface it shows, so
two cells showing the same surface point have the same colour. Adding

    bias(t, s) = -(gamma_h / 2) || pncc_tgt(t) - pncc_ref(s) ||^2        per head h, learnable gamma_h >= 0

to the attention logits makes every target cell attend to the reference cells that show its surface point,
across head pose and expression changes: the dense correspondence that softmax(Q K^T) should read as (paper 3.2),
given from the start instead of learned from scratch by E_geo. Background cells (PNCC 0) match each other, and the
positional prior P keeps them local; a face cell never attends to the background (distance ~0.75: -gamma 0.37).

It costs no score matrix: the bias is folded into the queries and keys (4 more channels per head), q' = [q, a p_t,
1], k' = [k, a p_r, -a^2 |p_r|^2 / 2] with a^2 = gamma / scale, so q'.k' scale = q.k scale - gamma/2 |p_t - p_r|^2
+ gamma/2 |p_t|^2, and the last term is the same for every key of a query (softmax ignores it).

Letters: b batch, nh heads, t target cells, s reference cells, c = 3 PNCC channels.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class GeometricCorrespondence(nn.Module):
    """``extend(q, k, tgt_coords, ref_coords, scale)`` -> (q', k') with the bias folded in (module docstring).
    ``gamma``: the initial strength per head (2000: one 4-pixel cell of a 128-px face, ~0.04 in PNCC units, costs
    ~1.6 logits; three cells ~14)."""

    def __init__(self, heads: int, gamma: float = 2000.0) -> None:
        super().__init__()
        if heads < 1 or gamma <= 0:
            raise ValueError(f"GeometricCorrespondence: need heads >= 1 and gamma > 0, got {heads}, {gamma}")
        self.heads = heads
        self.log_gamma = nn.Parameter(torch.full((heads,), math.log(gamma)))  # (nh,), gamma = exp(.) > 0

    def extend(self, q: torch.Tensor, k: torch.Tensor, tgt_coords: torch.Tensor, ref_coords: torch.Tensor,
               scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """q (B, nh, T, e), k (B, nh, S, e); tgt_coords (B, T, 3), ref_coords (B, S, 3) PNCC colours of the cells
        -> q' (B, nh, T, e + 4), k' (B, nh, S, e + 4)."""
        b, nh, t, _ = q.shape
        if nh != self.heads or tgt_coords.shape != (b, t, 3) or ref_coords.shape != (b, k.shape[2], 3):
            raise ValueError(f"GeometricCorrespondence: q {tuple(q.shape)} with {self.heads} heads needs tgt_coords "
                             f"({b}, {t}, 3) and ref_coords ({b}, {k.shape[2]}, 3), got {tuple(tgt_coords.shape)} "
                             f"and {tuple(ref_coords.shape)}")
        a = (self.log_gamma.exp() / scale).sqrt().to(q.dtype)[None, :, None, None]  # (1, nh, 1, 1)
        p_t = tgt_coords.to(q.dtype)[:, None].expand(b, nh, t, 3)  # (B, nh, T, 3)
        p_r = ref_coords.to(k.dtype)[:, None].expand(b, nh, k.shape[2], 3)  # (B, nh, S, 3)
        q_extra = torch.cat([a * p_t, torch.ones_like(p_t[..., :1])], dim=-1)  # (B, nh, T, 4)
        k_extra = torch.cat([a * p_r, -(a ** 2) * p_r.square().sum(-1, keepdim=True) / 2], dim=-1)  # (B, nh, S, 4)
        return torch.cat([q, q_extra], dim=-1), torch.cat([k, k_extra], dim=-1)
