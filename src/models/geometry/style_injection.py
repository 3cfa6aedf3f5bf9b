"""Style injection of PersonaTalk (paper 3.2; docs/design.md, "Stage 1"): one cross-attention layer that writes the
speaker's style code S into the audio features A.

The paper has Q from S and K, V from A, which alone gives one output, not one per frame. Our reading (this
module, the default): the query at frame t is S plus a temporal position code, K = A plus the same code, V = A;
residual on the query stream, then a feed-forward block. The ablation Q = A, K = V = S is
``audio_query_injection.AudioQueryInjection``.

The audio reaches the output only through the attention, so which audio frames the query of frame t reads decides
the temporal precision of everything downstream. With the position codes alone that alignment has to be learned,
and stays blurred. ``alibi`` adds a symmetric ALiBi distance bias, -slope_h |t - t'| per head, to the scores: the
query of frame t is S asking the audio *around t*, still with S as the query. ALiBi's own slopes (2^(-8 i / h):
0.25 per frame for the steepest of 4 heads) are too gentle here; ``alibi_max_slope`` rescales them so the steepest
head falls off at that many logits per frame (2: heads at 2, 0.5, 0.125, 0.03), i.e. one head reads frame t
itself, the others ever wider context. Measured on the synthetic corpus (geometry_demo, 600 steps; lip vertex
error, held-out speakers / held-out clips of seen speakers; 480 clips): position codes only 3.46 / 3.77 mm, ALiBi
slopes 3.45 / 3.80, max slope 2 3.02 / 3.19 (the default), and the audio-query ablation, whose residual carries A
itself, 2.96 / 3.18.

Letters: b batch, t frames, d width, h heads.
"""
from __future__ import annotations

import torch
from torch import nn

from src.models.geometry.attention import CrossAttentionBlock, SinusoidalPosition, alibi_slopes, distance_bias


def check_style_code(name: str, audio_features: torch.Tensor, style_code: torch.Tensor, dim: int) -> None:
    if style_code.ndim != 2 or style_code.shape != (audio_features.shape[0], dim):
        raise ValueError(f"{name}: style_code must be (B, {dim}) with the batch of audio_features "
                         f"{tuple(audio_features.shape)}, got {tuple(style_code.shape)}")


class StyleInjection(nn.Module):
    """A `(B, T, D)` and S `(B, D)` -> stylised audio features `(B, T, D)`: Q = S + position, K = A + position,
    V = A, with an optional ALiBi distance bias."""

    def __init__(self, dim: int, heads: int, ff_mult: int = 4, dropout: float = 0.0, alibi: bool = True,
                 alibi_max_slope: float | None = 2.0) -> None:
        super().__init__()
        self.dim, self.alibi = dim, alibi
        self.position = SinusoidalPosition(dim)
        self.block = CrossAttentionBlock(dim, heads, ff_mult, dropout)
        slopes = alibi_slopes(heads)  # (h,) ALiBi's 2^(-8 i / h)
        if alibi_max_slope is not None:  # the same ratios, the steepest head at alibi_max_slope per frame
            slopes = slopes * (alibi_max_slope / float(slopes[0]))
        self.register_buffer("slopes", slopes, persistent=False)  # (h,)

    def forward(self, audio_features: torch.Tensor, style_code: torch.Tensor) -> torch.Tensor:
        check_style_code(type(self).__name__, audio_features, style_code, self.dim)
        pos = self.position(audio_features.shape[1]).to(audio_features.dtype)  # (T, D)
        query = style_code[:, None, :] + pos  # (B, T, D): the same style asked at every frame
        bias = distance_bias(self.slopes, audio_features.shape[1]) if self.alibi else None  # (h, T, T)
        return self.block(query, audio_features, context_pos=pos, attn_bias=bias)  # (B, T, D)
