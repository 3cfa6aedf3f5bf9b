"""Self-reconstruction of the clips of a shard folder by stage-2 checkpoints, against the nearest-reference copy:

    python -m eval.reconstruct --render-ckpt R [--render-ckpt NAME=R2 ...] --shards DIR --out DIR
        [--split val] [--frames-per-clip 16] [--size S] [--n-face 5] [--n-lip 25] [--lpips-alex FILE]
        [--exclude-window W] [--arcface FILE] [--device cpu|cuda] [--batch 4] [--sheet-frames 4]
        [--attention-temperature [NAME=]T ...] [--composite]

Every clip (shard sample) of ``--split`` is rendered from its own fitted geometry: for ``--frames-per-clip``
target frames spread over the clip, the target PNCC and lip mask come from the clip's coefficients and the
references from Algorithm 1 at inference settings (face: the N_f frames centred on the target, lip: N_l frames
spread over the clip sorted by mouth opening), the target frame itself left out of both, so a method must draw
the frame rather than copy it. ``--exclude-window W`` also leaves out the W frames on each side of the target: a
neighbouring frame is nearly the answer (at 25 fps averaging the two neighbours alone beats copying the nearest
reference by 2 dB on the lips), which a dub never has, since a reference video's neighbouring frames show the
original speech; with W > 0 every reference's mouth is another moment's, as in a dub. The shard folder may come
from clips no checkpoint has seen: nothing is read but the shards.

Methods: each checkpoint (``NAME=PATH``, or a bare path named after its run's ``task_name``), each at its own
resolution and its attention temperature (``--attention-temperature NAME=T``, or a bare T for every checkpoint not
named; the same file may appear twice under two names, at two temperatures), ``nearest_ref``, the reference
whose PNCC is closest to the target's, copied, and ``nearest_ref_warped``, that frame moved to the target's fitted
geometry through the two meshes (``src.geometry.mesh_warp``: what the fits alone do, no network). Everything is
scored at one size (``--size``, default the largest checkpoint resolution; outputs, truth and references are resized
to it with area averaging or bicubic upsampling), on the face crop and on the lip region (the target's lip mask
dilated by ``--lip-dilation`` pixels):

    psnr, ssim          whole crop
    lip_psnr            lip region
    lip_sharpness       variance of the Laplacian in the lip region, method / truth (1 = as sharp as the truth)
    lpips               LPIPS-AlexNet (only with --lpips-alex, the torchvision AlexNet backbone file)
    csim                CSIM (dlib ResNet): cosine of dlib's face embeddings, method vs truth (face-recognition-models)
    csim_arcface        CSIM with an ArcFace ONNX model, beside the dlib one (only with --arcface)

``--composite`` scores every method as a dub shows it: its face blended into the truth with the dub's lower-face paste
mask (``src.inference.paste.crop_mask``: jaw, cheeks, lips and chin, the upper face and the background the input's),
the copy included, so the scores compare only what a dub changes.

Outputs in ``--out``: ``reconstruct.csv`` (columns method, clip, psnr, ssim, lip_psnr, lpips, csim, lip_sharpness,
[csim_arcface]; one row per method and clip, and a ``mean`` row per method: the mean over clips; empty where not
computed), ``reconstruct.md`` (the means, a table per person, the rows), ``reconstruct.json`` (all of it with the
settings) and ``sheets/<clip>.png``: per clip, a few target frames with their references, target PNCC, every
method and the truth. Files are written to a temporary name and renamed.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torchmetrics.functional.image import structural_similarity_index_measure as ssim
from tqdm import tqdm

from eval.metrics.csim import DlibEmbedder, five_points
from eval.report import atomic_write
from eval.shard_clips import face_model_spec, iter_samples, meta, npy, split_urls, video_frames
from src.data.render_datamodule import eval_references, mouth_openings
from src.geometry.mesh_warp import warp_by_meshes
from src.geometry.pncc import render_geometry
from src.inference.checkpoints import Loaded, load_stage, render_size
from src.inference.paste import PasteConfig, crop_mask
from src.inference.reference_analysis import lower_landmark_indices
from src.media.contract import CROP_SIZE
from src.metrics.image import dilate, lip_sharpness, psnr
from src.models.face_model import load_face_model
from src.models.renderer.attention import check_temperature, set_inference_temperature
from src.models.renderer.nearest_references import NearestFaceReferences

NEAREST = "nearest_ref"
WARPED = "nearest_ref_warped"
CSV_COLUMNS = ("method", "clip", "psnr", "ssim", "lip_psnr", "lpips", "csim", "lip_sharpness")
METRICS = CSV_COLUMNS[2:] + ("csim_arcface",)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval.reconstruct", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--render-ckpt", action="append", required=True, metavar="[NAME=]PATH",
                   help="a stage-2 checkpoint (src.train experiment=render_*); repeat for several methods")
    p.add_argument("--shards", required=True, type=Path, help="a shard folder (index.json)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--split", default="val", help="the split of the shards to reconstruct (default val)")
    p.add_argument("--frames-per-clip", type=int, default=16, help="target frames per clip, spread evenly")
    p.add_argument("--size", type=int, default=None, help="scoring resolution (default: the largest checkpoint's)")
    p.add_argument("--n-face", type=int, default=5, help="face references N_f (Algorithm 1 at inference: 5)")
    p.add_argument("--n-lip", type=int, default=25, help="lip references N_l (Algorithm 1 at inference: 25)")
    p.add_argument("--lip-dilation", type=int, default=5, help="pixels the lip mask grows by for the lip metrics")
    p.add_argument("--exclude-window", type=int, default=0, metavar="W",
                   help="also leave the W frames on each side of the target out of the references (default 0)")
    p.add_argument("--lpips-alex", type=Path, help="torchvision AlexNet backbone (alexnet-owt-7be5be79.pth) for LPIPS")
    p.add_argument("--arcface", type=Path, help="an ArcFace .onnx model: CSIM (ArcFace) beside CSIM (dlib ResNet)")
    p.add_argument("--attention-temperature", action="append", default=[], metavar="[NAME=]T",
                   help="the renderer's attention softmax temperature for method NAME (a bare T: every checkpoint "
                        "not named); default the checkpoint's own")
    p.add_argument("--composite", action="store_true",
                   help="score each method's face blended into the truth with the dub's lower-face paste mask")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--batch", type=int, default=4, help="frames per renderer call")
    p.add_argument("--sheet-frames", type=int, default=4, help="target frames shown per contact sheet")
    p.add_argument("--max-clips", type=int, default=None, help="only the first N clips of the split (a quick look)")
    args = p.parse_args(argv)
    if args.exclude_window < 0:
        p.error(f"--exclude-window must be >= 0 frames, got {args.exclude_window}")
    for name in ("frames_per_clip", "n_face", "n_lip", "batch", "sheet_frames"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.size is not None and (args.size < 16 or args.size % 4):
        p.error(f"--size must be a multiple of 4 and >= 16, got {args.size}")
    for flag, path in (("--lpips-alex", args.lpips_alex), ("--arcface", args.arcface)):
        if path is not None and not path.is_file():
            p.error(f"{flag} {path}: no such file")
    if not (args.shards / "index.json").is_file():
        p.error(f"--shards {args.shards}: no index.json (not a shard folder)")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device")
    try:
        args.attention_temperature = temperatures(args.attention_temperature)
    except ValueError as err:
        p.error(str(err))
    return args


def temperatures(specs: list[str]) -> dict[str | None, float]:
    """``[NAME=]T`` specs -> {NAME or None (every checkpoint not named): T}."""
    out = {}
    for spec in specs:
        name, sep, value = spec.rpartition("=")
        try:
            out[name if sep else None] = check_temperature(float(value), "a temperature")
        except ValueError:
            raise ValueError(f"--attention-temperature {spec}: expected [NAME=]T with T a number > 0") from None
    return out


@dataclass
class Method:
    name: str
    loaded: Loaded | None  # None for the nearest-reference copy
    size: int | None


def load_methods(specs: list[str], device: str, temperature: dict[str | None, float] | None = None) -> list[Method]:
    """``[NAME=]PATH`` specs -> the checkpoints' networks (names unique) at their attention ``temperature``
    ({NAME or None: T}), then the nearest-reference copy."""
    temperature = temperature or {}
    methods = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = "", spec
        loaded = load_stage("render", path, device)
        name = name or str(loaded.config.get("task_name") or Path(path).stem)
        if name in [m.name for m in methods] or name in (NEAREST, WARPED):
            raise ValueError(f"--render-ckpt {spec}: the method name {name!r} is taken; name it: NAME={path}")
        if temperature.get(name, temperature.get(None)) is not None:
            set_inference_temperature(loaded.net, temperature.get(name, temperature.get(None)))
        methods.append(Method(name, loaded, render_size(loaded)))
    unknown = set(temperature) - {None} - {m.name for m in methods}
    if unknown:
        raise ValueError(f"--attention-temperature: no method named {sorted(unknown)}; the methods are "
                         f"{[m.name for m in methods]}")
    face_models = {m.loaded.face_model for m in methods}
    if len(face_models) > 1:
        raise ValueError(f"--render-ckpt: the checkpoints were trained with different face models {face_models}")
    return methods + [Method(NEAREST, None, None), Method(WARPED, None, None)]


# ----------------------------------------------------------------------------------------------- one clip --

@dataclass
class ClipInputs:
    """What every method of one clip needs, at one resolution: frames (T, 3, S, S) in [0, 1] and the targets'
    and references' PNCCs and lip masks, rendered from the clip's coefficients."""

    frames: torch.Tensor
    pncc: dict[int, torch.Tensor] = field(default_factory=dict)  # frame -> (3, S, S)
    lip: dict[int, torch.Tensor] = field(default_factory=dict)  # frame -> (1, S, S)


def resized(frames: np.ndarray, size: int) -> torch.Tensor:
    """(T, 256, 256, 3) uint8 -> (T, 3, size, size) float in [0, 1], area-averaged as in training."""
    if frames.shape[1] != size:
        frames = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0


def clip_inputs(fm, sample: dict, frames: np.ndarray, needed: np.ndarray, size: int) -> ClipInputs:
    pncc, lip = render_geometry(fm, npy(sample, "alpha.npy"), npy(sample, "beta.npy")[needed],
                                npy(sample, "pose.npy")[needed], size, CROP_SIZE)
    out = ClipInputs(resized(frames, size))
    for k, j in enumerate(needed.tolist()):
        out.pncc[j] = torch.from_numpy(pncc[k]).permute(2, 0, 1)  # (3, S, S)
        out.lip[j] = torch.from_numpy(lip[k])[None].float()  # (1, S, S)
    return out


@torch.no_grad()
def render(method: Method, inputs: ClipInputs, targets: np.ndarray, refs: list, batch: int,
           device: str) -> torch.Tensor:
    """The method's faces of the target frames (n, 3, S, S) at its own resolution."""
    net, out = method.loaded.net, []

    def stack(frames: list[np.ndarray], source) -> torch.Tensor:  # per target its frames -> (B, N, 3, S, S)
        return torch.stack([torch.stack([source[int(j)] for j in f]) for f in frames]).to(device)

    for i in range(0, len(targets), batch):
        part = range(i, min(i + batch, len(targets)))
        face = [refs[k][0] for k in part]
        lip = [refs[k][1] for k in part]
        pncc = torch.stack([inputs.pncc[int(targets[k])] for k in part]).to(device)  # (B, 3, S, S)
        mask = torch.stack([inputs.lip[int(targets[k])] for k in part]).to(device)  # (B, 1, S, S)
        face_img = stack(face, inputs.frames) if net.uses_face_refs else None  # (B, N_f, 3, S, S)
        face_pncc = stack(face, inputs.pncc) if net.uses_face_refs else None
        lip_img = stack(lip, inputs.frames) if net.uses_lip_refs else None  # (B, N_l, 3, S, S)
        lip_pncc = stack(lip, inputs.pncc) if net.uses_lip_refs else None
        out.append(net(pncc, mask, face_img, face_pncc, lip_img, lip_pncc).clamp(0, 1).float().cpu())
    return torch.cat(out)


