"""Lip-Attention of PersonaTalk (paper 3.2, Eq. 4; docs/design.md, "Stage 2"): samples lip, teeth and mouth texture
from the lip-reference frames (chosen across the whole video by mouth opening, Algorithm 1).

A `ReferenceAttention` with its own projections and positional embedding; a named class so that
configs, checkpoints and parameter names say which of the two attentions they hold.
"""
from __future__ import annotations

from src.models.renderer.attention import ReferenceAttention


class LipAttention(ReferenceAttention):
    """Lip-Attention: Q from E_geo(G_tgt), K from E_geo(lip-reference PNCCs), V from E_tex(lip-reference
    frames); `(B, C, h, w)`, `(B, N_l, C, h, w)` x 2 -> `(B, C, h, w)`. See `ReferenceAttention`."""
