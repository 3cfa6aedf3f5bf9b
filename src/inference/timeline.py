"""Which reference frame each output frame shows (docs/design.md, "Dubbing"): the reference cut to the audio's length,
or, when the audio is longer, played forwards then backwards (ping-pong) as often as needed, so the
video never jumps from its last frame back to its first."""
from __future__ import annotations

import numpy as np


def source_frames(n_out: int, n_ref: int) -> np.ndarray:
    """(n_out,) int64 reference frame of each output frame: 0, 1, ..., n_ref - 1, n_ref - 2, ..., 1, 0, 1, ...
    (the turning frames are not repeated); the first n_out of them."""
    if n_out < 1 or n_ref < 1:
        raise ValueError(f"source_frames: n_out and n_ref must be >= 1, got {n_out} and {n_ref}")
    if n_ref == 1:
        return np.zeros(n_out, np.int64)
    period = 2 * (n_ref - 1)
    phase = np.arange(n_out, dtype=np.int64) % period  # (n_out,)
    return np.where(phase < n_ref, phase, period - phase)


def windows(n: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) windows of at most ``window`` frames covering 0 .. n - 1, evenly spaced, neighbours
    overlapping by at least ``overlap`` frames (one window when n <= window)."""
    if window < 1 or overlap < 0 or 2 * overlap >= window:
        raise ValueError(f"windows: need window >= 1 and 0 <= overlap < window / 2, got window={window}, "
                         f"overlap={overlap}")
    if n <= window:
        return [(0, n)]
    count = -(-(n - overlap) // (window - overlap))  # ceil
    starts = np.round(np.linspace(0, n - window, count)).astype(int)
    return [(int(s), int(s) + window) for s in starts]


def window_weights(spans: list[tuple[int, int]], i: int, overlap: int) -> np.ndarray:
    """(end - start,) crossfade weights of window i of ``windows``: each window ramps up linearly over the
    first ``overlap`` frames after its start and down over the last ``overlap`` before its end (not at the
    ends of the sequence), then the weights of all windows covering a frame are normalised to sum to 1.
    No seam: every window's output enters and leaves gradually."""
    start, end = spans[i]
    frames = np.arange(start, end, dtype=np.float64) + 0.5  # frame centres
    total = np.zeros(end - start)
    for j, span in enumerate(spans):
        if span[0] < end and span[1] > start:
            total += _ramp(span, frames, overlap, first=j == 0, last=j == len(spans) - 1)
    own = _ramp(spans[i], frames, overlap, first=i == 0, last=i == len(spans) - 1)
    return (own / total).astype(np.float32)


def _ramp(span: tuple[int, int], frames: np.ndarray, overlap: int, first: bool, last: bool) -> np.ndarray:
    """A window's raw weight at ``frames`` (0 outside it)."""
    start, end = span
    weight = ((frames > start) & (frames < end)).astype(np.float64)
    if overlap > 0 and not first:
        weight = np.minimum(weight, np.clip((frames - start) / overlap, 0, 1))
    if overlap > 0 and not last:
        weight = np.minimum(weight, np.clip((end - frames) / overlap, 0, 1))
    return weight
