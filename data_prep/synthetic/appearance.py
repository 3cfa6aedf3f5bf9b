"""What a synthetic speaker looks like: a painted texture for the procedural face model, vertex colours for
other models, and a head (skull with hair, neck) behind the face.

The procedural model's texture atlas (``procedural._face_uv`` and the part tiles) is painted in UV space
with PIL: skin with low- and high-frequency variation and blush, lips, brows drawn as hair strokes,
lash lines and lid creases, nostrils, eyeballs (sclera, iris, pupil, highlight), teeth with gums, and the
mouth cavity with a tongue. Detail matters: the face detector must find these faces like real ones.
"""
from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from data_prep.synthetic.persona import Appearance
from src.geometry.face_models.mediapipe_topology import mediapipe_topology
from src.geometry.face_models.procedural import IRIS_UV_RADIUS
from src.geometry.face_models.schema import PARTS

ATLAS = 512


def paint_texture(uv: np.ndarray, appearance: Appearance) -> np.ndarray:
    """(ATLAS, ATLAS, 3) float32 texture for the procedural model's atlas, from its (L, 2) uv."""
    rng = np.random.default_rng(appearance.texture_seed)
    skin = np.asarray(appearance.skin)
    base = _skin_field(rng, skin)
    img = Image.fromarray(_to_u8(base))
    draw = ImageDraw.Draw(img, "RGBA")
    paths = mediapipe_topology().paths
    px = uv * ATLAS  # (L, 2) texture pixels
    _paint_blush(img, px, paths, appearance.blush)
    _paint_lips(img, px, paths, appearance.lips)
    for side in ("left", "right"):
        _paint_brow(draw, px, paths, side, appearance.brows, appearance.brow_thickness, rng)
        _paint_eyelids(draw, px, paths, side, skin)
    for nostril in (98, 327):
        cx, cy = px[nostril] * 0.6 + px[2] * 0.4
        draw.ellipse([cx - 4, cy - 2.5, cx + 4, cy + 2.5], fill=_rgba(skin * 0.3, 200))
    for tile_v in (0.0, 0.25):  # the two eyeball tiles (right eye, left eye)
        _paint_eye(draw, 0.75 * ATLAS, tile_v * ATLAS, appearance.iris)
    _paint_teeth(draw, skin)
    _paint_mouth(draw)
    return np.asarray(img, np.float32) / 255.0


def _skin_field(rng: np.random.Generator, skin: np.ndarray) -> np.ndarray:
    low = np.asarray(Image.fromarray(_to_u8(rng.random((16, 16, 3)))).resize((ATLAS, ATLAS), Image.BICUBIC),
                     np.float32) / 255
    high = rng.standard_normal((ATLAS, ATLAS, 1)).astype(np.float32)
    return np.clip(skin * (1.0 + 0.08 * (low - 0.5)) + 0.015 * high, 0, 1)


def _paint_blush(img: Image.Image, px, paths, blush: float) -> None:
    mask = Image.new("L", img.size, 0)
    d = ImageDraw.Draw(mask)
    for corner, eye in ((61, 33), (291, 263)):
        cx, cy = 0.5 * px[corner] + 0.5 * px[eye]
        d.ellipse([cx - 28, cy - 20, cx + 28, cy + 20], fill=int(120 * blush))
    red = Image.new("RGB", img.size, (200, 90, 90))
    img.paste(Image.composite(red, img, mask.filter(ImageFilter.GaussianBlur(14))), (0, 0))


def _paint_lips(img: Image.Image, px, paths, colour) -> None:
    outer = np.r_[paths["lips_outer_upper"], paths["lips_outer_lower"][1:-1]]
    mask = Image.new("L", img.size, 0)
    ImageDraw.Draw(mask).polygon([tuple(p) for p in px[outer]], fill=255)
    lips = Image.new("RGB", img.size, tuple(int(255 * c) for c in colour))
    img.paste(Image.composite(lips, img, mask.filter(ImageFilter.GaussianBlur(1.2))), (0, 0))
    inner = np.r_[paths["lips_inner_upper"], paths["lips_inner_lower"][1:-1]]
    ImageDraw.Draw(img, "RGBA").line([tuple(p) for p in px[inner]] + [tuple(px[inner[0]])],
                                     fill=_rgba(np.asarray(colour) * 0.45, 220), width=2)


