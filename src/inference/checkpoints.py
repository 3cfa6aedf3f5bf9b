"""Stage-1 and stage-2 networks from ``src.train`` checkpoints, for dubbing.

A checkpoint carries ``run_info.config`` (the run's resolved Hydra config) and the system's
``state_dict``. Only the network is rebuilt (``instantiate(config.model.net)``, weights from the
``net.`` entries): dubbing needs no losses, metrics or optimisers, and building a system would try to
load training-only files (e.g. the perceptual loss's VGG).

A checkpoint is data, never code: it is read with ``torch.load(weights_only=True)`` (tensors and plain containers
only, so a pickled payload is refused before it runs), and the network config it carries is built only when every
``_target_`` in it names a class of the project's own model packages (``ALLOWED_TARGETS``) and it uses no other
instantiation key than ``_target_`` and ``_convert_``: a config that says ``_target_: builtins.open`` is refused,
with the file and the key, before anything is built. A file that is not a checkpoint at all (random bytes, a
truncated download) or the other stage's checkpoint is said as such, naming the flag.

Weights that cannot give a real dub are said loudly, never silently used: ``Loaded.untrained`` lists why
(no optimiser step, fewer than ``MIN_TRAINED_STEPS`` steps, a demo run, an audio encoder trained from
scratch), and ``weights_banner`` turns that into the warning the CLI prints.
"""
from __future__ import annotations

import importlib
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import torch
from torch import nn

from src.models.face_model import load_face_model

ALLOWED_TARGETS = ("src.models.", "src.audio.")  # the networks and their front ends
ALLOWED_KEYS = ("_target_", "_convert_")  # instantiation keys a network config may use
NETS = {"geometry": "src.models.geometry.", "render": ("src.models.renderer.", "src.models.baselines.")}
MIN_TRAINED_STEPS = 10_000  # the demo trains 600; real runs train for hundreds of thousands
STAGES = {"geometry": ("--geometry-ckpt", "geometry_demo"), "render": ("--render-ckpt", "render_demo")}


@dataclass
class Loaded:
    """One stage's network (eval mode, on its device), the run's config, its face-model spec, the
    optimiser steps it was trained for and the reasons its weights are not trained ones (empty if none)."""

    stage: str
    path: Path
    net: nn.Module
    config: dict
    face_model: str
    step: int
    untrained: list[str] = field(default_factory=list)
    face_model_mean: torch.Tensor | None = None  # the stage-1 system's copy of the model's mean shape


