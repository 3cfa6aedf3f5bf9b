"""D_tex, the geometry-aware texture decoder of PersonaTalk (paper 3.2 "Texture Decoding", docs/design.md, "Stage 2"):
the fused latent `(B, C, h, w)`, concatenated with the target PNCC resized to h x w (so decoding keeps
the target geometry), through two upsampling convolutions -> RGB `(B, 3, 4h, 4w)` in [0, 1].

    x   = [latent, area_resize(G_tgt)]               (B, C + 3, h, w)
    x   = conv3(up2(x)), LeakyReLU                   (B, C, 2h, 2w)        stage 1
    x   = conv3(up2(x)), LeakyReLU                   (B, C/2, 4h, 4w)      stage 2
    rgb = sigmoid(conv3(x))                          (B, 3, 4h, 4w)        RGB head

The paper's "two upsampling convolution layers" are the two stages; it does not say how the width
becomes 3, so a 3x3 RGB head follows. `depth` > 2 adds `depth - 2` residual conv blocks to each stage.

Letters: b batch, c width, h w latent rows and columns.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

UPSAMPLE_MODES = ("nearest", "bilinear")


class ResidualConv(nn.Module):
    """x + LeakyReLU(conv3x3(x)): one extra block of a deeper decoder stage, width unchanged."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.conv(x))  # (B, C, h, w)


class TextureDecoder(nn.Module):
    """D_tex: latent `(B, C, h, w)` + target PNCC `(B, 3, 4h, 4w)` in [0, 1] -> RGB `(B, 3, 4h, 4w)` in
    [0, 1]. `depth` 2 is the paper's decoder; `upsample` "nearest" (default) or "bilinear", each
    followed by a 3x3 convolution (no transposed convolutions: no checkerboard)."""

    uses_sampled_rgb = False  # the renderer hands sampled reference pixels only to decoders that take them

    def __init__(self, dim: int, depth: int = 2, upsample: str = "nearest", geometry_channels: int = 3) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"TextureDecoder: dim must be an even width >= 2, got {dim}")
        if depth < 2:
            raise ValueError(f"TextureDecoder: depth must be >= 2 (2 = the paper's two upsampling convolutions), "
                             f"got {depth}")
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"TextureDecoder: upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        self.dim, self.depth, self.geometry_channels = dim, depth, geometry_channels
        self.stages = nn.ModuleList(
            self._stage(c_in, c_out, depth - 2, upsample)
            for c_in, c_out in ((dim + geometry_channels, dim), (dim, dim // 2))
        )
        self.to_rgb = nn.Conv2d(dim // 2, 3, kernel_size=3, padding=1)

    @staticmethod
    def _stage(c_in: int, c_out: int, extra: int, upsample: str) -> nn.Sequential:
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode=upsample),
            nn.Conv2d(c_in, c_out, kernel_size=3, padding=1),
            nn.LeakyReLU(0.2),
            *(ResidualConv(c_out) for _ in range(extra)),
        )

    def forward(self, latent: torch.Tensor, tgt_pncc: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.to_rgb(self.features(latent, tgt_pncc)))  # (B, 3, 4h, 4w)

    def features(self, latent: torch.Tensor, tgt_pncc: torch.Tensor) -> torch.Tensor:
        """The two upsampling stages: -> (B, C/2, 4h, 4w)."""
        if latent.ndim != 4 or latent.shape[1] != self.dim:
            raise ValueError(f"TextureDecoder: latent must be (B, {self.dim}, h, w), got {tuple(latent.shape)}")
        b, _, h, w = latent.shape
        if tgt_pncc.shape != (b, self.geometry_channels, 4 * h, 4 * w):
            raise ValueError(f"TextureDecoder: tgt_pncc must be (B, {self.geometry_channels}, 4h, 4w) = "
                             f"{(b, self.geometry_channels, 4 * h, 4 * w)} for latent {tuple(latent.shape)}, "
                             f"got {tuple(tgt_pncc.shape)}")
        geometry = F.interpolate(tgt_pncc * 2 - 1, size=(h, w), mode="area")  # (B, 3, h, w) 4x4 means, centred
        x = torch.cat([latent, geometry], dim=1)  # (B, C + 3, h, w)
        x = self.stages[0](x)  # (B, C, 2h, 2w)
        return self.stages[1](x)  # (B, C/2, 4h, 4w)
