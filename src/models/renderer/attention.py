"""ReferenceAttention: the cross-attention that samples texture from reference frames in PersonaTalk's
dual-attention face renderer (paper 3.2, Eq. 3; docs/design.md, "Stage 2"), the block behind Lip- and
Face-Attention.

    Q   = to_q(LN(E_geo(G_tgt)) + P)               (B, h*w, C)      target geometry asks
    K   = to_k(LN(E_geo(G_ref)) + P [+ slot])      (B, N*h*w, C)    reference geometry answers
    V   = to_v(E_tex(F_ref))                       (B, N*h*w, C)    reference texture is copied
    out = to_out(softmax(Q K^T / sqrt(e)) V)       (B, C, h, w)

softmax(Q K^T) reads as the geometric correspondence between the target and the references, so the output is
reference texture moved onto the target geometry. There is no residual from Q: the output is texture only (the
decoder gets the target geometry separately).

``sample(..., ref_pixels)`` also moves the references' own pixels (each latent cell's patch, cell_patches.py) with the
same weights, unprojected: the paper's "textures sampled by multiplying geometry correspondences with F_ref"
taken literally, at full resolution. A sampled-texture decoder (d_tex_sampled.py) starts from them, so fine
texture need not squeeze through the C-wide latent.

Choices where the paper is silent:
- P (``position.LatentPosition``) is added to both Q and K. References are aligned face crops, so a target cell
  most likely matches the same cell of a reference; P starts as a same-place prior, with to_k initialised equal
  to a block-diagonal orthogonal to_q so that every head's q.k peaks at the same cell. With a small random P
  (``pos_init="normal"``) attention starts near uniform, and the first hundreds of steps produce a blurred
  average of all references (measured on the synthetic corpus: experiments/experiment/render_demo.yaml).
  Another latent size (a 128-px input: 32x32 instead of 64x64) resizes P, so one set of weights runs at several
  resolutions.
- One LayerNorm, shared by Q and K (they come from the same encoder), bounds the scale of Q K^T; the texture
  tokens are not normalised, since V is what gets copied.
- ``slot_code`` (``slot_code.SlotCode``, optional): a code of each reference's slot added to K; without it the
  references are a set.
- ``inference_temperature``: outside training the logits are divided by it. Below 1 each target cell copies from
  fewer reference cells: the L1-trained renderer averages the references it is unsure between, and a sharper
  softmax keeps the mouth's texture (render_real, margin-2 patches, 1000 steps, the 15 val clips: lip sharpness
  0.63 at 1, 0.75 at 0.5, 0.79 at 0.35, 0.80 at 0.3, 0.82 at 0.25, for 0.06 / 0.10 / 0.12 / 0.14 dB of lip PSNR;
  with disjoint 4 x 4 patches, cells taken from different places show as a mosaic, more at low T). Training is at 1.
- ``reference_prior`` (``reference_prior.ReferencePrior``, optional): one logit bias per reference frame, -beta times
  the mean PNCC distance of its cells to the target's, so the cells the geometry cannot place (background, hair)
  copy from the references nearest the target's pose instead of averaging all N.
- ``correspondence`` (``correspondence.GeometricCorrespondence``, optional): a logit bias -gamma/2 |p_t - p_r|^2 from
  the cells' PNCC colours (``tgt_coords``, ``ref_coords``), so each target cell attends to the reference cells
  that show its surface point; without it (the paper) the correspondence is learned by E_geo alone.

Memory: ``chunked_attention`` with ``query_chunk`` queries per call, so the full ``(h*w) x (N*h*w)`` score
matrix never exists; peak memory is linear in N. ``checkpoint_chunks`` recomputes each chunk in backward.

Letters: b batch, n reference frames, c width, h w latent rows and columns, t tokens, nh heads, p pixels of a
latent cell (3 x 4 x 4), e head width (C / heads).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from src.models.renderer.chunked_attention import chunked_attention
from src.models.renderer.correspondence import GeometricCorrespondence
from src.models.renderer.position import LatentPosition
from src.models.renderer.reference_prior import ReferencePrior
from src.models.renderer.slot_code import SlotCode


class ReferenceAttention(nn.Module):
    """Target geometry `(B, C, h, w)` attends to N references (geometry and texture `(B, N, C, h, w)`)
    -> sampled texture `(B, C, h, w)`. Any N >= 1; any latent size (P is resized)."""

    def __init__(self, dim: int, heads: int = 4, latent_size: tuple[int, int] | list[int] = (64, 64),
                 query_chunk: int | None = 1024, slot_code: SlotCode | None = None, checkpoint_chunks: bool = False,
                 pos_init: str = "sincos", pos_scale: float = 2.0,
                 correspondence: GeometricCorrespondence | None = None,
                 inference_temperature: float = 1.0, reference_prior: ReferencePrior | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        if dim % heads:
            raise ValueError(f"{name}: dim ({dim}) must be divisible by heads ({heads})")
        if query_chunk is not None and query_chunk < 1:
            raise ValueError(f"{name}: query_chunk must be a positive token count or None, got {query_chunk}")
        if slot_code is not None and slot_code.dim != dim:
            raise ValueError(f"{name}: slot_code has width {slot_code.dim}, the attention {dim}")
        self.dim, self.heads, self.query_chunk, self.checkpoint_chunks = dim, heads, query_chunk, checkpoint_chunks
        self.inference_temperature = check_temperature(inference_temperature, f"{name}: inference_temperature")
        if correspondence is not None and correspondence.heads != heads:
            raise ValueError(f"{name}: correspondence has {correspondence.heads} heads, the attention {heads}")
        if reference_prior is not None and reference_prior.heads != heads:
            raise ValueError(f"{name}: reference_prior has {reference_prior.heads} heads, the attention {heads}")
        self.position = LatentPosition(dim, heads, latent_size, pos_init, pos_scale)
        self.slot_code, self.correspondence, self.reference_prior = slot_code, correspondence, reference_prior
        self.norm_geo = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        if self.position.same_place:
            self._tie_projections()

    @torch.no_grad()
    def _tie_projections(self) -> None:
        """to_k = to_q = a block-diagonal orthogonal matrix, one random e x e block per head, so that head j's q.k
        compares head j's slice of P with itself. A full orthogonal matrix would keep q.k's peak for the sum over
        heads only: per head the same cell won for 59% and 89% of the queries of a 2-head test layer, against
        100% here."""
        e = self.dim // self.heads
        blocks = [nn.init.orthogonal_(torch.empty(e, e)) for _ in range(self.heads)]
        self.to_q.weight.copy_(torch.block_diag(*blocks))  # (C, C)
        self.to_k.weight.copy_(self.to_q.weight)

    def forward(self, q_geo: torch.Tensor, ref_geo: torch.Tensor, ref_tex: torch.Tensor) -> torch.Tensor:
        """q_geo (B, C, h, w); ref_geo, ref_tex (B, N, C, h, w) -> (B, C, h, w)."""
        return self.sample(q_geo, ref_geo, ref_tex)[0]

    def sample(self, q_geo: torch.Tensor, ref_geo: torch.Tensor, ref_tex: torch.Tensor,
               ref_pixels: torch.Tensor | None = None, tgt_coords: torch.Tensor | None = None,
               ref_coords: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``forward``, and with ``ref_pixels`` (B, N, P, h, w) (P numbers per latent cell, ``CellPatches``) also those
        pixels moved by the same attention weights: -> (latent (B, C, h, w), pixels (B, P, h, w) or None).
        ``tgt_coords`` (B, 3, h, w) and ``ref_coords`` (B, N, 3, h, w): the cells' PNCC colours, read (and needed)
        with a ``correspondence``."""
        self._check(q_geo, ref_geo, ref_tex, ref_pixels)
        b, n, c, h, w = ref_geo.shape
        pos = self.position(h, w).to(q_geo.dtype)  # (1, h*w, C)
        q_tok = self.norm_geo(rearrange(q_geo, "b c h w -> b (h w) c")) + pos  # (B, h*w, C)
        k_tok = self.norm_geo(rearrange(ref_geo, "b n c h w -> b n (h w) c")) + pos[:, None]  # (B, N, h*w, C)
        if self.slot_code is not None:
            k_tok = k_tok + self.slot_code(n).to(k_tok)[None, :, None, :]  # + (1, N, 1, C)
        v_tok = rearrange(ref_tex, "b n c h w -> b (n h w) c")  # (B, N*h*w, C)
        q = rearrange(self.to_q(q_tok), "b t (nh e) -> b nh t e", nh=self.heads)  # (B, nh, h*w, e)
        k = rearrange(self.to_k(k_tok), "b n t (nh e) -> b nh (n t) e", nh=self.heads)  # (B, nh, N*h*w, e)
        v = rearrange(self.to_v(v_tok), "b t (nh e) -> b nh t e", nh=self.heads)  # (B, nh, N*h*w, e)
        e = q.shape[-1]
        if self.correspondence is not None or self.reference_prior is not None:
            tgt_tokens, ref_tokens = self._coords(tgt_coords, ref_coords, q_geo, ref_geo)  # (B, h*w, 3), (B, N*h*w, 3)
            if self.correspondence is not None:
                q, k = self.correspondence.extend(q, k, tgt_tokens, ref_tokens, e ** -0.5)
            if self.reference_prior is not None:
                q, k = self.reference_prior.extend(q, k, tgt_coords, ref_coords, e ** -0.5)
        if ref_pixels is not None:
            pixels = rearrange(ref_pixels, "b n p h w -> b 1 (n h w) p").expand(-1, self.heads, -1, -1)
            v = torch.cat([v, pixels], dim=-1)  # (B, nh, N*h*w, e + P): every head carries the pixels
        v_width = v.shape[-1]
        width = max(q.shape[-1], v_width)  # one head width for SDPA: zero columns leave q.k and the values as they are
        q, k, v = (F.pad(x, (0, width - x.shape[-1])) for x in (q, k, v))
        temperature = 1.0 if self.training else self.inference_temperature  # divides every logit, bias included
        scale = e ** -0.5 / temperature
        out = chunked_attention(q, k, v, scale, self.query_chunk, self.checkpoint_chunks)[..., :v_width]
        sampled = None
        if ref_pixels is not None:
            out, sampled = out[..., :e], out[..., e:]  # (B, nh, h*w, e), (B, nh, h*w, P)
            sampled = rearrange(sampled.mean(1), "b (h w) p -> b p h w", h=h, w=w)  # (B, P, h, w) mean over heads
        out = rearrange(out, "b nh t e -> b t (nh e)")  # (B, h*w, C)
        return rearrange(self.to_out(out), "b (h w) c -> b c h w", h=h, w=w), sampled  # (B, C, h, w)

    def _coords(self, tgt_coords, ref_coords, q_geo, ref_geo) -> tuple[torch.Tensor, torch.Tensor]:
        """The cells' PNCC colours as tokens: (B, h*w, 3) and (B, N*h*w, 3). Raises unless they match the latent."""
        b, n, _, h, w = ref_geo.shape
        if tgt_coords is None or ref_coords is None or tgt_coords.shape != (b, 3, h, w) or \
                ref_coords.shape != (b, n, 3, h, w):
            raise ValueError(f"{type(self).__name__}: with a correspondence or a reference prior, tgt_coords must be "
                             f"(B, 3, h, w) = ({b}, 3, {h}, {w}) and ref_coords (B, N, 3, h, w) = "
                             f"({b}, {n}, 3, {h}, {w}), got "
                             f"{None if tgt_coords is None else tuple(tgt_coords.shape)} and "
                             f"{None if ref_coords is None else tuple(ref_coords.shape)}")
        return (rearrange(tgt_coords, "b c h w -> b (h w) c"),  # (B, h*w, 3)
                rearrange(ref_coords, "b n c h w -> b (n h w) c"))  # (B, N*h*w, 3)

    def _check(self, q_geo: torch.Tensor, ref_geo: torch.Tensor, ref_tex: torch.Tensor,
               ref_pixels: torch.Tensor | None) -> None:
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
        n = ref_geo.shape[1]
        if ref_pixels is not None and (ref_pixels.ndim != 5 or ref_pixels.shape[:2] != (b, n)
                                       or ref_pixels.shape[3:] != (h, w)):
            raise ValueError(f"{name}: ref_pixels must be (B, N, P, h, w) = ({b}, {n}, P, {h}, {w}) "
                             f"to match ref_geo, got {tuple(ref_pixels.shape)}")


def check_temperature(value: float, what: str) -> float:
    if not (isinstance(value, (int, float)) and 0 < value < float("inf")):
        raise ValueError(f"{what} must be a number > 0, got {value!r}")
    return float(value)


def set_inference_temperature(net: nn.Module, value: float) -> int:
    """Every ``ReferenceAttention`` in ``net`` divides its logits by ``value`` outside training -> how many."""
    value = check_temperature(value, "attention temperature")
    found = [m for m in net.modules() if isinstance(m, ReferenceAttention)]
    for module in found:
        module.inference_temperature = value
    return len(found)
