"""Decoding step: probe a video, stream its frames at a constant frame rate, read its audio (PyAV).

Outputs, in memory for the next step (tracking, training-data preparation, dubbing): ``probe(path) -> VideoInfo``;
``iter_frames(path, fps)`` yielding ``Frame(index, time_s, image)`` with ``image`` (H, W, 3) uint8 RGB, upright; and
``read_audio(path, sample_rate, n_frames=, fps=)`` -> mono float32 in [-1, 1] aligned to those frames.
Frames are decoded one at a time (never a whole video in memory).

The timeline, shared by frames and audio:

* t = 0 is the video stream's start time (the presentation time of its first frame); the clip lasts
  ``duration_s``, the video stream's duration (first frame's start to last frame's end).
* Output frame k has time k / fps and shows the source frame displayed then: the last source frame
  with pts <= k / fps (the first frame for any earlier time), so frames are duplicated or dropped as
  the rates require, variable frame rate included. There are ``n_output_frames(duration_s, fps)`` =
  floor(duration_s * fps) of them.
* Audio sample j has time j / sample_rate on the same timeline: audio before t = 0 is dropped, audio
  that starts after t = 0 is preceded by silence. Given ``n_frames`` and ``fps`` the audio is cut or
  zero-padded to round(n_frames / fps * sample_rate) samples, so frame k covers samples
  [k / fps * sample_rate, (k + 1) / fps * sample_rate). AAC encoder priming is removed by FFmpeg's mp4
  demuxer (the edit list), so a click at 1.0 s in the source decodes at 1.0 s.

Rotation: ``VideoInfo.rotation`` is the clockwise angle (0, 90, 180 or 270) the stored frames must be
turned to display upright, read from the stream's display matrix (FFmpeg attaches it to every decoded
frame) or else the legacy ``rotate`` metadata tag; width and height are reported after rotation.
Mirroring in a display matrix is ignored.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, NamedTuple

import av
import numpy as np

from src.media.contract import FPS, SAMPLE_RATE


class DecodeError(ValueError):
    """A file that cannot be read as the media it should be; the message names the file."""


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe`` finds. ``width``/``height`` are after rotation; ``n_frames`` is the source's
    frame count (from the container, else estimated as duration * fps); ``start_s`` is where t = 0
    sits on the file's own clock."""

    path: Path
    width: int
    height: int
    fps: float
    duration_s: float
    n_frames: int
    rotation: int
    has_audio: bool
    audio_rate: int | None
    codec: str
    start_s: float


class Frame(NamedTuple):
    """Output frame ``index`` (k), its time k / fps in s, and its image. A duplicated source frame is
    yielded as the same array each time: copy it before writing into it."""

    index: int
    time_s: float
    image: np.ndarray  # (H, W, 3) uint8 RGB, upright


def n_output_frames(duration_s: float, fps: float) -> int:
    """floor(duration_s * fps): the output frames whose time k / fps lies inside the clip. The 1e-6
    absorbs float error so that a clip of exactly 250 frames at 25 fps gives 250, not 249."""
    return int(math.floor(duration_s * fps + 1e-6))


