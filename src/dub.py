"""Dubbing entry: a reference video + a target audio -> the video lip-synced to the audio (docs/design.md, "Dubbing").

    python -m src.dub --video REF.mp4 --audio TARGET.wav --out OUT.mp4 \
        --geometry-ckpt G.ckpt --render-ckpt R.ckpt [--face N] [--device cpu|cuda]
    python -m src.dub --batch jobs.csv --geometry-ckpt G.ckpt --render-ckpt R.ckpt   # columns video,audio,out[,face]

The checkpoints are ``last.ckpt`` files of ``python -m src.train experiment=geometry_*`` and
``experiment=render_*`` runs (``make demo`` trains small demo ones under outputs/demo/). The reference
analysis is cached (``--cache-dir``), so a second dub of the same video with another audio skips it. The
output is tagged as synthetic media unless ``--no-synthetic-metadata``. All the work is in
``src.inference`` (``Dubber``, ``DubConfig``); this file only turns the command line into those.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import torch

from src.inference.audio import VAD_DETECTORS, VadConfig
from src.inference.batch import dub_batch, read_rows
from src.inference.geometry import GeometryConfig
from src.inference.paste import REGIONS, PasteConfig
from src.inference.pipeline import Dubber, DubConfig, check_inputs, check_paths
from src.inference.reference_analysis import AnalysisConfig, default_cache_dir
from src.inference.render import RenderConfig
from src.media.decode import DecodeError

log = logging.getLogger("src.dub")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m src.dub", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    io = p.add_argument_group("inputs and output")
    io.add_argument("--video", type=Path, help="reference video (any resolution, frame rate, codec)")
    io.add_argument("--audio", type=Path, help="target audio (any audio file, or a video's audio track)")
    io.add_argument("--out", type=Path, help="output .mp4 (H.264 25 fps + AAC)")
    io.add_argument("--batch", type=Path, metavar="CSV", help="dub every row of CSV (columns video,audio,out[,face])")
    io.add_argument("--geometry-ckpt", type=Path, help="stage-1 checkpoint (src.train experiment=geometry_*)")
    io.add_argument("--render-ckpt", type=Path, help="stage-2 checkpoint (src.train experiment=render_*)")
    io.add_argument("--face", type=int, default=0, help="which face: 0 = the largest (default), 1 = the next, ...")
    io.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    io.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    io.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="reference-analysis cache "
                    "(default %(default)s; $PERSONATALK_CACHE overrides)")
    io.add_argument("--no-cache", action="store_true",
                    help="analyse the reference without reading or writing the cache")
    io.add_argument("--no-synthetic-metadata", action="store_true",
                    help="do not tag the output as AI-generated (on by default, as the paper's ethics section asks)")
    io.add_argument("--save-masks", type=Path, metavar="DIR", help="write each output frame's paste mask as a PNG")
    io.add_argument("--no-progress", action="store_true", help="no progress bars")
    q = p.add_argument_group("quality and speed")
    q.add_argument("--vad", action=argparse.BooleanOptionalAction, default=True,
                   help="close the mouth where the audio is silent (voice activity)")
    q.add_argument("--vad-detector", choices=VAD_DETECTORS, default=VadConfig.detector,
                   help="silero: silero-vad's neural detector (default); energy: a loudness threshold")
    q.add_argument("--vad-floor-db", type=float, default=VadConfig.floor_db,
                   help="energy detector: never speech below this dBFS")
    q.add_argument("--vad-range-db", type=float, default=VadConfig.range_db,
                   help="not speech this many dB below the audio's loud level")
    q.add_argument("--vad-min-silence", type=float, default=VadConfig.min_silence_s, metavar="S",
                   help="pauses shorter than this (seconds) keep the mouth moving")
    q.add_argument("--mask-region", choices=REGIONS, default=PasteConfig.region,
                   help="face region replaced: the lower face (default) or the whole face")
    q.add_argument("--crf", type=int, default=DubConfig.crf, help="x264 quality, 0 = lossless; the default 6 keeps "
                   "untouched pixels > 45 dB PSNR from the input; 17-23 for smaller files")
    q.add_argument("--preset", default="fast", help="x264 preset (ultrafast ... veryslow)")
    q.add_argument("--chunk", type=int, default=DubConfig.chunk, help="output frames held in memory at once")
    q.add_argument("--render-batch", type=int, default=RenderConfig.batch, help="frames per stage-2 call")
    q.add_argument("--n-face", type=int, default=RenderConfig.n_face, help="face references N_f (Algorithm 1)")
    q.add_argument("--n-lip", type=int, default=AnalysisConfig.n_lip, help="lip references N_l (Algorithm 1)")
    q.add_argument("--attention-temperature", type=float, default=None, metavar="T",
                   help="the renderer's attention softmax temperature (default: the checkpoint's own); below 1 each "
                   "pixel copies from fewer reference pixels: a sharper mouth (make demo-real dubs with 0.25)")
    q.add_argument("--geometry-window", type=int, default=GeometryConfig.window, help="frames per stage-1 call")
    q.add_argument("--freeze-mouth", action="store_true",
                   help="a baseline, not a dub: hold the mouth at the reference's mean expression (no stage 1)")
    q.add_argument("--geometry-overlap", type=int, default=GeometryConfig.overlap,
                   help="crossfaded frames between calls")
    q.add_argument("--fit-steps", type=int, default=AnalysisConfig.fit_steps, help="3DMM fit steps per window")
    q.add_argument("--landmark-calibration", type=Path, default=None, metavar="NPY",
                   help="the fit's landmark calibration: the one the render checkpoint's training shards were "
                   "fitted with (data_prep.calibrate_real; make demo-real's real/landmark_calibration.npy); "
                   "default: the face model's packaged one")
    return p


def check_flags(args: argparse.Namespace) -> None:
    """The numeric flags, checked by the names the user typed (the config classes check again, by field)."""
    at_least_one = {"--n-lip": args.n_lip, "--n-face": args.n_face, "--render-batch": args.render_batch,
                    "--chunk": args.chunk, "--fit-steps": args.fit_steps}
    for flag, value in at_least_one.items():
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    for flag, value in {"--vad-min-silence": args.vad_min_silence, "--vad-range-db": args.vad_range_db}.items():
        if value < 0:
            raise ValueError(f"{flag} must be >= 0, got {value}")
    if args.geometry_window < 2:
        raise ValueError(f"--geometry-window must be >= 2 (frames per stage-1 call), got {args.geometry_window}")
    if not 0 <= args.geometry_overlap < args.geometry_window / 2:
        raise ValueError(f"--geometry-overlap must be in [0, --geometry-window / 2) = "
                         f"[0, {args.geometry_window / 2:g}) frames, got {args.geometry_overlap}")
    if args.attention_temperature is not None and not 0 < args.attention_temperature < float("inf"):
        raise ValueError(f"--attention-temperature must be a number > 0, got {args.attention_temperature}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    cal = args.landmark_calibration
    if cal is not None and not (cal.with_suffix(".npy").is_file() and cal.with_suffix(".json").is_file()):
        raise ValueError(f"--landmark-calibration {cal}: expected {cal.with_suffix('.npy')} and its .json beside it "
                         "(written by `python -m data_prep.calibrate_real`)")


def config(args: argparse.Namespace) -> DubConfig:
    return DubConfig(
        face=args.face, cache_dir=None if args.no_cache else args.cache_dir, chunk=args.chunk,
        analysis=AnalysisConfig(fit_steps=args.fit_steps, n_lip=args.n_lip,
                                landmark_calibration="auto" if args.landmark_calibration is None
                                else str(args.landmark_calibration.resolve().with_suffix(".npy"))),
        geometry=GeometryConfig(window=args.geometry_window, overlap=args.geometry_overlap,
                                frozen_mouth=args.freeze_mouth),
        render=RenderConfig(batch=args.render_batch, n_face=args.n_face),
        paste=PasteConfig(region=args.mask_region),
        vad=VadConfig(enabled=args.vad, detector=args.vad_detector, floor_db=args.vad_floor_db,
                      range_db=args.vad_range_db, min_silence_s=args.vad_min_silence),
        crf=args.crf, preset=args.preset, synthetic_metadata=not args.no_synthetic_metadata,
        save_masks=args.save_masks, progress=not args.no_progress)


def run(args: argparse.Namespace) -> int:
    check_flags(args)
    cfg = config(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rows = read_rows(args.batch) if args.batch else None
    if rows is None:
        check_paths(args.video, args.audio, args.out)  # before the checkpoints load: fail fast on a typo
        check_inputs(args.video, args.audio)
    dubber = Dubber(args.geometry_ckpt, args.render_ckpt, args.device, args.attention_temperature)
    if rows is None:
        result = dubber.dub(args.video, args.audio, args.out, cfg)
        print(f"wrote {result.out}: {result.n_frames} frames ({result.n_frames / 25:.2f} s), {result.dubbed_frames} "
              f"re-rendered, reference analysis {'from the cache' if result.cache_hit else 'computed'}\n"
              f"{result.times.table()}")
        return 0
    results, failures = dub_batch(rows, dubber, cfg)
    print(f"batch: {len(results)} written, {len(failures)} failed")
    for row, error in failures:
        print(f"  line {row.line} ({row.video.name} + {row.audio.name}): {error}")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    single = [name for name in ("video", "audio", "out") if getattr(args, name) is not None]
    if args.batch is not None and single:
        parser.error(f"--batch replaces --video/--audio/--out; got --batch with --{', --'.join(single)}")
    if args.batch is None and len(single) < 3:
        parser.error("give --video, --audio and --out (or --batch CSV)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # SIGTERM (a killed job) unwinds like Ctrl-C, so the half-written output is removed
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        return run(args)
    except (ValueError, FileNotFoundError, DecodeError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    except OSError as err:  # a full disk or a folder that went read-only during the dub: the output was not written
        parser.exit(1, f"{parser.prog}: error: {err}; nothing was written to --out\n")
    except KeyboardInterrupt:
        parser.exit(130, f"{parser.prog}: interrupted, nothing written\n")


if __name__ == "__main__":
    sys.exit(main())
