"""Random access to a video's frames on the 25 fps timeline of ``src.media.decode.iter_frames``.

``FrameReader(path).read(start, stop)`` returns output frames ``start .. stop - 1`` exactly as
``iter_frames(path, fps)`` yields them (same rule: output frame k shows the last source frame with
pts <= k / fps, the first frame for earlier times; same upright RGB conversion), without decoding the
video from its start every time: reading on from where the last read ended continues the open decoder,
anything else seeks to the keyframe before ``start``. Dubbing needs this for the ping-pong extension,
which plays the reference backwards, and to fetch a few reference frames anywhere in a long video while
holding only a chunk of full-resolution frames in memory.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from src.media import decode
from src.media.contract import FPS


class FrameReader:
    """Frames of ``path`` at ``fps`` by output index; keeps the last ``keep`` frames read for overlapping
    reads. A context manager (closes its decoder); not thread-safe."""

    def __init__(self, path: str | Path, fps: float = FPS, keep: int = 16, max_skip: int = 50):
        self.path = Path(path)
        self.info = decode.probe(self.path)
        self.fps = fps
        self.rate = Fraction(fps).limit_denominator(1_000_000)
        self.n_frames = decode.n_output_frames(self.info.duration_s, fps)
        self.keep, self.max_skip = keep, max_skip  # continue decoding over gaps up to max_skip frames
        self._outputs: Iterator[tuple[int, np.ndarray]] | None = None
        self._container = None
        self._next = 0  # the output index the open decoder yields next
        self._recent: OrderedDict[int, np.ndarray] = OrderedDict()
        self.seeks = 0

    def __enter__(self) -> "FrameReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container, self._outputs = None, None

    def read(self, start: int, stop: int) -> list[np.ndarray]:
        """Output frames [start, stop) as (H, W, 3) uint8 RGB arrays (shared between duplicated frames and
        with later reads: copy before writing into one)."""
        if not (isinstance(start, (int, np.integer)) and isinstance(stop, (int, np.integer))
                and 0 <= start < stop <= self.n_frames):
            raise ValueError(f"FrameReader.read: need 0 <= start < stop <= {self.n_frames} (frames of "
                             f"{self.path.name}), got start={start!r}, stop={stop!r}")
        first_missing = next((k for k in range(start, stop) if k not in self._recent), stop)
        if first_missing < stop and not (self._outputs is not None and
                                          self._next <= first_missing <= self._next + self.max_skip):
            self._recent.clear()
            self._seek(start)
        for k in range(start, min(stop, self._next)):
            if k in self._recent:
                self._recent.move_to_end(k)  # in use: evict others first
        while self._next < stop:
            k, image = next(self._outputs)
            self._next = k + 1
            self._recent[k] = image
            if len(self._recent) > max(self.keep, stop - start):
                self._recent.popitem(last=False)
        return [self._recent[k] for k in range(start, stop)]

    def _seek(self, k0: int) -> None:
        """Position the decoder so that it yields output frame k0 next."""
        self.close()
        self._container = av.open(str(self.path))
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        start_pts = stream.start_time if stream.start_time is not None else 0
        if k0 > 0:
            target = start_pts + math.floor(Fraction(k0) / self.rate / stream.time_base)
            self._container.seek(target, stream=stream, backward=True, any_frame=False)
            self.seeks += 1
        self._outputs = self._decode(stream, start_pts, k0)
        self._next = k0

    def _decode(self, stream, start_pts: int, k0: int) -> Iterator[tuple[int, np.ndarray]]:
        """iter_frames' rule from output k0 on, given a decoder at a keyframe at or before k0 / fps."""
        k, shown, image, tb = k0, None, None, stream.time_base
        for frame in self._container.decode(stream):
            if frame.pts is None:
                raise decode.DecodeError(f"{self.path}: a video frame without a timestamp; random access "
                                         "needs timestamps (re-mux the file, e.g. with ffmpeg -c copy)")
            t = Fraction((frame.pts - start_pts) * tb)
            if shown is None and k0 > 0 and t * self.rate > k0:
                # the seek landed after the frame shown at k0 (a container with a coarse index): decode from 0
                self._seek_from_start(k0)
                yield from self._outputs
                return
            shown = frame if shown is None else shown
            while k < self.n_frames and k < t * self.rate:
                image = self._upright(shown) if image is None else image
                if k >= k0:
                    yield k, image
                k += 1
            if k >= self.n_frames:
                return
            if shown is not frame:
                shown, image = frame, None
        if shown is None:
            raise decode.DecodeError(f"{self.path}: no frames decoded after seeking to frame {k0}")
        while k < self.n_frames:  # the stream ended before its declared duration: hold the last frame
            image = self._upright(shown) if image is None else image
            yield k, image
            k += 1

    def _seek_from_start(self, k0: int) -> None:
        self.close()
        self._container = av.open(str(self.path))
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        start_pts = stream.start_time if stream.start_time is not None else 0
        outputs = self._decode(stream, start_pts, 0)
        self._outputs = (item for item in outputs if item[0] >= k0)

    def _upright(self, frame: av.VideoFrame) -> np.ndarray:
        return decode.rotate_upright(frame.to_ndarray(format="rgb24"), self.info.rotation)  # (H, W, 3) uint8
