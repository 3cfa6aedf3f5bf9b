"""The paper's user study (Table 3): mean opinion scores for lip-sync accuracy, visual quality and persona
preservation, blind, served as a web page; and its report.

    python -m eval.mos --methods ours=DIR other=DIR ... --out STUDY_DIR [--port 7870] [--host 127.0.0.1]
    python -m eval.mos report STUDY_DIR

The clips are the video names (file stems) present in every method's folder. A rater enters a name and sees one
clip at a time, every method's video of it side by side in an order drawn per rater and clip, labelled A, B, ...:
the page never shows a method's name, and the files it serves are copies under opaque names
(``STUDY_DIR/media/``). Each video is rated 1-5 on the three criteria; a clip's ratings are stored in SQLite
(``STUDY_DIR/ratings.sqlite``) the moment they are submitted, so a rater who closes the tab loses nothing
already rated, and entering the same name again continues at their first clip not yet rated.

``report`` prints Table 3: per method and criterion the mean and its 95% confidence interval (normal
approximation, 1.96 standard errors), with the number of raters and ratings; ``--json FILE`` also writes it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import sqlite3
import sys
import time
from pathlib import Path

CRITERIA = ("lip_sync", "visual_quality", "persona")
LABELS = {"lip_sync": "Lip-sync accuracy", "visual_quality": "Visual quality", "persona": "Persona preservation"}
VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".webm", ".avi")
SCHEMA = """CREATE TABLE IF NOT EXISTS ratings (
    rater TEXT NOT NULL, clip TEXT NOT NULL, method TEXT NOT NULL, criterion TEXT NOT NULL,
    score INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5), at REAL NOT NULL,
    PRIMARY KEY (rater, clip, method, criterion))"""


# ------------------------------------------------------------------------------------------- study --
class Study:
    """A study folder: ``study.json`` (methods, clips, the opaque media names) and ``ratings.sqlite``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        meta = self.folder / "study.json"
        if not meta.is_file():
            raise FileNotFoundError(f"{self.folder}: no study.json; create the study with "
                                    "`python -m eval.mos --methods NAME=DIR ... --out STUDY_DIR`")
        info = json.loads(meta.read_text())
        self.methods: list[str] = info["methods"]
        self.clips: list[str] = info["clips"]
        self.media: dict[str, dict[str, str]] = info["media"]  # clip -> method -> file under media/
        self.db = self.folder / "ratings.sqlite"
        with self.connect() as db:
            db.execute(SCHEMA)

    @staticmethod
    def create(methods: dict[str, Path], folder: str | Path) -> "Study":
        """Copy each method's videos of the shared clips under opaque names and write ``study.json``."""
        folder = Path(folder)
        found = {}
        for name, directory in methods.items():
            if not Path(directory).is_dir():
                raise FileNotFoundError(f"--methods {name}={directory}: not a folder of videos")
            found[name] = {p.stem: p for p in sorted(Path(directory).iterdir()) if p.suffix.lower() in VIDEO_EXTS}
            if not found[name]:
                raise ValueError(f"--methods {name}={directory}: no video files ({', '.join(VIDEO_EXTS)})")
        clips = sorted(set.intersection(*(set(v) for v in found.values())))
        if not clips:
            raise ValueError(f"--methods: no clip name is in every method's folder ({', '.join(methods)})")
        (folder / "media").mkdir(parents=True, exist_ok=True)
        media = {}
        for clip in clips:
            media[clip] = {}
            for name in methods:
                src = found[name][clip]
                opaque = hashlib.sha1(f"{name}/{clip}".encode()).hexdigest()[:16] + src.suffix.lower()
                if not (folder / "media" / opaque).is_file():
                    shutil.copyfile(src, folder / "media" / f".{opaque}.tmp")
                    os.replace(folder / "media" / f".{opaque}.tmp", folder / "media" / opaque)
                media[clip][name] = opaque
        meta = folder / "study.json"
        if meta.is_file():
            before = json.loads(meta.read_text())
            if before["methods"] != list(methods) or before["clips"] != clips:
                raise ValueError(f"--out {folder}: holds a study of other methods or clips ({before['methods']}); "
                                 "use a new folder")
        tmp = folder / ".study.json.tmp"
        tmp.write_text(json.dumps({"methods": list(methods), "clips": clips, "media": media,
                                   "dirs": {k: str(v) for k, v in methods.items()}}, indent=1))
        os.replace(tmp, meta)
        return Study(folder)

    def connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.db, timeout=30)

    def order(self, rater: str, clip: str) -> list[str]:
        """The methods of ``clip`` in the order ``rater`` sees them (fixed per rater and clip)."""
        methods = list(self.methods)
        random.Random(hashlib.sha256(f"{rater}\0{clip}".encode()).digest()).shuffle(methods)
        return methods

    def next_clip(self, rater: str) -> int | None:
        """Index of the rater's first clip without every rating, None when done."""
        with self.connect() as db:
            done = dict(db.execute("SELECT clip, COUNT(*) FROM ratings WHERE rater = ? GROUP BY clip", (rater,)))
        full = len(self.methods) * len(CRITERIA)
        return next((i for i, clip in enumerate(self.clips) if done.get(clip, 0) < full), None)

    def rate(self, rater: str, clip: str, scores: dict[str, dict[str, int]]) -> None:
        """Store {method: {criterion: 1..5}} for one clip, in one transaction."""
        rows = [(rater, clip, method, criterion, int(score), time.time())
                for method, by_criterion in scores.items() for criterion, score in by_criterion.items()]
        for _, _, method, criterion, score, _ in rows:
            if method not in self.methods or criterion not in CRITERIA or not 1 <= score <= 5:
                raise ValueError(f"a rating must be 1-5 for a method and criterion of the study, got "
                                 f"{method}/{criterion}={score}")
        with self.connect() as db:
            db.executemany("INSERT OR REPLACE INTO ratings VALUES (?, ?, ?, ?, ?, ?)", rows)

    def table(self) -> dict:
        """Table 3: {method: {criterion: {mean, ci95, n}}}, raters, ratings."""
        with self.connect() as db:
            rows = db.execute("SELECT method, criterion, score FROM ratings").fetchall()
            raters = db.execute("SELECT COUNT(DISTINCT rater) FROM ratings").fetchone()[0]
        table = {}
        for method in self.methods:
            table[method] = {}
            for criterion in CRITERIA:
                scores = [s for m, c, s in rows if m == method and c == criterion]
                n = len(scores)
                mean = sum(scores) / n if n else float("nan")
                sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1)) if n > 1 else float("nan")
                table[method][criterion] = {"mean": mean, "ci95": 1.96 * sd / math.sqrt(n) if n > 1 else float("nan"),
                                            "n": n}
        return {"table": table, "raters": raters, "ratings": len(rows), "clips": len(self.clips)}


