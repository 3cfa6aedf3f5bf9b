"""DualAttentionRenderer: the stage-2 network of PersonaTalk, the dual-attention face renderer (paper 3.2,
DESIGN.md 5). Target geometry (PNCC) and lip mask plus face- and lip-reference frames with their PNCCs
in, the target face out.

    g_tgt        = E_geo(G_tgt)                                    (B, C, h, w)       h, w = H/4, W/4
    g_f, g_l     = E_geo(G_ref_face), E_geo(G_ref_lip)             (B, N_f | N_l, C, h, w)
    f_f, f_l     = E_tex(F_ref_face), E_tex(F_ref_lip)             (B, N_f | N_l, C, h, w)
    M_l          = area_resize(lip mask)                           (B, 1, h, w)
    out          = LipAttn(g_tgt, g_l, f_l) M_l
                   + FaceAttn(g_tgt, g_f, f_f) (1 - M_l)          (B, C, h, w)       Eq. 4
    F_tgt        = D_tex(out, G_tgt)                               (B, 3, H, W)

With a sampled-texture decoder (``d_tex_sampled.SampledTextureDecoder``, the configs' default) the attentions
also move each reference's own pixels (4x4 patches, one per latent cell) with their weights; Eq. 4 fuses them
with the full-resolution lip mask and D_tex corrects the result:
    p_f, p_l     = pixel_unshuffle(F_ref_face | F_ref_lip, 4)       (B, N, 48, h, w)
    rgb          = shuffle(LipAttn_px(p_l)) M_l + shuffle(FaceAttn_px(p_f)) (1 - M_l)   (B, 3, H, W)
    F_tgt        = D_tex(out, G_tgt, rgb)                          (B, 3, H, W)

`mode` picks the paper's network or one of its ablations (Table 4):
    "dual"      Eq. 4, both attentions (the paper)
    "single"    one cross-attention over face and lip references together (face_attention's module)
    "no_lip"    Face-Attention only, over the face references (w/o Lip-Attention)
    "no_face"   Lip-Attention only, over the lip references (w/o Face-Attention)
A mode gets exactly the attention modules it uses (the others are None), so no parameter goes unused.

All reference frames of a call go through each encoder in one batched convolution; E_geo is shared by the
target and the reference PNCCs (paper 3.2), so target and references live in one geometry space. N_f and
N_l are free per call: inference uses more references than training (Algorithm 1: 5 and 25).

Letters: b batch, n reference frames, c width, h w latent rows and columns.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from src.models.renderer.attention import ReferenceAttention
from src.models.renderer.d_tex import TextureDecoder
from src.models.renderer.e_geo import GeometryEncoder
from src.models.renderer.e_tex import TextureEncoder

MODES = ("dual", "single", "no_lip", "no_face")
# the attention modules each mode needs; the rest must be None
_NEEDS = {"dual": ("lip_attention", "face_attention"), "single": ("face_attention",),
          "no_lip": ("face_attention",), "no_face": ("lip_attention",)}


class DualAttentionRenderer(nn.Module):
    """Stage 2: G_tgt `(B, 3, H, W)`, lip mask `(B, 1, H, W)`, face references `(B, N_f, 3, H, W)` (frames
    and PNCCs), lip references `(B, N_l, 3, H, W)` (frames and PNCCs), all in [0, 1] -> `(B, 3, H, W)`.
    H and W multiples of 4."""

    def __init__(
        self,
        e_geo: GeometryEncoder,
        e_tex: TextureEncoder,
        lip_attention: ReferenceAttention | None,
        face_attention: ReferenceAttention | None,
        d_tex: TextureDecoder,
        mode: str = "dual",
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"DualAttentionRenderer: mode must be one of {MODES}, got {mode!r}")
        given = dict(lip_attention=lip_attention, face_attention=face_attention)
        for name, module in given.items():
            if (module is None) == (name in _NEEDS[mode]):
                raise ValueError(
                    f"DualAttentionRenderer: mode {mode!r} uses {' and '.join(_NEEDS[mode])}; {name} must be "
                    f"{'given' if name in _NEEDS[mode] else 'None'}, got {type(module).__name__}"
                )
        parts = dict(e_geo=e_geo, e_tex=e_tex, d_tex=d_tex, **given)
        dims = {name: part.dim for name, part in parts.items() if part is not None}
        if len(set(dims.values())) != 1:
            raise ValueError(f"DualAttentionRenderer: all submodules need the same width C, got {dims}")
        self.e_geo, self.e_tex, self.d_tex = e_geo, e_tex, d_tex
        self.lip_attention, self.face_attention = lip_attention, face_attention
        self.mode, self.dim = mode, e_geo.dim
        self.samples_rgb = bool(getattr(d_tex, "uses_sampled_rgb", False))  # d_tex_sampled.SampledTextureDecoder

    @property
    def uses_face_refs(self) -> bool:
        return self.mode != "no_face"

    @property
    def uses_lip_refs(self) -> bool:
        return self.mode != "no_lip"

    def forward(
        self,
        tgt_pncc: torch.Tensor,
        tgt_lip_mask: torch.Tensor | None,
        face_ref_img: torch.Tensor | None,
        face_ref_pncc: torch.Tensor | None,
        lip_ref_img: torch.Tensor | None,
        lip_ref_pncc: torch.Tensor | None,
    ) -> torch.Tensor:
        """tgt_pncc (B, 3, H, W); tgt_lip_mask (B, 1, H, W) (read in mode "dual" only); face_ref_img and
        face_ref_pncc (B, N_f, 3, H, W) (unused in "no_face"); lip_ref_img and lip_ref_pncc
        (B, N_l, 3, H, W) (unused in "no_lip"). Inputs a mode does not read may be None. -> (B, 3, H, W)."""
        refs = self._check(tgt_pncc, tgt_lip_mask, face_ref_img, face_ref_pncc, lip_ref_img, lip_ref_pncc)
        q_geo, ref_geo, ref_tex = self.encode(tgt_pncc, refs)  # (B, C, h, w), {kind: (B, N, C, h, w)} x 2
        # the references' own pixels, one 4x4 patch per latent cell, for a decoder that starts from them
        pix = {kind: F.pixel_unshuffle(img, 4) for kind, (img, _) in refs.items()} if self.samples_rgb else {}
        if self.mode == "single":  # one attention over face and lip references together
            both = [torch.cat([d["face"], d["lip"]], dim=1) if d else None for d in (ref_geo, ref_tex, pix)]
            fused, rgb = self.face_attention.sample(q_geo, *both)  # (B, C, h, w), (B, 48, h, w) | None
        elif self.mode in ("no_lip", "no_face"):
            kind, attention = ("face", self.face_attention) if self.mode == "no_lip" else ("lip", self.lip_attention)
            fused, rgb = attention.sample(q_geo, ref_geo[kind], ref_tex[kind], pix.get(kind))  # (B, C, h, w)
        else:
            lip, lip_rgb = self.lip_attention.sample(q_geo, ref_geo["lip"], ref_tex["lip"], pix.get("lip"))
            face, face_rgb = self.face_attention.sample(q_geo, ref_geo["face"], ref_tex["face"], pix.get("face"))
            mask = F.interpolate(tgt_lip_mask, size=q_geo.shape[-2:], mode="area")  # (B, 1, h, w) lip fraction
            fused = lip * mask + face * (1 - mask)  # (B, C, h, w), Eq. 4
            if self.samples_rgb:  # Eq. 4 on the sampled pixels, with the full-resolution mask
                rgb = F.pixel_shuffle(lip_rgb, 4) * tgt_lip_mask + F.pixel_shuffle(face_rgb, 4) * (1 - tgt_lip_mask)
        if not self.samples_rgb:
            return self.d_tex(fused, tgt_pncc)  # (B, 3, H, W)
        if self.mode != "dual":
            rgb = F.pixel_shuffle(rgb, 4)  # (B, 48, h, w) -> (B, 3, H, W)
        return self.d_tex(fused, tgt_pncc, rgb)  # (B, 3, H, W)

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
        """Validate shapes; -> {"face" | "lip": (img, pncc)} for the references this mode reads."""
        if tgt_pncc.ndim != 4 or tgt_pncc.shape[1] != 3 or tgt_pncc.shape[2] % 4 or tgt_pncc.shape[3] % 4:
            raise ValueError("DualAttentionRenderer: tgt_pncc must be (B, 3, H, W) with H, W multiples of 4, "
                             f"got {tuple(tgt_pncc.shape)}")
        b, _, h, w = tgt_pncc.shape
        if self.mode == "dual" and (tgt_lip_mask is None or tgt_lip_mask.shape != (b, 1, h, w)):
            raise ValueError(f"DualAttentionRenderer: tgt_lip_mask must be (B, 1, H, W) = {(b, 1, h, w)} in mode "
                             f"'dual', got {None if tgt_lip_mask is None else tuple(tgt_lip_mask.shape)}")
        refs = {}
        for kind, img, pncc, used in (("face", face_ref_img, face_ref_pncc, self.uses_face_refs),
                                      ("lip", lip_ref_img, lip_ref_pncc, self.uses_lip_refs)):
            if not used:
                continue
            for name, x in ((f"{kind}_ref_img", img), (f"{kind}_ref_pncc", pncc)):
                if x is None or x.ndim != 5 or x.shape[0] != b or x.shape[1] < 1 or x.shape[2:] != (3, h, w):
                    raise ValueError(
                        f"DualAttentionRenderer: {name} must be (B, N, 3, H, W) = ({b}, N >= 1, 3, {h}, {w}) "
                        f"in mode {self.mode!r}, got {None if x is None else tuple(x.shape)}"
                    )
            if img.shape != pncc.shape:
                raise ValueError(f"DualAttentionRenderer: {kind}_ref_img {tuple(img.shape)} and {kind}_ref_pncc "
                                 f"{tuple(pncc.shape)} must match (one PNCC per reference frame)")
            refs[kind] = (img, pncc)
        return refs
