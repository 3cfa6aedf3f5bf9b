"""PatchGAN discriminator (Isola et al. 2017) for stage 2's optional adversarial term: a stack of stride-2
convolutions whose output is a grid of real/fake scores, one per overlapping image patch."""
from __future__ import annotations

import torch
from torch import nn


class PatchDiscriminator(nn.Module):
    """(B, 3, H, W) in [-1, 1] -> (B, 1, H / 2^n_layers, W / 2^n_layers) patch scores (no sigmoid: hinge loss)."""

    def __init__(self, dim: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"PatchDiscriminator: n_layers must be >= 1, got {n_layers}")
        layers, width = [nn.Conv2d(3, dim, 4, stride=2, padding=1), nn.LeakyReLU(0.2)], dim
        for k in range(1, n_layers):
            out = dim * min(2 ** k, 8)
            layers += [nn.Conv2d(width, out, 4, stride=2, padding=1), nn.InstanceNorm2d(out), nn.LeakyReLU(0.2)]
            width = out
        layers.append(nn.Conv2d(width, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)
