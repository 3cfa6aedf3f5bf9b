"""Reference-video analysis for dubbing, cached by content: decode -> track and crop boxes -> 3DMM fit ->
mouth opening and Algorithm 1's lip references (docs/design.md, "Dubbing"). It depends on the video and the analysis
settings only, not on the audio, so dubbing one video with many audios analyses it once.

The same steps as the training data: ``src.media.decode.iter_frames`` (25 fps), ``src.tracking.tracker.track_video``
(MediaPipe, smoothed boxes), ``src.tracking.crops.crop_landmarks`` + ``src.geometry.fitting`` (hybrid fit, per
window: ``fit_windows``), ``src.tracking.crops.crop_frame`` (256 crops of the lip references).

Cache: ``<cache_dir>/<key>/`` with ``analysis.npz`` (per-frame arrays, crops of the lip references) and
``meta.json``; key = sha256 of the video file's bytes and of the settings (``AnalysisConfig``, the face
model's name and ``VERSION``). An entry is written to a temporary folder and renamed into place, so it is
complete or absent. Per-frame arrays are small (~0.5 KB per frame, ~7 MB for 10 minutes); PNCCs are not
stored: they are a function of the stored coefficients and render faster (~1 ms at 256 px) than they would
read back, so dubbing renders the few it needs per chunk.

Outside the tracked face's segments (frames with no face, runs shorter than ``min_segment``) ``found`` is
False and the coefficients are zero; dubbing passes those frames through.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from src.data.reference_selection import inference_lip_references
from src.geometry.fitting import FitConfig
from src.inference.fit_windows import count_windows, fit_segment
from src.media import decode
from src.media.contract import CROP_SIZE, FPS
from src.media.frames import FrameReader
from src.tracking.crops import crop_frame, crop_landmarks
from src.tracking.tracker import TrackConfig, track_video

VERSION = 1  # bump when the analysis changes what it computes
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnalysisConfig:
    track: TrackConfig = field(default_factory=TrackConfig)  # track.face_index: which face (0 = largest)
    fit_steps: int = FitConfig.steps  # Adam steps per fit window (the training data's default)
    fit_window: int = 250  # frames per fit window
    fit_overlap: int = 25  # frames shared by neighbouring fit windows (crossfaded)
    min_segment: int = 3  # face runs shorter than this pass through undubbed
    n_lip: int = 25  # Algorithm 1's lip references at inference
    # the fit's landmark calibration (FitConfig.landmark_calibration): "auto" = the face model's packaged one, or a
    # file, e.g. the real-face refinement the renderer's training shards were fitted with (data_prep.calibrate_real)
    landmark_calibration: str = "auto"

    def __post_init__(self) -> None:
        if self.fit_steps < 0 or self.min_segment < 1 or self.n_lip < 1:
            raise ValueError(f"AnalysisConfig: need fit_steps >= 0, min_segment >= 1, n_lip >= 1, got "
                             f"{self.fit_steps}, {self.min_segment}, {self.n_lip}")
        if self.fit_window < 1 or not 0 <= 2 * self.fit_overlap < self.fit_window:
            raise ValueError(f"AnalysisConfig: need fit_window >= 1 and 0 <= fit_overlap < fit_window / 2, got "
                             f"{self.fit_window} and {self.fit_overlap}")


@dataclass
class ReferenceAnalysis:
    """Everything dubbing needs to know about the reference video. T frames at 25 fps; K_id, K_exp modes."""

    video: Path
    key: str
    n_frames: int
    frame_size: tuple[int, int]  # (H, W)
    segments: list[tuple[int, int]]  # [start, end) runs of the tracked face
    found: np.ndarray  # (T,) bool, inside a segment
    boxes: np.ndarray  # (T, 3) crop boxes (cx, cy, side) in frame pixels, NaN outside segments
    lower_landmarks: np.ndarray  # (T, n, 2) frame pixels of the detected landmarks on the model's lower face
    alpha: np.ndarray  # (T, K_id)
    beta: np.ndarray  # (T, K_exp)
    pose: np.ndarray  # (T, 6) in pixels of the 256 crop
    opening: np.ndarray  # (T,) mouth opening (mm) of M(alpha, beta_t), NaN outside segments
    reproj_px: np.ndarray  # (T,) fit's mean landmark error (256-crop px), NaN outside segments
    lip_refs: np.ndarray  # (n_lip,) frames: Algorithm 1's lip references
    lip_crops: np.ndarray  # (n_lip, 256, 256, 3) uint8 crops of those frames
    seconds: dict = field(default_factory=dict)  # time per analysis step (when computed, not when loaded)
    cache_hit: bool = False

    ARRAYS = ("found", "boxes", "lower_landmarks", "alpha", "beta", "pose", "opening", "reproj_px", "lip_refs",
              "lip_crops")

    def face_segment(self, frame: int) -> tuple[int, int]:
        """The segment holding ``frame`` (which must have a face)."""
        for start, end in self.segments:
            if start <= frame < end:
                return start, end
        raise ValueError(f"frame {frame} is in no face segment")


def analyse_reference(video: str | Path, fm, cfg: AnalysisConfig, cache_dir: str | Path | None,
                      progress: bool = True) -> ReferenceAnalysis:
    """The analysis of ``video`` (module docstring), from the cache when there, else computed (and cached
    when ``cache_dir`` is given)."""
    video = Path(video)
    start = time.perf_counter()
    key = cache_key(video, fm, cfg)
    hashed = time.perf_counter() - start
    entry = Path(cache_dir) / key if cache_dir is not None else None
    if entry is not None and (entry / "meta.json").is_file():
        try:
            analysis = load(entry, video)
            analysis.seconds = {"hash": hashed}
            return analysis
        except (OSError, ValueError, KeyError) as err:  # a damaged entry (disk full, edited by hand): redo it
            log.warning("reference cache entry %s is unreadable (%s); analysing the video again", entry, err)
    analysis = compute(video, key, fm, cfg, progress)
    analysis.seconds["hash"] = hashed
    if entry is not None:
        save(analysis, entry, cfg)
    return analysis


def cache_key(video: Path, fm, cfg: AnalysisConfig) -> str:
    """sha256 of the video's bytes and the settings."""
    digest = hashlib.sha256()
    with open(video, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    settings = {"version": VERSION, "face_model": fm.name, "crop": CROP_SIZE, "fps": FPS, **_settings(cfg)}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:32]


