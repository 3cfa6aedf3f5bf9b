"""Does the mouth follow the words? Stage-1 checkpoints on real speech, with their geometry as the truth:

    python -m eval.lipsync --geometry-ckpt G [--geometry-ckpt NAME=G2 ...] --shards DIR --out DIR [--split val]
        [--speech FILE ...] [--reference-clip KEY] [--no-vad]

Self-dubbing (``--shards``): every clip of the split is driven by its own speech, the reference for the style code
and the template being the clip itself, as ``src.dub`` does it (stage 1 over the whole clip in crossfaded windows,
the voice-activity gate applied). The clip's fitted geometry is the truth. Per clip and method:

    mouth_corr       Pearson correlation of the predicted and the fitted mouth opening over the clip's frames
    lower_mm         mean L2 distance (mm) of the predicted lower-face vertices to the fitted ones
    baseline_mm      the same for the mouth frozen at the clip's mean expression (its mean lower face)
    ratio            lower_mm / baseline_mm: below 1 the prediction explains part of the motion around the mean

Speech without video (``--speech``): other recordings (other languages, say) drive one reference clip
(``--reference-clip``, default the split's first); no truth exists, so the figures are the predicted mouth's
opening range (std, mm), the share of frames the gate calls speech, and the correlation of the opening with the
speech's loudness envelope (a weak proxy: open vowels are loud).

Outputs in ``--out``: ``lipsync.md``, ``lipsync.csv`` (one row per method and clip, a ``mean`` row per method),
``lipsync.json``, written to a temporary name and renamed.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from eval.report import atomic_write
from eval.shard_clips import face_model_spec, iter_samples, meta, npy, split_urls
from src.geometry import net_units
from src.geometry.compose import compose_canonical
from src.inference.audio import VadConfig, frame_levels_db, load_target_audio, voice_activity
from src.inference.checkpoints import Loaded, load_stage
from src.inference.geometry import GeometryConfig, LowerFaceStream, stage_one_inputs
from src.media.contract import FPS, SAMPLES_PER_FRAME
from src.models.face_model import load_face_model

COLUMNS = ("method", "clip", "person", "mouth_corr", "lower_mm", "baseline_mm", "ratio")
SPEECH_COLUMNS = ("method", "speech", "opening_std_mm", "speech_fraction", "loudness_corr")
SILENCE_COLUMNS = ("method", "speech", "close_s", "open_s", "closed_mm", "speaking_mm")
PART, GAP = 2 * FPS, 2 * FPS  # frames of speech on each side of the silence, frames of silence


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval.lipsync", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--geometry-ckpt", action="append", required=True, metavar="[NAME=]PATH",
                   help="a stage-1 checkpoint (src.train experiment=geometry_*); repeat for several methods")
    p.add_argument("--shards", required=True, type=Path, help="a shard folder (index.json)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--split", default="val")
    p.add_argument("--speech", action="append", default=[], type=Path, metavar="FILE",
                   help="speech without video to drive the reference clip with (no truth: range and gate figures)")
    p.add_argument("--silence", action="append", default=[], type=Path, metavar="FILE",
                   help="speech cut mid-word into 2 s + 2 s of silence + 2 s: how fast the mouth closes and reopens")
    p.add_argument("--reference-clip", help="the clip key the --speech files drive (default: the split's first)")
    p.add_argument("--no-vad", action="store_true", help="no voice-activity gate")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = p.parse_args(argv)
    if not (args.shards / "index.json").is_file():
        p.error(f"--shards {args.shards}: no index.json (not a shard folder)")
    for flag, paths in (("--speech", args.speech), ("--silence", args.silence)):
        for path in paths:
            if not path.is_file():
                p.error(f"{flag} {path}: no such file")
    return args


@dataclass
class Clip:
    """What stage 1 needs of a reference clip, in the shape dubbing's analysis has (``stage_one_inputs``)."""

    key: str
    person: str
    alpha: np.ndarray  # (T, K_id), the clip's identity on every frame
    beta: np.ndarray  # (T, K_exp)
    found: np.ndarray  # (T,) bool
    samples: np.ndarray  # (640 T,) float 16 kHz


def clips(shards: Path, split: str) -> list[Clip]:
    out = []
    for sample in iter_samples(split_urls(shards, split, "eval.lipsync")):
        info = meta(sample)
        if info.get("has_audio") is False:
            continue
        beta = npy(sample, "beta.npy")
        alpha = np.repeat(npy(sample, "alpha.npy")[None], len(beta), 0)
        samples = npy(sample, "audio.npy").astype(np.float32) / 32768.0
        out.append(Clip(sample["__key__"], str(info.get("speaker")), alpha, beta, np.ones(len(beta), bool), samples))
    return out


