"""Table 4's "w/o Face-Attention" ablation (docs/design.md, "Stage 2"): Lip-Attention over the lip references
paints the whole face; the face references are not read.

Letters: b batch, c width, h w latent rows and columns.
"""
from __future__ import annotations

import torch

from src.models.renderer.fusion import Assemble, ReferenceFusion, Refs
from src.models.renderer.lip_attention import LipAttention


class LipAttentionOnly(ReferenceFusion):
    uses_face_refs = False

    def __init__(self, lip_attention: LipAttention) -> None:
        super().__init__()
        self.lip_attention, self.dim = lip_attention, lip_attention.dim

    def forward(self, q_geo: torch.Tensor, ref_geo: Refs, ref_tex: Refs, ref_pixels: Refs | None,
                lip_mask: torch.Tensor | None, coords: Refs,
                assemble: Assemble) -> tuple[torch.Tensor, torch.Tensor | None]:
        pixels = None if ref_pixels is None else ref_pixels["lip"]
        fused, sampled = self.lip_attention.sample(q_geo, ref_geo["lip"], ref_tex["lip"], pixels,  # (B, C, h, w)
                                                coords["tgt"], coords["lip"])
        return fused, assemble["lip"](sampled)
