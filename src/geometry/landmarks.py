"""The landmark sets a 3DMM is fitted to, and which face region each landmark belongs to.

Two sets: ``mp478``, MediaPipe's 478 face-mesh landmarks (the tracker's output; needs a face model with that
correspondence, ``fm.lmk478``, as the procedural model has) and ``ibug68``, their iBUG-68 subset
(``IBUG68_FROM_MEDIAPIPE``; ICT-FaceKit and BFM are fitted on it). ``landmark_set`` picks the richest set a
model supports, ``select_landmarks`` cuts the tracker's 478 landmarks to it, and the region names weight the
fit's landmark term (``src.geometry.fitting.FitConfig.weights``).
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from src.geometry.face_models.procedural import IBUG68_FROM_MEDIAPIPE

LANDMARK_SETS = ("mp478", "ibug68")
# Per-region landmark weights. The contours (eyes, brows, lips, nose) carry the semantics. MediaPipe's face
# oval is a learned silhouette guess, vague on real faces (and 6-10 px off the procedural model's own
# outline on its renders); its ~330 interior points ("other") are a surface parametrisation rather than
# features, and the procedural layout places them differently (2-3 mm); the iris landmarks follow the gaze,
# which no face model here has. iBUG's jaw line slides along the silhouette with yaw.
DEFAULT_WEIGHTS = {"oval": 0.2, "iris": 0.1, "eyes": 1.0, "brows": 1.0, "lips": 1.0, "nose": 1.0, "other": 0.3}


def landmark_set(fm) -> str:
    """"mp478" where the face model has a vertex for every MediaPipe landmark (the procedural model), else
    "ibug68"."""
    return "mp478" if bool((fm.lmk478 >= 0).all()) else "ibug68"


def select_landmarks(fm, lmk478: np.ndarray) -> tuple[np.ndarray, str]:
    """The tracker's (..., 478, 2) landmarks cut to the face model's landmark set -> (landmarks, set name)."""
    name = landmark_set(fm)
    return (lmk478, name) if name == "mp478" else (lmk478[..., IBUG68_FROM_MEDIAPIPE, :], name)


def landmark_indices(fm, landmarks: str) -> torch.Tensor:
    """The model's vertex index per landmark of the set: (478,) or (68,)."""
    if landmarks == "ibug68":
        return fm.lmk68
    if bool((fm.lmk478 < 0).any()):
        raise ValueError(f"face model {fm.name!r} has no MediaPipe-478 correspondence; fit it with landmarks='ibug68'")
    return fm.lmk478


def landmark_weights(landmarks: str, weights: dict) -> torch.Tensor:
    """(N,) per-landmark weight from the per-region weights (``DEFAULT_WEIGHTS`` keys)."""
    w = {**DEFAULT_WEIGHTS, **weights}
    return torch.tensor([w[r] for r in landmark_regions(landmarks)], dtype=torch.float32)


def landmark_regions(landmarks: str) -> list[str]:
    """Region name (a ``DEFAULT_WEIGHTS`` key) of each landmark of the set."""
    if landmarks not in LANDMARK_SETS:
        raise ValueError(f"landmarks must be one of {LANDMARK_SETS}, got {landmarks!r}")
    return list(_regions_mp478() if landmarks == "mp478" else _regions_ibug68())


@functools.lru_cache(maxsize=1)
def _regions_mp478() -> tuple[str, ...]:
    from src.geometry.face_models.mediapipe_topology import mediapipe_topology

    paths, region = mediapipe_topology().paths, ["other"] * 478
    groups = {"oval": ("oval_",), "lips": ("lips_",), "eyes": ("right_eye", "left_eye"),
              "brows": ("right_brow", "left_brow")}
    for name, prefixes in groups.items():
        for key, path in paths.items():
            if key.startswith(prefixes):
                for i in path.tolist():
                    region[i] = name
    for i in (1, 2, 4, 5, 6, 19, 94, 98, 168, 195, 197, 327):  # nose ridge, tip and alae
        region[i] = "nose"
    region[468:] = ["iris"] * 10
    return tuple(region)


def _regions_ibug68() -> tuple[str, ...]:
    return ("oval",) * 17 + ("brows",) * 10 + ("nose",) * 9 + ("eyes",) * 12 + ("lips",) * 20
