"""The benchmark table as Markdown, CSV and JSON (each written to a temporary file, then renamed).

``benchmark.md``: the summary table (methods, then GT; paper Table 1 columns with the direction of each),
the scorer variants and notes, then the per-video rows. ``benchmark.csv``: one row per (method, video) and
one ``mean`` row per method. ``benchmark.json``: split, summary, per-video rows, scorer variants, skipped
metrics, notes. Non-finite numbers (PSNR of identical frames) are written "inf".
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

from eval.evaluators import METRICS

# table column -> (summary key, header, decimals)
COLUMNS = {"ssim": ("ssim", "SSIM↑", 3), "psnr": ("psnr", "PSNR↑", 3), "fid": ("fid", "FID↓", 3),
           "lmd": ("lmd", "LMD↓", 4), "sync": ("sync_conf", "SyncScore↑", 3), "lpips": ("lpips", "LPIPS↓", 3),
           "csim": ("csim", "CSIM↑", 3), "csim_dlib": ("csim_dlib", "CSIM (dlib ResNet)↑", 3),
           "stylesim": ("stylesim", "StyleSim↑", 3)}
ROW_KEYS = ("method", "video", "speaker", "frames_gen", "frames_gt", "frames_used", "rescaled", "ssim", "psnr",
            "lmd", "lmd_missing_gen", "sync_conf", "sync_offset", "lse_d", "sync_skipped", "lpips", "csim",
            "csim_dlib", "stylesim")
NOTES = (
    "Self-dubbing: each video is driven by its own audio; the GT row scores the real video the same way "
    "(SSIM, PSNR, FID, LMD, LPIPS and CSIM of GT against itself are trivially best; its SyncScore and "
    "StyleSim are the reference values).",
    "Crops: 256x256, boxes from the ground truth's MediaPipe track, applied to both videos (pixel-aligned); "
    "the ground truth's longest face segment is scored, truncated to the shorter video.",
    "LMD: mean L2 distance of the 40 MediaPipe lip landmarks, generated vs GT crop, divided by the GT's "
    "inter-ocular distance (outer eye corners 33-263), averaged over frames: a fraction of the IOD.",
    "SyncScore: confidence of SyncNet with the driving (ground-truth) audio; LSE-D and offset in the CSV/JSON.",
    "StyleSim: cross-half protocol, (cos(S(gen_B), S(gt_A)) + cos(S(gen_A), S(gt_B))) / 2 over the two halves A, B.",
    "Means are over videos (per-frame means first); FID is over all frames of a method's videos.",
)


def fmt(value, decimals: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, float):
        return f"{value:.{decimals}f}"
    return str(value)


def table_markdown(summary: dict, metrics: list[str], methods: list[str]) -> str:
    """The summary as a Markdown table: one row per method (GT last), one column per computed metric."""
    cols = [m for m in METRICS if m in metrics]
    lines = ["| method | " + " | ".join(COLUMNS[c][1] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for method in methods:
        cells = [fmt(summary[method].get(COLUMNS[c][0]), COLUMNS[c][2]) for c in cols]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ordered_methods(summary: dict) -> list[str]:
    return [m for m in summary if m != "GT"] + (["GT"] if "GT" in summary else [])


def markdown(result: dict) -> str:
    metrics = result["metrics"]
    methods = ordered_methods(result["summary"])
    parts = [f"# Benchmark: split {result['split']} ({result['videos']} videos)", "",
             table_markdown(result["summary"], metrics, methods), "", "## Scorers", ""]
    parts += [f"- {COLUMNS[m][1].rstrip('↑↓')}: {result['scorers'][m]}" for m in METRICS if m in result["scorers"]]
    parts += [f"- {COLUMNS[m][1].rstrip('↑↓')}: not computed ({why})" for m, why in result["skipped"].items()]
    if result.get("unreadable_shards"):
        parts += ["", "## Unreadable shards (their clips not scored)", ""]
        parts += [f"- {shard}" for shard in result["unreadable_shards"]]
    parts += ["", "## Notes", ""] + [f"- {n}" for n in result["notes"]] + ["", "## Per video", ""]
    keys = [k for k in ROW_KEYS if any(k in r for r in result["rows"])]
    parts += ["| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"]
    parts += ["| " + " | ".join(fmt(r.get(k), 4) for k in keys) + " |" for r in result["rows"]]
    return "\n".join(parts) + "\n"


def csv_text(result: dict) -> str:
    keys = [k for k in ROW_KEYS if any(k in r for r in result["rows"])] + ["fid"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in result["rows"]:
        writer.writerow({k: _plain(row.get(k)) for k in keys})
    for method, values in result["summary"].items():
        writer.writerow({"method": method, "video": "mean", **{k: _plain(values.get(k)) for k in keys[2:]}})
    return buf.getvalue()


def _plain(value):
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    return value


def _json_ready(obj):
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    return _plain(obj)


def write_reports(result: dict, out: str | Path) -> dict[str, Path]:
    """Write benchmark.md / .csv / .json into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"md": markdown(result), "csv": csv_text(result),
             "json": json.dumps(_json_ready(result), indent=1, allow_nan=False)}
    return {ext: atomic_write(out / f"benchmark.{ext}", text) for ext, text in files.items()}


def atomic_write(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
