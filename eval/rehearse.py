"""The rehearsal of a researcher's first run at the paper's sizes (``make rehearse``; README, "Training at scale"):
the helpers the Makefile target calls between its ordinary commands.

    python -m eval.rehearse stand-ins --out DIR        # HuBERT-base, VGG16 and AlexNet files with random weights
    python -m eval.rehearse real-clips --out DIR --video A.mp4 --video B.mp4 [--speech-seconds 2]
    python -m eval.rehearse resumed --run DIR --steps N  # did last.ckpt resume to step N?
    python -m eval.rehearse figures --root DIR           # the planning figures, figures.md / figures.json

Stand-ins: files with the real ones' names and formats, random weights, loaded through the same code and config
paths as the real files (``model.net.e_aud.pretrained`` = ``${paths.data_dir}/models/hubert-base-ls960``, the
LPIPS backbones at ``${paths.data_dir}/models/``), so a run with ``paths.data_dir=DIR`` exercises the real
loading path at the real sizes. What they produce is meaningless: never train a model to use with them.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

STAND_IN_NOTE = """STAND-INS, NOT MODELS. Made by `python -m eval.rehearse stand-ins` for `make rehearse`:
files with the real ones' names, formats and sizes and RANDOM weights, so the paper recipe's loading paths run
without the real downloads. Nothing trained or measured with them means anything beyond time and memory.
  models/hubert-base-ls960/   HubertModel(HubertConfig()) (base sizes), save_pretrained
  models/vgg16-397923af.pth   torchvision.models.vgg16() state dict (LPIPS-VGG loss backbone)
  models/alexnet-owt-7be5be79.pth  torchvision.models.alexnet() state dict (LPIPS metric backbone)
  BFM_model_front.mat         python -m data_prep.synthetic.bfm_standin (the procedural face model, densified)