def _settings(cfg: AnalysisConfig) -> dict:
    settings = {**asdict(cfg), "fit": asdict(_fit_config(cfg))}
    if cfg.landmark_calibration != "auto":  # the file's content, not only its name, decides the fit
        with open(Path(cfg.landmark_calibration).with_suffix(".npy"), "rb") as f:
            settings["landmark_calibration_sha256"] = hashlib.sha256(f.read()).hexdigest()
    return settings


def _fit_config(cfg: AnalysisConfig) -> FitConfig:
    return FitConfig(steps=cfg.fit_steps, landmark_calibration=cfg.landmark_calibration)


def compute(video: Path, key: str, fm, cfg: AnalysisConfig, progress: bool) -> ReferenceAnalysis:
    info = decode.probe(video)
    n = decode.n_output_frames(info.duration_s, FPS)
    seconds = {}
    t0 = time.perf_counter()
    frames = tqdm(decode.iter_frames(video, FPS), total=n, desc="reference: track", unit="frame",
                  disable=not progress, file=sys.stderr)
    track = track_video(frames, cfg.track, min_frames=cfg.min_segment)
    seconds["track"] = time.perf_counter() - t0
    if not track.segments:
        which = "the largest face" if cfg.track.face_index == 0 else f"face {cfg.track.face_index} (--face)"
        raise ValueError(f"--video {video}: {which} was found in none of its {n} frames (or only in runs shorter "
                         f"than {cfg.min_segment} frames); nothing to dub")
    found = np.zeros(n, bool)
    for s, e in track.segments:
        found[s:e] = True
    t0 = time.perf_counter()
    coeffs = _fit(fm, track, cfg, progress)
    seconds["fit"] = time.perf_counter() - t0
    opening = _mouth_opening(fm, coeffs["alpha"], coeffs["beta"], found)
    faces = np.flatnonzero(found)
    lip_refs = faces[inference_lip_references(opening[faces], cfg.n_lip)]
    t0 = time.perf_counter()
    lip_crops = _crops(video, lip_refs, track.boxes)
    seconds["lip_refs"] = time.perf_counter() - t0
    lower = lower_landmark_indices(fm)
    return ReferenceAnalysis(video, key, n, tuple(track.frame_size), [tuple(map(int, s)) for s in track.segments],
                             found, track.boxes.astype(np.float32), track.landmarks[:, lower].astype(np.float32),
                             opening=opening, lip_refs=lip_refs, lip_crops=lip_crops, seconds=seconds, **coeffs)


