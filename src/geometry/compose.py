"""Stage 1's output geometry (docs/design.md, "Stage 1"): predicted lower face + the reference frame's own upper face,
posed with the reference frame's head pose, ready to be rasterised as PNCC.

    canonical = M(alpha, beta_ref, 0) with the lower-face rows replaced by M(alpha, 0, 0)[lower] + offsets
    posed     = project(canonical, pose_ref)

Offsets are the network's lower-face expression displacements in millimetres, (B, |lower|, 3).
"""
from __future__ import annotations

import torch

from src.geometry import camera


def compose_canonical(fm, alpha: torch.Tensor, beta_ref: torch.Tensor, lower_offsets_mm: torch.Tensor) -> torch.Tensor:
    """alpha (B, K_id), beta_ref (B, K_exp), lower_offsets_mm (B, |lower|, 3) -> canonical vertices (B, L, 3)."""
    n_lower = fm.lower.shape[0]
    if lower_offsets_mm.ndim != 3 or lower_offsets_mm.shape[1:] != (n_lower, 3):
        raise ValueError(f"lower_offsets_mm must be (B, {n_lower}, 3), got {tuple(lower_offsets_mm.shape)}")
    verts = fm.canonical_vertices(alpha, beta_ref).clone()  # (B, L, 3): reference upper face
    template = fm.template_vertices(alpha)  # (B, L, 3)
    verts[:, fm.lower] = template[:, fm.lower] + lower_offsets_mm / fm.units_to_mm
    return verts


def compose_posed(fm, alpha: torch.Tensor, beta_ref: torch.Tensor, pose: torch.Tensor,
                  lower_offsets_mm: torch.Tensor) -> torch.Tensor:
    """As ``compose_canonical``, projected with ``pose`` (B, 6) -> screen vertices (B, L, 3) (x_px, y_px, depth)."""
    return camera.project(compose_canonical(fm, alpha, beta_ref, lower_offsets_mm), pose)
