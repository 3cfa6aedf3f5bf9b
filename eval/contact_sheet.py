"""A contact sheet of a video's frames, to look at a dub: ``--frames`` frames spread over the video, each cut to the
face (the tracked face's box in that frame, when one is found) and, with ``--input``, beside the same frame of the
input video.

    python -m eval.contact_sheet --video OUT.mp4 [--input REF.mp4] --out SHEET.png [--frames 8] [--size 256]

Both videos are read at 25 fps; a dub's frame k shows input frame k while the audio is no longer than the input
(the ping-pong of longer audio is not undone: then the input column is only the same index). The PNG is written to
a temporary name and renamed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from eval.reconstruct import write_png
from src.media.frames import FrameReader
from src.tracking.crops import crop_frame
from src.tracking.tracker import FaceTracker, TrackConfig


def face_box(image: np.ndarray) -> np.ndarray | None:
    """The largest face's square box (cx, cy, side) in this frame, or None."""
    tracker = FaceTracker(TrackConfig())
    try:
        landmarks = tracker.update(image)
    finally:
        tracker.close()
    if landmarks is None:
        return None
    lo, hi = landmarks.min(0), landmarks.max(0)
    return np.array([*(lo + hi) / 2, 1.6 * float((hi - lo).max())], np.float32)


def tile(image: np.ndarray, box: np.ndarray | None, size: int) -> np.ndarray:
    if box is None:  # no face: the whole frame, letterboxed to a square
        side = max(image.shape[:2])
        box = np.array([image.shape[1] / 2, image.shape[0] / 2, side], np.float32)
    return crop_frame(image, box, size)[0]


def sheet(video: Path, reference: Path | None, n: int, size: int) -> np.ndarray:
    with FrameReader(video) as out_reader:
        picks = np.unique(np.linspace(0, out_reader.n_frames - 1, min(n, out_reader.n_frames)).round().astype(int))
        columns = []
        ref_reader = FrameReader(reference) if reference is not None else None
        try:
            for k in picks.tolist():
                frame = out_reader.read(k, k + 1)[0]
                box = face_box(frame)
                tiles = [tile(frame, box, size)]
                if ref_reader is not None and k < ref_reader.n_frames:
                    tiles.insert(0, tile(ref_reader.read(k, k + 1)[0], box, size))
                columns.append(np.concatenate(tiles, axis=0))  # input above, dub below
        finally:
            if ref_reader is not None:
                ref_reader.close()
    height = max(c.shape[0] for c in columns)
    columns = [np.pad(c, ((0, height - c.shape[0]), (0, 0), (0, 0))) for c in columns]
    grid = np.concatenate(columns, axis=1)
    for j, k in enumerate(picks.tolist()):
        cv2.putText(grid, f"{k / 25:.1f}s", (j * size + 4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return grid


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.contact_sheet", description=__doc__.split("\n\n")[0])
    p.add_argument("--video", required=True, type=Path, help="the video to show (a dub)")
    p.add_argument("--input", type=Path, help="the input video, shown above each frame")
    p.add_argument("--out", required=True, type=Path, help="the PNG to write")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=256, help="tile side in pixels")
    args = p.parse_args(argv)
    for flag, path in (("--video", args.video), ("--input", args.input)):
        if path is not None and not path.is_file():
            p.error(f"{flag} {path}: no such file")
    if args.frames < 1 or args.size < 16:
        p.error("--frames must be >= 1 and --size >= 16")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_png(args.out, sheet(args.video, args.input, args.frames, args.size))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
