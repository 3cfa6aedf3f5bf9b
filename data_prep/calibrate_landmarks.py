"""Landmark embedding calibration of a face model for MediaPipe's 478 landmarks, from synthetic data only:

    python -m data_prep.calibrate_landmarks [--out src/geometry/face_models/calibration/procedural-v2_mp478.npy]
        [--speakers 100 --clips-per-speaker 1 --seconds 4 --seed 1000] [--corpus DIR] [--workers 2] [--check-clips 4]

Steps: (1) a synthetic corpus rendered with the face model (``data_prep.synthetic``; its own seed, never
the seeds of the test corpora, and never real clips); (2) MediaPipe on every clip, as ``data_prep.build``
runs it (``process.track_clip``); (3) the detector's systematic offset from the model's landmark vertices,
measured against the corpus' exact ground truth: per frame t the detection residual ``r_t = (x_det - x_true)
/ s_t`` (model units) is what the projection ``P_t = flip * R_t[:2]`` makes of a canonical-frame offset, so
the offset ``d`` (478, 3) is the least-squares solution of ``P_t d_n = r_tn`` over all frames (one 3x3 normal
matrix shared by the landmarks, a small ridge). The head's yaw and pitch spread across clips is what
determines the depth component. By default the offset also depends on the expression, ``d_n(beta_t) = d0_n +
E_n beta_t`` with the true beta_t as regressors (still one normal matrix, 3 (1 + K_exp) square): MediaPipe's
lip contour follows the visible mouth opening rather than the lip vertices, an error that grows with the
expression (``--static`` for the fixed offset alone). Frames where the detector lost the face (mean residual over 4x the
corpus median) are left out; (4) the calibration file (``.npy`` offset + ``.json``: model name and version,
landmark set, detector, provenance), and a check: a few calibration clips fitted (``data_prep.fit``) without
and with it. The held-out measurement is ``data_prep.build`` on a corpus made with another seed.

Why the ground truth and not fitted residuals: on synthetic clips the true pose, identity and expression are
known, so the residual is the detector's bias alone. Residuals of a fit (fit -> residual -> offset -> refit)
leave the offset free to trade against the fit's own identity and expression modes; measured on this corpus,
a refit pass lowers the fitted reprojection by ~0.05 px but raises the expression error against the truth.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from src.media.contract import CROP_SIZE

LANDMARKS = "mp478"
DETECTOR = "MediaPipe face mesh, refine_landmarks=True (478), src.tracking"
OUTLIER_FACTOR = 4.0  # frames whose mean residual exceeds this many times the corpus median are left out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m data_prep.calibrate_landmarks", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None,
                   help="calibration path (.npy, with a .json beside it); default: the packaged file of the "
                   "model's version")
    p.add_argument("--face-model", default="procedural", help="a face model with a MediaPipe-478 correspondence")
    p.add_argument("--corpus", type=Path, default=None,
                   help="synthetic corpus folder, kept and reused (resumes); default: a temporary folder, removed")
    p.add_argument("--speakers", type=int, default=100)
    p.add_argument("--clips-per-speaker", type=int, default=1)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=1000, help="corpus seed: keep it apart from the test corpora's")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--ridge", type=float, default=1e-3,
                   help="ridge on the offset, relative to the mean normal-matrix eigenvalue")
    p.add_argument("--static", action="store_true",
                   help="a fixed offset only (default: an offset that also depends linearly on the expression)")
    p.add_argument("--check-clips", type=int, default=4,
                   help="calibration clips fitted without and with the result (0: none)")
    p.add_argument("--fit-steps", type=int, default=None, help="fit steps of the check (default FitConfig.steps)")
    args = p.parse_args(argv)
    if args.speakers < 1 or args.clips_per_speaker < 1 or args.workers < 1 or args.check_clips < 0:
        p.error("--speakers, --clips-per-speaker and --workers must be >= 1, --check-clips >= 0")
    if args.ridge < 0:
        p.error(f"--ridge must be >= 0, got {args.ridge}")
    return args


@dataclass
class OffsetSolver:
    """Accumulates ``P_t d_n(beta_t) = r_tn`` over frames and solves for the offset by ridge least squares,
    where ``d_n(beta) = d0_n + E_n beta`` (``n_exp`` expression terms; 0 = a static offset d0 only).

    ``add`` takes detections and the true landmark vertices' projections (T, N, 2) px, the true poses
    (T, 6), as in ``src.geometry.camera``, and the true expressions (T, K_exp); residuals are divided by each
    frame's scale (model units). Every landmark shares one normal matrix (3 (1 + K) square): the design of
    frame t is ``P_t kron [1, beta_t]``."""

    n_landmarks: int
    n_exp: int = 0
    normal: np.ndarray = field(init=False)  # (3 (1+K), 3 (1+K)) sum_t A_t' A_t
    rhs: np.ndarray = field(init=False)  # (N, 3 (1+K)) sum_t A_t' r_tn
    frames: int = 0

    def __post_init__(self) -> None:
        width = 3 * (1 + self.n_exp)
        self.normal = np.zeros((width, width))
        self.rhs = np.zeros((self.n_landmarks, width))

    def add(self, detected: np.ndarray, true: np.ndarray, pose: np.ndarray, beta: np.ndarray | None = None) -> None:
        proj = projection_rows(pose)  # (T, 2, 3)
        resid = (np.asarray(detected, np.float64) - true) / np.asarray(pose, np.float64)[:, 5, None, None]
        terms = np.ones((len(proj), 1))  # (T, 1 + K): the regressors [1, beta_t]
        if self.n_exp:
            if beta is None or np.shape(beta) != (len(proj), self.n_exp):
                raise ValueError(f"OffsetSolver with {self.n_exp} expression terms needs beta (T, {self.n_exp}), "
                                 f"got {None if beta is None else np.shape(beta)}")
            terms = np.concatenate([terms, np.asarray(beta, np.float64)], axis=1)
        design = np.einsum("tij,tk->tijk", proj, terms).reshape(len(proj), 2, -1)  # (T, 2, 3 (1+K))
        self.normal += np.einsum("tia,tib->ab", design, design)
        self.rhs += np.einsum("tia,tni->na", design, resid)
        self.frames += len(proj)

    def solve(self, ridge: float = 1e-3) -> tuple[np.ndarray, np.ndarray | None]:
        """-> offset (N, 3) and expression terms (N, 3, K_exp) (None for a static solver), float32."""
        if self.frames == 0:
            raise ValueError("no frames to calibrate from")
        width = len(self.normal)
        damp = ridge * np.trace(self.normal) / width * np.eye(width)
        x = np.linalg.solve(self.normal + damp, self.rhs.T).T.reshape(self.n_landmarks, 3, 1 + self.n_exp)
        x = x.astype(np.float32)
        return x[..., 0], (x[..., 1:] if self.n_exp else None)


def projection_rows(pose: np.ndarray) -> np.ndarray:
    """(T, 6) poses -> (T, 2, 3) rows of the unit-scale projection ``flip * R[:2]`` (screen y down)."""
    from src.geometry import camera

    rot = camera.euler_to_matrix(torch.as_tensor(np.asarray(pose, np.float64)[:, :3]))[:, :2].numpy()
    return rot * np.array([1.0, -1.0])[None, :, None]


def main(argv=None) -> int:
    args = parse_args(argv)
    from src.geometry.face_models import landmark_calibration
    from src.models.face_model import load_face_model

    fm = load_face_model(args.face_model)
    if bool((fm.lmk478 < 0).any()):
        raise SystemExit(f"--face-model {args.face_model}: no MediaPipe-478 correspondence, nothing to calibrate")
    out = args.out or landmark_calibration.packaged_path(fm.name, LANDMARKS)
    corpus = args.corpus or Path(tempfile.mkdtemp(prefix="calibrate_landmarks_"))
    start = time.time()
    try:
        clips = make_corpus(args, corpus)
        tracks = detect(clips, args.workers)
        solver, stats = measure(fm, clips, tracks, 0 if args.static else fm.n_exp)
        offset, expression = solver.solve(args.ridge)
        stats.update(_after(fm, clips, tracks, offset, expression, stats.pop("_kept")))
        cal = landmark_calibration.LandmarkCalibration(fm.name, LANDMARKS, offset, _provenance(args, fm, stats),
                                                       expression)
        path = cal.save(out)
        print(f"calibration: {path} ({len(clips)} clips, {stats['frames']} frames, {time.time() - start:.0f} s)")
        print(f"  detector vs true landmark vertices: {stats['residual_px_before']:.2f} px -> "
              f"{stats['residual_px_after']:.2f} px at {CROP_SIZE} px crops (the offset's mean length "
              f"{stats['offset_mean_mm']:.2f} mm)")
        if args.check_clips:
            check(fm, clips[: args.check_clips], tracks, path, args.fit_steps)
    finally:
        if args.corpus is None:
            shutil.rmtree(corpus, ignore_errors=True)
    return 0


def make_corpus(args: argparse.Namespace, corpus: Path) -> list:
    from data_prep.sources import list_clips
    from data_prep.synthetic.generate import main as generate

    generate(["--out", str(corpus), "--speakers", str(args.speakers),
              "--clips-per-speaker", str(args.clips_per_speaker),
              "--seconds", str(args.seconds), "--seed", str(args.seed), "--face-model", args.face_model,
              "--workers", str(args.workers)])
    return list_clips("synthetic", corpus)


def detect(clips: list, workers: int) -> list:
    """MediaPipe tracks of the clips (``process.track_clip``, as data_prep.build runs it), in order."""
    from tqdm import tqdm

    if workers == 1:
        return [_track(c) for c in tqdm(clips, desc="detect", unit="clip", file=sys.stderr)]
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        return list(tqdm(pool.map(_track, clips), total=len(clips), desc="detect", unit="clip", file=sys.stderr))


def _track(clip):
    from data_prep.process import ProcessConfig, track_clip

    return track_clip(clip, ProcessConfig(landmarks="detector"))


def true_landmarks(fm, clip) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ground truth of a corpus clip: landmark vertices projected (T, 478, 2) px, pose (T, 6), alpha, beta."""
    from data_prep.process import read_sidecar
    from src.geometry import camera

    side = read_sidecar(clip.meta["sidecar"])
    if side["face_model"] != fm.name:
        raise ValueError(f"{clip.path}: rendered with {side['face_model']!r}, calibrating {fm.name!r} (an old corpus?)")
    alpha, beta = np.asarray(side["alpha"], np.float32), np.asarray(side["beta"], np.float32)
    pose = np.asarray(side["pose"], np.float64)
    with torch.no_grad():
        verts = fm.canonical_vertices(torch.from_numpy(alpha)[None].expand(len(beta), -1), torch.from_numpy(beta))
        screen = camera.project(verts[:, fm.lmk478].double(), torch.from_numpy(pose))[..., :2].numpy()
    return screen, pose, alpha, beta