def report_markdown(result: dict) -> str:
    lines = [f"# User study (Table 3): {result['raters']} raters, {result['ratings']} ratings, {result['clips']} clips",
             "", "Mean opinion score (1-5) with its 95% confidence interval.", "",
             "| method | " + " | ".join(LABELS[c] for c in CRITERIA) + " | ratings |",
             "|---" * (len(CRITERIA) + 2) + "|"]
    for method, row in result["table"].items():
        cells = [f"{row[c]['mean']:.2f} ± {row[c]['ci95']:.2f}" if row[c]["n"] > 1 else
                 (f"{row[c]['mean']:.2f}" if row[c]["n"] else "-") for c in CRITERIA]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {sum(row[c]['n'] for c in CRITERIA)} |")
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------- page --
def build_page(study: Study):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    slots = len(study.methods)
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])

    def show(rater: str, index: int | None):
        """Page updates for clip ``index`` (None: finished)."""
        hidden = [gr.update(visible=False)] * slots
        if index is None:
            return (gr.update(value=f"**Thank you, {rater}: all {len(study.clips)} clips are rated.**"), None,
                    *hidden, *([gr.update(value=None, visible=False)] * slots * len(CRITERIA)),
                    gr.update(visible=False))
        clip = study.clips[index]
        order = study.order(rater, clip)
        videos = [gr.update(value=str(study.folder / "media" / study.media[clip][m]), visible=True,
                            label=f"Video {chr(65 + i)}") for i, m in enumerate(order)]
        radios = [gr.update(value=None, visible=True) for _ in range(slots * len(CRITERIA))]
        status = (f"**{rater}**: clip {index + 1} of {len(study.clips)}. Watch every video, then rate each "
                  "from 1 (bad) to 5 (excellent) on the three criteria.")
        return gr.update(value=status), index, *videos, *radios, gr.update(visible=True)

    def start(rater: str):
        rater = (rater or "").strip()
        if not rater:
            raise gr.Error("Enter your name or rater ID first")
        return (rater, *show(rater, study.next_clip(rater)))

    def submit(rater: str, index: int | None, *scores):
        if not rater or index is None:
            raise gr.Error("Enter your name or rater ID and press Start")
        if any(s is None for s in scores):
            raise gr.Error("Rate every video on all three criteria before going on")
        clip = study.clips[index]
        order = study.order(rater, clip)
        values = iter(int(s) for s in scores)
        study.rate(rater, clip, {m: {c: next(values) for c in CRITERIA} for m in order})
        return (rater, *show(rater, study.next_clip(rater)))

    with gr.Blocks(title="Lip-sync user study", theme=theme, analytics_enabled=False) as page:
        gr.Markdown("# Lip-sync user study\nYou will see several versions of the same talking-head clip, in random "
                    "order, without their names. Rate each for how well the lips follow the speech (lip-sync "
                    "accuracy), how good the video looks (visual quality) and how much it looks like the same "
                    "person speaking in their own way (persona preservation). Your ratings are saved as you go: "
                    "enter the same name to continue later.")
        rater_state, index_state = gr.State(""), gr.State(None)
        with gr.Row():
            rater_box = gr.Textbox(label="Your name or rater ID", elem_id="rater")
            start_button = gr.Button("Start / continue", elem_id="start")
        status = gr.Markdown(elem_id="status")
        videos, radios = [], []
        with gr.Row():
            for i in range(slots):
                with gr.Column():
                    videos.append(gr.Video(label=f"Video {chr(65 + i)}", interactive=False, visible=False,
                                           elem_id=f"video_{i}"))
                    for criterion in CRITERIA:
                        radios.append(gr.Radio([1, 2, 3, 4, 5], label=LABELS[criterion], visible=False,
                                               elem_id=f"rate_{i}_{criterion}"))
        submit_button = gr.Button("Submit and next clip", variant="primary", visible=False, elem_id="submit")
        outputs = [rater_state, status, index_state, *videos, *radios, submit_button]
        start_button.click(start, rater_box, outputs)
        rater_box.submit(start, rater_box, outputs)
        submit_button.click(submit, [rater_state, index_state, *radios], outputs)
    return page.queue()


