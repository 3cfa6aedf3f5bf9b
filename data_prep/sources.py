"""Source step: list the clips of a dataset in its own layout, each with a speaker identity.

Output: ``list_clips(source, root) -> list[ClipSource]`` sorted by key, where ``key`` is unique and
filename-safe (``<source>/...``, letters, digits and ``_ - +`` between slashes, no dots, so it can serve
as a WebDataset key), ``speaker`` is what speaker-disjoint splits are made on, and ``meta`` holds the
dataset's extras as JSON-ready values (paths as strings). ``meta["split"] == "test"`` marks a dataset's
own fixed test clips (VoxCeleb2 test, the HDTF test list); other clips carry no split and are assigned
by ``speaker_split``. Nothing is decoded here: this step only reads names and annotation files.

Layouts (``root`` is the folder passed as ``--root``):

* voxceleb2 ``root/[dev|test/][mp4/]idNNNNN/VIDEOID/NNNNN.mp4``; speaker = idNNNNN. Only mp4 is read
  (the .m4a audio-only release is not a video source).
* celebvhq ``root/**/*.mp4`` plus ``celebvhq_info.json`` somewhere under root. CelebV-HQ has no
  identity labels, so speaker = the clip's YouTube id (``ytb_id``): clips cut from one video share a
  speaker, but one person in two videos counts as two speakers (a split can leak a face across
  videos). Clips missing from the JSON use their id without the trailing ``_N``, with one warning.
* vfhq ``root/**/Clip+<videoid>+P<person>+C<clip>+F<start>-F<end>.mp4`` plus the annotation
  ``.txt`` of the same name anywhere under root; speaker = ``<videoid>+P<person>``. Folders of PNG
  frames raise NotImplementedError. Clips without an annotation use what their name says.
* hdtf ``root/**/<NAME>_NNN.<video ext>`` (WDA_KatieHill_000.mp4); speaker = NAME. ``test_list``
  (one video name per line, extension optional) sets ``meta["split"] = "test"``.
* folder: every video (mp4, mov, mkv, avi, webm, m4v, mpg, mpeg) under root; speaker = its folder relative to
  root (the file stem for files directly in root). Characters outside ``[A-Za-z0-9_+-]`` become ``_``
  in keys. With ``labels`` (a .tsv or .csv with a header naming ``file`` and ``person``, optionally ``split``
  and ``hard``; ``real/MANIFEST.tsv`` of the shared test material is one) the person column is the speaker,
  a ``split`` of train / val / test fixes the clip's split (so people stay disjoint across splits), and a
  non-empty ``hard`` is kept in the clip's meta; ``file`` is the path relative to root (or the bare file
  name), and every video under root must be listed.
* synthetic: ``python -m data_prep.synthetic`` output, the VoxCeleb2 layout with a sidecar
  ``NNNNN.json`` next to each mp4; speaker = idNNNNN, ``meta["sidecar"]`` = its path.
"""
from __future__ import annotations

import hashlib
import json
import re
import warnings
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg")
SOURCES = ("voxceleb2", "celebvhq", "vfhq", "hdtf", "folder", "synthetic")
_SAFE = re.compile(r"[A-Za-z0-9_+\-]+")
_VOX_PREFIXES = {(), ("dev",), ("test",), ("mp4",), ("dev", "mp4"), ("test", "mp4")}
_VFHQ_NAME = re.compile(r"Clip\+(?P<video>.+)\+P(?P<person>\d+)\+C(?P<clip>\d+)\+F(?P<start>\d+)-F(?P<end>\d+)")
_HDTF_NAME = re.compile(r"(?P<speaker>.+)_(?P<index>\d+)")


@dataclass(frozen=True)
class ClipSource:
    key: str
    path: Path
    speaker: str
    source: str
    meta: dict = field(default_factory=dict, hash=False)


