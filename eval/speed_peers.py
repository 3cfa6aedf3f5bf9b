"""`python -m eval.speed peers`: frames/s and peak memory of our networks beside the generators users would pick
instead, on the same device in one run, random weights (speed does not depend on them):

    ours_render    the dual-attention renderer (paper size: 256 x 256, C = 128, N_f = 5, N_l = 25; references
                   encoded in every call, as dubbing does)
    ours_stage1    stage 1 (experiment=geometry_style's network: HuBERT-base E_aud), 2 s windows, per output frame
    musetalk       MuseTalk's generator at 256: one SD-1.x U-Net step + the SD VAE decode per frame, its latents
                   precomputed as its real-time mode does (eval/models/musetalk_generator.py)
    wav2lip        a Wav2Lip-style generator at 96 x 96 (eval/models/wav2lip_generator.py)

Every (network, batch) runs in a fresh process (peak memory is the process's own), one warm-up call, then
``--calls`` timed calls under ``torch.no_grad`` (and ``--precision bf16``: autocast). The last line is the ratio of
our renderer's frames/s to MuseTalk's at each batch.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

NETWORKS = ("ours_render", "ours_stage1", "musetalk", "wav2lip")
STAGE1_FRAMES = 50  # frames per stage-1 window (2 s)


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--networks", nargs="+", choices=NETWORKS, default=list(NETWORKS))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32], help="frames per call, one row each")
    parser.add_argument("--calls", type=int, default=3, help="timed calls after one warm-up")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--one", choices=NETWORKS, help=argparse.SUPPRESS)  # internal: one row in this process


def build(name: str, device: str):
    """(network, inputs(batch) -> kwargs, frames per call per batch item, its size in pixels)."""
    if name == "ours_render":
        from eval.speed_parts import build_renderer, render_inputs

        spec = argparse.Namespace(size=256, dim=128, heads=4, query_chunk=1024, decoder="sampled", batch=1, n_face=5)

        def inputs(batch: int) -> dict:
            return render_inputs(argparse.Namespace(**{**vars(spec), "batch": batch}), 25, device)

        return build_renderer(spec), inputs, 1, 256
    if name == "ours_stage1":
        from src.models.face_model import load_face_model

        net, face_model = stage1_network()
        n_vertices = load_face_model(face_model).n_vertices

        def inputs(batch: int) -> dict:
            return {"audio": torch.randn(batch, 640 * STAGE1_FRAMES, device=device), "n_frames": STAGE1_FRAMES,
                    "vtx_temp": torch.zeros(batch, n_vertices, 3, device=device),
                    "style_code": torch.zeros(batch, net.dim, device=device)}

        return net, inputs, STAGE1_FRAMES, None
    if name == "musetalk":
        from eval.models.musetalk_generator import MuseTalkGenerator

        net = MuseTalkGenerator(256)
        return net, lambda batch: net.inputs(batch, device), 1, 256
    from eval.models.wav2lip_generator import Wav2LipGenerator

    net = Wav2LipGenerator()
    return net, lambda batch: net.inputs(batch, device), 1, 96


def stage1_network():
    """experiment=geometry_style's network (the paper's stage 1), HuBERT-base from its config, random weights."""
    import hydra

    from eval.speed_parts import experiment_config

    config = experiment_config("geometry_style", ("model.net.e_aud.pretrained=null",
                                                  "model.net.e_aud.config={}"))  # HubertConfig() = HuBERT-base
    return hydra.utils.instantiate(config["model"]["net"]), str(config["model"]["face_model"])


def measure(name: str, batch: int, args: argparse.Namespace) -> dict:
    """One row, in this process."""
    from eval.speed_parts import peak_mib

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net, inputs, frames_per_item, size = build(name, args.device)
    net = net.to(args.device).eval()
    kwargs = inputs(batch)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    autocast = torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    with torch.no_grad(), autocast:
        peak, how = peak_mib(lambda: net(**kwargs), args.device)  # the warm-up call
        sync()
        start = time.perf_counter()
        for _ in range(args.calls):
            net(**kwargs)
        sync()
        seconds = (time.perf_counter() - start) / args.calls
    return {"network": name, "size": size or "-", "batch": batch, "fps": batch * frames_per_item / seconds,
            "ms_per_call": 1000 * seconds, "peak_mib": peak, "params_m": sum(p.numel() for p in net.parameters()) / 1e6,
            "how": how, "threads": torch.get_num_threads()}


def run(args: argparse.Namespace) -> None:
    if args.one:
        print(json.dumps(measure(args.one, args.batches[0], args)))
        return
    if min(args.batches) < 1 or args.calls < 1:
        raise SystemExit("--batches values and --calls must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible to torch")
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(f"# peers on {device}, {args.precision}, torch {torch.__version__}: frames/s over {args.calls} calls after "
          "one warm-up, peak memory of the warm-up call above what was in use before it; random weights")
    rows = []
    for name in args.networks:
        for batch in args.batches:
            argv = [sys.executable, "-m", "eval.speed", "peers", "--one", name, "--batches", str(batch),
                    "--calls", str(args.calls), "--device", args.device, "--precision", args.precision]
            argv += ["--threads", str(args.threads)] if args.threads else []
            env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")  # freed blocks go back: RSS peaks are the call's
            done = subprocess.run(argv, capture_output=True, text=True, env=env)
            if done.returncode:
                raise SystemExit(f"peers {name} batch {batch} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print_row(rows[-1], header=len(rows) == 1)
    ours = {r["batch"]: r["fps"] for r in rows if r["network"] == "ours_render"}
    muse = {r["batch"]: r["fps"] for r in rows if r["network"] == "musetalk"}
    for batch in sorted(set(ours) & set(muse)):
        print(f"# ours_render / musetalk frames/s at 256, batch {batch}: {ours[batch] / muse[batch]:.2f}")


COLUMNS = ("network", "size", "batch", "fps", "ms_per_call", "peak_mib", "params_m")


def print_row(row: dict, header: bool) -> None:
    if header:
        print(f"# memory: {row['how']}, MiB; {row['threads']} torch threads")
        print("| " + " | ".join(COLUMNS) + " |")
        print("|" + "|".join("---" for _ in COLUMNS) + "|")
    cells = [f"{row[c]:.3f}" if c == "fps" else f"{row[c]:.1f}" if isinstance(row[c], float) else str(row[c])
             for c in COLUMNS]
    print("| " + " | ".join(cells) + " |", flush=True)
