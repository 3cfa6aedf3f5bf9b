"""The MediaPipe face-mesh topology, recovered from the connectivity that ships in the mediapipe wheel.

The wheel carries the face-mesh edge lists (``face_mesh_connections``) but not the canonical vertex
positions. Triangles are the 3-cliques of the tessellation edges, cleaned: cliques that cover a
degree-3 vertex's fan are dropped, small holes left by edges missing from the list are filled, and the
triangles are oriented consistently. The named contours (lips, eyes, brows, oval) are returned as
ordered vertex paths between anatomical anchor indices, for the procedural model's layout.

Anchors (MediaPipe indices; "right" is the subject's right, image left in a frontal view):
lips corners 61/291, inner corners 78/308, outer mid 0 (upper) / 17 (lower), inner mid 13/14;
right eye corners 33 (outer) / 133 (inner), lids 159/145; left eye 263/362, lids 386/374;
oval top 10, chin 152, sides 234 (right) / 454 (left).
"""
from __future__ import annotations

import collections
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

N_MESH = 468  # face-mesh vertices; 468..477 are the iris landmarks


@dataclass(frozen=True)
class MediaPipeTopology:
    triangles: np.ndarray  # (F, 3) int64 over the 468 mesh vertices, consistently oriented
    edges: np.ndarray  # (E, 2) int64 unique edges of the triangles
    paths: dict  # name -> (n,) int64 ordered vertex path


PATH_ANCHORS = {
    # name: (edge set in face_mesh_connections, start, via, end)
    "lips_outer_upper": ("FACEMESH_LIPS", 61, 0, 291),
    "lips_outer_lower": ("FACEMESH_LIPS", 291, 17, 61),
    "lips_inner_upper": ("FACEMESH_LIPS", 78, 13, 308),
    "lips_inner_lower": ("FACEMESH_LIPS", 308, 14, 78),
    "right_eye_upper": ("FACEMESH_RIGHT_EYE", 33, 159, 133),
    "right_eye_lower": ("FACEMESH_RIGHT_EYE", 133, 145, 33),
    "left_eye_upper": ("FACEMESH_LEFT_EYE", 263, 386, 362),
    "left_eye_lower": ("FACEMESH_LEFT_EYE", 362, 374, 263),
    "right_brow_lower": ("FACEMESH_RIGHT_EYEBROW", 46, None, 55),
    "right_brow_upper": ("FACEMESH_RIGHT_EYEBROW", 70, None, 107),
    "left_brow_lower": ("FACEMESH_LEFT_EYEBROW", 276, None, 285),
    "left_brow_upper": ("FACEMESH_LEFT_EYEBROW", 300, None, 336),
    "oval_left": ("FACEMESH_FACE_OVAL", 10, 454, 152),
    "oval_right": ("FACEMESH_FACE_OVAL", 152, 234, 10),
}


@functools.lru_cache(maxsize=1)
def mediapipe_topology() -> MediaPipeTopology:
    """Triangles and contour paths of the MediaPipe face mesh (cached; needs the mediapipe package)."""
    conn = _connections_module()
    edges = {tuple(sorted(e)) for e in conn.FACEMESH_TESSELATION}
    tris = _fill_small_holes(_drop_covering_cliques(_cliques(edges)))
    tris = _orient(tris)
    tri_edges = np.unique(np.sort(tris[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), 1), axis=0)
    paths = {name: _path(getattr(conn, group), a, via, b) for name, (group, a, via, b) in PATH_ANCHORS.items()}
    return MediaPipeTopology(tris, tri_edges, paths)