def list_clips(source: str, root: str | Path, test_list: str | Path | None = None,
               labels: str | Path | None = None) -> list[ClipSource]:
    """The clips of dataset ``source`` (one of SOURCES) under ``root``, sorted by key; ``labels``: the person
    (and split) of each video of a ``folder`` source (module docstring)."""
    readers = {"voxceleb2": _voxceleb2, "celebvhq": _celebvhq, "vfhq": _vfhq, "hdtf": _hdtf,
               "folder": _folder, "synthetic": _synthetic}
    if source not in readers:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}; got {source!r}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"root for source {source!r} is not a folder: {root}")
    if test_list is not None and source != "hdtf":
        raise ValueError(f"test_list is only read for source 'hdtf', got it for {source!r}")
    if labels is not None and source != "folder":
        raise ValueError(f"labels are only read for source 'folder', got them for {source!r}")
    if source == "hdtf":
        clips = readers[source](root, test_list)
    elif source == "folder":
        clips = _folder(root, labels)
    else:
        clips = readers[source](root)
    return _checked(clips, source)


def speaker_split(speakers: list[str], val: float, test: float, seed: int) -> dict[str, str]:
    """{speaker: "train" | "val" | "test"}. Each speaker gets u = hash(seed, speaker) in [0, 1): test
    when u < test, val when u < test + val, else train, so a speaker keeps its split when others are
    added. With >= 3 speakers every split gets at least one: an empty split takes, from a split with
    two or more, the speaker whose u is nearest its band (this top-up can move when speakers are
    added to a tiny set; it stops mattering once each band fills on its own)."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"val and test must be fractions in [0, 1) with val + test < 1, got {val}, {test}")
    bands = {"test": (0.0, test), "val": (test, test + val), "train": (test + val, 1.0)}
    u = {s: _unit_hash(seed, s) for s in sorted(set(speakers))}
    split = {s: "test" if x < test else "val" if x < test + val else "train" for s, x in u.items()}
    if len(u) >= 3:
        for name in ("test", "val", "train"):
            if name not in split.values():
                _top_up(split, u, name, bands[name])
    return split


def _unit_hash(seed: int, speaker: str) -> float:
    digest = hashlib.sha256(f"{seed}\0{speaker}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _top_up(split: dict[str, str], u: dict[str, float], name: str, band: tuple[float, float]) -> None:
    counts = {n: list(split.values()).count(n) for n in ("train", "val", "test")}
    donors = [s for s in split if counts[split[s]] >= 2]

    def distance(s: str) -> tuple[float, str]:
        return max(band[0] - u[s], u[s] - band[1], 0.0), s

    split[min(donors, key=distance)] = name


def _checked(clips: list[ClipSource], source: str) -> list[ClipSource]:
    """Sorted by key; keys unique and safe (letters, digits, ``_ - +`` between slashes)."""
    seen: dict[str, Path] = {}
    for clip in clips:
        if not all(_SAFE.fullmatch(part) for part in clip.key.split("/")):
            raise ValueError(f"{source}: clip key {clip.key!r} (from {clip.path}) is not filename-safe")
        if clip.key in seen:
            raise ValueError(f"{source}: two clips share the key {clip.key!r}: {seen[clip.key]} and {clip.path}")
        seen[clip.key] = clip.path
    return sorted(clips, key=lambda c: c.key)


def _no_clips(source: str, root: Path, expected: str) -> ValueError:
    found = [str(p.relative_to(root)) for p in islice((p for p in root.rglob("*") if p.is_file()), 6)]
    shown = ", ".join(found[:5]) + (" ..." if len(found) > 5 else "") or "no files"
    return ValueError(f"{source}: no clips under {root}; expected {expected}; found {shown}")


def _warn_skipped(source: str, what: str, paths: list[Path]) -> None:
    if paths:
        warnings.warn(f"{source}: {len(paths)} {what}, e.g. {paths[0]}", stacklevel=3)


# --------------------------------------------------------------------------------------------- layouts

def _vox_like(root: Path, source: str) -> list[tuple[Path, tuple[str, ...], str, str, str]]:
    """(path, prefix folders, speaker, video id, clip number) for each ``idNNNNN/VIDEOID/NNNNN.mp4``."""
    found, stray = [], []
    for path in sorted(root.rglob("*.mp4")):
        parts = path.relative_to(root).parts
        prefix, tail = parts[:-3], parts[-3:]
        if (len(parts) >= 3 and prefix in _VOX_PREFIXES and re.fullmatch(r"id\d+", tail[0])
                and re.fullmatch(r"\d+\.mp4", tail[2])):
            found.append((path, prefix, tail[0], tail[1], path.stem))
        else:
            stray.append(path)
    if not found:
        raise _no_clips(source, root, "[dev|test/][mp4/]idNNNNN/VIDEOID/NNNNN.mp4")
    _warn_skipped(source, "mp4 files outside the idNNNNN/VIDEOID/NNNNN.mp4 layout skipped", stray)
    return found


def _voxceleb2(root: Path) -> list[ClipSource]:
    clips = []
    for path, prefix, speaker, video, clip in _vox_like(root, "voxceleb2"):
        meta = {"video_id": video} | ({"split": "test"} if "test" in prefix else {})
        clips.append(ClipSource(f"voxceleb2/{speaker}/{video}/{clip}", path, speaker, "voxceleb2", meta))
    return clips


def _synthetic(root: Path) -> list[ClipSource]:
    clips = []
    for path, _, speaker, video, clip in _vox_like(root, "synthetic"):
        sidecar = path.with_suffix(".json")
        if not sidecar.is_file():
            raise FileNotFoundError(f"synthetic: {path} has no sidecar {sidecar.name} (an interrupted "
                                    "`python -m data_prep.synthetic` run: run it again to finish)")
        meta = {"video_id": video, "sidecar": str(sidecar)}
        clips.append(ClipSource(f"synthetic/{speaker}/{video}/{clip}", path, speaker, "synthetic", meta))
    return clips


def _celebvhq(root: Path) -> list[ClipSource]:
    info = _celebvhq_info(root)
    videos = sorted(root.rglob("*.mp4"))
    if not videos:
        raise _no_clips("celebvhq", root, "*.mp4 clips named <ytb_id>_<N>.mp4 and celebvhq_info.json")
    clips, unlisted = [], []
    for path in videos:
        entry = info.get(path.stem)
        if entry is None:
            unlisted.append(path)
            speaker, meta = path.stem.rsplit("_", 1)[0], {}
        else:
            if "ytb_id" not in entry:
                raise ValueError(f"celebvhq: the info JSON entry of {path.stem} has no 'ytb_id'")
            speaker = entry["ytb_id"]
            meta = {k: entry[k] for k in ("ytb_id", "duration", "bbox", "attributes", "version") if k in entry}
        clips.append(ClipSource(f"celebvhq/{path.stem}", path, speaker, "celebvhq", meta))
    _warn_skipped("celebvhq", "clips missing from celebvhq_info.json (speaker = id without _N)", unlisted)
    return clips


def _celebvhq_info(root: Path) -> dict:
    found = sorted(root.rglob("celebvhq_info.json"))
    if len(found) != 1:
        raise ValueError(f"celebvhq: expected exactly one celebvhq_info.json under {root}, found "
                         f"{[str(p) for p in found] or 'none'}")
    clips = json.loads(found[0].read_text()).get("clips")
    if not isinstance(clips, dict):
        raise ValueError(f"celebvhq: {found[0]} has no 'clips' object ({{clip_id: {{ytb_id, ...}}}})")
    return clips


def _vfhq(root: Path) -> list[ClipSource]:
    notes = {p.stem: p for p in root.rglob("Clip+*.txt")}
    videos = sorted(root.rglob("Clip+*.mp4"))
    folders = sorted(p for p in root.rglob("Clip+*") if p.is_dir())
    if folders:
        raise NotImplementedError(f"vfhq: clips as folders of PNG frames are not supported ({folders[0]}"
                                  f" and {len(folders) - 1} more); encode them as <clip name>.mp4 first")
    if not videos:
        raise _no_clips("vfhq", root, "Clip+<videoid>+P<person>+C<clip>+F<start>-F<end>.mp4 with its .txt")
    clips, bare = [], []
    for path in videos:
        meta = _vfhq_name(path)
        if path.stem in notes:
            meta |= _vfhq_header(notes[path.stem]) | {"annotation": str(notes[path.stem])}
        else:
            bare.append(path)
        speaker = f"{meta['video_id']}+P{meta['person']}"
        clips.append(ClipSource(f"vfhq/{path.stem}", path, speaker, "vfhq", meta))
    _warn_skipped("vfhq", "clips without an annotation .txt (meta from the name only)", bare)
    stems = {p.stem for p in videos}
    _warn_skipped("vfhq", "annotations without a clip (not downloaded?)",
                  sorted(p for stem, p in notes.items() if stem not in stems))
    return clips


def _vfhq_name(path: Path) -> dict:
    m = _VFHQ_NAME.fullmatch(path.stem)
    if m is None:
        raise ValueError(f"vfhq: {path.name} is not named Clip+<videoid>+P<person>+C<clip>+F<start>-F<end>")
    return {"video_id": m["video"], "person": int(m["person"]), "clip": int(m["clip"]),
            "frame_start": int(m["start"]), "frame_end": int(m["end"])}


def _vfhq_header(path: Path) -> dict:
    """From a VFHQ annotation: ``Video:``, ``H:``, ``W:``, ``FPS:``, ``CROP_BBOX:`` (x0 y0 x1 y1 of the
    clip's crop) and the count and range of per-frame lines ``<frame> <id> x0 y0 w h [5 landmarks]``."""
    header, frames = {}, []
    for line in path.read_text().splitlines():
        key, sep, value = line.partition(":")
        key = "Video" if key.strip() == "Video ID" else key.strip()  # both spellings exist
        if sep and key in ("Video", "H", "W", "FPS", "CROP_BBOX"):
            header[key] = value.split()
        elif line[:1].isdigit():
            frames.append(int(line.split()[0]))
    meta = {"fps": float(header["FPS"][0])} if "FPS" in header else {}
    meta |= {"height": int(header["H"][0])} if "H" in header else {}
    meta |= {"width": int(header["W"][0])} if "W" in header else {}
    meta |= {"crop_bbox": [int(float(v)) for v in header["CROP_BBOX"][-4:]]} if "CROP_BBOX" in header else {}
    if frames:
        meta |= {"annotated_frames": len(frames), "annotated_range": [min(frames), max(frames)]}
    if "Video" in header and header["Video"][:1] != [_vfhq_name(path)["video_id"]]:
        raise ValueError(f"vfhq: {path} says Video: {' '.join(header['Video'])}, its name says otherwise")
    return meta


def _hdtf(root: Path, test_list: str | Path | None) -> list[ClipSource]:
    videos = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTS and p.is_file())
    named = [p for p in videos if _HDTF_NAME.fullmatch(p.stem)]
    unnamed = [p for p in videos if not _HDTF_NAME.fullmatch(p.stem)]
    if not named:
        raise _no_clips("hdtf", root, "videos named <NAME>_NNN.mp4 (WDA_KatieHill_000.mp4)")
    _warn_skipped("hdtf", "videos not named <NAME>_NNN skipped", unnamed)
    tests = _hdtf_test_names(test_list, {p.stem for p in named})
    return [ClipSource(f"hdtf/{p.stem}", p, _HDTF_NAME.fullmatch(p.stem)["speaker"], "hdtf",
                       {"split": "test"} if p.stem in tests else {}) for p in named]


