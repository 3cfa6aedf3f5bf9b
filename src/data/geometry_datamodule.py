"""Stage-1 data: windows of T frames with their audio, and a reference window of the same clip, streamed
from the project's WebDataset shards (docs/design.md, "Shards" and "Stage 1").

A shard sample is one clip segment (docs/design.md, "Shards"): ``audio.npy`` (N,) int16 at 16 kHz,
``alpha.npy`` (K_id,), ``beta.npy`` (T, K_exp), ``pose.npy`` (T, 6), ``json``. The video is not read:
stage 1 works on coefficients only (the system turns them into vertices on its device).

Windows. From a segment of n frames, a *target* window of ``window`` frames and a *reference* window
that does not overlap it (so the style code cannot copy the target's content): the longer stretch of the
segment left of or right of the target, cut to at most ``ref_window`` frames. Segments too short for a
target plus ``min_ref`` reference frames are skipped (counted in ``skipped``).

- train: shards resampled with replacement (``resampled=True``: every worker and rank draws its own
  stream, so no rank runs out) and an epoch of ``train_batches`` batches per rank (``with_epoch``);
  ``windows_per_clip`` random target windows per segment, shuffled across segments.
- val / test: a fixed stream (no shuffling): the segment's windows at frames 0, T, 2T, ... (at most
  ``eval_windows_per_clip``), each with the reference stretch next to it. Shards are split over ranks when
  there are at least as many shards as ranks, else every rank reads them all (the metrics are then
  averaged over identical copies: correct, only redundant).
- ``audio_gain_db`` / ``audio_noise_snr_db``: training-only audio augmentation (``AudioAugment``), off by
  default.
- ``audio_features``: a front end (``src.audio.phones.FeatureCache``) computed once per segment on its whole audio
  (and cached on disk), sliced with each window into ``audio_features`` (B, T, F): what ``e_aud_phones`` reads
  instead of recognising every window again.
- ``heldout_clips``: a fraction of the *training speakers'* segments (by a hash of the clip name) kept out
  of training and validated as ``val_seen`` (held-out clips of seen speakers), next to ``val`` (held-out
  speakers, the index's val split).

Batch (collated): ``audio`` (B, 640 T) float in [-1, 1]; ``alpha`` (B, K_id); ``beta`` (B, T, K_exp);
``pose`` (B, T, 6); ``ref_beta`` (B, R, K_exp) zero-padded to the longest reference R; ``ref_mask`` (B, R)
bool, True on real frames; ``audio_features`` (B, T, F) with a front end; ``speaker``, ``key`` lists of str;
``start``, ``ref_start`` (B,) long (first frames of the target and reference windows in the segment).
"""
from __future__ import annotations

import io
import json
import math
import random
import zlib
from pathlib import Path

import lightning as L
import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset

from src.data.shards import ShardFaults, shard_urls, worker_offset
from src.media.contract import SAMPLES_PER_FRAME

MAX_BARREN = 2000  # training segments in a row without a window before the stream gives up
NEEDED = ("audio.npy", "alpha.npy", "beta.npy", "pose.npy", "json")


