"""Stage-2 data: a target frame, its PNCC and lip mask, and reference frames with their PNCCs chosen by
Algorithm 1 (``src.data.reference_selection``), streamed from the project's WebDataset shards (docs/design.md,
"Shards" and "Stage 2").

Per shard sample (one clip segment) the 256x256 crop video is decoded (and resized to ``image_size``),
and PNCC images and lip masks are rendered on the fly from alpha / beta / pose (``src.geometry.pncc``):
shards store coefficients, not images.

- train: shards resampled (every rank and worker its own stream), ``targets_per_clip`` random target
  frames per segment, references by Algorithm 1's training strategy (face: N_f frames evenly around i;
  lip: N_l random frames of the clip); ``train_batches`` batches per epoch and rank.
- val / test: a fixed stream, ``eval_targets_per_clip`` evenly spaced target frames per segment,
  references by the *inference* strategy (face: the N_f frames centred on i; lip: N_l frames evenly over the
  clip sorted by mouth opening) with the target frame itself left out of both: in self-reconstruction the
  ground truth is in the clip, and a reference equal to it would turn the test into copying.

Item / batch (collated): ``tgt_img`` (B, 3, S, S) float in [0, 1]; ``tgt_pncc`` (B, 3, S, S);
``tgt_lip_mask`` (B, 1, S, S) float {0, 1}; ``face_ref_img``, ``face_ref_pncc`` (B, N_f, 3, S, S);
``lip_ref_img``, ``lip_ref_pncc`` (B, N_l, 3, S, S); ``key`` list of str; ``frame`` (B,) long.
"""
from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import lightning as L
import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader

from src.data.reference_selection import inference_face_references, inference_lip_references, training_references
from src.data.shards import ShardFaults, shard_urls, worker_offset
from src.geometry.pncc import render_geometry
from src.models.face_model import shared_face_model

SELECTIONS = ("algorithm1", "random", "target_excluded")
NEEDED = ("mp4", "alpha.npy", "beta.npy", "pose.npy", "json")


