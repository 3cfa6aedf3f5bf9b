"""Train our own SyncNet on data_prep shards, so the synthetic benchmark has a calibrated SyncScore:

    python -m eval.train_syncnet --shards DIR --out CKPT [--steps 3000] [--batch-size 16] [--run 5]
        [--max-shift 6] [--lr 1e-3] [--arch small|v2] [--workers 2] [--device cpu|cuda] [--resume]

Data: the ``train`` split's samples (``mp4`` face crops and ``audio.npy``), resampled without end. Each
visit decodes a clip, turns its frames into the network's input (``eval.metrics.sync.lip_input``: for the
small architecture 96x96 of the lower face) and its audio into MFCC windows (``eval.audio_features``),
and cuts ``--runs-per-clip`` *runs*: R = ``--run`` consecutive 5-frame lip windows starting at t0 and the
audio windows t0 - S .. t0 + R - 1 + S (S = ``--max-shift``) that lie inside the clip.

Loss: multi-way matching, the training of SyncNet's later versions (Chung et al. 2019, "Perfect match")
on the distance the evaluation uses: for every lip window the logits are the negative L2 distances to all
audio windows of the batch (its own clip shifted by up to R - 1 + S frames: the hard negatives; other
clips: the easy ones), cross-entropy towards the synced one. Progress shows the loss and the share of lip
windows whose nearest audio window within +-S of their own clip is the synced one.

Validation (``val`` split when the index has one, at the end and every ``--val-every`` steps): SyncScore
(``eval.metrics.sync.score``, offsets +-15) of each validation clip as it is and with its audio delayed by
``--val-shift`` frames; reported: the share of clips whose offset comes out 0 (``val/offset0_acc``) and
``-val_shift`` (``val/offset_shifted_acc``), and the mean confidence of both (``val/conf``,
``val/conf_shifted``). Scored without the 100-frame minimum (validation clips may be short).

Checkpoint ``CKPT`` (written atomically every ``--save-every`` steps and at the end; ``--resume``
continues one to ``--steps``): ``config`` (``SyncNetConfig``), ``state_dict``, ``optimizer``, ``step``,
``args``, ``metrics``. ``eval.models.syncnet.load_syncnet(CKPT)`` loads it for ``SyncScore``.
"""
from __future__ import annotations

import argparse
import functools
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import webdataset as wds
from einops import rearrange
from torch.utils.data import DataLoader
from tqdm import tqdm

from eval.audio_features import SAMPLES_PER_FRAME, WINDOW_FRAMES, audio_windows, int16_scale, mfcc
from eval.metrics.sync import lip_input, score
from eval.models.syncnet import SYNCNET_SMALL, SYNCNET_V2, SyncNet, SyncNetConfig
from eval.shard_clips import has_split, iter_samples, meta, npy, split_urls, video_frames
from src.data.shards import worker_offset

