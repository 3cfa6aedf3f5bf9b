"""Speed benchmarks, one subcommand each.

    python -m eval.speed raster [--size 256] [--frames 200] [--face-model procedural ict:PATH icosphere:5 ...]
    python -m eval.speed render [--device cpu|cuda] [--size 256] [--dim 128] [--n-lip 5 25 100] [--sdpa math]
    python -m eval.speed dub [--device cpu|cuda] [--video V --audio A --audio2 A2] [--geometry-ckpt G --render-ckpt R]
    python -m eval.speed data_prep [--video V] [--seconds 8] [--fit-steps N] [--hyperiqa WEIGHTS]
    python -m eval.speed peers [--device cpu|cuda] [--batches 1 8 32] [--precision fp32|bf16] [--networks ...]

`raster` prints, per mesh: vertices, triangles, frames/s of the numba z-buffer (one thread, sequential
kernel), numba PNCC and numba shaded renders, and the batched pure-torch rasteriser on CPU (and CUDA when
available). Meshes are face-model mean shapes (`src.geometry.face_models.load_face_model` specs) or
`icosphere:N` test spheres, turned a little from frame to frame and fitted to the frame orthographically.

`render` prints, per number of lip references N_l (N_f face references fixed), the frames/s of the
stage-2 dual-attention renderer's forward pass (torch.no_grad, random weights and inputs: speed and
memory do not depend on the values) and its peak memory above what was in use before the call, for the
whole forward and for Lip-Attention alone. Each setting runs in a fresh subprocess. On CPU the peak is
resident memory (/proc/self/status VmHWM, reset through /proc/self/clear_refs; the child runs with
MALLOC_MMAP_THRESHOLD_=65536 so freed tensors go back to the OS and every call starts from a true
baseline); on CUDA it is torch.cuda.max_memory_allocated.

`dub` times `python -m src.dub`'s pipeline end to end, twice on the same reference video: first with an
empty reference cache (analysis: track, 3DMM fit, lip references), then with a second audio (the analysis
comes from the cache). It prints, per run, seconds and frames/s of every stage and end to end. Without
--video/--audio it makes a synthetic pair (data_prep.synthetic, 2 speakers); without checkpoints it uses
outputs/demo's when they exist, else the demo experiments' networks with random weights (speed does not
depend on the weights).

`data_prep` prints frames/s and frames per CPU-second (per core) of each data_prep step and end to end
(eval/speed_data_prep.py).

`peers` prints frames/s and peak memory of our renderer and stage 1 beside MuseTalk's generator and a
Wav2Lip-style one, same device, same run, batch 1 / 8 / 32 (eval/speed_peers.py).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from eval import speed_data_prep, speed_peers
from eval.speed_parts import build_renderer, experiment_config, peak_mib, render_inputs
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
    from src.models.face_model import load_face_model

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
    rows = [raster_row(load_mesh(spec), args) for spec in args.face_model]
    print_table(rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"size": args.size, "frames": args.frames, "rows": rows}, indent=1))


def render_setting(args: argparse.Namespace) -> dict:
    """One table row, measured in this (fresh) process: peak memory of the first forward and of
    Lip-Attention alone, then frames/s over args.frames forwards."""
    from contextlib import nullcontext

    from torch.nn.attention import SDPBackend, sdpa_kernel

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device, n_lip = args.device, args.n_lip[0]
    renderer = build_renderer(args).to(device)
    batch = render_inputs(args, n_lip, device)
    kernel = sdpa_kernel([SDPBackend.MATH]) if args.sdpa == "math" else nullcontext()
    with torch.no_grad(), kernel:
        forward_mib, how = peak_mib(lambda: renderer(**batch), device)
        refs = {"lip": (batch["lip_ref_img"], batch["lip_ref_pncc"])}
        q_geo, ref_geo, ref_tex = renderer.encode(batch["tgt_pncc"], refs)
        pixels = (renderer.patches.extract(batch["lip_ref_img"])  # (B, N_l, P, h, w)
                  if renderer.d_tex.uses_sampled_rgb else None)
        lip_attention = functools.partial(renderer.attention.lip_attention.sample, q_geo, ref_geo["lip"],
                                          ref_tex["lip"], pixels)
        lip_mib, _ = peak_mib(lip_attention, device)
        del q_geo, ref_geo, ref_tex, pixels, lip_attention
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        fps = frames_per_second(lambda t: renderer(**batch), args.frames, sync) * args.batch
    return {"n_face": args.n_face, "n_lip": n_lip, "fps": fps, "forward_mib": forward_mib, "lip_attn_mib": lip_mib,
            "how": how, "threads": torch.get_num_threads()}


def run_render_one(args: argparse.Namespace) -> None:
    """`render-one` (internal): one setting, printed as a JSON line for the parent `render`."""
    print(json.dumps(render_setting(args)))


def run_render(args: argparse.Namespace) -> None:
    """`render` subcommand: one fresh subprocess per N_l, one table row each."""
    if args.size <= 0 or args.size % 4 or args.dim <= 0 or args.batch <= 0 or args.frames <= 0 or args.n_face <= 0:
        raise SystemExit("--size must be a positive multiple of 4; --dim, --batch, --frames, --n-face positive")
    if min(args.n_lip) <= 0 or (args.query_chunk is not None and args.query_chunk <= 0):
        raise SystemExit("--n-lip values and --query-chunk must be positive")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible to torch")
    tokens = (args.size // 4) ** 2
    chunk = tokens if args.query_chunk is None else min(args.query_chunk, tokens)
    latent = f"{args.size // 4}x{args.size // 4}"
    print(f"# render {args.size}x{args.size} (latent {latent}, {tokens} tokens/frame), C={args.dim}, "
          f"{args.heads} heads, query_chunk {chunk}, batch {args.batch}, N_f={args.n_face}, {args.decoder} D_tex, "
          f"{args.device}, "
          f"SDPA {args.sdpa}; frames/s over {args.frames} no_grad forwards after one warm-up")
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    rows = []
    for n_lip in args.n_lip:
        argv = [sys.executable, "-m", "eval.speed", "render-one", *render_argv(args), "--n-lip", str(n_lip)]
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"render N_l={n_lip} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        # what the math kernel would hold for one chunk: scores + softmax, fp32, every head
        row["math_block_mib"] = 2 * args.batch * args.heads * chunk * n_lip * tokens * 4 / 2**20
        row["lip_attn_mib_per_ref"] = row["lip_attn_mib"] / n_lip
        rows.append(row)
    print(f"# memory: {rows[0]['how']} above the memory in use before the call, MiB, {rows[0]['threads']} torch "
          "threads; math_block: one query chunk's scores + softmax if SDPA fell back to its math kernel (analytic)")
    print_render_table(rows)


def render_argv(args: argparse.Namespace) -> list[str]:
    """The shared options of `render`, for its `render-one` children."""
    argv = ["--device", args.device, "--size", str(args.size), "--dim", str(args.dim), "--heads", str(args.heads),
            "--n-face", str(args.n_face), "--batch", str(args.batch), "--frames", str(args.frames),
            "--sdpa", args.sdpa, "--query-chunk", str(args.query_chunk or 0), "--decoder", args.decoder]
    return argv + (["--threads", str(args.threads)] if args.threads else [])


def print_render_table(rows: list[dict]) -> None:
    columns = ["n_face", "n_lip", "fps", "forward_mib", "lip_attn_mib", "lip_attn_mib_per_ref", "math_block_mib"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for r in rows:
        print("| " + " | ".join(str(r[c]) if isinstance(r[c], int) else f"{r[c]:.{3 if c == 'fps' else 1}f}"
                                for c in columns) + " |")


def add_render_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--size", type=int, default=256, help="square frame size in pixels (multiple of 4)")
    parser.add_argument("--dim", type=int, default=128,
                        help="latent width C (default 128: V must carry a 4x4x3 = 48-value patch per cell)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads")
    parser.add_argument("--decoder", choices=("sampled", "latent"), default="sampled",
                        help="D_tex: with the sampled-texture path (the configs' default) or latent-only")
    parser.add_argument("--n-face", type=int, default=5, help="face references N_f")
    parser.add_argument("--n-lip", type=int, nargs="+", default=[5, 25, 100], help="lip references N_l, one row each")
    parser.add_argument("--batch", type=int, default=1, help="frames per forward")
    parser.add_argument("--frames", type=int, default=3, help="forwards timed (after one warm-up)")
    parser.add_argument("--query-chunk", type=lambda v: int(v) or None, default=1024,
                        help="queries per SDPA call (0: all at once)")
    parser.add_argument("--sdpa", choices=("default", "math"), default="default",
                        help="SDPA kernel: torch's choice, or force the math kernel (builds each chunk's scores)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")


def dub_inputs(args: argparse.Namespace, work: str) -> tuple[str, str, str]:
    """(video, audio, second audio): the given files, or a synthetic pair made in `work`."""
    if args.video:
        if not args.audio:
            raise SystemExit("--video needs --audio (and optionally --audio2)")
        return args.video, args.audio, args.audio2 or args.audio
    from data_prep.synthetic.generate import main as generate

    generate(["--out", f"{work}/corpus", "--speakers", "2", "--clips-per-speaker", "2", "--seconds", str(args.seconds),
              "--seed", "0", "--size", str(args.synthetic_size), "--workers", "1", "--preview", f"{work}/preview.png"])
    clips = sorted(Path(work, "corpus").glob("id*/*/*.mp4"))  # speaker 1's two clips, then speaker 2's
    return str(clips[0]), str(clips[2]), str(clips[3])


def dub_checkpoints(args: argparse.Namespace, work: str) -> tuple[str, str, str]:
    """(stage-1 checkpoint, stage-2 checkpoint, where they come from)."""
    if args.geometry_ckpt and args.render_ckpt:
        return args.geometry_ckpt, args.render_ckpt, "given"
    demo = Path("outputs/demo")
    found = demo / "geometry/checkpoints/last.ckpt", demo / "render/checkpoints/last.ckpt"
    if all(p.is_file() for p in found):
        return str(found[0]), str(found[1]), "outputs/demo (make demo)"
    return (random_checkpoint("geometry_demo", f"{work}/geometry.ckpt"),
            random_checkpoint("render_demo", f"{work}/render.ckpt"),
            "demo experiments, random weights")


def random_checkpoint(experiment: str, path: str, overrides: tuple[str, ...] = ()) -> str:
    """A checkpoint as src.train writes it (run_info.config + net weights), untrained: the experiment's network
    (with Hydra ``overrides``)."""
    import hydra

    config = experiment_config(experiment, overrides)
    net = hydra.utils.instantiate(config["model"]["net"])
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "global_step": 0,
                "run_info": {"config": config}}, path)
    return path


def run_dub(args: argparse.Namespace) -> None:
    """`dub` subcommand: a cold and a cached dub of the same video, stage tables and end-to-end frames/s."""
    import logging
    import tempfile

    from src.inference import Dubber, DubConfig
    from src.inference.timing import ANALYSIS_STAGES

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible to torch")
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="speed_dub_") as work:
        video, audio, audio2 = dub_inputs(args, work)
        geometry, render, origin = dub_checkpoints(args, work)
        dubber = Dubber(geometry, render, args.device)
        cfg = DubConfig(cache_dir=f"{work}/cache", progress=False)
        print(f"# dub on {args.device} ({torch.get_num_threads()} torch threads), renderer {dubber.size} px, "
              f"checkpoints: {origin}; reference {video} ({decode_size(video)})")
        totals = {}
        for name, target in (("cold cache", audio), ("cached reference", audio2)):
            start = time.perf_counter()
            result = dubber.dub(video, target, f"{work}/out_{len(totals)}.mp4", cfg)
            seconds = totals[name] = time.perf_counter() - start
            print(f"\n## {name}: {result.n_frames} output frames ({result.reference_frames} reference frames) in "
                  f"{seconds:.1f} s = {result.n_frames / seconds:.2f} frames/s end to end")
            print(result.times.table())
            analysis = sum(result.times.seconds.get(s, 0.0) for s in ANALYSIS_STAGES)
            print(f"reference analysis: {analysis:.1f} s ({'from the cache' if result.cache_hit else 'computed'})")
        print(f"\ncache: first dub {totals['cold cache']:.1f} s, second dub of the same video with another audio "
              f"{totals['cached reference']:.1f} s")


def decode_size(path: str) -> str:
    from src.media.decode import probe

    info = probe(path)
    return f"{info.width}x{info.height}, {info.duration_s:.1f} s"


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
    raster.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    raster.set_defaults(func=run_raster)
    render = sub.add_parser("render", help="dual-attention renderer frames per second and peak memory vs N_l")
    add_render_options(render)
    render.set_defaults(func=run_render)
    render_one = sub.add_parser("render-one")  # internal: one `render` setting in a fresh process
    add_render_options(render_one)
    render_one.set_defaults(func=run_render_one)
    dub = sub.add_parser("dub", help="dubbing pipeline frames per second per stage, cold and cached reference")
    dub.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    dub.add_argument("--video", help="reference video (default: a synthetic clip)")
    dub.add_argument("--audio", help="target audio of the first (cold-cache) dub")
    dub.add_argument("--audio2", help="target audio of the second (cached) dub (default: --audio)")
    dub.add_argument("--geometry-ckpt", help="stage-1 checkpoint (default: outputs/demo's, else random demo weights)")
    dub.add_argument("--render-ckpt", help="stage-2 checkpoint (default: outputs/demo's, else random demo weights)")
    dub.add_argument("--seconds", type=float, default=8.0, help="length of the synthetic clips")
    dub.add_argument("--synthetic-size", type=int, default=384, help="frame size of the synthetic clips")
    dub.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    dub.set_defaults(func=run_dub)
    peers = sub.add_parser("peers", help="our renderer and stage 1 beside MuseTalk's and a Wav2Lip-style generator")
    speed_peers.add_options(peers)
    peers.set_defaults(func=speed_peers.run)
    data_prep = sub.add_parser("data_prep", help="data_prep frames/s per CPU core, per step and end to end")
    speed_data_prep.add_options(data_prep)
    data_prep.set_defaults(func=speed_data_prep.run)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
