"""Paste a rendered face back into its full-resolution frame (docs/design.md, "Dubbing"): only the face region changes.

The mask is built in the 256 crop, where the geometry lives: the convex hulls of the ``region``'s vertices
("lower": jaw, cheeks, lips, chin, where stage 1 changes the face; "face": every vertex) in the target
geometry and in the reference frame's own geometry (an open mouth that closes leaves its old chin to
cover), and of the detected landmarks on the lower face; dilated by ``dilate`` and feathered with a
Gaussian of ``feather`` (both fractions of the crop side). With "lower", the upper face (eyes, brows, the nose
down to its tip and alae: ``UPPER_FACE_MP478``, the hull of the reference geometry's vertices there) is then cut
out of the mask, exactly 0 inside it and feathered outside it, so those pixels stay the input's even where the
lower-face hull reaches over the nose and under the eyes. The face and the mask are warped into the frame
with the inverse of the crop transform (``src.tracking.crops.crop_transform``) and blended; pixels where the
warped mask is 0 are the input's bytes, untouched. With "lower" the eyes and brows stay the original
full-resolution pixels: stage 1 keeps the reference's upper face anyway.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from src.geometry.landmarks import landmark_indices, landmark_set
from src.media.contract import CROP_SIZE
from src.tracking.crops import crop_transform

REGIONS = ("lower", "face")
# MediaPipe-478 landmarks of the upper face: brows, eye contours, nose bridge, alae and tip (eval.upper_face scores
# the PSNR of the same hull against the input)
UPPER_FACE_MP478 = (70, 63, 105, 66, 107, 55, 46, 53, 52, 65, 336, 296, 334, 293, 300, 285, 276, 283, 282, 295,
                    33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246,
                    362, 382, 381, 380, 374, 373, 390, 249, 263, 466, 388, 387, 386, 385, 384, 398,
                    168, 6, 197, 195, 5, 4, 1, 98, 327, 129, 358)
UPPER_FACE_IBUG68 = tuple(range(17, 48))  # brows, nose, eyes


@dataclass(frozen=True)
class PasteConfig:
    region: str = "lower"
    dilate: float = 0.03  # of the crop side
    feather: float = 0.025  # Gaussian sigma, of the crop side

    def __post_init__(self) -> None:
        if self.region not in REGIONS:
            raise ValueError(f"PasteConfig.region must be one of {REGIONS}, got {self.region!r}")
        if self.dilate < 0 or self.feather < 0:
            raise ValueError(f"PasteConfig: dilate and feather must be >= 0, got {self.dilate}, {self.feather}")


def crop_mask(fm, target: np.ndarray, reference: np.ndarray, landmarks: np.ndarray, cfg: PasteConfig) -> np.ndarray:
    """Screen vertices (L, 3) of the target and reference geometry, (n, 2) lower-face landmarks, all in 256-crop
    pixels -> (256, 256) float32 mask in [0, 1], zero on the crop's border."""
    index = fm.lower.numpy() if cfg.region == "lower" else np.arange(fm.n_vertices)
    hard = _grown(_hulls(target[index, :2], reference[index, :2], landmarks), int(round(cfg.dilate * CROP_SIZE)))
    mask = hard.astype(np.float32)
    sigma = cfg.feather * CROP_SIZE
    if sigma > 0:
        mask = _blurred(mask, sigma)
    if cfg.region == "lower":
        keep = _keep_region(reference[upper_face_vertices(fm), :2], cfg)  # 1 inside the upper-face hull
        # the lips are what the audio changes: the upper face's feathered edge must not reach them (it did: at 2
        # feather widths below the nose it covered the upper lip, which kept 8-15% of the input's mouth)
        lips = _lip_cover(fm, target, reference, cfg)
        mask *= 1.0 - np.where(keep >= 1.0, 1.0, keep * (1.0 - lips))
    np.clip(mask, 0.0, 1.0, out=mask)  # a blurred 1 can come out as 1 + 1e-7
    mask[mask < 1e-3] = 0.0  # the Gaussian's far tail: keep those pixels exactly the input's
    mask[:2], mask[-2:], mask[:, :2], mask[:, -2:] = 0, 0, 0, 0  # nothing bleeds in from beyond the crop
    return mask


def upper_face_vertices(fm) -> np.ndarray:
    """The face model's vertex indices of the upper face (``UPPER_FACE_MP478`` or the 68-point equivalent)."""
    name = landmark_set(fm)
    upper = UPPER_FACE_MP478 if name == "mp478" else UPPER_FACE_IBUG68
    return landmark_indices(fm, name).numpy()[list(upper)]


