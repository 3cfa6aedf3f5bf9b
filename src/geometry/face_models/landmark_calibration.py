"""Landmark embedding calibration: a fixed per-landmark 3D correction for one (face model, landmark
detector) pair.

A face model's landmark vertices are where the model *designs* each landmark; a detector places the same
landmark where *it* learned to. For the procedural model and MediaPipe's 478 landmarks the two differ by a
systematic field (the detector's learned semantics, not noise and not identity), so fitting detections to
the raw vertices leaves ~3 px of residual at 256 px and biases the fit. The calibration is an offset
``(N, 3)`` in model units, in the canonical (pre-pose) model frame, added to the landmark vertices where a
fit compares them with detections: it rotates with the head. It may also depend on the expression,
linearly: ``d_n(beta) = offset_n + expression_n @ beta`` with ``expression`` ``(N, 3, K_exp)``, because the
detector's semantics move with the face (on the procedural model, MediaPipe's lip contour follows the
visible mouth opening, not the lip vertices: a static offset left the fitted mouth opening at 0.62 of the
truth, the expression-dependent one at 0.83; docs/design.md, "Landmark calibration"). Since the model is
linear in beta this is a per-landmark correction of the expression basis where the fit compares it with
detections. It never changes the mesh (renders, the synthetic corpus and the training targets use the raw
vertices), and it does not apply to landmarks that are the model's own vertices (the synthetic corpus'
ground-truth sidecar).

Files: ``calibration/<face model name>_<landmark set>.npy`` (the (N, 3) float32 offset, or (N, 3, 1 + K_exp):
the offset, then the expression terms) and a ``.json``
beside it (the face model name *with its version* it was made for, the landmark set, the detector, and how
it was made). ``make calibrate-landmarks`` writes them, from a synthetic corpus only.

Which pairs have one: the face-model families listed in ``CALIBRATED`` (the name before ``-vN``), for that
landmark set. For them a calibration is required: a missing file, or one made for another version of the
model, is an error naming the command to run. Every other model / landmark set (ICT-FaceKit, BFM, any
iBUG-68 fit) has none, i.e. a zero offset: their landmark vertices are annotations of the detector's
semantics already.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

CALIBRATION_DIR = Path(__file__).resolve().parent / "calibration"
# landmark set -> face-model families whose correspondence to it is designed rather than annotated
CALIBRATED = {"mp478": ("procedural",)}
COMMAND = "make calibrate-landmarks"  # the landmark calibration tool of the data preparation (README.md)


@dataclass
class LandmarkCalibration:
    """A per-landmark offset (N, 3), model units, canonical frame, for ``face_model`` (name with version)
    and the landmark set ``landmarks``; ``meta`` records how it was made."""

    face_model: str
    landmarks: str
    offset: np.ndarray
    meta: dict = field(default_factory=dict)
    expression: np.ndarray | None = None  # (N, 3, K_exp): the offset's change per unit of each expression mode

    def __post_init__(self) -> None:
        self.offset = np.asarray(self.offset, np.float32)
        if self.offset.ndim != 2 or self.offset.shape[1] != 3 or not np.isfinite(self.offset).all():
            raise ValueError(f"a landmark calibration offset must be a finite (N, 3) array, got {self.offset.shape}")
        if self.expression is not None:
            self.expression = np.asarray(self.expression, np.float32)
            if (self.expression.ndim != 3 or self.expression.shape[:2] != self.offset.shape
                    or not np.isfinite(self.expression).all()):
                raise ValueError(f"a landmark calibration's expression terms must be a finite (N, 3, K_exp) array "
                                 f"with N = {len(self.offset)}, got {self.expression.shape}")

    @property
    def array(self) -> np.ndarray:
        """What the .npy file holds: (N, 3), or (N, 3, 1 + K_exp) with the expression terms."""
        if self.expression is None:
            return self.offset
        return np.concatenate([self.offset[..., None], self.expression], axis=-1)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``PATH.npy`` (the offset) and ``PATH.json`` (model, landmark set, provenance); either suffix
        or none may be given. Both are written under temporary names, then renamed."""
        npy, meta = _paths(path)
        npy.parent.mkdir(parents=True, exist_ok=True)
        info = {"face_model": self.face_model, "landmarks": self.landmarks, "shape": list(self.array.shape),
                **self.meta}
        tmp_npy, tmp_json = npy.with_name(f".{npy.name}.tmp"), meta.with_name(f".{meta.name}.tmp")
        with open(tmp_npy, "wb") as f:
            np.save(f, self.array)
        tmp_json.write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
        os.replace(tmp_npy, npy)
        os.replace(tmp_json, meta)
        return npy

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LandmarkCalibration":
        """Read a calibration written by ``save`` (``PATH.npy`` + ``PATH.json``)."""
        npy, meta = _paths(path)
        for p in (npy, meta):
            if not p.is_file():
                raise FileNotFoundError(f"landmark calibration file not found: {p} (written by `{COMMAND}`)")
        info = json.loads(meta.read_text())
        array = np.load(npy, allow_pickle=False)
        missing = {"face_model", "landmarks"} - set(info)
        if missing:
            raise ValueError(f"{meta} is not a landmark calibration: missing {sorted(missing)}")
        extra = {k: v for k, v in info.items() if k not in ("face_model", "landmarks", "shape")}
        if array.ndim == 3:  # (N, 3, 1 + K_exp)
            return cls(str(info["face_model"]), str(info["landmarks"]), array[..., 0], extra, array[..., 1:])
        return cls(str(info["face_model"]), str(info["landmarks"]), array, extra)

    def check(self, face_model: str, landmarks: str, n_landmarks: int, source: str = "") -> "LandmarkCalibration":
        """Itself, after checking it was made for this face model (name and version), landmark set and
        landmark count; a ValueError naming the mismatch otherwise."""
        where = f" ({source})" if source else ""
        if self.face_model != face_model:
            raise ValueError(f"landmark calibration{where} was made for face model {self.face_model!r}, not "
                             f"{face_model!r}: the model changed (its VERSION), re-run `{COMMAND}`")
        if self.landmarks != landmarks:
            raise ValueError(f"landmark calibration{where} is for landmarks={self.landmarks!r}, "
                             f"the fit uses {landmarks!r}")
        if self.offset.shape != (n_landmarks, 3):
            raise ValueError(f"landmark calibration{where} has an offset {self.offset.shape}, "
                             f"expected ({n_landmarks}, 3)")
        return self


