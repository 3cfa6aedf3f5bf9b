"""Dubbing (docs/design.md, "Dubbing"): any reference video + any audio -> the video with the lips re-synced
to the audio.

    check the flags, paths and inputs  check_paths, check_inputs: in seconds, before any work
    decode the target audio            audio: 16 kHz for the model, voice-activity gate
    analyse the reference (cached)     reference_analysis: track, crop boxes, 3DMM fit, lip references
    timeline                           timeline: ping-pong the reference if the audio is longer, else cut
    per chunk of output frames         geometry: stage 1 (windowed, crossfaded, gated), composed and posed
                                       render: PNCC + lip mask, Algorithm 1 references, stage 2 in batches
                                       paste: each face into its full frame with a feathered mask
                                       writer: H.264 + AAC, synthetic-media tags, atomic
    frames without a face              passed through as decoded

Streaming: the loop holds one chunk of full-resolution frames (``DubConfig.chunk`` plus the few face
references around them), one or two stage-1 windows and the lip references; per-frame data of the whole
video is coefficients and boxes only (~0.5 KB per frame) plus the target audio.

``Dubber`` loads the two checkpoints once (batch mode reuses it); ``dub`` is the one-call API.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import av
import cv2
import numpy as np
import torch
from tqdm import tqdm

from src.geometry.pncc import render_vertices
from src.inference.audio import VadConfig, load_target_audio, voice_activity
from src.inference.checkpoints import check_face_models, load_stage, render_size, weights_banner
from src.inference.geometry import (
    GeometryConfig,
    LowerFaceStream,
    reference_vertices,
    stage_one_inputs,
    target_vertices,
)
from src.inference.paste import PasteConfig, crop_mask, paste_face
from src.inference.reference_analysis import AnalysisConfig, ReferenceAnalysis, analyse_reference, default_cache_dir
from src.inference.render import ReferenceBank, RenderConfig, render_faces
from src.inference.timeline import source_frames
from src.inference.timing import StageTimes
from src.inference.writer import SYNTHETIC_COMMENT, VideoWriter
from src.media.contract import FPS
from src.media.decode import DecodeError, probe
from src.media.frames import FrameReader
from src.models.renderer.attention import set_inference_temperature
from src.tracking.crops import to_crop
from src.tracking.tracker import TrackConfig

log = logging.getLogger(__name__)
MAX_FACES = TrackConfig().max_faces
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
IMAGE_CODECS = ("png", "mjpeg", "bmp", "gif", "webp", "tiff", "jpeg2000", "jpegls")
MIN_REFERENCE_FRAMES = 2  # a reference video needs motion to sample lips from; one frame is a still image
MIN_FREE_BYTES = 64 << 20  # the output's folder must have this much free space before the work starts
LONG_OUTPUT_RATIO = 20  # warn when the output is this many times longer than the reference (and over a minute)


@dataclass
class DubConfig:
    """Every setting of a dub; the defaults are the paper's (Algorithm 1: N_f = 5, N_l = 25)."""

    face: int = 0  # which face: 0 = the largest, 1 = the second largest, ...
    cache_dir: Path | None = field(default_factory=default_cache_dir)  # None: no reference cache
    chunk: int = 32  # output frames per chunk (full-resolution frames held at once)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)  # its track.face_index is set from `face`
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    paste: PasteConfig = field(default_factory=PasteConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    crf: int = 6  # x264 quality: 6 keeps untouched pixels > 45 dB PSNR from the input (writer.py)
    preset: str = "fast"
    synthetic_metadata: bool = True
    save_masks: Path | None = None  # a folder for the paste mask of every output frame (PNG), for inspection
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.face, bool) or not isinstance(self.face, int) or not 0 <= self.face < MAX_FACES:
            raise ValueError(f"--face must be an integer in [0, {MAX_FACES - 1}] (0 = the largest face, 1 = the "
                             f"second largest, ...), got {self.face!r}")
        if self.chunk < 1:
            raise ValueError(f"--chunk must be >= 1 (output frames per chunk), got {self.chunk}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"--crf must be in [0, 51] (x264: 0 lossless, 6 the default, 23 x264's), got {self.crf}")
        if self.preset not in X264_PRESETS:
            raise ValueError(f"--preset must be an x264 preset ({', '.join(X264_PRESETS)}), got {self.preset!r}")

    def analysis_config(self) -> AnalysisConfig:
        return replace(self.analysis, track=replace(self.analysis.track, face_index=self.face))


@dataclass
class DubResult:
    out: Path
    n_frames: int  # output frames (25 fps)
    dubbed_frames: int  # of which a face was re-rendered
    reference_frames: int
    cache_hit: bool
    times: StageTimes
    untrained: bool


class Dubber:
    """The two stages loaded from their checkpoints, on ``device``; ``dub`` many videos with them.
    ``attention_temperature``: the renderer's softmax temperature (``ReferenceAttention.inference_temperature``;
    None: the checkpoint's own)."""

    def __init__(self, geometry_ckpt: str | Path | None, render_ckpt: str | Path | None, device: str = "cpu",
                 attention_temperature: float | None = None):
        if device not in ("cpu", "cuda"):
            raise ValueError(f"--device must be cpu or cuda, got {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: torch sees no CUDA device here; use --device cpu")
        self.device = device
        self.geometry = load_stage("geometry", geometry_ckpt, device)
        self.render = load_stage("render", render_ckpt, device)
        if attention_temperature is not None:
            set_inference_temperature(self.render.net, attention_temperature)
        self.fm = check_face_models(self.geometry, self.render)
        self.size = render_size(self.render)
        self.banner = weights_banner(self.geometry, self.render)
        if self.banner:
            log.warning("\n%s", self.banner)

    def dub(self, video: str | Path, audio: str | Path, out: str | Path, cfg: DubConfig | None = None) -> DubResult:
        """Dub ``video`` with ``audio`` into ``out`` (.mp4); see the module docstring."""
        cfg = cfg or DubConfig()
        video, audio, out = check_paths(video, audio, out)
        info = check_inputs(video, audio)
        out.parent.mkdir(parents=True, exist_ok=True)
        times = StageTimes(cuda=self.device == "cuda")
        with times("audio"):  # before the reference analysis: a bad audio file stops the dub in seconds
            target = load_target_audio(audio)
            gate = voice_activity(target.samples, cfg.vad)
        warn_long_output(target.n_frames, info.n_frames, video, audio)
        analysis = analyse_reference(video, self.fm, cfg.analysis_config(), cfg.cache_dir, cfg.progress)
        for stage, seconds in analysis.seconds.items():
            times.add(stage, seconds, 0 if stage == "hash" else analysis.n_frames)
        with times("geometry"):
            inputs = stage_one_inputs(self.geometry.net, self.fm, analysis, cfg.geometry, self.device)
        job = _Job(self, cfg, analysis, times, source_frames(target.n_frames, analysis.n_frames),
                   LowerFaceStream(self.geometry.net, inputs, target.samples, gate, cfg.geometry, self.device),
                   ReferenceBank(self.fm, analysis, self.size, cfg.render))
        height, width = analysis.frame_size
        with VideoWriter(out, width, height, target.mux, target.mux_rate, self.metadata(cfg), cfg.crf,
                         cfg.preset) as writer, FrameReader(video) as reader:
            if reader.n_frames != analysis.n_frames:
                raise RuntimeError(f"{video}: {reader.n_frames} frames now, {analysis.n_frames} when analysed")
            job.run(reader, writer)
        return DubResult(out, target.n_frames, job.dubbed, analysis.n_frames, analysis.cache_hit, times,
                         self.banner is not None)

    def metadata(self, cfg: DubConfig) -> dict[str, str]:
        if not cfg.synthetic_metadata:
            log.warning("--no-synthetic-metadata: the output does not say that it is AI-generated")
            return {}
        return {"comment": SYNTHETIC_COMMENT, "synthetic": "1", "generator": "PersonaTalk dubbing (python -m src.dub)",
                "personatalk_weights": "untrained-or-demo" if self.banner else "trained"}


def dub(video: str | Path, audio: str | Path, out: str | Path, geometry_ckpt: str | Path | None,
        render_ckpt: str | Path | None, cfg: DubConfig | None = None, device: str = "cpu") -> DubResult:
    """One dub: load both checkpoints, dub ``video`` with ``audio`` into ``out``."""
    return Dubber(geometry_ckpt, render_ckpt, device).dub(video, audio, out, cfg)


def check_paths(video, audio, out) -> tuple[Path, Path, Path]:
    """The three paths as Paths; clear errors for a missing input, a non-.mp4 output, one that would overwrite an
    input or is a folder, and an output folder that cannot be written or has no room, all before any work."""
    video, audio, out = Path(video), Path(audio), Path(out)
    for flag, path in (("--video", video), ("--audio", audio)):
        if path.is_dir():
            raise ValueError(f"{flag} {path}: is a folder; give a file")
        if not path.is_file():
            raise FileNotFoundError(f"{flag} {path}: no such file")
    if out.is_dir():
        raise ValueError(f"--out {out}: is a folder; give the output file's name (OUT.mp4)")
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"--out {out}: the output must be an .mp4 file (H.264 + AAC)")
    if out.resolve() in (video.resolve(), audio.resolve()):
        raise ValueError(f"--out {out}: would overwrite an input")
    check_writable(out)
    return video, audio, out


def check_writable(out: Path) -> None:
    """``out``'s folder (or the nearest one that exists, where it would be created) is writable and has
    ``MIN_FREE_BYTES`` free."""
    folder = out.resolve().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"--out {out}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: the folder {folder} is not writable")
    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_BYTES:
        raise ValueError(f"--out {out}: only {free / 2**20:.1f} MiB free in {folder} (a dub needs at least "
                         f"{MIN_FREE_BYTES >> 20} MiB)")


