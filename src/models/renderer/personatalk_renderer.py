"""DualAttentionRenderer: the stage-2 network of PersonaTalk, the dual-attention face renderer (paper 3.2;
docs/design.md, "Stage 2"). Target geometry (PNCC) and lip mask plus face- and lip-reference frames with their
PNCCs in, the target face out.

    g_tgt        = E_geo(G_tgt)                                    (B, C, h, w)       h, w = H/4, W/4
    g_f, g_l     = E_geo(G_ref_face), E_geo(G_ref_lip)             (B, N_f | N_l, C, h, w)
    f_f, f_l     = E_tex(F_ref_face), E_tex(F_ref_lip)             (B, N_f | N_l, C, h, w)
    out [, rgb]  = attention(g_tgt, g, f [, p], lip mask)          (B, C, h, w) [, (B, 3, H, W)]
    F_tgt        = D_tex(out, G_tgt [, rgb])                       (B, 3, H, W)

``attention`` is the injected way the attentions are combined (``fusion.py``): Lip- and Face-Attention fused by
Eq. 4 (``dual_fusion.DualAttentionFusion``, the paper) or one of the Table 4 ablations; it says which
references it reads, so a variant builds, and is fed, only what it uses. With a sampled-texture decoder
(``d_tex_sampled.SampledTextureDecoder``, the configs' default; ``uses_sampled_rgb``) the attentions also move
each reference's own pixels, one patch per latent cell (``patches``, ``cell_patches.CellPatches``: the cell's 4x4
block, p = pixel_unshuffle(F_ref, 4) (B, N, 48, h, w), or with a margin overlapping 8x8 patches put back by
overlap-add, which blends neighbouring cells that sample different places), and D_tex corrects the result.
``face_patches`` (optional) is another layout for the face references only: ``flow_patches.FlowPatches`` cuts
their patches along the attention's smoothed flow instead of moving them in whole cells. ``face_choice``
(optional) picks Face-Attention's references by geometry: ``nearest_references.NearestFaceReferences`` keeps the k
references, of all given, whose PNCC is nearest the target's.

All reference frames of a call go through each encoder in one batched convolution; E_geo is shared by the
target and the reference PNCCs (paper 3.2), so target and references live in one geometry space. N_f and
N_l are free per call: inference uses more references than training (Algorithm 1: 5 and 25).

Letters: b batch, n reference frames, c width, h w latent rows and columns.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from src.models.renderer.cell_patches import CellPatches
from src.models.renderer.d_tex import TextureDecoder
from src.models.renderer.e_geo import GeometryEncoder
from src.models.renderer.e_tex import TextureEncoder
from src.models.renderer.fusion import ReferenceFusion
from src.models.renderer.nearest_references import NearestFaceReferences

KINDS = ("face", "lip")


class DualAttentionRenderer(nn.Module):
    """Stage 2: G_tgt `(B, 3, H, W)`, lip mask `(B, 1, H, W)`, face references `(B, N_f, 3, H, W)` (frames
    and PNCCs), lip references `(B, N_l, 3, H, W)` (frames and PNCCs), all in [0, 1] -> `(B, 3, H, W)`.
    H and W multiples of 4."""

    def __init__(self, e_geo: GeometryEncoder, e_tex: TextureEncoder, attention: ReferenceFusion,
                 d_tex: TextureDecoder, patches: CellPatches | None = None,
                 face_patches: CellPatches | None = None, face_choice: NearestFaceReferences | None = None) -> None:
        super().__init__()
        dims = {name: part.dim for name, part in dict(e_geo=e_geo, e_tex=e_tex, attention=attention,
                                                      d_tex=d_tex).items()}
        if len(set(dims.values())) != 1:
            raise ValueError(f"DualAttentionRenderer: all submodules need the same width C, got {dims}")
        patches = CellPatches() if patches is None else patches
        for name, layout in dict(patches=patches, face_patches=face_patches).items():
            if layout is not None and layout.cell != 4:
                raise ValueError(f"DualAttentionRenderer: {name}.cell must be 4 (the latent is H/4 x W/4), "
                                 f"got {layout.cell}")
        if face_patches is not None and attention.merges_kinds:
            raise ValueError(f"DualAttentionRenderer: face_patches needs an attention that keeps face and lip "
                             f"references apart; {type(attention).__name__} attends to both at once (leave "
                             f"face_patches unset)")
        if face_choice is not None and not attention.uses_face_refs:
            raise ValueError(f"DualAttentionRenderer: face_choice picks face references, which "
                             f"{type(attention).__name__} does not read (leave face_choice unset)")
        self.e_geo, self.e_tex, self.attention, self.d_tex, self.patches = e_geo, e_tex, attention, d_tex, patches
        self.face_patches, self.face_choice = face_patches, face_choice
        self.dim = e_geo.dim

    @property
    def uses_face_refs(self) -> bool:
        return self.attention.uses_face_refs

    @property
    def uses_lip_refs(self) -> bool:
        return self.attention.uses_lip_refs

    def forward(
        self,
        tgt_pncc: torch.Tensor,
        tgt_lip_mask: torch.Tensor | None,
        face_ref_img: torch.Tensor | None,
        face_ref_pncc: torch.Tensor | None,
        lip_ref_img: torch.Tensor | None,
        lip_ref_pncc: torch.Tensor | None,
    ) -> torch.Tensor:
        """tgt_pncc (B, 3, H, W); tgt_lip_mask (B, 1, H, W) (read when ``attention.needs_lip_mask``); face_ref_img
        and face_ref_pncc (B, N_f, 3, H, W) (when ``uses_face_refs``); lip_ref_img and lip_ref_pncc
        (B, N_l, 3, H, W) (when ``uses_lip_refs``). Inputs the attention does not read may be None."""
        refs = self._check(tgt_pncc, tgt_lip_mask, face_ref_img, face_ref_pncc, lip_ref_img, lip_ref_pncc)
        if self.face_choice is not None:
            refs = self.face_choice(tgt_pncc, refs)  # face: (B, k, 3, H, W) frames and PNCCs
        q_geo, ref_geo, ref_tex = self.encode(tgt_pncc, refs)  # (B, C, h, w), {kind: (B, N, C, h, w)} x 2
        pixels = None
        if self.d_tex.uses_sampled_rgb:  # the references' own pixels, one patch per latent cell
            pixels = {kind: self.layout(kind).extract(img) for kind, (img, _) in refs.items()}  # (B, N, P, h, w)
        assemble = {kind: functools.partial(self.layout(kind).assemble, frames=img) for kind, (img, _) in refs.items()}
        coords = self.cell_coords(tgt_pncc, refs, q_geo.shape[-2:])  # {"tgt": (B, 3, h, w), kind: (B, N, 3, h, w)}
        fused, rgb = self.attention(q_geo, ref_geo, ref_tex, pixels, tgt_lip_mask, coords,  # (B, C, h, w)
                                    assemble)  # rgb (B, 3, H, W)
        if self.d_tex.uses_sampled_rgb:
            return self.d_tex(fused, tgt_pncc, rgb)  # (B, 3, H, W)
        return self.d_tex(fused, tgt_pncc)  # (B, 3, H, W)

    def layout(self, kind: str) -> CellPatches:
        """The patch layout of a kind of references: ``face_patches`` for the face references when set, else
        ``patches``."""
        return self.face_patches if kind == "face" and self.face_patches is not None else self.patches

    @staticmethod
    def cell_coords(tgt_pncc: torch.Tensor, refs: dict, size) -> dict[str, torch.Tensor]:
        """The PNCC colour of every latent cell (area means over its 4x4 pixels), of the target and of each
        reference: what an attention's correspondence term compares."""
        coords = {"tgt": F.interpolate(tgt_pncc, size=size, mode="area")}  # (B, 3, h, w)
        for kind, (_, pncc) in refs.items():
            b, n = pncc.shape[:2]
            cells = F.interpolate(rearrange(pncc, "b n c h w -> (b n) c h w"), size=size, mode="area")
            coords[kind] = rearrange(cells, "(b n) c h w -> b n c h w", b=b, n=n)  # (B, N, 3, h, w)
        return coords

    def encode(
        self, tgt_pncc: torch.Tensor, refs: dict[str, tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Target PNCC and every reference PNCC through E_geo in one call, every reference frame through
        E_tex in one call. refs: {"face" | "lip": (img, pncc) each (B, N, 3, H, W)} -> E_geo(G_tgt)
        (B, C, h, w), {kind: E_geo(pncc) (B, N, C, h, w)}, {kind: E_tex(img) (B, N, C, h, w)}."""
        b = tgt_pncc.shape[0]
        kinds = list(refs)
        sizes = [refs[kind][0].shape[1] * b for kind in kinds]  # B * N per kind
        pnccs = [rearrange(refs[kind][1], "b n c h w -> (b n) c h w") for kind in kinds]  # (B N, 3, H, W)
        images = [rearrange(refs[kind][0], "b n c h w -> (b n) c h w") for kind in kinds]  # (B N, 3, H, W)
        geo = self.e_geo(torch.cat([tgt_pncc, *pnccs]))  # (B + sum B N, C, h, w)
        tex = self.e_tex(torch.cat(images))  # (sum B N, C, h, w)
        q_geo, *ref_geo = geo.split([b, *sizes])
        ref_geo = {kind: rearrange(g, "(b n) c h w -> b n c h w", b=b)  # (B, N, C, h, w)
                   for kind, g in zip(kinds, ref_geo)}
        ref_tex = {kind: rearrange(t, "(b n) c h w -> b n c h w", b=b)  # (B, N, C, h, w)
                   for kind, t in zip(kinds, tex.split(sizes))}
        return q_geo, ref_geo, ref_tex

    def _check(self, tgt_pncc, tgt_lip_mask, face_ref_img, face_ref_pncc, lip_ref_img, lip_ref_pncc):
        """Validate shapes; -> {"face" | "lip": (img, pncc)} for the references the attention reads."""
        if tgt_pncc.ndim != 4 or tgt_pncc.shape[1] != 3 or tgt_pncc.shape[2] % 4 or tgt_pncc.shape[3] % 4:
            raise ValueError("DualAttentionRenderer: tgt_pncc must be (B, 3, H, W) with H, W multiples of 4, "
                             f"got {tuple(tgt_pncc.shape)}")
        b, _, h, w = tgt_pncc.shape
        variant = type(self.attention).__name__
        if self.attention.needs_lip_mask and (tgt_lip_mask is None or tgt_lip_mask.shape != (b, 1, h, w)):
            raise ValueError(f"DualAttentionRenderer: tgt_lip_mask must be (B, 1, H, W) = {(b, 1, h, w)} with "
                             f"{variant}, got {None if tgt_lip_mask is None else tuple(tgt_lip_mask.shape)}")
        given = {"face": (face_ref_img, face_ref_pncc, self.uses_face_refs),
                 "lip": (lip_ref_img, lip_ref_pncc, self.uses_lip_refs)}
        refs = {}
        for kind, (img, pncc, used) in given.items():
            if not used:
                continue
            for name, x in ((f"{kind}_ref_img", img), (f"{kind}_ref_pncc", pncc)):
                if x is None or x.ndim != 5 or x.shape[0] != b or x.shape[1] < 1 or x.shape[2:] != (3, h, w):
                    raise ValueError(
                        f"DualAttentionRenderer: {name} must be (B, N, 3, H, W) = ({b}, N >= 1, 3, {h}, {w}) "
                        f"with {variant}, got {None if x is None else tuple(x.shape)}"
                    )
            if img.shape != pncc.shape:
                raise ValueError(f"DualAttentionRenderer: {kind}_ref_img {tuple(img.shape)} and {kind}_ref_pncc "
                                 f"{tuple(pncc.shape)} must match (one PNCC per reference frame)")
            refs[kind] = (img, pncc)
        return refs