# ----------------------------------------------------------------------------------------------- cli --
def parse_method(spec: str) -> tuple[str, Path]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise ValueError(f"--methods {spec!r}: expected NAME=DIR")
    return name, Path(path)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["report"]:
        p = argparse.ArgumentParser(prog="python -m eval.mos report", description="print Table 3 of a study")
        p.add_argument("study", type=Path)
        p.add_argument("--json", type=Path, help="also write the table as JSON")
        args = p.parse_args(argv[1:])
        try:
            result = Study(args.study).table()
        except FileNotFoundError as err:
            p.exit(2, f"python -m eval.mos report: error: {err}\n")
        print(report_markdown(result), end="")
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
        return 0
    p = argparse.ArgumentParser(prog="python -m eval.mos", description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", required=True, metavar="NAME=DIR", help="each method's folder of videos")
    p.add_argument("--out", required=True, type=Path, help="the study folder (media copies, ratings.sqlite)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7870)
    args = p.parse_args(argv)
    try:
        methods = dict(parse_method(spec) for spec in args.methods)
        if len(methods) != len(args.methods):
            raise ValueError("--methods: two methods share a name")
        study = Study.create(methods, args.out)
    except (ValueError, FileNotFoundError) as err:
        p.exit(2, f"python -m eval.mos: error: {err}\n")
    print(f"user study of {', '.join(study.methods)} on {len(study.clips)} clips: http://{args.host}:{args.port}; "
          f"report: python -m eval.mos report {args.out}", flush=True)
    build_page(study).launch(server_name=args.host, server_port=args.port, share=False, inbrowser=False,
                             allowed_paths=[str(study.folder / "media")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
