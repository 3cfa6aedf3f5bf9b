"""Z-buffer rasteriser for one frame (numba, CPU): the renderer behind PNCC and the lip mask
(docs/design.md, "Face model and fitting").

Conventions (shared with `rasterizer_torch.py`, which must agree pixel for pixel):

- screen-space vertices `(V, 3)` float32 = (x_px, y_px, depth); x right, y DOWN; pixel (i, j) covers
  [j, j+1) x [i, i+1) and is sampled at its centre (j + 0.5, i + 0.5);
- depth LARGER = CLOSER: the z-buffer keeps the maximum;
- triangles `(F, 3)` int, any winding (no back-face culling); degenerate (zero-area) triangles are skipped;
- a pixel is covered when its centre is inside or on the edges (all three barycentric weights >= 0);
- ties in depth: the triangle with the LOWEST index wins (triangles are drawn in order and replace a pixel
  only on strictly greater depth);
- background triangle id -1, barycentrics 0, depth -inf.

Edge functions, barycentrics and depth are evaluated in float64 with the exact operation order of
`_raster_row` below; the torch version repeats that order, so both give bit-identical results.

Letter legend: V vertices, F triangles, H x W image, C attribute channels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit


@dataclass(frozen=True)
class Fragments:
    """Per-pixel output of `rasterize`: the visible triangle, its barycentrics and depth.

    tri_id: (H, W) int32, index into tris, -1 for background.
    bary:   (H, W, 3) float32, screen-space weights of the triangle's three vertices (0 on background).
    depth:  (H, W) float32, interpolated depth, -inf on background.
    """

    tri_id: np.ndarray
    bary: np.ndarray
    depth: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool: pixels covered by some triangle."""
        return self.tri_id >= 0


