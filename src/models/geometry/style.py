"""The style code S of PersonaTalk (paper 3.2, docs/design.md, "Stage 1"): statistics over time of E_vtx on a reference
clip's expression vertices, mapped by one FC layer.

    Vtx_exp_ref (B, T_ref, L, 3) --E_vtx--> (B, T_ref, D) --mean, std over time--> (B, 2D) --FC--> S (B, D)

This module is the pooling and FC half. E_vtx is shared with template driving, so it has a single owner,
`StyleAwareGeometry`, which encodes the reference and hands the features here (`StyleAwareGeometry.style`).
That keeps the Hydra tree a plain tree: no instance is referenced from two places.

Letters: b batch, t reference frames, d width.
"""
from __future__ import annotations

import torch
from torch import nn


class StyleEncoder(nn.Module):
    """Pool E_vtx features `(B, T_ref, D)` (optional mask `(B, T_ref)` bool, True = valid) -> S `(B, D)`."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps
        self.fc = nn.Linear(2 * dim, dim)

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if features.ndim != 3 or features.shape[-1] != self.dim:
            raise ValueError(f"StyleEncoder: features must be (B, T_ref, {self.dim}), got {tuple(features.shape)}")
        if mask is None:
            mask = torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)
        elif mask.dtype != torch.bool or mask.shape != features.shape[:2]:
            raise ValueError(f"StyleEncoder: mask must be bool (B, T_ref) = {tuple(features.shape[:2])}, got "
                             f"{mask.dtype} {tuple(mask.shape)}")
        if not bool(mask.any(1).all()):
            raise ValueError("StyleEncoder: every reference clip needs at least one valid frame in mask")
        weight = mask[..., None].to(features.dtype)  # (B, T_ref, 1)
        count = weight.sum(1)  # (B, 1)
        mean = (features * weight).sum(1) / count  # (B, D)
        var = ((features - mean[:, None]) ** 2 * weight).sum(1) / count  # (B, D)
        std = torch.sqrt(var + self.eps)  # (B, D); eps keeps the gradient finite for a one-frame reference
        return self.fc(torch.cat([mean, std], dim=-1))  # (B, 2D) -> (B, D)
