"""A stand-in for Deep3DFaceRecon's ``BFM_model_front.mat`` at the real file's sizes and layout, made from the
procedural face model, so that the paper's path (``--face-model bfm:PATH``) can run here without the licensed
Basel Face Model. It is NOT a face model to ship or to train a real system with: never commit what it writes.

    python -m data_prep.synthetic.bfm_standin --out outputs/rehearse/stand_ins/BFM_model_front.mat [--vertices 35709]

What it writes (the fields ``src.geometry.face_models.bfm`` reads, in Deep3DFaceRecon's layout, plus the mean
texture the synthetic corpus paints the faces with):

| field | shape | content |
| --- | --- | --- |
| meanshape | (1, 3N) float32 | the procedural mean densified to N vertices, xyz interleaved, decimetres, not centred |
| idBase | (3N, 80) float32 | identity PCA basis (columns = principal direction x its standard deviation) |
| exBase | (3N, 64) float32 | expression PCA basis, same convention; coefficients signed, unbounded |
| tri | (F, 3) float64 | 1-based triangles, F ~ 2N (70,236 for N = 35,709; the real file has 70,789) |
| keypoints | (1, 68) float64 | 1-based iBUG-68 vertices: the procedural model's own (``IBUG68_FROM_MEDIAPIPE``) |
| meantex | (1, 3N) float32 | mean albedo in [0, 255], rgb interleaved: the procedural texture at each vertex |

Densification: every triangle of the procedural model (face surface, eyeballs, teeth, mouth cavity: 907 vertices,
1,612 triangles) is split into level^2 triangles (level 6: 29,607 vertices), then the remaining vertices are
added as centroids of face triangles spread evenly over the face, until exactly N. Every new vertex is a fixed
barycentric combination of three procedural vertices, so the mean shape and every mode are interpolated
from the procedural ones; face vertices are then put back on the procedural height field
(``procedural.surface_depth``), so the mean is smooth rather than faceted. The parent vertices keep their
indices 0..906, so the keypoints are exactly the procedural landmark vertices.

Bases: a real BFM basis is a PCA of scans, signed and unbounded, with more modes than the procedural model
has (80 / 64 against 16 / 16). Each procedural mode D_k (a displacement field) is taken with a few smooth
spatial weights (1, x, y, xy, and x^2 for identity; the non-constant ones at a lower amplitude: asymmetric
and graded variants of the same motion), and the PCA of those fields gives the 80 and 64 columns, ordered by
variance, each scaled by its singular value as Deep3DFaceRecon's columns are by their standard deviation.
The expression basis therefore spans the procedural modes (mouth opening, lip rounding, smiles, blinks, ...)
and variants of them; the synthetic corpus drives it through ``data_prep.synthetic.motion`` (retargeting its
speech channels by the 68 keypoints, as it would a real BFM).

Deterministic (no random numbers); about 3 s for the full size.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from src.geometry.face_models.procedural import IBUG68_FROM_MEDIAPIPE, build_procedural
from src.geometry.face_models.schema import PARTS

N_VERTICES = 35709  # Deep3DFaceRecon's BFM_model_front.mat
N_ID, N_EXP = 80, 64
MM_PER_UNIT = 100.0  # decimetres, as Deep3DFaceRecon's file
# spatial weights of the mode variants (x, y normalised by 70 mm about the face centre), and their amplitudes
ID_VARIANTS = (("1", 1.0), ("x", 0.3), ("y", 0.3), ("xy", 0.2), ("xx", 0.2))
EXP_VARIANTS = (("1", 1.0), ("x", 0.3), ("y", 0.3), ("xy", 0.2))
FACE_CENTRE_Y = -30.0  # mm, between the eyes and the chin of the procedural layout


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m data_prep.synthetic.bfm_standin", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="the .mat to write (kept when it exists, unless --force)")
    p.add_argument("--vertices", type=int, default=N_VERTICES, help="vertex count N (default: the real file's)")
    p.add_argument("--force", action="store_true", help="write even when --out exists")
    args = p.parse_args(argv)
    if args.vertices < 1000:
        p.error(f"--vertices must be >= 1000 (the procedural model has 907), got {args.vertices}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.out.is_file() and not args.force:
        print(f"BFM stand-in: {args.out} exists, kept (--force to rewrite)")
        return 0
    start = time.perf_counter()
    fields = build_standin(args.vertices)
    write_mat(args.out, fields)
    n, f = fields["meanshape"].shape[1] // 3, len(fields["tri"])
    print(f"BFM stand-in (procedural model densified; not a face model to ship): {args.out} ({n} vertices, {f} "
          f"triangles, idBase {fields['idBase'].shape}, exBase {fields['exBase'].shape}, "
          f"{args.out.stat().st_size / 1e6:.0f} MB, {time.perf_counter() - start:.1f} s)")
    return 0


def build_standin(n_vertices: int = N_VERTICES) -> dict[str, np.ndarray]:
    """The .mat fields (module docstring) for an N-vertex stand-in."""
    proc = build_procedural()
    n_parent = len(proc.mean)
    weights, tris, part = densify(proc.triangles, proc.part, n_parent, n_vertices)  # (N, V) sparse
    parent_fields = np.concatenate([proc.mean[:, :, None], proc.id_basis, proc.exp_basis], 2)  # (V, 3, 1 + 32)
    fields = _interpolate(weights, parent_fields)  # (N, 3, 33) piecewise linear
    fields = smooth_inside(fields, tris, _free_face_vertices(tris, part, n_parent))
    mean, id_fields, exp_fields = fields[:, :, 0], fields[:, :, 1:17], fields[:, :, 17:]  # mm
    xy = np.stack([mean[:, 0] / 70.0, (mean[:, 1] - FACE_CENTRE_Y) / 70.0], 1)
    keypoints = IBUG68_FROM_MEDIAPIPE + 1  # parents keep their indices; 1-based
    return {
        "meanshape": (mean / MM_PER_UNIT).astype(np.float32).reshape(1, -1),
        "idBase": (pca_basis(id_fields, xy, ID_VARIANTS) / MM_PER_UNIT).astype(np.float32),
        "exBase": (pca_basis(exp_fields, xy, EXP_VARIANTS) / MM_PER_UNIT).astype(np.float32),
        "tri": (tris + 1).astype(np.float64),
        "keypoints": keypoints.astype(np.float64)[None],
        "meantex": (255.0 * mean_albedo(weights @ proc.uv.astype(np.float64))).astype(np.float32).reshape(1, -1),
    }


def write_mat(path: Path, fields: dict[str, np.ndarray]) -> Path:
    """Write the fields with scipy.io.savemat (MATLAB 5 format, as Deep3DFaceRecon's file), atomically."""
    import scipy.io

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        scipy.io.savemat(handle, fields, do_compression=False)
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------------------ mesh --

def densify(tris: np.ndarray, part: np.ndarray, n_parent: int, n_vertices: int):
    """Subdivide the mesh to exactly ``n_vertices``: -> (weights (N, V) sparse barycentric rows, triangles (F', 3),
    part (N,)). Uniform subdivision at the highest level that fits, then centroid splits of face triangles."""
    edges = np.unique(np.sort(np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]]), 1), axis=0)
    level = 1
    while _count(n_parent, len(edges), len(tris), level + 1) <= n_vertices:
        level += 1
    weights, dense_tris = subdivide(tris, edges, n_parent, level)
    dense_part = _dense_part(part, edges, tris, level)
    return split_to(weights, dense_tris, dense_part, n_vertices)


