"""Table 4 (ablations, persona preservation): dub the split's test videos with each ablation's checkpoints and
score them all in one benchmark run.

    python -m eval.table4 --checkpoints ours=RENDER_CKPT --checkpoints "w/o lip-attention"=RENDER_CKPT ...
        [--geometry GEOMETRY_CKPT] [--geometry-for "w/o style embedding"=GEOMETRY_CKPT ...]
        [--split synthetic] [--out DIR] [any eval.benchmark option: --weights, --allow-missing, --device ...]

Each NAME is dubbed with its stage-2 checkpoint and the stage-1 checkpoint ``--geometry`` (default:
``splits.<split>.geometry_ckpt``), or its own from ``--geometry-for NAME=CKPT`` (the w/o-style ablation is a
stage-1 model). Outputs go to OUT/generated/<NAME> (kept between runs); the benchmark files to OUT, plus
``table4.md``: LPIPS, CSIM and StyleSim per ablation (the columns of the paper's Table 4), GT last.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from eval import benchmark
from eval.config import parse_pair, resolve_path
from eval.generate import generate
from eval.report import atomic_write, ordered_methods, table_markdown
from eval.splits import match_generated
from eval.weights import REPO_ROOT, MissingWeightsError

TABLE4_METRICS = ["lpips", "csim", "csim_dlib", "stylesim"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval.table4", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    benchmark.add_common_args(p)
    p.set_defaults(split="synthetic")
    for action in p._actions:
        if action.dest == "split":
            action.required = False
    p.add_argument("--checkpoints", action="append", required=True, metavar="NAME=RENDER_CKPT",
                   help="an ablation's stage-2 checkpoint (repeatable; the row order of the table)")
    p.add_argument("--geometry", help="stage-1 checkpoint for every row (default: splits.<split>.geometry_ckpt)")
    p.add_argument("--geometry-for", action="append", default=[], metavar="NAME=GEOMETRY_CKPT",
                   help="a row's own stage-1 checkpoint (e.g. the w/o-style model)")
    return p.parse_args(argv)


def folder_name(name: str) -> str:
    """A method name as a folder name ('w/o lip-attention' -> 'w_o_lip-attention')."""
    return re.sub(r"[^A-Za-z0-9_+\-]", "_", name)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg, scoring = benchmark.configure(args)
        metrics, weights, skipped = benchmark.check_evaluator_weights(args, cfg)
        videos = benchmark.split_videos(args, cfg)
        plan = checkpoint_plan(args, cfg)
    except MissingWeightsError as err:
        print(f"eval.table4: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as err:
        print(f"eval.table4: error: {err}", file=sys.stderr)
        return 2
    out = args.out or REPO_ROOT / "outputs" / "table4" / args.split
    device = str(benchmark.resolve_device(str(scoring["device"])))
    dirs = {name: generate(videos, out / "generated" / folder_name(name), geometry, render, device)
            for name, (geometry, render) in plan.items()}
    matched = {name: match_generated(videos, name, folder) for name, folder in dirs.items()}
    ev = benchmark.build_evaluators(metrics, weights, scoring, skipped)
    result = benchmark.run_benchmark(args.split, videos, matched, ev, scoring, out, method_dirs=dirs)
    table = table4_markdown(result)
    atomic_write(Path(out) / "table4.md", f"# Table 4 (ablations), split {args.split}\n\n{table}\n")
    benchmark.print_table(result, out)
    print(f"\nTable 4:\n{table}\n(written: {Path(out) / 'table4.md'})")
    return 0


def table4_markdown(result: dict) -> str:
    """LPIPS, CSIM and StyleSim per row (GT last); when none of them was computed, every computed metric,
    with a line that says so."""
    columns = [m for m in TABLE4_METRICS if m in result["metrics"]]
    note = ""
    if not columns:
        columns = result["metrics"]
        note = "\n\nTable 4's metrics (LPIPS, CSIM, StyleSim) were not computed: " + "; ".join(
            f"{m}: {result['skipped'].get(m, 'not selected')}" for m in TABLE4_METRICS)
    return table_markdown(result["summary"], columns, ordered_methods(result["summary"])) + note


def checkpoint_plan(args: argparse.Namespace, cfg) -> dict[str, tuple[str, str]]:
    """{row name: (geometry checkpoint, render checkpoint)}."""
    split_cfg = cfg.splits.get(args.split) or {}
    default_geometry = args.geometry or split_cfg.get("geometry_ckpt")
    own = dict(parse_pair(g, "--geometry-for", "NAME=GEOMETRY_CKPT") for g in args.geometry_for)
    plan = {}
    for spec in args.checkpoints:
        name, render = parse_pair(spec, "--checkpoints", "NAME=RENDER_CKPT")
        geometry = own.pop(name, default_geometry)
        if not geometry:
            raise ValueError(f"--checkpoints {spec}: no stage-1 checkpoint "
                             f"(give --geometry or --geometry-for {name}=CKPT)")
        plan[name] = (resolve_path(geometry), resolve_path(render))
    if own:
        raise ValueError(f"--geometry-for names rows that have no --checkpoints: {sorted(own)}")
    return plan


if __name__ == "__main__":
    sys.exit(main())