def _paint_brow(draw, px, paths, side, colour, thickness, rng) -> None:
    lower, upper = px[paths[f"{side}_brow_lower"]], px[paths[f"{side}_brow_upper"]]
    mid = 0.5 * (lower + upper)
    centre = np.stack([np.interp(np.linspace(0, 4, 40), np.arange(5), mid[:, k]) for k in range(2)], 1)
    width = thickness * 2.4 * np.interp(np.linspace(0, 1, 40), [0, 0.3, 1], [0.6, 1.0, 0.8])
    for (cx, cy), w in zip(centre, width):  # short slanted hair strokes along the brow
        for _ in range(6):
            ox, oy = rng.normal(0, 1.5), rng.uniform(-w / 2, w / 2)
            draw.line([cx + ox, cy + oy, cx + ox + rng.uniform(2, 4), cy + oy - rng.uniform(0.5, 2)],
                      fill=_rgba(np.asarray(colour), 170), width=1)
    draw.line([tuple(p) for p in centre], fill=_rgba(np.asarray(colour), 90), width=int(max(2, width.mean())))


def _paint_eyelids(draw, px, paths, side, skin) -> None:
    upper = [tuple(p) for p in px[paths[f"{side}_eye_upper"]]]
    draw.line(upper, fill=(25, 18, 15, 235), width=3)  # lashes
    crease = [(x, y - 6) for x, y in upper[1:-1]]
    draw.line(crease, fill=_rgba(skin * 0.7, 120), width=2)
    lower = [tuple(p) for p in px[paths[f"{side}_eye_lower"]]]
    draw.line(lower, fill=_rgba(skin * 0.6, 140), width=1)


def _paint_eye(draw, x0: float, y0: float, iris) -> None:
    """One eyeball tile, centred on the iris; the iris edge is ring 1 of ``procedural._eyeball``."""
    tile = 0.25 * ATLAS
    draw.rectangle([x0, y0, x0 + tile, y0 + tile], fill=(236, 232, 226))
    cx, cy, r = x0 + tile / 2, y0 + tile / 2, 0.5 * tile * IRIS_UV_RADIUS
    draw.ellipse([cx - r * 1.05, cy - r * 1.05, cx + r * 1.05, cy + r * 1.05], fill=(40, 35, 30))
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_rgba(np.asarray(iris), 255))
    draw.ellipse([cx - r * 0.45, cy - r * 0.45, cx + r * 0.45, cy + r * 0.45], fill=(8, 8, 8))
    draw.ellipse([cx - r * 0.55, cy - r * 0.6, cx - r * 0.25, cy - r * 0.3], fill=(250, 250, 250))


def _paint_teeth(draw, skin) -> None:
    x0, y0, w, h = 0.75 * ATLAS, 0.5 * ATLAS, 0.125 * ATLAS, 0.25 * ATLAS
    for k, gum_top in ((0, True), (1, False)):
        left = x0 + k * w
        draw.rectangle([left, y0, left + w, y0 + h], fill=(238, 234, 220))
        gum = [left, y0, left + w, y0 + 0.25 * h] if gum_top else [left, y0 + 0.75 * h, left + w, y0 + h]
        draw.rectangle(gum, fill=_rgba(np.array([0.8, 0.4, 0.42]), 255))
        for j in range(1, 12):
            x = left + j * w / 12
            draw.line([x, y0 + 0.2 * h, x, y0 + 0.8 * h], fill=(170, 160, 150), width=1)


def _paint_mouth(draw) -> None:
    x0, y0, t = 0.75 * ATLAS, 0.75 * ATLAS, 0.25 * ATLAS
    draw.rectangle([x0, y0, x0 + t, y0 + t], fill=(60, 14, 16))
    draw.ellipse([x0 + 0.15 * t, y0 + 0.55 * t, x0 + 0.85 * t, y0 + 0.95 * t], fill=(150, 60, 65))