def _hdtf_test_names(test_list: str | Path | None, names: set[str]) -> set[str]:
    if test_list is None:
        return set()
    lines = [ln.strip() for ln in Path(test_list).read_text().splitlines()]
    listed = {ln[: -len(Path(ln).suffix)] if Path(ln).suffix.lower() in VIDEO_EXTS else ln
              for ln in lines if ln and not ln.startswith("#")}
    missing = sorted(listed - names)
    if missing:
        raise ValueError(f"hdtf: {len(missing)} videos of the test list {test_list} are not under the "
                         f"root: {', '.join(missing[:5])}")
    return listed


def _folder(root: Path, labels: str | Path | None = None) -> list[ClipSource]:
    videos = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTS and p.is_file())
    if not videos:
        raise _no_clips("folder", root, f"video files ({', '.join(VIDEO_EXTS)}) anywhere under root")
    rows = None if labels is None else read_labels(labels, root, videos)
    clips = []
    for path in videos:
        rel = path.relative_to(root)
        speaker = rel.parent.as_posix() if rel.parent != Path(".") else path.stem
        meta = {}
        if rows is not None:
            row = rows[path]
            speaker = row["person"]
            meta = {k: row[k] for k in ("split", "hard") if row.get(k)}
        key = "/".join(re.sub(r"[^A-Za-z0-9_+\-]", "_", part) for part in rel.with_suffix("").parts)
        clips.append(ClipSource(f"folder/{key}", path, speaker, "folder", meta))
    return clips


