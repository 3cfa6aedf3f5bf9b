"""Style injection of PersonaTalk (paper 3.2, DESIGN.md 4): one cross-attention layer that writes the
speaker's style code S into the audio features A.

The paper has Q from S and K, V from A, which alone gives one output, not one per frame. Our reading
(mode "style_query", the default): the query at frame t is S plus a temporal position code, K = A plus the
same code, V = A; residual on the query stream, then a feed-forward block. Mode "audio_query" is the
ablation Q = A + position code, K = V = S as a single token.

In "style_query" the audio reaches the output only through the attention, so which audio frames the query
of frame t reads decides the temporal precision of everything downstream. With the position codes alone
that alignment has to be learned. ``alibi`` adds the symmetric ALiBi distance bias of the temporal layers,
-slope_h |t - t'| per head, to the scores: the query of frame t is S asking the audio *around t*, every head
at its own range, still with S as the query. Measured on the synthetic corpus (160 clips, geometry_demo, 600
steps; lip vertex error on held-out speakers): style_query 4.68 mm, with alibi 4.82 (4.88 already at step
100, then no better: it learns the alignment at once, and overfits as soon), audio_query 4.45. Off by default.

Letters: b batch, t frames, d width.
"""
from __future__ import annotations

import torch
from torch import nn

from src.models.geometry.attention import CrossAttentionBlock, SinusoidalPosition, alibi_slopes, distance_bias

MODES = ("style_query", "audio_query")


class StyleInjection(nn.Module):
    """A `(B, T, D)` and S `(B, D)` -> stylised audio features `(B, T, D)`."""

    def __init__(self, dim: int, heads: int, mode: str = "style_query", ff_mult: int = 4, dropout: float = 0.0,
                 alibi: bool = False) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"StyleInjection: mode must be one of {MODES}, got {mode!r}")
        self.dim, self.mode, self.alibi = dim, mode, alibi and mode == "style_query"
        self.position = SinusoidalPosition(dim)
        self.block = CrossAttentionBlock(dim, heads, ff_mult, dropout)
        self.register_buffer("slopes", alibi_slopes(heads), persistent=False)  # (h,)

    def forward(self, audio_features: torch.Tensor, style_code: torch.Tensor) -> torch.Tensor:
        if style_code.ndim != 2 or style_code.shape != (audio_features.shape[0], self.dim):
            raise ValueError(f"StyleInjection: style_code must be (B, {self.dim}) with the batch of audio_features "
                             f"{tuple(audio_features.shape)}, got {tuple(style_code.shape)}")
        pos = self.position(audio_features.shape[1]).to(audio_features.dtype)  # (T, D)
        if self.mode == "style_query":
            query = style_code[:, None, :] + pos  # (B, T, D): the same style asked at every frame
            bias = distance_bias(self.slopes, audio_features.shape[1]) if self.alibi else None  # (h, T, T)
            return self.block(query, audio_features, context_pos=pos, attn_bias=bias)  # (B, T, D)
        # with a single key the attention weights are all 1: this mode adds W_o W_v LN(S) to every frame
        return self.block(audio_features + pos, style_code[:, None, :])  # (B, T, D)
