"""Eq. 4 of PersonaTalk (paper 3.2; docs/design.md, "Stage 2"): Lip-Attention over the lip references inside the
lip mask, Face-Attention over the face references outside it.

    M_l   = area_resize(lip mask)                                  (B, 1, h, w)    the lip fraction of each cell
    fused = LipAttn(g_tgt, g_l, f_l) M_l + FaceAttn(g_tgt, g_f, f_f) (1 - M_l)      (B, C, h, w)
    rgb   = shuffle(LipAttn_px(p_l)) M + shuffle(FaceAttn_px(p_f)) (1 - M)         (B, 3, H, W), full-res mask M

Letters: b batch, c width, h w latent rows and columns.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from src.models.renderer.face_attention import FaceAttention
from src.models.renderer.fusion import Assemble, ReferenceFusion, Refs
from src.models.renderer.lip_attention import LipAttention


class DualAttentionFusion(ReferenceFusion):
    """The paper's renderer: both attentions, fused by the target's lip mask."""

    needs_lip_mask = True

    def __init__(self, lip_attention: LipAttention, face_attention: FaceAttention) -> None:
        super().__init__()
        if lip_attention.dim != face_attention.dim:
            raise ValueError(f"DualAttentionFusion: lip_attention and face_attention need the same width, got "
                             f"{lip_attention.dim} and {face_attention.dim}")
        self.lip_attention, self.face_attention = lip_attention, face_attention
        self.dim = lip_attention.dim

    def forward(self, q_geo: torch.Tensor, ref_geo: Refs, ref_tex: Refs, ref_pixels: Refs | None,
                lip_mask: torch.Tensor | None, coords: Refs,
                assemble: Assemble) -> tuple[torch.Tensor, torch.Tensor | None]:
        pixels = ref_pixels or {}
        lip, lip_rgb = self.lip_attention.sample(q_geo, ref_geo["lip"], ref_tex["lip"], pixels.get("lip"),
                                                 coords["tgt"], coords["lip"])
        face, face_rgb = self.face_attention.sample(q_geo, ref_geo["face"], ref_tex["face"], pixels.get("face"),
                                                    coords["tgt"], coords["face"])
        mask = F.interpolate(lip_mask, size=q_geo.shape[-2:], mode="area")  # (B, 1, h, w)
        fused = lip * mask + face * (1 - mask)  # (B, C, h, w), Eq. 4
        if ref_pixels is None:
            return fused, None
        rgb = assemble["lip"](lip_rgb) * lip_mask + assemble["face"](face_rgb) * (1 - lip_mask)  # (B, 3, H, W)
        return fused, rgb
