"""Synthetic talking-head corpus: ``python -m data_prep.synthetic --out DIR --speakers N
--clips-per-speaker M --seconds S --seed K [--face-model procedural|ict:PATH|bfm:PATH] [--workers W]
[--preview PNG]``.

Outputs, in VoxCeleb2's layout: ``DIR/idNNNNN/VIDEOID/NNNNN.mp4`` (H.264, 25 fps, SIZE x SIZE with
background; the speech as a 16 kHz AAC track) and a sidecar ``NNNNN.json`` with the ground truth: face
model, identity alpha, per-frame expression coefficients beta (and the synthetic channels), pose, 2D
landmarks (MediaPipe-478 and iBUG-68, pixels), phoneme timing, and the speaker's persona (style, voice,
appearance). Plus ``DIR/corpus.json`` (the arguments and the clip list) and an optional preview PNG.

A speaker's persona comes from (seed, speaker); a clip's sentence, background, lighting and motion from
(seed, speaker, clip): the same arguments always give the same files. Clips whose mp4 and json exist
are skipped, so an interrupted run resumes; each file is written under a temporary name and renamed.
"""
from __future__ import annotations

import argparse
import json
import os
import string
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from src.media.contract import FPS, SAMPLE_RATE

_ID_ALPHABET = string.ascii_letters + string.digits + "-_"


@dataclass(frozen=True)
class ClipJob:
    out: str
    speaker: int
    clip: int
    seed: int
    seconds: float
    face_model: str
    size: int

    @property
    def speaker_id(self) -> str:
        return f"id{self.speaker + 1:05d}"

    @property
    def video_id(self) -> str:
        rng = np.random.default_rng([self.seed, self.speaker, self.clip, 7])
        return "".join(rng.choice(list(_ID_ALPHABET), 11))

    @property
    def stem(self) -> Path:
        return Path(self.out) / self.speaker_id / self.video_id / f"{self.clip + 1:05d}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m data_prep.synthetic", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (VoxCeleb2-like layout)")
    p.add_argument("--speakers", type=int, default=8)
    p.add_argument("--clips-per-speaker", type=int, default=4)
    p.add_argument("--seconds", type=float, default=6.0, help="length of each clip")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--face-model", default="procedural", help="'procedural' (default), 'ict:PATH' or 'bfm:PATH' "
                   "(a BFM is driven by retargeting and painted with its meantex)")
    p.add_argument("--size", type=int, default=384, help="frame width = height in pixels (>= 256)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="parallel processes")
    p.add_argument("--preview", default=None, help="PNG path for a preview grid (default DIR/preview.png)")
    args = p.parse_args(argv)
    for name in ("speakers", "clips_per_speaker", "workers"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 1.0 <= args.seconds <= 600.0:
        p.error(f"--seconds must be in [1, 600], got {args.seconds}")
    if args.size < 256 or args.size % 2:
        p.error(f"--size must be an even number >= 256, got {args.size}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from src.geometry.face_models import load_face_model_data

    load_face_model_data(args.face_model)  # fail fast on a bad --face-model, before any worker starts
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("preview", "workers")}
    _check_same_settings(out / "corpus.json", settings)
    jobs = [ClipJob(str(out), s, c, args.seed, args.seconds, args.face_model, args.size)
            for s in range(args.speakers) for c in range(args.clips_per_speaker)]
    start = time.time()
    summaries = _run(jobs, args.workers)
    _write_json(out / "corpus.json", {"args": settings, "fps": FPS, "sample_rate": SAMPLE_RATE,
                                      "clips": [s["mp4"] for s in summaries]})
    preview = Path(args.preview) if args.preview else out / "preview.png"
    save_preview(preview, summaries)
    made = sum(not s["skipped"] for s in summaries)
    print(f"corpus: {out.resolve()} ({len(jobs)} clips, {made} generated, {len(jobs) - made} already there, "
          f"{time.time() - start:.1f} s)")
    print(f"preview: {preview.resolve()}")
    return 0


def _check_same_settings(index: Path, settings: dict) -> None:
    """Resuming into a corpus made with other settings would mix clips: refuse, naming the difference."""
    if not index.is_file():
        return
    before = json.loads(index.read_text())["args"]
    changed = {k: (before.get(k), v) for k, v in settings.items() if k != "out" and before.get(k) != v}
    if changed:
        diff = ", ".join("--{} {} -> {}".format(k.replace("_", "-"), a, b) for k, (a, b) in changed.items())
        raise ValueError(f"{index.parent} holds a corpus made with other settings ({diff}); use a new --out folder")


def _run(jobs: list[ClipJob], workers: int) -> list[dict]:
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="synthetic clips", unit="clip", file=sys.stderr)
    results = []
    if workers == 1:
        for job in jobs:
            results.append(generate_clip(job))
            bar.update()
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker) as pool:
            for summary in pool.map(generate_clip, jobs):
                results.append(summary)
                bar.update()
    bar.close()
    return results


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one clip per process; more threads per clip only contend


