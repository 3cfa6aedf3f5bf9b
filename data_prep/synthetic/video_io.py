"""Writing a clip: H.264 video (yuv420p, 25 fps) with the speech as an AAC track, in one mp4, atomically.

The file is written under a temporary name next to the target and renamed when complete, so an
interrupted run never leaves a half-written clip under its final name. Encoding is single-threaded and
bit-exact, so the same frames and audio always give the same bytes.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import av
import numpy as np

AUDIO_CHUNK = 1024  # samples per AAC frame


def write_mp4(path: str | os.PathLike, frames: Iterable[np.ndarray], audio: np.ndarray, sample_rate: int,
              fps: int = 25, crf: int = 18) -> Path:
    """Encode (H, W, 3) uint8 frames and mono float audio in [-1, 1] to ``path`` (an .mp4)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        with av.open(str(tmp), "w", format="mp4", options={"fflags": "+bitexact"}) as out:
            video = out.add_stream("libx264", rate=fps)
            video.pix_fmt = "yuv420p"
            video.options = {"crf": str(crf), "preset": "fast", "threads": "1", "flags": "+bitexact"}
            sound = out.add_stream("aac", rate=sample_rate, layout="mono")
            sound.options = {"flags": "+bitexact"}
            _encode_video(out, video, frames)
            _encode_audio(out, sound, audio, sample_rate)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _encode_video(out, stream, frames: Iterable[np.ndarray]) -> None:
    for i, frame in enumerate(frames):
        if i == 0:
            stream.height, stream.width = frame.shape[:2]
        out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
    out.mux(stream.encode(None))


def _encode_audio(out, stream, audio: np.ndarray, sample_rate: int) -> None:
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
    for start in range(0, len(pcm), AUDIO_CHUNK):
        chunk = pcm[None, start:start + AUDIO_CHUNK]
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="s16", layout="mono")
        frame.sample_rate = sample_rate
        frame.pts = start
        frame.time_base = Fraction(1, sample_rate)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def read_mp4(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Small-clip reader for tests and previews: (T, H, W, 3) uint8 frames, mono float32 audio, fps, sr."""
    with av.open(str(path)) as container:
        vstream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(vstream)])
        fps = float(vstream.average_rate)
    with av.open(str(path)) as container:
        astream = container.streams.audio[0]
        sr = astream.rate
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(astream)]).astype(np.float32)
    if audio.dtype.kind == "i" or np.abs(audio).max() > 1.5:
        audio = audio / 32768.0
    return frames, audio, fps, sr