class RenderDataModule(L.LightningDataModule):
    def __init__(
        self,
        root: str | list[str] | None = None,
        urls: dict | None = None,
        face_model: str = "procedural",
        image_size: int = 256,
        n_face: int = 5,
        n_lip: int = 5,
        eval_n_lip: int | None = None,
        batch_size: int = 4,
        train_batches: int = 500,
        targets_per_clip: int = 8,
        eval_targets_per_clip: int = 4,
        selection: str = "algorithm1",
        shuffle_buffer: int = 100,
        num_workers: int = 0,
        seed: int = 0,
        augment: Callable[[dict, np.random.Generator], dict] | None = None,
        exclude_window: int = 0,
        max_bad_fraction: float = 0.1,
    ) -> None:
        """``root``: a shard folder (index.json), or ``urls``: split -> shard URLs / brace pattern.
        ``face_model``: the spec the shards were fitted with (PNCCs are rendered with it). ``eval_n_lip``:
        lip references at validation (default n_lip; inference may use more than training). ``selection``:
        ``algorithm1`` (the paper), ``random`` (the "w/o frame selection" ablation: face and lip references
        are random frames of the clip, other than the target at evaluation), or ``target_excluded``: training
        references as self-reconstruction scores them (face: the N_f frames centred on the target, lip: N_l random
        frames, the target left out of both; evaluation as ``algorithm1``). Algorithm 1's training strategy puts
        the target itself among the face references, which teaches copying it; real clips, whose neighbouring
        frames differ by a few pixels, are where that matters. ``augment``: applied to every
        training item (``src.data.augment.RenderAugment``), never at evaluation. ``exclude_window``: with
        ``target_excluded`` training and at evaluation, the frames within this many frames of the target are left
        out of the references too (0: only the target): a neighbouring frame is nearly the answer, which a dub
        never has (its neighbours show the original speech), so evaluation without them scores what dubbing
        needs."""
        super().__init__()
        if root is None and not urls:
            raise ValueError("RenderDataModule needs `root` (a shard folder with index.json) or `urls`")
        for name, value in [("n_face", n_face), ("n_lip", n_lip), ("batch_size", batch_size),
                            ("train_batches", train_batches), ("targets_per_clip", targets_per_clip),
                            ("eval_targets_per_clip", eval_targets_per_clip)]:
            if value < 1:
                raise ValueError(f"RenderDataModule: {name} must be >= 1, got {value}")
        if selection not in SELECTIONS:
            raise ValueError(f"RenderDataModule: selection must be one of {SELECTIONS}, got {selection!r}")
        if image_size % 4 or image_size < 16:
            raise ValueError(f"RenderDataModule: image_size must be a multiple of 4 and >= 16, got {image_size}")
        self.root = None if root is None else (Path(root) if isinstance(root, (str, Path)) else [Path(r) for r in root])
        self.urls = dict(urls or {})
        self.face_model, self.image_size = face_model, image_size
        self.n_face, self.n_lip, self.eval_n_lip = n_face, n_lip, eval_n_lip or n_lip
        self.batch_size, self.train_batches = batch_size, train_batches
        self.targets_per_clip, self.eval_targets_per_clip = targets_per_clip, eval_targets_per_clip
        self.selection = selection
        self.shuffle_buffer, self.num_workers, self.seed = shuffle_buffer, num_workers, seed
        self.augment = augment
        if exclude_window < 0:
            raise ValueError(f"RenderDataModule: exclude_window must be >= 0 frames, got {exclude_window}")
        self.exclude_window = exclude_window
        self.max_bad_fraction = max_bad_fraction

    def shard_urls(self, split: str) -> list[str]:
        return shard_urls(self.root, self.urls, split, type(self).__name__)

    def train_dataloader(self) -> DataLoader:
        per_worker = math.ceil(self.train_batches / max(1, self.num_workers))
        urls = self.shard_urls("train")
        faults = ShardFaults(f"{type(self).__name__} (train)", len(urls), self.max_bad_fraction)
        dataset = (
            wds.WebDataset(urls, resampled=True, shardshuffle=False, nodesplitter=None, seed=self.seed,
                           handler=faults)
            .shuffle(self.shuffle_buffer)
            .map(decode_clip, handler=faults)
            .compose(self._items(train=True, faults=faults))
            .shuffle(self.shuffle_buffer)
            .batched(self.batch_size, collation_fn=collate, partial=False)
            .with_epoch(per_worker)
        )
        return DataLoader(dataset, batch_size=None, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def _eval_loader(self, split: str) -> DataLoader:
        urls = self.shard_urls(split)
        world = self.trainer.world_size if self.trainer is not None else 1
        nodesplitter = wds.split_by_node if len(urls) >= world > 1 else None
        faults = ShardFaults(f"{type(self).__name__} ({split})", len(urls), self.max_bad_fraction)
        dataset = (
            wds.WebDataset(urls, shardshuffle=False, nodesplitter=nodesplitter, empty_check=False, handler=faults)
            .map(decode_clip, handler=faults)
            .compose(self._items(train=False, faults=faults))
            .batched(self.batch_size, collation_fn=collate, partial=True)
        )
        workers = min(self.num_workers, 1)  # a fixed order
        return DataLoader(dataset, batch_size=None, num_workers=workers, persistent_workers=workers > 0)

    def _items(self, train: bool, faults=None):
        size, spec, seed, selection = self.image_size, self.face_model, self.seed, self.selection
        augment = self.augment if train else None
        window = self.exclude_window
        n_face, n_lip = self.n_face, (self.n_lip if train else self.eval_n_lip)
        n_targets = self.targets_per_clip if train else self.eval_targets_per_clip

        def stage(clips):
            rng = np.random.default_rng(seed + worker_offset() if train else seed)
            fm = shared_face_model(spec)
            for clip in clips:
                T = clip["beta"].shape[0]
                if T < 2:
                    continue
                if selection == "random":
                    targets = (rng.choice(T, size=min(n_targets, T), replace=False) if train else
                               np.unique(np.linspace(0, T - 1, min(n_targets, T)).round().astype(int)))
                    refs = [random_references(int(i), T, n_face, n_lip, rng, exclude=not train) for i in targets]
                elif train and selection == "target_excluded":
                    targets = rng.choice(T, size=min(n_targets, T), replace=False)
                    refs = [target_excluded_references(int(i), T, n_face, n_lip, rng, window) for i in targets]
                elif train:
                    targets = rng.choice(T, size=min(n_targets, T), replace=False)
                    refs = [training_references(i, T, n_face, n_lip, rng=rng) for i in targets]
                else:
                    targets = np.unique(np.linspace(0, T - 1, min(n_targets, T)).round().astype(int))
                    opening = mouth_openings(fm, clip["alpha"], clip["beta"])
                    refs = [eval_references(int(i), opening, n_face, n_lip, window) for i in targets]
                try:
                    frames = _resized_frames(clip["mp4"], size, T)
                except (av.FFmpegError, ValueError) as err:  # a damaged crop video: skipped and counted
                    if faults is None:
                        raise
                    faults(ValueError(f"shard sample {clip['key']!r}: its crop video does not decode ({err})"))
                    continue
                needed = np.unique(np.concatenate([targets, *[np.concatenate(r) for r in refs]]))
                pncc, lip = render_geometry(fm, clip["alpha"], clip["beta"][needed], clip["pose"][needed], size)
                row = {int(t): k for k, t in enumerate(needed)}  # frame -> row of pncc / lip
                for i, (face_idx, lip_idx) in zip(targets, refs):
                    # copies, not views: an item waits in the shuffle buffer, and a view would keep the whole clip's
                    # frames (T x 3 x S x S float32, 157 MB for 200 frames at 256 px) alive with it (4.8 GB a worker)
                    item = {
                        "tgt_img": frames[i].copy(), "tgt_pncc": pncc[row[int(i)]].copy(),
                        "tgt_lip_mask": lip[row[int(i)]].copy(),
                        "face_ref_img": frames[face_idx], "face_ref_pncc": pncc[[row[int(j)] for j in face_idx]],
                        "lip_ref_img": frames[lip_idx], "lip_ref_pncc": pncc[[row[int(j)] for j in lip_idx]],
                        "key": clip["key"], "frame": int(i),
                    }
                    yield augment(item, rng) if augment is not None else item

        return stage


def candidates(i: int, T: int, window: int = 0) -> np.ndarray:
    """The frames a reference of target i may be: every frame more than ``window`` frames from i (the target
    itself always out) -> sorted frame numbers; a clip too short to leave any is an error."""
    frames = np.arange(T)
    out = frames[np.abs(frames - i) > window]
    if len(out) == 0:
        raise ValueError(f"frame {i} of a {T}-frame clip: no frame is more than {window} frames away to take "
                         f"references from (lower exclude_window)")
    return out


def eval_references(i: int, opening: np.ndarray, n_face: int, n_lip: int,
                    window: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Algorithm 1's inference references for frame i, chosen among the clip's frames more than ``window`` frames
    from it (module docstring): (face_idx (n_face,), lip_idx (n_lip,)) as frame numbers of the clip."""
    others = candidates(i, len(opening), window)
    position = int(np.searchsorted(others, i))  # where i would sit among the others
    face = others[inference_face_references(min(position, len(others) - 1), len(others), n_face)]
    lip = others[inference_lip_references(opening[others], n_lip)]
    return face, lip


def target_excluded_references(i: int, T: int, n_face: int, n_lip: int, rng: np.random.Generator,
                               window: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Training references under the conditions of self-reconstruction (``selection="target_excluded"``): face,
    the n_face frames centred on i among the clip's frames more than ``window`` from it; lip, n_lip of those at
    random."""
    others = candidates(i, T, window)
    position = int(np.searchsorted(others, i))
    face = others[inference_face_references(min(position, len(others) - 1), len(others), n_face)]
    lip = rng.choice(others, size=n_lip, replace=len(others) < n_lip).astype(np.int64)
    return face, lip


def random_references(i: int, T: int, n_face: int, n_lip: int, rng: np.random.Generator,
                      exclude: bool) -> tuple[np.ndarray, np.ndarray]:
    """The "w/o frame selection" ablation: face and lip references drawn at random from the clip (other than
    frame i when ``exclude``), with replacement only when the clip is too short."""
    pool = np.delete(np.arange(T), i) if exclude else np.arange(T)

    def draw(n: int) -> np.ndarray:
        return rng.choice(pool, size=n, replace=len(pool) < n).astype(np.int64)

    return draw(n_face), draw(n_lip)


def mouth_openings(fm, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """(T,) mouth opening (mm) of the canonical geometry M(alpha, beta_t, 0): Algorithm 1's lip ordering."""
    with torch.no_grad():
        a = torch.as_tensor(alpha)[None].expand(len(beta), -1)
        return fm.mouth_opening(fm.canonical_vertices(a, torch.as_tensor(beta))).numpy()


def decode_clip(sample: dict) -> dict:
    missing = [k for k in NEEDED if k not in sample]
    if missing:
        raise KeyError(f"shard sample {sample.get('__key__')!r} ({sample.get('__url__')}) lacks {missing}; "
                       f"was it written by the shard builder (README.md, 'Commands')?")
    out = {name[:-4]: np.load(io.BytesIO(sample[name]), allow_pickle=False) for name in NEEDED if name.endswith(".npy")}
    out.update(mp4=sample["mp4"], meta=json.loads(sample["json"]), key=sample["__key__"])
    return out


def _resized_frames(mp4: bytes, size: int, n_frames: int) -> np.ndarray:
    """The crop video -> (T, 3, size, size) float32 in [0, 1]."""
    frames = []
    with av.open(io.BytesIO(mp4)) as container:
        for frame in container.decode(video=0):
            image = frame.to_ndarray(format="rgb24")
            if image.shape[0] != size:
                image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
            frames.append(image)
    if len(frames) != n_frames:
        raise ValueError(f"shard video has {len(frames)} frames, its coefficients {n_frames}")
    return np.stack(frames).transpose(0, 3, 1, 2).astype(np.float32) / 255.0  # (T, 3, S, S)


def collate(items: list[dict]) -> dict:
    batch = {}
    for name in ("tgt_img", "face_ref_img", "lip_ref_img"):
        batch[name] = torch.from_numpy(np.stack([it[name] for it in items]))
    for name in ("tgt_pncc", "face_ref_pncc", "lip_ref_pncc"):
        stacked = torch.from_numpy(np.stack([it[name] for it in items]))  # (..., S, S, 3)
        batch[name] = stacked.movedim(-1, -3).contiguous()  # (..., 3, S, S)
    masks = torch.from_numpy(np.stack([it["tgt_lip_mask"] for it in items]))  # (B, S, S)
    batch["tgt_lip_mask"] = masks[:, None].float()  # (B, 1, S, S)
    batch["key"] = [it["key"] for it in items]
    batch["frame"] = torch.tensor([it["frame"] for it in items], dtype=torch.long)
    return batch
