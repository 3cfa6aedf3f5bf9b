"""Table 4's "single attention" ablation (docs/design.md, "Stage 2"): one cross-attention over the face and lip
references together, with no lip mask.

    fused, px = Attn(g_tgt, [g_f, g_l], [f_f, f_l], [p_f, p_l])   (B, C, h, w), (B, 48, h, w)

Letters: b batch, n reference frames (face then lip), c width, h w latent rows and columns.
"""
from __future__ import annotations

import torch

from src.models.renderer.attention import ReferenceAttention
from src.models.renderer.fusion import Assemble, ReferenceFusion, Refs


class SingleAttention(ReferenceFusion):
    """One ``ReferenceAttention`` over all references (face references first, then lip references)."""

    merges_kinds = True

    def __init__(self, attention: ReferenceAttention) -> None:
        super().__init__()
        self.attention, self.dim = attention, attention.dim

    def forward(self, q_geo: torch.Tensor, ref_geo: Refs, ref_tex: Refs, ref_pixels: Refs | None,
                lip_mask: torch.Tensor | None, coords: Refs,
                assemble: Assemble) -> tuple[torch.Tensor, torch.Tensor | None]:
        both = [None if refs is None else torch.cat([refs["face"], refs["lip"]], dim=1)  # (B, N_f + N_l, ...)
                for refs in (ref_geo, ref_tex, ref_pixels, coords)]
        fused, pixels = self.attention.sample(q_geo, *both[:3], coords["tgt"], both[3])  # (B, C, h, w), (B, P, h, w)
        return fused, assemble["face"](pixels)  # one layout for both kinds (fusion.py)
