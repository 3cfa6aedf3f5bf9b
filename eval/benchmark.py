"""Benchmark (paper 4.2, Table 1): generated videos against ground truth, the eight metrics of Table 1 (CSIM also
with dlib's ResNet), one table.

    python -m eval.benchmark --split hdtf|synthetic|NAME --method ours=DIR [--method wav2lip=DIR ...]
        [--gt DIR] [--test-list FILE] [--hdtf-root DIR] [--shards DIR] [--corpus DIR]
        [--generate [--geometry-ckpt CKPT --render-ckpt CKPT]] [--out DIR]
        [--config eval/config.yaml] [--weights KEY=PATH ...] [--set KEY=VALUE ...]
        [--metrics ssim psnr ...] [--allow-missing] [--device auto|cpu|cuda] [--max-frames N] [--max-videos N]

Self-dubbing protocol: every ground-truth video is driven by its own audio, so a method's output for
video NAME is ``DIR/NAME.mp4`` (``eval.splits``). Splits: ``hdtf`` (HDTF's own layout and the test list
file), ``synthetic`` (the test clips of the demo shards; ``--generate`` first dubs them with the demo
checkpoints into OUT/generated/ours), any other NAME with ``--gt DIR`` (a folder of ground-truth videos).

Every evaluator weight file is checked before any work: one error lists every missing file, where to put
it and how to obtain it (``eval.weights``). ``--allow-missing`` scores without the metrics whose files are
missing, and the table says so. Outputs in OUT (default outputs/benchmark/<split>): benchmark.md,
benchmark.csv, benchmark.json (per-video rows, summary with a GT row, scorer variants); the table is
printed at the end.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omegaconf import OmegaConf

from eval.config import load_config, parse_pair, resolve_path, split_weights
from eval.evaluators import METRICS, Evaluators, build_evaluators, required_weights, resolve_device
from eval.report import NOTES, ordered_methods, table_markdown, write_reports
from eval.scorer import GT, score_videos
from eval.splits import Video, folder_videos, hdtf_videos, match_generated, synthetic_videos
from eval.weights import REPO_ROOT, MissingWeightsError, missing_message, missing_weights


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval.benchmark", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--method", action="append", default=[], metavar="NAME=DIR",
                   help="a method's folder of generated videos, named like the ground truth (repeatable)")
    p.add_argument("--generate", action="store_true", help="dub the split's videos with our checkpoints first")
    p.add_argument("--generate-name", default="ours", help="method name of the --generate outputs")
    p.add_argument("--geometry-ckpt", help="--generate: stage-1 checkpoint (default: splits.<split>.geometry_ckpt)")
    p.add_argument("--render-ckpt", help="--generate: stage-2 checkpoint (default: splits.<split>.render_ckpt)")
    args = p.parse_args(argv)
    if not args.method and not args.generate:
        p.error("give at least one --method NAME=DIR, or --generate")
    return args


def add_common_args(p: argparse.ArgumentParser) -> None:
    """The split, evaluator and output options shared with eval.table4."""
    p.add_argument("--split", required=True, help="hdtf, synthetic, or a name for the folder given with --gt")
    p.add_argument("--gt", type=Path, help="folder of ground-truth videos (splits other than hdtf and synthetic)")
    p.add_argument("--hdtf-root", type=Path, help="HDTF folder (default: splits.hdtf.root)")
    p.add_argument("--test-list", type=Path, help="HDTF test list file (default: splits.hdtf.test_list)")
    p.add_argument("--shards", type=Path, help="synthetic: shard folder (default: splits.synthetic.shards)")
    p.add_argument("--corpus", type=Path, help="synthetic: corpus folder (default: the one the shards came from)")
    p.add_argument("--out", type=Path, help="output folder (default: outputs/benchmark/<split>)")
    p.add_argument("--config", type=Path, help="evaluator config (default: eval/config.yaml)")
    p.add_argument("--weights", action="append", default=[], metavar="KEY=PATH", help="a weight file (eval/weights.py)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. scoring.chunk=8")
    p.add_argument("--metrics", nargs="+", choices=METRICS, help="score only these (default: all nine)")
    p.add_argument("--allow-missing", action="store_true",
                   help="leave out metrics whose weight files are missing (the table lists them) instead of failing")
    p.add_argument("--device", help="auto, cpu or cuda (default: scoring.device)")
    p.add_argument("--max-frames", type=int, help="score at most N frames per video (default: scoring.max_frames)")
    p.add_argument("--max-videos", type=int,
                   help="score only the split's first N videos (sorted by name; a quick look)")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg, scoring = configure(args)
        metrics, weights, skipped = check_evaluator_weights(args, cfg)
        unreadable: list[str] = []
        videos = split_videos(args, cfg, unreadable)
        methods = dict(parse_pair(m, "--method", "NAME=DIR") for m in args.method)
        if GT in methods:
            raise ValueError(f"--method: the name {GT!r} is the ground-truth row; choose another")
        out = args.out or REPO_ROOT / "outputs" / "benchmark" / args.split
        if args.generate:
            methods[args.generate_name] = str(generate_outputs(args, cfg, videos, out))
        matched = {name: match_generated(videos, name, folder) for name, folder in methods.items()}
    except MissingWeightsError as err:
        print(f"eval.benchmark: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as err:
        print(f"eval.benchmark: error: {err}", file=sys.stderr)
        return 2
    ev = build_evaluators(metrics, weights, scoring, skipped)
    result = run_benchmark(args.split, videos, matched, ev, scoring, out, method_dirs=methods, unreadable=unreadable)
    print_table(result, out)
    return 0


def configure(args: argparse.Namespace) -> tuple:
    """The config and its ``scoring`` section with the command-line overrides."""
    cfg = load_config(args.config, args.set)
    scoring = OmegaConf.to_container(cfg.scoring, resolve=True)
    if args.device:
        scoring["device"] = args.device
    if args.max_frames is not None:
        if args.max_frames < 2:
            raise ValueError(f"--max-frames must be >= 2, got {args.max_frames}")
        scoring["max_frames"] = args.max_frames
    return cfg, scoring


def check_evaluator_weights(args: argparse.Namespace, cfg) -> tuple[list[str], dict, dict]:
    """(metrics to compute, weight paths, {metric: why skipped}); raises MissingWeightsError listing every
    missing file unless --allow-missing, which drops the metrics that need them instead."""
    metrics = list(args.metrics or METRICS)
    weights = split_weights(cfg, args.split, args.weights)
    missing = missing_weights(required_weights(metrics, weights))
    if missing and not args.allow_missing:
        raise MissingWeightsError(missing_message(missing))
    skipped = {}
    for metric in list(metrics):
        keys = [k for k in required_weights([metric], weights) if k in missing]
        if keys:
            metrics.remove(metric)
            skipped[metric] = "missing " + ", ".join(str(missing[k] or k) for k in keys)
    return metrics, weights, skipped


def split_videos(args: argparse.Namespace, cfg, unreadable: list[str] | None = None) -> list[Video]:
    """The split's ground-truth videos (eval.splits), the first --max-videos of them when given; shards that
    cannot be read are appended to ``unreadable``."""
    if args.max_videos is not None and args.max_videos < 1:
        raise ValueError(f"--max-videos must be a positive count, got {args.max_videos}")
    return all_split_videos(args, cfg, unreadable)[:args.max_videos]


def all_split_videos(args: argparse.Namespace, cfg, unreadable: list[str] | None = None) -> list[Video]:
    split_cfg = cfg.splits.get(args.split)
    if args.split == "hdtf":
        return hdtf_videos(args.hdtf_root or resolve_path(split_cfg.root),
                           args.test_list or (resolve_path(split_cfg.test_list) if split_cfg.test_list else None))
    if args.split == "synthetic":
        corpus = args.corpus or (resolve_path(split_cfg.corpus) if split_cfg.corpus else None)
        return synthetic_videos(args.shards or resolve_path(split_cfg.shards), split_cfg.get("split", "test"), corpus,
                                unreadable)
    if args.gt is None:
        raise ValueError(f"--split {args.split}: give its ground-truth videos with --gt DIR "
                         "(or use --split hdtf / synthetic)")
    return folder_videos(args.gt)


def generate_outputs(args: argparse.Namespace, cfg, videos: list[Video], out: Path) -> Path:
    """Dub the split's videos with our checkpoints into OUT/generated/<name> (eval.generate)."""
    from eval.generate import generate

    split_cfg = cfg.splits.get(args.split) or {}
    geometry = args.geometry_ckpt or split_cfg.get("geometry_ckpt")
    render = args.render_ckpt or split_cfg.get("render_ckpt")
    if not geometry or not render:
        raise ValueError(f"--generate needs --geometry-ckpt and --render-ckpt (no defaults for split {args.split!r})")
    device = str(resolve_device(args.device or str(cfg.scoring.get("device", "auto"))))
    return generate(videos, out / "generated" / args.generate_name, resolve_path(geometry), resolve_path(render),
                    device)