def validate_mesh(verts_screen, tris, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Check and convert rasteriser inputs; returns (verts float32 (V,3), tris int32 (F,3)), C-contiguous."""
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    verts = np.asarray(verts_screen)
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise ValueError(f"verts_screen must have shape (V, 3) = (x_px, y_px, depth), got {verts.shape}")
    if not np.issubdtype(verts.dtype, np.floating):
        raise TypeError(f"verts_screen must be a floating array, got dtype {verts.dtype}")
    verts = np.ascontiguousarray(verts, dtype=np.float32)
    if not np.isfinite(verts).all():
        raise ValueError("verts_screen contains NaN or inf; project only finite vertices")
    faces = np.asarray(tris)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"tris must have shape (F, 3), got {faces.shape}")
    if not np.issubdtype(faces.dtype, np.integer):
        raise TypeError(f"tris must be an integer array, got dtype {faces.dtype}")
    if faces.size and (faces.min() < 0 or faces.max() >= len(verts)):
        raise ValueError(f"tris index out of range [0, {len(verts)}): min {faces.min()}, max {faces.max()}")
    return verts, np.ascontiguousarray(faces, dtype=np.int32)


@njit(cache=True, nogil=True)
def _pixel_range(lo, hi, size):
    """Indices k with pixel centre k + 0.5 in [lo, hi], clipped to [0, size); empty when first > last."""
    first = max(math.ceil(lo - 0.5), 0.0)
    last = min(math.floor(hi - 0.5), size - 1.0)
    if first > last:
        return 0, -1
    return int(first), int(last)


@njit(cache=True, nogil=True)
def _raster_row(i, j0, j1, x0, y0, z0, x1, y1, z1, x2, y2, z2, inv_area, tri, tri_id, bary, zbuf):
    """One row of one triangle. Each weight is monotone in x even after rounding, so the covered
    pixels form one run: stop at the first outside pixel after it."""
    py = i + 0.5
    row0, row1, row2 = (x2 - x1) * (py - y1), (x0 - x2) * (py - y2), (x1 - x0) * (py - y0)
    entered = False
    for j in range(j0, j1 + 1):
        px = j + 0.5
        b0 = (row0 - (y2 - y1) * (px - x1)) * inv_area  # edge function / area; torch uses the same ops
        b1 = (row1 - (y0 - y2) * (px - x2)) * inv_area
        b2 = (row2 - (y1 - y0) * (px - x0)) * inv_area
        if not (b0 >= 0.0 and b1 >= 0.0 and b2 >= 0.0):  # NaN counts as outside, as in torch
            if entered:
                return
            continue
        entered = True
        z = b0 * z0 + b1 * z1 + b2 * z2
        if z > zbuf[i, j]:  # strictly greater: the lower triangle index keeps ties
            zbuf[i, j] = z
            tri_id[i, j] = tri
            bary[i, j, 0] = b0
            bary[i, j, 1] = b1
            bary[i, j, 2] = b2


@njit(cache=True, nogil=True)
def _raster_kernel(verts, tris, tri_id, bary, zbuf):
    height, width = tri_id.shape
    for f in range(tris.shape[0]):
        a, b, c = tris[f, 0], tris[f, 1], tris[f, 2]
        x0, y0, z0 = np.float64(verts[a, 0]), np.float64(verts[a, 1]), np.float64(verts[a, 2])
        x1, y1, z1 = np.float64(verts[b, 0]), np.float64(verts[b, 1]), np.float64(verts[b, 2])
        x2, y2, z2 = np.float64(verts[c, 0]), np.float64(verts[c, 1]), np.float64(verts[c, 2])
        j0, j1 = _pixel_range(min(x0, x1, x2), max(x0, x1, x2), width)
        i0, i1 = _pixel_range(min(y0, y1, y2), max(y0, y1, y2), height)
        area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
        if area == 0.0 or j0 > j1 or i0 > i1:
            continue  # degenerate or off-screen: covers nothing
        inv_area = 1.0 / area
        for i in range(i0, i1 + 1):
            _raster_row(i, j0, j1, x0, y0, z0, x1, y1, z1, x2, y2, z2, inv_area, f, tri_id, bary, zbuf)


def rasterize(verts_screen: np.ndarray, tris: np.ndarray, height: int, width: int) -> Fragments:
    """Rasterise one frame with a z-buffer (module docstring has the conventions).

    verts_screen: (V, 3) float (x_px, y_px, depth), converted to float32; must be finite.
    tris: (F, 3) integer vertex indices, converted to int32.
    Returns Fragments with tri_id (H, W) int32, bary (H, W, 3) float32, depth (H, W) float32.
    """
    verts, faces = validate_mesh(verts_screen, tris, height, width)
    tri_id = np.full((height, width), -1, dtype=np.int32)
    bary = np.zeros((height, width, 3), dtype=np.float32)
    zbuf = np.full((height, width), -np.inf, dtype=np.float64)
    _raster_kernel(verts, faces, tri_id, bary, zbuf)
    return Fragments(tri_id=tri_id, bary=bary, depth=zbuf.astype(np.float32))


@njit(cache=True, nogil=True)
def _interp_kernel(tri_id, bary, tris, attrs, out):
    height, width = tri_id.shape
    for i in range(height):
        for j in range(width):
            f = tri_id[i, j]
            if f < 0:
                continue
            a, b, c = tris[f, 0], tris[f, 1], tris[f, 2]
            w0, w1, w2 = bary[i, j, 0], bary[i, j, 1], bary[i, j, 2]
            for k in range(attrs.shape[1]):
                out[i, j, k] = w0 * attrs[a, k] + w1 * attrs[b, k] + w2 * attrs[c, k]


def interpolate(frags: Fragments, tris: np.ndarray, attrs: np.ndarray) -> np.ndarray:
    """Interpolate per-vertex attributes over the visible triangles.

    frags: output of `rasterize` on the same tris; tris: (F, 3) int; attrs: (V, C) float.
    Returns (H, W, C) float32, 0 on background.
    """
    values = np.asarray(attrs)
    if values.ndim != 2:
        raise ValueError(f"attrs must have shape (V, C), got {values.shape}")
    faces = np.asarray(tris)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"tris must have shape (F, 3), got {faces.shape}")
    if faces.size and faces.max() >= len(values):
        raise ValueError(f"attrs has {len(values)} rows but tris reference vertex {faces.max()}")
    if frags.tri_id.size and frags.tri_id.max() >= len(faces):
        raise ValueError(f"frags reference triangle {frags.tri_id.max()} but tris has {len(faces)} rows")
    height, width = frags.tri_id.shape
    out = np.zeros((height, width, values.shape[1]), dtype=np.float32)
    _interp_kernel(frags.tri_id, frags.bary, np.ascontiguousarray(faces, dtype=np.int32),
                   np.ascontiguousarray(values, dtype=np.float32), out)
    return out
