"""The dubbing web app: drag a reference video and a target audio into a page, pick the face, get the dub.

    python -m src.app [--geometry-ckpt G.ckpt --render-ckpt R.ckpt] [--port 7860] [--host 127.0.0.1]
        [--out-dir outputs/app] [--device cpu|cuda]

A Gradio page over the same ``Dubber`` API as ``python -m src.dub``: the faces found in the video are shown as
numbered thumbnails (largest first; the number is ``--face``), the checkpoints default to the ones given here (or
``make demo``'s), progress follows the dub's own stages (reference analysis, fit, render), and the result plays
in the page and downloads. Bad inputs show the CLI's messages in the page; the untrained-weights banner shows
when the checkpoints are demo ones; outputs carry the synthetic-media tags. One dub at a time per process
(queued). Nothing is fetched from the network: no analytics, system fonts.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no network calls

import cv2  # noqa: E402
import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402

from src.inference.pipeline import MAX_FACES, Dubber, DubConfig  # noqa: E402
from src.media.decode import DecodeError  # noqa: E402
from src.media.frames import FrameReader  # noqa: E402
from src.tracking.tracker import face_thumbnails  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO = {"geometry": ROOT / "outputs" / "demo" / "geometry" / "checkpoints" / "last.ckpt",
        "render": ROOT / "outputs" / "demo" / "render" / "checkpoints" / "last.ckpt"}
USER_ERRORS = (ValueError, FileNotFoundError, DecodeError)


class DubService:
    """Loaded checkpoints (kept while their paths stay the same) and the dub call the page makes."""

    def __init__(self, out_dir: Path, device: str = "cpu", cache_dir: Path | None = None) -> None:
        self.out_dir, self.device, self.cache_dir = Path(out_dir), device, cache_dir
        self.dubber: Dubber | None = None
        self.loaded: tuple[str, str] | None = None
        self.lock = threading.Lock()

    def load(self, geometry: str, render: str) -> Dubber:
        if self.loaded != (geometry, render):
            self.dubber = Dubber(geometry.strip() or None, render.strip() or None, self.device)
            self.loaded = (geometry, render)
        return self.dubber

    def dub(self, video: str | None, audio: str | None, face: float | None, geometry: str, render: str,
            progress=gr.Progress(track_tqdm=True)) -> tuple[str, str, str]:
        """(result video, download file, Markdown notes); a user error is raised as gr.Error (shown in the page)."""
        if not video:
            raise gr.Error("Reference video: upload a video of the person speaking")
        if not audio:
            raise gr.Error("Target audio: upload the audio to dub the video with")
        try:
            with self.lock:
                dubber = self.load(geometry, render)
                cfg = DubConfig(face=int(face or 0), cache_dir=self.cache_dir, progress=True)
                out = self.out_dir / f"dub-{time.strftime('%Y%m%d-%H%M%S')}-{Path(video).stem[:40]}.mp4"
                result = dubber.dub(video, audio, out, cfg)
        except USER_ERRORS as err:
            raise gr.Error(str(err), duration=None) from None
        notes = [f"**{result.n_frames} frames** ({result.n_frames / 25:.2f} s), {result.dubbed_frames} re-rendered; "
                 f"reference analysis {'from the cache' if result.cache_hit else 'computed'}. "
                 "The file is tagged as synthetic media.", "", result.times.table()]
        if dubber.banner:
            notes = ["### Untrained or demo weights", "", "```", dubber.banner, "```", "", *notes]
        return str(result.out), str(result.out), "\n".join(notes)


def find_faces(video: str | None):
    """One strip of the faces in the video's first frames, largest first, each labelled with its index (the
    face number to dub), or None."""
    if not video:
        return None
    try:
        with FrameReader(video) as reader:
            frames = reader.read(0, min(reader.n_frames, 25))
    except USER_ERRORS as err:
        raise gr.Error(f"Reference video: {err}") from None
    faces = face_thumbnails(frames)
    if not faces:
        gr.Warning("No face found in the first second of the video")
        return None
    tiles = []
    for i, image in enumerate(faces):  # (128, 128, 3) each
        tile = np.ascontiguousarray(image).copy()
        side = tile.shape[0]
        cv2.rectangle(tile, (0, side - 24), (30, side), (0, 0, 0), -1)  # the number, bottom left
        cv2.putText(tile, str(i), (7, side - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2, cv2.LINE_AA)
        tiles.append(tile)
    return np.concatenate(tiles, axis=1)  # (128, 128 n, 3)


def build_app(service: DubService, geometry_ckpt: str = "", render_ckpt: str = "") -> gr.Blocks:
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    with gr.Blocks(title="PersonaTalk dubbing", theme=theme, analytics_enabled=False) as app:
        gr.Markdown("# PersonaTalk dubbing\nA video of a person speaking and a new audio track in, the same video "
                    "with the lips re-synced out. The result is synthetic media and says so in its metadata: "
                    "never publish a dub of a real person without their consent.")
        with gr.Row():
            video = gr.Video(label="Reference video", sources=["upload"], elem_id="video")
            audio = gr.Audio(label="Target audio", type="filepath", sources=["upload"], elem_id="audio")
        with gr.Row():
            faces = gr.Image(label="Faces found, largest first: enter the number of the one to dub", height=150,
                             interactive=False, show_download_button=False, elem_id="faces")
            face = gr.Number(label="Face to dub (0 = the largest)", value=0, precision=0, minimum=0,
                             maximum=MAX_FACES - 1, elem_id="face")
        with gr.Accordion("Checkpoints", open=False):
            geometry = gr.Textbox(label="Stage-1 checkpoint (src.train experiment=geometry_*)", value=geometry_ckpt,
                                  elem_id="geometry_ckpt")
            render = gr.Textbox(label="Stage-2 checkpoint (src.train experiment=render_*)", value=render_ckpt,
                                elem_id="render_ckpt")
        run = gr.Button("Dub", variant="primary", elem_id="dub")
        result = gr.Video(label="Dubbed video", interactive=False, elem_id="result")
        download = gr.File(label="Download", interactive=False, elem_id="download")
        notes = gr.Markdown(elem_id="notes")
        video.change(find_faces, video, faces)
        run.click(service.dub, [video, audio, face, geometry, render], [result, download, notes],
                  concurrency_limit=1)
    return app.queue(default_concurrency_limit=1)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m src.app", description=__doc__.split("\n\n")[0])
    p.add_argument("--geometry-ckpt", type=Path, help="default stage-1 checkpoint (default: make demo's)")
    p.add_argument("--render-ckpt", type=Path, help="default stage-2 checkpoint (default: make demo's)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--out-dir", type=Path, default=ROOT / "outputs" / "app", help="where dubs are written")
    p.add_argument("--cache-dir", type=Path, default=None, help="reference-analysis cache (default: none)")
    args = p.parse_args(argv)
    for flag, path in (("--geometry-ckpt", args.geometry_ckpt), ("--render-ckpt", args.render_ckpt)):
        if path is not None and not path.is_file():
            p.error(f"{flag} {path}: no such checkpoint file")
    if not 0 < args.port < 65536:
        p.error(f"--port must be in 1..65535, got {args.port}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    geometry = args.geometry_ckpt or (DEMO["geometry"] if DEMO["geometry"].is_file() else "")
    render = args.render_ckpt or (DEMO["render"] if DEMO["render"].is_file() else "")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    app = build_app(DubService(args.out_dir, args.device, args.cache_dir), str(geometry), str(render))
    print(f"PersonaTalk dubbing: http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    app.launch(server_name=args.host, server_port=args.port, share=False, inbrowser=False, show_api=False,
               allowed_paths=[str(args.out_dir)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
