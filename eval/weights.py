"""Every evaluator weight file in one place: what it is, which metric needs it, where it goes, how to get it.

Nothing here downloads. Paths come from ``eval/config.yaml`` (``weights:``; per split ``splits.<name>.weights``)
or ``--weights KEY=PATH``; the defaults live under ``data/models/`` (the project's ``paths.data_dir`` is
``<repo>/data``). ``check_weights`` raises one error that lists every missing file at once, with where to put
it and how to obtain it, so a run fails before any work.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO_ROOT / "data" / "models"


@dataclass(frozen=True)
class WeightFile:
    key: str  # the key under `weights:` in eval/config.yaml and in --weights KEY=PATH
    filename: str  # the file's usual name
    metric: str  # the metric that needs it
    source: str  # how to obtain it (offline: copy it from a machine that has it)
    optional: bool = False  # only used when configured (ArcFace: CSIM uses facenet otherwise)


WEIGHTS = {w.key: w for w in (
    WeightFile("lpips_alex", "alexnet-owt-7be5be79.pth", "LPIPS",
               "torchvision's ImageNet AlexNet state dict: on a machine with internet, "
               "`torch.save(torchvision.models.alexnet(weights='DEFAULT').state_dict(), 'alexnet-owt-7be5be79.pth')`, "
               "or copy it from ~/.cache/torch/hub/checkpoints/"),
    WeightFile("fid_inception", "pt_inception-2015-12-05-6726825d.pth", "FID",
               "pytorch-fid's FID Inception weights (release asset 'fid_weights' of mseitzer/pytorch-fid), or copy it "
               "from ~/.cache/torch/hub/checkpoints/ after any pytorch-fid run with internet"),
    WeightFile("facenet_vggface2", "20180402-114759-vggface2.pt", "CSIM",
               "facenet-pytorch's VGGFace2 InceptionResnetV1 state dict (release v2.2.9 of timesler/facenet-pytorch), "
               "or copy it from ~/.cache/torch/checkpoints/ after `InceptionResnetV1(pretrained='vggface2')` "
               "with internet"),
    WeightFile("arcface_onnx", "w600k_r50.onnx", "CSIM (ArcFace variant)",
               "an ArcFace recognition model in ONNX with a 112x112 RGB input (e.g. w600k_r50.onnx of insightface's "
               "buffalo_l pack); optional: set weights.arcface_onnx or --weights arcface_onnx=PATH to use it for CSIM",
               optional=True),
    WeightFile("syncnet", "syncnet_v2.model", "SyncScore",
               "the reference SyncNet of joonson/syncnet_python (its download_model.sh fetches data/syncnet_v2.model); "
               "for the synthetic split, our own SyncNet trained with `python -m eval.train_syncnet` (eval/README.md)"),
    WeightFile("style_encoder", "style_encoder.ckpt", "StyleSim",
               "our speaking-style encoder, trained on shards with `python -m eval.train_style_encoder` "
               "(eval/README.md)"),
)}
METRIC_WEIGHTS = {"lpips": ("lpips_alex",), "fid": ("fid_inception",), "csim": ("facenet_vggface2",),
                  "sync": ("syncnet",), "stylesim": ("style_encoder",)}  # metrics without a file: ssim psnr lmd


def default_path(key: str) -> Path:
    """Where the file of ``key`` goes by default: data/models/<its file name>."""
    return MODELS_DIR / WEIGHTS[key].filename


class MissingWeightsError(FileNotFoundError):
    """One or more evaluator weight files are missing; the message lists them all."""


def missing_weights(required: Mapping[str, str | Path | None]) -> dict[str, Path | None]:
    """{key: path} of the required files that are not there (None: no path configured)."""
    unknown = sorted(set(required) - set(WEIGHTS))
    if unknown:
        raise KeyError(f"unknown weight keys {unknown}; known: {sorted(WEIGHTS)}")
    return {k: (Path(p) if p else None) for k, p in required.items() if not p or not Path(p).is_file()}


def check_weights(required: Mapping[str, str | Path | None]) -> None:
    """Raise ``MissingWeightsError`` listing every missing file of ``required`` ({key: configured path}),
    each with the metric that needs it, where to put it and how to obtain it."""
    missing = missing_weights(required)
    if missing:
        raise MissingWeightsError(missing_message(missing))


def missing_message(missing: Mapping[str, Path | None]) -> str:
    lines = [f"{len(missing)} evaluator weight file(s) missing (nothing is downloaded; put each file at the path "
             "shown, or point eval/config.yaml or --weights KEY=PATH at it):"]
    for key, path in missing.items():
        w = WEIGHTS[key]
        lines.append(f"  - {w.filename} for {w.metric}: put it at {path or default_path(key)} "
                     f"(weights.{key}); how to obtain: {w.source}")
    lines.append("To score without a metric whose file is missing, pass --allow-missing (the table then says "
                 "which metrics were not computed).")
    return "\n".join(lines)