def nearest_reference(inputs: ClipInputs, targets: np.ndarray, refs: list) -> np.ndarray:
    """Per target, the reference frame (face or lip) whose PNCC is closest (L1) to the target's: (n,) frames."""
    out = []
    for t, (face, lip) in zip(targets.tolist(), refs):
        candidates = np.concatenate([face, lip])
        pncc = torch.stack([inputs.pncc[int(j)] for j in candidates])  # (N_f + N_l, 3, S, S)
        distance = NearestFaceReferences.distance(inputs.pncc[t][None], pncc[None])[0]  # (N_f + N_l,)
        out.append(int(candidates[int(distance.argmin())]))
    return np.asarray(out, np.int64)


def screen_vertices(fm, sample: dict, frames: np.ndarray) -> np.ndarray:
    """The fitted mesh of the given frames of a shard sample, posed on the screen: (n, L, 3) in 256-crop pixels."""
    alpha, beta, pose = (torch.from_numpy(npy(sample, f"{k}.npy").astype(np.float32))
                         for k in ("alpha", "beta", "pose"))
    with torch.no_grad():
        return fm.posed_vertices(alpha[None].expand(len(frames), -1), beta[frames], pose[frames]).numpy()


def warped_references(fm, sample: dict, frames: torch.Tensor, targets: np.ndarray, nearest: np.ndarray) -> torch.Tensor:
    """Each target's nearest reference (``frames`` (T, 3, S, S)) moved to the target's fitted geometry through the
    two meshes: (n, 3, S, S)."""
    used = np.unique(np.concatenate([targets, nearest]))
    verts = screen_vertices(fm, sample, used) * (frames.shape[-1] / CROP_SIZE)  # (u, L, 3) at S px
    verts = dict(zip(used.tolist(), verts))  # frame -> (L, 3)
    tris = fm.triangles.numpy()
    return torch.stack([warp_by_meshes(frames[r], verts[r], verts[t], tris)
                        for t, r in zip(targets.tolist(), nearest.tolist())])  # (n, 3, S, S)


