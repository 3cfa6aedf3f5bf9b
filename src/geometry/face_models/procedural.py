"""The procedural face model: the project's own linear face model, the embedded default.

It is defined entirely in this file, on the MediaPipe face-mesh topology (``mediapipe_topology``) so
that the detector used for fitting gives a landmark for every face vertex (468 + 10 iris), and needs no
licensed file. What this file designs (units: mm; x to the subject's left, y up, z to the camera; the
eye line at y = 0):

- a 2D layout: the contours (oval, eyes, brows, lips, nose) are placed on designed curves, every other
  vertex by harmonic interpolation over the mesh graph (a Tutte-style embedding with pinned contours);
- depth: a height field (head curvature, nose, brow ridge, eye sockets, cheekbones, lips, chin);
- parts added behind the face surface: two eyeballs whose front rings carry the 10 iris landmarks,
  upper and lower teeth on a dental arch, and a dark mouth cavity, so an open mouth shows teeth and
  never the background;
- identity modes (face proportions, coefficients ~ N(0, 1)) and expression modes (speech: jaw open,
  lip rounding/spreading/closure/funnel, lip raise/lower, smile per side, mouth shift, cheek puff;
  non-speech: blinks, brows), each a displacement field whose region weights are harmonic fields over
  the mesh, so they respect the mouth slit and eyelids. Expression coefficients live in [0, 1]
  (``mouth_shift`` in [-1, 1]).

Everything is deterministic; ``VERSION`` names the design, bump it whenever an array changes.
"""
from __future__ import annotations

import functools

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from src.geometry.face_models.mediapipe_topology import N_MESH, mediapipe_topology
from src.geometry.face_models.schema import PARTS, FaceModelData

VERSION = "procedural-v2"

EXP_NAMES = [
    "jaw_open", "lip_round", "lip_spread", "lip_close", "upper_lip_raise", "lower_lip_down", "lip_funnel",
    "smile_L", "smile_R", "mouth_shift", "cheek_puff", "blink_L", "blink_R", "brow_raise_L", "brow_raise_R",
    "brow_furrow",
]
SPEECH_MODES = EXP_NAMES[:10]
ID_NAMES = [
    "face_width", "face_height", "face_depth", "jaw_width", "chin_length", "nose_length", "nose_width",
    "nose_height", "eye_spacing", "eye_size", "mouth_width", "lip_thickness", "cheekbones", "brow_height",
    "forehead_slope", "face_roundness",
]

MOUTH_Y = -66.0  # mouth line
EYE_X = 29.5  # eye centres at (+-EYE_X, EYE_Y)
EYE_Y = -1.5
EYE_R = 12.0  # eyeball radius
JAW_HINGE = np.array([0.0, -22.0, 5.0])  # jaw rotation axis passes through here, along x
IRIS_RADIUS = 5.8  # mm
EYE_POLAR = np.r_[np.arccos(1 - IRIS_RADIUS ** 2 / (2 * EYE_R ** 2)), np.linspace(0.75, 1.9, 8)]  # eyeball rings
IRIS_UV_RADIUS = EYE_POLAR[0] / EYE_POLAR[-1]  # iris edge radius in an eye tile, as a fraction of its half-width
JAW_ANGLE = 0.26  # radians at jaw_open = 1 (about 25 mm of inner-lip opening)

# iBUG-68 in MediaPipe indices: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, lips 48-67.
IBUG68_FROM_MEDIAPIPE = np.array([
    127, 234, 93, 132, 58, 172, 136, 150, 152, 379, 365, 397, 288, 361, 323, 454, 356,
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    168, 197, 5, 4, 98, 97, 2, 326, 327,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    78, 82, 13, 312, 308, 317, 14, 87,
])

# Designed positions (x, y) in mm of anchor vertices that are not on a contour curve (right side given,
# mirrored with the MediaPipe symmetric partner for the left): nose midline and alae, cheeks.
_NOSE_MIDLINE = {168: 3.0, 6: -4.0, 197: -11.0, 195: -19.0, 5: -26.0, 4: -32.0, 1: -38.0, 19: -41.0,
                 94: -42.5, 2: -44.5, 164: -51.0}
