"""Region sets for face models that do not design their own (ICT-FaceKit, BFM), from iBUG-68 landmarks.

- ``lip``: vertices inside the outer-lip polygon (landmarks 48-59) in the frontal (x, y) projection and
  near the lip surface in depth;
- ``lower`` (jaw, cheeks, lips, chin): vertices below the nose-bottom landmark (33), or moved by the
  given mouth/jaw modes;
- ``mouth_pairs``: inner-lip landmark pairs (61, 67), (62, 66), (63, 65).
"""
from __future__ import annotations

import numpy as np
from matplotlib.path import Path as PolygonPath

MOUTH_PAIRS_68 = np.array([[61, 67], [62, 66], [63, 65]])


def lip_set(mean: np.ndarray, lmk68: np.ndarray, candidates: np.ndarray, depth_tolerance: float) -> np.ndarray:
    """Vertex indices (among ``candidates``) inside the outer-lip polygon and within ``depth_tolerance``
    (model units) behind the lip landmarks' mean depth."""
    polygon = PolygonPath(mean[lmk68[48:60], :2])
    inside = polygon.contains_points(mean[candidates, :2])
    near = mean[candidates, 2] > mean[lmk68[48:60], 2].mean() - depth_tolerance
    return np.sort(candidates[inside & near])


def lower_set(mean: np.ndarray, lmk68: np.ndarray, candidates: np.ndarray,
              moved: np.ndarray | None = None) -> np.ndarray:
    """Vertex indices (among ``candidates``) below the nose bottom (landmark 33), union ``moved`` (bool (L,))."""
    below = np.zeros(len(mean), bool)
    below[candidates] = mean[candidates, 1] < mean[lmk68[33], 1]
    if moved is not None:
        below |= moved
    return np.flatnonzero(below)


def mouth_pairs(lmk68: np.ndarray) -> np.ndarray:
    """(3, 2) vertex pairs (upper inner lip, lower inner lip) from the iBUG-68 indices."""
    return lmk68[MOUTH_PAIRS_68]
