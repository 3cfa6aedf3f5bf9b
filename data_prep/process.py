"""One clip through the pipeline: decode -> track -> crop -> quality -> 3DMM fit -> samples.

``process_clip`` returns the clip's samples (one per kept face segment, as the byte files of
``shards.py``) and a report saying what was kept, what was removed and why (``removed`` reasons such as
``no_audio``, ``no_face``, ``too_short``, ``sharpness<...``), never raising for a bad clip: the caller
records an ``error`` instead. Two passes over the video keep memory flat: the first tracks the face
(landmarks only are kept), the second crops and encodes each segment as it streams by.
"""
from __future__ import annotations

import io
import json
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import av
import numpy as np
import torch

from data_prep import quality
from data_prep.shards import npy_bytes, safe_key, write_work_item
from data_prep.sources import ClipSource
from src.geometry.fitting import FitConfig, fit_clip, fit_landmarks
from src.media import decode
from src.media.contract import CROP_SIZE, FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from src.metrics.fit import eye_distance_mm, vertex_error_mm
from src.models.face_model import shared_face_model
from src.tracking.crops import crop_frame, crop_landmarks
from src.tracking.tracker import Track, TrackConfig, face_segments, smooth_boxes, track_video


@dataclass
class ProcessConfig:
    face_model: str = "procedural"
    landmarks: str = "detector"  # or "sidecar": the synthetic corpus' ground-truth landmarks (synthetic only)
    # False keeps clips without speech audio (no stream, or all zeros) with zero audio and "has_audio": false in
    # their meta: stage 2 needs no audio, stage 1 skips them
    require_audio: bool = True
    min_seconds: float = 2.0
    quality_samples: int = 16  # crops per segment given to the quality scorers
    thresholds: dict = field(default_factory=dict)  # criterion -> [min, max] (None = open)
    scorers: dict = field(default_factory=lambda: {"embedded": {"_target_": "data_prep.quality.EmbeddedScorer"}})
    hyperiqa: str | None = None  # HyperIQA weights file, added to the scorers when given
    track: TrackConfig = field(default_factory=TrackConfig)
    fit: FitConfig = field(default_factory=FitConfig)

    @property
    def min_frames(self) -> int:
        return int(round(self.min_seconds * FPS))


def process_clip(clip: ClipSource, cfg: ProcessConfig, fm) -> tuple[list[dict[str, bytes]], dict]:
    """Samples and report of one clip (see the module docstring)."""
    report = {"clip": clip.key, "speaker": clip.speaker, "source": clip.source, "removed": [], "samples": [],
              "segments_removed": 0}
    info = decode.probe(clip.path)
    report["video"] = {"size": [info.width, info.height], "fps": info.fps, "seconds": info.duration_s}
    audio = decode.read_audio(clip.path, SAMPLE_RATE) if info.has_audio else None
    silent = audio is None or not np.any(audio)  # no stream, or an all-zero track
    if silent and cfg.require_audio:
        report["removed"].append("no_audio" if audio is None else "silent_audio")
        return [], report
    track = track_clip(clip, cfg)
    report["frames"], report["face_frames"] = len(track.landmarks), int(track.found.sum())
    long_enough = [s for s in track.segments if s[1] - s[0] >= cfg.min_frames]
    if not track.segments:
        report["removed"].append("no_face")
    elif not long_enough:
        report["removed"].append(f"too_short({max(e - s for s, e in track.segments)}<{cfg.min_frames})")
    report["segments_removed"] += len(track.segments) - len(long_enough)
    if not long_enough:
        return [], report
    if silent:  # kept for stage 2 only (require_audio off): zero samples, and the meta says so
        audio = np.zeros(round(len(track.landmarks) * SAMPLES_PER_FRAME), np.int16)
    else:
        audio = decode.read_audio(clip.path, SAMPLE_RATE, n_frames=len(track.landmarks), fps=FPS)
        audio = np.round(np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)  # as stored in the shards
    segments = _crop_segments(clip.path, track, long_enough, cfg.quality_samples)  # [(mp4, crops, frames)]
    scorers = build_scorers(json.dumps(cfg.scorers, sort_keys=True), cfg.hyperiqa)
    check = quality.QualityFilter(cfg.thresholds, cfg.min_frames)
    samples = []
    for k, ((start, end), (video_bytes, crops, shown)) in enumerate(zip(long_enough, segments)):
        lmk = crop_landmarks(track, start, end)
        context = quality.ClipContext(face_size_px=track.boxes[start:end, 2] / cfg.track.box_scale, landmarks=lmk,
                                      fps=FPS, crop_frames=np.asarray(shown) - start)
        scores = quality.score_clip(scorers, crops, context)
        failed = check.check(scores, end - start)
        if failed:
            report["removed"] += failed
            report["segments_removed"] += 1
            continue
        key = safe_key(f"{clip.key}/seg{k:02d}")
        sample, meta = _sample(clip, cfg, fm, key, (start, end), video_bytes, audio, lmk, track.boxes[start:end],
                               scores, silent)
        samples.append(sample)
        report["samples"].append(meta)
    return samples, report


