"""A frame moved from one fitted geometry to another through the two meshes (docs/design.md, "Face model and
fitting"): every pixel the destination mesh covers takes the source frame's colour at the screen position where the
source mesh shows the same surface point; pixels off the destination mesh keep the source frame's own. No network:
what the fitted geometry alone says about a head's motion between two frames (eval.reconstruct's warped copy).

    src_xy(p) = sum_k bary_k(p) V_src[tri(p)_k, :2]      p on the destination mesh (rasterised at pixel centres)
    out(p)    = bicubic(frame, src_xy(p))                 out(p) = frame(p) elsewhere

Occlusion in the source frame is not modelled (a surface point hidden there is read from whatever covers it).
Screen positions are in pixels of the frame (pixel (i, j) spans [j, j + 1) x [i, i + 1)).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from src.geometry.rasterizer import interpolate, rasterize


def warp_by_meshes(frame: torch.Tensor, src_verts: np.ndarray, dst_verts: np.ndarray,
                   tris: np.ndarray) -> torch.Tensor:
    """frame (3, H, W) in [0, 1] showing the source geometry; src_verts, dst_verts (L, 3) screen vertices of the
    same mesh in pixels of that frame; tris (F, 3) -> the frame moved to the destination geometry (3, H, W)."""
    if frame.ndim != 3 or frame.shape[0] != 3:
        raise ValueError(f"warp_by_meshes: frame must be (3, H, W), got {tuple(frame.shape)}")
    src, dst = np.asarray(src_verts, np.float32), np.asarray(dst_verts, np.float32)
    if src.ndim != 2 or src.shape[1] != 3 or dst.shape != src.shape:
        raise ValueError(f"warp_by_meshes: src_verts and dst_verts must both be (L, 3), got {src.shape} and "
                         f"{dst.shape}")
    _, h, w = frame.shape
    frags = rasterize(dst, tris, h, w)
    xy = interpolate(frags, tris, src[:, :2])  # (H, W, 2) source positions (x, y) in pixels
    on = frags.tri_id >= 0  # (H, W)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + np.float32(0.5)  # (H, W) pixel centres
    x = np.where(on, xy[..., 0], xx) * (2.0 / w) - 1  # (H, W) normalised, align_corners=False
    y = np.where(on, xy[..., 1], yy) * (2.0 / h) - 1
    grid = torch.from_numpy(np.stack([x, y], -1)).to(frame)[None]  # (1, H, W, 2)
    out = F.grid_sample(frame[None], grid, mode="bicubic", padding_mode="border", align_corners=False)  # (1, 3, H, W)
    return out[0].clamp(0, 1)
