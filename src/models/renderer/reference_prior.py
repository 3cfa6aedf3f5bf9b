"""A per-reference prior for Lip- and Face-Attention (docs/design.md, "Stage 2"; our addition where the paper is
silent): each reference frame gets one logit bias for all of its cells,

    D(n)       = mean over cells of | pncc_tgt - pncc_ref_n |_1        (B, N)   how far reference n's geometry
    bias(t, s) = -beta_h D(n(s))                                                (head pose and expression) is
                                                                                from the target's, per head h

so the cells the geometry cannot place copy from the references nearest the target instead of averaging all N.
Why: a target cell of the background, the hair or the shoulders has PNCC 0, like that cell in every reference;
its logits against the N references' same cell are then equal (the positional prior and the correspondence
term match them all), and the softmax averages N frames in which the hair and the background have moved. The
average has a good PSNR and a soft look: on the val people the renderer drew the crop at the nearest-reference
copy's PSNR and under its SSIM (0.792 vs 0.796). With the prior the frames whose pose is nearest win those
cells, as the copy picks its one frame, while a face cell's correspondence term (tens of logits) still finds
its surface point in whichever reference shows it.

Folded into the queries and keys like the correspondence term (no score matrix): q' = [q, 1],
k' = [k, -(beta_h / scale) D(n(s))], so q'.k' scale = q.k scale - beta_h D(n(s)). Outside training the logits
are divided by the attention's temperature, this bias included.

Letters: b batch, n reference frames, nh heads, t target cells, s reference cells (n h w).
"""
from __future__ import annotations

import math

import torch
from torch import nn


class ReferencePrior(nn.Module):
    """``extend(q, k, tgt_coords, ref_coords, scale)`` -> (q', k') with the per-reference bias folded in (module
    docstring). ``beta``: the initial strength per head, learnable (> 0), in logits per unit of mean L1 PNCC
    distance: 100 makes a reference 0.01 nearer (a few degrees of head turn on a 128-px crop) one logit likelier."""

    def __init__(self, heads: int, beta: float = 100.0) -> None:
        super().__init__()
        if not (isinstance(heads, int) and heads >= 1) or not (isinstance(beta, (int, float)) and beta > 0):
            raise ValueError(f"ReferencePrior: need an integer heads >= 1 and beta > 0, got {heads!r}, {beta!r}")
        self.heads = heads
        self.log_beta = nn.Parameter(torch.full((heads,), math.log(beta)))  # (nh,), beta = exp(.) > 0

    @staticmethod
    def distance(tgt_coords: torch.Tensor, ref_coords: torch.Tensor) -> torch.Tensor:
        """tgt_coords (B, 3, h, w), ref_coords (B, N, 3, h, w) cell PNCC colours -> D (B, N), mean L1 per cell."""
        return (ref_coords - tgt_coords[:, None]).abs().sum(2).mean((-2, -1))  # (B, N)

    def extend(self, q: torch.Tensor, k: torch.Tensor, tgt_coords: torch.Tensor, ref_coords: torch.Tensor,
               scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """q (B, nh, T, e), k (B, nh, S, e) with S = N h w (references major, as ``ReferenceAttention`` orders
        them); tgt_coords (B, 3, h, w), ref_coords (B, N, 3, h, w) -> q' (B, nh, T, e + 1), k' (B, nh, S, e + 1)."""
        b, nh, t, _ = q.shape
        if nh != self.heads or tgt_coords.ndim != 4 or ref_coords.ndim != 5 or ref_coords.shape[0] != b \
                or ref_coords.shape[2:] != tgt_coords.shape[1:] or tgt_coords.shape[0] != b \
                or ref_coords.shape[1] * t != k.shape[2]:
            raise ValueError(f"ReferencePrior: q {tuple(q.shape)}, k {tuple(k.shape)} with {self.heads} heads need "
                             f"tgt_coords (B, 3, h, w) and ref_coords (B, N, 3, h, w) with N h w = {k.shape[2]}, "
                             f"got {tuple(tgt_coords.shape)} and {tuple(ref_coords.shape)}")
        n = ref_coords.shape[1]
        d = self.distance(tgt_coords, ref_coords).to(k.dtype)  # (B, N)
        beta = self.log_beta.exp().to(k.dtype)[None, :, None]  # (1, nh, 1)
        bias = (-beta / scale) * d[:, None, :]  # (B, nh, N)
        k_extra = bias[..., None].expand(b, nh, n, t).reshape(b, nh, n * t, 1)  # (B, nh, S, 1) one value per ref
        q_extra = torch.ones_like(q[..., :1])  # (B, nh, T, 1)
        return torch.cat([q, q_extra], dim=-1), torch.cat([k, k_extra], dim=-1)
