"""ICT-FaceKit (MIT, USC ICT) into the neutral schema: 100 identity modes and 53 ARKit-named expression
blendshapes on a 26,719-vertex head (units: cm), with eyes, teeth and mouth socket.

Two inputs give the same arrays:
- the repository's own layout, its ``FaceXModel`` folder: ``generic_neutral_mesh.obj``,
  ``identityNNN.obj``, one ``<expression>.obj`` per name in ``vertex_indices.json`` (bases are the
  differences to the neutral mesh), and ``vertex_indices.json``'s ``idx_to_landmark_verts`` (iBUG-68);
- a converted ``.npz`` with ``mean (L,3)``, ``tris (F,3)``, ``id_basis (K,L,3)``, ``exp_basis (K,L,3)``,
  ``exp_names (K,)``, ``lmk68 (68,)``.

The blendshapes are strongly correlated (``mouthClose`` corrects ``jawOpen``): fit them with a
regulariser or in their PCA span. Expression weights live in [0, 1], identity coefficients ~ N(0, 1).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from src.geometry.face_models import regions
from src.geometry.face_models.schema import PARTS, FaceModelData

log = logging.getLogger(__name__)

FACE_VERTICES = 9409  # ICT's "face" area [0:9408]: face, scalp, ears, front of neck
# ICT-FaceKit's documented vertex ranges (checked against its landmarks: each eyeball is a 3 cm ball on
# its eye, teeth, gums and socket sit at the mouth). From 24591 on come lacrimal fluid, eye blend and
# occlusion shells and eyelashes: translucent overlays, whose triangles are dropped so an opaque
# rasteriser (PNCC, renders) does not paint over the eyes.
PART_RANGES = {"mouth": [(11248, 13293), (14062, 17038)], "teeth_upper": [(17039, 21450)], "eye": [(21451, 24590)]}
OVERLAYS_FROM = 24591
MOUTH_MODES = ("jaw", "mouth", "cheekPuff")


def load_ict(path: str | Path, require_all: bool = True) -> FaceModelData:
    """ICT-FaceKit from its ``FaceXModel`` folder or a converted ``.npz``.

    ``require_all``: with the folder layout, every expression named in ``vertex_indices.json`` and at
    least one ``identityNNN.obj`` must exist; set False to load whatever subset is there.
    """
    path = Path(path)
    if path.is_dir():
        mean, tris, id_basis, exp_basis, names, lmk68 = _read_folder(path, require_all)
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            mean, tris, lmk68 = npz["mean"], npz["tris"], npz["lmk68"]
            id_basis, exp_basis = npz["id_basis"], npz["exp_basis"]
            names = [str(n) for n in npz["exp_names"]]
    else:
        raise ValueError(f"ICT-FaceKit path must be its FaceXModel folder or a converted .npz, got {path}")
    return _to_schema(mean, tris, id_basis, exp_basis, names, lmk68)


def _read_folder(folder: Path, require_all: bool):
    index_file = folder / "vertex_indices.json"
    neutral_file = folder / "generic_neutral_mesh.obj"
    for needed in (index_file, neutral_file):
        if not needed.is_file():
            raise FileNotFoundError(f"ICT-FaceKit folder {folder} lacks {needed.name} "
                                    f"(expected the repository's FaceXModel/)")
    indices = json.loads(index_file.read_text())
    mean, tris = read_obj(neutral_file)
    id_files = sorted(folder.glob("identity[0-9][0-9][0-9].obj"))
    names = [n for n in indices["expressions"] if (folder / f"{n}.obj").is_file()]
    missing = sorted(set(indices["expressions"]) - set(names))
    if require_all and (missing or not id_files):
        raise FileNotFoundError(f"ICT-FaceKit folder {folder} is incomplete: missing expressions {missing[:5]}"
                                f"{'...' if len(missing) > 5 else ''} ({len(missing)}), "
                                f"identity files found: {len(id_files)}")
    if missing:
        log.warning("ICT-FaceKit: loading %d of %d expressions (missing %d)", len(names), len(indices["expressions"]),
                    len(missing))
    id_basis = np.stack([read_obj(f)[0] - mean for f in id_files]) if id_files else np.zeros((0,) + mean.shape)
    exp_basis = np.stack([read_obj(folder / f"{n}.obj")[0] - mean for n in names])
    return mean, tris, id_basis, exp_basis, names, np.asarray(indices["idx_to_landmark_verts"])


def read_obj(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) float32 and triangles (F, 3) int64 (quads split, 1-based indices converted)."""
    verts, faces = [], []
    with open(path) as fh:
        for line in fh:
            if line.startswith("v "):
                verts.append(line.split()[1:4])
            elif line.startswith("f "):
                idx = [int(tok.split("/")[0]) - 1 for tok in line.split()[1:]]
                faces += [(idx[0], idx[k], idx[k + 1]) for k in range(1, len(idx) - 1)]
    if not verts:
        raise ValueError(f"{path} holds no vertices: not an OBJ mesh")
    return np.asarray(verts, np.float32), np.asarray(faces, np.int64).reshape(-1, 3)


def _to_schema(mean, tris, id_basis, exp_basis, names, lmk68) -> FaceModelData:
    mean = np.asarray(mean, np.float32)
    id_basis = np.asarray(id_basis, np.float32).transpose(1, 2, 0)  # (K, L, 3) -> (L, 3, K)
    exp_basis = np.asarray(exp_basis, np.float32).transpose(1, 2, 0)
    lmk68 = np.asarray(lmk68, np.int64)
    face = np.arange(FACE_VERTICES)
    tris = np.asarray(tris, np.int64)
    tris = tris[(tris < OVERLAYS_FROM).all(1)]
    mouth_modes = [i for i, n in enumerate(names) if n.startswith(MOUTH_MODES)]
    moved = np.linalg.norm(exp_basis[:, :, mouth_modes], axis=1).max(1) > 0.03 if mouth_modes else None  # 0.3 mm
    lower = regions.lower_set(mean, lmk68, face, moved)
    return FaceModelData(
        name="ict-facekit", mean=mean, id_basis=id_basis, exp_basis=exp_basis, triangles=tris, lmk68=lmk68,
        lower=lower, upper=np.setdiff1d(np.arange(len(mean)), lower), lip=regions.lip_set(mean, lmk68, face, 1.0),
        mouth_pairs=regions.mouth_pairs(lmk68), exp_names=names, units_to_mm=10.0, part=_parts(len(mean)),
    )


def _parts(n: int) -> np.ndarray | None:
    """Part labels from ``PART_RANGES`` for the full 26,719-vertex head; None for another vertex count."""
    if n != 26719:
        return None
    part = np.full(n, PARTS["face"])
    for name, ranges in PART_RANGES.items():
        for lo, hi in ranges:
            part[lo:hi + 1] = PARTS[name]
    part[OVERLAYS_FROM:] = PARTS["other"]
    return part
