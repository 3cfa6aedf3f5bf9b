"""ReferenceAttention: the cross-attention that samples texture from reference frames in PersonaTalk's
dual-attention face renderer (paper 3.2, Eq. 3; DESIGN.md 5), the block behind Lip- and Face-Attention.

    Q   = to_q(LN(E_geo(G_tgt)) + P)               (B, h*w, C)      target geometry asks
    K   = to_k(LN(E_geo(G_ref)) + P [+ F_n])       (B, N*h*w, C)    reference geometry answers
    V   = to_v(E_tex(F_ref))                       (B, N*h*w, C)    reference texture is copied
    out = to_out(softmax(Q K^T / sqrt(e)) V)       (B, C, h, w)

softmax(Q K^T) reads as the geometric correspondence between the target and the references, so the
output is reference texture moved onto the target geometry. There is no residual from Q: the output is
texture only (the decoder gets the target geometry separately).

`sample(..., ref_pixels)` also moves the references' own pixels (each latent cell's 4 x 4 RGB patch) with the
same weights, unprojected: the paper's "textures sampled by multiplying geometry correspondences with F_ref"
taken literally, at full resolution. A sampled-texture decoder (d_tex_sampled.py) starts from them, so fine
texture need not squeeze through the C-wide latent.

Choices where the paper is silent:
- One learnable positional embedding P `(1, C, h_max, w_max)` is added to both Q and K. References are
  aligned face crops, so a target cell most likely matches the same cell of a reference; P starts as a
  same-place prior (`pos_init="sincos"`: a 2-D sin/cos code per head with |P|^2 = `pos_scale` * C, and to_k
  initialised equal to a block-diagonal orthogonal to_q, so every head's q.k peaks at the same cell). With a small random P
  (`pos_init="normal"`) attention starts near uniform, and the first hundreds of steps produce a blurred
  average of all references (measured on the synthetic corpus: see experiments/experiment/render_demo.yaml).
  For another latent size (a 128-px input: 32x32 instead of 64x64) P is resized bilinearly, so one set of
  weights runs at several resolutions.
- LayerNorm (one, shared by Q and K, which come from the same encoder) on the geometry tokens bounds the
  scale of Q K^T; the texture tokens are not normalised, since V is what gets copied.
- `frame_embedding`: "none" (the paper): the references are a set, the output is invariant to their order
  and any N works. "sinusoidal": a sin/cos code of the reference's slot 0..N-1 is added to K, for callers
  whose reference order means something; still any N.

Memory: queries go to `F.scaled_dot_product_attention` in chunks of `query_chunk` tokens, so the full
`(h*w) x (N*h*w)` score matrix never exists, whichever kernel SDPA picks. Flash and memory-efficient
kernels (CUDA, and CPU flash in recent torch) never build even the chunk's scores; the math fallback
builds scores and their softmax for one chunk: about `2 * B * heads * query_chunk * N*h*w * 4` bytes in
fp32 (256 px, h*w = 4096, N = 25, 4 heads, chunk 1024, B = 1: 3.4 GB; chunk 256: 0.84 GB). Everything
else (tokens, K, V) is `O(B * N * h*w * C)`. Peak memory is therefore linear in N. Under autograd the
math kernel keeps every chunk's weights for backward (the full matrix again, spread over chunks);
`checkpoint_chunks=True` recomputes them per chunk in backward instead.

Letters: b batch, n reference frames, c width, h w latent rows and columns, t tokens, nh heads, p pixels of a
latent cell (3 x 4 x 4), e head width (C / heads).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

FRAME_EMBEDDINGS = ("none", "sinusoidal")
POS_INITS = ("sincos", "normal")


def axis_code(n: int, dim: int) -> torch.Tensor:
    """sin/cos code of cells 0..n-1 along one latent axis -> (n, dim), dim even: dim/2 frequencies spaced
    geometrically from one period over the axis to one period per 4 cells, so neighbouring cells differ."""
    k = torch.arange(dim // 2, dtype=torch.float32)
    omega = 2 * torch.pi / (n * (4 / n) ** (k / max(dim // 2 - 1, 1)))  # (dim/2,) rad per cell, 2pi/n .. pi/2
    angles = torch.arange(n, dtype=torch.float32)[:, None] * omega[None, :]  # (n, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (n, dim)


def sinusoidal_code(n: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Fixed sin/cos code (Vaswani et al. 2017) of slots 0..n-1 -> (n, dim), dim even; no parameters, so
    any n. (Not stage 1's SinusoidalPosition: importing src.models.geometry pulls in transformers.)"""
    inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)  # (dim/2,)
    angles = torch.arange(n, dtype=torch.float32)[:, None] * inv_freq[None, :]  # (n, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (n, dim)