def _connections_module():
    """Load mediapipe's ``face_mesh_connections.py`` (plain edge lists) without importing mediapipe
    itself, whose import costs seconds."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or spec.origin is None:
        raise ImportError("the procedural face model uses the MediaPipe face-mesh topology: "
                          "install the project's dependencies (mediapipe==0.10.14)")
    path = Path(spec.origin).parent / "python" / "solutions" / "face_mesh_connections.py"
    if not path.is_file():
        raise ImportError(f"mediapipe is installed but {path} is missing: reinstall mediapipe==0.10.14")
    module_spec = importlib.util.spec_from_file_location("_mp_face_mesh_connections", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _cliques(edges: set) -> set:
    adj = collections.defaultdict(set)
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    return {tuple(sorted((a, b, c))) for a, b in edges for c in adj[a] & adj[b]}


def _edge_counts(tris) -> collections.Counter:
    return collections.Counter(e for t in tris for e in ((t[0], t[1]), (t[0], t[2]), (t[1], t[2])))


def _drop_covering_cliques(tris: set) -> set:
    """A 3-clique whose three edges are each shared by three cliques covers a real fan: drop it."""
    counts = _edge_counts(tris)
    bad = {t for t in tris if all(counts[e] >= 3 for e in ((t[0], t[1]), (t[0], t[2]), (t[1], t[2])))}
    return tris - bad


def _fill_small_holes(tris: set, max_len: int = 6) -> np.ndarray:
    """Fan-fill boundary loops of at most ``max_len`` vertices (edges missing from the edge list)."""
    counts = _edge_counts(tris)
    boundary = collections.defaultdict(list)
    for (a, b), n in counts.items():
        if n == 1:
            boundary[a].append(b)
            boundary[b].append(a)
    out, seen = list(tris), set()
    for start in list(boundary):
        if start in seen or len(boundary[start]) != 2:
            continue
        loop = _walk_loop(boundary, start)
        seen.update(loop)
        if loop and len(loop) <= max_len:
            out += [tuple(sorted((loop[0], loop[i], loop[i + 1]))) for i in range(1, len(loop) - 1)]
    return np.asarray(sorted(out), np.int64)


def _walk_loop(neighbours: dict, start: int) -> list:
    loop, prev, cur = [start], None, start
    while True:
        nxt = [v for v in neighbours[cur] if v != prev]
        if not nxt or len(neighbours[cur]) != 2:
            return []
        prev, cur = cur, nxt[0]
        if cur == start:
            return loop
        loop.append(cur)


def _orient(tris: np.ndarray) -> np.ndarray:
    """Flip triangles so that neighbours traverse their shared edge in opposite directions (BFS)."""
    tris = tris.copy()
    by_edge = collections.defaultdict(list)
    for i, t in enumerate(tris):
        for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])):
            by_edge[tuple(sorted((a, b)))].append(i)
    done = np.zeros(len(tris), bool)
    for seed in range(len(tris)):
        if done[seed]:
            continue
        done[seed], queue = True, collections.deque([seed])
        while queue:
            i = queue.popleft()
            t = tris[i]
            for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])):
                for j in by_edge[tuple(sorted((a, b)))]:
                    if done[j]:
                        continue
                    u = tris[j]
                    same = any((u[k], u[(k + 1) % 3]) == (a, b) for k in range(3))
                    if same:  # j runs the shared edge the same way: flip it
                        tris[j] = u[[0, 2, 1]]
                    done[j] = True
                    queue.append(j)
    return tris


def _path(edge_set, start: int, via: int | None, end: int) -> np.ndarray:
    """Ordered vertex path start -> via -> end along the given connection edges (shortest hops)."""
    adj = collections.defaultdict(set)
    for a, b in edge_set:
        adj[a].add(b)
        adj[b].add(a)
    if via is None:
        return np.asarray(_bfs(adj, start, end), np.int64)
    first = _bfs(adj, start, via)
    second = _bfs({k: v - set(first[:-1]) for k, v in adj.items()}, via, end)
    return np.asarray(first + second[1:], np.int64)


def _bfs(adj: dict, start: int, end: int) -> list:
    parent, queue = {start: None}, collections.deque([start])
    while queue:
        cur = queue.popleft()
        if cur == end:
            break
        for nxt in sorted(adj[cur]):
            if nxt not in parent:
                parent[nxt] = cur
                queue.append(nxt)
    if end not in parent:
        raise RuntimeError(f"no path {start} -> {end} in the MediaPipe connections")
    path = [end]
    while parent[path[-1]] is not None:
        path.append(parent[path[-1]])
    return path[::-1]
