"""Square face crops of a tracked face (``src.tracking.tracker``): a box ``(cx, cy, side)`` in frame pixels
becomes a ``CROP_SIZE`` crop in which crop pixel ``q`` shows frame pixel ``p = (cx, cy) - side / 2 + q * side /
size``. ``crop_transform`` gives that 2x3 matrix (frame -> crop), so results can be pasted back into the full
frame; ``to_crop`` and ``crop_landmarks`` move landmarks into crop pixels.
"""
from __future__ import annotations

import cv2
import numpy as np

from src.media.contract import CROP_SIZE


def crop_transform(box: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """(3,) box (cx, cy, side) -> (2, 3) affine matrix taking frame pixels to crop pixels."""
    cx, cy, side = (float(v) for v in box)
    scale = size / side
    return np.array([[scale, 0.0, size / 2 - scale * cx], [0.0, scale, size / 2 - scale * cy]], np.float32)


def crop_frame(image: np.ndarray, box: np.ndarray, size: int = CROP_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Cut the square ``box`` out of ``image`` at ``size`` x ``size`` (edges replicated beyond the frame).
    Returns the crop and its (2, 3) frame -> crop matrix. Large boxes are first reduced with area
    averaging, so strong downscales do not alias."""
    matrix = crop_transform(box, size)
    factor = int(box[2] // (2 * size))
    if factor >= 2:
        small = cv2.resize(image, (image.shape[1] // factor, image.shape[0] // factor), interpolation=cv2.INTER_AREA)
        scaled = np.array(box, np.float64) / factor
        crop = cv2.warpAffine(small, crop_transform(scaled, size), (size, size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        return crop, matrix
    crop = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return crop, matrix


def to_crop(points: np.ndarray, box: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """(N, 2) frame pixels -> crop pixels for one box."""
    matrix = crop_transform(box, size)
    return points @ matrix[:, :2].T + matrix[:, 2]


def crop_landmarks(track, start: int, end: int) -> np.ndarray:
    """Frames [start, end) of a ``Track``'s landmarks in crop pixels (their smoothed boxes): (t, 478, 2) float32."""
    return np.stack([to_crop(track.landmarks[t], track.boxes[t]) for t in range(start, end)]).astype(np.float32)