def measure(fm, clips: list, tracks: list, n_exp: int = 0) -> tuple[OffsetSolver, dict]:
    """The normal equations over every frame where the detector found the face (outliers left out);
    ``n_exp`` expression terms (0: a static offset)."""
    per_clip, frame_error = [], []
    for clip, track in zip(clips, tracks):
        true, pose, _, beta = true_landmarks(fm, clip)
        found = track.found
        px_scale = CROP_SIZE / track.boxes[:, 2]  # frame px -> crop px
        err = np.linalg.norm(track.landmarks - true, axis=-1).mean(-1) * px_scale  # (T,) crop px, NaN if not found
        per_clip.append((true, pose, beta, found))
        frame_error.append(np.where(found, err, np.nan))
    median = float(np.nanmedian(np.concatenate(frame_error)))
    solver, kept = OffsetSolver(478, n_exp), []
    for (true, pose, beta, found), track, err in zip(per_clip, tracks, frame_error):
        keep = found & (np.nan_to_num(err, nan=np.inf) <= OUTLIER_FACTOR * median)
        kept.append(keep)
        if keep.any():
            solver.add(track.landmarks[keep], true[keep], pose[keep], beta[keep] if n_exp else None)
    before = np.concatenate([e[k] for e, k in zip(frame_error, kept)])
    found_total = int(sum(t.found.sum() for t in tracks))
    stats = {"frames": solver.frames, "frames_without_face": int(sum(len(t.found) for t in tracks)) - found_total,
             "frames_left_out": found_total - solver.frames, "residual_px_before": float(before.mean()), "_kept": kept}
    return solver, stats


