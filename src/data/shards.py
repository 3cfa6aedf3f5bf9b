"""What the shard data modules share: the shard URLs of a split, per-worker random streams, and the
handler that skips unreadable shards and samples."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import webdataset as wds

log = logging.getLogger(__name__)


def shard_urls(root, urls: dict, split: str, owner: str) -> list[str]:
    """The shard URLs of ``split``: ``urls[split]`` when given (a list, or one brace pattern such as
    ``/data/train-{000000..000099}.tar``; an entry that is a shard folder stands for its own ``split`` shards),
    else the shards that ``root/index.json`` (written by the shard builder) lists; ``root`` may be a list of shard
    folders, whose shards of the split are pooled (e.g. a synthetic and a real corpus). ``owner`` names the
    caller in errors."""
    if split in urls:
        value = urls[split]
        entries = list(wds.shardlists.expand_urls(value)) if isinstance(value, str) else [str(u) for u in value]
        found = [url for entry in entries for url in (folder_shards(entry, split, owner) if Path(entry).is_dir()
                                                       else [entry])]
    else:
        if root is None:
            raise ValueError(f"{owner}: no urls for split {split!r} and no root")
        roots = [root] if isinstance(root, (str, Path)) else list(root)
        found = [url for folder in roots for url in folder_shards(folder, split, owner)]
    if not found:
        raise ValueError(f"{owner}: the {split!r} split has no shards (root={root}, urls={urls.get(split)}); "
                         f"build with a non-zero --{split} fraction or give urls")
    return found


def folder_shards(folder, split: str, owner: str) -> list[str]:
    """The shards of ``split`` that ``folder/index.json`` lists (none when it has no such split)."""
    index_path = Path(folder) / "index.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"{owner}.root={str(folder)!r}: no index.json, so not a shard folder; build "
                                f"shards there with the shard builder (README.md, 'Commands')")
    index = json.loads(index_path.read_text())
    return [str(Path(folder) / name) for name in index.get("shards", {}).get(split, [])]


def worker_offset() -> int:
    """Distinct random streams per data worker and per rank."""
    info = torch.utils.data.get_worker_info()
    worker = 0 if info is None else info.id
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    return 1000 * (torch.distributed.get_rank() if distributed else 0) + worker


class ShardFaults:
    """A WebDataset error handler for trusted loaders: an unreadable shard (a truncated tar, a missing file) or
    sample (a missing member, bad bytes) is skipped, counted and logged with its name, and the stream goes on; past
    ``max_fraction`` of the split's shards unreadable it fails, listing them. Counts are per data worker."""

    def __init__(self, owner: str, n_shards: int, max_fraction: float = 0.1) -> None:
        if not 0 <= max_fraction < 1:
            raise ValueError(f"{owner}: max_bad_fraction must be in [0, 1), got {max_fraction}")
        self.owner, self.n_shards, self.max_fraction = owner, n_shards, max_fraction
        self.bad_shards: set[str] = set()
        self.bad_samples = 0

    def __call__(self, exn: Exception) -> bool:
        url = next((a for a in reversed(getattr(exn, "args", ())) if isinstance(a, str) and ".tar" in a
                    and not any(c.isspace() for c in a)), None)  # webdataset appends the shard's URL to the args
        if url is not None and url not in self.bad_shards and not isinstance(exn, (KeyError, ValueError)):
            self.bad_shards.add(url)
            log.warning("%s: skipped unreadable shard %s (%s: %s); %d of %d shards skipped", self.owner, url,
                        type(exn).__name__, exn.args[0] if exn.args else "", len(self.bad_shards), self.n_shards)
        elif url is None or isinstance(exn, (KeyError, ValueError)):
            self.bad_samples += 1
            log.warning("%s: skipped a bad sample (%s: %s)", self.owner, type(exn).__name__,
                        exn.args[0] if exn.args else "")
        if len(self.bad_shards) > self.max_fraction * self.n_shards:
            raise RuntimeError(f"{self.owner}: {len(self.bad_shards)} of {self.n_shards} shards are unreadable, more "
                               f"than max_bad_fraction={self.max_fraction}: {sorted(self.bad_shards)}") from exn
        return True