def to_size(images: torch.Tensor, size: int) -> torch.Tensor:
    """(n, 3, s, s) in [0, 1] -> (n, 3, size, size): area averaging down, bicubic up."""
    if images.shape[-1] == size:
        return images
    flag = cv2.INTER_AREA if images.shape[-1] > size else cv2.INTER_CUBIC
    out = [cv2.resize(img.permute(1, 2, 0).numpy(), (size, size), interpolation=flag) for img in images]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).clamp(0, 1)


@dataclass
class Scorers:
    size: int
    lip_dilation: int
    dlib: DlibEmbedder
    lpips: torch.nn.Module | None = None
    arcface: torch.nn.Module | None = None

    @torch.no_grad()
    def score(self, pred: torch.Tensor, truth: torch.Tensor, lip_mask: torch.Tensor, points: torch.Tensor) -> dict:
        """Per-frame metrics of (n, 3, S, S) predictions against the truth -> {metric: (n,) array}."""
        region = dilate(lip_mask, self.lip_dilation)  # (n, 1, S, S)
        rows = {"psnr": psnr(pred, truth), "ssim": ssim(pred, truth, data_range=1.0, reduction="none"),
                "lip_psnr": psnr(pred, truth, region), "lip_sharpness": lip_sharpness(pred, truth, region),
                "csim": cosine(self.dlib(pred, points), self.dlib(truth, points))}
        if self.lpips is not None:
            rows["lpips"] = self.lpips(pred, truth).flatten()
        if self.arcface is not None:
            rows["csim_arcface"] = cosine(self.arcface(pred, points), self.arcface(truth, points))
        return {k: v.double().numpy() for k, v in rows.items()}


