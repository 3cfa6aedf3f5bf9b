"""Pixel-aligned 256x256 face crops of a generated video and its ground truth.

The face is tracked on the ground-truth video only (``src.tracking``: MediaPipe landmarks, smoothed
square boxes); both videos are then cropped with the ground truth's box of each frame, so crop pixel q of
the generated frame and of the ground-truth frame show the same place of the frame. Scoring covers the
ground truth's longest face segment (the whole video for HDTF and the synthetic corpus).

Length mismatch: both videos are read at 25 fps (``src.media.decode.iter_frames``); frames past the
shorter one are dropped, and ``PairInfo`` reports the counts. A generated video of another resolution
with the same framing (same aspect ratio) is cropped with the boxes scaled to its size; another aspect
ratio is an error.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from src.media import decode
from src.media.contract import FPS, SAMPLE_RATE
from src.tracking.crops import crop_frame, to_crop
from src.tracking.tracker import TrackConfig, track_video


@dataclass
class GroundTruth:
    """A tracked ground-truth video. ``cache`` keeps what every method's scoring reuses (crop landmarks,
    expression vertices), filled by ``eval.scorer``."""

    name: str
    path: Path
    boxes: np.ndarray  # (T, 3) smoothed crop boxes (cx, cy, side), frame pixels, NaN outside face segments
    landmarks: np.ndarray  # (T, 478, 2) frame pixels, NaN where no face
    span: tuple[int, int]  # [start, end) the longest face segment: the frames that are scored
    frame_size: tuple[int, int]  # (H, W)
    n_frames: int
    cache: dict = field(default_factory=dict)

    def audio(self, span: tuple[int, int], sample_rate: int = SAMPLE_RATE, fps: float = FPS) -> np.ndarray:
        """(N,) float32 mono audio of frames [span), sample 0 at the span's first frame."""
        audio = decode.read_audio(self.path, sample_rate, n_frames=self.n_frames, fps=fps)
        if audio is None:
            raise ValueError(f"{self.path}: the ground-truth video has no audio track (SyncScore needs it)")
        per_frame = sample_rate / fps
        return audio[int(round(span[0] * per_frame)):int(round(span[1] * per_frame))]


@dataclass
class PairInfo:
    frames_gen: int
    frames_gt: int
    span: tuple[int, int]  # the scored frames [start, end) of both videos
    rescaled: bool = False  # the generated video's size differs from the ground truth's (boxes scaled)

    @property
    def frames_used(self) -> int:
        return self.span[1] - self.span[0]


@dataclass
class CropChunk:
    frames: np.ndarray  # (B,) frame indices
    gen: np.ndarray  # (B, S, S, 3) uint8 RGB
    gt: np.ndarray  # (B, S, S, 3) uint8 RGB
    gt_landmarks: np.ndarray  # (B, 478, 2) the ground-truth track's landmarks in crop pixels


def track_ground_truth(path: str | Path, name: str | None = None, fps: float = FPS,
                       cfg: TrackConfig | None = None) -> GroundTruth:
    """Track the face of the ground-truth video at ``path``; raise when no frame has a face."""
    path = Path(path)
    track = track_video(decode.iter_frames(path, fps), cfg or TrackConfig())
    if not track.segments:
        raise ValueError(f"{path}: no face found in the ground-truth video (MediaPipe face mesh)")
    span = max(track.segments, key=lambda s: s[1] - s[0])
    return GroundTruth(name or path.stem, path, track.boxes, track.landmarks, span, track.frame_size,
                       len(track.landmarks))


def pair_info(gen_path: str | Path, gt: GroundTruth, fps: float = FPS, max_frames: int | None = None) -> PairInfo:
    """Frame counts and the scored span of a generated video against its ground truth."""
    info = decode.probe(gen_path)
    n_gen = decode.n_output_frames(info.duration_s, fps)
    end = min(gt.span[1], n_gen)
    if max_frames is not None:
        end = min(end, gt.span[0] + max_frames)
    if end <= gt.span[0]:
        raise ValueError(f"{gen_path}: {n_gen} frames at {fps} fps, but the ground truth's face starts at frame "
                         f"{gt.span[0]}: nothing to score")
    return PairInfo(n_gen, gt.n_frames, (gt.span[0], end), rescaled=(info.height, info.width) != gt.frame_size)


def box_scale(gen_size: tuple[int, int], gt_size: tuple[int, int], path) -> float:
    """Factor taking ground-truth frame pixels to generated frame pixels (same framing required)."""
    (gh, gw), (th, tw) = gen_size, gt_size
    if abs(gh / gw - th / tw) > 0.01 * th / tw:
        raise ValueError(f"{path}: generated frames are {gw}x{gh}, the ground truth {tw}x{th}: another aspect ratio, "
                         "so the ground truth's crop boxes do not apply (generate at the input's framing)")
    return gw / tw


def iter_crop_pairs(gen_path: str | Path, gt: GroundTruth, span: tuple[int, int], size: int = 256,
                    chunk: int = 16, fps: float = FPS) -> Iterator[CropChunk]:
    """Aligned crops of frames [span) of the generated video and the ground truth, ``chunk`` frames at a
    time; frames are decoded one by one, never a whole video at once."""
    start, end = span
    buf: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
    scale = None
    for gen_frame, gt_frame in zip(decode.iter_frames(gen_path, fps), decode.iter_frames(gt.path, fps)):
        t = gt_frame.index
        if t >= end:
            break
        if t < start:
            continue
        box = gt.boxes[t]
        scale = box_scale(gen_frame.image.shape[:2], gt.frame_size, gen_path) if scale is None else scale
        gen_crop, _ = crop_frame(gen_frame.image, box * np.array([scale, scale, scale], np.float32), size)
        gt_crop, _ = crop_frame(gt_frame.image, box, size)
        buf.append((t, gen_crop, gt_crop, to_crop(gt.landmarks[t], box, size)))
        if len(buf) == chunk:
            yield _chunk(buf)
            buf = []
    if buf:
        yield _chunk(buf)


def _chunk(buf) -> CropChunk:
    frames, gen, gt, lmk = zip(*buf)
    return CropChunk(np.array(frames), np.stack(gen), np.stack(gt), np.stack(lmk).astype(np.float32))


def to_tensor(crops: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB -> (B, 3, H, W) float32 in [0, 1]."""
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[-1] != 3:
        raise ValueError(f"to_tensor: crops must be uint8 (B, H, W, 3), got {crops.shape} {crops.dtype}")
    return torch.from_numpy(crops).to(device).permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W)
