"""The shared body of E_geo and E_tex (paper 3.2 "Geometry & Texture Encoding", docs/design.md, "Stage 2"): two
stride-2 convolutions, an image `(B, 3, H, W)` in [0, 1] -> latent `(B, C, H/4, W/4)`.

`3 -> C/2 -> C`, 4x4 kernels with stride 2 (exact halving for even sizes), LeakyReLU between them;
`norm_groups` adds a GroupNorm after the first convolution (GroupNorm, not BatchNorm: a batch mixes
targets and references, whose statistics differ). The last layer is linear: attention normalises its
inputs. Inputs are centred to [-1, 1] here so callers hand over images as rendered. The paper's two
encoders are the named subclasses `GeometryEncoder` (e_geo.py) and `TextureEncoder` (e_tex.py).

Letters: b batch, c width, h w rows and columns.
"""
from __future__ import annotations

import torch
from torch import nn


class StridedEncoder(nn.Module):
    """Two stride-2 convolutions: `(B, in_channels, H, W)`, H and W multiples of 4 -> `(B, C, H/4, W/4)`."""

    def __init__(self, dim: int, in_channels: int = 3, norm_groups: int | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        if dim < 2 or dim % 2:
            raise ValueError(f"{name}: dim must be an even width >= 2 (C/2 hidden), got {dim}")
        if norm_groups is not None and (norm_groups < 1 or (dim // 2) % norm_groups):
            raise ValueError(f"{name}: norm_groups must divide the hidden width {dim // 2}, got {norm_groups}")
        self.dim, self.in_channels = dim, in_channels
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, dim // 2, kernel_size=4, stride=2, padding=1),
            nn.GroupNorm(norm_groups, dim // 2) if norm_groups else nn.Identity(),
            nn.LeakyReLU(0.2),
            nn.Conv2d(dim // 2, dim, kernel_size=4, stride=2, padding=1),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.ndim != 4 or image.shape[1] != self.in_channels or image.shape[2] % 4 or image.shape[3] % 4:
            raise ValueError(
                f"{type(self).__name__}: input must be (B, {self.in_channels}, H, W) with H, W multiples of 4, "
                f"got {tuple(image.shape)}"
            )
        return self.net(image * 2 - 1)  # (B, 3, H, W) -> (B, C/2, H/2, W/2) -> (B, C, H/4, W/4)