class ReferenceAttention(nn.Module):
    """Target geometry `(B, C, h, w)` attends to N references (geometry and texture `(B, N, C, h, w)`)
    -> sampled texture `(B, C, h, w)`. Any N >= 1; any latent size (P is resized)."""

    def __init__(
        self,
        dim: int,
        heads: int = 4,
        latent_size: tuple[int, int] | list[int] = (64, 64),
        query_chunk: int | None = 1024,
        frame_embedding: str = "none",
        checkpoint_chunks: bool = False,
        pos_init: str = "sincos",
        pos_scale: float = 2.0,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"{type(self).__name__}: dim ({dim}) must be divisible by heads ({heads})")
        if len(latent_size) != 2 or min(latent_size) < 1:
            raise ValueError(f"{type(self).__name__}: latent_size must be (h, w) positive, got {latent_size}")
        if query_chunk is not None and query_chunk < 1:
            raise ValueError(f"{type(self).__name__}: query_chunk must be a positive token count or None, "
                             f"got {query_chunk}")
        if frame_embedding not in FRAME_EMBEDDINGS:
            raise ValueError(f"{type(self).__name__}: frame_embedding must be one of {FRAME_EMBEDDINGS}, "
                             f"got {frame_embedding!r}")
        if frame_embedding == "sinusoidal" and dim % 2:
            raise ValueError(f"{type(self).__name__}: frame_embedding 'sinusoidal' needs an even dim, got {dim}")
        self.dim, self.heads, self.query_chunk = dim, heads, query_chunk
        self.frame_embedding, self.checkpoint_chunks = frame_embedding, checkpoint_chunks
        if pos_init not in POS_INITS:
            raise ValueError(f"{type(self).__name__}: pos_init must be one of {POS_INITS}, got {pos_init!r}")
        if pos_init == "sincos" and (dim // heads) % 4:
            raise ValueError(f"{type(self).__name__}: pos_init 'sincos' needs a head width dim / heads divisible by "
                             f"4, got {dim} / {heads}")
        self.pos = nn.Parameter(torch.empty(1, dim, *latent_size))  # (1, C, h_max, w_max)
        self.norm_geo = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        if pos_init == "sincos":
            self._init_same_place_prior(pos_scale)
        else:
            nn.init.trunc_normal_(self.pos, std=0.02)

    @torch.no_grad()
    def _init_same_place_prior(self, scale: float) -> None:
        """P = a 2-D sin/cos code of the head width e, repeated for every head, with |P|^2 = scale * C per token,
        and to_k = to_q = a block-diagonal orthogonal matrix (one random e x e block per head), so that at
        initialisation every head's q.k peaks where target and reference cells coincide: attention starts as
        a copy of the same place in the references instead of a uniform average (a blur the decoder must
        first unlearn). A full orthogonal matrix would keep q.k's peak for the sum over heads only: per head
        the same cell won for 59% and 89% of the queries of a 2-head test layer, against 100% here."""
        c, h, w = self.pos.shape[1:]
        e = c // self.heads
        code = torch.cat([axis_code(h, e // 2)[:, None, :].expand(h, w, e // 2),   # (h, w, e/2) rows
                          axis_code(w, e // 2)[None, :, :].expand(h, w, e // 2)], -1)  # (h, w, e) + columns
        code = code * (scale * e / code.pow(2).sum(-1, keepdim=True)).sqrt()  # |code|^2 = scale * e per cell
        self.pos.copy_(rearrange(code.repeat(1, 1, self.heads), "h w c -> 1 c h w"))  # (1, C, h, w)
        blocks = [nn.init.orthogonal_(torch.empty(e, e)) for _ in range(self.heads)]
        self.to_q.weight.copy_(torch.block_diag(*blocks))  # (C, C): head j's q from head j's slice of P
        self.to_k.weight.copy_(self.to_q.weight)

    def positional(self, h: int, w: int) -> torch.Tensor:
        """P at latent size h x w as tokens `(1, h*w, C)`, resized bilinearly from the configured size."""
        pos = self.pos
        if pos.shape[-2:] != (h, w):
            pos = F.interpolate(pos, size=(h, w), mode="bilinear", align_corners=False)  # (1, C, h, w)
        return rearrange(pos, "b c h w -> b (h w) c")  # (1, h*w, C)

    def forward(self, q_geo: torch.Tensor, ref_geo: torch.Tensor, ref_tex: torch.Tensor) -> torch.Tensor:
        """q_geo (B, C, h, w); ref_geo, ref_tex (B, N, C, h, w) -> (B, C, h, w)."""
        return self.sample(q_geo, ref_geo, ref_tex)[0]

    def sample(
        self, q_geo: torch.Tensor, ref_geo: torch.Tensor, ref_tex: torch.Tensor, ref_pixels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``forward``, and with ``ref_pixels`` (B, N, P, h, w) (the references' own pixels, P = 3 * 4 * 4 per
        latent cell) also those pixels moved by the same attention weights, unprojected: -> (latent (B, C, h, w),
        sampled pixels (B, P, h, w), the mean over heads, or None)."""
        self._check(q_geo, ref_geo, ref_tex)
        b, n, c, h, w = ref_geo.shape
        pos = self.positional(h, w).to(q_geo.dtype)  # (1, h*w, C)
        q_tok = self.norm_geo(rearrange(q_geo, "b c h w -> b (h w) c")) + pos  # (B, h*w, C)
        k_tok = self.norm_geo(rearrange(ref_geo, "b n c h w -> b n (h w) c")) + pos[:, None]  # (B, N, h*w, C)
        if self.frame_embedding == "sinusoidal":
            code = sinusoidal_code(n, c).to(k_tok)  # (N, C)
            k_tok = k_tok + code[None, :, None, :]  # + (1, N, 1, C): the slot of each reference
        v_tok = rearrange(ref_tex, "b n c h w -> b (n h w) c")  # (B, N*h*w, C)
        q = rearrange(self.to_q(q_tok), "b t (nh e) -> b nh t e", nh=self.heads)  # (B, nh, h*w, e)
        k = rearrange(self.to_k(k_tok), "b n t (nh e) -> b nh (n t) e", nh=self.heads)  # (B, nh, N*h*w, e)
        v = rearrange(self.to_v(v_tok), "b t (nh e) -> b nh t e", nh=self.heads)  # (B, nh, N*h*w, e)
        e = q.shape[-1]
        if ref_pixels is not None:
            self._check_pixels(ref_pixels, ref_geo)
            pixels = rearrange(ref_pixels, "b n p h w -> b 1 (n h w) p").expand(-1, self.heads, -1, -1)
            v = torch.cat([v, pixels], dim=-1)  # (B, nh, N*h*w, e + P): every head carries the pixels
            # SDPA kernels want one head width for q, k and v: zero columns leave q.k as it was
            q, k = (F.pad(x, (0, v.shape[-1] - e)) for x in (q, k))  # (B, nh, *, e + P)
        out = self.attend(q, k, v, scale=e ** -0.5)  # (B, nh, h*w, e [+ P])
        sampled = None
        if ref_pixels is not None:
            out, sampled = out[..., :e], out[..., e:]  # (B, nh, h*w, e), (B, nh, h*w, P)
            sampled = rearrange(sampled.mean(1), "b (h w) p -> b p h w", h=h, w=w)  # (B, P, h, w)
        out = rearrange(out, "b nh t e -> b t (nh e)")  # (B, h*w, C)
        return rearrange(self.to_out(out), "b (h w) c -> b c h w", h=h, w=w), sampled  # (B, C, h, w)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        """softmax(q k^T * scale) v (scale default 1 / sqrt(q's width)), `query_chunk` queries per SDPA call:
        q (B, nh, T, e), k (B, nh, S, e), v (B, nh, S, e_v) -> (B, nh, T, e_v). No call ever sees more than
        query_chunk x S scores per head."""
        chunk = q.shape[2] if self.query_chunk is None else self.query_chunk
        recompute = self.checkpoint_chunks and torch.is_grad_enabled()
        outs = []
        for start in range(0, q.shape[2], chunk):
            q_chunk = q[:, :, start:start + chunk]  # (B, nh, <=chunk, e)
            if recompute:
                outs.append(checkpoint(F.scaled_dot_product_attention, q_chunk, k, v, scale=scale, use_reentrant=False))
            else:
                outs.append(F.scaled_dot_product_attention(q_chunk, k, v, scale=scale))  # (B, nh, <=chunk, e_v)
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)  # (B, nh, T, e_v)

    def _check_pixels(self, ref_pixels: torch.Tensor, ref_geo: torch.Tensor) -> None:
        b, n, _, h, w = ref_geo.shape
        if ref_pixels.ndim != 5 or ref_pixels.shape[:2] != (b, n) or ref_pixels.shape[3:] != (h, w):
            raise ValueError(f"{type(self).__name__}: ref_pixels must be (B, N, P, h, w) = ({b}, {n}, P, {h}, {w}) "
                             f"to match ref_geo, got {tuple(ref_pixels.shape)}")

    def _check(self, q_geo: torch.Tensor, ref_geo: torch.Tensor, ref_tex: torch.Tensor) -> None:
        name = type(self).__name__
        if q_geo.ndim != 4 or q_geo.shape[1] != self.dim:
            raise ValueError(f"{name}: q_geo must be (B, {self.dim}, h, w), got {tuple(q_geo.shape)}")
        b, _, h, w = q_geo.shape
        if ref_geo.ndim != 5 or ref_geo.shape[0] != b or ref_geo.shape[2:] != (self.dim, h, w) or ref_geo.shape[1] < 1:
            raise ValueError(f"{name}: ref_geo must be (B, N, C, h, w) = ({b}, N >= 1, {self.dim}, {h}, {w}) "
                             f"to match q_geo, got {tuple(ref_geo.shape)}")
        if ref_tex.shape != ref_geo.shape:
            raise ValueError(f"{name}: ref_tex must have ref_geo's shape {tuple(ref_geo.shape)}, "
                             f"got {tuple(ref_tex.shape)}")