def _count(n_vertices: int, n_edges: int, n_tris: int, level: int) -> int:
    """Vertices after splitting every triangle into level^2."""
    return n_vertices + n_edges * (level - 1) + n_tris * (level - 1) * (level - 2) // 2


def subdivide(tris: np.ndarray, edges: np.ndarray, n_parent: int, level: int):
    """Each triangle (a, b, c) -> level^2 triangles on the grid point (i, j) = (i a + j b + (level - i - j) c) / level,
    shared along edges: -> (weights (N, V) sparse, triangles (level^2 F, 3)), orientation kept."""
    k, n_tri, n_edge = level, len(tris), len(edges)
    n_interior = (k - 1) * (k - 2) // 2
    rows, cols, vals = [np.arange(n_parent)], [np.arange(n_parent)], [np.ones(n_parent)]
    for j in range(1, k):  # edge points: weight j/k on the higher vertex
        ids = n_parent + np.arange(n_edge) * (k - 1) + j - 1
        rows += [ids, ids]
        cols += [edges[:, 0], edges[:, 1]]
        vals += [np.full(n_edge, 1 - j / k), np.full(n_edge, j / k)]
    interior = [(i, j) for i in range(1, k) for j in range(1, k - i)]
    for m, (i, j) in enumerate(interior):
        ids = n_parent + n_edge * (k - 1) + np.arange(n_tri) * n_interior + m
        for corner, w in zip(range(3), (i / k, j / k, (k - i - j) / k)):
            rows.append(ids)
            cols.append(tris[:, corner])
            vals.append(np.full(n_tri, w))
    n = n_parent + n_edge * (k - 1) + n_tri * n_interior
    weights = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n_parent))
    grid = _GridIds(tris, edges, n_parent, k, {ij: m for m, ij in enumerate(interior)})
    out = []
    for i in range(k):
        for j in range(k - i):
            out.append(np.stack([grid(i, j), grid(i + 1, j), grid(i, j + 1)], 1))  # "up" triangle
            if i + j <= k - 2:
                out.append(np.stack([grid(i + 1, j), grid(i + 1, j + 1), grid(i, j + 1)], 1))  # "down" triangle
    return weights, np.concatenate(out)


