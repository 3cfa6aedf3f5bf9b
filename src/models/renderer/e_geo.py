"""E_geo, the geometry encoder of PersonaTalk (paper 3.2 "Geometry & Texture Encoding", DESIGN.md 5):
two stride-2 convolutions, a PNCC image `(B, 3, H, W)` -> geometry latent `(B, C, H/4, W/4)`.

One instance encodes the target geometry G_tgt (-> Q) and every reference PNCC (-> K), so target and
references land in the same latent space and Q K^T can read as geometric correspondence.

Letters: b batch (target and reference frames stacked), c width, h w rows and columns.
"""
from __future__ import annotations

import torch
from torch import nn


class GeometryEncoder(nn.Module):
    """E_geo: PNCC `(B, 3, H, W)` in [0, 1], H and W multiples of 4 -> `(B, C, H/4, W/4)`.

    `3 -> C/2 -> C`, 4x4 kernels with stride 2 (exact halving for even sizes), LeakyReLU between them;
    `norm_groups` adds a GroupNorm after the first convolution (GroupNorm, not BatchNorm: the batch mixes
    targets and references, whose statistics differ). The last layer is linear: attention normalises
    its inputs. Inputs are centred to [-1, 1] here so callers hand over images as rendered.
    """

    def __init__(self, dim: int, in_channels: int = 3, norm_groups: int | None = None) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"GeometryEncoder: dim must be an even width >= 2 (C/2 hidden), got {dim}")
        if norm_groups is not None and (norm_groups < 1 or (dim // 2) % norm_groups):
            raise ValueError(f"GeometryEncoder: norm_groups must divide the hidden width {dim // 2}, got {norm_groups}")
        self.dim, self.in_channels = dim, in_channels
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, dim // 2, kernel_size=4, stride=2, padding=1),
            nn.GroupNorm(norm_groups, dim // 2) if norm_groups else nn.Identity(),
            nn.LeakyReLU(0.2),
            nn.Conv2d(dim // 2, dim, kernel_size=4, stride=2, padding=1),
        )

    def forward(self, pncc: torch.Tensor) -> torch.Tensor:
        if pncc.ndim != 4 or pncc.shape[1] != self.in_channels or pncc.shape[2] % 4 or pncc.shape[3] % 4:
            raise ValueError(
                f"GeometryEncoder: pncc must be (B, {self.in_channels}, H, W) with H, W multiples of 4, "
                f"got {tuple(pncc.shape)}"
            )
        return self.net(pncc * 2 - 1)  # (B, 3, H, W) -> (B, C/2, H/2, W/2) -> (B, C, H/4, W/4)
