"""Renders built on the z-buffer rasterisers: PNCC maps, lip masks, shaded RGB
(docs/design.md, "Face model and fitting").

- `render_pncc` / `render_pncc_torch`: PNCC (Zhu et al. 2017), each vertex coloured by its normalised
  mean-shape (x, y, z) in [0, 1], z-buffered, background 0; the geometry input of the renderer.
- `render_mask` / `render_mask_torch`: pixels whose VISIBLE triangle is in a subset (the lip mask); the
  whole mesh is rasterised so occluders hide the subset.
- `render_shaded`: ambient + Lambert + Blinn-Phong RGB with per-vertex colours or a UV texture, for the
  synthetic talking-head corpus (numba, one thread).
- `vertex_normals` / `vertex_normals_torch`: area-weighted unit vertex normals; `icosphere`: a test mesh.

Screen conventions are those of `src/geometry/rasterizer.py`. Shading works in the screen-aligned camera
frame: x right, y down, z towards the viewer (so screen depth = z); light directions and normals are
given in that frame, the view is orthographic along +z, and lighting is two-sided (a normal facing away
from the viewer is flipped), so triangle winding does not matter.

Letter legend: B frames, V vertices, F triangles, H x W image, Ht x Wt texture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numba import njit

from src.geometry.rasterizer import interpolate, rasterize
from src.geometry.rasterizer_torch import interpolate_torch, rasterize_torch


# ---------------------------------------------------------------------------------------------- meshes
def icosphere(subdivisions: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Unit icosphere: verts (10*4^s + 2, 3) float32, tris (20*4^s, 3) int32, outward CCW winding."""
    if subdivisions < 0:
        raise ValueError(f"subdivisions must be >= 0, got {subdivisions}")
    t = (1.0 + 5.0 ** 0.5) / 2.0
    verts = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
                      [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], np.float64)
    tris = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
                     [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
                     [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]], np.int64)
    for _ in range(subdivisions):
        edges = np.sort(tris[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)  # (3F, 2)
        unique, inverse = np.unique(edges, axis=0, return_inverse=True)
        mid = len(verts) + inverse.reshape(-1, 3)  # (F, 3) midpoints of edges 01, 12, 20
        verts = np.concatenate([verts, verts[unique].mean(1)])
        a, b, c = tris.T
        ab, bc, ca = mid.T
        tris = np.stack([np.stack([a, ab, ca], 1), np.stack([ab, b, bc], 1),
                         np.stack([ca, bc, c], 1), np.stack([ab, bc, ca], 1)], 1).reshape(-1, 3)
    verts /= np.linalg.norm(verts, axis=1, keepdims=True)
    return verts.astype(np.float32), tris.astype(np.int32)


def vertex_normals(verts: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals: verts (V, 3), tris (F, 3) -> (V, 3) float32 (0 for unused verts)."""
    v = np.asarray(verts, dtype=np.float64)
    faces = np.asarray(tris)
    if v.ndim != 2 or v.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"verts must be (V, 3) and tris (F, 3), got {v.shape}, {faces.shape}")
    face_n = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])  # (F, 3), |n| = 2*area
    flat_idx = faces.reshape(-1)  # (3F,) one entry per triangle corner
    normals = np.stack([np.bincount(flat_idx, np.repeat(face_n[:, k], 3), minlength=len(v))
                        for k in range(3)], 1)  # (V, 3)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return (normals / np.where(length > 0, length, 1.0)).astype(np.float32)


def vertex_normals_torch(verts: torch.Tensor, tris: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals, differentiable: verts (V, 3) or (B, V, 3) -> same shape."""
    if verts.ndim not in (2, 3) or verts.shape[-1] != 3:
        raise ValueError(f"verts must be (V, 3) or (B, V, 3), got {tuple(verts.shape)}")
    faces = tris.to(device=verts.device, dtype=torch.long)
    corners = verts[..., faces, :]  # (..., F, 3 corners, 3)
    face_n = torch.cross(corners[..., 1, :] - corners[..., 0, :], corners[..., 2, :] - corners[..., 0, :], dim=-1)
    normals = torch.zeros_like(verts)
    for k in range(3):
        normals = normals.index_add(-2, faces[:, k], face_n)
    return torch.nn.functional.normalize(normals, dim=-1, eps=1e-12)


# ------------------------------------------------------------------------------------------------ PNCC
def _check_colors(pncc_colors, num_verts: int) -> np.ndarray:
    colors = np.asarray(pncc_colors, dtype=np.float32)
    if colors.shape != (num_verts, 3):
        raise ValueError(f"pncc_colors must be (V, 3) with V={num_verts}, got {colors.shape}")
    if not (colors.min(initial=0.0) >= 0.0 and colors.max(initial=0.0) <= 1.0):
        raise ValueError("pncc_colors must lie in [0, 1] (normalised mean-shape coordinates)")
    return colors


def render_pncc(verts_screen: np.ndarray, tris: np.ndarray, pncc_colors: np.ndarray,
                height: int, width: int) -> np.ndarray:
    """PNCC map of one frame: verts_screen (V, 3), tris (F, 3), pncc_colors (V, 3) in [0, 1] -> (H, W, 3) float32."""
    colors = _check_colors(pncc_colors, np.shape(verts_screen)[0])
    return interpolate(rasterize(verts_screen, tris, height, width), tris, colors)


def render_pncc_torch(verts_screen: torch.Tensor, tris: torch.Tensor, pncc_colors: torch.Tensor,
                      height: int, width: int) -> torch.Tensor:
    """Batched PNCC: verts_screen (B, V, 3), pncc_colors (V, 3) or (B, V, 3) in [0, 1] -> (B, 3, H, W)."""
    if pncc_colors.shape[-2:] != (verts_screen.shape[1], 3):
        raise ValueError(f"pncc_colors must be (V, 3) or (B, V, 3) with V={verts_screen.shape[1]}, "
                         f"got {tuple(pncc_colors.shape)}")
    tri_id, bary, _ = rasterize_torch(verts_screen, tris, height, width)
    colors = pncc_colors.to(device=verts_screen.device, dtype=bary.dtype)
    return interpolate_torch(tri_id, bary, tris, colors).permute(0, 3, 1, 2)  # (B, 3, H, W)


# ------------------------------------------------------------------------------------------------ mask
def _subset_mask(tri_subset, num_tris: int) -> np.ndarray:
    subset = np.asarray(tri_subset)
    if subset.dtype == np.bool_:
        if subset.shape != (num_tris,):
            raise ValueError(f"tri_subset as a bool mask must have shape (F,) = ({num_tris},), got {subset.shape}")
        return subset
    if not np.issubdtype(subset.dtype, np.integer) or subset.ndim != 1:
        raise ValueError(f"tri_subset must be a bool mask (F,) or a 1-D int index array, "
                         f"got {subset.dtype} {subset.shape}")
    if subset.size and (subset.min() < 0 or subset.max() >= num_tris):
        raise ValueError(f"tri_subset indices must lie in [0, {num_tris})")
    mask = np.zeros(num_tris, dtype=bool)
    mask[subset] = True
    return mask


def render_mask(verts_screen: np.ndarray, tris: np.ndarray, tri_subset, height: int, width: int) -> np.ndarray:
    """Mask of pixels whose visible triangle is in tri_subset (bool (F,) or int indices) -> (H, W) bool."""
    subset = _subset_mask(tri_subset, np.shape(tris)[0])
    tri_id = rasterize(verts_screen, tris, height, width).tri_id
    return subset[np.maximum(tri_id, 0)] & (tri_id >= 0)


def render_mask_torch(verts_screen: torch.Tensor, tris: torch.Tensor, tri_subset,
                      height: int, width: int) -> torch.Tensor:
    """Batched lip mask: verts_screen (B, V, 3), tri_subset bool (F,) or int indices -> (B, H, W) bool."""
    subset = tri_subset.cpu().numpy() if torch.is_tensor(tri_subset) else tri_subset
    subset = torch.from_numpy(_subset_mask(subset, tris.shape[0])).to(verts_screen.device)
    tri_id, _, _ = rasterize_torch(verts_screen, tris, height, width)
    return subset[tri_id.clamp(min=0)] & (tri_id >= 0)


# --------------------------------------------------------------------------------------------- shading
@dataclass(frozen=True)
class Light:
    """Directional light in the screen-aligned camera frame (x right, y down, z towards the viewer).

    direction points TOWARDS the light (normalised internally); default: upper left, in front.
    """

    direction: tuple[float, float, float] = (-0.3, -0.5, 1.0)
    color: tuple[float, float, float] = (0.75, 0.75, 0.75)
    ambient: tuple[float, float, float] = (0.3, 0.3, 0.3)
    shininess: float = 32.0


@njit(cache=True, nogil=True, fastmath=True)
def _sample_bilinear(texture, u, v, k):
    """Channel k of a bilinear lookup, u right / v down in [0, 1], texel centres at (n + 0.5) / size, clamped."""
    th, tw = texture.shape[0], texture.shape[1]
    x = min(max(u * tw - 0.5, 0.0), tw - 1.0)
    y = min(max(v * th - 0.5, 0.0), th - 1.0)
    c0, r0 = int(x), int(y)
    c1, r1 = min(c0 + 1, tw - 1), min(r0 + 1, th - 1)
    fx, fy = x - c0, y - r0
    top = texture[r0, c0, k] * (1.0 - fx) + texture[r0, c1, k] * fx
    bottom = texture[r1, c0, k] * (1.0 - fx) + texture[r1, c1, k] * fx
    return top * (1.0 - fy) + bottom * fy


@njit(cache=True, nogil=True, fastmath=True)
def _power(base, exponent):
    """base ** exponent, by repeated squaring when exponent is a small whole number (5x faster than pow)."""
    if exponent != int(exponent) or exponent > 1024:
        return base ** exponent
    result, k = 1.0, int(exponent)
    while k:
        if k & 1:
            result *= base
        base *= base
        k >>= 1
    return result


@njit(cache=True, nogil=True, fastmath=True)
def _light_terms(tri, w, normals, spec, light_dir, half_vec, shininess):
    """Two-sided Lambert (n.l) and Blinn-Phong (ks (n.h)^s) at a pixel; view is +z."""
    a, b, c = tri
    nx = w[0] * normals[a, 0] + w[1] * normals[b, 0] + w[2] * normals[c, 0]
    ny = w[0] * normals[a, 1] + w[1] * normals[b, 1] + w[2] * normals[c, 1]
    nz = w[0] * normals[a, 2] + w[1] * normals[b, 2] + w[2] * normals[c, 2]
    inv = 1.0 / np.sqrt(nx * nx + ny * ny + nz * nz + 1e-24)
    inv = -inv if nz < 0.0 else inv  # two-sided: face the viewer
    ndl = (nx * light_dir[0] + ny * light_dir[1] + nz * light_dir[2]) * inv
    if ndl <= 0.0:
        return 0.0, 0.0
    ndh = max((nx * half_vec[0] + ny * half_vec[1] + nz * half_vec[2]) * inv, 0.0)
    ks = w[0] * spec[a] + w[1] * spec[b] + w[2] * spec[c]
    return ndl, ks * _power(ndh, shininess)


@njit(cache=True, nogil=True, fastmath=True)
def _shade_kernel(tri_id, bary, tris, normals, colors, uvs, texture, spec, light_dir, half_vec,
                  light_col, ambient, shininess, out):
    """Fill out (H, W, 3) for covered pixels; colors (V,3) used when texture is empty, else uvs (V,2)."""
    use_texture = texture.shape[0] > 0
    for i in range(tri_id.shape[0]):
        for j in range(tri_id.shape[1]):
            f = tri_id[i, j]
            if f < 0:
                continue
            a, b, c = tris[f, 0], tris[f, 1], tris[f, 2]
            w = (bary[i, j, 0], bary[i, j, 1], bary[i, j, 2])
            diffuse, specular = _light_terms((a, b, c), w, normals, spec, light_dir, half_vec, shininess)
            if use_texture:
                u = w[0] * uvs[a, 0] + w[1] * uvs[b, 0] + w[2] * uvs[c, 0]
                v = w[0] * uvs[a, 1] + w[1] * uvs[b, 1] + w[2] * uvs[c, 1]
            for k in range(3):
                if use_texture:
                    albedo = _sample_bilinear(texture, u, v, k)
                else:
                    albedo = w[0] * colors[a, k] + w[1] * colors[b, k] + w[2] * colors[c, k]
                value = albedo * (ambient[k] + light_col[k] * diffuse) + light_col[k] * specular
                out[i, j, k] = min(max(value, 0.0), 1.0)


def _albedo_inputs(albedo, uvs, num_verts: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(colors (V,3), uvs (V,2), texture (Ht,Wt,3)) with unused slots empty, validated."""
    albedo = np.asarray(albedo, dtype=np.float32)
    if albedo.ndim == 2:
        if albedo.shape != (num_verts, 3) or uvs is not None:
            raise ValueError(f"per-vertex albedo must be (V, 3) with V={num_verts} and uvs=None, got {albedo.shape}")
        return np.ascontiguousarray(albedo), np.zeros((0, 2), np.float32), np.zeros((0, 0, 3), np.float32)
    if albedo.ndim != 3 or albedo.shape[2] != 3 or min(albedo.shape[:2]) < 1:
        raise ValueError(f"albedo must be per-vertex colours (V, 3) or a texture (Ht, Wt, 3), got {albedo.shape}")
    uv = None if uvs is None else np.asarray(uvs, dtype=np.float32)
    if uv is None or uv.shape != (num_verts, 2):
        got = None if uv is None else uv.shape
        raise ValueError(f"a texture albedo needs uvs (V, 2) with V={num_verts}, got {got}")
    return np.zeros((0, 3), np.float32), np.ascontiguousarray(uv), np.ascontiguousarray(albedo)


def _light_inputs(light: Light) -> tuple[np.ndarray, ...]:
    """Unit light direction, unit Blinn half vector (view +z), light colour, ambient colour (float64)."""
    direction = np.asarray(light.direction, dtype=np.float64)
    if direction.shape != (3,) or not np.linalg.norm(direction) > 0:
        raise ValueError(f"light.direction must be a non-zero 3-vector, got {light.direction}")
    direction = direction / np.linalg.norm(direction)
    half = direction + np.array([0.0, 0.0, 1.0])
    half = half / max(np.linalg.norm(half), 1e-12)
    color, ambient = np.asarray(light.color, np.float64), np.asarray(light.ambient, np.float64)
    if color.shape != (3,) or ambient.shape != (3,):
        raise ValueError(f"light.color and light.ambient must be RGB triples, got {light.color}, {light.ambient}")
    return direction, half, color, ambient


def render_shaded(verts_screen: np.ndarray, tris: np.ndarray, normals_cam: np.ndarray | None, albedo: np.ndarray,
                  height: int, width: int, light: Light = Light(), uvs: np.ndarray | None = None,
                  specular: float | np.ndarray = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Shaded RGB of one frame (ambient + Lambert + Blinn-Phong), for synthetic talking-head videos.

    verts_screen: (V, 3) screen vertices; tris: (F, 3); normals_cam: (V, 3) in the camera frame, or None to
    compute `vertex_normals(verts_screen)` (meaningful when depth is in pixel units); albedo: per-vertex
    colours (V, 3) or a texture (Ht, Wt, 3) sampled bilinearly at interpolated uvs (V, 2) (u right, v down);
    specular: global strength or per-vertex (V,). Returns rgb (H, W, 3) float32 in [0, 1] (background 0)
    and the coverage mask (H, W) bool.
    """
    frags = rasterize(verts_screen, tris, height, width)
    num_verts = len(verts_screen)
    normals = vertex_normals(verts_screen, tris) if normals_cam is None else np.asarray(normals_cam, np.float32)
    if normals.shape != (num_verts, 3):
        raise ValueError(f"normals_cam must be (V, 3) with V={num_verts}, got {normals.shape}")
    colors, uv, texture = _albedo_inputs(albedo, uvs, num_verts)
    spec = np.broadcast_to(np.asarray(specular, dtype=np.float32), (num_verts,)) if np.ndim(specular) == 0 \
        else np.asarray(specular, dtype=np.float32)
    if spec.shape != (num_verts,):
        raise ValueError(f"specular must be a float or per-vertex (V,) with V={num_verts}, got {spec.shape}")
    direction, half, color, ambient = _light_inputs(light)
    rgb = np.zeros((height, width, 3), dtype=np.float32)
    _shade_kernel(frags.tri_id, frags.bary, np.ascontiguousarray(tris, dtype=np.int32), np.ascontiguousarray(normals),
                  colors, uv, texture, np.ascontiguousarray(spec), direction, half, color, ambient,
                  float(light.shininess), rgb)
    return rgb, frags.mask
