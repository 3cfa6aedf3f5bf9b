"""WebDataset shards: per-clip work items, assembled into split shards with an index.

Each processed clip leaves a *work item* ``WORK/<clip>/`` holding its samples (one per face segment) as
the files that go into the tar, plus ``report.json`` (kept or why not, quality scores, fit errors). Work
items are written under a temporary name and renamed when complete: a killed run leaves none
half-written, and a re-run skips the clips that have one. Assembly then packs all samples, sorted by
key, into ``OUT/<split>-NNNNNN.tar`` (deterministic tar headers: the same work items always give the same
bytes) and writes ``OUT/index.json``: shards, sample / frame / speaker counts per split, the filter report.

Sample files (WebDataset groups them by key, ``<key>.<ext>``):
  mp4         the 256x256 face-crop video, H.264, 25 fps, no audio
  audio.npy   (N,) int16 mono speech at 16 kHz, N = frames / 25 * 16000
  alpha.npy   (K_id,) identity; beta.npy (T, K_exp) expression; pose.npy (T, 6) in crop pixels
  lmk.npy     (T, 478, 2) float32 detected landmarks in crop pixels
  box.npy     (T, 3) float32 crop box (cx, cy, side) in source-frame pixels (crop transform)
  json        speaker, source, clip, split, fps, n_frames, sample_rate, face model, segment range, scores
PNCC images and lip masks are not stored: they are rendered on the fly from beta, alpha and pose by the
data modules (~1,300 PNCC frames/s on one CPU thread at 256x256, against ~40 KB per frame as PNG).
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Callable

import numpy as np

REPORT = "report.json"


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def safe_key(key: str) -> str:
    """A WebDataset key: no dots (they start the extension) and no slashes (flat tar members)."""
    return key.replace("/", "__").replace(".", "_")


def write_work_item(work: Path, clip_key: str, samples: list[dict[str, bytes]], report: dict) -> Path:
    """Write one clip's samples (``{"__key__": key, ext: bytes, ...}``) and report, atomically."""
    final = work / safe_key(clip_key)
    tmp = work / f".{safe_key(clip_key)}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for sample in samples:
        key = sample["__key__"]
        for ext, data in sample.items():
            if ext != "__key__":
                (tmp / f"{key}.{ext}").write_bytes(data)
    (tmp / REPORT).write_text(json.dumps(report, indent=1, sort_keys=True))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


SETTINGS = "settings.json"


def check_settings(work: Path, settings: dict) -> None:
    """Resuming must not mix clips processed two ways: the first run writes ``WORK/settings.json``, a later run
    with other settings (a changed fit, calibration, quality threshold or face model) is refused, naming the
    keys that differ."""
    settings = json.loads(json.dumps(settings, sort_keys=True, default=str))  # tuples -> lists, as read back
    path = work / SETTINGS
    if not path.is_file():
        tmp = work / f".{SETTINGS}.tmp"
        tmp.write_text(json.dumps(settings, indent=1, sort_keys=True))
        os.replace(tmp, path)
        return
    before = json.loads(path.read_text())
    if before != settings:
        diff = sorted(_differences(before, settings))
        raise ValueError(f"{work.parent}: its finished clips were processed with other settings ({', '.join(diff[:8])}"
                         f"{', ...' if len(diff) > 8 else ''}); resuming would mix them. Use a new --out folder, "
                         f"or delete {work} to process every clip again")


def _differences(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def is_done(work: Path, clip_key: str) -> bool:
    """The clip was processed to the end: its report is there and records no error (a failed clip is tried again
    on the next run, so a fixed file gets processed)."""
    return (work / safe_key(clip_key) / REPORT).is_file() and not failed(work, clip_key)


def failed(work: Path, clip_key: str) -> bool:
    """The clip's last attempt ended in an error (its report says so)."""
    path = work / safe_key(clip_key) / REPORT
    return path.is_file() and bool(json.loads(path.read_text()).get("error"))


def read_reports(work: Path) -> list[dict]:
    return [json.loads((item / REPORT).read_text()) for item in sorted(work.iterdir())
            if item.is_dir() and not item.name.startswith(".") and (item / REPORT).is_file()]


def assemble(work: Path, out: Path, split_of: Callable[[dict], str], shard_size: int = 200,
             meta: dict | None = None) -> dict:
    """Pack every kept sample into per-split shards (``split_of(sample report) -> 'train'|'val'|'test'``)
    and write ``index.json``, with ``meta`` (e.g. the command's arguments) merged in. Returns the index."""
    reports = read_reports(work)
    by_split: dict[str, list[tuple[str, Path, dict]]] = {}
    for report in reports:
        item = work / safe_key(report["clip"])
        for sample in report.get("samples", []):
            by_split.setdefault(split_of(sample), []).append((sample["key"], item, sample))
    out.mkdir(parents=True, exist_ok=True)
    index = {"shards": {}, "splits": {}, "pncc": "rendered on the fly"}
    written = set()
    for split, samples in sorted(by_split.items()):
        samples.sort(key=lambda s: s[0])
        names = []
        for start in range(0, len(samples), shard_size):
            name = f"{split}-{start // shard_size:06d}.tar"
            _write_tar(out / name, samples[start:start + shard_size])
            names.append(name)
        written.update(names)
        index["shards"][split] = names
        index["splits"][split] = {"samples": len(samples), "frames": sum(s[2]["n_frames"] for s in samples),
                                  "speakers": len({s[2]["speaker"] for s in samples}),
                                  **_fit_summary([s[2] for s in samples])}
    for stale in out.glob("*-[0-9][0-9][0-9][0-9][0-9][0-9].tar"):
        if stale.name not in written:
            stale.unlink()
    index["report"] = summarise(reports)
    index.update(meta or {})
    tmp = out / ".index.json.tmp"
    tmp.write_text(json.dumps(index, indent=1, sort_keys=True))
    os.replace(tmp, out / "index.json")
    return index


def _write_tar(path: Path, samples: list[tuple[str, Path, dict]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for key, item, _ in samples:
            for member in sorted(item.glob(f"{key}.*")):
                info = tarfile.TarInfo(member.name)
                info.size, info.mtime, info.mode = member.stat().st_size, 0, 0o644
                with open(member, "rb") as fh:
                    tar.addfile(info, fh)
    os.replace(tmp, path)


def _fit_summary(samples: list[dict]) -> dict:
    """Frame-weighted means of the fit's reprojection error and, for synthetic clips, its ground-truth error."""
    out = {}
    for key in ("reprojection_px", "gt_exp_error_mm", "gt_lower_error_mm", "gt_exp_error_pct_eye"):
        rows = [(s[key], s["n_frames"]) for s in samples if key in s]
        if rows:
            values, weights = np.array(rows).T
            out[key] = round(float(np.average(values, weights=weights)), 4)
    return out


def summarise(reports: list[dict]) -> dict:
    """Counts of clips kept and removed, per removal reason (a clip can have several), and segments."""
    from data_prep.quality import criterion

    removed: dict[str, int] = {}
    for report in reports:
        for reason in report.get("removed", []):
            name = criterion(reason)
            removed[name] = removed.get(name, 0) + 1
    kept = [r for r in reports if r.get("samples")]
    return {"clips": len(reports), "clips_with_samples": len(kept),
            "segments_kept": sum(len(r["samples"]) for r in reports),
            "segments_removed": sum(r.get("segments_removed", 0) for r in reports),
            "removed_by_reason": dict(sorted(removed.items())),
            "failed": {r["clip"]: r["error"] for r in reports if r.get("error")}}