def paste_masks(fm, sample: dict, targets: np.ndarray, size: int) -> torch.Tensor:
    """The dub's lower-face paste masks of the target frames (``src.inference.paste.crop_mask``, the frame's own
    geometry as target and reference, its detected lower-face landmarks) -> (n, 1, size, size) in [0, 1]."""
    verts = screen_vertices(fm, sample, targets)  # (n, L, 3) crop px
    landmarks = npy(sample, "lmk.npy")[targets][:, lower_landmark_indices(fm)]  # (n, l, 2) crop px
    masks = [cv2.resize(crop_mask(fm, v, v, lm, PasteConfig()), (size, size), interpolation=cv2.INTER_AREA)
             for v, lm in zip(verts, landmarks)]
    return torch.from_numpy(np.clip(np.stack(masks), 0.0, 1.0))[:, None]  # (n, 1, S, S)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def reconstruct_clip(sample: dict, fm, methods: list[Method], scorers: Scorers, args) -> tuple[dict, np.ndarray]:
    """{method: {metric: mean over the clip's targets}} and the clip's contact sheet (H, W, 3) uint8."""
    crops = video_frames(sample["mp4"])  # (T, 256, 256, 3) uint8
    T = len(crops)
    alpha, beta = npy(sample, "alpha.npy"), npy(sample, "beta.npy")
    if len(beta) != T or T < 2:
        raise ValueError(f"shard sample {sample['__key__']}: {T} frames and {len(beta)} coefficient rows")
    targets = np.unique(np.linspace(0, T - 1, min(args.frames_per_clip, T)).round().astype(int))
    opening = mouth_openings(fm, alpha, beta)
    refs = [eval_references(int(i), opening, args.n_face, args.n_lip, args.exclude_window) for i in targets]
    needed = np.unique(np.concatenate([targets, *[np.concatenate(r) for r in refs]]))
    size = scorers.size
    score_in = clip_inputs(fm, sample, crops, needed, size)
    truth = score_in.frames[targets]
    lip_mask = torch.stack([score_in.lip[int(t)] for t in targets])  # (n, 1, S, S)
    points = torch.from_numpy(five_points(npy(sample, "lmk.npy")[targets] * (size / CROP_SIZE)))  # (n, 5, 2)
    outputs = {}
    for size_m in sorted({m.size for m in methods if m.size is not None}):
        inputs = score_in if size_m == size else clip_inputs(fm, sample, crops, needed, size_m)
        for m in (m for m in methods if m.size == size_m):
            outputs[m.name] = to_size(render(m, inputs, targets, refs, args.batch, args.device), size)
    nearest = nearest_reference(score_in, targets, refs)  # (n,) frames
    outputs[NEAREST] = score_in.frames[nearest]  # (n, 3, S, S)
    outputs[WARPED] = warped_references(fm, sample, score_in.frames, targets, nearest)
    if args.composite:
        mask = paste_masks(fm, sample, targets, size)  # (n, 1, S, S)
        outputs = {name: out * mask + truth * (1 - mask) for name, out in outputs.items()}
    scores = {name: {k: float(np.mean(v)) for k, v in scorers.score(out, truth, lip_mask, points).items()}
              for name, out in outputs.items()}
    sheet = contact_sheet(score_in, targets, refs, outputs, truth, [m.name for m in methods], args.sheet_frames)
    return scores, sheet


