"""ReferenceUNet: a Wav2Lip-style generator for stage 2 (Prajwal et al. 2020's U-Net, with the target geometry in
place of audio): the target PNCC and ONE reference frame (with its PNCC) in, the target face out, no attention.

    x     = [G_tgt, F_ref, G_ref]                            (B, 9, H, W)
    e_k   = Down_k(e_{k-1})                                  (B, c_k, H / 2^k, W / 2^k)    k = 1..depth
    d_k   = Up_k([d_{k+1}, e_k])                             skip connections at every scale
    F_tgt = sigmoid(conv(d_0))                               (B, 3, H, W)

The reference is the first of the face references (``face_ref_*[:, 0]``): under Algorithm 1 that is never the
target itself (training: max(0, i - 2 N_f); inference: the first frame of the window centred on i, the target left
out), so the network must draw the mouth the geometry asks for instead of copying it. It reads no lip references.

Letters: b batch, c channels, h w rows and columns.
"""
from __future__ import annotations

import torch
from torch import nn


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.GroupNorm(min(8, c_out), c_out),
                         nn.LeakyReLU(0.2))


class ReferenceUNet(nn.Module):
    """``DualAttentionRenderer``'s call signature; H and W multiples of ``2 ** depth``."""

    uses_face_refs = True
    uses_lip_refs = False

    def __init__(self, width: int = 32, depth: int = 4, max_width: int = 256) -> None:
        super().__init__()
        if depth < 1 or width < 8:
            raise ValueError(f"ReferenceUNet: need depth >= 1 and width >= 8, got {depth}, {width}")
        widths = [min(width * 2 ** k, max_width) for k in range(depth + 1)]  # c_0 .. c_depth
        self.depth, self.dim = depth, widths[0]
        self.stem = _block(9, widths[0], 1)
        self.down = nn.ModuleList(
            nn.Sequential(_block(widths[k], widths[k + 1], 2), _block(widths[k + 1], widths[k + 1], 1))
            for k in range(depth))
        self.up = nn.ModuleList(
            nn.Sequential(_block(widths[k + 1] + widths[k], widths[k], 1), _block(widths[k], widths[k], 1))
            for k in range(depth))
        self.to_rgb = nn.Conv2d(widths[0], 3, 3, padding=1)

    def forward(self, tgt_pncc: torch.Tensor, tgt_lip_mask: torch.Tensor | None, face_ref_img: torch.Tensor,
                face_ref_pncc: torch.Tensor, lip_ref_img: torch.Tensor | None = None,
                lip_ref_pncc: torch.Tensor | None = None) -> torch.Tensor:
        """tgt_pncc (B, 3, H, W); face_ref_img, face_ref_pncc (B, N_f, 3, H, W) -> (B, 3, H, W); the lip mask
        and lip references are not read."""
        self._check(tgt_pncc, face_ref_img, face_ref_pncc)
        x = torch.cat([tgt_pncc, face_ref_img[:, 0], face_ref_pncc[:, 0]], dim=1)  # (B, 9, H, W)
        skips = [self.stem(x)]  # (B, c_0, H, W)
        for down in self.down:
            skips.append(down(skips[-1]))  # (B, c_k, H / 2^k, W / 2^k)
        y = skips.pop()  # (B, c_depth, H / 2^depth, W / 2^depth)
        for up in reversed(self.up):
            skip = skips.pop()
            y = nn.functional.interpolate(y, size=skip.shape[-2:], mode="nearest")  # (B, c, h, w) of the skip
            y = up(torch.cat([y, skip], dim=1))
        return torch.sigmoid(self.to_rgb(y))  # (B, 3, H, W)

    def _check(self, tgt_pncc: torch.Tensor, face_ref_img: torch.Tensor, face_ref_pncc: torch.Tensor) -> None:
        step = 2 ** self.depth
        if tgt_pncc.ndim != 4 or tgt_pncc.shape[1] != 3 or tgt_pncc.shape[2] % step or tgt_pncc.shape[3] % step:
            raise ValueError(f"ReferenceUNet: tgt_pncc must be (B, 3, H, W) with H, W multiples of {step}, got "
                             f"{tuple(tgt_pncc.shape)}")
        b, _, h, w = tgt_pncc.shape
        for name, x in (("face_ref_img", face_ref_img), ("face_ref_pncc", face_ref_pncc)):
            if x is None or x.ndim != 5 or x.shape[0] != b or x.shape[1] < 1 or x.shape[2:] != (3, h, w):
                raise ValueError(f"ReferenceUNet: {name} must be (B, N >= 1, 3, H, W) = ({b}, N, 3, {h}, {w}), got "
                                 f"{None if x is None else tuple(x.shape)}")