def generate_clip(job: ClipJob) -> dict:
    """Render, encode and describe one clip (skipped when its mp4 and json exist). Returns a summary."""
    mp4, sidecar = job.stem.with_suffix(".mp4"), job.stem.with_suffix(".json")
    if mp4.is_file() and sidecar.is_file():
        return {"mp4": str(mp4), "skipped": True, "thumbs": _thumbs_from_file(mp4, sidecar)}
    import torch

    from data_prep.synthetic import motion
    from data_prep.synthetic.appearance import model_albedo
    from data_prep.synthetic.persona import Persona
    from data_prep.synthetic.phonemes import random_utterance
    from data_prep.synthetic.scene import ClipRenderer
    from data_prep.synthetic.speech import synthesize
    from data_prep.synthetic.video_io import write_mp4
    from data_prep.synthetic.visemes import mouth_tracks
    from src.models.face_model import shared_face_model

    fm = shared_face_model(job.face_model)
    persona = Persona.sample(job.speaker_id, fm.n_id, np.random.default_rng([job.seed, job.speaker]))
    rng = np.random.default_rng([job.seed, job.speaker, job.clip])
    n = int(round(job.seconds * FPS))
    events = random_utterance(rng, job.seconds, rate=persona.speech_rate)
    audio = synthesize(events, persona.voice, SAMPLE_RATE, rng)
    channels = mouth_tracks(events, persona.style, FPS, n_frames=n)
    blink = motion.blink_track(n, FPS, persona.habits.blink_rate_hz, rng)
    channels.update(blink_L=blink, blink_R=blink, **motion.brow_tracks(n, persona.habits.brow_activity, rng))
    beta = motion.model_coefficients(channels, fm)  # (T, K_exp)
    scale, centre = _framing(fm, job.size)
    pose = torch.from_numpy(motion.head_pose(n, persona.habits.head_motion, scale, centre, rng))  # (T, 6)
    alpha = torch.from_numpy(persona.alpha)[None].expand(n, -1)
    screen = fm.posed_vertices(alpha, torch.from_numpy(beta), pose).numpy()  # (T, L, 3)
    renderer = ClipRenderer(fm, persona, job.size, rng, albedo=model_albedo(job.face_model))
    head = renderer.head_vertices(pose)
    frames = (renderer.render(screen[t], None if head is None else head[t], t) for t in range(n))
    thumbs = {}
    opening = fm.mouth_opening(fm.canonical_vertices(alpha, torch.from_numpy(beta))).numpy()

    def keep_thumbs(frames):
        for t, frame in enumerate(frames):
            if t in (0, int(np.argmax(opening))):
                thumbs[t] = frame
            yield frame

    mp4.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(mp4, keep_thumbs(frames), audio, SAMPLE_RATE, FPS)
    _write_json(sidecar, _sidecar(job, fm, persona, events, channels, beta, pose.numpy(), screen, opening, len(audio)))
    return {"mp4": str(mp4), "skipped": False, "thumbs": [thumbs[0], thumbs[int(np.argmax(opening))]]}


def _framing(fm, size: int) -> tuple[float, tuple[float, float]]:
    """Scale (px per model unit) and image centre so the face spans ~40% of the frame, slightly high."""
    lmk = fm.mean[fm.lmk68].numpy()
    eye_dist = np.linalg.norm(lmk[36:42].mean(0) - lmk[42:48].mean(0))  # model units
    scale = 0.17 * size / eye_dist
    face_centre_y = 0.5 * (lmk[27, 1] + lmk[8, 1])  # between nose bridge and chin
    return float(scale), (size / 2.0 - scale * float(lmk[:, 0].mean()), 0.46 * size + scale * float(face_centre_y))


def _sidecar(job, fm, persona, events, channels, beta, pose, screen, opening, n_samples) -> dict:
    """The clip's ground truth; ``landmarks_478`` is null for a face model without that correspondence."""
    import torch

    lmk478, valid = fm.landmarks478(torch.from_numpy(screen[:, :, :2]))
    return {
        "clip": str(job.stem.relative_to(job.out)), "speaker": job.speaker_id, "video_id": job.video_id,
        "fps": FPS, "n_frames": int(len(beta)), "sample_rate": SAMPLE_RATE, "n_samples": int(n_samples),
        "size": [job.size, job.size], "seed": [job.seed, job.speaker, job.clip],
        "face_model": fm.name, "exp_names": fm.exp_names,
        "pose_convention": "pitch,yaw,roll (rad), tx,ty (px), scale (px/unit)",
        "alpha": persona.alpha.round(5).tolist(),
        "beta": beta.round(5).tolist(),
        "channels": {k: np.asarray(v).round(4).tolist() for k, v in channels.items()},
        "pose": pose.round(5).tolist(),
        "mouth_opening_mm": opening.round(3).tolist(),
        "landmarks_478": lmk478.numpy().round(2).tolist() if bool(valid.all()) else None,
        "landmarks_68": screen[:, fm.lmk68.numpy(), :2].round(2).tolist(),
        "phonemes": [{"symbol": e.symbol, "start": round(e.start_s, 4), "end": round(e.end_s, 4)} for e in events],
        "persona": persona.to_dict(),
    }


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, separators=(",", ":")))
    os.replace(tmp, path)


def _thumbs_from_file(mp4: Path, sidecar: Path) -> list[np.ndarray]:
    import av

    opening = json.loads(sidecar.read_text())["mouth_opening_mm"]
    wanted, thumbs = {0, int(np.argmax(opening))}, {}
    with av.open(str(mp4)) as container:
        for t, frame in enumerate(container.decode(video=0)):
            if t in wanted:
                thumbs[t] = frame.to_ndarray(format="rgb24")
            if len(thumbs) == len(wanted):
                break
    return [thumbs[0], thumbs[int(np.argmax(opening))]]


def save_preview(path: Path, summaries: list[dict], columns: int = 8) -> None:
    """A grid: first frame (top) and the widest-open mouth (bottom) of up to ``columns`` clips."""
    from PIL import Image

    picks = summaries[:: max(1, len(summaries) // columns)][:columns]
    rows = [np.concatenate([s["thumbs"][k] for s in picks], 1) for k in (0, 1)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    Image.fromarray(np.concatenate(rows, 0)).save(tmp)
    os.replace(tmp, path)