def _after(fm, clips, tracks, offset: np.ndarray, expression: np.ndarray | None, kept: list) -> dict:
    """Residual of the detections against the offset landmark vertices, at the true pose (crop px)."""
    errors = []
    for clip, track, keep in zip(clips, tracks, kept):
        true, pose, _, beta = true_landmarks(fm, clip)
        moved = (np.broadcast_to(offset, (len(pose), *offset.shape)) if expression is None
                 else offset + np.einsum("nck,tk->tnc", expression, beta))  # (T, N, 3) canonical offsets
        shifted = true + np.einsum("tij,tnj->tni", projection_rows(pose), moved) * pose[:, 5, None, None]
        err = np.linalg.norm(track.landmarks - shifted, axis=-1).mean(-1) * CROP_SIZE / track.boxes[:, 2]
        errors.append(err[keep])
    return {"residual_px_after": float(np.concatenate(errors).mean()),
            "offset_mean_mm": float(np.linalg.norm(offset, axis=-1).mean() * fm.units_to_mm)}


def check(fm, clips: list, tracks: list, path: Path, steps: int | None) -> None:
    """Fit some calibration clips (their first face segment, in crop pixels, as data_prep.build does) without
    and with the calibration: reprojection and expression error against the truth. In-sample: a sanity
    check, not the held-out measurement."""
    from src.geometry.fitting import FitConfig, fit_clip
    from src.metrics.fit import vertex_error_mm
    from src.tracking.crops import crop_landmarks

    cfg = FitConfig() if steps is None else FitConfig(steps=steps)
    for clip, track in zip(clips, tracks):
        if not track.segments:
            continue
        start, end = max(track.segments, key=lambda s: s[1] - s[0])
        lmk = crop_landmarks(track, start, end)
        _, _, _, beta = true_landmarks(fm, clip)
        row = []
        for name, calibration in (("raw", None), ("calibrated", str(path))):
            res = fit_clip(fm, lmk, replace(cfg, landmark_calibration=calibration))
            err = vertex_error_mm(fm, res.beta, beta[start:end], "all")
            row.append(f"{name} {float(np.nanmean(res.reproj_px.numpy())):.2f} px, {err:.2f} mm")
        print(f"  check {clip.key}: " + "; ".join(row) + " (reprojection, expression error)")


def _provenance(args: argparse.Namespace, fm, stats: dict) -> dict:
    import mediapipe

    arguments = (f"--face-model {args.face_model} --speakers {args.speakers} --clips-per-speaker "
                 f"{args.clips_per_speaker} --seconds {args.seconds:g} --seed {args.seed} --ridge {args.ridge:g}"
                 + (" --static" if args.static else ""))
    # the tool by name, not by module path: the file is package data of src/, which names none of its clients
    return {"detector": DETECTOR, "mediapipe": mediapipe.__version__, "tool": "calibrate_landmarks",
            "arguments": arguments,
            "units": f"model units ({fm.units_to_mm:g} mm each), canonical frame (before pose), added to the "
                     "landmark vertices where a fit compares them with detections",
            "expression_terms": 0 if args.static else fm.n_exp,
            "corpus": {"seed": args.seed, "speakers": args.speakers, "clips_per_speaker": args.clips_per_speaker,
                       "seconds": args.seconds},
            **{k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()}}


if __name__ == "__main__":
    sys.exit(main())