"""


def write_stand_ins(out: Path) -> list[Path]:
    """The HuBERT-base folder and the two torchvision backbones under ``out/models`` (existing ones kept)."""
    import torch
    import torchvision
    from transformers import HubertConfig, HubertModel

    models = out / "models"
    models.mkdir(parents=True, exist_ok=True)
    (out / "STAND_INS.txt").write_text(STAND_IN_NOTE)
    torch.manual_seed(0)
    written = []
    hubert = models / "hubert-base-ls960"
    if not (hubert / "config.json").is_file():
        tmp = models / ".hubert-base-ls960.tmp"
        HubertModel(HubertConfig()).save_pretrained(tmp)  # the base sizes: 12 layers, width 768, 94.4 M parameters
        os.replace(tmp, hubert)
        written.append(hubert)
    for name, build in (("vgg16-397923af.pth", torchvision.models.vgg16),
                        ("alexnet-owt-7be5be79.pth", torchvision.models.alexnet)):
        path = models / name
        if not path.is_file():
            tmp = path.with_name(f".{name}.tmp")
            torch.save(build().state_dict(), tmp)
            os.replace(tmp, path)
            written.append(path)
    return written


def real_clips(out: Path, train: Path, val: Path, speech_seconds: float) -> dict[str, Path]:
    """Two real clips as a labelled folder source (``clips/`` + ``labels.tsv``: ``train`` in the train split, ``val``
    in val, one person each), the val clip in HDTF's layout for ``eval.benchmark --split hdtf`` (``hdtf/`` +
    ``test_list.txt``, named by its HDTF name when it has one) and the first ``speech_seconds`` of its own audio
    (``speech.wav``) for a self-dub. Links, never copies: the clips stay where they are."""
    import numpy as np
    import scipy.io.wavfile

    from src.media.contract import SAMPLE_RATE
    from src.media.decode import read_audio

    for flag, video in (("--train", train), ("--val", val)):
        if not video.is_file():
            raise FileNotFoundError(f"{flag} {video}: no such video")
    clips, hdtf = out / "clips", out / "hdtf"
    for folder in (clips, hdtf):
        folder.mkdir(parents=True, exist_ok=True)
    rows = ["file\tperson\tsplit"]
    for video, split in ((train, "train"), (val, "val")):
        _link(clips / video.name, video)
        rows.append(f"{video.name}\t{video.stem}\t{split}")
    (out / "labels.tsv").write_text("\n".join(rows) + "\n")
    name = val.stem.split("__")[-1]  # OpenTalker__SadTalker__WDA_KatieHill_000 -> WDA_KatieHill_000
    _link(hdtf / f"{name}.mp4", val)
    (hdtf / "test_list.txt").write_text(name + "\n")
    audio = read_audio(val, SAMPLE_RATE)
    if audio is None or not np.any(audio):
        raise ValueError(f"--val {val}: the self-dub needs the clip's own speech, and it has none")
    speech = np.round(np.clip(audio[: int(speech_seconds * SAMPLE_RATE)], -1, 1) * 32767).astype(np.int16)
    scipy.io.wavfile.write(out / "speech.wav", SAMPLE_RATE, speech)
    return {"clips": clips, "labels": out / "labels.tsv", "hdtf": hdtf, "speech": out / "speech.wav"}


def _link(link: Path, target: Path) -> None:
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target.resolve())


def resumed(run: Path, steps: int) -> dict:
    """Check that ``run``'s last.ckpt is at ``steps`` and that its step log (``StepStats``) shows a resumed fit: the
    last two processes logged consecutive steps. -> {"first": [a, b], "resumed": [c, d]}."""
    import torch

    ckpt = run / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"--run {run}: no checkpoints/last.ckpt")
    step = torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]
    if step != steps:
        raise ValueError(f"--run {run}: last.ckpt is at step {step}, expected {steps}")
    records = [json.loads(line) for line in (run / "step_stats.jsonl").read_text().splitlines()]
    parts: dict[int, list[int]] = {}
    for record in records:
        parts.setdefault(record["pid"], []).append(record["step"])
    parts = list(parts.values())
    if len(parts) < 2 or parts[-1][0] != parts[-2][-1] + 1:
        raise ValueError(f"--run {run}: step_stats.jsonl shows no resumed fit (steps per process: {parts})")
    return {"first": [parts[-2][0], parts[-2][-1]], "resumed": [parts[-1][0], parts[-1][-1]]}


GPU_BYTES = 80e9  # "80 GB" as the cards are sold (A100 / H100 80GB): 76,294 MiB


def step_summary(stats: Path) -> dict:
    """One run's StepStats log -> medians of step and data time, the largest peak RSS, the data workers' RSS.
    Each process's first step (lazy allocations, warm-up) is left out where the process logged more."""
    records = [json.loads(line) for line in stats.read_text().splitlines()]
    by_pid: dict[int, list[dict]] = {}
    for record in records:
        by_pid.setdefault(record["pid"], []).append(record)
    steady = [r for rs in by_pid.values() for r in (rs[1:] if len(rs) > 1 else rs)]
    median = lambda values: float(statistics.median(values)) if values else None  # noqa: E731
    return {"batch_size": records[0]["batch_size"], "steps": len(records), "steady_steps": len(steady),
            "step_s": median([r["step_s"] for r in steady]),
            "data_s": median([r["data_s"] for r in steady if r["data_s"] is not None]),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in steady),
            "workers_rss_mb": max((sum(r.get("workers_rss_mb") or [0.0]) for r in records), default=0.0),
            "worker_rss_max_mb": max((max(r.get("workers_rss_mb") or [0.0]) for r in records), default=0.0),
            "cuda_peak_mb": max((r["cuda_peak_mb"] for r in steady if r["cuda_peak_mb"] is not None), default=None)}