_NOSE_SIDES = {  # right-side index: (x, y), left partner
    98: ((-14.0, -43.0), 327), 64: ((-16.0, -39.0), 294), 129: ((-18.0, -36.0), 358),
    48: ((-16.0, -35.0), 278), 115: ((-13.0, -33.0), 344), 220: ((-9.0, -31.0), 440),
    45: ((-5.0, -31.0), 275), 240: ((-12.0, -41.0), 460), 49: ((-17.0, -32.0), 279),
}
# Known imperfection: about 10 sliver triangles (under 0.3% of the face area) fold next to the eye and
# mouth corners, where the designed contours and MediaPipe's own layout disagree slightly. More interior
# pins moved the folds rather than removing them; the z-buffer hides them in renders.


@functools.lru_cache(maxsize=1)
def build_procedural() -> FaceModelData:
    """Build the procedural model's arrays (cached; about 0.2 s)."""
    topo = mediapipe_topology()
    xy = _layout(topo)  # (468, 2)
    face = np.concatenate([xy, surface_depth(xy)[:, None]], 1)  # (468, 3)
    parts = _Parts(face, topo)
    verts = np.concatenate([face, parts.verts], 0)  # (L, 3)
    tris = np.concatenate([topo.triangles, parts.tris + N_MESH], 0)
    part = np.concatenate([np.full(N_MESH, PARTS["face"]), parts.part])
    uv = np.concatenate([_face_uv(xy), parts.uv], 0)
    fields = _Fields(topo, verts, part)
    exp_basis = np.stack([_EXPRESSIONS[n](verts, fields) for n in EXP_NAMES], -1)  # (L, 3, K_exp)
    id_basis = np.stack([_IDENTITY[n](verts, fields) for n in ID_NAMES], -1)  # (L, 3, K_id)
    lip = np.flatnonzero(fields.lip_set)
    lower = _lower_set(exp_basis, part, verts)
    lmk478 = np.concatenate([np.arange(N_MESH), parts.iris_index + N_MESH])
    pairs = np.stack([topo.paths["lips_inner_upper"][2:-2], topo.paths["lips_inner_lower"][::-1][2:-2]], 1)
    return FaceModelData(
        name=VERSION, mean=verts, id_basis=id_basis, exp_basis=exp_basis, triangles=_orient_outward(verts, tris),
        lmk68=IBUG68_FROM_MEDIAPIPE, lmk478=lmk478, lower=lower, upper=np.setdiff1d(np.arange(len(verts)), lower),
        lip=lip, mouth_pairs=pairs, exp_names=EXP_NAMES, units_to_mm=1.0, uv=uv, part=part,
        extras={"id_names": np.asarray(ID_NAMES)},
    )


# ----------------------------------------------------------------------------------------- layout --

def _layout(topo) -> np.ndarray:
    """(468, 2) vertex positions: designed contours and anchors, harmonic interpolation elsewhere."""
    pins: dict[int, tuple[float, float]] = {}
    for name, path in topo.paths.items():
        pins.update(zip(path.tolist(), _CURVES[name](len(path))))
    for idx, y in _NOSE_MIDLINE.items():
        pins[idx] = (0.0, y)
    for idx, ((x, y), partner) in _NOSE_SIDES.items():
        pins[idx], pins[partner] = (x, y), (-x, y)
    pins.update({13: (0.0, MOUTH_Y + 0.4), 14: (0.0, MOUTH_Y - 0.4)})
    idx = np.fromiter(pins, int)
    values = np.array([pins[i] for i in idx])
    return harmonic(topo.edges, N_MESH, idx, values)


