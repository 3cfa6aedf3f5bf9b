"""Expression-only vertices of a video for StyleSim (paper 4.2): the project's 3DMM fit (``src.geometry.fitting``,
hybrid initialisation + Eq. 1-2 optimisation, one torch thread) on the MediaPipe landmarks of the 256x256
crops, then ``Vtx_exp = M(0, beta_t, 0)`` of the face model as displacements from its mean face, in mm
(``eval.shard_clips.expression_mm``: what the style encoder is trained on).

StyleSim protocol (ours; the paper does not say which segments it compares, and its GT row, 0.941, shows
they are not identical): each video's scored frames are cut into two halves A and B of equal length, and

    StyleSim = ( cos(S(gen_B), S(gt_A)) + cos(S(gen_A), S(gt_B)) ) / 2,

S the style encoder. The generated half is compared with the *other* half of the real video, so speech
content is not shared and only speaking style can match. The GT row scores the real video the same way,
cos(S(gt_B), S(gt_A)): the within-speaker ceiling.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch


class ExpressionFitter:
    """(T, 478, 2) crop-pixel landmarks (NaN rows: no face) -> (T, L, 3) float32 expression-only vertex
    displacements from the mean face, mm."""

    def __init__(self, face_model: str = "procedural", fit_steps: int = 300) -> None:
        from src.geometry.fitting import FitConfig
        from src.models.face_model import shared_face_model

        self.fm = shared_face_model(face_model)
        self.fit_cfg = replace(FitConfig(), steps=fit_steps, threads=1)
        self.face_model = face_model

    def __call__(self, landmarks: np.ndarray) -> torch.Tensor:
        from eval.shard_clips import expression_mm
        from src.geometry.fitting import fit_clip, fit_landmarks

        landmarks = np.asarray(landmarks, np.float32)
        if landmarks.ndim != 3 or landmarks.shape[1:] != (478, 2):
            raise ValueError(f"ExpressionFitter: landmarks must be (T, 478, 2), got {landmarks.shape}")
        valid = np.isfinite(landmarks).all(axis=(1, 2))  # (T,)
        if valid.sum() < 2:
            raise ValueError(f"ExpressionFitter: {int(valid.sum())} of {len(landmarks)} frames have a face; need >= 2")
        lmk, cfg = fit_landmarks(self.fm, np.nan_to_num(landmarks), self.fit_cfg)
        result = fit_clip(self.fm, lmk, cfg, valid=torch.from_numpy(valid))
        with torch.no_grad():
            return expression_mm(self.fm, result.beta.detach().float()).float()  # (T, L, 3)


def halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, ...) -> its first and second half, both floor(T / 2) long (the middle frame of an odd T is dropped)."""
    half = x.shape[0] // 2
    if half < 1:
        raise ValueError(f"StyleSim needs at least 2 frames, got {x.shape[0]}")
    return x[:half], x[x.shape[0] - half:]
