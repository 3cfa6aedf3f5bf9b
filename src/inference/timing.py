"""Seconds spent per dubbing stage, and the frames each stage handled, for the summary and
``python -m eval.speed dub``."""
from __future__ import annotations

import time
from contextlib import contextmanager

import torch

ANALYSIS_STAGES = ("hash", "track", "fit", "lip_refs")  # reference video, once per video (cached)
DUB_STAGES = ("audio", "geometry", "decode", "pncc", "references", "render", "paste", "encode")


class StageTimes:
    """``with times("render", frames=8): ...`` accumulates wall time (CUDA synchronised when ``cuda``)."""

    def __init__(self, cuda: bool = False):
        self.seconds: dict[str, float] = {}
        self.frames: dict[str, int] = {}
        self.cuda = cuda

    @contextmanager
    def __call__(self, stage: str, frames: int = 0):
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.cuda:
                torch.cuda.synchronize()
            self.add(stage, time.perf_counter() - start, frames)

    def add(self, stage: str, seconds: float, frames: int = 0) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
        self.frames[stage] = self.frames.get(stage, 0) + frames

    def table(self) -> str:
        """Markdown rows: stage, seconds, frames handled, frames/s."""
        rows = ["| stage | seconds | frames | frames/s |", "|---|---|---|---|"]
        for stage in [*ANALYSIS_STAGES, *DUB_STAGES, *sorted(set(self.seconds) - {*ANALYSIS_STAGES, *DUB_STAGES})]:
            if stage in self.seconds:
                s, n = self.seconds[stage], self.frames.get(stage, 0)
                rate = f"{n / s:.1f}" if n and s > 0 else ""
                rows.append(f"| {stage} | {s:.2f} | {n or ''} | {rate} |")
        return "\n".join(rows)
