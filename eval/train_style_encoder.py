"""Train the speaking-style encoder behind StyleSim and Fig. 5 on data_prep shards:

    python -m eval.train_style_encoder --shards DIR --out CKPT [--steps 2000] [--window 50]
        [--speakers-per-batch 16] [--windows-per-speaker 4] [--region all|lower] [--max-vertices 1024]
        [--face-model SPEC] [--temperature 0.1] [--lr 3e-4] [--device cpu|cuda] [--resume]

Data: every sample of the ``train`` split (only ``beta.npy`` and ``json`` are read), grouped by speaker;
segments shorter than ``--window`` frames are left out. A batch draws P speakers (``--speakers-per-batch``,
at most all) and M windows of ``--window`` frames for each (``--windows-per-speaker``: from random segments
of that speaker, at random starts), and turns their coefficients into expression-only vertex displacements
in mm, ``B_exp beta * units_to_mm`` = ``M(0, beta, 0) - mean`` (paper 3.1), of the encoder's vertices
(``--region``: the face model's ``lower`` set or ``all``, at most ``--max-vertices`` of them, evenly
spread). The face model is the one the shards were built with (their index.json), or ``--face-model``.

Loss: supervised contrastive (Khosla et al. 2020) on the unit style codes: for every window the other
windows of its speaker are the positives and all windows of other speakers the negatives, softmax over
cosine / ``--temperature``, as the contrastive style encoders of Sun et al. 2023 use.

Validation (the ``val`` split when the index has one, else ``train``; at the end and every ``--val-every``
steps): ``val/top1``, the share of non-overlapping windows whose nearest other window (cosine) comes from
the same speaker, and the StyleSim of each clip's first half against its second half (``stylesim_same``)
and against the halves of other speakers' clips (``stylesim_diff``).

Checkpoint ``CKPT`` (atomic; ``--resume`` continues one): ``kind`` "style_encoder", ``config``
(``StyleEncoderConfig``, the vertex indices included), ``state_dict``, ``optimizer``, ``step``, ``args``,
``metrics``. ``eval.models.style_encoder.load_style_encoder(CKPT)`` loads it.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from eval.metrics.stylesim import video_embedding
from eval.models.style_encoder import StyleEncoder, StyleEncoderConfig
from eval.shard_clips import (
    check_face_model,
    expression_mm,
    face_model_spec,
    has_split,
    iter_samples,
    meta,
    npy,
    split_urls,
)
from src.models.face_model import load_face_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval.train_style_encoder", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", required=True, type=Path, help="data_prep shard folder (index.json)")
    p.add_argument("--out", required=True, type=Path, help="checkpoint file to write")
    p.add_argument("--split", default="train")
    p.add_argument("--face-model", default=None, help="face model spec (default: the one in the shards' index.json)")
    p.add_argument("--region", default="all", choices=["all", "lower"])
    p.add_argument("--max-vertices", type=int, default=1024)
    p.add_argument("--window", type=int, default=50, help="frames per window")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--embed-dim", type=int, default=64)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--speakers-per-batch", type=int, default=16)
    p.add_argument("--windows-per-speaker", type=int, default=4)
    p.add_argument("--temperature", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--weight-decay", type=float, default=1e-2)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--val-every", type=int, default=0, help="0: validate at the end only")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint at --out")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    for name in ("max_vertices", "window", "steps", "speakers_per_batch", "windows_per_speaker"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.windows_per_speaker < 2:
        raise SystemExit("--windows-per-speaker must be >= 2 (a window needs a positive of its speaker)")
    return args


@dataclass
class Segment:
    speaker: str
    key: str
    beta: np.ndarray  # (T, K_exp)


def load_segments(shards: Path, split: str, fm, spec: str) -> list[Segment]:
    """The split's segments (coefficients only), checked against the face model."""
    segments = []
    for sample in iter_samples(split_urls(shards, split, "eval.train_style_encoder")):
        info = meta(sample)
        check_face_model(fm, info, spec)
        segments.append(Segment(str(info["speaker"]), sample["__key__"], npy(sample, "beta.npy").astype(np.float32)))
    return segments


def style_vertices(fm, region: str, max_vertices: int) -> list[int]:
    """The encoder's vertices: the face model's ``lower`` set or all, at most ``max_vertices`` evenly spread."""
    index = fm.lower.tolist() if region == "lower" else list(range(fm.n_vertices))
    if len(index) > max_vertices:
        index = [index[i] for i in np.linspace(0, len(index) - 1, max_vertices).round().astype(int)]
    return index


class WindowSampler:
    """P speakers x M windows per batch (module docstring), as expression displacements of the encoder's
    vertices: ``sample() -> (x (P M, window, V, 3) mm, speaker labels (P M,))``."""

    def __init__(self, segments: list[Segment], fm, vertex_index: list[int], window: int, speakers: int,
                 per_speaker: int, seed: int):
        self.by_speaker: dict[str, list[Segment]] = {}
        for seg in segments:
            if len(seg.beta) >= window:
                self.by_speaker.setdefault(seg.speaker, []).append(seg)
        if len(self.by_speaker) < 2:
            raise ValueError(f"style encoder training needs >= 2 speakers with segments of >= {window} frames "
                             f"(--window), found {len(self.by_speaker)}")
        self.names = sorted(self.by_speaker)
        self.basis = fm.exp_basis[vertex_index] * fm.units_to_mm  # (V, 3, K) mm per unit coefficient
        self.window, self.speakers, self.per_speaker = window, min(speakers, len(self.names)), per_speaker
        self.rng = random.Random(seed)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = self.rng.sample(range(len(self.names)), self.speakers)
        betas, labels = [], []
        for label in chosen:
            segs = self.by_speaker[self.names[label]]
            weights = [len(s.beta) - self.window + 1 for s in segs]
            for seg in self.rng.choices(segs, weights=weights, k=self.per_speaker):
                start = self.rng.randrange(0, len(seg.beta) - self.window + 1)
                betas.append(seg.beta[start:start + self.window])
                labels.append(label)
        beta = torch.from_numpy(np.stack(betas))  # (P M, window, K)
        return torch.einsum("vck,btk->btvc", self.basis, beta), torch.tensor(labels)  # (P M, window, V, 3)