def batch_fit(points: list[tuple[int, float]], budget_mb: float = GPU_BYTES / 2**20) -> dict:
    """Least-squares line peak = fixed + per_sample * batch through (batch, peak MiB) points, and the largest batch
    whose extrapolated peak fits in ``budget_mb``, with the arithmetic as text."""
    import numpy as np

    batch, peak = (np.asarray(v, float) for v in zip(*points))
    per_sample, fixed = np.polyfit(batch, peak, 1)
    largest = int((budget_mb - fixed) // per_sample) if per_sample > 0 else None
    text = (f"peak = {fixed:.0f} MiB + {per_sample:.0f} MiB x batch (least squares through "
            + ", ".join(f"b={b:.0f}: {p:.0f}" for b, p in zip(batch, peak))
            + f"); ({budget_mb:.0f} - {fixed:.0f}) / {per_sample:.0f} = "
            + (f"{(budget_mb - fixed) / per_sample:.1f} -> batch {largest}" if largest is not None else "n/a"))
    return {"fixed_mb": float(fixed), "per_sample_mb": float(per_sample), "largest_batch": largest, "text": text}


def shard_figures(folder: Path) -> dict:
    """Bytes of a shard folder's tars per second of clip, with the fit errors its index reports."""
    index = json.loads((folder / "index.json").read_text())
    frames = sum(split["frames"] for split in index["splits"].values())
    size = sum(p.stat().st_size for p in folder.glob("*.tar"))
    out = {"bytes": size, "frames": frames, "seconds": frames / 25.0, "bytes_per_second": size / (frames / 25.0)}
    for key in ("gt_exp_error_mm", "gt_lower_error_mm", "reprojection_px"):
        values = {name: split[key] for name, split in index["splits"].items() if key in split}
        if values:
            out[key] = values
    return out


def dub_stages(log: Path) -> dict:
    """The stage table ``src.dub`` prints (| stage | seconds | frames | frames/s |) -> {stage: [seconds, frames]}."""
    rows = {}
    for line in log.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 4 and cells[1].replace(".", "", 1).isdigit():
            rows[cells[0]] = [float(cells[1]), int(cells[2]) if cells[2] else None]
    return rows


def figures(root: Path) -> dict:
    """Everything ``make rehearse`` measured, from the files its steps left under ``root``."""
    doc: dict = {"stages": {}, "checkpoints_mb": {}, "shards": {}, "data_prep": {}, "raster": None, "dub": None}
    for stage in ("geometry", "render"):
        runs = [root / stage] + sorted((root / "sweep").glob(f"{stage}_b*"))
        summaries = [step_summary(run / "step_stats.jsonl") for run in runs if (run / "step_stats.jsonl").is_file()]
        if summaries:
            points = sorted({s["batch_size"]: s["peak_rss_mb"] for s in summaries}.items())
            doc["stages"][stage] = {"main": summaries[0], "by_batch": summaries,
                                    "fit_80gb": batch_fit(points) if len(points) >= 2 else None}
        ckpt = root / stage / "checkpoints" / "last.ckpt"
        if ckpt.is_file():
            doc["checkpoints_mb"][stage] = ckpt.stat().st_size / 2**20
    for folder in sorted((root / "shards").glob("*")):
        if (folder / "index.json").is_file():
            doc["shards"][folder.name] = shard_figures(folder)
    for path in sorted((root / "speed").glob("data_prep_*.json")):
        doc["data_prep"][path.stem[len("data_prep_"):]] = json.loads(path.read_text())
    if (root / "speed" / "raster.json").is_file():
        doc["raster"] = json.loads((root / "speed" / "raster.json").read_text())
    if (root / "dub.log").is_file():
        doc["dub"] = dub_stages(root / "dub.log")
    return doc


def figures_markdown(doc: dict) -> str:
    lines = ["# make rehearse: the planning figures (CPU of this machine; GPU: not measured here)", ""]
    names = {"geometry": "stage 1, geometry_style (HuBERT-base, BFM 35,709 vertices)",
             "render": "stage 2, render_dual_attn (256 px, C = 128, N_f = N_l = 5)"}
    lines += ["| stage | batch | s / step | data wait s | peak RSS MiB (main process) | data workers RSS MiB |",
              "|---|---|---|---|---|---|"]
    for stage, entry in doc["stages"].items():
        for s in entry["by_batch"]:
            wait = "" if s["data_s"] is None else f"{s['data_s']:.2f}"
            lines.append(f"| {names[stage]} | {s['batch_size']} | {s['step_s']:.1f} | {wait} | "
                         f"{s['peak_rss_mb']:.0f} | {s['workers_rss_mb']:.0f} |")
    lines.append("")
    for stage, entry in doc["stages"].items():
        if entry["fit_80gb"]:
            lines.append(f"- {stage}, largest batch in 80 GB by extrapolation: {entry['fit_80gb']['text']}")
    lines += [""] + [f"- checkpoint {stage}: {mb:.0f} MiB (last.ckpt)" for stage, mb in doc["checkpoints_mb"].items()]
    for name, shard in doc["shards"].items():
        extra = "".join(f", {k} {v}" for k, v in shard.items() if k.startswith(("gt_", "reprojection")))
        lines.append(f"- shards {name}: {shard['bytes'] / 1e6:.1f} MB for {shard['seconds']:.1f} s of clips = "
                     f"{shard['bytes_per_second'] / 1e3:.0f} kB per clip-second{extra}")
    for name, run in doc["data_prep"].items():
        e2e, fit = run["end_to_end"], run["steps"]["fit"]
        lines.append(f"- data prep {name} ({run['clip']}, {run['size'][0]}x{run['size'][1]}, {run['face_model']}): "
                     f"end to end {e2e['fps_per_core']:.1f} frames per CPU-second, the fit alone "
                     f"{fit['fps_per_core']:.0f}")
    if doc["raster"]:
        for row in doc["raster"]["rows"]:
            lines.append(f"- PNCC at {doc['raster']['size']} px, {row['mesh']} ({row['verts']} vertices, {row['tris']} "
                         f"triangles): {row['pncc']:.0f} frames/s on one thread")
    if doc["dub"]:
        lines.append("- dub, seconds per stage: " + ", ".join(f"{k} {v[0]:.1f}" + (f" ({v[1]} frames)" if v[1] else "")
                                                            for k, v in doc["dub"].items()))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "stand-ins":
            written = write_stand_ins(args.out)
            print(f"stand-ins (random weights, not models): {args.out}/models ({len(written)} written, the rest kept)")
        elif args.command == "real-clips":
            made = real_clips(args.out, args.train, args.val, args.speech_seconds)
            print(f"real clips: {made['clips']} (labels {made['labels']}), HDTF layout {made['hdtf']}, "
                  f"self-dub speech {made['speech']}")
        elif args.command == "resumed":
            parts = resumed(args.run, args.steps)
            print(f"{args.run}: steps {parts['first'][0]}-{parts['first'][1]} in one process, then resumed from "
                  f"last.ckpt for steps {parts['resumed'][0]}-{parts['resumed'][1]}")
        elif args.command == "figures":
            doc = figures(args.root)
            (args.root / "figures.json").write_text(json.dumps(doc, indent=1))
            text = figures_markdown(doc)
            (args.root / "figures.md").write_text(text)
            print(text + f"\nwritten: {args.root / 'figures.md'}, {args.root / 'figures.json'}")
    except (FileNotFoundError, ValueError) as err:
        print(f"python -m eval.rehearse {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.rehearse", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    stand = sub.add_parser("stand-ins", help="HuBERT-base, VGG16 and AlexNet files with random weights")
    stand.add_argument("--out", required=True, type=Path, help="folder given to training as paths.data_dir")
    real = sub.add_parser("real-clips", help="two real clips as a labelled folder, HDTF layout and self-dub speech")
    real.add_argument("--out", required=True, type=Path)
    real.add_argument("--train", required=True, type=Path, help="a real clip for the train split")
    real.add_argument("--val", required=True, type=Path, help="a real clip for the val split, dubbed and benchmarked")
    real.add_argument("--speech-seconds", type=float, default=2.0, help="length of the self-dub's speech")
    res = sub.add_parser("resumed", help="check that a run resumed from last.ckpt up to --steps")
    res.add_argument("--run", required=True, type=Path, help="the run folder (hydra.run.dir)")
    res.add_argument("--steps", required=True, type=int, help="the step last.ckpt must be at")
    fig = sub.add_parser("figures", help="the planning figures from a rehearsal's files: figures.md, figures.json")
    fig.add_argument("--root", required=True, type=Path, help="the rehearsal folder (outputs/rehearse)")
    return p


if __name__ == "__main__":
    sys.exit(main())
