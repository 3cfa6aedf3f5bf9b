"""How much of the face a dub changed outside the lips: PSNR of the upper face (eyes, brows, nose, and glasses
when worn) of a dubbed video against its input, frame by frame.

    python -m eval.upper_face --input REF.mp4 --dubbed OUT.mp4 [--json FILE]

A dub should change only what the new audio changes (lips, jaw, cheeks, chin); the rest of the frame should be
the input's pixels, up to the output's compression. The upper face of each input frame is the convex hull of its
MediaPipe landmarks on the brows, the eyes and the nose down to its tip, from the input's own track (the dub's
pixels never decide where it is). Both videos are read at 25 fps; frames without a
face in the input are skipped. PSNR is over the hull's pixels of the full-resolution frames, per frame, then the
mean of the per-frame MSEs gives the clip's figure (and the worst frame is reported too).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np

from src.inference.paste import UPPER_FACE_MP478
from src.media.decode import iter_frames
from src.tracking.tracker import FaceTracker, TrackConfig

UPPER_FACE = UPPER_FACE_MP478  # the hull the paste-back keeps (src/inference/paste.py)


def upper_face_mask(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(478, 2) frame pixels -> (H, W) bool, the convex hull of the upper-face landmarks."""
    mask = np.zeros(shape, np.uint8)
    hull = cv2.convexHull(np.round(landmarks[list(UPPER_FACE)] * 16).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def upper_face_psnr(input_video: str | Path, dubbed_video: str | Path) -> dict:
    """{"psnr": clip PSNR (dB) from the mean MSE, "worst_psnr", "frames": scored, "skipped": without a face}."""
    tracker = FaceTracker(TrackConfig())
    errors, skipped = [], 0
    try:
        for a, b in zip(iter_frames(input_video), iter_frames(dubbed_video)):
            if a.image.shape != b.image.shape:
                raise ValueError(f"--dubbed {dubbed_video}: frames are {b.image.shape[:2]}, the input's "
                                 f"{a.image.shape[:2]}")
            landmarks = tracker.update(a.image)
            if landmarks is None:
                skipped += 1
                continue
            mask = upper_face_mask(landmarks, a.image.shape[:2])
            diff = a.image[mask].astype(np.float64) - b.image[mask].astype(np.float64)
            errors.append(float(np.mean(diff ** 2)))
    finally:
        tracker.close()
    if not errors:
        raise ValueError(f"--input {input_video}: no frame with a face to score")
    return {"psnr": to_db(float(np.mean(errors))), "worst_psnr": to_db(max(errors)), "frames": len(errors),
            "skipped": skipped}


def to_db(mse: float) -> float:
    """Mean squared error of 8-bit pixels -> PSNR in dB (inf for identical pixels)."""
    return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.upper_face", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, type=Path, help="the reference video that was dubbed")
    p.add_argument("--dubbed", required=True, type=Path, help="the dub (python -m src.dub --out)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    for flag, path in (("--input", args.input), ("--dubbed", args.dubbed)):
        if not path.is_file():
            p.error(f"{flag} {path}: no such file")
    result = upper_face_psnr(args.input, args.dubbed)
    print(f"upper face (eyes, brows, nose): PSNR {result['psnr']:.2f} dB over {result['frames']} frames "
          f"(worst frame {result['worst_psnr']:.2f} dB; {result['skipped']} frames without a face)")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
