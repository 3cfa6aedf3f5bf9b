"""Per-frame motion of a synthetic clip: speech channels into expression coefficients, plus motion that the
audio does not explain (blinks, brows, head-pose drift).

``to_coefficients`` maps the synthetic channels (jaw_open, lip_round, ..., blink_L, brow_furrow) onto
a face model's own expression modes: the identity for the procedural model, ARKit blendshape names for
ICT-FaceKit. A model with neither has no mapping and is refused with a clear error. ``model_coefficients``
also drives a model with a PCA expression basis (BFM): each channel's procedural mode is retargeted by its
68 keypoints (``retarget_matrix``).
"""
from __future__ import annotations

import numpy as np

from src.geometry.face_models.procedural import EXP_NAMES

# synthetic channel -> [(ICT blendshape, weight)]; mouth_shift is signed: + left, - right
ICT_CHANNELS = {
    "jaw_open": [("jawOpen", 1.0)], "lip_round": [("mouthPucker", 1.0)],
    "lip_spread": [("mouthStretch_L", 0.7), ("mouthStretch_R", 0.7)], "lip_close": [("mouthClose", 0.4)],
    "upper_lip_raise": [("mouthUpperUp_L", 1.0), ("mouthUpperUp_R", 1.0)],
    "lower_lip_down": [("mouthLowerDown_L", 1.0), ("mouthLowerDown_R", 1.0)], "lip_funnel": [("mouthFunnel", 1.0)],
    "smile_L": [("mouthSmile_L", 1.0)], "smile_R": [("mouthSmile_R", 1.0)], "mouth_shift": [("mouthLeft", 1.0)],
    "cheek_puff": [("cheekPuff_L", 1.0), ("cheekPuff_R", 1.0)], "blink_L": [("eyeBlink_L", 1.0)],
    "blink_R": [("eyeBlink_R", 1.0)], "brow_raise_L": [("browOuterUp_L", 1.0), ("browInnerUp_L", 0.5)],
    "brow_raise_R": [("browOuterUp_R", 1.0), ("browInnerUp_R", 0.5)],
    "brow_furrow": [("browDown_L", 1.0), ("browDown_R", 1.0)],
}


def to_coefficients(channels: dict[str, np.ndarray], exp_names: list[str]) -> np.ndarray:
    """Channel tracks {name: (T,)} -> (T, K_exp) coefficients of the face model with ``exp_names``.

    Missing channels are zero. For ICT-FaceKit, the signed ``mouth_shift`` drives ``mouthLeft`` with its
    positive part and ``mouthRight`` with its negative part.
    """
    n = len(next(iter(channels.values())))
    values = np.stack([np.asarray(channels.get(name, np.zeros(n)), np.float32) for name in EXP_NAMES], 1)  # (T, C)
    if list(exp_names) == EXP_NAMES:
        return values
    missing = _ict_names() - set(exp_names)
    if missing:
        raise ValueError(f"the synthetic corpus drives the procedural model's modes or ICT-FaceKit's ARKit "
                         f"blendshapes; this face model lacks {sorted(missing)[:4]}")
    coeffs = np.zeros((n, len(exp_names)), np.float32)
    for c, channel in enumerate(EXP_NAMES):
        for target, weight in ICT_CHANNELS[channel]:
            if channel == "mouth_shift":
                coeffs[:, exp_names.index("mouthLeft")] += weight * np.clip(values[:, c], 0, None)
                coeffs[:, exp_names.index("mouthRight")] += weight * np.clip(-values[:, c], 0, None)
            else:
                coeffs[:, exp_names.index(target)] += weight * values[:, c]
    return coeffs


def model_coefficients(channels: dict[str, np.ndarray], fm) -> np.ndarray:
    """Channel tracks {name: (T,)} -> (T, K_exp) coefficients of face model ``fm`` (a ``FaceModel``): by mode name
    for the procedural model and ICT-FaceKit (``to_coefficients``), else through ``retarget_matrix``."""
    names = list(fm.exp_names)
    if names == EXP_NAMES or _ict_names() <= set(names):
        return to_coefficients(channels, names)
    n = len(next(iter(channels.values())))
    values = np.stack([np.asarray(channels.get(name, np.zeros(n)), np.float32) for name in EXP_NAMES], 1)  # (T, C)
    return (values @ retarget_matrix(fm)).astype(np.float32)


