"""3DMM fit of a long face segment in overlapping windows (the hybrid fit of
``src.geometry.fitting.fit_clip``, per window), crossfaded where windows overlap.

``fit_clip`` optimises all frames of a clip jointly; its memory grows with the clip (about 0.6 MB per frame
on the procedural model: ~2 GB for 2 minutes), so a reference video of any length is fitted in windows of
``window`` frames (10 s by default, the length of a typical training clip). Each window gets its own
identity alpha; alpha, beta and pose are blended linearly over the frames two windows share
(``timeline.window_weights``), so the geometry has no seam where windows meet. The model is linear in
alpha and beta, so blending coefficients blends vertices.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from src.geometry.fitting import FitConfig, fit_clip, fit_landmarks
from src.inference.timeline import window_weights, windows


@dataclass
class SegmentFit:
    """Per frame of one segment: alpha (n, K_id), beta (n, K_exp), pose (n, 6) (crop pixels of the 256
    crop), reproj_px (n,) mean landmark reprojection error."""

    alpha: np.ndarray
    beta: np.ndarray
    pose: np.ndarray
    reproj_px: np.ndarray


def fit_segment(fm, landmarks: Callable[[int, int], np.ndarray], n: int, fit_cfg: FitConfig, window: int,
                overlap: int, on_window: Callable[[], None] = lambda: None) -> SegmentFit:
    """Fit frames 0 .. n - 1 of a segment; ``landmarks(start, end)`` gives their (end - start, 478, 2) crop
    landmarks (computed per window, so the whole segment's need not exist at once)."""
    spans = windows(n, window, overlap)
    out = SegmentFit(np.zeros((n, fm.n_id), np.float32), np.zeros((n, fm.n_exp), np.float32),
                     np.zeros((n, 6), np.float32), np.zeros(n, np.float32))
    for i, (start, end) in enumerate(spans):
        lmk, cfg = fit_landmarks(fm, landmarks(start, end), fit_cfg)
        result = fit_clip(fm, lmk, cfg)
        weight = window_weights(spans, i, overlap)[:, None]  # (w, 1)
        out.alpha[start:end] += weight * result.alpha.detach().numpy()[None]  # (w, K_id)
        out.beta[start:end] += weight * result.beta.detach().numpy()
        out.pose[start:end] += weight * result.pose.detach().numpy()
        out.reproj_px[start:end] += weight[:, 0] * np.nan_to_num(result.reproj_px.numpy())
        on_window()
    return out


def count_windows(n: int, window: int, overlap: int) -> int:
    return len(windows(n, window, overlap))
