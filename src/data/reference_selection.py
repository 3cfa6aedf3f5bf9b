"""Reference frame selection, Algorithm 1 of PersonaTalk (paper 3.2, docs/design.md, "Stage 2"), 0-based frame
indices. Used by the stage-2 data module (training) and by dubbing (inference).

    training_references(i, T)            face: N_f frames evenly over [i - 2 N_f, i + 2 N_f] (clipped)
                                          lip:  N_l random frames of the whole clip
    inference_face_references(i, T)      the N_f frames centred on i, the window shifted inside the video
    inference_lip_references(opening)    N_l frames evenly spread over the frames sorted by mouth opening

Fractional positions round half up (floor(x + 0.5)), so hand-computed examples are unambiguous: frame 0 of
100 gets face references linspace(0, 10, 5) = 0, 2.5, 5, 7.5, 10 -> [0, 3, 5, 8, 10].
All functions return int64 arrays in [0, T - 1]; frames repeat only when the video is too short.
"""
from __future__ import annotations

import operator

import numpy as np


def training_references(
    i: int, T: int, n_face: int = 5, n_lip: int = 5, *, rng: np.random.Generator, exclude_target: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Algorithm 1, Training_Strategy, for frame i of a T-frame clip -> (face_idx (n_face,), lip_idx (n_lip,)).

    Face: round(linspace(max(0, i - 2 n_face), min(T - 1, i + 2 n_face), n_face)): a small window around
    i, which contains i itself when it is not clipped and n_face is odd (as at inference). Lip: n_lip
    frames drawn from the whole clip, without replacement when T >= n_lip, else with replacement.
    `exclude_target` draws lip frames from the clip minus frame i (the paper does not; with it a lip
    reference can never be the ground-truth frame itself; needs T >= 2).
    """
    i, T = _frame(i, T, "training_references")
    n_face, n_lip = _count(n_face, "n_face", "training_references"), _count(n_lip, "n_lip", "training_references")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"training_references: rng must be a numpy.random.Generator, got {type(rng).__name__}")
    face = _round(np.linspace(max(0, i - 2 * n_face), min(T - 1, i + 2 * n_face), n_face))
    pool = np.arange(T)
    if exclude_target:
        if T < 2:
            raise ValueError(f"training_references: exclude_target needs T >= 2 frames, got T={T}")
        pool = np.delete(pool, i)
    lip = rng.choice(pool, size=n_lip, replace=len(pool) < n_lip)
    return face, lip.astype(np.int64)


def inference_face_references(i: int, T: int, n_face: int = 5) -> np.ndarray:
    """Algorithm 1, Inference_Strategy, face part -> (n_face,) frames centred on i.

    The window is i - n_face // 2 ... (n_face frames; for even n_face one more before i than after),
    shifted to stay inside [0, T - 1]: frame 0 of 100 gets [0, 1, 2, 3, 4]. When T < n_face the window
    is clipped instead, repeating the first/last frame: frame 1 of 3 gets [0, 0, 1, 2, 2].
    """
    i, T = _frame(i, T, "inference_face_references")
    n_face = _count(n_face, "n_face", "inference_face_references")
    start = i - n_face // 2  # first frame of the centred window
    if T >= n_face:
        start = min(max(start, 0), T - n_face)  # shift inside the video
        return (start + np.arange(n_face)).astype(np.int64)
    return np.clip(start + np.arange(n_face), 0, T - 1).astype(np.int64)  # too short: repeat the edges


def inference_lip_references(mouth_opening: np.ndarray, n_lip: int = 25) -> np.ndarray:
    """Algorithm 1, Inference_Strategy, lip part -> (n_lip,) frames, the same set for every target frame.

    mouth_opening (T,): the mouth-opening size of each frame's canonical geometry M(alpha, beta_t, 0).
    Frames are sorted by it (stable: ties keep time order), and the frames at the rounded positions
    linspace(0, T - 1, n_lip) of that order are taken, from the most closed to the most open mouth.
    Positions repeat (and so frames) when T < n_lip.
    """
    opening = np.asarray(mouth_opening)
    if opening.ndim != 1 or opening.size < 1 or not np.issubdtype(opening.dtype, np.number):
        raise ValueError(f"inference_lip_references: mouth_opening must be a numeric (T,) array with T >= 1, "
                         f"got shape {opening.shape} dtype {opening.dtype}")
    if not np.isfinite(opening).all():
        raise ValueError("inference_lip_references: mouth_opening must be finite (NaN/inf found)")
    n_lip = _count(n_lip, "n_lip", "inference_lip_references")
    order = np.argsort(opening, kind="stable")  # (T,) frames, most closed first
    return order[_round(np.linspace(0, len(opening) - 1, n_lip))].astype(np.int64)


def _round(x: np.ndarray) -> np.ndarray:
    """Round half up (np.rint rounds half to even: 2.5 -> 2, 3.5 -> 4)."""
    return np.floor(x + 0.5).astype(np.int64)


def _integer(value, name: str, caller: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{caller}: {name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{caller}: {name} must be an integer, got {value!r}") from None


def _frame(i, T, caller: str) -> tuple[int, int]:
    i, T = _integer(i, "i", caller), _integer(T, "T", caller)
    if T < 1:
        raise ValueError(f"{caller}: T (video length) must be >= 1, got {T}")
    if not 0 <= i < T:
        raise ValueError(f"{caller}: i must be a 0-based frame index in [0, T - 1] = [0, {T - 1}], got {i}")
    return i, T


def _count(n, name: str, caller: str) -> int:
    n = _integer(n, name, caller)
    if n < 1:
        raise ValueError(f"{caller}: {name} must be >= 1, got {n}")
    return n
