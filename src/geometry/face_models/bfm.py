"""Basel Face Model as prepared by Deep3DFaceRecon (``BFM_model_front.mat``; the paper's model), into the
neutral schema. User-supplied: never shipped, never downloaded.

The .mat holds ``meanshape (1, 3N)``, ``idBase (3N, 80)``, ``exBase (3N, 64)``, ``tri (F, 3)`` and
``keypoints (1, 68)`` with 1-based (MATLAB) indices; coordinates interleave x, y, z per vertex. As in
Deep3DFaceRecon, the mean shape is centred. Units are decimetres (0.1 m): ``units_to_mm = 100``. The expression
basis is a PCA basis (columns scaled by their standard deviation): coefficients are signed and unbounded
(``exp_bounded=False``: the fit does not clamp them to [0, 1] as it does blendshape weights).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from src.geometry.face_models import regions
from src.geometry.face_models.schema import FaceModelData

REQUIRED = ("meanshape", "idBase", "exBase", "tri", "keypoints")


def load_bfm(path: str | Path) -> FaceModelData:
    """Read ``BFM_model_front.mat`` (Deep3DFaceRecon layout, 1-based indices) into the schema."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BFM file not found: {path} (Deep3DFaceRecon's BFM/BFM_model_front.mat; "
                                "see the README on real weights and models)")
    mat = scipy.io.loadmat(str(path))
    missing = [k for k in REQUIRED if k not in mat]
    if missing:
        raise ValueError(f"{path} is not a Deep3DFaceRecon BFM_model_front.mat: missing fields {missing}")
    mean = mat["meanshape"].astype(np.float32).reshape(-1, 3)  # (N, 3), interleaved xyz
    mean = mean - mean.mean(0, keepdims=True)
    n = len(mean)
    id_basis = mat["idBase"].astype(np.float32).reshape(n, 3, -1)  # (3N, K) -> (N, 3, K)
    exp_basis = mat["exBase"].astype(np.float32).reshape(n, 3, -1)
    tris = _one_based(mat["tri"], n, "tri")
    lmk68 = _one_based(mat["keypoints"], n, "keypoints").reshape(-1)
    everything = np.arange(n)
    lower = regions.lower_set(mean, lmk68, everything)
    return FaceModelData(
        name="bfm-deep3dfacerecon", mean=mean, id_basis=id_basis, exp_basis=exp_basis, triangles=tris, lmk68=lmk68,
        lower=lower, upper=np.setdiff1d(everything, lower), lip=regions.lip_set(mean, lmk68, everything, 0.1),
        mouth_pairs=regions.mouth_pairs(lmk68), exp_names=[f"bfm_exp_{i:02d}" for i in range(exp_basis.shape[2])],
        units_to_mm=100.0, exp_bounded=False,
    )


def _one_based(arr: np.ndarray, n: int, key: str) -> np.ndarray:
    """MATLAB 1-based indices -> 0-based, checking the range so a 0-based file is caught, not shifted."""
    arr = np.asarray(arr).astype(np.int64)
    if arr.min() < 1 or arr.max() > n:
        raise ValueError(f"BFM field '{key}' must hold 1-based vertex indices in [1, {n}], "
                         f"got [{arr.min()}, {arr.max()}]")
    return arr - 1