ARCHITECTURES = {"small": SYNCNET_SMALL, "v2": SYNCNET_V2}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval.train_syncnet", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", required=True, type=Path, help="data_prep shard folder (index.json)")
    p.add_argument("--out", required=True, type=Path, help="checkpoint file to write")
    p.add_argument("--split", default="train")
    p.add_argument("--arch", default="small", choices=sorted(ARCHITECTURES))
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=16, help="runs per batch")
    p.add_argument("--run", type=int, default=5, help="consecutive lip windows per run (R)")
    p.add_argument("--max-shift", type=int, default=6, help="audio windows this far either side of a run (S)")
    p.add_argument("--runs-per-clip", type=int, default=16, help="runs cut from each decoded clip")
    p.add_argument("--shuffle-buffer", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--workers", type=int, default=0, help="data loader processes")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--val-every", type=int, default=0, help="0: validate at the end only")
    p.add_argument("--val-shift", type=int, default=3)
    p.add_argument("--resume", action="store_true", help="continue the checkpoint at --out")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    for name in ("steps", "batch_size", "run", "runs_per_clip", "shuffle_buffer"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.max_shift < 0:
        raise SystemExit(f"--max-shift must be >= 0, got {args.max_shift}")
    return args


# ------------------------------------------------------------------------------------------- data --
def decode_clip(sample: dict, config: SyncNetConfig) -> dict:
    """A shard sample -> network pixels (n, 3, h, w) uint8 and MFCC windows (n - 5, 1, 13, 20) of its
    first n = min(frames, audio / 640) frames (the metric's windows)."""
    frames, audio = video_frames(sample["mp4"]), npy(sample, "audio.npy")
    n = min(len(frames), len(audio) // SAMPLES_PER_FRAME)
    if n <= WINDOW_FRAMES:
        return {"key": sample["__key__"], "n_windows": 0}
    windows = audio_windows(mfcc(int16_scale(audio[: n * SAMPLES_PER_FRAME])), n - WINDOW_FRAMES)
    return {"key": sample["__key__"], "pixels": lip_input(frames[:n], config), "mfcc": windows,
            "n_windows": n - WINDOW_FRAMES, "speaker": meta(sample).get("speaker")}


def runs(run: int, shift: int, per_clip: int, seed: int):
    """A webdataset stage: decoded clips -> runs (module docstring): ``lip`` (R + 4, 3, h, w) uint8 frames,
    ``aud`` (R + 2 S, 1, 13, 20) MFCC windows t0 - S .. t0 + R - 1 + S, zero outside the clip, ``valid``
    (R + 2 S,) bool. Clips with fewer than R windows are skipped."""

    def stage(clips):
        rng = random.Random(seed + worker_offset())
        for clip in clips:
            W = clip["n_windows"]
            if W < run:
                continue
            for _ in range(per_clip):
                t0 = rng.randrange(0, W - run + 1)
                span = torch.arange(t0 - shift, t0 + run + shift)  # (R + 2 S,) audio window numbers
                valid = (span >= 0) & (span < W)
                aud = torch.zeros(len(span), 1, 13, 20)
                aud[valid] = clip["mfcc"][span[valid]]
                yield {"lip": clip["pixels"][t0:t0 + run + WINDOW_FRAMES - 1], "aud": aud, "valid": valid}

    return stage


def collate(items: list[dict]) -> dict:
    return {name: torch.stack([it[name] for it in items]) for name in ("lip", "aud", "valid")}


def train_loader(args: argparse.Namespace, config: SyncNetConfig) -> DataLoader:
    urls = split_urls(args.shards, args.split, "eval.train_syncnet")
    dataset = (
        wds.WebDataset(urls, resampled=True, shardshuffle=False, nodesplitter=None, seed=args.seed)
        .shuffle(args.shuffle_buffer)
        .map(functools.partial(decode_clip, config=config))
        .compose(runs(args.run, args.max_shift, args.runs_per_clip, args.seed))
        .shuffle(args.shuffle_buffer)
        .batched(args.batch_size, collation_fn=collate, partial=False)
    )
    return DataLoader(dataset, batch_size=None, num_workers=args.workers, persistent_workers=args.workers > 0)


# ------------------------------------------------------------------------------------------- loss --
def matching_loss(net: SyncNet, batch: dict, shift: int) -> tuple[torch.Tensor, float]:
    """Multi-way matching (module docstring) -> (loss, share of lip windows whose nearest valid audio
    window of their own run is the synced one)."""
    lip, aud, valid = batch["lip"], batch["aud"], batch["valid"]
    B, F_run = lip.shape[:2]
    R = F_run - WINDOW_FRAMES + 1
    index = torch.arange(R)[:, None] + torch.arange(WINDOW_FRAMES)  # (R, 5) frames of each window
    clips = rearrange(lip[:, index].float() * net.config.pixel_scale, "b r t c h w -> (b r) c t h w")
    video = net.forward_lip(clips)  # (B R, D)
    sound = net.forward_aud(aud[valid])  # (M, D), the valid audio windows of all runs in order
    dist = torch.cdist(video, sound)  # (B R, M)
    # the synced audio window of lip window r of run b sits at run position r + S: its place among the valid
    flat = torch.cumsum(valid.flatten(), 0).reshape(valid.shape) - 1  # (B, R + 2 S) index into `sound`
    target = flat[:, shift:shift + R].reshape(-1)  # (B R,)
    loss = F.cross_entropy(-dist, target)
    with torch.no_grad():
        owner = torch.repeat_interleave(torch.arange(B), valid.sum(1))  # (M,) run of each audio window
        own = owner[None, :] == torch.arange(B).repeat_interleave(R)[:, None]  # (B R, M)
        accuracy = (dist.masked_fill(~own, float("inf")).argmin(1) == target).float().mean().item()
    return loss, accuracy


# ------------------------------------------------------------------------------------- validation --
@torch.no_grad()
def validate(net: SyncNet, shards: Path, shift: int) -> dict:
    """SyncScore of the ``val`` clips as they are and with the audio delayed by ``shift`` frames."""
    net.eval()
    rows = []
    for sample in iter_samples(split_urls(shards, "val", "eval.train_syncnet")):
        frames, audio = video_frames(sample["mp4"]), npy(sample, "audio.npy")
        if len(frames) < shift + 2 * WINDOW_FRAMES:
            continue
        synced = score(net, frames, audio, min_frames=0)
        n = len(frames) - shift  # video frames [shift:] against audio [: n]: the audio lags by `shift`
        delayed = score(net, frames[shift:], audio[: n * SAMPLES_PER_FRAME], min_frames=0)
        rows.append([synced["sync_offset"] == 0, delayed["sync_offset"] == -shift, synced["sync_conf"],
                     delayed["sync_conf"], synced["lse_d"]])
    net.train()
    if not rows:
        return {}
    mean = [float(v) for v in np.mean(np.array(rows, np.float64), 0)]
    return {"val/clips": len(rows), "val/offset0_acc": mean[0], "val/offset_shifted_acc": mean[1],
            "val/conf": mean[2], "val/conf_shifted": mean[3], "val/lse_d": mean[4]}


# ------------------------------------------------------------------------------------- checkpoint --
def save_checkpoint(path: Path, net: SyncNet, opt: torch.optim.Optimizer, step: int, args, metrics: dict) -> None:
    state = {"kind": "syncnet", "config": net.config.to_dict(), "state_dict": net.state_dict(),
             "optimizer": opt.state_dict(), "step": step, "metrics": metrics,
             "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = ARCHITECTURES[args.arch]
    net = SyncNet(config).to(args.device)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    step, metrics = 0, {}
    if args.out.exists() and not args.resume:
        raise SystemExit(f"{args.out} exists: pass --resume to continue it, or choose another --out")
    if args.resume and args.out.exists():
        state = torch.load(args.out, map_location=args.device, weights_only=True)
        if SyncNetConfig.from_dict(state["config"]) != config:
            raise SystemExit(f"--resume: {args.out} holds a different architecture than --arch {args.arch}")
        net.load_state_dict(state["state_dict"])
        opt.load_state_dict(state["optimizer"])
        step, metrics = int(state["step"]), dict(state.get("metrics", {}))
    validating = has_split(args.shards, "val")
    net.train()
    bar = tqdm(total=args.steps, initial=step, desc="syncnet", disable=args.no_progress, file=sys.stderr)
    start = time.perf_counter()
    for batch in train_loader(args, config) if step < args.steps else []:
        batch = {k: v.to(args.device) for k, v in batch.items()}
        loss, accuracy = matching_loss(net, batch, args.max_shift)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        metrics.update({"train/loss": loss.item(), "train/sync_acc": accuracy, "step": step})
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{accuracy:.2f}")
        if validating and args.val_every and step % args.val_every == 0 and step < args.steps:
            metrics.update(validate(net, args.shards, args.val_shift))
            bar.write(f"step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k.startswith("val/")))
        if step % args.save_every == 0 and step < args.steps:
            save_checkpoint(args.out, net, opt, step, args, metrics)
        if step >= args.steps:
            break
    bar.close()
    if validating:
        metrics.update(validate(net, args.shards, args.val_shift))
    metrics["train/seconds"] = time.perf_counter() - start
    save_checkpoint(args.out, net, opt, step, args, metrics)
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
