"""What the speed benchmarks share (``eval.speed``, ``eval.speed_peers``): peak-memory measurement and the paper-size
renderer with random inputs."""
from __future__ import annotations

import argparse
import functools
import re
import resource
from pathlib import Path
from typing import Callable

import torch


def rss_mib(key: str) -> float:
    """`VmRSS` (now) or `VmHWM` (peak since the last reset) of this process from /proc/self/status, MiB."""
    with open("/proc/self/status") as status:
        return int(re.search(rf"{key}:\s+(\d+) kB", status.read()).group(1)) / 1024


def peak_mib(run: Callable[[], object], device: str) -> tuple[float, str]:
    """Peak memory of run() above the memory in use when it starts, MiB, and how it was measured."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - start) / 2**20, "torch.cuda.max_memory_allocated"
    start = rss_mib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:  # no reset: the peak since the process started, a lower bound of the call's own peak
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        run()
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before, "ru_maxrss delta (lower bound)"
    run()
    return rss_mib("VmHWM") - start, "peak RSS (VmHWM) delta"


def build_renderer(args: argparse.Namespace):
    """The paper's dual-attention renderer at args.size with width args.dim, random weights, eval mode; D_tex
    with the sampled-texture path (the configs' default) or latent-only (``--decoder latent``)."""
    from src.models.renderer import (
        DualAttentionFusion,
        DualAttentionRenderer,
        FaceAttention,
        GeometryEncoder,
        LipAttention,
        SampledTextureDecoder,
        TextureDecoder,
        TextureEncoder,
    )

    latent = (args.size // 4, args.size // 4)
    attention = dict(dim=args.dim, heads=args.heads, latent_size=latent, query_chunk=args.query_chunk)
    decoder = SampledTextureDecoder if args.decoder == "sampled" else TextureDecoder
    fusion = DualAttentionFusion(LipAttention(**attention), FaceAttention(**attention))
    return DualAttentionRenderer(GeometryEncoder(args.dim), TextureEncoder(args.dim), fusion, decoder(args.dim)).eval()


def render_inputs(args: argparse.Namespace, n_lip: int, device: str) -> dict:
    """Random renderer inputs in [0, 1] for batch args.batch, N_f = args.n_face, N_l = n_lip."""
    b, n_f, size = args.batch, args.n_face, args.size
    rand = functools.partial(torch.rand, device=device)
    return dict(tgt_pncc=rand(b, 3, size, size), tgt_lip_mask=(rand(b, 1, size, size) > 0.8).float(),
                face_ref_img=rand(b, n_f, 3, size, size), face_ref_pncc=rand(b, n_f, 3, size, size),
                lip_ref_img=rand(b, n_lip, 3, size, size), lip_ref_pncc=rand(b, n_lip, 3, size, size))


def experiment_config(experiment: str, overrides: tuple[str, ...] = ()) -> dict:
    """train.yaml composed with ``experiment=<experiment>`` and Hydra ``overrides``, resolved to plain containers."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import src.utils.resolvers  # noqa: F401  (${face_model:...})

    root = Path(__file__).resolve().parents[1]
    with initialize_config_dir(config_dir=str(root / "experiments"), version_base="1.3"):
        cfg = compose("train.yaml", overrides=[f"experiment={experiment}", f"paths.root_dir={root}",
                                               "paths.output_dir=unused", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)
