"""E_geo, the geometry encoder of PersonaTalk (paper 3.2 "Geometry & Texture Encoding", docs/design.md, "Stage 2"):
two stride-2 convolutions, a PNCC image `(B, 3, H, W)` -> geometry latent `(B, C, H/4, W/4)`.

One instance encodes the target geometry G_tgt (-> Q) and every reference PNCC (-> K), so target and
references land in the same latent space and Q K^T can read as geometric correspondence.

Letters: b batch (target and reference frames stacked), c width, h w rows and columns.
"""
from __future__ import annotations

from src.models.renderer.strided_encoder import StridedEncoder


class GeometryEncoder(StridedEncoder):
    """E_geo: PNCC `(B, 3, H, W)` in [0, 1], H and W multiples of 4 -> `(B, C, H/4, W/4)`.

    Two 4x4 stride-2 convolutions `3 -> C/2 -> C` (see `StridedEncoder`); its own weights."""
