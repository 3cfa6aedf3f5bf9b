"""Face-Attention of PersonaTalk (paper 3.2, Eq. 4; docs/design.md, "Stage 2"): samples the rest of the face (skin,
outline, hair, background) from the face-reference frames (a window around the current frame,
Algorithm 1). In the single-attention ablation it attends to face and lip references together.

A `ReferenceAttention` with its own projections and positional embedding; a named class so that
configs, checkpoints and parameter names say which of the two attentions they hold.
"""
from __future__ import annotations

from src.models.renderer.attention import ReferenceAttention


class FaceAttention(ReferenceAttention):
    """Face-Attention: Q from E_geo(G_tgt), K from E_geo(face-reference PNCCs), V from E_tex(face-reference
    frames); `(B, C, h, w)`, `(B, N_f, C, h, w)` x 2 -> `(B, C, h, w)`. See `ReferenceAttention`."""
