"""Benchmark splits: the ground-truth videos to score, each with a name that generated videos are matched by.

* ``hdtf_videos(root, test_list)``: HDTF in its own layout (``<NAME>_NNN.mp4`` anywhere under root,
  e.g. ``WDA_KatieHill_000.mp4``, ``RD_Radio31_000.mp4``; read by ``data_prep.sources``) and the test list, a
  text file with one video name per line (extension optional, ``#`` comments), 30 names for the paper's
  protocol. Video name = file stem.
* ``synthetic_videos(shards, split, corpus)``: the clips of one split of shards built by ``data_prep.build``
  from a synthetic corpus (``index.json`` lists the split's tars; their sample ``.json`` name each clip),
  read as the full-frame corpus videos ``corpus/idNNNNN/VIDEOID/NNNNN.mp4``. Video name =
  ``idNNNNN__VIDEOID__NNNNN``.
* ``folder_videos(gt_dir)``: any folder of ground-truth videos (searched recursively); name = file stem.

Self-dubbing protocol: each ground-truth video is driven by its own audio, so a method's output for video
``NAME`` is ``<method dir>/NAME.<video ext>`` (``match_generated``).
"""
from __future__ import annotations

import json
import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path

from data_prep.sources import VIDEO_EXTS, list_clips

REPO_ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Video:
    name: str  # generated videos are matched by this file stem
    gt: Path  # the ground-truth video (its own audio drives the generation)
    speaker: str


def hdtf_videos(root: str | Path, test_list: str | Path | None) -> list[Video]:
    """The test videos of HDTF under ``root`` named by ``test_list`` (module docstring)."""
    if test_list is None or not Path(test_list).is_file():
        raise FileNotFoundError(f"hdtf: the test list file is needed (one video name per line, e.g. "
                                f"WDA_KatieHill_000), got {test_list} (--test-list or splits.hdtf.test_list)")
    if not Path(root).is_dir():
        raise FileNotFoundError(f"hdtf: the HDTF folder {root} does not exist (--hdtf-root or splits.hdtf.root)")
    clips = [c for c in list_clips("hdtf", root, test_list=test_list) if c.meta.get("split") == "test"]
    if not clips:
        raise ValueError(f"hdtf: the test list {test_list} names no video")
    return [Video(c.path.stem, c.path, c.speaker) for c in clips]


def synthetic_videos(shards: str | Path, split: str = "test", corpus: str | Path | None = None,
                     unreadable: list[str] | None = None) -> list[Video]:
    """The corpus videos of the clips in ``split`` of the shards (module docstring). A shard that cannot be read
    (a truncated tar) is skipped with a warning and appended to ``unreadable`` as "path: reason"; when no shard
    can be read it is an error naming them."""
    shards = Path(shards)
    index_path = shards / "index.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"synthetic: no {index_path} (build shards first: python -m data_prep.build "
                                "--source synthetic ...; `make demo` does)")
    index = json.loads(index_path.read_text())
    if split not in index.get("shards", {}):
        raise ValueError(f"synthetic: {index_path} has no split {split!r}; it has {sorted(index.get('shards', {}))}")
    corpus = Path(corpus) if corpus else _built_from(index, index_path)
    videos = {}
    tars = [shards / name for name in index["shards"][split]]
    bad = [] if unreadable is None else unreadable
    metas = _sample_metas(tars, bad)
    if not metas:
        raise ValueError(f"synthetic: no readable sample in the {split!r} shards of {index_path}: {'; '.join(bad)}")
    for meta in metas:
        _, speaker, video_id, clip = meta["clip"].split("/")
        path = corpus / speaker / video_id / f"{clip}.mp4"
        if not path.is_file():
            raise FileNotFoundError(f"synthetic: clip {meta['clip']} of {index_path} is not in the corpus: {path}")
        videos[meta["clip"]] = Video(f"{speaker}__{video_id}__{clip}", path, speaker)
    return [videos[k] for k in sorted(videos)]


def _built_from(index: dict, index_path: Path) -> Path:
    root = index.get("args", {}).get("root")
    if not root:
        raise ValueError(f"synthetic: {index_path} does not say which corpus it was built from; pass the corpus folder")
    path = Path(root)
    return path if path.is_absolute() else REPO_ROOT / path


def _sample_metas(tars: list[Path], unreadable: list[str]) -> list[dict]:
    """The ``.json`` member of every sample in the tars (source, clip, segment, ...); a tar that cannot be read
    whole is left out and appended to ``unreadable``."""
    metas = []
    for tar_path in tars:
        try:
            with tarfile.open(tar_path) as tar:
                found = [json.loads(tar.extractfile(m).read()) for m in tar.getmembers() if m.name.endswith(".json")]
        except (OSError, tarfile.TarError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as err:
            unreadable.append(f"{tar_path}: {type(err).__name__}: {err}")
            log.warning("skipped unreadable shard %s (%s: %s)", tar_path, type(err).__name__, err)
            continue
        metas.extend(found)
    return metas


def folder_videos(gt_dir: str | Path) -> list[Video]:
    """Every video under ``gt_dir``; names (file stems) must be unique."""
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"--gt {gt_dir}: not a folder of ground-truth videos")
    videos, seen = [], {}
    for path in sorted(p for p in gt_dir.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTS):
        if path.stem in seen:
            raise ValueError(f"--gt {gt_dir}: two videos share the name {path.stem!r} ({seen[path.stem]}, {path}); "
                             "generated videos are matched by file name, so names must be unique")
        seen[path.stem] = path
        videos.append(Video(path.stem, path, path.parent.name if path.parent != gt_dir else path.stem))
    if not videos:
        raise ValueError(f"--gt {gt_dir}: no video files ({', '.join(VIDEO_EXTS)})")
    return videos


def match_generated(videos: list[Video], method: str, method_dir: str | Path) -> dict[str, Path]:
    """{video name: generated video} for one method; raises listing every video without an output."""
    method_dir = Path(method_dir)
    if not method_dir.is_dir():
        raise FileNotFoundError(f"--method {method}={method_dir}: not a folder")
    found = {p.stem: p for p in sorted(method_dir.rglob("*")) if p.is_file() and p.suffix.lower() in VIDEO_EXTS}
    missing = [v.name for v in videos if v.name not in found]
    if missing:
        raise FileNotFoundError(f"--method {method}={method_dir}: no generated video for {len(missing)} of "
                                f"{len(videos)} videos: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''} "
                                "(expected <name>.mp4, the ground truth's file name)")
    return {v.name: found[v.name] for v in videos}