def probe(path: str | Path) -> VideoInfo:
    """Size (upright), frame rate, duration, rotation, audio and codec of the video at ``path``."""
    path = Path(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        start_pts = _start_pts(stream)
        duration = _stream_duration(container, stream, start_pts)
        audio = container.streams.audio[0] if container.streams.audio else None
        first = _first_frame(container, stream, path)
        rotation = _rotation(first, stream, path)
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
    if duration is None:
        duration = _scan_duration(path, start_pts)
    if not duration > 0:
        raise DecodeError(f"{path}: the video stream has no duration ({duration} s)")
    width, height = (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
    n_frames = stream.frames or round(duration * fps)
    return VideoInfo(path=path, width=width, height=height, fps=fps or n_frames / duration,
                     duration_s=duration, n_frames=n_frames, rotation=rotation,
                     has_audio=audio is not None, audio_rate=audio.rate if audio is not None else None,
                     codec=stream.codec_context.name, start_s=float(start_pts * stream.time_base))


def iter_frames(path: str | Path, fps: float = FPS) -> Iterator[Frame]:
    """Stream the video at ``path`` resampled to ``fps`` (see the module docstring for the rule),
    upright RGB, exactly ``n_output_frames(probe(path).duration_s, fps)`` frames."""
    rate = _rate(fps, "fps")
    path = Path(path)
    info = probe(path)
    n = n_output_frames(info.duration_s, fps)
    k, shown, image = 0, None, None
    for t, frame in _source_frames(path):
        shown = frame if shown is None else shown  # the first frame also covers any time before it
        while k < n and k < t * rate:  # outputs before this frame's time show the one before it
            image = _upright(shown, info.rotation) if image is None else image
            yield Frame(k, k / fps, image)
            k += 1
        if k >= n:
            return
        if shown is not frame:
            shown, image = frame, None  # converted only if an output shows it: dropped frames cost no RGB
    if shown is None:
        raise DecodeError(f"{path}: the video stream decoded to no frames")
    while k < n:  # the stream ended before its declared duration: hold the last frame
        image = _upright(shown, info.rotation) if image is None else image
        yield Frame(k, k / fps, image)
        k += 1


def rotate_upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a stored (H, W, C) frame ``rotation`` degrees clockwise (0, 90, 180 or 270)."""
    if rotation not in (0, 90, 180, 270):
        raise ValueError(f"rotation must be 0, 90, 180 or 270 (degrees clockwise), got {rotation!r}")
    if rotation == 0:
        return image
    return np.ascontiguousarray(np.rot90(image, k=-rotation // 90))  # rot90 turns anticlockwise for k > 0


def _upright(frame: av.VideoFrame, rotation: int) -> np.ndarray:
    return rotate_upright(frame.to_ndarray(format="rgb24"), rotation)  # (H, W, 3) uint8


def read_audio(path: str | Path, sample_rate: int = SAMPLE_RATE, n_frames: int | None = None,
               fps: float | None = None) -> np.ndarray | None:
    """Mono float32 audio in [-1, 1] at ``sample_rate`` on the video's timeline (module docstring);
    None when the file has no audio stream. With ``n_frames`` and ``fps`` (the output of
    ``iter_frames``) the result has exactly round(n_frames / fps * sample_rate) samples."""
    if (n_frames is None) != (fps is None):
        raise ValueError(f"pass n_frames and fps together or neither, got n_frames={n_frames!r}, fps={fps!r}")
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int (Hz), got {sample_rate!r}")
    path = Path(path)
    with _open(path) as container:
        if not container.streams.audio:
            return None
        origin = None
        if container.streams.video:
            video = container.streams.video[0]
            origin = float(_start_pts(video) * video.time_base)
        first_s, audio = _decode_audio(container, container.streams.audio[0], sample_rate, path)
    origin = first_s if origin is None else origin
    audio = _shift(audio, round((first_s - origin) * sample_rate))
    if n_frames is not None:
        if not isinstance(n_frames, int) or n_frames < 0:
            raise ValueError(f"n_frames must be an int >= 0, got {n_frames!r}")
        audio = _fit(audio, round(Fraction(n_frames) / _rate(fps, "fps") * sample_rate))
    return np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)


def _decode_audio(container, stream, sample_rate: int, path: Path) -> tuple[float, np.ndarray]:
    """(start time in s of the first decoded audio frame, mono float32 samples). Stereo is averaged
    ((L + R) / 2, which cannot clip; FFmpeg's own stereo-to-mono gives (L + R) / sqrt(2)); other
    layouts use FFmpeg's standard downmix to mono."""
    channels = stream.codec_context.channels
    layout = "stereo" if channels == 2 else "mono"
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=sample_rate)
    chunks, first_s = [], None
    try:
        for frame in container.decode(stream):
            if first_s is None:
                first_s = float(frame.time) if frame.time is not None else 0.0
            chunks.extend(out.to_ndarray().mean(axis=0) for out in resampler.resample(frame))
        chunks.extend(out.to_ndarray().mean(axis=0) for out in resampler.resample(None))
    except av.FFmpegError as err:
        raise DecodeError(f"{path}: audio decoding failed ({err})") from err
    audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    return (first_s or 0.0), audio


def _shift(audio: np.ndarray, lead: int) -> np.ndarray:
    """Audio starting ``lead`` samples after t = 0: pad silence before it (lead > 0) or drop the part
    before t = 0 (lead < 0)."""
    if lead >= 0:
        return np.concatenate([np.zeros(lead, audio.dtype), audio])
    return audio[-lead:]


def _fit(audio: np.ndarray, length: int) -> np.ndarray:
    """Cut or zero-pad at the end to ``length`` samples."""
    if len(audio) >= length:
        return audio[:length]
    return np.concatenate([audio, np.zeros(length - len(audio), audio.dtype)])


def _source_frames(path: Path) -> Iterator[tuple[Fraction, av.VideoFrame]]:
    """Decoded frames in presentation order with their exact time on the clip's timeline (s)."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        start, tb = _start_pts(stream), stream.time_base
        step = 1 / Fraction(stream.average_rate or stream.guessed_rate or 25)
        t = None
        try:
            for frame in container.decode(stream):
                # a frame without pts (rare, broken muxing) is placed one nominal frame after the last
                t = (frame.pts - start) * tb if frame.pts is not None else (t + step if t is not None else 0)
                yield Fraction(t), frame
        except av.FFmpegError as err:
            raise DecodeError(f"{path}: video decoding failed after t={float(t or 0):.3f}s ({err})") from err


def _open(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"media file not found: {path}")
    try:
        return av.open(str(path))
    except av.FFmpegError as err:
        raise DecodeError(f"{path}: not a readable media file ({err})") from err


def _video_stream(container, path: Path):
    if not container.streams.video:
        raise DecodeError(f"{path}: no video stream (found {[s.type for s in container.streams]})")
    return container.streams.video[0]


def _start_pts(stream) -> int:
    return stream.start_time if stream.start_time is not None else 0


def _stream_duration(container, stream, start_pts: int) -> float | None:
    """The video stream's duration in s from the container header, None when it does not say."""
    if stream.duration:
        return float(stream.duration * stream.time_base)
    if container.duration:  # in microseconds, from the container's own start
        end = (container.duration + (container.start_time or 0)) / 1e6
        return end - float(start_pts * stream.time_base)
    return None


def _scan_duration(path: Path, start_pts: int) -> float:
    """Duration from the packets themselves (last pts + its duration), for headers that omit it."""
    with _open(path) as container:
        stream = container.streams.video[0]
        end = max((p.pts + (p.duration or 0) for p in container.demux(stream) if p.pts is not None),
                  default=None)
        if end is None:
            raise DecodeError(f"{path}: the video stream has no timestamped packets")
        return float((end - start_pts) * stream.time_base)


def _first_frame(container, stream, path: Path) -> av.VideoFrame:
    try:
        for frame in container.decode(stream):
            return frame
    except av.FFmpegError as err:
        raise DecodeError(f"{path}: the video stream cannot be decoded ({err})") from err
    raise DecodeError(f"{path}: the video stream decoded to no frames")


def _rotation(frame: av.VideoFrame, stream, path: Path) -> int:
    """Clockwise display rotation: display matrix (anticlockwise in FFmpeg) or the ``rotate`` tag."""
    degrees = -frame.rotation
    if degrees == 0 and "rotate" in stream.metadata:
        degrees = int(float(stream.metadata["rotate"]))
    degrees %= 360
    if degrees not in (0, 90, 180, 270):
        raise DecodeError(f"{path}: display rotation {degrees} degrees is not a multiple of 90")
    return degrees


def _rate(fps, name: str) -> Fraction:
    if isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction)) or not fps > 0:
        raise ValueError(f"{name} must be a positive number (frames per second), got {fps!r}")
    return Fraction(fps).limit_denominator(1_000_000)