LABEL_SPLITS = ("train", "val", "test")


def read_labels(labels: str | Path, root: Path, videos: list[Path]) -> dict[Path, dict[str, str]]:
    """{video: its row} from a labels table (``file``, ``person``, optional ``split`` and ``hard``), checked: every
    video listed once, every listed file present, splits one of train / val / test."""
    import csv

    labels = Path(labels)
    if not labels.is_file():
        raise FileNotFoundError(f"--labels {labels}: no such file")
    with open(labels, newline="") as f:
        reader = csv.DictReader(f, delimiter="\t" if labels.suffix.lower() == ".tsv" else ",")
        missing = {"file", "person"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"--labels {labels}: the header must name the columns file and person (and optionally "
                             f"split, hard); missing {sorted(missing)}, found {reader.fieldnames}")
        table = list(reader)
    by_name = {p.relative_to(root).as_posix(): p for p in videos} | {p.name: p for p in videos}
    rows, errors = {}, []
    for line, row in enumerate(table, start=2):
        name, person = (row.get("file") or "").strip(), (row.get("person") or "").strip()
        split = (row.get("split") or "").strip()
        path = by_name.get(name)
        if path is None:
            errors.append(f"line {line}: {name!r} is not a video under {root}")
        elif not person:
            errors.append(f"line {line}: {name!r} has no person")
        elif split and split not in LABEL_SPLITS:
            errors.append(f"line {line}: split must be one of {LABEL_SPLITS} or empty, got {split!r}")
        elif path in rows:
            errors.append(f"line {line}: {name!r} is listed twice")
        else:
            rows[path] = {"person": person, "split": split, "hard": (row.get("hard") or "").strip()}
    unlisted = [p.relative_to(root).as_posix() for p in videos if p not in rows]
    if unlisted:
        errors.append(f"{len(unlisted)} video(s) under {root} not in the labels, e.g. {unlisted[:3]}")
    if errors:
        raise ValueError(f"--labels {labels}: " + "; ".join(errors[:10]))
    splits = {}
    for row in rows.values():
        splits.setdefault(row["person"], set()).add(row["split"] or None)
    mixed = sorted(person for person, s in splits.items() if len(s) > 1)
    if mixed:
        raise ValueError(f"--labels {labels}: a person must stay in one split; {mixed[:5]} are in several")
    return rows
