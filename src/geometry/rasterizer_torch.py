"""Batched z-buffer rasteriser in pure torch (for GPU use): same semantics as `rasterizer.py`.

Conventions are those of `src/geometry/rasterizer.py` (x right, y down, pixel centres at +0.5, depth
larger = closer, inclusive edges, degenerate triangles skipped, lowest triangle index wins depth ties,
background -1). Edge functions and depth use float64 with the numba kernel's exact expressions, so the
two agree bit for bit in eager mode (a compiler that fuses multiply-adds may move edge pixels). On CPU
this is 10-100x slower than numba: it is meant for batched GPU rendering.

Method: per (frame, triangle) bounding box of pixel centres clipped to the image; enumerate candidate
(triangle, pixel) pairs in chunks of at most `max_pairs`; keep those inside; z-buffer by
`scatter_reduce(amax)` over the flat pixel index b*H*W + i*W + j; the winner is the lowest triangle id
among candidates at the max depth (`scatter_reduce(amin)`).

Rasterisation is not differentiable (run under no_grad); `interpolate_torch` is, w.r.t. attrs.

Letter legend: B frames, V vertices, F triangles, H x W image, C channels, P candidate pairs, N inside.
"""

from __future__ import annotations

import torch


def _validate(verts_screen, tris, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not torch.is_tensor(verts_screen) or verts_screen.ndim != 3 or verts_screen.shape[-1] != 3:
        shape = tuple(verts_screen.shape) if torch.is_tensor(verts_screen) else type(verts_screen)
        raise ValueError(f"verts_screen must be a tensor (B, V, 3) = (x_px, y_px, depth), got {shape}")
    if not verts_screen.is_floating_point():
        raise TypeError(f"verts_screen must be floating, got {verts_screen.dtype}")
    if not torch.isfinite(verts_screen).all():
        raise ValueError("verts_screen contains NaN or inf; project only finite vertices")
    if not torch.is_tensor(tris) or tris.ndim != 2 or tris.shape[1] != 3:
        raise ValueError(f"tris must be a tensor (F, 3), got {getattr(tris, 'shape', type(tris))}")
    if tris.is_floating_point() or tris.dtype == torch.bool:
        raise TypeError(f"tris must be an integer tensor, got {tris.dtype}")
    num_verts = verts_screen.shape[1]
    if tris.numel() and (int(tris.min()) < 0 or int(tris.max()) >= num_verts):
        raise ValueError(f"tris index out of range [0, {num_verts}): min {int(tris.min())}, max {int(tris.max())}")
    return verts_screen, tris.to(device=verts_screen.device, dtype=torch.long)


def _pixel_range(lo: torch.Tensor, hi: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First pixel index and count with centre k + 0.5 in [lo, hi], clipped to [0, size)."""
    first = torch.ceil(lo - 0.5).clamp(0.0, float(size))
    last = torch.floor(hi - 0.5).clamp(-1.0, size - 1.0)
    count = (last - first + 1.0).clamp(min=0.0)
    return first.long(), count.long()


def _triangle_setup(verts: torch.Tensor, tris: torch.Tensor, height: int, width: int) -> dict:
    """Per (frame, triangle) corners, inverse area and clipped pixel box; flattened over (B, F)."""
    corners = verts.to(torch.float64)[:, tris]  # (B, F, 3 corners, 3 xyz)
    corners = corners.reshape(-1, 3, 3)  # (B*F, 3, 3)
    x, y = corners[..., 0], corners[..., 1]  # (B*F, 3)
    area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (y[:, 1] - y[:, 0]) * (x[:, 2] - x[:, 0])
    j0, nx = _pixel_range(x.amin(1), x.amax(1), width)
    i0, ny = _pixel_range(y.amin(1), y.amax(1), height)
    count = torch.where(area != 0.0, nx * ny, torch.zeros_like(nx))
    return {"corners": corners, "inv_area": 1.0 / area, "j0": j0, "nx": nx, "i0": i0, "count": count}


def _chunks(count: torch.Tensor, max_pairs: int) -> list[torch.Tensor]:
    """Split the items with count > 0 into index groups whose pair total is <= max_pairs (or one item)."""
    items = torch.nonzero(count).squeeze(1)
    if items.numel() == 0:
        return []
    cum = torch.cumsum(count[items], 0).cpu()
    groups, start = [], 0
    while start < len(items):
        base = int(cum[start - 1]) if start else 0
        end = int(torch.searchsorted(cum, torch.tensor(base + max_pairs), right=True))
        end = max(end, start + 1)
        groups.append(items[start:end])
        start = end
    return groups


def _inside_candidates(setup: dict, items: torch.Tensor, num_tris: int, height: int, width: int):
    """Covered (pixel, triangle) pairs for one chunk: flat pixel index, triangle id, depth, barycentrics."""
    counts = setup["count"][items]
    pair_item = torch.repeat_interleave(torch.arange(len(items), device=items.device), counts)  # (P,)
    first = torch.cumsum(counts, 0) - counts
    offset = torch.arange(len(pair_item), device=items.device) - first[pair_item]  # (P,)
    item = items[pair_item]  # (P,) index into B*F
    nx = setup["nx"][item]
    row = setup["i0"][item] + torch.div(offset, nx, rounding_mode="floor")
    col = setup["j0"][item] + offset % nx
    c = setup["corners"][item]  # (P, 3, 3)
    x0, y0, x1, y1, x2, y2 = c[:, 0, 0], c[:, 0, 1], c[:, 1, 0], c[:, 1, 1], c[:, 2, 0], c[:, 2, 1]
    px, py = col.to(torch.float64) + 0.5, row.to(torch.float64) + 0.5
    inv = setup["inv_area"][item]
    b0 = ((x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)) * inv
    b1 = ((x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)) * inv
    b2 = ((x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)) * inv
    keep = (b0 >= 0.0) & (b1 >= 0.0) & (b2 >= 0.0)
    b0, b1, b2, c, item = b0[keep], b1[keep], b2[keep], c[keep], item[keep]
    depth = b0 * c[:, 0, 2] + b1 * c[:, 1, 2] + b2 * c[:, 2, 2]  # (N,) same order as numba
    frame = torch.div(item, num_tris, rounding_mode="floor")
    pix = frame * (height * width) + row[keep] * width + col[keep]
    return pix, item % num_tris, depth, torch.stack([b0, b1, b2], 1)


def _resolve(pix, fid, depth, bary, num_pixels: int, num_tris: int, device):
    """z-buffer (amax), lowest id at the max depth (amin), winners' barycentrics; flat over B*H*W."""
    zbuf = torch.full((num_pixels,), -torch.inf, dtype=torch.float64, device=device)
    zbuf.scatter_reduce_(0, pix, depth, reduce="amax")
    at_max = depth == zbuf[pix]
    cand = torch.where(at_max, fid, torch.full_like(fid, num_tris))
    tri_id = torch.full((num_pixels,), num_tris, dtype=torch.long, device=device)
    tri_id.scatter_reduce_(0, pix, cand, reduce="amin")
    tri_id[tri_id == num_tris] = -1
    win = at_max & (fid == tri_id[pix])  # exactly one candidate per covered pixel
    out_bary = torch.zeros((num_pixels, 3), dtype=torch.float64, device=device)
    out_bary[pix[win]] = bary[win]
    return tri_id, out_bary, zbuf


@torch.no_grad()
def rasterize_torch(verts_screen: torch.Tensor, tris: torch.Tensor, height: int, width: int,
                    max_pairs: int = 1 << 21) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rasterise a batch of frames sharing one triangle list.

    verts_screen: (B, V, 3) float (x_px, y_px, depth), finite; tris: (F, 3) integer.
    max_pairs bounds the candidate (triangle, pixel) pairs per chunk (peak memory ~250 bytes per pair,
    ~0.5 GB at the default; candidates that cover a pixel are kept across chunks, ~50 bytes each).
    Returns tri_id (B, H, W) long (-1 background), bary (B, H, W, 3) in verts' float dtype,
    depth (B, H, W) in verts' float dtype (-inf background).
    """
    verts, faces = _validate(verts_screen, tris, height, width)
    if max_pairs <= 0:
        raise ValueError(f"max_pairs must be a positive int, got {max_pairs}")
    batch, num_tris, device = verts.shape[0], faces.shape[0], verts.device
    setup = _triangle_setup(verts, faces, height, width)
    parts = [_inside_candidates(setup, items, num_tris, height, width)
             for items in _chunks(setup["count"], max_pairs)]
    if parts:
        pix, fid, depth, bary = (torch.cat(p) for p in zip(*parts))
    else:
        pix = fid = torch.zeros(0, dtype=torch.long, device=device)
        depth = torch.zeros(0, dtype=torch.float64, device=device)
        bary = torch.zeros(0, 3, dtype=torch.float64, device=device)
    tri_id, out_bary, zbuf = _resolve(pix, fid, depth, bary, batch * height * width, num_tris, device)
    dtype = verts.dtype
    return (tri_id.view(batch, height, width),
            out_bary.view(batch, height, width, 3).to(torch.float32).to(dtype),
            zbuf.view(batch, height, width).to(torch.float32).to(dtype))


def interpolate_torch(tri_id: torch.Tensor, bary: torch.Tensor, tris: torch.Tensor,
                      attrs: torch.Tensor) -> torch.Tensor:
    """Interpolate per-vertex attributes over the visible triangles (differentiable w.r.t. attrs).

    tri_id: (B, H, W) long; bary: (B, H, W, 3); tris: (F, 3); attrs: (B, V, C) or (V, C) shared.
    Returns (B, H, W, C) in attrs' dtype, 0 on background.
    """
    if tri_id.ndim != 3 or bary.shape != (*tri_id.shape, 3):
        raise ValueError(f"tri_id must be (B, H, W) and bary (B, H, W, 3), "
                         f"got {tuple(tri_id.shape)}, {tuple(bary.shape)}")
    if attrs.ndim not in (2, 3) or (attrs.ndim == 3 and attrs.shape[0] != tri_id.shape[0]):
        raise ValueError(f"attrs must be (V, C) or (B, V, C) with B={tri_id.shape[0]}, got {tuple(attrs.shape)}")
    batch = tri_id.shape[0]
    covered = tri_id >= 0  # (B, H, W)
    vid = tris.to(device=tri_id.device, dtype=torch.long)[tri_id.clamp(min=0)]  # (B, H, W, 3)
    if attrs.ndim == 3:
        num_verts = attrs.shape[1]
        frame = torch.arange(batch, device=tri_id.device).view(batch, 1, 1, 1)
        values = attrs.reshape(batch * num_verts, -1)[vid + frame * num_verts]  # (B, H, W, 3, C)
    else:
        values = attrs[vid]  # (B, H, W, 3, C)
    out = (bary.to(attrs.dtype).unsqueeze(-1) * values).sum(-2)  # (B, H, W, C)
    return out * covered.unsqueeze(-1).to(out.dtype)
