"""``python -m eval.speed data_prep``: frames per second per CPU core of each data_prep step and end to end.

Every step runs in this one process with one torch thread and one OpenCV thread, on one clip (a synthetic
clip made on the spot, or ``--video``), the way ``data_prep.build`` runs one clip per worker process. Per
step it prints wall-clock frames/s and frames per CPU-second (``time.process_time``: the CPU time of every
thread of the process, MediaPipe's own threads included), which is the "per core" figure. The steps:

    decode      PyAV -> 25 fps RGB frames (one pass; the build decodes the video twice)
    audio       PyAV -> 16 kHz mono, aligned to the frames
    track       MediaPipe face mesh (478 landmarks) + smoothed crop boxes, on decoded frames
    crop+encode 256x256 crops, H.264 in memory (the shard's mp4)
    quality     the configured scorers (embedded; HyperIQA when --hyperiqa is given)
    fit         the hybrid 3DMM fit (closed-form initialisation + Adam with Eq. 1 and Eq. 2)

"sum of steps" is frames / (sum of the steps' seconds). "end to end" times ``process_clip`` itself (both
decoding passes, every step, the sample's bytes), which is what a build worker does per clip.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

STEPS = ("decode", "audio", "track", "crop+encode", "quality", "fit")


@dataclass
class StepTime:
    wall: float = 0.0
    cpu: float = 0.0


@contextmanager
def timed(times: dict[str, StepTime], step: str):
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    entry = times.setdefault(step, StepTime())
    entry.wall += time.perf_counter() - wall
    entry.cpu += time.process_time() - cpu


def synthetic_clip(work: Path, seconds: float, size: int) -> Path:
    """One synthetic talking-head clip (data_prep.synthetic, seed 0) -> its mp4."""
    from data_prep.synthetic.generate import main as generate

    generate(["--out", str(work), "--speakers", "1", "--clips-per-speaker", "1", "--seconds", str(seconds),
              "--size", str(size), "--seed", "0", "--workers", "1", "--preview", str(work / "preview.png")])
    (clip,) = sorted(work.glob("*/*/*.mp4"))
    return clip


def time_steps(path: Path, cfg) -> tuple[int, dict[str, StepTime]]:
    """Each step of one clip timed on its own (the previous step's output held in memory)."""
    from data_prep import quality
    from data_prep.process import SegmentWriter, build_scorers
    from src.geometry.fitting import fit_clip, fit_landmarks
    from src.media import decode
    from src.media.contract import CROP_SIZE, FPS, SAMPLE_RATE
    from src.models.face_model import shared_face_model
    from src.tracking.crops import crop_frame, crop_landmarks
    from src.tracking.tracker import track_video

    fm = shared_face_model(cfg.face_model)
    times: dict[str, StepTime] = {}
    with timed(times, "decode"):
        frames = [f.image for f in decode.iter_frames(path, FPS)]
    n = len(frames)
    with timed(times, "audio"):
        decode.read_audio(path, SAMPLE_RATE, n_frames=n, fps=FPS)
    with timed(times, "track"):
        track = track_video(frames, cfg.track)
    if not track.segments:
        raise SystemExit(f"{path}: no face found, nothing to time after tracking")
    start, end = max(track.segments, key=lambda s: s[1] - s[0])
    keep = set(quality.sample_indices(end - start, cfg.quality_samples) + start)
    with timed(times, "crop+encode"):
        writer = SegmentWriter()
        for t in range(start, end):
            writer.add(crop_frame(frames[t], track.boxes[t], CROP_SIZE)[0], t, keep=t in keep)
        _, crops, shown = writer.close()
    lmk = crop_landmarks(track, start, end)
    scorers = build_scorers(json.dumps(cfg.scorers, sort_keys=True), cfg.hyperiqa)
    context = quality.ClipContext(face_size_px=track.boxes[start:end, 2] / cfg.track.box_scale, landmarks=lmk,
                                  fps=FPS, crop_frames=np.asarray(shown) - start)
    with timed(times, "quality"):
        quality.score_clip(scorers, crops, context)
    with timed(times, "fit"):
        fit_clip(fm, *fit_landmarks(fm, lmk, cfg.fit))
    # steps after tracking see only the face segment's frames: scale them to the whole clip's frame count
    for step in ("crop+encode", "quality", "fit"):
        times[step].wall *= n / (end - start)
        times[step].cpu *= n / (end - start)
    return n, times


def time_end_to_end(path: Path, cfg) -> tuple[int, StepTime, dict]:
    from data_prep.process import process_clip
    from data_prep.sources import ClipSource
    from src.models.face_model import shared_face_model

    clip = ClipSource(key=path.stem, path=path, speaker="speed", source="folder", meta={})
    times: dict[str, StepTime] = {}
    with timed(times, "end to end"):
        _, report = process_clip(clip, cfg, shared_face_model(cfg.face_model))
    return report.get("frames", 0), times["end to end"], report


def print_table(n: int, times: dict[str, StepTime], end_to_end: tuple[int, StepTime]) -> None:
    print(f"\n{'step':14s} {'wall s':>8s} {'CPU s':>8s} {'frames/s':>9s} {'frames/CPU-s':>13s}")
    for step in STEPS:
        t = times[step]
        print(f"{step:14s} {t.wall:8.2f} {t.cpu:8.2f} {n / t.wall:9.1f} {n / t.cpu:13.1f}")
    wall, cpu = sum(t.wall for t in times.values()), sum(t.cpu for t in times.values())
    print(f"{'sum of steps':14s} {wall:8.2f} {cpu:8.2f} {n / wall:9.1f} {n / cpu:13.1f}")
    frames, t = end_to_end
    print(f"{'end to end':14s} {t.wall:8.2f} {t.cpu:8.2f} {frames / t.wall:9.1f} {frames / t.cpu:13.1f}")
    print(f"\nframes/CPU-s is the per-core rate: a build with --workers W on W cores processes about W times as "
          f"many frames per second ({n} frames timed).")


def process_config(args: argparse.Namespace):
    """The ``ProcessConfig`` a build with these options would use: ``data_prep.build``'s own parser and defaults
    (a namespace made by hand here fell behind when the build gained --allow-no-audio)."""
    from data_prep.build import make_config, parse_args

    argv = ["--source", "folder", "--root", ".", "--out", ".", "--face-model", args.face_model, "--min-seconds", "1"]
    argv += ["--hyperiqa", str(args.hyperiqa)] if args.hyperiqa else []
    argv += ["--fit-steps", str(args.fit_steps)] if args.fit_steps is not None else []
    return make_config(parse_args(argv))


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    cfg = process_config(args)
    with tempfile.TemporaryDirectory(prefix="speed_data_prep_") as work:
        path = Path(args.video) if args.video else synthetic_clip(Path(work), args.seconds, args.size)
        if not path.is_file():
            raise SystemExit(f"--video {path}: no such file")
        from src.media.decode import probe

        info = probe(path)
        print(f"clip: {path.name}, {info.width}x{info.height}, {info.duration_s:.1f} s at {info.fps:.2f} fps; "
              f"one torch thread, one OpenCV thread; fit steps {cfg.fit.steps}")
        time_steps(path, cfg)  # warm-up: imports, MediaPipe graphs, torch's first Adam
        n, times = time_steps(path, cfg)
        frames, total, report = time_end_to_end(path, cfg)
        if not report.get("samples"):
            print(f"note: process_clip kept no sample ({report.get('removed')}); end to end still timed every step "
                  "it ran")
    print_table(n, times, (frames, total))
    if args.json:
        write_json(args.json, path, info, n, times, (frames, total), cfg)


def write_json(out: Path, path: Path, info, n: int, times: dict[str, StepTime], end_to_end: tuple[int, StepTime],
               cfg) -> None:
    """The table as JSON: frames/s (wall) and frames per CPU-second of every step and end to end."""
    def rates(frames: int, t: StepTime) -> dict:
        return {"wall_s": round(t.wall, 4), "cpu_s": round(t.cpu, 4), "fps": round(frames / t.wall, 2),
                "fps_per_core": round(frames / t.cpu, 2)}

    frames, total = end_to_end
    doc = {"clip": path.name, "size": [info.width, info.height], "seconds": round(info.duration_s, 3),
           "face_model": cfg.face_model, "fit_steps": cfg.fit.steps, "frames": n,
           "steps": {step: rates(n, times[step]) for step in STEPS}, "end_to_end": rates(frames, total)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--video", help="a talking-head video (default: a synthetic clip made on the spot)")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of the synthetic clip")
    parser.add_argument("--size", type=int, default=384, help="frame size of the synthetic clip")
    parser.add_argument("--face-model", default="procedural")
    parser.add_argument("--fit-steps", type=int, default=None, help="override the fit's Adam steps")
    parser.add_argument("--hyperiqa", type=Path, default=None, help="HyperIQA weights: time that scorer too")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
