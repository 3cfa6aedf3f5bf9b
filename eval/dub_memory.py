"""Peak memory of dubbing long videos: ``python -m eval.dub_memory [--minutes 1 5 10]``.

Makes a synthetic long video per length (a short data_prep.synthetic clip played forwards and backwards
until the length is reached, with its speech looped, 256 x 256 by default) and dubs it with its own audio
in a fresh ``python -m src.dub`` process per length, then prints the peak resident memory of that process
(``os.wait4``'s ru_maxrss: the high-water mark of its RSS) and its wall time. The acceptance bound is
3 GB at 10 minutes; memory that grows with the length shows as a growing column.

Checkpoints: ``--geometry-ckpt`` / ``--render-ckpt``, else random-weight networks of the demo experiments;
``--renderer tiny`` (the default) shrinks stage 2 to 32 px so a 10-minute dub finishes on a CPU in about half
an hour (the demo's 128 px renderer runs ~2 frames/s on a busy 2-core CPU). The renderer's size changes the
model's few MB, not how memory scales with the video: frames stream, the rest is per-frame coefficients.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from eval.speed import random_checkpoint
from src.inference.timeline import source_frames
from src.media import decode
from src.media.contract import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME

TINY_RENDER = ("data.image_size=32", "model.net.e_geo.dim=16", "model.net.attention.lip_attention.latent_size=[8,8]",
               "model.net.attention.face_attention.latent_size=[8,8]")


def long_video(base: Path, out: Path, minutes: float) -> int:
    """Write ``base`` ping-ponged to ``minutes`` (H.264 ultrafast + AAC, its audio looped); -> frames."""
    frames = [f.image for f in decode.iter_frames(base)]  # one short clip in memory, ~50 MB
    audio = decode.read_audio(base, SAMPLE_RATE, n_frames=len(frames), fps=FPS)
    n = int(round(minutes * 60 * 25))
    h, w = frames[0].shape[:2]
    with av.open(str(out), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "20"}
        sound = container.add_stream("aac", rate=SAMPLE_RATE)
        sound.layout = "mono"
        for k, r in enumerate(source_frames(n, len(frames))):
            container.mux(video.encode(av.VideoFrame.from_ndarray(frames[r], format="rgb24")))
            if k % len(frames) == 0:  # one clip's audio per clip length of video
                chunk = audio[: min(len(audio), (n - k) * 640)][None].astype(np.float32)  # (1, samples)
                sound_frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                sound_frame.sample_rate, sound_frame.pts = SAMPLE_RATE, k * SAMPLES_PER_FRAME
                container.mux(sound.encode(sound_frame))
        container.mux(video.encode(None))
        container.mux(sound.encode(None))
    return n


def dub_peak_rss(argv: list[str]) -> tuple[float, float, int]:
    """Run ``python -m src.dub argv`` -> (peak RSS in MiB, wall seconds, exit code)."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "src.dub", *argv], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024, time.perf_counter() - start, process.returncode


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.dub_memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, nargs="+", default=[1, 5, 10])
    p.add_argument("--size", type=int, default=256, help="frame size of the synthetic video")
    p.add_argument("--geometry-ckpt")
    p.add_argument("--render-ckpt")
    p.add_argument("--renderer", choices=("tiny", "demo"), default="tiny", help="random stage 2 when no checkpoint")
    p.add_argument("--work", help="keep the videos and outputs here (default: a temporary folder)")
    p.add_argument("--dub-args", default="--threads 1", help="extra src.dub arguments (default %(default)r)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dub_memory_") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        geometry, render = checkpoints(args, work)
        base = base_clip(work, args.size)
        print(f"# peak RSS of `python -m src.dub` on synthetic {args.size}x{args.size} videos (self-dub), "
              f"extra args {args.dub_args!r}\n"
              f"| minutes | frames | peak RSS MiB | seconds | exit |\n|---|---|---|---|---|")
        for minutes in args.minutes:
            video = work / f"long_{minutes:g}min.mp4"
            frames = long_video(base, video, minutes)
            rss, seconds, code = dub_peak_rss(
                ["--video", str(video), "--audio", str(video), "--out", str(work / f"dub_{minutes:g}min.mp4"),
                 "--geometry-ckpt", geometry, "--render-ckpt", render, "--cache-dir", str(work / "cache"),
                 "--no-progress", *args.dub_args.split()])
            print(f"| {minutes:g} | {frames} | {rss:.0f} | {seconds:.0f} | {code} |", flush=True)
    return 0


def checkpoints(args: argparse.Namespace, work: Path) -> tuple[str, str]:
    if args.geometry_ckpt and args.render_ckpt:
        return args.geometry_ckpt, args.render_ckpt
    overrides = TINY_RENDER if args.renderer == "tiny" else ()
    return (random_checkpoint("geometry_demo", str(work / "geometry.ckpt")),
            random_checkpoint("render_demo", str(work / "render.ckpt"), overrides))


def base_clip(work: Path, size: int) -> Path:
    from data_prep.synthetic.generate import main as generate

    generate(["--out", str(work / "corpus"), "--speakers", "1", "--clips-per-speaker", "1", "--seconds", "10",
              "--seed", "0", "--size", str(size), "--workers", "1", "--preview", str(work / "preview.png")])
    return next((work / "corpus").glob("id*/*/*.mp4"))


if __name__ == "__main__":
    sys.exit(main())
