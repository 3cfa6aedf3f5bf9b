"""How the renderer's attentions are combined: the contract of the injected ``attention`` module of
``DualAttentionRenderer`` (docs/design.md, "Stage 2"). One variant per file, so each Table 4 ablation is one
``_target_`` swap (experiments/model/net/attention/):

    dual_fusion.DualAttentionFusion        Lip- and Face-Attention, fused by Eq. 4 (the paper)
    single_attention.SingleAttention       one cross-attention over face and lip references together
    lip_attention_only.LipAttentionOnly    Lip-Attention only (w/o Face-Attention)
    face_attention_only.FaceAttentionOnly  Face-Attention only (w/o Lip-Attention)

A variant says which references it reads (``uses_face_refs``, ``uses_lip_refs``) and whether it needs the
target's lip mask, and maps

    q_geo (B, C, h, w), {kind: E_geo(ref PNCCs) (B, N, C, h, w)}, {kind: E_tex(ref frames) (B, N, C, h, w)},
    {kind: ref pixel patches (B, N, P, h, w)} or None, lip mask (B, 1, H, W) or None,
    {"tgt": (B, 3, h, w), kind: (B, N, 3, h, w)} the cells' PNCC colours (for attentions with a correspondence term),
    {kind: assemble(moved (B, P, h, w)) -> (B, 3, H, W)}, which puts a kind's moved patches together again
    (``cell_patches.CellPatches.assemble`` with that kind's reference frames bound)
    -> fused latent (B, C, h, w), sampled pixels at full resolution (B, 3, H, W) or None

for kind in "face" and "lip". The sampled pixels come back only when pixels went in (a sampled-texture
decoder asks for them). A variant that attends to both kinds at once (``merges_kinds``) concatenates their pixel
patches, so the renderer gives it one layout for both (``DualAttentionRenderer.face_patches`` unset).

Letters: b batch, n reference frames, c width, h w latent rows and columns.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

Refs = dict[str, torch.Tensor]
Assemble = dict[str, Callable[[torch.Tensor | None], torch.Tensor | None]]


class ReferenceFusion(nn.Module):
    """Base of the variants: their flags (see the module docstring)."""

    uses_face_refs: bool = True
    uses_lip_refs: bool = True
    needs_lip_mask: bool = False
    merges_kinds: bool = False

    def forward(self, q_geo: torch.Tensor, ref_geo: Refs, ref_tex: Refs, ref_pixels: Refs | None,
                lip_mask: torch.Tensor | None, coords: Refs,
                assemble: Assemble) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError
