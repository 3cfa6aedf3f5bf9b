"""The neutral face-model schema: every loader (procedural, ICT-FaceKit, BFM, a user's own) produces
one ``FaceModelData``, which is saved to and loaded from a single ``.npz`` with these keys.

| key | shape | meaning |
| --- | --- | --- |
| mean | (L, 3) float32 | mean shape, model units, x to the subject's left, y up, z to the camera |
| id_basis | (L, 3, K_id) float32 | identity basis (coefficients alpha) |
| exp_basis | (L, 3, K_exp) float32 | expression basis (coefficients beta) |
| triangles | (F, 3) int64 | 0-based vertex indices |
| lmk68 | (68,) int64 | iBUG-68 landmark vertices |
| lmk478 | (478,) int64 | MediaPipe face-mesh correspondence, -1 where the model has none (optional) |
| lower, upper, lip | (n,) int64 | vertex index sets: lower face (jaw, cheeks, lips, chin), the rest, lips |
| mouth_pairs | (P, 2) int64 | (upper inner-lip vertex, lower inner-lip vertex) pairs: the mouth opening |
| exp_names | (K_exp,) str | expression mode names |
| exp_bounded | () bool | True (default): blendshape weights in [0, 1], bounded by the fit; False: PCA, signed (BFM) |
| units_to_mm | () float | millimetres per model unit (errors are reported in mm) |
| uv | (L, 2) float32 | texture coordinates in [0, 1], v down (optional) |
| part | (L,) int64 | part label per vertex, see ``PARTS`` (optional) |
| name | () str | model name, with a version for the procedural model |

PNCC colours are not stored: they are always the normalised mean shape (``pncc_colors``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

PARTS = {"face": 0, "eye": 1, "teeth_upper": 2, "teeth_lower": 3, "mouth": 4, "other": 5}
_OPTIONAL_KEYS = ("lmk478", "exp_bounded", "uv", "part")
_INDEX_KEYS = ("lmk68", "lower", "upper", "lip")


@dataclass
class FaceModelData:
    """Arrays of one linear face model in the neutral schema (see the module docstring)."""

    name: str
    mean: np.ndarray
    id_basis: np.ndarray
    exp_basis: np.ndarray
    triangles: np.ndarray
    lmk68: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    lip: np.ndarray
    mouth_pairs: np.ndarray
    exp_names: list[str]
    units_to_mm: float
    lmk478: np.ndarray | None = None
    exp_bounded: bool = True
    uv: np.ndarray | None = None
    part: np.ndarray | None = None
    extras: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, np.float32)
        self.id_basis = np.asarray(self.id_basis, np.float32)
        self.exp_basis = np.asarray(self.exp_basis, np.float32)
        self.triangles = np.asarray(self.triangles, np.int64)
        self.mouth_pairs = np.asarray(self.mouth_pairs, np.int64).reshape(-1, 2)
        for key in _INDEX_KEYS:
            setattr(self, key, np.asarray(getattr(self, key), np.int64).reshape(-1))
        if self.lmk478 is not None:
            self.lmk478 = np.asarray(self.lmk478, np.int64).reshape(-1)
        self.exp_names = [str(n) for n in self.exp_names]
        self.exp_bounded = bool(self.exp_bounded)
        self.validate()

    @property
    def n_vertices(self) -> int:
        return self.mean.shape[0]

    def validate(self) -> None:
        """Raise a ValueError naming the first array that breaks the schema."""
        n = self.n_vertices
        _expect(self.mean.ndim == 2 and self.mean.shape[1] == 3, "mean", "(L, 3)", self.mean.shape)
        for key in ("id_basis", "exp_basis"):
            arr = getattr(self, key)
            _expect(arr.ndim == 3 and arr.shape[:2] == (n, 3), key, f"({n}, 3, K)", arr.shape)
        _expect(self.triangles.ndim == 2 and self.triangles.shape[1] == 3, "triangles", "(F, 3)", self.triangles.shape)
        _expect(len(self.exp_names) == self.exp_basis.shape[2], "exp_names", f"{self.exp_basis.shape[2]} names",
                len(self.exp_names))
        _expect(self.lmk68.shape == (68,), "lmk68", "(68,)", self.lmk68.shape)
        if self.lmk478 is not None:
            _expect(self.lmk478.shape == (478,), "lmk478", "(478,)", self.lmk478.shape)
        for key in ("triangles", "mouth_pairs", *_INDEX_KEYS):
            arr = getattr(self, key)
            if arr.size and (arr.min() < 0 or arr.max() >= n):
                raise ValueError(f"{key} holds vertex indices outside [0, {n}): min {arr.min()}, max {arr.max()}")
        if self.lmk478 is not None and self.lmk478.max() >= n:
            raise ValueError(f"lmk478 holds vertex indices >= {n}")
        if self.uv is not None:
            _expect(self.uv.shape == (n, 2), "uv", f"({n}, 2)", self.uv.shape)
        if self.part is not None:
            _expect(self.part.shape == (n,), "part", f"({n},)", self.part.shape)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the schema ``.npz`` atomically (temporary name, then rename)."""
        path = Path(path)
        arrays = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extras"}
        arrays = {k: np.asarray(v) for k, v in arrays.items() if v is not None}
        arrays["exp_names"] = np.asarray(self.exp_names, dtype=str)
        arrays.update({f"extra_{k}": np.asarray(v) for k, v in self.extras.items()})
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FaceModelData":
        """Read a schema ``.npz`` written by ``save`` (or by hand with the same keys)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"face model file not found: {path} (expected a schema .npz, see "
                                    "src/geometry/face_models/schema.py)")
        with np.load(path, allow_pickle=False) as npz:
            names = {f.name for f in fields(cls)} - {"extras"}
            missing = [k for k in names if k not in npz.files and k not in _OPTIONAL_KEYS]
            if missing:
                raise ValueError(f"{path} is not a face-model schema npz: missing keys {sorted(missing)}")
            kwargs = {k: npz[k] for k in names if k in npz.files}
            kwargs["name"] = str(kwargs["name"])
            kwargs["units_to_mm"] = float(kwargs["units_to_mm"])
            if "exp_bounded" in kwargs:
                kwargs["exp_bounded"] = bool(kwargs["exp_bounded"])
            kwargs["extras"] = {k[len("extra_"):]: npz[k] for k in npz.files if k.startswith("extra_")}
        return cls(**kwargs)


def _expect(ok: bool, key: str, expected: str, got) -> None:
    if not ok:
        raise ValueError(f"face model array '{key}' must be {expected}, got {got}")