class GeometryDataModule(L.LightningDataModule):
    def __init__(
        self,
        root: str | list[str] | None = None,
        urls: dict | None = None,
        window: int = 50,
        ref_window: int = 50,
        min_ref: int = 25,
        batch_size: int = 16,
        train_batches: int = 200,
        windows_per_clip: int = 4,
        eval_windows_per_clip: int = 2,
        heldout_clips: float = 0.0,
        shuffle_buffer: int = 200,
        num_workers: int = 0,
        seed: int = 0,
        audio_gain_db: tuple[float, float] | list[float] | None = None,
        audio_noise_snr_db: tuple[float, float] | list[float] | None = None,
        audio_features=None,
        max_bad_fraction: float = 0.1,
    ) -> None:
        """``root``: a shard folder (its index.json names the shards of each split); or ``urls``:
        split -> a list of shard URLs or one brace pattern (``/data/train-{000000..000099}.tar``,
        ``pipe:aws s3 cp ... -``), which overrides ``root`` for the splits it names."""
        super().__init__()
        if root is None and not urls:
            raise ValueError("GeometryDataModule needs `root` (a shard folder with index.json) or "
                             "`urls` (split -> shard URLs)")
        for name, value in [("window", window), ("ref_window", ref_window), ("min_ref", min_ref),
                            ("batch_size", batch_size), ("train_batches", train_batches),
                            ("windows_per_clip", windows_per_clip), ("eval_windows_per_clip", eval_windows_per_clip)]:
            if value < 1:
                raise ValueError(f"GeometryDataModule: {name} must be >= 1, got {value}")
        if min_ref > ref_window:
            raise ValueError(f"GeometryDataModule: min_ref ({min_ref}) must be <= ref_window ({ref_window})")
        if not 0.0 <= heldout_clips < 1.0:
            raise ValueError(f"GeometryDataModule: heldout_clips must be in [0, 1), got {heldout_clips}")
        for name, value in [("audio_gain_db", audio_gain_db), ("audio_noise_snr_db", audio_noise_snr_db)]:
            if value is not None and (len(value) != 2 or value[0] > value[1]):
                raise ValueError(f"GeometryDataModule: {name} must be null or a range [low, high] in dB, got {value}")
        self.augment = AudioAugment(audio_gain_db, audio_noise_snr_db)
        self.root = None if root is None else (Path(root) if isinstance(root, (str, Path)) else [Path(r) for r in root])
        self.urls = dict(urls or {})
        self.window, self.ref_window, self.min_ref = window, ref_window, min_ref
        self.batch_size, self.train_batches = batch_size, train_batches
        self.windows_per_clip, self.eval_windows_per_clip = windows_per_clip, eval_windows_per_clip
        self.heldout_clips, self.shuffle_buffer = heldout_clips, shuffle_buffer
        self.num_workers, self.seed = num_workers, seed
        self.audio_features = audio_features
        self.max_bad_fraction = max_bad_fraction

    def shard_urls(self, split: str) -> list[str]:
        return shard_urls(self.root, self.urls, split, type(self).__name__)

    # -------------------------------------------------------------------------------------- loaders --
    def train_dataloader(self) -> DataLoader:
        urls = self.shard_urls("train")
        faults = ShardFaults(f"{type(self).__name__} (train)", len(urls), self.max_bad_fraction)
        keep = None if self.heldout_clips == 0 else (lambda clip: not self._is_heldout(clip))
        per_worker = math.ceil(self.train_batches / max(1, self.num_workers))
        dataset = (
            wds.WebDataset(urls, resampled=True, shardshuffle=False, nodesplitter=None, seed=self.seed,
                           handler=faults)
            .shuffle(self.shuffle_buffer)
            .map(decode_sample, handler=faults)
            .compose(self._windows(train=True, keep=keep))
            .shuffle(self.shuffle_buffer)
            .batched(self.batch_size, collation_fn=collate, partial=False)
            .with_epoch(per_worker)
        )
        return self._loader(dataset)

    def val_dataloader(self) -> list[DataLoader]:
        loaders = [self._eval_loader(self.shard_urls("val"))]
        if self.heldout_clips > 0:
            loaders.append(self._eval_loader(self.shard_urls("train"), keep=self._is_heldout))
        return loaders

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.shard_urls("test"))

    @property
    def val_names(self) -> list[str]:
        """Logging prefixes of the validation loaders, in order."""
        return ["val", "val_seen"] if self.heldout_clips > 0 else ["val"]

    def _eval_loader(self, urls: list[str], keep=None) -> DataLoader:
        world = self.trainer.world_size if self.trainer is not None else 1
        nodesplitter = wds.split_by_node if len(urls) >= world > 1 else None
        faults = ShardFaults(f"{type(self).__name__} (evaluation)", len(urls), self.max_bad_fraction)
        dataset = (
            wds.WebDataset(urls, shardshuffle=False, nodesplitter=nodesplitter, empty_check=False, handler=faults)
            .map(decode_sample, handler=faults)
            .compose(self._windows(train=False, keep=keep))
            .batched(self.batch_size, collation_fn=collate, partial=True)
        )
        # one worker: a fixed order, and no worker left without a shard
        return self._loader(dataset, workers=min(self.num_workers, 1))

    def _loader(self, dataset: IterableDataset, workers: int | None = None) -> DataLoader:
        workers = self.num_workers if workers is None else workers
        return DataLoader(dataset, batch_size=None, num_workers=workers, persistent_workers=workers > 0)

    def _is_heldout(self, clip: str) -> bool:
        return zlib.crc32(clip.encode()) % 10_000 < self.heldout_clips * 10_000

    # -------------------------------------------------------------------------------------- windows --
    def _windows(self, train: bool, keep=None):
        """A webdataset stage: decoded segments -> window samples (see the module docstring). ``keep``:
        clip name -> bool, segments to use. The training stream never ends by itself, so it raises when
        ``MAX_BARREN`` segments in a row give no window (all too short, or all held out)."""
        T, R, min_ref = self.window, self.ref_window, self.min_ref
        n_windows = self.windows_per_clip if train else self.eval_windows_per_clip
        seed, front_end = self.seed, self.audio_features

        def stage(segments):
            rng = random.Random(seed + worker_offset()) if train else None
            barren = 0
            for seg in segments:
                n = seg["beta"].shape[0]
                silent = seg["meta"].get("has_audio") is False  # kept for stage 2 only: no speech to learn from
                if n < T + min_ref or silent or (keep is not None and not keep(seg["meta"]["clip"])):
                    barren += 1
                    if train and barren >= MAX_BARREN:
                        raise RuntimeError(
                            f"GeometryDataModule: {barren} training segments in a row gave no window: segments "
                            f"need >= window + min_ref = {T + min_ref} frames, speech audio, and must not be held out "
                            f"(heldout_clips={self.heldout_clips}); the last was {seg['key']!r} with {n} frames")
                    continue
                barren = 0
                if front_end is not None:  # the whole segment's features, once (cached on disk by content)
                    seg["features"] = front_end.frames(seg["audio"].astype(np.float32) / 32768.0, n)
                if train:
                    starts = [rng.randrange(0, n - T + 1) for _ in range(n_windows)]
                else:
                    starts = [s for s in range(0, n - T + 1, T)][:n_windows]
                for start in starts:
                    ref = reference_span(n, start, T, R, min_ref, rng)
                    if ref is not None:
                        sample = window_sample(seg, start, T, ref)
                        if train:
                            sample["audio"] = self.augment(sample["audio"], rng)
                        yield sample

        return stage


