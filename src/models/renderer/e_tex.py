"""E_tex, the texture encoder of PersonaTalk (paper 3.2 "Geometry & Texture Encoding", docs/design.md, "Stage 2"):
two stride-2 convolutions, a reference frame `(B, 3, H, W)` -> texture latent `(B, C, H/4, W/4)`.

Its latents are the values V of Lip- and Face-Attention: the only path by which the references' texture
reaches the output, so C should comfortably exceed the 4 x 4 x 3 = 48 numbers of one latent cell's patch.
Same architecture as E_geo, separate weights (the paper has two encoders).

Letters: b batch (reference frames stacked), c width, h w rows and columns.
"""
from __future__ import annotations

from src.models.renderer.strided_encoder import StridedEncoder


class TextureEncoder(StridedEncoder):
    """E_tex: RGB frames `(B, 3, H, W)` in [0, 1], H and W multiples of 4 -> `(B, C, H/4, W/4)`.

    Two 4x4 stride-2 convolutions `3 -> C/2 -> C` (see `StridedEncoder`); its own weights."""
