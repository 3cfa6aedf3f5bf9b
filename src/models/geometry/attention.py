"""Attention building blocks shared by the stage-1 network (PersonaTalk 3.2, docs/design.md, "Stage 1"): a sinusoidal
frame-position code, a pre-norm cross-attention block, and a stack of temporal self-attention layers with
a symmetric ALiBi distance bias.

All attention goes through `torch.nn.functional.scaled_dot_product_attention`. Masks are bool with
True = a real (valid) frame or token, the convention of SDPA's boolean `attn_mask`.

Letters: b batch, t query frames, n key tokens, d width, h heads, e head width (d / h).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def alibi_slopes(heads: int) -> torch.Tensor:
    """ALiBi's geometric slopes (Press et al. 2022): head i of h gets 2^(-8 i / h), i = 1..h -> (h,)."""
    return 2.0 ** (-8.0 * torch.arange(1, heads + 1, dtype=torch.float32) / heads)


def distance_bias(slopes: torch.Tensor, n_frames: int) -> torch.Tensor:
    """Symmetric ALiBi bias -slope_i * |t - t'| of frames 0..T-1 against themselves: (h, T, T) float32."""
    frames = torch.arange(n_frames, device=slopes.device, dtype=torch.float32)
    distance = (frames[None, :] - frames[:, None]).abs()  # (T, T)
    return -slopes[:, None, None] * distance  # (h, T, T)


class SinusoidalPosition(nn.Module):
    """Fixed sin/cos code of the frame index (Vaswani et al. 2017): `n_frames` -> `(T, D)`, any T.

    No parameters, so a clip longer than the training window gets codes of the same family.
    """

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"SinusoidalPosition: dim must be even (sin and cos halves), got {dim}")
        self.dim = dim
        inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)  # (D/2,)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, n_frames: int, start: int = 0) -> torch.Tensor:
        """Frames `start .. start + n_frames - 1` -> `(T, D)` float32 on the module's device."""
        frames = torch.arange(start, start + n_frames, device=self.inv_freq.device, dtype=torch.float32)
        angles = frames[:, None] * self.inv_freq[None, :]  # (T, D/2)
        return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (T, D)


class Attention(nn.Module):
    """Multi-head attention core with named projections; the caller normalises its inputs."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"Attention: dim ({dim}) must be divisible by heads ({heads})")
        self.heads, self.dropout = heads, dropout
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(dropout))

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """query (B, T, D), key and value (B, N, D), attn_mask broadcastable to (B, h, T, N) -> (B, T, D)."""
        q = rearrange(self.to_q(query), "b t (h e) -> b h t e", h=self.heads)  # (B, h, T, e)
        k = rearrange(self.to_k(key), "b n (h e) -> b h n e", h=self.heads)  # (B, h, N, e)
        v = rearrange(self.to_v(value), "b n (h e) -> b h n e", h=self.heads)  # (B, h, N, e)
        dropout_p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)  # (B, h, T, e)
        return self.to_out(rearrange(out, "b h t e -> b t (h e)"))  # (B, T, D)


class FeedForward(nn.Module):
    """Pre-norm position-wise MLP `D -> mult D -> D` with GELU; returns the update, not the sum."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, mult * dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mult * dim, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, T, D)


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention with a residual on the query stream, then a feed-forward block.

    x `(B, T, D)` attends to context `(B, N, D)`. `context_pos` is added to the keys only (values carry
    content, not position), as in DETR.
    """

    def __init__(self, dim: int, heads: int, ff_mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.dim = dim
        self.norm_q = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.ff = FeedForward(dim, ff_mult, dropout)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        context_pos: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        attn_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, T, D); context (B, N, D); context_pos (N, D) or (B, N, D); context_mask (B, N) bool,
        True = valid; attn_bias (h, T, N) added to the scores -> (B, T, D)."""
        if x.ndim != 3 or context.ndim != 3 or x.shape[-1] != self.dim or context.shape[-1] != self.dim:
            raise ValueError(
                f"CrossAttentionBlock: x must be (B, T, {self.dim}) and context (B, N, {self.dim}), "
                f"got {tuple(x.shape)} and {tuple(context.shape)}"
            )
        context = self.norm_context(context)  # (B, N, D)
        key = context if context_pos is None else context + context_pos.to(context.dtype)  # (B, N, D)
        mask = None if context_mask is None else context_mask[:, None, None, :]  # (B, 1, 1, N)
        if attn_bias is not None:
            bias = attn_bias.to(x.dtype)  # (h, T, N)
            mask = bias if mask is None else bias.masked_fill(~mask, -math.inf)  # (B, h, T, N)
        x = x + self.attn(self.norm_q(x), key, context, mask)  # (B, T, D)
        return x + self.ff(x)  # (B, T, D)


class SelfAttentionLayer(nn.Module):
    """One pre-norm self-attention layer plus feed-forward; the attention bias is given by the caller."""

    def __init__(self, dim: int, heads: int, ff_mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.ff = FeedForward(dim, ff_mult, dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)  # (B, T, D)
        x = x + self.attn(h, h, h, bias)  # (B, T, D)
        return x + self.ff(x)  # (B, T, D)


class TemporalSelfAttention(nn.Module):
    """`depth` pre-norm self-attention layers over time with a symmetric ALiBi bias, then a LayerNorm.

    Head i adds `-slope_i * |t - t'|` to its scores (Press et al. 2022, made symmetric: frames before and
    after count alike). There are no absolute positions, so the layers are translation-equivariant in
    time and run on sequences longer than the training window. x `(B, T, D)` -> `(B, T, D)`.
    """

    def __init__(self, dim: int, depth: int, heads: int, ff_mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"TemporalSelfAttention: depth must be >= 1, got {depth}")
        self.dim = dim
        self.layers = nn.ModuleList(SelfAttentionLayer(dim, heads, ff_mult, dropout) for _ in range(depth))
        self.norm_out = nn.LayerNorm(dim)
        self.register_buffer("slopes", alibi_slopes(heads), persistent=False)  # (h,)

    def distance_bias(self, n_frames: int, mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """-slope * |t - t'| as (h, T, T), or (B, h, T, T) with masked keys at -inf."""
        bias = distance_bias(self.slopes, n_frames)  # (h, T, T)
        if mask is not None:
            bias = bias.masked_fill(~mask[:, None, None, :], -math.inf)  # (B, h, T, T)
        return bias.to(dtype)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D); mask (B, T) bool, True = valid frame (padded frames are never attended to; their
        own outputs are meaningless) -> (B, T, D)."""
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"TemporalSelfAttention: x must be (B, T, {self.dim}), got {tuple(x.shape)}")
        if mask is not None and (mask.dtype != torch.bool or mask.shape != x.shape[:2]):
            raise ValueError(f"TemporalSelfAttention: mask must be bool (B, T) = {tuple(x.shape[:2])}, got "
                             f"{mask.dtype} {tuple(mask.shape)}")
        bias = self.distance_bias(x.shape[1], mask, x.dtype)  # (h, T, T) or (B, h, T, T)
        for layer in self.layers:
            x = layer(x, bias)  # (B, T, D)
        return self.norm_out(x)  # (B, T, D)