def supcon_loss(codes: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss of unit codes (N, E) with speaker labels (N,)."""
    logits = codes @ codes.T / temperature  # (N, N)
    self_mask = torch.eye(len(codes), dtype=torch.bool, device=codes.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits.log_softmax(1).masked_fill(self_mask, 0.0)
    positive = (labels[:, None] == labels[None, :]) & ~self_mask  # (N, N)
    return -((log_prob * positive).sum(1) / positive.sum(1).clamp(min=1)).mean()


@torch.no_grad()
def validate(net: StyleEncoder, segments: list[Segment], fm) -> dict:
    """Speaker retrieval and same- vs other-speaker StyleSim on ``segments`` (module docstring)."""
    net.eval()
    window = net.config.window
    device = next(net.parameters()).device
    codes, labels, halves = [], [], []
    for seg in segments:
        exp = expression_mm(fm, seg.beta)  # (T, L, 3)
        starts = list(range(0, len(exp) - window + 1, window))
        if starts:
            codes.append(net(torch.stack([exp[s:s + window] for s in starts]).to(device)).cpu())
            labels += [seg.speaker] * len(starts)
        half = len(exp) // 2
        if half >= max(1, window // 2):
            halves.append((seg.speaker, video_embedding(net, exp[:half]), video_embedding(net, exp[half:2 * half])))
    net.train()
    out = {}
    if codes and len(set(labels)) > 1:
        z = torch.cat(codes)  # (N, E)
        sim = (z @ z.T).fill_diagonal_(-2.0)
        names = np.array(labels)
        out["val/top1"] = float((names[sim.argmax(1).numpy()] == names).mean())
        out["val/windows"] = len(names)
    if halves:
        same = [float(a @ b) for _, a, b in halves]
        diff = [float(a @ b2) for i, (s, a, _) in enumerate(halves) for j, (s2, _, b2) in enumerate(halves) if s2 != s]
        out["val/stylesim_same"] = float(np.mean(same))
        if diff:
            out["val/stylesim_diff"] = float(np.mean(diff))
    return out


def save_checkpoint(path: Path, net: StyleEncoder, opt, step: int, args, metrics: dict, spec: str) -> None:
    state = {"kind": "style_encoder", "config": net.config.to_dict(), "state_dict": net.state_dict(),
             "optimizer": opt.state_dict(), "step": step, "metrics": metrics, "face_model_spec": spec,
             "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def build(args, fm) -> StyleEncoder:
    config = StyleEncoderConfig(n_vertices=fm.n_vertices,
                                vertex_index=tuple(style_vertices(fm, args.region, args.max_vertices)),
                                face_model=fm.name, window=args.window, dim=args.dim, depth=args.depth,
                                heads=args.heads, embed_dim=args.embed_dim)
    return StyleEncoder(config)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = args.face_model or face_model_spec(args.shards)
    fm = load_face_model(spec)
    net = build(args, fm).to(args.device)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    step, metrics = 0, {}
    if args.out.exists() and not args.resume:
        raise SystemExit(f"{args.out} exists: pass --resume to continue it, or choose another --out")
    if args.resume and args.out.exists():
        state = torch.load(args.out, map_location=args.device, weights_only=True)
        if StyleEncoderConfig.from_dict(state["config"]) != net.config:
            raise SystemExit(f"--resume: {args.out} holds a different encoder than these arguments build")
        net.load_state_dict(state["state_dict"])
        opt.load_state_dict(state["optimizer"])
        step, metrics = int(state["step"]), dict(state.get("metrics", {}))
    sampler = WindowSampler(load_segments(args.shards, args.split, fm, spec), fm, list(net.config.vertex_index),
                            args.window, args.speakers_per_batch, args.windows_per_speaker, args.seed + step)
    val_split = "val" if has_split(args.shards, "val") else args.split
    val_segments = load_segments(args.shards, val_split, fm, spec)
    net.train()
    bar = tqdm(total=args.steps, initial=step, desc="style encoder", disable=args.no_progress, file=sys.stderr)
    start = time.perf_counter()
    while step < args.steps:
        x, labels = sampler.sample()
        loss = supcon_loss(net.forward_selected(x.to(args.device)), labels.to(args.device), args.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        metrics.update({"train/loss": loss.item(), "step": step})
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if args.val_every and step % args.val_every == 0 and step < args.steps:
            metrics.update(validate(net, val_segments, fm))
            bar.write(f"step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k.startswith("val/")))
        if step % args.save_every == 0 and step < args.steps:
            save_checkpoint(args.out, net, opt, step, args, metrics, spec)
    bar.close()
    metrics.update(validate(net, val_segments, fm))
    metrics["val/split"] = val_split
    metrics["train/seconds"] = time.perf_counter() - start
    save_checkpoint(args.out, net, opt, step, args, metrics, spec)
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