# ----------------------------------------------------------------------------------------- contact sheet --

def contact_sheet(inputs: ClipInputs, targets: np.ndarray, refs: list, outputs: dict, truth: torch.Tensor,
                  names: list[str], rows: int) -> np.ndarray:
    """Rows: a few target frames; columns: face reference 0, lip references 0-2, target PNCC, each method, truth."""
    pick = np.unique(np.linspace(0, len(targets) - 1, min(rows, len(targets))).round().astype(int))
    labels = ["face ref", "lip ref", "lip ref", "lip ref", "target PNCC", *names, "truth"]
    lines = []
    for k in pick:
        face, lip = refs[k]
        tiles = [inputs.frames[int(face[0])], *[inputs.frames[int(j)] for j in lip[:3]], inputs.pncc[int(targets[k])],
                 *[outputs[n][k] for n in names], truth[k]]
        lines.append(torch.cat(tiles, dim=2))  # (3, S, cols S)
    grid = (torch.cat(lines, dim=1).clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    side = truth.shape[-1]
    header = np.full((22, grid.shape[1], 3), 255, np.uint8)
    for c, label in enumerate(labels):
        cv2.putText(header, label[: max(4, side // 7)], (c * side + 3, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.38,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([header, grid])


def write_png(path: Path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", image[..., ::-1])
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data.tobytes())
    tmp.replace(path)


# ------------------------------------------------------------------------------------------------ tables --

def summarise(rows: list[dict], names: list[str]) -> dict:
    """{method: {metric: mean over clips}} and {person: {method: {metric: mean over that person's clips}}}."""
    def means(selected: list[dict]) -> dict:
        return {k: float(np.mean([r[k] for r in selected])) for k in METRICS if selected and k in selected[0]}

    overall = {n: means([r for r in rows if r["method"] == n]) for n in names}
    people = sorted({r["person"] for r in rows})
    per_person = {p: {n: means([r for r in rows if r["method"] == n and r["person"] == p]) for n in names}
                  for p in people}
    return {"mean": overall, "per_person": per_person}


def csv_text(rows: list[dict], summary: dict, names: list[str], columns: tuple[str, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)

    def cell(value) -> str:
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.6g}"

    for r in rows:
        writer.writerow([r["method"], r["clip"], *[cell(r.get(k)) for k in columns[2:]]])
    for n in names:
        writer.writerow([n, "mean", *[cell(summary["mean"][n].get(k)) for k in columns[2:]]])
    return buffer.getvalue()


HEADERS = {"psnr": "PSNR↑", "ssim": "SSIM↑", "lip_psnr": "lip PSNR↑", "lpips": "LPIPS↓", "csim": "CSIM (dlib ResNet)↑",
           "lip_sharpness": "lip sharpness (1 = truth)", "csim_arcface": "CSIM (ArcFace)↑"}


def table(values: dict, names: list[str], metrics: list[str]) -> list[str]:
    lines = ["| method | " + " | ".join(HEADERS[k] for k in metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(f"{values[n][k]:.4f}" if k in values[n] else "-" for k in metrics) + " |")
    return lines


def markdown(result: dict) -> str:
    names, metrics = result["methods"], [k for k in METRICS if k in result["computed"]]
    s = result["settings"]
    lines = [f"# Self-reconstruction, split {s['split']} of {s['shards']}", "",
             f"{result['clips']} clips of {len(result['summary']['per_person'])} people, {s['frames_per_clip']} target "
             f"frames per clip; references by Algorithm 1 at inference (N_f = {s['n_face']}, N_l = {s['n_lip']}), the "
             f"target and the {s['exclude_window']} frames on each side of it left out; scored at "
             f"{s['size']}x{s['size']}, lip region = lip mask dilated by "
             f"{s['lip_dilation']} px. Not computed: {', '.join(result['not_computed']) or 'none'}." +
             (" Composited as a dub shows it: each method's face blended into the truth with the dub's lower-face "
              "paste mask, so the upper face and the background are the truth's." if s.get("composite")
              else ""), "",
             "## Mean over clips", "", *table(result["summary"]["mean"], names, metrics), "", "## Per person", ""]
    for person, values in result["summary"]["per_person"].items():
        lines += [f"### {person}", "", *table(values, names, metrics), ""]
    lines += ["## Per clip", "", "| method | clip | " + " | ".join(HEADERS[k] for k in metrics) + " |",
              "|---" * (len(metrics) + 2) + "|"]
    for r in result["rows"]:
        lines.append(f"| {r['method']} | {r['clip']} | " + " | ".join(f"{r[k]:.4f}" for k in metrics if k in r) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------- main --

def build_scorers(args, size: int) -> tuple[Scorers, list[str]]:
    scorers, not_computed = Scorers(size, args.lip_dilation, DlibEmbedder()), []
    if args.lpips_alex is not None:
        from eval.metrics.lpips import build_lpips

        scorers.lpips = build_lpips(args.lpips_alex).eval()
    else:
        not_computed.append("lpips (no --lpips-alex AlexNet backbone file)")
    if args.arcface is not None:
        from eval.metrics.csim import ArcFaceEmbedder

        scorers.arcface = ArcFaceEmbedder(args.arcface)
    return scorers, not_computed


def main(argv=None) -> int:
    args = parse_args(argv)
    methods = load_methods(args.render_ckpt, args.device, args.attention_temperature)
    spec = face_model_spec(args.shards)
    if methods[0].loaded.face_model != spec:
        raise ValueError(f"--shards {args.shards} were fitted with face model {spec!r}, the checkpoints trained with "
                         f"{methods[0].loaded.face_model!r}")
    fm = load_face_model(spec)
    urls = split_urls(args.shards, args.split, "eval.reconstruct")
    size = args.size or max(m.size for m in methods if m.size is not None)
    scorers, not_computed = build_scorers(args, size)
    names = [m.name for m in methods]
    (args.out / "sheets").mkdir(parents=True, exist_ok=True)
    rows = []
    samples = list(iter_samples(urls))[: args.max_clips]
    for sample in tqdm(samples, desc=f"reconstruct ({args.split})", unit="clip", file=sys.stderr):
        info = meta(sample)
        scores, sheet = reconstruct_clip(sample, fm, methods, scorers, args)
        write_png(args.out / "sheets" / f"{sample['__key__']}.png", sheet)
        for name in names:
            rows.append({"method": name, "clip": sample["__key__"], "person": info.get("speaker"),
                         "hard": info.get("hard", ""), **scores[name]})
    if not rows:
        raise ValueError(f"--shards {args.shards}: the {args.split!r} split has no clips")
    summary = summarise(rows, names)
    columns = CSV_COLUMNS + (("csim_arcface",) if args.arcface is not None else ())
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()} | {"size": size}
    result = {"settings": settings, "methods": names, "clips": len(samples), "rows": rows, "summary": summary,
              "computed": [k for k in METRICS if k in rows[0]], "not_computed": not_computed,
              "checkpoints": {m.name: str(m.loaded.path) for m in methods if m.loaded is not None},
              "resolutions": {m.name: m.size for m in methods if m.size is not None}}
    atomic_write(args.out / "reconstruct.csv", csv_text(rows, summary, names, columns))
    atomic_write(args.out / "reconstruct.json", json.dumps(result, indent=1))
    atomic_write(args.out / "reconstruct.md", markdown(result))
    print(f"{len(samples)} clips, {len(summary['per_person'])} people -> {args.out}/reconstruct.md")
    print("\n".join(table(summary["mean"], names, result["computed"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
