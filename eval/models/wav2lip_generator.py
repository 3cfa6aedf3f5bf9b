"""A Wav2Lip-style generator at 96 x 96, for timing only (``python -m eval.speed peers``), random weights.

Written from the Wav2Lip paper (Prajwal et al. 2020): a face encoder on the target with its lower half masked,
stacked with a reference frame (6 channels, 96 x 96, down to 1 x 1 in seven stages of 16-32-64-128-256-512-512
channels), an audio encoder on a 80 x 16 mel window (to a 512 vector), and a decoder that upsamples the joint code
back to 96 x 96 with skip connections from the face encoder, every stage a conv-BN-ReLU with residual convs:

    face (B, 6, 96, 96), mel (B, 1, 80, 16) -> (B, 3, 96, 96)
"""
from __future__ import annotations

import torch
from torch import nn

FACE = (16, 32, 64, 128, 256, 512, 512)  # face encoder widths, 96 -> 96, 48, 24, 12, 6, 3, 1


class Block(nn.Module):
    """conv-BN-ReLU, ``residual`` times a same-width conv-BN added back."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride=1, padding: int = 1, residual: int = 0,
                 transpose: bool = False) -> None:
        super().__init__()
        conv = nn.ConvTranspose2d if transpose else nn.Conv2d
        extra = {"output_padding": 1} if transpose and stride == 2 else {}
        self.first = nn.Sequential(conv(cin, cout, kernel, stride, padding, **extra), nn.BatchNorm2d(cout), nn.ReLU())
        self.rest = nn.ModuleList(nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1), nn.BatchNorm2d(cout))
                                  for _ in range(residual))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(x)
        for conv in self.rest:
            x = torch.relu(x + conv(x))
        return x


class Wav2LipGenerator(nn.Module):
    def __init__(self, size: int = 96) -> None:
        super().__init__()
        if size != 96:
            raise ValueError(f"Wav2LipGenerator: the published generator works at 96 x 96, got {size}")
        self.size = size
        widths = [6, *FACE]
        self.encoder = nn.ModuleList([Block(6, 16, 7, 1, 3)] + [
            Block(widths[i], widths[i + 1], 3, 2, 1, residual=2) for i in range(1, 5)] + [
            Block(256, 512, 3, 2, 1, residual=1), Block(512, 512, 3, 1, 0)])  # 96 48 24 12 6 3 1
        self.audio = nn.Sequential(Block(1, 32, residual=2), Block(32, 64, 3, (3, 1), 1, residual=2),
                                   Block(64, 128, 3, 3, 1, residual=2), Block(128, 256, 3, (3, 2), 1, residual=2),
                                   Block(256, 512, 3, 1, 0), nn.AdaptiveAvgPool2d(1))  # (B, 512, 1, 1)
        self.decoder = nn.ModuleList([
            Block(512, 512, 1, 1, 0),  # 1 x 1, + skip 512 -> 1024
            Block(1024, 512, 3, 1, 0, residual=2, transpose=True),  # 1 -> 3, + 512
            Block(1024, 512, 3, 2, 1, residual=2, transpose=True),  # 3 -> 6, + 256
            Block(768, 384, 3, 2, 1, residual=2, transpose=True),  # 6 -> 12, + 128
            Block(512, 256, 3, 2, 1, residual=2, transpose=True),  # 12 -> 24, + 64
            Block(320, 128, 3, 2, 1, residual=2, transpose=True),  # 24 -> 48, + 32
            Block(160, 64, 3, 2, 1, residual=2, transpose=True)])  # 48 -> 96, + 16 -> 80
        self.out = nn.Sequential(Block(80, 32), nn.Conv2d(32, 3, 1), nn.Sigmoid())

    def inputs(self, batch: int, device: str | torch.device = "cpu") -> dict:
        return {"face": torch.rand(batch, 6, self.size, self.size, device=device),
                "mel": torch.randn(batch, 1, 80, 16, device=device)}

    def forward(self, face: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        skips, x = [], face
        for block in self.encoder:
            x = block(x)
            skips.append(x)  # (B, FACE[i], s_i, s_i), s_i = 96 48 24 12 6 3 1
        x = self.audio(mel)  # (B, 512, 1, 1)
        for block in self.decoder:
            x = torch.cat([block(x), skips.pop()], 1)  # upsampled, then the encoder's map of the same size
        return self.out(x)  # (B, 3, 96, 96)