def vertex_colours(face_model, appearance: Appearance) -> np.ndarray:
    """(L, 3) per-vertex albedo for face models without a painted texture: skin, lips, and the parts
    the model labels (eyes white, teeth, dark mouth)."""
    colours = np.tile(np.asarray(appearance.skin, np.float32), (face_model.n_vertices, 1))
    colours[face_model.lip.numpy()] = appearance.lips
    if face_model.part is not None:
        part = face_model.part.numpy()
        colours[part == PARTS["eye"]] = _eyeball_colours(face_model.mean.numpy(), part == PARTS["eye"], appearance.iris)
        colours[np.isin(part, [PARTS["teeth_upper"], PARTS["teeth_lower"]])] = (0.93, 0.91, 0.85)
        colours[part == PARTS["mouth"]] = (0.25, 0.06, 0.06)
    return colours


@functools.lru_cache(maxsize=2)
def model_albedo(spec: str) -> np.ndarray | None:
    """(L, 3) albedo in [0, 1] that a face-model file carries, or None: a Deep3DFaceRecon BFM's ``meantex``
    ((1, 3L), rgb interleaved, 0-255), for the spec ``bfm:PATH``."""
    kind, _, path = str(spec).partition(":")
    if kind != "bfm":
        return None
    import scipy.io

    mat = scipy.io.loadmat(path, variable_names=["meantex"])
    if "meantex" not in mat:
        return None
    return np.clip(np.asarray(mat["meantex"], np.float32).reshape(-1, 3) / 255.0, 0.0, 1.0)


def _eyeball_colours(mean: np.ndarray, is_eye: np.ndarray, iris) -> np.ndarray:
    """Sclera, iris and pupil on eyeball vertices, by the angle from each eyeball's forward (+z) axis."""
    eye = mean[is_eye]
    colours = np.tile(np.array([0.92, 0.9, 0.88], np.float32), (len(eye), 1))
    for side in (eye[:, 0] < 0, eye[:, 0] >= 0):
        centre = eye[side].mean(0)
        cos = ((eye[side] - centre) / np.linalg.norm(eye[side] - centre, axis=1, keepdims=True))[:, 2]
        colours[np.flatnonzero(side)[cos > 0.9]] = iris
        colours[np.flatnonzero(side)[cos > 0.975]] = (0.03, 0.03, 0.03)
    return colours


def head_mesh(appearance: Appearance, n_lat: int = 14, n_lon: int = 24):
    """Skull (hair on top and at the back) and neck behind the procedural face, in its mm frame.

    Returns verts (V, 3), tris (F, 3), colours (V, 3). The skull's front stays behind the face surface.
    """
    lat = np.linspace(0.05, np.pi - 0.05, n_lat)
    lon = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    sphere = np.stack([np.sin(lat)[:, None] * np.sin(lon), np.cos(lat)[:, None] + 0 * lon,
                       np.sin(lat)[:, None] * np.cos(lon)], -1).reshape(-1, 3)
    skull = sphere * np.array([80.0, 102.0, 86.0]) + np.array([0.0, -8.0, -32.0])
    neck_h = np.linspace(-70.0, -165.0, 5)
    neck = np.stack([48 * np.sin(lon)[None] + 0 * neck_h[:, None], neck_h[:, None] + 0 * lon,
                     -30 + 44 * np.cos(lon)[None] + 0 * neck_h[:, None]], -1).reshape(-1, 3)
    verts = np.concatenate([skull, neck])
    tris = np.concatenate([_grid_tris(n_lat, n_lon), _grid_tris(len(neck_h), n_lon) + len(skull)])
    skin = np.asarray(appearance.skin) * 0.92
    hair = (verts[:, 1] > 38.0) | (verts[:, 2] < -70.0) & (verts[:, 1] > -60.0)
    colours = np.where(hair[:, None], np.asarray(appearance.hair), skin)
    colours[len(skull):] = skin * 0.85
    return verts.astype(np.float32), tris, colours.astype(np.float32)


def _grid_tris(rows: int, cols: int) -> np.ndarray:
    tris = []
    for r in range(rows - 1):
        for c in range(cols):
            a, b, c1 = r * cols + c, (r + 1) * cols + c, (c + 1) % cols
            tris += [(a, b, (r + 1) * cols + c1), (a, (r + 1) * cols + c1, r * cols + c1)]
    return np.asarray(tris, np.int64)


def _to_u8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def _rgba(colour: np.ndarray, alpha: int) -> tuple[int, int, int, int]:
    c = np.clip(colour, 0, 1) * 255
    return (int(c[0]), int(c[1]), int(c[2]), alpha)
