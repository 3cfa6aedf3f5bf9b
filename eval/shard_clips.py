"""Reading data_prep shards for our own evaluators (``eval.train_syncnet``, ``eval.train_style_encoder``,
``eval.style_tsne``): the shard URLs of a split, the face model they were fitted with, and decoded clips.

A shard sample (``data_prep/shards.py``): ``mp4`` 256x256 25 fps face crops, ``audio.npy`` (N,) int16 at
16 kHz aligned with frame 0, ``beta.npy`` (T, K_exp), ``json`` meta (speaker, clip, face_model name, ...).
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import av
import numpy as np
import torch
import webdataset as wds

from src.data.shards import ShardFaults, shard_urls


def split_urls(shards: str | Path, split: str, owner: str) -> list[str]:
    """Shard URLs of ``split`` from ``shards/index.json`` (written by ``python -m data_prep.build``)."""
    return shard_urls(Path(shards), {}, split, owner)


def has_split(shards: str | Path, split: str) -> bool:
    index = Path(shards) / "index.json"
    return index.is_file() and bool(json.loads(index.read_text()).get("shards", {}).get(split))


def face_model_spec(shards: str | Path) -> str:
    """The face-model spec the shards were built with (``index.json`` args; ``procedural`` by default)."""
    index = Path(shards) / "index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{shards}: no index.json; build shards with "
                                f"`python -m data_prep.build --out {shards} ...`")
    return str(json.loads(index.read_text()).get("args", {}).get("face_model", "procedural"))


def iter_samples(urls: list[str], max_bad_fraction: float = 0.5):
    """Raw samples (dicts of bytes) of the shards, in order; an unreadable shard or sample is skipped and logged
    (``src.data.shards.ShardFaults``), past ``max_bad_fraction`` of the shards it is an error naming them."""
    faults = ShardFaults("eval (shards)", len(urls), max_bad_fraction)
    yield from wds.WebDataset(urls, shardshuffle=False, empty_check=False, handler=faults)


def npy(sample: dict, name: str) -> np.ndarray:
    if name not in sample:
        raise KeyError(f"shard sample {sample.get('__key__')!r} ({sample.get('__url__')}) lacks {name}; "
                       f"was it written by data_prep.build?")
    return np.load(io.BytesIO(sample[name]), allow_pickle=False)


def meta(sample: dict) -> dict:
    if "json" not in sample:
        raise KeyError(f"shard sample {sample.get('__key__')!r} ({sample.get('__url__')}) lacks its json")
    return json.loads(sample["json"])


def video_frames(data: bytes | str | Path) -> np.ndarray:
    """An mp4 (bytes or a path) -> (T, H, W, 3) uint8 RGB frames."""
    source = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    with av.open(source) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    if not frames:
        raise ValueError(f"no video frames in {'the shard mp4' if isinstance(data, bytes) else data}")
    return np.stack(frames)


def check_face_model(fm, sample_meta: dict, spec: str) -> None:
    """The shard's coefficients must come from the face model we build vertices with."""
    name = sample_meta.get("face_model")
    if name is not None and name != fm.name:
        raise ValueError(f"shard sample {sample_meta.get('key')!r} was fitted with face model {name!r}, but "
                         f"face model spec {spec!r} is {fm.name!r}; pass the build's --face-model")


@torch.no_grad()
def expression_mm(fm, beta: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Expression-only vertices of paper 3.1 relative to the mean face, in mm:
    (T, K_exp) -> (T, L, 3) = (M(0, beta, 0) - mean) * units_to_mm."""
    beta = torch.as_tensor(np.asarray(beta, np.float32))
    return (fm.expression_vertices(beta) - fm.mean) * fm.units_to_mm