def _fit(fm, track, cfg: AnalysisConfig, progress: bool) -> dict[str, np.ndarray]:
    """Windowed fit of every segment -> per-frame alpha, beta, pose, reproj_px (zero / NaN outside)."""
    n = len(track.landmarks)
    out = {"alpha": np.zeros((n, fm.n_id), np.float32), "beta": np.zeros((n, fm.n_exp), np.float32),
           "pose": np.zeros((n, 6), np.float32), "reproj_px": np.full(n, np.nan, np.float32)}
    total = sum(count_windows(e - s, cfg.fit_window, cfg.fit_overlap) for s, e in track.segments)
    bar = tqdm(total=total, desc="reference: 3DMM fit", unit="window", disable=not progress, file=sys.stderr)
    fit_cfg = _fit_config(cfg)
    with bar:
        for s, e in track.segments:
            result = fit_segment(fm, lambda a, b: crop_landmarks(track, s + a, s + b), e - s, fit_cfg,
                                 cfg.fit_window, cfg.fit_overlap, on_window=lambda: bar.update())
            for name in out:
                out[name][s:e] = getattr(result, name)
    return out


def _mouth_opening(fm, alpha: np.ndarray, beta: np.ndarray, found: np.ndarray) -> np.ndarray:
    """(T,) mouth opening (mm) of the canonical geometry M(alpha_t, beta_t, 0), in blocks (bounded memory)."""
    opening = np.full(len(beta), np.nan, np.float32)
    faces = np.flatnonzero(found)
    with torch.no_grad():
        for i in range(0, len(faces), 1024):
            idx = faces[i:i + 1024]
            verts = fm.canonical_vertices(torch.from_numpy(alpha[idx]), torch.from_numpy(beta[idx]))  # (b, L, 3)
            opening[idx] = fm.mouth_opening(verts).numpy()
    return opening


def _crops(video: Path, frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(n, 256, 256, 3) uint8 crops of the given frames (in their order)."""
    crops = {}
    with FrameReader(video, FPS) as reader:
        for j in sorted(set(frames.tolist())):
            crops[j] = crop_frame(reader.read(j, j + 1)[0], boxes[j], CROP_SIZE)[0]
    return np.stack([crops[j] for j in frames.tolist()])


def lower_landmark_indices(fm) -> np.ndarray:
    """MediaPipe landmarks that sit on the face model's lower face (none when the model has no MediaPipe
    correspondence): the original jaw and lips, for the paste mask."""
    lmk = fm.lmk478.numpy()
    if (lmk < 0).any():
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.isin(lmk, fm.lower.numpy()))


# ------------------------------------------------------------------------------------------- cache --
def save(analysis: ReferenceAnalysis, entry: Path, cfg: AnalysisConfig) -> None:
    """Write the entry atomically (temporary folder, then rename); an entry another process wrote first wins."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = entry.parent / f".tmp-{entry.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        np.savez(tmp / "analysis.npz", **{name: getattr(analysis, name) for name in ReferenceAnalysis.ARRAYS})
        meta = {"video": str(analysis.video), "key": analysis.key, "n_frames": analysis.n_frames,
                "frame_size": list(analysis.frame_size), "segments": [list(s) for s in analysis.segments],
                "settings": _settings(cfg), "version": VERSION, "seconds": analysis.seconds}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        os.replace(tmp, entry)
    except OSError:
        if not (entry / "meta.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load(entry: Path, video: Path) -> ReferenceAnalysis:
    meta = json.loads((entry / "meta.json").read_text())
    if meta.get("version") != VERSION:
        raise ValueError(f"version {meta.get('version')} != {VERSION}")
    with np.load(entry / "analysis.npz", allow_pickle=False) as data:
        arrays = {name: data[name] for name in ReferenceAnalysis.ARRAYS}
    return ReferenceAnalysis(video, meta["key"], int(meta["n_frames"]), tuple(meta["frame_size"]),
                             [tuple(s) for s in meta["segments"]], cache_hit=True, **arrays)


def default_cache_dir() -> Path:
    """$PERSONATALK_CACHE, else $XDG_CACHE_HOME/personatalk/dub, else ~/.cache/personatalk/dub."""
    if os.environ.get("PERSONATALK_CACHE"):
        return Path(os.environ["PERSONATALK_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "personatalk" / "dub"