class AudioAugment:
    """Training-only audio perturbation of a window: a random gain (dB, uniform in ``gain_db``) and white noise
    at a random signal-to-noise ratio (dB, uniform in ``noise_snr_db``); either None = off. Lip motion does not
    depend on loudness or a noise floor, so these are label-preserving; they keep a small corpus from being
    memorised by its exact waveforms (the CPU demo has a few minutes of speech)."""

    def __init__(self, gain_db=None, noise_snr_db=None) -> None:
        self.gain_db = None if gain_db is None else tuple(float(x) for x in gain_db)
        self.noise_snr_db = None if noise_snr_db is None else tuple(float(x) for x in noise_snr_db)

    def __call__(self, audio: np.ndarray, rng: random.Random) -> np.ndarray:
        if self.gain_db is None and self.noise_snr_db is None:
            return audio
        out = audio.astype(np.float32, copy=True)  # (N,) in [-1, 1]
        if self.noise_snr_db is not None:
            power = float(np.mean(out ** 2)) + 1e-12
            snr = rng.uniform(*self.noise_snr_db)
            noise = np.random.default_rng(rng.getrandbits(32)).standard_normal(len(out)).astype(np.float32)
            out += noise * np.float32(np.sqrt(power / 10 ** (snr / 10)))
        if self.gain_db is not None:
            out *= np.float32(10 ** (rng.uniform(*self.gain_db) / 20))
        return np.clip(out, -1.0, 1.0)


