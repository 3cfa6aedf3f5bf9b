"""Speed benchmarks, one subcommand each (more to come: `render`, `dub`).

    python -m eval.speed raster [--size 256] [--frames 200] [--face-model procedural ict:PATH icosphere:5 ...]

`raster` prints, per mesh: vertices, triangles, frames/s of the numba z-buffer (one thread, sequential
kernel), numba PNCC and numba shaded renders, and the batched pure-torch rasteriser on CPU (and CUDA when
available). Meshes are face-model mean shapes (`src.geometry.face_models.load_face_model` specs) or
`icosphere:N` test spheres, turned a little from frame to frame and fitted to the frame orthographically.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from src.geometry.rasterizer import rasterize
from src.geometry.rasterizer_torch import rasterize_torch
from src.geometry.render import icosphere, render_pncc, render_shaded


@dataclass
class Mesh:
    """A mesh in model units (y up, z towards the viewer): verts (L, 3), tris (F, 3) int32, pncc (L, 3)."""

    name: str
    verts: np.ndarray
    tris: np.ndarray
    pncc: np.ndarray


def load_mesh(spec: str) -> Mesh:
    """`icosphere:N` or a face-model spec (`procedural`, `ict:PATH`, ...) -> its mean shape as a Mesh."""
    if spec.startswith("icosphere:"):
        verts, tris = icosphere(int(spec.partition(":")[2]))
        return Mesh(spec, verts, tris, (verts * 0.5 + 0.5).astype(np.float32))
    from src.geometry.face_models import load_face_model

    fm = load_face_model(spec)
    name = spec if len(spec) < 24 else spec.split(":")[0] + ":..." + spec[-16:]
    return Mesh(name, fm.mean.detach().cpu().numpy().astype(np.float32),
                fm.triangles.cpu().numpy().astype(np.int32), fm.pncc_colors.cpu().numpy().astype(np.float32))


def fit_to_frame(verts: np.ndarray, size: int, fill: float = 0.8) -> tuple[np.ndarray, float]:
    """Orthographic fit: xy bounding box scaled to `fill` of a size x size frame, y flipped, depth = z * scale.

    Returns screen vertices (L, 3) float32 and the scale (pixels per model unit).
    """
    lo, hi = verts[:, :2].min(0), verts[:, :2].max(0)
    scale = fill * size / float((hi - lo).max())
    centre = (lo + hi) / 2
    screen = np.stack([(verts[:, 0] - centre[0]) * scale + size / 2,
                       (centre[1] - verts[:, 1]) * scale + size / 2,
                       verts[:, 2] * scale], 1)  # (L, 3) x right, y down, depth larger = closer
    return screen.astype(np.float32), scale


def frame_sequence(mesh: Mesh, frames: int, size: int) -> np.ndarray:
    """(T, L, 3) screen vertices: the mesh turning +-0.3 rad about its vertical axis."""
    centred = mesh.verts - mesh.verts.mean(0)
    out = []
    for yaw in 0.3 * np.sin(np.linspace(0, 2 * np.pi, frames, endpoint=False)):
        c, s = np.cos(yaw), np.sin(yaw)
        turned = np.stack([c * centred[:, 0] + s * centred[:, 2], centred[:, 1],
                           -s * centred[:, 0] + c * centred[:, 2]], 1)
        out.append(fit_to_frame(turned, size)[0])
    return np.stack(out)  # (T, L, 3)


def frames_per_second(render_one: Callable[[int], object], frames: int,
                      sync: Callable[[], None] = lambda: None) -> float:
    """Time render_one(t) for t in range(frames) after one warm-up call (which also compiles)."""
    render_one(0)
    sync()
    start = time.perf_counter()
    for t in range(frames):
        render_one(t)
    sync()
    return frames / (time.perf_counter() - start)


def torch_fps(seq: np.ndarray, tris: np.ndarray, size: int, batch: int, frames: int, device: str) -> float:
    """Batched pure-torch rasteriser: frames/s over `frames` frames in batches of `batch`."""
    verts = torch.from_numpy(seq[:frames]).to(device)
    faces = torch.from_numpy(tris).long().to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    batches = [verts[k:k + batch] for k in range(0, len(verts), batch)]
    fps = frames_per_second(lambda k: rasterize_torch(batches[k], faces, size, size), len(batches), sync)
    return fps * frames / len(batches)


def raster_row(mesh: Mesh, args: argparse.Namespace) -> dict:
    """All timings for one mesh."""
    size, tris = args.size, mesh.tris
    seq = frame_sequence(mesh, args.frames, size)
    albedo = np.tile(np.float32([[0.8, 0.62, 0.52]]), (len(mesh.verts), 1))  # skin-like grey
    row = {"mesh": mesh.name, "verts": len(mesh.verts), "tris": len(tris),
           "coverage": float(rasterize(seq[0], tris, size, size).mask.mean()),
           "numba": frames_per_second(lambda t: rasterize(seq[t], tris, size, size), args.frames),
           "pncc": frames_per_second(lambda t: render_pncc(seq[t], tris, mesh.pncc, size, size), args.frames),
           "shaded": frames_per_second(lambda t: render_shaded(seq[t], tris, None, albedo, size, size), args.frames)}
    torch_frames = min(args.torch_frames, args.frames)
    row["torch_cpu"] = torch_fps(seq, tris, size, args.batch, torch_frames, "cpu")
    if torch.cuda.is_available():
        row["torch_cuda"] = torch_fps(seq, tris, size, args.batch, args.frames, "cuda")
    return row


def print_table(rows: list[dict]) -> None:
    columns = ["mesh", "verts", "tris", "coverage", "numba", "pncc", "shaded", "torch_cpu", "torch_cuda"]
    columns = [c for c in columns if any(c in r for r in rows)]
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for r in rows:
        cells = [r.get(c, "") if isinstance(r.get(c), (str, int)) else f"{r[c]:.{2 if c == 'coverage' else 0}f}"
                 for c in columns]
        print("| " + " | ".join(str(c) for c in cells) + " |")


def run_raster(args: argparse.Namespace) -> None:
    """`raster` subcommand: one table row per mesh."""
    if args.size <= 0 or args.frames <= 0 or args.batch <= 0 or args.torch_frames <= 0:
        raise SystemExit("--size, --frames, --batch and --torch-frames must be positive")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# raster {args.size}x{args.size}, {args.frames} frames; numba/pncc/shaded: frames/s on one thread; "
          f"torch: batch {args.batch}, {torch.get_num_threads()} CPU threads, "
          f"{min(args.torch_frames, args.frames)} frames")
    print_table([raster_row(load_mesh(spec), args) for spec in args.face_model])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eval.speed", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    raster = sub.add_parser("raster", help="rasteriser / PNCC / shaded render frames per second")
    raster.add_argument("--size", type=int, default=256, help="square frame size in pixels")
    raster.add_argument("--frames", type=int, default=200, help="frames timed for the numba renders")
    raster.add_argument("--face-model", nargs="+", default=["procedural"], metavar="SPEC",
                        help="procedural, ict:PATH, bfm:PATH, npz:PATH or icosphere:N (one row each)")
    raster.add_argument("--batch", type=int, default=16, help="frames per torch rasteriser call")
    raster.add_argument("--torch-frames", type=int, default=32, help="frames timed for torch on CPU (slow)")
    raster.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    raster.set_defaults(func=run_raster)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
