"""Quality filter step (paper 4.1: "We apply the state-of-the-art Image Quality Assessment (IQA) method
[Su et al. 2020] to filter out videos, which are of low quality").

A clip's face crops are scored by one or more ``QualityScorer``s, each returning named scores; a
``QualityFilter`` compares them with [min, max] thresholds and a minimum length, and a ``FilterReport``
counts what was removed and why.

    EmbeddedScorer   no weights: sharpness, face size, exposure, landmark stability
    HyperIQAScorer   the paper's IQA, HyperIQA (``src.models.hyperiqa``), with the published KonIQ weights

Thresholds live in ``experiments/data_prep/quality.yaml``; the defaults there were measured on the real
clips under ``../shared/data/video`` and on blurred and darkened copies (numbers in that file).
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch

from src.models.hyperiqa import HyperIQA

# eye outer corners used for the inter-ocular distance, per landmark layout (number of points)
EYE_CORNERS = {478: (33, 263), 468: (33, 263), 68: (36, 45)}  # MediaPipe face mesh (+iris) / iBUG 68


@dataclass(frozen=True)
class ClipContext:
    """What a scorer may know about a clip besides its crops.

    face_size_px (T,): face box size in the ORIGINAL frame, pixels; landmarks (T, N, 2): in crop pixels
    (N = 478/468 MediaPipe or 68 iBUG); fps: frame rate of the clip; crop_frames (n,): which of the T
    frames the crops show, when the caller passes a sample of the crops (a long clip's crops are never
    all held in memory); None: the crops are all T frames.
    """

    face_size_px: np.ndarray
    landmarks: np.ndarray
    fps: float
    crop_frames: np.ndarray | None = None

    def __post_init__(self) -> None:
        size, lmk = np.asarray(self.face_size_px), np.asarray(self.landmarks)
        if size.ndim != 1:
            raise ValueError(f"ClipContext: face_size_px must be (T,), got {size.shape}")
        if lmk.ndim != 3 or lmk.shape[0] != size.shape[0] or lmk.shape[2] != 2:
            raise ValueError(f"ClipContext: landmarks must be (T={size.shape[0]}, N, 2), got {lmk.shape}")
        if not self.fps > 0:
            raise ValueError(f"ClipContext: fps must be > 0, got {self.fps}")
        if self.crop_frames is not None:
            idx = np.asarray(self.crop_frames)
            if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= size.shape[0])):
                raise ValueError(f"ClipContext: crop_frames must be (n,) indices in [0, {size.shape[0]}), got {idx}")

    @property
    def n_frames(self) -> int:
        return int(np.asarray(self.face_size_px).shape[0])


class QualityScorer(Protocol):
    """Scores one clip: crops (T, H, W, 3) uint8 RGB face crops -> {score name: value}."""

    name: str

    def score(self, crops: np.ndarray, context: ClipContext) -> dict[str, float]: ...


def score_clip(scorers: Sequence[QualityScorer], crops: np.ndarray, context: ClipContext) -> dict[str, float]:
    """All scorers' outputs in one dict; two scorers giving the same score name is an error."""
    scores: dict[str, float] = {}
    for scorer in scorers:
        out = scorer.score(crops, context)
        clash = scores.keys() & out.keys()
        if clash:
            raise ValueError(f"score_clip: scorer {scorer.name!r} repeats score names {sorted(clash)}")
        scores.update(out)
    return scores


def _check_crops(crops: np.ndarray, context: ClipContext, who: str) -> None:
    if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
        raise ValueError(f"{who}: crops must be (T, H, W, 3) uint8 RGB, got {crops.shape} {crops.dtype}")
    expected = context.n_frames if context.crop_frames is None else len(context.crop_frames)
    if crops.shape[0] != expected:
        raise ValueError(f"{who}: crops have {crops.shape[0]} frames, context {expected}")
    if crops.shape[0] == 0:
        raise ValueError(f"{who}: empty clip (0 frames)")


def sample_indices(n_total: int, n_sample: int) -> np.ndarray:
    """Up to ``n_sample`` frame indices spread evenly over ``n_total`` frames (deterministic)."""
    return np.unique(np.linspace(0, n_total - 1, min(n_sample, n_total)).round().astype(int))


# ------------------------------------------------------------------------------------------ embedded