def check_inputs(video: Path, audio: Path):
    """Both inputs decodable as what they should be, in seconds, before the reference analysis: the video a
    moving picture of at least ``MIN_REFERENCE_FRAMES`` frames (not an image), the audio a file with an audio
    stream. Returns the video's ``VideoInfo``."""
    still = (f"--video {video}: is a still image, not a video; the reference must be a video of the person "
             f"speaking (at least {MIN_REFERENCE_FRAMES} frames)")
    if video.suffix.lower() in IMAGE_EXTS:
        raise ValueError(still)
    try:
        info = probe(video)
    except DecodeError as err:
        raise ValueError(f"--video {video}: not a readable video ({err})") from None
    if info.codec in IMAGE_CODECS and info.n_frames <= 1:
        raise ValueError(still)
    if info.n_frames < MIN_REFERENCE_FRAMES:
        raise ValueError(f"--video {video}: too short: {info.n_frames} frame{'s' * (info.n_frames != 1)} "
                         f"({info.duration_s:.2f} s); the "
                         f"reference needs at least {MIN_REFERENCE_FRAMES} frames of the person")
    if not has_audio_stream(audio):
        raise ValueError(f"--audio {audio}: the file has no audio stream")
    return info


def has_audio_stream(path: Path) -> bool:
    try:
        with av.open(str(path)) as container:
            return bool(container.streams.audio)
    except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise ValueError(f"--audio {path}: not a readable audio file ({type(err).__name__}: {err})") from None


