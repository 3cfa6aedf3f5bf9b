"""The scorer networks of one benchmark run, built from weight files (``eval.weights``), and the names of
the variants that the table states.

``required_weights(metrics, weights)`` says which files the chosen metrics need; ``build_evaluators``
loads them (after ``check_weights``). SyncScore and StyleSim come from ``eval.metrics.sync`` /
``eval.metrics.stylesim`` and their loaders in ``eval.models``; they are imported only when those metrics
are scored.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from eval.weights import METRIC_WEIGHTS

# paper Table 1 order; csim_dlib: CSIM with dlib's ResNet, whose weights install with the packages, beside the
# paper's ArcFace (or facenet) CSIM, so CSIM is never "not computed" out of the box
METRICS = ("ssim", "psnr", "fid", "lmd", "sync", "lpips", "csim", "csim_dlib", "stylesim")
BUILT_IN = {"ssim": "torchmetrics SSIM (11x11 Gaussian, sigma 1.5), per frame",
            "psnr": "per-frame PSNR, data range 1",
            "lmd": "MediaPipe FaceMesh 40 lip points, mean L2 / GT inter-ocular distance (33-263)"}  # no weights


@dataclass
class Evaluators:
    """Built scorers; a None network means that metric is not computed (``skipped`` says why)."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    lpips: nn.Module | None = None  # (B, 3, H, W) pairs in [0, 1] -> (B,) distances
    fid: nn.Module | None = None  # (B, 3, H, W) in [0, 1] -> (B, D) features
    csim: nn.Module | None = None  # (B, 3, H, W) in [0, 1] (+ (B, 5, 2) points) -> (B, D) embeddings
    csim_dlib: nn.Module | None = None  # dlib's ResNet: the same contract
    sync: Callable[[], object] | None = None  # -> a fresh SyncScore metric
    stylesim: Callable[[], object] | None = None  # -> a fresh StyleSim metric
    expression: Callable | None = None  # (T, 478, 2) landmarks -> (T, L, 3) expression vertices, mm
    lmd: bool = True
    variants: dict[str, str] = field(default_factory=lambda: dict(BUILT_IN))  # metric -> scorer variant, for the table
    skipped: dict[str, str] = field(default_factory=dict)  # metric -> why it was not computed

    def computed(self) -> list[str]:
        return [m for m in METRICS if m not in self.skipped]


def required_weights(metrics: list[str], weights: Mapping[str, str | None]) -> dict[str, str | None]:
    """{weight key: configured path} the metrics need. CSIM needs facenet, or ArcFace when one is configured."""
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {', '.join(METRICS)}")
    keys = [k for m in metrics for k in METRIC_WEIGHTS.get(m, ())]
    if "csim" in metrics and weights.get("arcface_onnx"):
        keys = [("arcface_onnx" if k == "facenet_vggface2" else k) for k in keys]
    return {k: weights.get(k) for k in keys}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"scoring.device must be auto, cpu or cuda[:N], got {name!r}")
    return torch.device(name)


def build_evaluators(metrics: list[str], weights: Mapping[str, str | None], scoring: Mapping,
                     skipped: Mapping[str, str] | None = None) -> Evaluators:
    """Load every network the metrics need from ``weights`` (files checked beforehand)."""
    ev = Evaluators(device=resolve_device(str(scoring.get("device", "auto"))), skipped=dict(skipped or {}))
    ev.skipped.update({m: "not selected" for m in METRICS if m not in metrics and m not in ev.skipped})
    if "lmd" not in metrics:
        ev.lmd = False
        del ev.variants["lmd"]
    builders = {"lpips": _lpips, "fid": _fid, "csim": _csim, "csim_dlib": _csim_dlib, "sync": _sync,
                "stylesim": _stylesim}
    for metric in metrics:
        if metric in builders:
            builders[metric](ev, weights, scoring)
    return ev


def _lpips(ev: Evaluators, weights, scoring) -> None:
    from eval.metrics.lpips import VARIANT, build_lpips

    ev.lpips = build_lpips(weights["lpips_alex"]).to(ev.device)
    ev.variants["lpips"] = VARIANT


def _fid(ev: Evaluators, weights, scoring) -> None:
    from eval.metrics.fid import VARIANT, build_fid_inception

    ev.fid = build_fid_inception(weights["fid_inception"]).to(ev.device)
    stride = int(scoring.get("fid_stride", 1))
    ev.variants["fid"] = VARIANT + (f", every {stride}th frame" if stride > 1 else "") + ", per method over all frames"


def _csim(ev: Evaluators, weights, scoring) -> None:
    from eval.metrics.csim import ArcFaceEmbedder, build_facenet

    if weights.get("arcface_onnx"):
        ev.csim = ArcFaceEmbedder(weights["arcface_onnx"])
    else:
        ev.csim = build_facenet(weights["facenet_vggface2"],
                                float(scoring.get("csim_face_fraction", 0.7))).to(ev.device)
    ev.variants["csim"] = ev.csim.variant


def _csim_dlib(ev: Evaluators, weights, scoring) -> None:
    from eval.metrics.csim import DlibEmbedder

    try:
        ev.csim_dlib = DlibEmbedder()
    except (ModuleNotFoundError, FileNotFoundError) as err:  # the packages are dependencies; said, not hidden
        ev.skipped["csim_dlib"] = str(err)
        return
    ev.variants["csim_dlib"] = ev.csim_dlib.variant + ", on the ground truth's five MediaPipe points"


def _sync(ev: Evaluators, weights, scoring) -> None:
    from eval.metrics.sync import SyncScore
    from eval.models.syncnet import load_syncnet

    path = Path(weights["syncnet"])
    ev.sync = functools.partial(SyncScore, load_syncnet(str(path)).eval().to(ev.device))
    name = "syncnet_v2 (joonson/syncnet_python)" if path.name == "syncnet_v2.model" else f"ours ({path})"
    ev.variants["sync"] = f"SyncNet {name}: confidence = median - min over offsets -15..15 (LSE-C)"


def _stylesim(ev: Evaluators, weights, scoring) -> None:
    from eval.expression import ExpressionFitter
    from eval.metrics.stylesim import StyleSim
    from eval.models.style_encoder import load_style_encoder

    path = Path(weights["style_encoder"])
    encoder = load_style_encoder(str(path)).eval().to(ev.device)
    ev.expression = ExpressionFitter(str(scoring.get("face_model", "procedural")), int(scoring.get("fit_steps", 300)))
    fm = ev.expression.fm
    if (encoder.config.face_model, encoder.config.n_vertices) != (fm.name, fm.n_vertices):
        raise ValueError(f"StyleSim: the style encoder {path} reads {encoder.config.face_model} "
                         f"({encoder.config.n_vertices} vertices), scoring.face_model={ev.expression.face_model!r} "
                         f"is {fm.name} ({fm.n_vertices}); set scoring.face_model to the encoder's face model")
    ev.stylesim = functools.partial(StyleSim, encoder)
    ev.variants["stylesim"] = (f"style encoder {path} on {ev.expression.face_model} 3DMM expression vertices; "
                               "cross-half protocol (eval/expression.py)")