def luminance(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (...) float32 Rec.601 luma in [0, 255]."""
    return rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def central(img: np.ndarray, fraction: float) -> np.ndarray:
    """The centred square-ish window covering ``fraction`` of each side: the face in a face crop."""
    h, w = img.shape[:2]
    dh, dw = int(round(h * (1 - fraction) / 2)), int(round(w * (1 - fraction) / 2))
    return img[dh : h - dh, dw : w - dw]


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 3x3 Laplacian of a (H, W) float luma image: the classic focus measure."""
    return float(cv2.Laplacian(gray.astype(np.float64), cv2.CV_64F).var())


def similarity_residual(src: np.ndarray, dst: np.ndarray) -> float:
    """Mean point distance left after the least-squares similarity (Umeyama) fit of src (N, 2) onto dst."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d  # (N, 2)
    u, sig, vt = np.linalg.svd(d.T @ s)  # cross-covariance (2, 2)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])  # no reflections
    rot = u @ sign @ vt
    scale = (sig * np.diag(sign)).sum() / max((s**2).sum(), 1e-12)
    fitted = scale * s @ rot.T  # (N, 2)
    return float(np.linalg.norm(fitted - d, axis=1).mean())


def landmark_jitter(landmarks: np.ndarray) -> float:
    """Median over consecutive frame pairs of the non-rigid landmark motion (similarity-fit residual),
    in units of the inter-ocular distance. (T, N, 2) -> float; 0 for a single frame."""
    t, n = landmarks.shape[:2]
    if n not in EYE_CORNERS:
        raise ValueError(f"landmark_jitter: N={n} landmarks; expected one of {sorted(EYE_CORNERS)}")
    if not np.isfinite(landmarks).all():
        raise ValueError("landmark_jitter: landmarks contain NaN/inf (fill or drop undetected frames first)")
    if t < 2:
        return 0.0
    left, right = EYE_CORNERS[n]
    iod = np.linalg.norm(landmarks[:, left] - landmarks[:, right], axis=-1)  # (T,)
    if (iod <= 0).any():
        raise ValueError("landmark_jitter: zero inter-ocular distance in some frame")
    lmk = landmarks.astype(np.float64)
    res = [similarity_residual(lmk[i], lmk[i + 1]) / (0.5 * (iod[i] + iod[i + 1])) for i in range(t - 1)]
    return float(np.median(res))


@dataclass
class EmbeddedScorer:
    """Weight-free quality scores of a clip.

    sharpness        mean over ``n_frames`` sampled frames of the Laplacian variance of the central
                     ``center_fraction`` of the crop (luma 0-255). Depends on crop resolution: the
                     thresholds assume the pipeline's 256x256 crops.
    face_size        median face box size in the original frame (px)
    brightness       mean luma (0-255) of the central region
    clipped          fraction of central-region pixels with luma <= 5 or >= 250
    landmark_jitter  median frame-to-frame non-rigid landmark motion / inter-ocular distance
    """

    n_frames: int = 16
    center_fraction: float = 0.6
    name: str = "embedded"

    def __post_init__(self) -> None:
        if self.n_frames < 1:
            raise ValueError(f"EmbeddedScorer: n_frames must be >= 1, got {self.n_frames}")
        if not 0 < self.center_fraction <= 1:
            raise ValueError(f"EmbeddedScorer: center_fraction must be in (0, 1], got {self.center_fraction}")

    def score(self, crops: np.ndarray, context: ClipContext) -> dict[str, float]:
        _check_crops(crops, context, "EmbeddedScorer")
        idx = sample_indices(len(crops), self.n_frames)
        luma = [central(luminance(crops[i]), self.center_fraction) for i in idx]  # n x (h, w)
        pixels = np.concatenate([y.ravel() for y in luma])
        return {
            "sharpness": float(np.mean([laplacian_variance(y) for y in luma])),
            "face_size": float(np.median(context.face_size_px)),
            "brightness": float(pixels.mean()),
            "clipped": float(((pixels <= 5) | (pixels >= 250)).mean()),
            "landmark_jitter": landmark_jitter(np.asarray(context.landmarks)),
        }


# ------------------------------------------------------------------------------------------ HyperIQA


class HyperIQAScorer:
    """The paper's IQA (HyperIQA, KonIQ-10k weights): ``{"hyperiqa": mean score}`` over ``n_frames``
    evenly sampled crops, each the mean of ``n_crops`` random 224 crops (seeded: repeatable).

    ``resize`` None (default) scores face crops at their native resolution (>= 224): the reference's
    resize to 512x384 (``src.models.hyperiqa.REFERENCE_RESIZE``) was meant for 1024x768 KonIQ photos; on
    a 256x256 face crop it would upsample (adding blur) and stretch the face.
    """

    name = "hyperiqa"

    def __init__(
        self,
        weights_path: str | Path,
        n_frames: int = 8,
        device: str = "cpu",
        n_crops: int = 10,
        resize: tuple[int, int] | None = None,
        seed: int = 0,
    ):
        network = HyperIQA.from_pretrained(weights_path, map_location=device)
        self._setup(network, n_frames, device, n_crops, resize, seed)

    @classmethod
    def from_network(
        cls,
        network: HyperIQA,
        n_frames: int = 8,
        device: str = "cpu",
        n_crops: int = 10,
        resize: tuple[int, int] | None = None,
        seed: int = 0,
    ) -> HyperIQAScorer:
        """A scorer around an already-built network (tests, or weights loaded elsewhere)."""
        scorer = cls.__new__(cls)
        scorer._setup(network, n_frames, device, n_crops, resize, seed)
        return scorer

    def _setup(self, network: HyperIQA, n_frames: int, device: str, n_crops: int, resize, seed: int) -> None:
        if n_frames < 1 or n_crops < 1:
            raise ValueError(f"HyperIQAScorer: n_frames and n_crops must be >= 1, got {n_frames}, {n_crops}")
        if resize is not None and len(resize) != 2:
            raise ValueError(f"HyperIQAScorer: resize must be (H, W) or None, got {resize}")
        self.network = network.to(device).eval()
        self.n_frames, self.device, self.n_crops, self.seed = n_frames, device, n_crops, seed
        self.resize = None if resize is None else tuple(resize)

    def score(self, crops: np.ndarray, context: ClipContext) -> dict[str, float]:
        _check_crops(crops, context, "HyperIQAScorer")
        idx = sample_indices(len(crops), self.n_frames)
        images = torch.from_numpy(crops[idx]).to(self.device).permute(0, 3, 1, 2).float() / 255  # (n, 3, H, W)
        generator = torch.Generator().manual_seed(self.seed)
        scores = [
            self.network.quality(img[None], self.n_crops, self.resize, generator) for img in images
        ]  # n x (1,), one image at a time: a 224 ResNet-50 batch of n_crops is enough on CPU
        return {"hyperiqa": float(torch.cat(scores).mean())}


# ------------------------------------------------------------------------------------------ filter


def _bounds(value: object, name: str) -> tuple[float | None, float | None]:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise ValueError(f"QualityFilter: thresholds[{name!r}] must be [min, max] (null = open), got {value!r}")
    lo, hi = (None if v is None else float(v) for v in value)
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"QualityFilter: thresholds[{name!r}] has min {lo} > max {hi}")
    return lo, hi


class QualityFilter:
    """Keep/drop decision for a clip: each score must lie in its [min, max] (either may be None), and
    the clip must have at least ``min_frames`` frames. ``check`` returns the failed criteria, e.g.
    ``["sharpness<40.0", "too_short(12<50)"]``; empty means keep."""

    def __init__(self, thresholds: Mapping[str, Sequence[float | None]], min_frames: int):
        if min_frames < 1:
            raise ValueError(f"QualityFilter: min_frames must be >= 1, got {min_frames}")
        self.thresholds = {str(k): _bounds(v, str(k)) for k, v in thresholds.items()}
        self.min_frames = int(min_frames)

    def check(self, scores: Mapping[str, float], n_frames: int) -> list[str]:
        missing = self.thresholds.keys() - scores.keys()
        if missing:
            raise KeyError(f"QualityFilter.check: no score for {sorted(missing)} (have {sorted(scores)})")
        failed = [] if n_frames >= self.min_frames else [f"too_short({n_frames}<{self.min_frames})"]
        for name, (lo, hi) in self.thresholds.items():
            value = float(scores[name])
            if not np.isfinite(value):
                failed.append(f"{name}={value}")
            elif lo is not None and value < lo:
                failed.append(f"{name}<{lo}")
            elif hi is not None and value > hi:
                failed.append(f"{name}>{hi}")
        return failed


def criterion(failure: str) -> str:
    """The criterion a failure string is about: "sharpness<40.0" -> "sharpness"."""
    match = re.match(r"[A-Za-z_][A-Za-z0-9_]*", failure)
    if match is None:
        raise ValueError(f"criterion: not a failure string: {failure!r}")
    return match.group(0)


@dataclass
class FilterReport:
    """Counts of a filter run: clips seen, kept, removed, and removals per criterion (a clip failing
    several criteria counts under each, and once in ``removed``)."""

    total: int = 0
    removed: int = 0
    by_criterion: Counter = field(default_factory=Counter)
    failures: dict[str, list[str]] = field(default_factory=dict)  # clip id -> failed criteria

    def add(self, failures: Sequence[str], clip_id: str | None = None) -> None:
        self.total += 1
        if failures:
            self.removed += 1
            self.by_criterion.update({criterion(f) for f in failures})
            if clip_id is not None:
                self.failures[clip_id] = list(failures)

    @property
    def kept(self) -> int:
        return self.total - self.removed

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "kept": self.kept,
            "removed": self.removed,
            "by_criterion": dict(sorted(self.by_criterion.items())),
            "failures": dict(self.failures),
        }

    def summary(self) -> str:
        pct = 100 * self.removed / self.total if self.total else 0.0
        lines = [f"quality filter: {self.total} clips, kept {self.kept}, removed {self.removed} ({pct:.1f}%)"]
        for name, count in self.by_criterion.most_common():
            lines.append(f"  {name:<16} {count:6d}")
        return "\n".join(lines)