def reference_span(n: int, start: int, window: int, ref_window: int, min_ref: int,
                   rng: random.Random | None = None) -> tuple[int, int] | None:
    """A reference stretch [a, b) of a segment of ``n`` frames that does not overlap the target window
    [start, start + window): the longer side, at most ``ref_window`` long (a random placement inside that
    side with ``rng``, else the frames next to the target). None when that side is shorter than ``min_ref``."""
    left, right = start, n - (start + window)
    if max(left, right) < min_ref:
        return None
    if right >= left:
        lo, hi = start + window, n
    else:
        lo, hi = 0, start
    length = min(ref_window, hi - lo)
    if rng is None:
        a = lo if right >= left else hi - length  # adjacent to the target
    else:
        a = rng.randrange(lo, hi - length + 1)
    return a, a + length


def decode_sample(sample: dict) -> dict:
    """A shard sample's bytes -> arrays (only what stage 1 needs; the video stays undecoded)."""
    missing = [k for k in NEEDED if k not in sample]
    if missing:
        raise KeyError(f"shard sample {sample.get('__key__')!r} ({sample.get('__url__')}) lacks {missing}; "
                       f"was it written by the shard builder (README.md, 'Commands')?")
    out = {name[:-4]: np.load(io.BytesIO(sample[name]), allow_pickle=False) for name in NEEDED if name.endswith(".npy")}
    out["meta"] = json.loads(sample["json"])
    out["key"] = sample["__key__"]
    n = out["beta"].shape[0]
    if out["pose"].shape[0] != n or len(out["audio"]) != n * SAMPLES_PER_FRAME:
        raise ValueError(f"shard sample {out['key']!r}: beta has {n} frames, pose {out['pose'].shape[0]}, audio "
                         f"{len(out['audio'])} samples (expected {n * SAMPLES_PER_FRAME})")
    return out


def window_sample(seg: dict, start: int, window: int, ref: tuple[int, int]) -> dict:
    end = start + window
    extra = {"audio_features": seg["features"][start:end]} if "features" in seg else {}
    return {**extra,
        "audio": seg["audio"][start * SAMPLES_PER_FRAME:end * SAMPLES_PER_FRAME].astype(np.float32) / 32768.0,
        "alpha": seg["alpha"], "beta": seg["beta"][start:end], "pose": seg["pose"][start:end],
        "ref_beta": seg["beta"][ref[0]:ref[1]], "speaker": seg["meta"]["speaker"], "key": seg["key"], "start": start,
        "ref_start": ref[0],
    }


def collate(samples: list[dict]) -> dict:
    """Window samples -> a batch (module docstring); references zero-padded with a mask."""
    longest = max(len(s["ref_beta"]) for s in samples)
    k_exp = samples[0]["ref_beta"].shape[1]
    ref = np.zeros((len(samples), longest, k_exp), np.float32)  # (B, R, K_exp)
    mask = np.zeros((len(samples), longest), bool)  # (B, R)
    for i, s in enumerate(samples):
        ref[i, :len(s["ref_beta"])] = s["ref_beta"]
        mask[i, :len(s["ref_beta"])] = True

    def stack(name: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([s[name] for s in samples]).astype(np.float32))

    extra = {"audio_features": stack("audio_features")} if "audio_features" in samples[0] else {}
    return {**extra, "audio": stack("audio"), "alpha": stack("alpha"), "beta": stack("beta"), "pose": stack("pose"),
            "ref_beta": torch.from_numpy(ref), "ref_mask": torch.from_numpy(mask),
            "speaker": [s["speaker"] for s in samples], "key": [s["key"] for s in samples],
            "start": torch.tensor([s["start"] for s in samples], dtype=torch.long),
            "ref_start": torch.tensor([s["ref_start"] for s in samples], dtype=torch.long)}