def _lip_cover(fm, target: np.ndarray, reference: np.ndarray, cfg: PasteConfig) -> np.ndarray:
    """(256, 256) float32: 1 on the hulls of the lip vertices of the target and the reference geometry (and
    ``dilate`` / 3 around them), falling to 0 over about a feather width."""
    lip = fm.lip.numpy()
    cover = _grown(_hulls(target[lip, :2], reference[lip, :2]), max(int(round(cfg.dilate * CROP_SIZE / 3)), 1))
    soft = _blurred(cover.astype(np.float32), max(cfg.feather * CROP_SIZE / 2, 1.0))
    return np.maximum(soft, cover.astype(np.float32))  # exactly 1 on the (grown) lips


def _keep_region(points: np.ndarray, cfg: PasteConfig) -> np.ndarray:
    """(256, 256) float32: 1 inside the hull of ``points`` (crop pixels), falling to 0 over about 2 feather
    widths outside it."""
    keep = _hulls(points)
    sigma = max(cfg.feather * CROP_SIZE, 1.0)
    soft = _blurred(_grown(keep, int(math.ceil(2 * sigma))).astype(np.float32), sigma)
    return np.maximum(soft, keep.astype(np.float32))  # exactly 1 inside the hull


def _hulls(*point_sets: np.ndarray) -> np.ndarray:
    """(256, 256) uint8: 1 inside the convex hull of each set of (n, 2) crop-pixel points (non-finite points
    dropped; a set with fewer than 3 left adds nothing)."""
    out = np.zeros((CROP_SIZE, CROP_SIZE), np.uint8)
    for points in point_sets:
        points = points[np.isfinite(points).all(1)]
        if len(points) >= 3:
            hull = cv2.convexHull(np.round(points * 16).astype(np.int32))  # 4 fractional bits
            cv2.fillConvexPoly(out, hull, 1, lineType=cv2.LINE_8, shift=4)
    return out


def _grown(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` dilated by a disc of ``radius`` pixels (unchanged for radius 0)."""
    if radius <= 0:
        return mask
    return cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)))


def _blurred(mask: np.ndarray, sigma: float) -> np.ndarray:
    """float32 ``mask`` blurred by a Gaussian of ``sigma`` pixels (3-sigma kernel), zero beyond the crop."""
    k = 2 * int(math.ceil(3 * sigma)) + 1
    return cv2.GaussianBlur(mask, (k, k), sigma, borderType=cv2.BORDER_CONSTANT)


def paste_face(frame: np.ndarray, face: np.ndarray, mask: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, tuple]:
    """frame (H, W, 3) uint8, face (S, S, 3) uint8 (the crop ``box`` at S px), mask (256, 256) float in [0, 1]
    -> (new frame, (mask in the frame's box region (h, w) float32, (x0, y0) its top-left corner))."""
    height, width = frame.shape[:2]
    cx, cy, side = (float(v) for v in box)
    x0, y0 = max(0, math.floor(cx - side / 2)), max(0, math.floor(cy - side / 2))
    x1, y1 = min(width, math.ceil(cx + side / 2)), min(height, math.ceil(cy + side / 2))
    out = frame.copy()
    if x1 <= x0 or y1 <= y0:
        return out, (np.zeros((0, 0), np.float32), (x0, y0))
    size = (x1 - x0, y1 - y0)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP  # the matrix maps frame (destination) -> crop (source)
    face_roi = cv2.warpAffine(face, _roi_transform(box, face.shape[0], x0, y0), size, flags=flags,
                              borderMode=cv2.BORDER_REPLICATE)
    mask_roi = cv2.warpAffine(mask, _roi_transform(box, CROP_SIZE, x0, y0), size, flags=flags,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    region = out[y0:y1, x0:x1]
    inside = mask_roi > 0
    alpha = mask_roi[inside][:, None]  # (n, 1)
    blended = region[inside] + alpha * (face_roi[inside].astype(np.float32) - region[inside])  # (n, 3)
    region[inside] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    return out, (mask_roi, (x0, y0))


def _roi_transform(box: np.ndarray, size: int, x0: int, y0: int) -> np.ndarray:
    """(2, 3) matrix from pixels of the frame region starting at (x0, y0) to pixels of the crop at ``size``."""
    matrix = crop_transform(box, size).astype(np.float64)
    matrix[:, 2] += matrix[:, :2] @ np.array([x0, y0], np.float64)
    return matrix