class _GridIds:
    """Dense vertex id of grid point (i, j) of every triangle: (F,)."""

    def __init__(self, tris, edges, n_parent, level, interior):
        self.tris, self.n_parent, self.k, self.interior = tris, n_parent, level, interior
        self.keys = edges[:, 0] * n_parent + edges[:, 1]  # sorted, as np.unique returned them
        self.n_edge = len(edges)

    def __call__(self, i: int, j: int) -> np.ndarray:
        a, b, c = self.tris.T
        k = self.k
        if (i, j) in ((k, 0), (0, k), (0, 0)):
            return {(k, 0): a, (0, k): b, (0, 0): c}[(i, j)]
        if j == 0:
            return self._edge_point(a, c, i)
        if i == 0:
            return self._edge_point(b, c, j)
        if i + j == k:
            return self._edge_point(a, b, i)
        m = self.interior[(i, j)]
        n_interior = (k - 1) * (k - 2) // 2
        return self.n_parent + self.n_edge * (k - 1) + np.arange(len(self.tris)) * n_interior + m

    def _edge_point(self, x: np.ndarray, y: np.ndarray, m: int) -> np.ndarray:
        """The point with weight m/k on x and (k - m)/k on y."""
        lo, hi = np.minimum(x, y), np.maximum(x, y)
        edge = np.searchsorted(self.keys, lo * self.n_parent + hi)
        on_hi = np.where(hi == x, m, self.k - m)  # edge points are numbered by their weight on the higher vertex
        return self.n_parent + edge * (self.k - 1) + on_hi - 1


def _dense_part(part: np.ndarray, edges: np.ndarray, tris: np.ndarray, level: int) -> np.ndarray:
    """Part label of every dense vertex: the parent's, the edge's (its lower vertex), the triangle's."""
    n_interior = (level - 1) * (level - 2) // 2
    return np.concatenate([part, np.repeat(part[edges[:, 0]], level - 1), np.repeat(part[tris[:, 0]], n_interior)])


def split_to(weights: sp.csr_matrix, tris: np.ndarray, part: np.ndarray, n_vertices: int):
    """Add vertices at the centroids of face triangles (spread evenly over them) until there are ``n_vertices``."""
    while weights.shape[0] < n_vertices:
        candidates = np.flatnonzero((part[tris] == PARTS["face"]).all(1))
        need = min(n_vertices - weights.shape[0], len(candidates))
        chosen = candidates[np.unique(np.linspace(0, len(candidates) - 1, need).round().astype(int))]
        chosen = candidates[:need] if len(chosen) < need else chosen
        centre = weights.shape[0] + np.arange(need)
        rows = sp.csr_matrix((np.full(3 * need, 1 / 3), (np.repeat(np.arange(need), 3), tris[chosen].ravel())),
                             shape=(need, weights.shape[0]))
        weights = sp.vstack([weights, rows @ weights]).tocsr()
        p, q, r = tris[chosen].T
        keep = np.setdiff1d(np.arange(len(tris)), chosen)
        tris = np.concatenate([tris[keep], np.stack([p, q, centre], 1), np.stack([q, r, centre], 1),
                               np.stack([r, p, centre], 1)])
        part = np.concatenate([part, np.full(need, PARTS["face"])])
    return weights, tris, part


