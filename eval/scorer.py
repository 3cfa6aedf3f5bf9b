"""Scoring: every metric of one generated video against its ground truth, and the loop over videos and methods.

``score_pair`` streams the aligned crops (``eval.crops``) chunk by chunk through the frame metrics (SSIM,
PSNR, LPIPS, CSIM, the method's FID accumulator) and the MediaPipe landmarker of each side (LMD), keeps
the generated crops for SyncScore (with the ground truth's audio: the driving audio of self-dubbing) and
the landmarks for StyleSim (3DMM expression vertices, ``eval.expression``). ``score_videos`` runs the GT
row (the real video scored as if generated) and each method, video by video, so one ground-truth track is
held in memory at a time; FID is computed per method over all its frames.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from tqdm import tqdm

from eval.crops import GroundTruth, iter_crop_pairs, pair_info, to_tensor, track_ground_truth
from eval.evaluators import Evaluators
from eval.expression import halves
from eval.metrics.csim import CSIM, five_points
from eval.metrics.fid import FID
from eval.metrics.image import PSNR, SSIM
from eval.metrics.lmd import LMD, CropLandmarker
from eval.metrics.lpips import LPIPSScore
from eval.splits import Video
from src.media.contract import SAMPLE_RATE

GT = "GT"


def score_videos(videos: list[Video], methods: Mapping[str, Mapping[str, Path]], ev: Evaluators,
                 scoring: Mapping) -> dict:
    """{"rows": per-video rows, "summary": {method: means + fid}} for the GT row and every method."""
    all_methods = {GT: {v.name: v.gt for v in videos}, **methods}
    fids = {m: FID(ev.fid) for m in all_methods} if ev.fid is not None else {}
    rows = []
    bar = tqdm(total=len(videos) * len(all_methods), desc="scoring", unit="video")
    for video in videos:
        gt = track_ground_truth(video.gt, video.name, fps=float(scoring.get("fps", 25)))
        for method, paths in all_methods.items():
            bar.set_postfix_str(f"{method}: {video.name}")
            row = score_pair(paths[video.name], gt, ev, scoring, fids.get(method))
            rows.append({"method": method, "video": video.name, "speaker": video.speaker, **row})
            bar.update()
    bar.close()
    return {"rows": rows, "summary": summarise(rows, fids, list(all_methods))}


def score_pair(gen_path: Path, gt: GroundTruth, ev: Evaluators, scoring: Mapping, fid: FID | None = None) -> dict:
    """Every computed metric of ``gen_path`` against ``gt`` (module docstring) as one row."""
    fps, size = float(scoring.get("fps", 25)), int(scoring.get("crop_size", 256))
    info = pair_info(gen_path, gt, fps, scoring.get("max_frames"))
    frame = _frame_metrics(ev)
    lmd, gen_lmk, gt_lmk, gen_crops = LMD(), [], [], []
    stride = int(scoring.get("fid_stride", 1))
    with CropLandmarker() as gen_det, CropLandmarker() as gt_det:
        for chunk in iter_crop_pairs(gen_path, gt, info.span, size, int(scoring.get("chunk", 16)), fps):
            gen, ref = to_tensor(chunk.gen, ev.device), to_tensor(chunk.gt, ev.device)
            _update_frame_metrics(frame, gen, ref, chunk.gt_landmarks)
            if fid is not None:
                keep = torch.from_numpy(chunk.frames % stride == 0).to(ev.device)
                if keep.any():
                    fid.update(gen[keep], ref[keep])
            if ev.lmd or ev.expression is not None:
                gen_lmk.append(gen_det.update(chunk.gen))
                gt_lmk.append(gt_det.update(chunk.gt))
                lmd.update(gen_lmk[-1], gt_lmk[-1])
            if ev.sync is not None:
                gen_crops.append(chunk.gen)
    row = {"frames_gen": info.frames_gen, "frames_gt": info.frames_gt, "frames_used": info.frames_used,
           "rescaled": info.rescaled, **{name: float(m.compute()) for name, m in frame.items()}}
    if ev.lmd:
        details = lmd.compute_details()
        row.update(lmd=details["lmd"], lmd_missing_gen=details["missing_gen"])
    if ev.sync is not None:
        row.update(_sync(ev, np.concatenate(gen_crops),
                         gt.audio(info.span, int(scoring.get("sample_rate", SAMPLE_RATE)), fps)))
    if ev.expression is not None:
        row["stylesim"] = _stylesim(ev, np.concatenate(gen_lmk), np.concatenate(gt_lmk), gt, info.span)
    return row


def _frame_metrics(ev: Evaluators) -> dict:
    metrics = {"ssim": SSIM(), "psnr": PSNR()}
    if ev.lpips is not None:
        metrics["lpips"] = LPIPSScore(ev.lpips)
    if ev.csim is not None:
        metrics["csim"] = CSIM(ev.csim)
    if ev.csim_dlib is not None:
        metrics["csim_dlib"] = CSIM(ev.csim_dlib)
    return {k: m.to(ev.device) for k, m in metrics.items()}


def _update_frame_metrics(metrics: dict, gen: torch.Tensor, ref: torch.Tensor, gt_landmarks: np.ndarray) -> None:
    for name, metric in metrics.items():
        if name in ("csim", "csim_dlib"):
            metric.update(gen, ref, torch.from_numpy(five_points(gt_landmarks)))
        else:
            metric.update(gen, ref)


def _sync(ev: Evaluators, crops: np.ndarray, audio: np.ndarray) -> dict:
    """SyncScore of the generated crops (T, S, S, 3) uint8 with the driving audio (N,) float32 16 kHz."""
    metric = ev.sync()
    metric.update(crops, audio)
    out = metric.compute()
    row = {k: float(out[k]) for k in ("sync_conf", "sync_offset", "lse_d")}  # NaN when the metric skipped it
    skipped = getattr(metric, "skipped", None)
    return {**row, "sync_skipped": "; ".join(skipped)} if skipped else row


def _stylesim(ev: Evaluators, gen_lmk: np.ndarray, gt_lmk: np.ndarray, gt: GroundTruth, span: tuple[int, int]) -> float:
    """Cross-half StyleSim (eval/expression.py); the ground truth's vertices are fitted once per span. NaN when
    the generated crops have fewer than 2 frames with a detectable face."""
    if np.isfinite(gen_lmk).all(axis=(1, 2)).sum() < 2:
        return float("nan")
    key = ("expression", span)
    if key not in gt.cache:
        gt.cache[key] = ev.expression(gt_lmk)
    gen_a, gen_b = halves(ev.expression(gen_lmk))
    ref_a, ref_b = halves(gt.cache[key])
    scores = []
    for gen, ref in ((gen_b, ref_a), (gen_a, ref_b)):
        metric = ev.stylesim()
        metric.update(gen, ref)
        out = metric.compute()
        scores.append(float(out["stylesim"] if isinstance(out, dict) else out))  # NaN when the metric skipped it
    return sum(scores) / 2


def summarise(rows: list[dict], fids: Mapping[str, FID], methods: list[str]) -> dict:
    """{method: {metric: mean over videos, "fid", "videos", "frames"}}; a metric missing for a video (None or
    NaN) is left out of its mean, and ``<metric>_videos`` says over how many videos it was taken."""
    summary = {}
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        out = {"videos": len(mine), "frames": sum(r["frames_used"] for r in mine)}
        for key in ("ssim", "psnr", "lmd", "sync_conf", "sync_offset", "lse_d", "lpips", "csim", "csim_dlib",
                    "stylesim"):
            values = [r[key] for r in mine if r.get(key) is not None and not math.isnan(r[key])]
            if values:
                out[key] = float(np.mean(values))
                if len(values) < len(mine):
                    out[f"{key}_videos"] = len(values)
        if method in fids:
            out["fid"] = float(fids[method].compute())
        summary[method] = out
    return summary
