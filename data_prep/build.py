"""Raw talking-head video -> WebDataset shards:

    python -m data_prep.build --source {voxceleb2,celebvhq,vfhq,hdtf,folder,synthetic} --root PATH --out SHARDS
        [--test-list FILE] [--labels FILE] [--allow-no-audio] [--val 0.1 --test 0.1]
        [--workers N] [--executor local|ray]
        [--face-model procedural|ict:PATH|bfm:PATH] [--landmarks detector|sidecar] [--quality CONFIG.yaml]
        [--hyperiqa WEIGHTS] [--min-seconds 2] [--shard-size 200] [--limit N]

Steps (one file each): ``sources`` (dataset layouts, speakers) -> ``decode`` (25 fps, 16 kHz mono) ->
``track`` (MediaPipe landmarks, face segments, smoothed 256x256 crops) -> ``quality`` (HyperIQA or the
embedded scorer, thresholds from config) -> ``fit`` (hybrid 3DMM fit, Eq. 1-2) -> ``shards`` (tars +
index.json). Splits are by speaker (HDTF's test list fixes its test split).

Outputs in SHARDS: ``<split>-NNNNNN.tar``, ``index.json`` (shards, counts per split, how many clips each
criterion removed, errors), and ``work/`` (one finished item per clip). A re-run skips finished clips; a
killed run leaves nothing half-written under a final name and resumes to the same shards.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from data_prep import shards
from data_prep.sources import list_clips, speaker_split
from src.media.contract import FPS

SOURCES = ("voxceleb2", "celebvhq", "vfhq", "hdtf", "folder", "synthetic")
DEFAULT_QUALITY = Path(__file__).resolve().parents[1] / "experiments" / "data_prep" / "quality.yaml"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m data_prep.build", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, choices=SOURCES)
    p.add_argument("--root", required=True, type=Path, help="the dataset's folder, in its own layout")
    p.add_argument("--out", required=True, type=Path, help="shard folder")
    p.add_argument("--test-list", type=Path, help="HDTF: file naming the test videos (one per line)")
    p.add_argument("--labels", type=Path, help="folder: a .tsv/.csv with columns file, person [, split, hard]: the "
                   "person is the speaker, a split column fixes the clip's split")
    p.add_argument("--allow-no-audio", action="store_true", help="keep clips without speech audio (no track, or an "
                   "all-zero one) with zero audio, marked has_audio=false: stage 2 trains on them, stage 1 skips them")
    p.add_argument("--split-by", default="speaker", choices=["speaker"], help="speaker-disjoint splits")
    p.add_argument("--val", type=float, default=0.1, help="fraction of speakers for validation")
    p.add_argument("--test", type=float, default=0.1, help="fraction of speakers for test")
    p.add_argument("--seed", type=int, default=0, help="split seed")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--executor", default="local", choices=["local", "ray"])
    p.add_argument("--face-model", default="procedural")
    p.add_argument("--landmarks", default="detector", choices=["detector", "sidecar"],
                   help="'sidecar': the synthetic corpus' ground-truth landmarks instead of the detector")
    p.add_argument("--quality", type=Path, default=DEFAULT_QUALITY, help="quality thresholds (YAML)")
    p.add_argument("--hyperiqa", type=Path, help="HyperIQA weights (koniq_pretrained.pkl); default: embedded scorer")
    p.add_argument("--min-seconds", type=float, default=None,
                   help="drop face segments shorter than this (default: min_frames of the quality config)")
    p.add_argument("--shard-size", type=int, default=200, help="samples per shard")
    p.add_argument("--fit-steps", type=int, default=None, help="override the fit's optimisation steps")
    p.add_argument("--landmark-calibration", type=Path, default=None,
                   help="landmark calibration file (.npy with its .json) for the fit, e.g. a real-face refinement "
                   "made by `python -m data_prep.calibrate_real`; default: the face model's packaged one")
    p.add_argument("--limit", type=int, default=None, help="process only the first N clips")
    args = p.parse_args(argv)
    if args.landmarks == "sidecar" and args.source != "synthetic":
        p.error("--landmarks sidecar reads the synthetic corpus' ground truth: only with --source synthetic")
    if args.workers < 1 or args.shard_size < 1:
        p.error("--workers and --shard-size must be >= 1")
    if not 0 <= args.val < 1 or not 0 <= args.test < 1 or args.val + args.test >= 1:
        p.error(f"--val and --test must be fractions with val + test < 1, got {args.val}, {args.test}")
    if args.landmark_calibration is not None:
        if args.landmarks == "sidecar":
            p.error("--landmark-calibration applies to detected landmarks; --landmarks sidecar fits the model's own "
                    "vertices, with no calibration")
        npy = args.landmark_calibration.with_suffix(".npy")
        if not npy.is_file() or not npy.with_suffix(".json").is_file():
            p.error(f"--landmark-calibration {args.landmark_calibration}: expected {npy} and its .json beside it "
                    "(written by `python -m data_prep.calibrate_real` or `make calibrate-landmarks`)")
    if args.hyperiqa is not None and not args.hyperiqa.is_file():
        p.error(f"--hyperiqa {args.hyperiqa}: no such file (the HyperIQA repository's koniq_pretrained.pkl)")
    return args


def make_config(args: argparse.Namespace):
    from omegaconf import OmegaConf

    from data_prep.process import ProcessConfig

    if not args.quality.is_file():
        raise FileNotFoundError(f"--quality {args.quality}: no such file")
    qcfg = OmegaConf.to_container(OmegaConf.load(args.quality), resolve=True)
    if "filter" not in qcfg or "thresholds" not in qcfg["filter"]:
        raise ValueError(f"--quality {args.quality}: expected 'filter: {{thresholds: ..., min_frames: ...}}' "
                         "(see experiments/data_prep/quality.yaml)")
    min_seconds = args.min_seconds if args.min_seconds is not None else qcfg["filter"].get("min_frames", 50) / FPS
    cfg = ProcessConfig(face_model=args.face_model, landmarks=args.landmarks, min_seconds=min_seconds,
                        require_audio=not args.allow_no_audio,
                        thresholds=qcfg["filter"]["thresholds"], scorers=qcfg.get("scorers", {}),
                        hyperiqa=str(args.hyperiqa) if args.hyperiqa else None)
    if args.fit_steps is not None:
        cfg.fit.steps = args.fit_steps
    if args.landmark_calibration is not None:
        cfg.fit.landmark_calibration = str(args.landmark_calibration.resolve())
    return cfg


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return build(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"python -m data_prep.build: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("python -m data_prep.build: interrupted; finished clips are kept in --out/work and a re-run resumes "
              "from them", file=sys.stderr)
        return 130


def build(args: argparse.Namespace) -> int:
    if not args.root.is_dir():
        raise FileNotFoundError(f"--root {args.root}: no such folder (the {args.source} dataset in its own layout)")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1 (clips to process), got {args.limit}")
    cfg = make_config(args)
    check_face_model(cfg)
    try:
        clips = list_clips(args.source, args.root, test_list=args.test_list, labels=args.labels)[: args.limit]
    except (FileNotFoundError, ValueError) as err:
        raise type(err)(f"--root {args.root}: {err}") from None
    if not clips:
        raise FileNotFoundError(f"--root {args.root}: no {args.source} clips found there (see data_prep/README.md "
                                "for each source's layout)")
    work = args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    shards.check_settings(work, processing_settings(cfg))
    todo = [c for c in clips if not shards.is_done(work, c.key)]
    retried = sum(shards.failed(work, c.key) for c in todo)
    print(f"{len(clips)} clips, {len(clips) - len(todo)} already done, {len(todo)} to process"
          + (f" ({retried} failed last time: tried again)" if retried else ""), file=sys.stderr)
    start = time.time()
    from data_prep import executors  # imports torch: after the arguments are checked

    executors.run(args.executor, todo, cfg, work, args.workers)
    split = speaker_split(sorted({c.speaker for c in clips}), args.val, args.test, args.seed)
    # which quality scorers ran is stated: without --hyperiqa the paper's IQA is not used, only the embedded one
    meta = {"args": {k: str(v) for k, v in vars(args).items()},
            "quality_scorers": sorted(cfg.scorers) + (["hyperiqa"] if cfg.hyperiqa else [])}
    index = shards.assemble(work, args.out, lambda sample: sample.get("fixed_split") or split[sample["speaker"]],
                            args.shard_size, meta)
    print_summary(index, args.out, time.time() - start)
    if not any(counts["samples"] for counts in index["splits"].values()):
        print(f"python -m data_prep.build: error: no shards written: all {len(clips)} clips were removed or failed "
              "(reasons above)", file=sys.stderr)
        return 1
    return 0


def processing_settings(cfg) -> dict:
    """Everything that decides a clip's samples, for ``shards.check_settings``: the processing config (tracking,
    quality, fit), the face model's name with its version, and the landmark calibration file's content."""
    import dataclasses
    import hashlib

    from src.geometry.face_models import landmark_calibration
    from src.geometry.landmarks import landmark_indices, landmark_set
    from src.models.face_model import shared_face_model

    fm = shared_face_model(cfg.face_model)
    settings = {"process": dataclasses.asdict(cfg), "face_model": fm.name}
    landmarks = landmark_set(fm)  # as fitting.fit_landmarks chooses
    n = len(landmark_indices(fm, landmarks))
    calibration = None if cfg.landmarks == "sidecar" else cfg.fit.landmark_calibration
    cal = landmark_calibration.resolve(fm.name, landmarks, n, calibration)
    settings["landmark_calibration"] = None if cal is None else hashlib.sha256(cal.array.tobytes()).hexdigest()[:16]
    return settings


def check_face_model(cfg) -> None:
    """Load the face model and its landmark calibration once, before any clip: a missing or outdated
    calibration file is one clear error here, not a failure recorded in every clip's report."""
    from src.geometry.fitting import fit_landmarks, landmark_offset
    from src.geometry.landmarks import landmark_set
    from src.models.face_model import shared_face_model

    fm = shared_face_model(cfg.face_model)
    if cfg.landmarks == "sidecar" and landmark_set(fm) != "mp478":
        raise ValueError(f"--landmarks sidecar reads the corpus' MediaPipe-478 ground truth, and face model "
                         f"{cfg.face_model!r} has no vertex for each of those landmarks (its clips' sidecars hold "
                         "none): use --landmarks detector")
    _, fit_cfg = fit_landmarks(fm, np.zeros((1, 478, 2), np.float32), cfg.fit, exact=cfg.landmarks == "sidecar")
    landmark_offset(fm, fit_cfg)


def print_summary(index: dict, out: Path, seconds: float) -> None:
    rep = index["report"]
    print(f"shards: {out.resolve()} ({seconds:.1f} s)")
    if "hyperiqa" not in index["quality_scorers"]:
        print("  quality: embedded scorer only (no --hyperiqa weights given: the paper's HyperIQA filter did not run)")
    for split, counts in index["splits"].items():
        print(f"  {split:5s} {counts['samples']:6d} samples {counts['frames']:8d} frames "
              f"{counts['speakers']:5d} speakers")
    print(f"  clips {rep['clips']}, with samples {rep['clips_with_samples']}, segments kept {rep['segments_kept']}, "
          f"removed {rep['segments_removed']}")
    for reason, n in rep["removed_by_reason"].items():
        print(f"  removed: {reason}: {n}")
    for clip, error in rep["failed"].items():
        print(f"  failed: {clip}: {error}")


if __name__ == "__main__":
    sys.exit(main())