def harmonic(edges: np.ndarray, n: int, pinned: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Solve the graph Laplace equation with Dirichlet values at ``pinned``: (n, C) smooth field."""
    values = values.reshape(len(pinned), -1)
    adj = sp.coo_matrix((np.ones(2 * len(edges)), (np.r_[edges[:, 0], edges[:, 1]], np.r_[edges[:, 1], edges[:, 0]])),
                        shape=(n, n)).tocsr()
    lap = sp.diags(np.asarray(adj.sum(1)).ravel()) - adj
    free = np.setdiff1d(np.arange(n), pinned)
    out = np.zeros((n, values.shape[1]))
    out[pinned] = values
    rhs = -lap[free][:, pinned] @ values
    solve = spla.factorized(lap[free][:, free].tocsc())
    out[free] = np.stack([solve(rhs[:, c]) for c in range(values.shape[1])], 1)
    return out


def _arc(x0, y0, x1, y1, bulge, power=1.0):
    """A curve factory: n points from (x0, y0) to (x1, y1), bulging by ``bulge`` mm in y (sin^power)."""
    def make(n: int) -> list[tuple[float, float]]:
        t = np.linspace(0.0, 1.0, n)
        y = y0 + (y1 - y0) * t + bulge * np.sin(np.pi * t) ** power
        return list(zip((x0 + (x1 - x0) * t).tolist(), y.tolist()))
    return make


def _upper_lip(n: int) -> list[tuple[float, float]]:
    t = np.linspace(0.0, 1.0, n)
    bow = 9.0 * np.sin(np.pi * t) ** 0.6 - 1.3 * np.exp(-((t - 0.5) / 0.09) ** 2)  # Cupid's bow dip
    return list(zip((-22.0 + 44.0 * t).tolist(), (MOUTH_Y + bow).tolist()))


def _oval(side: float, top_to_bottom: bool):
    """Half of the face outline: top (0, 50) -> widest (+-66, -31) -> chin (0, -104)."""
    def make(n: int) -> list[tuple[float, float]]:
        half = n // 2  # the side anchor (454 / 234) sits in the middle of each half-path
        theta = np.r_[np.linspace(np.pi / 2, 0.0, half + 1), np.linspace(0.0, -np.pi / 2, n - half)[1:]]
        if not top_to_bottom:
            theta = theta[::-1]
        below = np.clip(-np.sin(theta), 0, None)
        above = np.clip(np.sin(theta), 0, None)  # the temples stay wide: the brows end inside the outline
        x = side * (66.0 + 12.0 * above ** 0.7) * np.cos(theta) * (1.0 - 0.22 * below ** 1.5)
        y = -31.0 + np.where(theta > 0, 81.0, 73.0) * np.sin(theta)
        return list(zip(x.tolist(), y.tolist()))
    return make


_CURVES = {
    "lips_outer_upper": _upper_lip,
    "lips_outer_lower": _arc(22.0, MOUTH_Y, -22.0, MOUTH_Y, -12.0, 0.9),
    "lips_inner_upper": _arc(-19.0, MOUTH_Y, 19.0, MOUTH_Y, 0.4),
    "lips_inner_lower": _arc(19.0, MOUTH_Y, -19.0, MOUTH_Y, -0.4),
    "right_eye_upper": _arc(-42.0, -1.0, -17.0, -2.5, 5.5, 0.8),
    "right_eye_lower": _arc(-17.0, -2.5, -42.0, -1.0, -3.5),
    "left_eye_upper": _arc(42.0, -1.0, 17.0, -2.5, 5.5, 0.8),
    "left_eye_lower": _arc(17.0, -2.5, 42.0, -1.0, -3.5),
    "right_brow_lower": _arc(-50.0, 10.5, -14.0, 13.5, 4.0),
    "right_brow_upper": _arc(-55.0, 14.5, -14.0, 20.5, 5.0),
    "left_brow_lower": _arc(50.0, 10.5, 14.0, 13.5, 4.0),
    "left_brow_upper": _arc(55.0, 14.5, 14.0, 20.5, 5.0),
    "oval_left": _oval(1.0, True),
    "oval_right": _oval(-1.0, False),
}


def _gauss(x, y, cx, cy, sx, sy):
    return np.exp(-(((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def surface_depth(xy: np.ndarray) -> np.ndarray:
    """Height field z(x, y) in mm of the face surface (its distance towards the camera) at layout positions
    (n, 2): the face vertices are (layout, surface_depth(layout)), so a denser mesh on the same layout
    (``data_prep.synthetic.bfm_standin``) lies on the same smooth surface."""
    x, y = xy[:, 0], xy[:, 1]
    base = (78.0 * np.sqrt(np.clip(1 - (x / 88.0) ** 2, 0.05, None))
            * np.sqrt(np.clip(1 - ((y + 25) / 150.0) ** 2, 0.05, None)))
    ridge_t = np.clip((3.0 - y) / 41.0, 0, 1)  # 0 at the bridge, 1 at the tip
    ridge_w = 4.5 + 5.0 * ridge_t
    nose = (6.0 + 16.0 * ridge_t ** 1.4) * np.exp(-(x / ridge_w) ** 2) * (y > -38) * (y < 5)
    nose = nose + 22.0 * _gauss(x, y, 0, -38, 8.0, 6.0) + 9.0 * _gauss(np.abs(x), y, 13, -39, 6.0, 5.0)
    sockets = -9.0 * (_gauss(x, y, -EYE_X, EYE_Y, 15, 9) + _gauss(x, y, EYE_X, EYE_Y, 15, 9))
    brow = 5.0 * _gauss(np.abs(x), y, 29, 12, 24, 6)
    cheeks = 5.0 * _gauss(np.abs(x), y, 40, -24, 14, 12)
    lips = 7.0 * _gauss(x, y, 0, -60, 18, 7) + 6.0 * _gauss(x, y, 0, -72, 16, 6)
    mouth_groove = -2.5 * _gauss(np.abs(x), y, 24, -67, 4, 6)
    chin = 7.0 * _gauss(x, y, 0, -92, 18, 9)
    return base + nose + sockets + brow + cheeks + lips + mouth_groove + chin


def _face_uv(xy: np.ndarray) -> np.ndarray:
    """Face texture coordinates: the layout mapped into the atlas' left 3/4 (v down)."""
    u = (xy[:, 0] + 80.0) / 160.0 * 0.75
    v = (60.0 - xy[:, 1]) / 185.0
    return np.stack([u, v], 1)


# ------------------------------------------------------------------------------------------ parts --

class _Parts:
    """Eyeballs (carrying the iris landmarks), teeth rows and the mouth cavity, behind the face."""

    def __init__(self, face: np.ndarray, topo):
        self.verts, self.tris, self.part, self.uv, iris = [], [], [], [], []
        for side, name, tile in ((-1.0, "right", (0.75, 0.0)), (1.0, "left", (0.75, 0.25))):  # iris 468.. right first
            lids = np.r_[topo.paths[f"{name}_eye_upper"], topo.paths[f"{name}_eye_lower"]]
            front = face[lids, 2].mean() - 0.8  # just behind the lid margins, so the lids are never pierced
            centre = np.array([side * EYE_X, EYE_Y, front - EYE_R])
            iris.append(self._add(_eyeball(centre), PARTS["eye"], (*tile, 0.25, 0.25)))
        lip_z = float(surface_depth(np.array([[0.0, MOUTH_Y]]))[0])
        self._add(_teeth(lip_z - 6.0, MOUTH_Y + 6.0, MOUTH_Y - 0.6), PARTS["teeth_upper"], (0.75, 0.5, 0.125, 0.25))
        self._add(_teeth(lip_z - 7.2, MOUTH_Y - 0.4, MOUTH_Y - 7.0), PARTS["teeth_lower"], (0.875, 0.5, 0.125, 0.25))
        self._add(_cavity(lip_z - 26.0), PARTS["mouth"], (0.75, 0.75, 0.25, 0.25))
        self.verts = np.concatenate(self.verts)
        self.tris = np.concatenate(self.tris)
        self.part = np.concatenate(self.part)
        self.uv = np.concatenate(self.uv)
        # MediaPipe iris order per eye: centre, then four points (468..472 right, 473..477 left)
        self.iris_index = np.concatenate(iris)

    def _add(self, mesh, part: int, tile: tuple) -> np.ndarray:
        """Append one part's (verts, tris, uv in [0,1]^2, landmark indices); uv goes into its atlas tile."""
        verts, tris, uv, landmarks = mesh
        offset = sum(len(v) for v in self.verts)
        self.verts.append(verts)
        self.tris.append(tris + offset)
        self.part.append(np.full(len(verts), part))
        self.uv.append(np.asarray(tile[:2]) + uv * np.asarray(tile[2:]))
        return landmarks + offset


def _polar_grid(n_rings: int, n_seg: int):
    """Triangles of a polar grid: vertex 0 the pole, then ``n_rings`` rings of ``n_seg`` vertices."""
    tris = [(0, 1 + s, 1 + (s + 1) % n_seg) for s in range(n_seg)]
    for r in range(n_rings - 1):
        a, b = 1 + r * n_seg, 1 + (r + 1) * n_seg
        for s in range(n_seg):
            s1 = (s + 1) % n_seg
            tris += [(a + s, b + s, b + s1), (a + s, b + s1, a + s1)]
    return np.asarray(tris, np.int64)


def _eyeball(centre: np.ndarray, n_seg: int = 16):
    """A sphere cap facing +z; ring 1 is the iris edge (its segments 0, 4, 8, 12 are iris landmarks)."""
    polar, n_rings = EYE_POLAR, len(EYE_POLAR)
    azim = np.linspace(0, 2 * np.pi, n_seg, endpoint=False)
    ring = np.stack([np.sin(polar)[:, None] * np.cos(azim), np.sin(polar)[:, None] * np.sin(azim),
                     np.repeat(np.cos(polar)[:, None], n_seg, 1)], -1).reshape(-1, 3)  # (R*S, 3)
    # wider than deep (x 1.35): the eye opening (25 mm) is wider than a 12 mm sphere at lid depth
    verts = centre + EYE_R * np.concatenate([[[0.0, 0.0, 1.0]], ring]) * np.array([1.35, 1.0, 1.0])
    rad = np.r_[0.0, np.repeat(polar / polar[-1], n_seg)] * 0.5  # atlas: iris in the middle of the tile
    ang = np.r_[0.0, np.tile(azim, n_rings)]
    uv = np.stack([0.5 + rad * np.cos(ang), 0.5 - rad * np.sin(ang)], 1)
    # landmark order: centre, then +x (temporal for the left eye), +y, -x, -y
    iris_local = np.array([0, 1, 1 + n_seg // 4, 1 + n_seg // 2, 1 + 3 * n_seg // 4])
    return verts, _polar_grid(n_rings, n_seg), uv, iris_local


def _teeth(z_front: float, y_top: float, y_bottom: float, n_cols: int = 14, n_rows: int = 3):
    """A strip on the dental arch (radius 26 mm): columns across, rows from y_top to y_bottom."""
    theta = np.linspace(-1.05, 1.05, n_cols)
    ys = np.linspace(y_top, y_bottom, n_rows)
    x, z = 26.0 * np.sin(theta), z_front - 26.0 * (1 - np.cos(theta))
    verts = np.stack([np.tile(x, n_rows), np.repeat(ys, n_cols), np.tile(z, n_rows)], 1)
    tris = []
    for r in range(n_rows - 1):
        for c in range(n_cols - 1):
            a, b = r * n_cols + c, (r + 1) * n_cols + c
            tris += [(a, b, b + 1), (a, b + 1, a + 1)]
    uv = np.stack([np.tile(np.linspace(0, 1, n_cols), n_rows), np.repeat(np.linspace(0, 1, n_rows), n_cols)], 1)
    return verts, np.asarray(tris, np.int64), uv, np.zeros(0, np.int64)


def _cavity(z_back: float, n_seg: int = 16, n_rings: int = 4):
    """The mouth cavity: a bowl (ellipse 64 x 44 mm) opening towards the lips, behind the teeth."""
    rad = np.linspace(0.25, 1.0, n_rings)
    azim = np.linspace(0, 2 * np.pi, n_seg, endpoint=False)
    ring = np.stack([32.0 * rad[:, None] * np.cos(azim), MOUTH_Y - 4 + 22.0 * rad[:, None] * np.sin(azim),
                     z_back + 14.0 * rad[:, None] ** 2 + 0 * azim], -1).reshape(-1, 3)
    verts = np.concatenate([[[0.0, MOUTH_Y - 4, z_back]], ring])
    uv = np.concatenate([[[0.5, 0.5]],
                         0.5 + 0.45 * np.stack([np.repeat(rad, n_seg) * np.tile(np.cos(azim), n_rings),
                                                np.repeat(rad, n_seg) * np.tile(np.sin(azim), n_rings)], 1)])
    return verts, _polar_grid(n_rings, n_seg), uv, np.zeros(0, np.int64)


# -------------------------------------------------------------------------------- region fields --

class _Fields:
    """Region weights in [0, 1] per vertex (harmonic over the face mesh, by position for the parts)."""

    def __init__(self, topo, verts: np.ndarray, part: np.ndarray):
        p = topo.paths
        self.verts, self.part = verts, part
        self.face = part == PARTS["face"]
        oval = np.r_[p["oval_left"], p["oval_right"]]
        upper_lip = np.r_[p["lips_inner_upper"][1:-1], p["lips_outer_upper"]]
        lower_lip = np.r_[p["lips_inner_lower"][1:-1], p["lips_outer_lower"][1:-1]]
        corners = np.array([61, 291, 78, 308])
        xy = verts[:N_MESH, :2]
        below = oval[xy[oval, 1] < MOUTH_Y - 22]
        above = np.r_[oval[xy[oval, 1] > -35], list(_NOSE_MIDLINE), p["right_eye_lower"], p["left_eye_lower"]]
        # jaw: 1 on the lower lip and the chin/jaw outline, 0 above the mouth, corners half way
        self.jaw = self._harmonic(topo, {**dict.fromkeys(below, 1.0), **dict.fromkeys(above, 0.0),
                                         **dict.fromkeys(upper_lip, 0.0), **dict.fromkeys(lower_lip, 1.0),
                                         **dict.fromkeys(corners, 0.5)})
        self.jaw[part == PARTS["teeth_lower"]] = 1.0
        self.jaw[part == PARTS["mouth"]] = 0.5
        far = np.r_[oval, p["right_eye_lower"], p["left_eye_lower"], list(_NOSE_MIDLINE)[:8]]
        mouth_pins = {**dict.fromkeys(far, 0.0), **dict.fromkeys(np.r_[upper_lip, lower_lip], 1.0)}
        self.mouth = self._harmonic(topo, mouth_pins)  # 1 on the lips, fading over cheeks and chin
        self.mouth[~self.face] = 0.0
        self.upper_lip = self._harmonic(topo, {**mouth_pins, **dict.fromkeys(lower_lip, 0.0)})
        self.lower_lip = self._harmonic(topo, {**mouth_pins, **dict.fromkeys(upper_lip, 0.0)})
        self.lip_set = np.zeros(len(verts), bool)
        self.lip_set[_enclosed(topo, np.r_[p["lips_inner_upper"], p["lips_inner_lower"]],
                               np.r_[p["lips_outer_upper"], p["lips_outer_lower"]])] = True
        self.lids = {side: self._lid(topo, side) for side in ("left", "right")}
        self.brows = {side: self._brow(topo, side) for side in ("left", "right")}

    def _harmonic(self, topo, pins: dict, clip: bool = True) -> np.ndarray:
        idx = np.fromiter(pins, int)
        out = np.zeros(len(self.verts))
        out[:N_MESH] = harmonic(topo.edges, N_MESH, idx, np.array([pins[i] for i in idx]))[:, 0]
        return np.clip(out, 0.0, 1.0) if clip else out

    def _lid(self, topo, side: str) -> np.ndarray:
        """Blink displacement in y (mm): each upper-lid vertex down onto the lower lid below it."""
        p, xy = topo.paths, self.verts[:N_MESH, :2]
        upper, lower = p[f"{side}_eye_upper"][1:-1], p[f"{side}_eye_lower"]
        order = np.argsort(xy[lower, 0])
        closed_y = np.interp(xy[upper, 0], xy[lower[order], 0], xy[lower[order], 1]) + 0.3
        pins = {**dict.fromkeys(np.r_[p[f"{side}_brow_lower"], p[f"{side}_brow_upper"], lower], 0.0),
                **dict(zip(upper.tolist(), (closed_y - xy[upper, 1]).tolist()))}
        other = "left" if side == "right" else "right"
        pins.update(dict.fromkeys(np.r_[p[f"{other}_eye_upper"], p[f"{other}_eye_lower"]], 0.0))
        pins.update(dict.fromkeys(np.r_[p["oval_left"], p["oval_right"], list(_NOSE_MIDLINE), _lip_loops(p)], 0.0))
        return self._harmonic(topo, pins, clip=False)

    def _brow(self, topo, side: str) -> np.ndarray:
        p = topo.paths
        pins = {**dict.fromkeys(np.r_[p[f"{side}_brow_lower"], p[f"{side}_brow_upper"]], 1.0),
                **dict.fromkeys(np.r_[p[f"{side}_eye_lower"], p[f"{side}_eye_upper"]], 0.0),
                **dict.fromkeys(np.r_[p["oval_left"], p["oval_right"], list(_NOSE_MIDLINE), _lip_loops(p)], 0.0)}
        return self._harmonic(topo, pins)


def _lip_loops(paths: dict) -> np.ndarray:
    return np.concatenate([paths[k] for k in ("lips_outer_upper", "lips_outer_lower",
                                              "lips_inner_upper", "lips_inner_lower")])


def _enclosed(topo, inner: np.ndarray, outer: np.ndarray) -> np.ndarray:
    """Vertices reachable from the inner loop without crossing the outer loop (both loops included)."""
    adj = [[] for _ in range(N_MESH)]
    for a, b in topo.edges:
        adj[a].append(b)
        adj[b].append(a)
    seen, stack, stop = set(inner.tolist()), list(inner.tolist()), set(outer.tolist())
    while stack:
        v = stack.pop()
        for w in adj[v]:
            if w not in seen and v not in stop:
                seen.add(w)
                stack.append(w)
    return np.array(sorted(seen | stop))


# ----------------------------------------------------------------------------- expression modes --

def _jaw_open(v, f):
    c, s = np.cos(JAW_ANGLE), np.sin(JAW_ANGLE)
    rel = v - JAW_HINGE
    rot = np.stack([rel[:, 0], c * rel[:, 1] - s * rel[:, 2], s * rel[:, 1] + c * rel[:, 2]], 1)  # open = chin down
    return (rot - rel) * f.jaw[:, None]


def _lip_round(v, f):
    d = np.zeros_like(v)
    d[:, 0] = -0.32 * v[:, 0] * f.mouth
    d[:, 2] = 7.0 * f.mouth ** 2
    d[:, 1] = -0.15 * (v[:, 1] - MOUTH_Y) * f.mouth  # lips thicken vertically less than they narrow
    return d


def _lip_spread(v, f):
    d = np.zeros_like(v)
    d[:, 0] = 0.22 * v[:, 0] * f.mouth
    d[:, 1] = -0.18 * (v[:, 1] - MOUTH_Y) * f.mouth + 1.5 * f.mouth * (np.abs(v[:, 0]) / 25.0)
    d[:, 2] = -2.5 * f.mouth * (np.abs(v[:, 0]) / 25.0)
    return d


def _lip_close(v, f):
    d = np.zeros_like(v)  # lips press together: upper down, lower up, both thin and roll in slightly
    d[:, 1] = -2.5 * f.upper_lip ** 2 + 2.5 * f.lower_lip ** 2
    d[:, 2] = -1.5 * f.mouth ** 2
    return d


def _lip_raise(sign: float, which: str):
    def mode(v, f):
        w = getattr(f, which) ** 2 * np.clip(1.2 - np.abs(v[:, 0]) / 30.0, 0.0, 1.0)
        d = np.zeros_like(v)
        d[:, 1] = sign * 5.0 * w
        d[:, 2] = 1.5 * w
        return d
    return mode


def _lip_funnel(v, f):
    d = _lip_round(v, f) * 0.6
    d[:, 1] += 2.5 * f.upper_lip ** 2 - 2.5 * f.lower_lip ** 2
    d[:, 2] += 4.0 * f.mouth ** 2
    return d


def _smile(side: float):
    def mode(v, f):
        corner = np.array([side * 22.0, MOUTH_Y])
        w = np.exp(-np.sum((v[:, :2] - corner) ** 2, 1) / (2 * 16.0 ** 2)) * f.face
        w = w + 0.4 * _gauss(v[:, 0], v[:, 1], side * 38, -30, 14, 10) * f.face  # cheek raise
        d = np.zeros_like(v)
        d[:, 0] = side * 6.0 * w
        d[:, 1] = 6.0 * w
        d[:, 2] = -2.0 * w
        return d
    return mode


def _mouth_shift(v, f):
    d = np.zeros_like(v)
    d[:, 0] = 6.0 * f.mouth
    return d


def _cheek_puff(v, f):
    d = np.zeros_like(v)
    d[:, 2] = 8.0 * (_gauss(v[:, 0], v[:, 1], 40, -55, 16, 16) + _gauss(v[:, 0], v[:, 1], -40, -55, 16, 16)) * f.face
    d[:, 0] = 3.0 * np.sign(v[:, 0]) * d[:, 2] / 8.0
    return d


def _blink(side: str):
    def mode(v, f):
        d = np.zeros_like(v)
        d[:, 1] = f.lids[side]  # upper lid meets the lower lid
        d[:, 2] = -0.15 * f.lids[side]  # and slides forward over the eyeball
        return d
    return mode


def _brow_raise(side: str):
    def mode(v, f):
        d = np.zeros_like(v)
        d[:, 1] = 6.0 * f.brows[side]
        return d
    return mode


def _brow_furrow(v, f):
    w = (f.brows["left"] + f.brows["right"]) * np.clip(1.3 - np.abs(v[:, 0]) / 40.0, 0, 1)
    d = np.zeros_like(v)
    d[:, 0] = -0.08 * v[:, 0] * w
    d[:, 1] = -3.5 * w
    return d


_EXPRESSIONS = {
    "jaw_open": _jaw_open, "lip_round": _lip_round, "lip_spread": _lip_spread, "lip_close": _lip_close,
    "upper_lip_raise": _lip_raise(1.0, "upper_lip"), "lower_lip_down": _lip_raise(-1.0, "lower_lip"),
    "lip_funnel": _lip_funnel, "smile_L": _smile(1.0), "smile_R": _smile(-1.0), "mouth_shift": _mouth_shift,
    "cheek_puff": _cheek_puff, "blink_L": _blink("left"), "blink_R": _blink("right"),
    "brow_raise_L": _brow_raise("left"), "brow_raise_R": _brow_raise("right"), "brow_furrow": _brow_furrow,
}


# ------------------------------------------------------------------------------- identity modes --

def _scale_mode(axis: int, amount: float, weight=None):
    """Scale one axis about the face centre by ``amount`` (fraction per unit coefficient)."""
    def mode(v, f):
        d = np.zeros_like(v)
        centre = np.array([0.0, -30.0, 40.0])[axis]
        w = 1.0 if weight is None else weight(v, f)
        d[:, axis] = amount * (v[:, axis] - centre) * w
        return d
    return mode


def _region_shift(cx, cy, sx, sy, dx=0.0, dy=0.0, dz=0.0, mirror=True, scale_x=0.0):
    def mode(v, f):
        x = np.abs(v[:, 0]) if mirror else v[:, 0]
        w = _gauss(x, v[:, 1], cx, cy, sx, sy)
        d = np.zeros_like(v)
        d[:, 0] = (dx * np.sign(v[:, 0]) + scale_x * v[:, 0]) * w
        d[:, 1] = dy * w
        d[:, 2] = dz * w
        return d
    return mode


def _eye_region(v, f):
    return _gauss(np.abs(v[:, 0]), v[:, 1], EYE_X, EYE_Y, 14.0, 10.0)


_IDENTITY = {
    "face_width": _scale_mode(0, 0.05),
    "face_height": _scale_mode(1, 0.045),
    "face_depth": _scale_mode(2, 0.06),
    "jaw_width": _scale_mode(0, 0.07, lambda v, f: np.clip((-40.0 - v[:, 1]) / 60.0, 0, 1)),
    "chin_length": lambda v, f: np.stack([0 * v[:, 0], -5.0 * np.clip((-60.0 - v[:, 1]) / 50.0, 0, 1), 0 * v[:, 0]], 1),
    "nose_length": _region_shift(0, -38, 14, 8, dy=-3.0),
    "nose_width": _region_shift(0, -40, 16, 7, scale_x=0.12),
    "nose_height": _region_shift(0, -28, 8, 16, dz=3.0),
    "eye_spacing": lambda v, f: np.stack([np.sign(v[:, 0]) * 2.0 * _eye_region(v, f), 0 * v[:, 1], 0 * v[:, 2]], 1),
    "eye_size": lambda v, f: _scale_mode(1, 0.08, lambda v2, f2: _eye_region(v2, f2) * (f2.part != PARTS["eye"]))(v, f),
    "mouth_width": _region_shift(0, MOUTH_Y, 30, 12, scale_x=0.08),
    "lip_thickness": lambda v, f: np.stack([0 * v[:, 0], 2.0 * f.upper_lip * f.lip_set - 2.0 * f.lower_lip * f.lip_set,
                                            1.0 * f.mouth], 1),
    "cheekbones": _region_shift(42, -22, 14, 12, dz=3.0, dx=2.0),
    "brow_height": lambda v, f: np.stack([0 * v[:, 0], 2.5 * (f.brows["left"] + f.brows["right"]), 0 * v[:, 2]], 1),
    "forehead_slope": lambda v, f: np.stack([0 * v[:, 0], 0 * v[:, 1],
                                             -5.0 * np.clip((v[:, 1] - 15.0) / 45.0, 0, 1) ** 2], 1),
    "face_roundness": _region_shift(55, -60, 18, 25, dx=3.0, dz=2.0),
}


def _lower_set(exp_basis: np.ndarray, part: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Lower face: vertices that the speech modes move by more than 0.3 mm, plus teeth and mouth."""
    speech = exp_basis[:, :, [EXP_NAMES.index(n) for n in SPEECH_MODES]]
    moved = np.linalg.norm(speech, axis=1).max(1) > 0.3
    lower = moved & (verts[:, 1] < -20.0) | np.isin(part, [PARTS["teeth_upper"], PARTS["teeth_lower"], PARTS["mouth"]])
    return np.flatnonzero(lower)


def _orient_outward(verts: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Flip the face surface's winding, if needed, so its normals point towards the camera (+z)."""
    face = tris[: len(mediapipe_topology().triangles)]
    a, b, c = verts[face[:, 0]], verts[face[:, 1]], verts[face[:, 2]]
    if np.cross(b - a, c - a)[:, 2].sum() < 0:
        tris = tris.copy()
        tris[: len(face)] = face[:, [0, 2, 1]]
    return tris
