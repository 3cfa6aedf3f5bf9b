"""How reference pixels ride along the renderer's attentions (the sampled-texture path, ``d_tex_sampled.py``): each
latent cell of a reference carries a patch of the frame's own pixels, the attention weights move those patches
to the target cells, and the moved patches are put back together into an image.

    margin 0:  p = pixel_unshuffle(F, 4)                       (B, N, 48, h, w)     each cell its own 4 x 4 block
               image = pixel_shuffle(p, 4)                      (B, 3, H, W)
    margin m:  p = unfold(replicate_pad(F, m), 4 + 2m, stride 4) (B, N, 3 (4 + 2m)^2, h, w)
               image = fold(p * W) / fold(W)                    (B, 3, H, W)        overlap-add, tent window W

Why the margin: with disjoint 4 x 4 blocks, two neighbouring target cells that sample different places of the
references (where the references' head pose differs from the target's) meet at a hard edge, and a face comes out
as a mosaic of 4 x 4 blocks (the val people's contact sheets, issue 14). With overlapping patches each output pixel
is a blend of the patches of up to four cells, weighted by a tent that falls towards a patch's border, so cells
that disagree fade into each other. Cells that agree (the same place of the same reference) still give that
reference's pixels exactly: overlap-add of consistent patches divided by the summed window is the identity.

Letters: b batch, n reference frames, p numbers per patch, h w latent rows and columns.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class CellPatches(nn.Module):
    """Reference frames `(B, N, 3, H, W)` -> one patch per `cell` x `cell` block, with `margin` pixels of overlap
    on each side (`extract`, `(B, N, P, H/cell, W/cell)`, P = 3 (cell + 2 margin)^2); moved patches
    `(B, P, h, w)` -> an image `(B, 3, h cell, w cell)` (`assemble`). margin 0 is pixel (un)shuffling."""

    def __init__(self, cell: int = 4, margin: int = 0) -> None:
        super().__init__()
        if not (isinstance(cell, int) and cell >= 1):
            raise ValueError(f"CellPatches: cell must be a positive integer (the latent's downsampling), got {cell!r}")
        if not (isinstance(margin, int) and 0 <= margin <= cell):
            raise ValueError(f"CellPatches: margin must be an integer in [0, cell = {cell}], got {margin!r}")
        self.cell, self.margin = cell, margin
        self.size = cell + 2 * margin
        ramp = torch.arange(self.size, dtype=torch.float32) + 0.5
        tent = torch.minimum(ramp, self.size - ramp)  # (size,) highest in the middle, > 0 at the border
        window = torch.outer(tent, tent).flatten().repeat(3)  # (P,) the same window for each colour
        self.register_buffer("window", window / window.max(), persistent=False)

    @property
    def numbers(self) -> int:
        """P, the numbers one patch carries."""
        return 3 * self.size ** 2

    def extract(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, N, 3, H, W), H and W multiples of cell -> (B, N, P, H/cell, W/cell)."""
        b, n, _, height, width = frames.shape
        flat = rearrange(frames, "b n c h w -> (b n) c h w")  # (B N, 3, H, W)
        if self.margin == 0:
            patches = F.pixel_unshuffle(flat, self.cell)  # (B N, P, h, w)
        else:
            padded = F.pad(flat, (self.margin,) * 4, mode="replicate")  # (B N, 3, H + 2m, W + 2m)
            patches = F.unfold(padded, self.size, stride=self.cell)  # (B N, P, h*w)
            patches = rearrange(patches, "bn p (h w) -> bn p h w", h=height // self.cell)  # (B N, P, h, w)
        return rearrange(patches, "(b n) p h w -> b n p h w", b=b, n=n)  # (B, N, P, h, w)

    def assemble(self, patches: torch.Tensor | None, frames: torch.Tensor | None = None) -> torch.Tensor | None:
        """(B, P, h, w) -> (B, 3, h cell, w cell); None stays None. ``frames``, the references the patches were
        extracted from, is not read here (``flow_patches.FlowPatches`` cuts its patches from them again)."""
        if patches is None:
            return None
        if patches.ndim != 4 or patches.shape[1] != self.numbers:
            raise ValueError(f"CellPatches: patches must be (B, {self.numbers}, h, w), got {tuple(patches.shape)}")
        if self.margin == 0:
            return F.pixel_shuffle(patches, self.cell)  # (B, 3, H, W)
        b, _, h, w = patches.shape
        out_size = (h * self.cell + 2 * self.margin, w * self.cell + 2 * self.margin)
        window = self.window.to(patches)[None, :, None]  # (1, P, 1)
        weighted = rearrange(patches, "b p h w -> b p (h w)") * window  # (B, P, h*w)
        total = F.fold(weighted, out_size, self.size, stride=self.cell)  # (B, 3, H + 2m, W + 2m)
        norm = F.fold(window.expand(1, -1, h * w), out_size, self.size, stride=self.cell)  # (1, 3, H + 2m, W + 2m)
        m = self.margin
        return (total / norm)[..., m:out_size[0] - m, m:out_size[1] - m]  # (B, 3, H, W)