def warn_long_output(output_frames: int, reference_frames: int, video: Path, audio: Path) -> None:
    """A warning when the audio is much longer than the reference: the reference is played back and forth."""
    if output_frames > LONG_OUTPUT_RATIO * reference_frames and output_frames > 60 * FPS:
        passes = output_frames / max(reference_frames, 1)
        log.warning("--audio %s is %.1f s, the reference video %s only %.1f s: the output repeats the reference "
                    "back and forth %.0f times (%d frames to render). Trim the audio or give a longer reference.",
                    audio, output_frames / FPS, video, reference_frames / FPS, passes, output_frames)


class _Job:
    """One dub's streaming loop over chunks of output frames."""

    def __init__(self, dubber: Dubber, cfg: DubConfig, analysis: ReferenceAnalysis, times: StageTimes,
                 src: np.ndarray, stream: LowerFaceStream, bank: ReferenceBank):
        self.d, self.cfg, self.a, self.times = dubber, cfg, analysis, times
        self.src, self.stream, self.bank = src, stream, bank
        self.dubbed = 0
        if cfg.save_masks is not None:
            Path(cfg.save_masks).mkdir(parents=True, exist_ok=True)

    def run(self, reader: FrameReader, writer: VideoWriter) -> None:
        n = len(self.src)
        with tqdm(total=n, desc="dub", unit="frame", disable=not self.cfg.progress, file=sys.stderr) as bar:
            for start in range(0, n, self.cfg.chunk):
                stop = min(n, start + self.cfg.chunk)
                self.chunk(start, stop, reader, writer)
                bar.update(stop - start)

    def chunk(self, start: int, stop: int, reader: FrameReader, writer: VideoWriter) -> None:
        frames = self.src[start:stop]  # (c,) reference frame of each output frame
        face = self.a.found[frames]  # (c,)
        with self.times("geometry", stop - start):
            offsets = self.stream.take(start, stop)  # (c, n_lower, 3) mm
        refs = [self.bank.face_references(int(r)) for r in frames[face]]
        needed = np.concatenate([frames, *refs]) if refs else frames
        with self.times("decode", stop - start):
            lo = int(needed.min())
            images = dict(enumerate(reader.read(lo, int(needed.max()) + 1), start=lo))
        faces, masks = self.faces(frames[face], offsets[face], refs, images)
        row = 0
        for k, r in zip(range(start, stop), frames.tolist()):
            image, mask = images[r], None
            if face[k - start]:
                with self.times("paste", 1):
                    image, mask = paste_face(image, faces[row], masks[row], self.a.boxes[r])
                row += 1
            with self.times("encode", 1):
                writer.write(image)
            self.save_mask(k, mask)
        self.dubbed += int(face.sum())

    def faces(self, frames: np.ndarray, offsets: np.ndarray, refs: list[np.ndarray], images: dict):
        """Rendered faces (b, S, S, 3) uint8 and paste masks (b, 256, 256) of the chunk's face frames."""
        if len(frames) == 0:
            return None, None
        fm, size, b = self.d.fm, self.d.size, len(frames)
        with self.times("pncc", b):
            target = target_vertices(fm, self.a, frames, offsets)  # (b, L, 3) 256-crop px
            pncc, lip = render_vertices(fm, target, size)  # (b, S, S, 3), (b, S, S)
        with self.times("references", b):
            self.bank.prepare({int(j): images[int(j)] for j in np.unique(np.concatenate(refs))})
        with self.times("render", b):
            faces = render_faces(self.d.render.net, pncc, lip, refs, self.bank, self.cfg.render.batch, self.d.device)
        with self.times("paste"):
            reference = reference_vertices(fm, self.a, frames)
            masks = [crop_mask(fm, target[i], reference[i], to_crop(self.a.lower_landmarks[r], self.a.boxes[r]),
                               self.cfg.paste) for i, r in enumerate(frames.tolist())]
        return faces, masks

    def save_mask(self, k: int, mask) -> None:
        if self.cfg.save_masks is None:
            return
        height, width = self.a.frame_size
        full = np.zeros((height, width), np.uint8)
        if mask is not None:
            roi, (x0, y0) = mask
            full[y0:y0 + roi.shape[0], x0:x0 + roi.shape[1]] = np.ceil(np.clip(roi, 0, 1) * 255).astype(np.uint8)
        cv2.imwrite(str(Path(self.cfg.save_masks) / f"mask_{k:06d}.png"), full)