def retarget_matrix(fm, ridge: float = 1e-3) -> np.ndarray:
    """(C, K_exp): the coefficients of ``fm``'s expression basis whose 68 keypoints move as each procedural mode
    moves the procedural model's (ridge least squares; displacements scaled by the ratio of the eye distances).
    For a model without named modes (a BFM's PCA basis): a channel then means the same mouth motion."""
    import torch

    from src.models.face_model import shared_face_model

    proc = shared_face_model("procedural")
    with torch.no_grad():
        src = proc.exp_basis[proc.lmk68].double().flatten(0, 1)  # (68 * 3, C) mm
        dst = fm.exp_basis[fm.lmk68].double().flatten(0, 1)  # (68 * 3, K) model units
        src = src * _eye_distance(fm) / _eye_distance(proc)
        gram = dst.T @ dst
        gram = gram + ridge * torch.trace(gram) / len(gram) * torch.eye(len(gram), dtype=gram.dtype)
        return torch.linalg.solve(gram, dst.T @ src).T.float().numpy()  # (C, K)


def _eye_distance(fm) -> float:
    lmk = fm.mean[fm.lmk68].double()
    return float((lmk[36:42].mean(0) - lmk[42:48].mean(0)).norm())


def _ict_names() -> set[str]:
    return {name for targets in ICT_CHANNELS.values() for name, _ in targets} | {"mouthRight"}


def blink_track(n: int, fps: float, rate_hz: float, rng: np.random.Generator) -> np.ndarray:
    """(T,) eyelid closure in [0, 1]: blinks at Poisson times, ~200 ms each (fast close, slower open)."""
    track = np.zeros(n, np.float32)
    t = rng.exponential(1.0 / rate_hz) * 0.5
    shape = np.array([0.35, 0.85, 1.0, 0.7, 0.35, 0.1], np.float32)
    while t * fps < n:
        start = int(t * fps)
        end = min(n, start + len(shape))
        track[start:end] = np.maximum(track[start:end], shape[: end - start])
        t += max(0.6, rng.exponential(1.0 / rate_hz))
    return track


def ou_process(n: int, sigma: float, tau_frames: float, rng: np.random.Generator) -> np.ndarray:
    """(T,) Ornstein-Uhlenbeck drift: stationary std ``sigma``, correlation time ``tau_frames``."""
    a = np.exp(-1.0 / tau_frames)
    noise = rng.standard_normal(n) * sigma * np.sqrt(1 - a ** 2)
    out = np.empty(n)
    x = rng.standard_normal() * sigma
    for i in range(n):
        x = a * x + noise[i]
        out[i] = x
    return out.astype(np.float32)


def head_pose(n: int, motion: float, base_scale: float, centre: tuple[float, float],
              rng: np.random.Generator) -> np.ndarray:
    """(T, 6) pose (pitch, yaw, roll, tx, ty, scale): small drifts around a per-clip resting pose."""
    rest = rng.normal(0, [0.06, 0.12, 0.04])
    angles = np.stack([ou_process(n, s * motion, 40.0, rng) for s in (0.05, 0.09, 0.03)], 1) + rest
    shift = np.stack([ou_process(n, 5.0 * motion, 60.0, rng) for _ in range(2)], 1) + np.asarray(centre)
    scale = base_scale * (1.0 + ou_process(n, 0.015 * motion, 80.0, rng))
    return np.concatenate([angles, shift, scale[:, None]], 1).astype(np.float32)


def brow_tracks(n: int, activity: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Brow raises (both sides, slightly different) and an occasional furrow, unrelated to the audio."""
    common = np.clip(ou_process(n, 0.35 * activity, 20.0, rng), 0.0, 1.0)
    return {"brow_raise_L": np.clip(common + ou_process(n, 0.05, 10.0, rng), 0, 1),
            "brow_raise_R": np.clip(common + ou_process(n, 0.05, 10.0, rng), 0, 1),
            "brow_furrow": np.clip(ou_process(n, 0.25 * activity, 30.0, rng) - 0.15, 0, 1)}