def process_and_store(clip: ClipSource, cfg: ProcessConfig, work: Path) -> str:
    """Process one clip and write its work item (``shards.write_work_item``); a failure is recorded in the
    report, not raised."""
    fm = shared_face_model(cfg.face_model)
    try:
        samples, report = process_clip(clip, cfg, fm)
    except Exception as err:  # noqa: BLE001 - one broken clip must not stop a million-clip job
        samples = []
        report = {"clip": clip.key, "speaker": clip.speaker, "source": clip.source, "samples": [],
                  "removed": ["error"], "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
    write_work_item(work, clip.key, samples, report)
    return clip.key


@lru_cache(maxsize=2)
def build_scorers(config_json: str, hyperiqa: str | None) -> tuple:
    """The configured scorers (``_target_`` dicts), plus HyperIQA when its weights are given; built once
    per process."""
    from hydra.utils import instantiate

    scorers = [instantiate(c) for c in json.loads(config_json).values()]
    if hyperiqa:
        scorers.append(quality.HyperIQAScorer(hyperiqa))
    return tuple(scorers)


def track_clip(clip: ClipSource, cfg: ProcessConfig) -> Track:
    """The clip's landmark track: MediaPipe on the decoded frames, or the synthetic sidecar's ground truth
    (``cfg.landmarks``); landmarks in frame pixels."""
    if cfg.landmarks == "detector":
        return track_video(decode.iter_frames(clip.path, FPS), cfg.track)
    if cfg.landmarks != "sidecar" or "sidecar" not in clip.meta:
        raise ValueError(f"landmarks={cfg.landmarks!r}: use 'detector', or 'sidecar' for the synthetic source only")
    side = read_sidecar(clip.meta["sidecar"])
    landmarks = np.asarray(side["landmarks_478"], np.float32)  # (T, 478, 2) frame pixels
    segments = face_segments(np.ones(len(landmarks), bool))
    return Track(landmarks, segments, smooth_boxes(landmarks, segments, cfg.track), tuple(side["size"][::-1]),
                 {"frames": len(landmarks), "found": len(landmarks), "roi_frames": 0})


def _crop_segments(path: Path, track: Track, segments: list[tuple[int, int]], n_quality: int):
    """Second pass: per segment, the crop video as mp4 bytes, up to ``n_quality`` crops for scoring and the
    frames they show."""
    out, current, writer = [], None, None
    wanted = {int(t) for start, end in segments
              for t in np.linspace(start, end - 1, min(n_quality, end - start)).round()}
    for frame in decode.iter_frames(path, FPS):
        t = frame.index
        seg = next((s for s in segments if s[0] <= t < s[1]), None)
        if seg != current and writer is not None:
            out.append(writer.close())
            writer = None
        current = seg
        if seg is None:
            continue
        writer = writer or SegmentWriter()
        crop, _ = crop_frame(frame.image, track.boxes[t], CROP_SIZE)
        writer.add(crop, t, keep=t in wanted)
    if writer is not None:
        out.append(writer.close())
    if len(out) != len(segments):
        raise RuntimeError(f"{path}: the second decoding pass gave {len(out)} segments, the first {len(segments)}")
    return out


class SegmentWriter:
    """Encodes crops to an in-memory H.264 mp4 (256x256, 25 fps) and keeps the frames asked for."""

    def __init__(self):
        self.buffer = io.BytesIO()
        self.container = av.open(self.buffer, "w", format="mp4")
        self.stream = self.container.add_stream("libx264", rate=int(FPS))
        self.stream.width = self.stream.height = CROP_SIZE
        self.stream.pix_fmt = "yuv420p"
        # veryfast: half the CPU of "fast" at the same size on our crops (eval.speed data_prep: 1.7 vs 3.1 ms a frame)
        self.stream.options = {"crf": "18", "preset": "veryfast", "threads": "1"}
        self.kept: list[np.ndarray] = []
        self.kept_frames: list[int] = []

    def add(self, crop: np.ndarray, frame: int, keep: bool) -> None:
        self.container.mux(self.stream.encode(av.VideoFrame.from_ndarray(crop, format="rgb24")))
        if keep:
            self.kept.append(crop)
            self.kept_frames.append(frame)

    def close(self) -> tuple[bytes, np.ndarray, list[int]]:
        self.container.mux(self.stream.encode(None))
        self.container.close()
        return self.buffer.getvalue(), np.stack(self.kept), self.kept_frames


def _sample(clip, cfg, fm, key, span, video_bytes, audio, lmk, boxes, scores, silent) -> tuple[dict, dict]:
    start, end = span
    result = fit_clip(fm, *fit_landmarks(fm, lmk, cfg.fit, exact=cfg.landmarks == "sidecar"))
    beta = result.beta.detach().numpy().astype(np.float32)
    meta = {"key": key, "speaker": clip.speaker, "source": clip.source, "clip": clip.key, "segment": [start, end],
            "n_frames": end - start, "fps": float(FPS), "sample_rate": SAMPLE_RATE, "crop_size": CROP_SIZE,
            "face_model": fm.name, "quality": {k: round(float(v), 4) for k, v in scores.items()},
            "reprojection_px": round(float(np.nanmean(result.reproj_px.numpy())), 4), **clip_split(clip)}
    if silent:
        meta["has_audio"] = False
    meta["iod_px"] = round(float(np.linalg.norm(lmk[:, 33] - lmk[:, 263], axis=-1).mean()), 3)  # outer eye corners
    meta["reprojection_pct_iod"] = round(100 * meta["reprojection_px"] / meta["iod_px"], 4)
    meta.update(_ground_truth_error(clip, fm, beta, start, end))
    sample = {"__key__": key, "mp4": video_bytes,
              "audio.npy": npy_bytes(audio[start * SAMPLES_PER_FRAME:end * SAMPLES_PER_FRAME]),
              "alpha.npy": npy_bytes(result.alpha.detach().numpy().astype(np.float32)), "beta.npy": npy_bytes(beta),
              "pose.npy": npy_bytes(result.pose.detach().numpy().astype(np.float32)), "lmk.npy": npy_bytes(lmk),
              "box.npy": npy_bytes(boxes.astype(np.float32)), "json": json.dumps(meta, sort_keys=True).encode()}
    return sample, meta


def clip_split(clip: ClipSource) -> dict:
    """A split fixed by the dataset (e.g. HDTF's test list, a labels file), if any, and what makes a labelled
    clip hard."""
    labels = {"fixed_split": clip.meta["split"]} if "split" in clip.meta else {}
    return labels | ({"hard": clip.meta["hard"]} if clip.meta.get("hard") else {})


def _ground_truth_error(clip: ClipSource, fm, beta: np.ndarray, start: int, end: int) -> dict:
    """For synthetic clips rendered with the same face model: fitted vs true expression-only vertices."""
    if "sidecar" not in clip.meta:
        return {}
    side = read_sidecar(clip.meta["sidecar"])
    if side.get("face_model") != fm.name:
        return {}
    truth = np.asarray(side["beta"][start:end], np.float32)
    with torch.no_grad():
        error, lower = (vertex_error_mm(fm, beta, truth, region) for region in ("all", "lower"))
    return {"gt_exp_error_mm": round(error, 4), "gt_lower_error_mm": round(lower, 4),
            "gt_exp_error_pct_eye": round(100 * error / eye_distance_mm(fm), 4)}


@lru_cache(maxsize=2)
def read_sidecar(path: str) -> dict:
    """A synthetic clip's ground truth (read once per clip, not once per use)."""
    return json.loads(Path(path).read_text())