def predict(net, fm, clip: Clip, samples: np.ndarray, vad: VadConfig, device: str) -> np.ndarray:
    """Stage 1 as a dub runs it: ``samples`` driving ``clip`` -> (T, n_lower, 3) mm."""
    n = len(samples) // SAMPLES_PER_FRAME
    cfg = GeometryConfig()
    inputs = stage_one_inputs(net, fm, clip, cfg, device)
    gate = voice_activity(samples[:SAMPLES_PER_FRAME * n], vad)
    return LowerFaceStream(net, inputs, samples[:SAMPLES_PER_FRAME * n], gate, cfg, device).take(0, n)


def opening(fm, clip: Clip, lower_mm: np.ndarray) -> np.ndarray:
    """(T, n_lower, 3) mm on the clip's canonical geometry -> (T,) mouth opening in mm."""
    n = len(lower_mm)
    with torch.no_grad():
        verts = compose_canonical(fm, torch.from_numpy(clip.alpha[:n]), torch.from_numpy(clip.beta[:n]),
                                  torch.from_numpy(np.ascontiguousarray(lower_mm, np.float32)))
        return fm.mouth_opening(verts).numpy()


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or a.std() < 1e-9 or b.std() < 1e-9:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def score_clip(net, fm, clip: Clip, vad: VadConfig, device: str) -> dict:
    with torch.no_grad():
        truth = net_units.lower_face_mm(fm, torch.from_numpy(clip.beta)).numpy()  # (T, n_lower, 3)
    pred = predict(net, fm, clip, clip.samples, vad, device)
    mean = truth.mean(0, keepdims=True)
    lower = float(np.linalg.norm(pred - truth, axis=-1).mean())
    baseline = float(np.linalg.norm(mean - truth, axis=-1).mean())
    return {"mouth_corr": correlation(opening(fm, clip, pred), opening(fm, clip, truth)), "lower_mm": lower,
            "baseline_mm": baseline, "ratio": lower / baseline if baseline > 0 else float("nan")}


def looped(clip: Clip, samples: np.ndarray) -> Clip:
    """``clip``'s geometry looped (or cut) to the length of ``samples``, driven by them: a reference for speech
    that has no video of its own."""
    n = len(samples) // SAMPLES_PER_FRAME
    alpha, beta = (np.resize(x, (n, *x.shape[1:])) for x in (clip.alpha, clip.beta))  # (n, K) each
    return Clip(clip.key, clip.person, alpha, beta, np.ones(n, bool), samples)


def score_speech(net, fm, clip: Clip, path: Path, vad: VadConfig, device: str) -> dict:
    samples = load_target_audio(path).samples
    n = len(samples) // SAMPLES_PER_FRAME
    reference = looped(clip, samples)
    gate = voice_activity(samples[:SAMPLES_PER_FRAME * n], vad)
    pred = predict(net, fm, reference, samples, vad, device)
    open_mm = opening(fm, reference, pred)
    loudness = frame_levels_db(samples[:SAMPLES_PER_FRAME * n])
    return {"opening_std_mm": float(open_mm.std()), "speech_fraction": float((gate > 0.5).mean()),
            "loudness_corr": correlation(open_mm, loudness)}


def gapped_speech(samples: np.ndarray, vad: VadConfig) -> np.ndarray:
    """``PART`` frames of speech ending mid-word, ``GAP`` frames of digital silence, ``PART`` frames starting
    mid-word (cut where the detector hears speech on 3 frames each side), so speech stops exactly at frame
    ``PART`` and starts again at ``PART + GAP``."""
    n = len(samples) // SAMPLES_PER_FRAME
    speech = voice_activity(samples[:n * SAMPLES_PER_FRAME], vad) > 0.5  # (n,)
    inside = [k for k in range(3, n - 3) if speech[k - 3:k + 3].all()]
    a = next((k for k in inside if k >= PART), None)
    b = next((k for k in inside if a is not None and k >= a + FPS and k + PART <= n), None)
    if b is None:
        raise ValueError(f"--silence: needs {2 * PART / FPS + 1:.0f} s of speech or more with speech at the cuts")
    f = SAMPLES_PER_FRAME
    return np.concatenate([samples[(a - PART) * f:a * f], np.zeros(GAP * f, samples.dtype),
                           samples[b * f:(b + PART) * f]])