def run_benchmark(split: str, videos: list[Video], matched: dict, ev: Evaluators, scoring: dict, out: Path,
                  method_dirs: dict | None = None, unreadable: list[str] = ()) -> dict:
    """Score every method (and the GT row) and write benchmark.md / .csv / .json into ``out``; ``unreadable``
    (shards that could not be read, their clips not scored) is listed in the report."""
    scores = score_videos(videos, matched, ev, scoring)
    result = {"split": split, "videos": len(videos), "metrics": ev.computed(), "scorers": ev.variants,
              "skipped": ev.skipped, "unreadable_shards": list(unreadable), "notes": list(NOTES),
              "methods": {k: str(v) for k, v in (method_dirs or {}).items()},
              "scoring": scoring, **scores}
    result["files"] = {k: str(v) for k, v in write_reports(result, out).items()}
    return result


def print_table(result: dict, out: Path) -> None:
    print(f"\nBenchmark, split {result['split']} ({result['videos']} videos):\n")
    print(table_markdown(result["summary"], result["metrics"], ordered_methods(result["summary"])))
    for metric, variant in result["scorers"].items():
        print(f"  {metric}: {variant}")
    for metric, why in result["skipped"].items():
        print(f"  {metric}: not computed ({why})")
    for shard in result.get("unreadable_shards", []):
        print(f"  unreadable shard, its clips not scored: {shard}")
    print(f"\nwritten: {', '.join(result['files'].values())}")


if __name__ == "__main__":
    sys.exit(main())
