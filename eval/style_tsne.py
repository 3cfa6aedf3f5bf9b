"""Fig. 5: t-SNE of speaking-style embeddings of real and generated clips, one colour per speaker:

    python -m eval.style_tsne --encoder CKPT --real SRC [--generated SRC] --out fig.png
        [--split test] [--speakers 10] [--clips-per-speaker 12] [--perplexity 30] [--face-model SPEC] [--seed 0]
        [--fit-videos]

A source (``--real``, ``--generated``) is either
- a data_prep shard folder (it has index.json): the ``--split`` samples, their fitted ``beta.npy``
  directly, speakers from their json; or
- a folder of clips: ``*.npy`` expression coefficients (T, K_exp) of the face model, or ``*.mp4`` face
  videos, which are tracked and 3DMM-fitted first (``fit_video``: MediaPipe landmarks, then the data_prep
  fit). A clip's speaker is the ``speaker`` of a sidecar ``<stem>.json`` when there is one, else the
  name of the sub-folder it sits in (``SRC/<speaker>/<clip>.mp4``).

Compare like with like: coefficients fitted from MediaPipe landmarks differ systematically from those of
another fit (e.g. the synthetic shards', fitted to ground-truth landmarks), and the style encoder sees the
difference. ``--fit-videos`` fits the ``mp4`` of shard sources too, so real and generated clips go through
the same path.

Each clip becomes one point: ``eval.metrics.stylesim.video_embedding`` of its expression displacements
(``eval.shard_clips.expression_mm``). As in the paper (4.5), ``--speakers`` speakers are drawn at random
(among those of the real source) with up to ``--clips-per-speaker`` clips each, from both sources. The 2-D
layout is an exact t-SNE (``eval.tsne``) of all points together; real clips are drawn as circles
("GT" in the paper), generated ones as crosses. The PNG is written atomically. Printed: the share of
points whose nearest other point (cosine, in the embedding space) has the same speaker, and the share of
generated clips whose nearest real-speaker centroid is their own speaker.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from eval.metrics.stylesim import video_embedding
from eval.models.style_encoder import load_style_encoder
from eval.shard_clips import check_face_model, expression_mm, face_model_spec, iter_samples, meta, npy, split_urls
from eval.tsne import tsne
from src.models.face_model import load_face_model


@dataclass
class Clip:
    speaker: str
    name: str
    beta: np.ndarray | None = None  # (T, K_exp), or None until a video is fitted
    video: Path | bytes | None = None  # a file, or a shard's mp4 bytes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval.style_tsne", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", required=True, type=Path, help="style encoder checkpoint (eval.train_style_encoder)")
    p.add_argument("--real", required=True, type=Path, help="shard folder or folder of clips (module docstring)")
    p.add_argument("--generated", type=Path, help="shard folder or folder of clips of generated videos")
    p.add_argument("--out", required=True, type=Path, help="PNG to write")
    p.add_argument("--split", default="test", help="split of shard sources")
    p.add_argument("--speakers", type=int, default=10)
    p.add_argument("--clips-per-speaker", type=int, default=12)
    p.add_argument("--perplexity", type=float, default=30.0)
    p.add_argument("--face-model", default=None, help="face model spec (default: the real shards' index.json, "
                                                      "else 'procedural')")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fit-videos", action="store_true",
                   help="fit the videos of shard sources too instead of using their stored coefficients")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------- sources --
def shard_clips(folder: Path, split: str, fm, spec: str, fit_videos: bool) -> list[Clip]:
    clips = []
    for sample in iter_samples(split_urls(folder, split, "eval.style_tsne")):
        info = meta(sample)
        check_face_model(fm, info, spec)
        speaker, key = str(info["speaker"]), sample["__key__"]
        clips.append(Clip(speaker, key, video=sample["mp4"]) if fit_videos
                     else Clip(speaker, key, beta=npy(sample, "beta.npy")))
    return clips


def folder_clips(folder: Path) -> list[Clip]:
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".npy", ".mp4") and p.is_file())
    if not files:
        raise FileNotFoundError(f"{folder}: no index.json (not a shard folder) and no *.npy / *.mp4 clips")
    clips = []
    for path in files:
        sidecar = path.with_suffix(".json")
        if sidecar.is_file() and "speaker" in json.loads(sidecar.read_text()):
            speaker = str(json.loads(sidecar.read_text())["speaker"])
        elif path.parent != folder:
            speaker = path.parent.relative_to(folder).parts[0]
        else:
            raise ValueError(f"{path}: no speaker: give a sidecar {sidecar.name} with a 'speaker' key, or put the "
                             f"clip in a sub-folder named after its speaker")
        name = str(path.relative_to(folder))
        clips.append(Clip(speaker, name, beta=np.load(path, allow_pickle=False)) if path.suffix == ".npy"
                     else Clip(speaker, name, video=path))
    return clips


def read_source(folder: Path, split: str, fm, spec: str, fit_videos: bool) -> list[Clip]:
    if not folder.is_dir():
        raise FileNotFoundError(f"source folder not found: {folder}")
    if (folder / "index.json").is_file():
        return shard_clips(folder, split, fm, spec, fit_videos)
    return folder_clips(folder)


def fit_video(video: Path | bytes, fm) -> np.ndarray:
    """A face video (a file or mp4 bytes) -> (T, K_exp) expression coefficients: MediaPipe tracking
    (src.tracking) on its 25 fps frames, then the project's 3DMM fit (src.geometry.fitting) on the landmarks
    (frames without a face are filled by it)."""
    from src.geometry.fitting import FitConfig, fit_clip, fit_landmarks
    from src.media.decode import iter_frames
    from src.tracking.tracker import TrackConfig, track_video

    if isinstance(video, bytes):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "clip.mp4"
            path.write_bytes(video)
            return fit_video(path, fm)
    path = video
    track = track_video(iter_frames(path), TrackConfig())
    if track.found.sum() < 2:
        raise ValueError(f"{path}: a face was found in {int(track.found.sum())} frames; need >= 2 to fit")
    lmk, cfg = fit_landmarks(fm, np.nan_to_num(track.landmarks), FitConfig())
    return fit_clip(fm, lmk, cfg, valid=torch.from_numpy(track.found)).beta.detach().numpy()


def choose(real: list[Clip], generated: list[Clip], speakers: int, per_speaker: int, seed: int):
    """Up to ``speakers`` random speakers of the real source, up to ``per_speaker`` clips each per source."""
    rng = random.Random(seed)
    names = sorted({c.speaker for c in real})
    picked = sorted(rng.sample(names, min(speakers, len(names))))

    def take(clips: list[Clip]) -> list[Clip]:
        out = []
        for name in picked:
            own = [c for c in clips if c.speaker == name]
            out += rng.sample(own, min(per_speaker, len(own)))
        return out

    return picked, take(real), take(generated)


# ------------------------------------------------------------------------------------------- plot --
def plot(points: np.ndarray, speakers: list[str], generated: np.ndarray, picked: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab10" if len(picked) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(6.5, 5.5), dpi=150)
    for k, name in enumerate(picked):
        own = np.array([s == name for s in speakers])
        colour = colours(k % colours.N)
        for is_gen, marker in ((False, "o"), (True, "x")):
            sel = own & (generated == is_gen)
            if sel.any():
                ax.scatter(points[sel, 0], points[sel, 1], c=[colour], marker=marker, s=28, linewidths=1.2,
                           label=name if not is_gen or not (own & ~generated).any() else None)
    handles, labels = ax.get_legend_handles_labels()
    speaker_legend = ax.legend(handles, labels, title="speaker", fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.add_artist(speaker_legend)
    kinds = [plt.Line2D([], [], color="k", marker="o", ls="", label="GT"),
             plt.Line2D([], [], color="k", marker="x", ls="", label="Generated")]
    ax.legend(handles=kinds, fontsize=7, loc="lower left", bbox_to_anchor=(1.01, 0))
    ax.set_title("t-SNE of speaking-style embeddings")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)


def neighbour_scores(codes: np.ndarray, speakers: list[str], generated: np.ndarray) -> dict:
    """Speaker 1-NN accuracy of all points (cosine), and generated -> nearest real-speaker centroid accuracy."""
    names = np.array(speakers)
    sim = codes @ codes.T
    np.fill_diagonal(sim, -np.inf)
    out = {"nn_same_speaker": float((names[sim.argmax(1)] == names).mean())}
    real_names = sorted(set(names[~generated]))
    if generated.any() and real_names:
        centroids = np.stack([codes[(names == n) & ~generated].mean(0) for n in real_names])
        nearest = np.array(real_names)[(codes[generated] @ centroids.T).argmax(1)]
        out["generated_to_own_centroid"] = float((nearest == names[generated]).mean())
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    encoder = load_style_encoder(args.encoder)
    spec = args.face_model or (face_model_spec(args.real) if (args.real / "index.json").is_file() else "procedural")
    fm = load_face_model(spec)
    if fm.n_vertices != encoder.config.n_vertices:
        raise ValueError(f"--face-model {spec!r} has {fm.n_vertices} vertices, the encoder reads "
                         f"{encoder.config.n_vertices} ({encoder.config.face_model})")
    real = read_source(args.real, args.split, fm, spec, args.fit_videos)
    gen = read_source(args.generated, args.split, fm, spec, args.fit_videos) if args.generated else []
    picked, real, gen = choose(real, gen, args.speakers, args.clips_per_speaker, args.seed)
    clips = real + gen
    codes = []
    for clip in clips:
        beta = clip.beta if clip.beta is not None else fit_video(clip.video, fm)
        codes.append(video_embedding(encoder, expression_mm(fm, beta)).numpy())
    codes = np.stack(codes)  # (N, E)
    speakers = [c.speaker for c in clips]
    generated = np.array([False] * len(real) + [True] * len(gen))
    points = tsne(codes, args.perplexity, seed=args.seed)
    plot(points, speakers, generated, picked, args.out)
    scores = neighbour_scores(codes, speakers, generated)
    print(f"{args.out}: {len(real)} real and {len(gen)} generated clips of {len(picked)} speakers; "
          + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
