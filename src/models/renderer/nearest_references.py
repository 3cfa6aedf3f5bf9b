"""Face references chosen by geometry at inference (our addition where the paper is silent; docs/design.md,
"Stage 2"): of every reference frame a call is given (Algorithm 1's face references and its lip references), the
k whose PNCC is nearest the target's become Face-Attention's references.

    D(n)     = mean over pixels and channels of | G_tgt - G_ref_n |          (B, N_f + N_l)
    face'    = the k references of smallest D, nearest first                   (B, k, 3, H, W) frames and PNCCs

Why: Algorithm 1 gives Face-Attention the N_f frames nearest the target in time. In a self-reconstruction
(eval.reconstruct) those are 13 or more frames away, where the head has turned and the face has another
expression, while among the 25 lip references, spread over the clip by mouth opening, some frame often shows the
target's pose better; the nearest-reference copy picks its frame among both sets for that reason. The lip
references stay as they are (Lip-Attention reads the mouth from all of them). In a dub the target's own input
frame is among Algorithm 1's face references and is nearest in pose. ``during_training=False`` (the default)
leaves the training strategy's face references alone: the renderer learns on Algorithm 1's references, as the
paper trains it.

Letters: b batch, n reference frames.
"""
from __future__ import annotations

import torch
from torch import nn


class NearestFaceReferences(nn.Module):
    """``forward(tgt_pncc, refs)``: tgt_pncc (B, 3, H, W), refs {"face" | "lip": (img, pncc) each (B, N, 3, H, W)}
    -> refs with "face" replaced by the ``k`` references (of all kinds given) whose PNCC is nearest the target's
    (all of them when fewer than ``k`` are given), unchanged while training unless ``during_training``."""

    def __init__(self, k: int = 3, during_training: bool = False) -> None:
        super().__init__()
        if not (isinstance(k, int) and not isinstance(k, bool) and k >= 1):
            raise ValueError(f"NearestFaceReferences: k must be an integer >= 1 (face references kept), got {k!r}")
        if not isinstance(during_training, bool):
            raise ValueError(f"NearestFaceReferences: during_training must be true or false, got {during_training!r}")
        self.k, self.during_training = k, during_training

    @staticmethod
    def distance(tgt_pncc: torch.Tensor, ref_pncc: torch.Tensor) -> torch.Tensor:
        """tgt_pncc (B, 3, H, W), ref_pncc (B, N, 3, H, W) -> D (B, N), mean L1 over pixels and channels."""
        return (ref_pncc - tgt_pncc[:, None]).abs().mean((2, 3, 4))  # (B, N)

    def forward(self, tgt_pncc: torch.Tensor,
                refs: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        if (self.training and not self.during_training) or "face" not in refs:
            return refs
        img = torch.cat([refs[kind][0] for kind in refs], dim=1)  # (B, N_f + N_l, 3, H, W)
        pncc = torch.cat([refs[kind][1] for kind in refs], dim=1)  # (B, N_f + N_l, 3, H, W)
        with torch.no_grad():  # a choice: no gradient
            order = self.distance(tgt_pncc, pncc).argsort(dim=1, stable=True)[:, :self.k]  # (B, k) nearest first
        index = order[:, :, None, None, None].expand(-1, -1, *img.shape[2:])  # (B, k, 3, H, W)
        return {**refs, "face": (img.gather(1, index), pncc.gather(1, index))}