def family(face_model: str) -> str:
    """The model name without its version: ``procedural-v2`` -> ``procedural``."""
    match = re.fullmatch(r"(.+)-v\d+", face_model)
    return match.group(1) if match else face_model


def packaged_path(face_model: str, landmarks: str) -> Path:
    """Where the calibration of this model version and landmark set lives (``.npy``; ``.json`` beside it)."""
    return CALIBRATION_DIR / f"{face_model}_{landmarks}.npy"


def needs_calibration(face_model: str, landmarks: str) -> bool:
    """Whether fitting this landmark set's detections to this model needs a calibration (see module)."""
    return family(face_model) in CALIBRATED.get(landmarks, ())


def landmark_offset(face_model: str, landmarks: str, n_landmarks: int, calibration: str | None = "auto") -> np.ndarray:
    """(N, 3) float32 offset for fitting detections of ``landmarks`` to ``face_model``.

    ``calibration``: ``"auto"``: the packaged calibration where the pair needs one (required then), zero
    otherwise; ``None``: zero (landmarks that are the model's own vertices, e.g. synthetic ground truth);
    a path: that calibration, which must be for this model version and landmark set."""
    cal = resolve(face_model, landmarks, n_landmarks, calibration)
    return np.zeros((n_landmarks, 3), np.float32) if cal is None else cal.offset


def expression_offset(face_model: str, landmarks: str, n_landmarks: int, n_exp: int,
                      calibration: str | None = "auto") -> np.ndarray:
    """(N, 3, K_exp) float32: the calibration's change of the offset per unit of each expression mode (zero
    for none, or for a static calibration); same ``calibration`` rules as ``landmark_offset``."""
    cal = resolve(face_model, landmarks, n_landmarks, calibration)
    if cal is None or cal.expression is None:
        return np.zeros((n_landmarks, 3, n_exp), np.float32)
    if cal.expression.shape[2] != n_exp:
        raise ValueError(f"landmark calibration for {face_model!r} has {cal.expression.shape[2]} expression terms, the "
                         f"model {n_exp} modes: re-run `{COMMAND}`")
    return cal.expression


def resolve(face_model: str, landmarks: str, n_landmarks: int,
            calibration: str | None = "auto") -> LandmarkCalibration | None:
    """The calibration ``landmark_offset`` describes, checked, or None for a zero one."""
    if calibration is None:
        return None
    if calibration != "auto":
        return _load_file(_paths(calibration)[0]).check(face_model, landmarks, n_landmarks, str(calibration))
    if not needs_calibration(face_model, landmarks):
        return None
    path = packaged_path(face_model, landmarks)
    if not path.is_file():
        others = sorted(p.name for p in CALIBRATION_DIR.glob(f"{family(face_model)}-v*_{landmarks}.npy"))
        found = f" (found only {', '.join(others)}: made for another version)" if others else ""
        raise FileNotFoundError(f"no {landmarks} landmark calibration for face model {face_model!r} at {path}{found}; "
                                f"make it with `{COMMAND}` (or fit with landmark_calibration=None for exact landmarks)")
    return _load_file(path).check(face_model, landmarks, n_landmarks, str(path))


def _load_file(npy: Path) -> LandmarkCalibration:
    """``LandmarkCalibration.load``, read once per process and file version (every clip's fit asks)."""
    stamp = npy.stat().st_mtime_ns if npy.is_file() else None
    return _load_cached(str(npy), stamp)


@lru_cache(maxsize=8)
def _load_cached(path: str, stamp: int | None) -> LandmarkCalibration:
    return LandmarkCalibration.load(path)


def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".npy", ".json") else path
    return stem.with_name(stem.name + ".npy"), stem.with_name(stem.name + ".json")