def score_silence(net, fm, clip: Clip, path: Path, vad: VadConfig, device: str) -> dict:
    """Seconds from the speech's end to a closed mouth and from its restart to an open one, on the predicted
    geometry. Closed: the opening within 20% of the way from the mid-silence opening to the speaking level (its
    90th percentile over the speech frames)."""
    samples = gapped_speech(load_target_audio(path).samples, vad)
    n = len(samples) // SAMPLES_PER_FRAME
    reference = looped(clip, samples)
    open_mm = opening(fm, reference, predict(net, fm, reference, samples, vad, device))  # (n,)
    closed = float(np.median(open_mm[PART + 10:PART + GAP - 10]))
    speaking = float(np.percentile(np.concatenate([open_mm[:PART], open_mm[PART + GAP:]]), 90))
    threshold = closed + 0.2 * (speaking - closed)
    close = next((k for k in range(PART, PART + GAP) if open_mm[k] <= threshold), PART + GAP)
    reopen = next((k for k in range(PART + GAP, n) if open_mm[k] > threshold), n)
    return {"close_s": (close - PART) / FPS, "open_s": (reopen - PART - GAP) / FPS, "closed_mm": closed,
            "speaking_mm": speaking}


def load_methods(specs: list[str], device: str) -> dict[str, Loaded]:
    methods = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        name, path = (name, path) if sep else ("", spec)
        loaded = load_stage("geometry", path, device)
        name = name or str(loaded.config.get("task_name") or Path(path).stem)
        if name in methods:
            raise ValueError(f"--geometry-ckpt {spec}: the method name {name!r} is taken; name it: NAME={path}")
        methods[name] = loaded
    return methods


def mean_row(rows: list[dict], keys: tuple[str, ...]) -> dict:
    return {k: float(np.nanmean([r[k] for r in rows])) for k in keys}


def table(rows: list[dict], columns: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in columns) + " |")
    return "\n".join(lines)


def csv_text(rows: list[dict], columns: tuple[str, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for r in rows:
        writer.writerow(["" if isinstance(r[c], float) and math.isnan(r[c]) else
                         (f"{r[c]:.6g}" if isinstance(r[c], float) else r[c]) for c in columns])
    return buffer.getvalue()


def main(argv=None) -> int:
    args = parse_args(argv)
    methods = load_methods(args.geometry_ckpt, args.device)
    spec = face_model_spec(args.shards)
    fm = load_face_model(spec)
    vad = VadConfig(enabled=not args.no_vad)
    split = clips(args.shards, args.split)
    if not split:
        raise ValueError(f"--shards {args.shards}: the {args.split!r} split has no clip with speech")
    rows, means = [], []
    for name, loaded in methods.items():
        mine = []
        for clip in tqdm(split, desc=f"lipsync {name}", unit="clip", file=sys.stderr):
            mine.append({"method": name, "clip": clip.key, "person": clip.person,
                         **score_clip(loaded.net, fm, clip, vad, args.device)})
        rows += mine
        means.append({"method": name, "clip": "mean", "person": f"{len({r['person'] for r in mine})} people",
                      **mean_row(mine, COLUMNS[3:])})
    reference = next((c for c in split if c.key == args.reference_clip), None) if args.reference_clip else split[0]
    if reference is None:
        raise ValueError(f"--reference-clip {args.reference_clip}: not a clip of the {args.split!r} split")
    speech_rows = [{"method": name, "speech": path.name, **score_speech(loaded.net, fm, reference, path, vad,
                                                                           args.device)}
                   for name, loaded in methods.items() for path in args.speech]
    silence_rows = [{"method": name, "speech": path.name, **score_silence(loaded.net, fm, reference, path, vad,
                                                                             args.device)}
                    for name, loaded in methods.items() for path in args.silence]
    result = {"settings": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "means": means,
              "speech": speech_rows, "silence": silence_rows, "reference_clip": reference.key,
              "checkpoints": {n: str(m.path) for n, m in methods.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / "lipsync.csv", csv_text(rows + means, COLUMNS))
    atomic_write(args.out / "lipsync.json", json.dumps(result, indent=1))
    md = [f"# Lip sync on real speech, split {args.split} of {args.shards}", "",
          "Self-dubbing: each clip driven by its own speech; the baseline is the mouth frozen at the clip's mean "
          "expression.", "", "## Means over clips", "", table(means, COLUMNS), "", "## Per clip", "",
          table(rows, COLUMNS)]
    if speech_rows:
        md += ["", f"## Speech without video, driving {reference.key}", "", table(speech_rows, SPEECH_COLUMNS)]
    if silence_rows:
        md += ["", f"## Silence: 2 s of speech, 2 s of silence, 2 s of speech, driving {reference.key}", "",
               "close_s: from the speech's end to a closed mouth; open_s: from its restart to an open one.", "",
               table(silence_rows, SILENCE_COLUMNS)]
    atomic_write(args.out / "lipsync.md", "\n".join(md) + "\n")
    print(table(means, COLUMNS))
    for extra, columns in ((speech_rows, SPEECH_COLUMNS), (silence_rows, SILENCE_COLUMNS)):
        if extra:
            print(table(extra, columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
