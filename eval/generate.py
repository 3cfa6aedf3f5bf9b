"""``--generate``: dub each ground-truth video with its own audio (self-dubbing) using our checkpoints, so
the benchmark can score the outputs. The one call into the dubbing API is ``dub_video``: adjust it there."""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from eval.splits import Video


def dub_video(video: Path, audio: Path, out: Path, geometry_ckpt: Path, render_ckpt: Path, device: str = "cpu") -> None:
    """Dub ``video`` with the audio track of ``audio`` into ``out`` (mp4) with the two checkpoints (the
    dubber is built once per checkpoint pair and reused for every video)."""
    _dubber(str(geometry_ckpt), str(render_ckpt), device).dub(video, audio, out)


@functools.lru_cache(maxsize=1)
def _dubber(geometry_ckpt: str, render_ckpt: str, device: str):
    from src.inference.pipeline import Dubber  # imported here: the evaluator needs the model only to generate

    return Dubber(geometry_ckpt, render_ckpt, device)


def generate(videos: list[Video], out_dir: str | Path, geometry_ckpt: str | Path, render_ckpt: str | Path,
             device: str = "cpu", dub: Callable[..., None] | None = None) -> Path:
    """``out_dir/<name>.mp4`` for every video (driven by its own audio); existing outputs are kept, each new
    one is written under a temporary name and renamed when complete. ``dub`` defaults to ``dub_video``.
    Returns ``out_dir``."""
    dub = dub or dub_video
    for flag, ckpt in (("geometry checkpoint", geometry_ckpt), ("render checkpoint", render_ckpt)):
        if not Path(ckpt).is_file():
            raise FileNotFoundError(f"--generate: the {flag} {ckpt} does not exist (train it first; eval/README.md)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [v for v in videos if not (out_dir / f"{v.name}.mp4").is_file()]
    for video in tqdm(todo, desc=f"dubbing into {out_dir}", unit="video"):
        tmp = out_dir / f".{video.name}.tmp.mp4"
        dub(video=video.gt, audio=video.gt, out=tmp, geometry_ckpt=Path(geometry_ckpt), render_ckpt=Path(render_ckpt),
            device=device)
        os.replace(tmp, out_dir / f"{video.name}.mp4")
    _dubber.cache_clear()  # free the networks before scoring
    return out_dir
