"""Per-frame PNCC images and lip masks from fitted coefficients (docs/design.md, "Face model and fitting"), on
the CPU with the numba rasteriser: what the stage-2 data module renders on the fly from a shard's alpha / beta / pose
(``render_geometry``), and what dubbing renders from composed screen vertices (``render_vertices``).

Poses are in crop pixels of a ``crop_size`` crop (``src.media.contract.CROP_SIZE``, 256); ``size`` rescales the screen
coordinates, so the geometry lines up with the crop resized to ``size`` x ``size`` (the rasteriser samples
pixel centres, so scaling x and y by size / crop_size is exact).

The lip mask M_l is the lip triangles' pixels with the holes filled: an open mouth's ring of lips encloses
the teeth and mouth cavity, which belong to the lip region (stage 2 takes them from the lip references).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import binary_fill_holes

from src.geometry.rasterizer import interpolate, rasterize


def render_geometry(fm, alpha: np.ndarray, beta: np.ndarray, pose: np.ndarray, size: int,
                    crop_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """alpha (K_id,), beta (n, K_exp), pose (n, 6) -> (PNCC (n, size, size, 3) float32 in [0, 1],
    lip mask (n, size, size) bool)."""
    beta, pose = np.asarray(beta, np.float32), np.asarray(pose, np.float32)
    if beta.ndim != 2 or pose.shape != (len(beta), 6):
        raise ValueError(f"render_geometry: beta must be (n, K_exp) and pose (n, 6), got {beta.shape} and {pose.shape}")
    n = len(beta)
    with torch.no_grad():
        alpha_t = torch.as_tensor(np.asarray(alpha, np.float32))[None].expand(n, -1)  # (n, K_id)
        verts = fm.posed_vertices(alpha_t, torch.from_numpy(beta), torch.from_numpy(pose)).numpy()  # (n, L, 3)
    return render_vertices(fm, verts, size, crop_size)


def render_vertices(fm, screen_verts: np.ndarray, size: int, crop_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Screen vertices (n, L, 3) in pixels of a ``crop_size`` crop (``fm.posed_vertices``, or composed
    geometry such as dubbing's predicted lower face) -> (PNCC (n, size, size, 3) float32 in [0, 1],
    lip mask (n, size, size) bool)."""
    verts = np.asarray(screen_verts, np.float32)
    if verts.ndim != 3 or verts.shape[1:] != (fm.n_vertices, 3):
        raise ValueError(f"render_vertices: screen_verts must be (n, {fm.n_vertices}, 3), got {verts.shape}")
    verts = verts * np.float32(size / crop_size)
    n = len(verts)
    tris = fm.triangles.numpy()
    colors = fm.pncc_colors.numpy()
    lip_tris = fm.lip_triangles.numpy()
    pncc = np.zeros((n, size, size, 3), np.float32)
    lip = np.zeros((n, size, size), bool)
    for t in range(n):
        frags = rasterize(verts[t], tris, size, size)
        pncc[t] = interpolate(frags, tris, colors)
        lip[t] = binary_fill_holes(lip_tris[np.maximum(frags.tri_id, 0)] & (frags.tri_id >= 0))
    return pncc, lip
