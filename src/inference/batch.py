"""Batch dubbing from a CSV file: one dub per row, the checkpoints loaded once.

The CSV has a header with the columns ``video``, ``audio``, ``out`` and optionally ``face`` (default 0);
relative paths are relative to the CSV's folder. Every row is checked (files exist, outputs are .mp4,
faces are integers) before the first dub starts, so a typo on row 40 fails at once, not after an hour.
A row that fails while dubbing is reported and the others go on.
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from src.inference.pipeline import Dubber, DubConfig, DubResult, check_paths

REQUIRED = ("video", "audio", "out")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Row:
    line: int
    video: Path
    audio: Path
    out: Path
    face: int


def read_rows(path: str | Path) -> list[Row]:
    """The CSV's rows, checked; a ValueError lists every bad row."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--batch {path}: no such CSV file")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"--batch {path}: the header must name the columns video,audio,out (and optionally "
                             f"face); missing {missing}, found {reader.fieldnames}")
        rows, errors = [], []
        for line, record in enumerate(reader, start=2):
            try:
                rows.append(_row(line, record, path.parent))
            except (ValueError, FileNotFoundError) as err:
                errors.append(f"  line {line}: {err}")
    if errors:
        raise ValueError(f"--batch {path}: {len(errors)} bad row(s):\n" + "\n".join(errors))
    if not rows:
        raise ValueError(f"--batch {path}: no rows below the header")
    outs = [r.out.resolve() for r in rows]
    if len(set(outs)) != len(outs):
        raise ValueError(f"--batch {path}: two rows write the same output file")
    return rows


def _row(line: int, record: dict, root: Path) -> Row:
    values = {k: (record.get(k) or "").strip() for k in (*REQUIRED, "face")}
    empty = [k for k in REQUIRED if not values[k]]
    if empty:
        raise ValueError(f"empty {', '.join(empty)}")
    video, audio, out = (root / values[k] for k in REQUIRED)
    face = values["face"] or "0"
    if not face.isdigit():
        raise ValueError(f"face must be a non-negative integer (0 = the largest), got {face!r}")
    return Row(line, *check_paths(video, audio, out), int(face))


def dub_batch(rows: list[Row], dubber: Dubber, cfg: DubConfig) -> tuple[list[DubResult], list[tuple[Row, str]]]:
    """Dub every row; -> (results, failures as (row, error message))."""
    results, failures = [], []
    for i, row in enumerate(rows):
        log.info("batch %d/%d (line %d): %s + %s -> %s", i + 1, len(rows), row.line, row.video, row.audio, row.out)
        try:
            results.append(dubber.dub(row.video, row.audio, row.out, replace(cfg, face=row.face)))
        except Exception as err:  # one bad input must not stop the batch; reported below and in the exit code
            log.error("batch line %d failed: %s: %s", row.line, type(err).__name__, err)
            failures.append((row, f"{type(err).__name__}: {err}"))
    return results, failures
