"""Template driving of PersonaTalk (paper 3.2, docs/design.md, "Stage 1"): stylised audio features attend to the
speaker's identity template E_vtx(Vtx_temp), so the predicted motion is for this face shape.

Q = stylised audio `(B, T, D)`; K = V = E_vtx(Vtx_temp) as one token `(B, 1, D)`, as in the paper. With a
single key the softmax is identically 1: the block adds W_o W_v LN(template) to every frame (a learned,
template-dependent shift, then the feed-forward block), and its query and key projections get zero
gradient. `template_tokens > 1` (region tokens, docs/design.md, "Stage 1") would make the attention non-trivial.

Letters: b batch, t frames, d width.
"""
from __future__ import annotations

import torch
from torch import nn

from src.models.geometry.attention import CrossAttentionBlock


class TemplateDriving(nn.Module):
    """x `(B, T, D)` and the template code E_vtx(Vtx_temp) `(B, D)` -> `(B, T, D)`."""

    def __init__(self, dim: int, heads: int, ff_mult: int = 4, dropout: float = 0.0, template_tokens: int = 1) -> None:
        super().__init__()
        if template_tokens < 1:
            raise ValueError(f"TemplateDriving: template_tokens must be >= 1, got {template_tokens}")
        if template_tokens != 1:
            raise NotImplementedError(
                f"TemplateDriving: template_tokens={template_tokens}; only 1 (the paper's single token "
                "E_vtx(Vtx_temp)) is implemented. Region tokens need a split of the vertex set into regions "
                "and an encoder per region"
            )
        self.dim = dim
        self.block = CrossAttentionBlock(dim, heads, ff_mult, dropout)

    def forward(self, x: torch.Tensor, template_code: torch.Tensor) -> torch.Tensor:
        if template_code.shape != (x.shape[0], self.dim):
            raise ValueError(f"TemplateDriving: template_code must be (B, {self.dim}) with the batch of x "
                             f"{tuple(x.shape)}, got {tuple(template_code.shape)}")
        return self.block(x, template_code[:, None, :])  # context (B, 1, D) -> (B, T, D)
