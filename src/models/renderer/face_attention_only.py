"""Table 4's "w/o Lip-Attention" ablation (docs/design.md, "Stage 2"): Face-Attention over the face references
paints the whole face, mouth included; the lip references are not read.

Letters: b batch, c width, h w latent rows and columns.
"""
from __future__ import annotations

import torch

from src.models.renderer.face_attention import FaceAttention
from src.models.renderer.fusion import Assemble, ReferenceFusion, Refs


class FaceAttentionOnly(ReferenceFusion):
    uses_lip_refs = False

    def __init__(self, face_attention: FaceAttention) -> None:
        super().__init__()
        self.face_attention, self.dim = face_attention, face_attention.dim

    def forward(self, q_geo: torch.Tensor, ref_geo: Refs, ref_tex: Refs, ref_pixels: Refs | None,
                lip_mask: torch.Tensor | None, coords: Refs,
                assemble: Assemble) -> tuple[torch.Tensor, torch.Tensor | None]:
        pixels = None if ref_pixels is None else ref_pixels["face"]
        fused, sampled = self.face_attention.sample(q_geo, ref_geo["face"], ref_tex["face"], pixels,  # (B, C, h, w)
                                                coords["tgt"], coords["face"])
        return fused, assemble["face"](sampled)