def load_stage(stage: str, path: str | Path | None, device: str = "cpu") -> Loaded:
    """``stage`` "geometry" (StyleAwareGeometry) or "render" (DualAttentionRenderer) from a checkpoint."""
    if stage not in STAGES:
        raise ValueError(f"load_stage: stage must be one of {sorted(STAGES)}, got {stage!r}")
    flag, demo = STAGES[stage]
    if path is None:
        raise ValueError(f"no {stage} checkpoint: pass {flag} PATH (checkpoints/last.ckpt of a "
                         f"`python -m src.train experiment={stage}_*` run), or run `make demo`, which trains demo "
                         f"checkpoints under outputs/demo/ (untrained-quality, for trying the pipeline)")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{flag} {path}: no such checkpoint file")
    checkpoint = read_checkpoint(path, flag)
    config = _config(checkpoint, path, flag)
    check_net_config(config["model"]["net"], path, flag)
    if not str(config["model"]["net"]["_target_"]).startswith(NETS[stage]):
        other = next(s for s in STAGES if s != stage)
        if str(config["model"]["net"]["_target_"]).startswith(NETS[other]):
            raise ValueError(f"{flag} {path}: this is a {other} (stage {2 if other == 'render' else 1}) checkpoint "
                             f"({config['model']['net']['_target_']}); pass it as {STAGES[other][0]}")
        raise ValueError(f"{flag} {path}: its network {config['model']['net']['_target_']} is not a {stage} network")
    net = hydra.utils.instantiate(config["model"]["net"])
    weights = {k[len("net."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    if not weights:
        raise ValueError(f"{flag} {path}: the state_dict has no `net.` weights; is it a src.train checkpoint?")
    net.load_state_dict(weights)
    spec = str(config["model"].get("face_model", "procedural"))
    step = int(checkpoint.get("global_step", 0))
    return Loaded(stage, path, net.to(device).eval(), config, spec, step, _untrained(config, step, stage),
                  checkpoint["state_dict"].get("face_model.mean"))


def read_checkpoint(path: Path, flag: str) -> dict:
    """The checkpoint's contents, read as data only (tensors, numbers, strings, containers)."""
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise ValueError(f"{flag} {path}: not a readable checkpoint (not a torch.save archive: a truncated "
                         f"download or another kind of file)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # weights_only refused a global: code, or a class we do not load
        refused = next((line.strip() for line in str(err).splitlines() if "global" in line.lower()
                        and "weights_only" not in line), str(err).splitlines()[0])
        raise ValueError(f"{flag} {path}: refused: the file holds Python objects, not only tensors and plain data "
                         f"(a checkpoint is data and is never run; {refused[:200]})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise ValueError(f"{flag} {path}: not a readable checkpoint (a truncated or foreign file? "
                         f"{type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{flag} {path}: not a src.train checkpoint (holds a {type(checkpoint).__name__})")
    return checkpoint


def check_net_config(node, path: Path, flag: str, where: str = "model.net") -> None:
    """Every ``_target_`` under ``node`` a class of ``ALLOWED_TARGETS``; no instantiation key but ``ALLOWED_KEYS``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and key.startswith("_") and key.endswith("_") and key not in ALLOWED_KEYS:
                raise ValueError(f"{flag} {path}: refused: its config uses {where}.{key}, which builds objects in ways "
                                 f"a network config never needs")
            if key == "_target_" and not _project_class(value):
                raise ValueError(f"{flag} {path}: refused: its config builds {where}._target_={value!r}, which is not "
                                 f"one of the project's model classes ({', '.join(p + '*' for p in ALLOWED_TARGETS)}); "
                                 "a checkpoint is data and never runs other code")
            check_net_config(value, path, flag, f"{where}.{key}")
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            check_net_config(value, path, flag, f"{where}[{i}]")


def _project_class(target) -> bool:
    """``target`` names a class defined in one of the project's model packages: the dotted path starts with one of
    ``ALLOWED_TARGETS`` and what it resolves to is a class whose own module is there too (so a path such as
    ``src.models.x.os.system`` that walks out of the project through an imported module is refused)."""
    if not isinstance(target, str) or not target.startswith(ALLOWED_TARGETS):
        return False
    parts = target.split(".")
    for i in range(len(parts) - 1, 0, -1):  # the longest importable module prefix, then attributes
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name, None)
        break
    else:
        return False
    return isinstance(obj, type) and obj.__module__.startswith(tuple(p.rstrip(".") for p in ALLOWED_TARGETS))


def _config(checkpoint: dict, path: Path, flag: str) -> dict:
    try:
        config = checkpoint["run_info"]["config"]
        config["model"]["net"]["_target_"]
    except (KeyError, TypeError):
        raise ValueError(f"{flag} {path}: not a src.train checkpoint (needs run_info.config.model.net with a "
                         "_target_, written by src.train's RunInfoInCheckpoint)") from None
    return config


def _untrained(config: dict, step: int, stage: str) -> list[str]:
    reasons = []
    if step == 0:
        reasons.append("never trained (0 optimiser steps): random weights")
    elif step < MIN_TRAINED_STEPS:
        reasons.append(f"trained for only {step} steps (< {MIN_TRAINED_STEPS})")
    tags = [str(t) for t in config.get("tags") or []]
    if "demo" in str(config.get("task_name", "")) or "demo" in tags:
        reasons.append(f"a demo run ({config.get('task_name')}) on the synthetic corpus")
    e_aud = config["model"]["net"].get("e_aud") if stage == "geometry" else None
    hubert = e_aud is not None and str(e_aud.get("_target_", "")).endswith("e_aud.AudioEncoder")
    if hubert and not e_aud.get("pretrained"):  # the phone front end is pretrained by construction (pocketsphinx)
        reasons.append("its audio encoder (HuBERT) was not initialised from pretrained weights")
    return reasons


def check_face_models(geometry: Loaded, render: Loaded):
    """The face model both stages were trained with, loaded; they must agree, and the stage-1 checkpoint's
    copy of the model's mean shape must match the model built here (same model version)."""
    if geometry.face_model != render.face_model:
        raise ValueError(f"the checkpoints disagree on the face model: {geometry.path} was trained with "
                         f"{geometry.face_model!r}, {render.path} with {render.face_model!r}")
    fm = load_face_model(geometry.face_model)
    saved = geometry.face_model_mean
    if saved is not None and (saved.shape != fm.mean.shape or not torch.allclose(saved, fm.mean, atol=1e-5)):
        raise ValueError(f"{geometry.path} was trained with another version of face model {geometry.face_model!r} "
                         f"than this code builds ({fm.name}); retrain or check out the matching code")
    return fm


def render_size(render: Loaded) -> int:
    """Stage 2's image size (the run's ``data.image_size``: 256 in the paper, 128 in the demo)."""
    size = render.config.get("data", {}).get("image_size")
    if not isinstance(size, int) or size % 4:
        raise ValueError(f"{render.path}: run_info.config.data.image_size must be a multiple of 4, got {size!r}")
    return size


def weights_banner(*stages: Loaded) -> str | None:
    """A loud multi-line warning when any stage runs with weights that are not trained ones, else None."""
    lines = [f"  {s.stage} ({s.path}): {'; '.join(s.untrained)}" for s in stages if s.untrained]
    if not lines:
        return None
    rule = "!" * 100
    return "\n".join([rule, "WARNING: dubbing with UNTRAINED / DEMO weights. The output shows the pipeline working, "
                      "not PersonaTalk's quality:", *lines, rule])
