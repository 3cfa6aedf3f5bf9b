"""The audio-query reading of PersonaTalk's style injection (paper 3.2; docs/design.md, "Stage 1"), an ablation of
``style_injection.StyleInjection``: Q = A + position code, K = V = S as a single token. With a single key the
attention weights are all 1, so this adds W_o W_v LN(S) to every frame, then the feed-forward block; its residual
carries A itself.

Letters: b batch, t frames, d width.
"""
from __future__ import annotations

import torch
from torch import nn

from src.models.geometry.attention import CrossAttentionBlock, SinusoidalPosition
from src.models.geometry.style_injection import check_style_code


class AudioQueryInjection(nn.Module):
    """A `(B, T, D)` and S `(B, D)` -> stylised audio features `(B, T, D)`: Q = A + position, K = V = S."""

    def __init__(self, dim: int, heads: int, ff_mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.dim = dim
        self.position = SinusoidalPosition(dim)
        self.block = CrossAttentionBlock(dim, heads, ff_mult, dropout)

    def forward(self, audio_features: torch.Tensor, style_code: torch.Tensor) -> torch.Tensor:
        check_style_code(type(self).__name__, audio_features, style_code, self.dim)
        pos = self.position(audio_features.shape[1]).to(audio_features.dtype)  # (T, D)
        return self.block(audio_features + pos, style_code[:, None, :])  # (B, T, D)