def _free_face_vertices(tris: np.ndarray, part: np.ndarray, n_parent: int) -> np.ndarray:
    """(N,) bool: new vertices inside the face surface (not parents, not on its border, eye holes or mouth slit)."""
    face_tris = tris[(part[tris] == PARTS["face"]).all(1)]
    edges = np.sort(np.concatenate([face_tris[:, [0, 1]], face_tris[:, [1, 2]], face_tris[:, [2, 0]]]), 1)
    unique, count = np.unique(edges, axis=0, return_counts=True)
    free = part == PARTS["face"]
    free[:n_parent] = False
    free[unique[count == 1].ravel()] = False  # an edge of one triangle lies on a border
    return free


def smooth_inside(values: np.ndarray, tris: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Replace ``values`` (N, ...) on the ``free`` vertices by the biharmonic interpolation of the others (the
    smoothest field through them: min ||L f||^2, L the uniform graph Laplacian): the subdivided face is smooth,
    not flat within each procedural triangle. The fixed vertices keep their values."""
    import scipy.sparse.linalg as spla

    n = len(values)
    edges = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    adj = sp.coo_matrix((np.ones(2 * len(edges)), (np.r_[edges[:, 0], edges[:, 1]], np.r_[edges[:, 1], edges[:, 0]])),
                        shape=(n, n)).tocsr()
    adj.data[:] = 1.0  # shared edges counted once
    degree = np.asarray(adj.sum(1)).ravel()
    lap = sp.eye(n) - sp.diags(1.0 / np.maximum(degree, 1)) @ adj
    energy = (lap.T @ lap).tocsr()
    fixed = ~free
    flat = values.reshape(n, -1)
    rhs = -(energy[free][:, fixed] @ flat[fixed])
    out = flat.copy()
    out[free] = spla.splu(energy[free][:, free].tocsc()).solve(rhs)
    return out.reshape(values.shape)


# ----------------------------------------------------------------------------------------- bases --

def _interpolate(weights: sp.csr_matrix, basis: np.ndarray) -> np.ndarray:
    """(V, 3, K) per-vertex fields -> (N, 3, K) at the dense vertices."""
    return np.asarray(weights @ basis.reshape(len(basis), -1).astype(np.float64)).reshape(-1, 3, basis.shape[2])


def pca_basis(fields: np.ndarray, xy: np.ndarray, variants: tuple) -> np.ndarray:
    """Fields (N, 3, K) and normalised positions (N, 2) -> (3N, K * len(variants)) PCA columns (xyz interleaved
    rows, each column a principal direction times its singular value, signs fixed), in the fields' units."""
    x, y = xy[:, 0], xy[:, 1]
    spatial = {"1": np.ones_like(x), "x": x, "y": y, "xy": x * y, "xx": x * x - float(np.mean(x * x))}
    stacked = np.concatenate([amp * spatial[name][:, None, None] * fields for name, amp in variants], 2)
    matrix = stacked.reshape(-1, stacked.shape[2])  # (3N, K'): row 3v + c is vertex v's coordinate c
    u, s, _ = np.linalg.svd(matrix, full_matrices=False)
    columns = u * s
    flip = np.sign(columns[np.abs(columns).argmax(0), np.arange(columns.shape[1])])
    return columns * flip


def mean_albedo(uv: np.ndarray) -> np.ndarray:
    """(N, 2) texture coordinates -> (N, 3) albedo in [0, 1]: the procedural texture of a fixed appearance
    (a mid skin tone), sampled bilinearly."""
    from data_prep.synthetic.appearance import ATLAS, paint_texture
    from data_prep.synthetic.persona import SKIN_TONES, Appearance

    skin = tuple(float(c) for c in SKIN_TONES[2])
    look = Appearance(skin=skin, lips=(0.62, 0.33, 0.27), hair=(0.25, 0.16, 0.09), brows=(0.22, 0.15, 0.09),
                      iris=(0.35, 0.45, 0.6), shirt=(0.3, 0.3, 0.5), brow_thickness=3.5, blush=0.3, texture_seed=0)
    texture = paint_texture(uv.astype(np.float32), look)  # (A, A, 3)
    px = np.clip(uv * ATLAS - 0.5, 0, ATLAS - 1.001)
    x0, y0 = np.floor(px[:, 0]).astype(int), np.floor(px[:, 1]).astype(int)
    fx, fy = (px[:, 0] - x0)[:, None], (px[:, 1] - y0)[:, None]
    top = texture[y0, x0] * (1 - fx) + texture[y0, x0 + 1] * fx
    bottom = texture[y0 + 1, x0] * (1 - fx) + texture[y0 + 1, x0 + 1] * fx
    return np.clip(top * (1 - fy) + bottom * fy, 0, 1)


if __name__ == "__main__":
    sys.exit(main())
