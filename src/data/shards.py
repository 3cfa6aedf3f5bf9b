"""What the shard data modules share: the shard URLs of a split, and per-worker random streams."""
from __future__ import annotations

import json
from pathlib import Path

import torch
import webdataset as wds


def shard_urls(root: Path | None, urls: dict, split: str, owner: str) -> list[str]:
    """The shard URLs of ``split``: ``urls[split]`` (a list, or one brace pattern such as
    ``/data/train-{000000..000099}.tar``) when given, else the shards that ``root/index.json`` (written by
    the shard builder) lists. ``owner`` names the caller in errors."""
    if split in urls:
        value = urls[split]
        found = list(wds.shardlists.expand_urls(value)) if isinstance(value, str) else [str(u) for u in value]
    else:
        if root is None:
            raise ValueError(f"{owner}: no urls for split {split!r} and no root")
        index_path = Path(root) / "index.json"
        if not index_path.is_file():
            raise FileNotFoundError(f"{owner}.root={str(root)!r}: no index.json, so not a shard folder; build "
                                    f"shards there with the shard builder (README.md, 'Commands')")
        index = json.loads(index_path.read_text())
        found = [str(Path(root) / name) for name in index.get("shards", {}).get(split, [])]
    if not found:
        raise ValueError(f"{owner}: the {split!r} split has no shards (root={root}, urls={urls.get(split)}); "
                         f"build with a non-zero --{split} fraction or give urls")
    return found


def worker_offset() -> int:
    """Distinct random streams per data worker and per rank."""
    info = torch.utils.data.get_worker_info()
    worker = 0 if info is None else info.id
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    return 1000 * (torch.distributed.get_rank() if distributed else 0) + worker
