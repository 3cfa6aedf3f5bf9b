"""The evaluator's configuration: ``eval/config.yaml`` (or ``--config FILE``), ``--set KEY=VALUE`` overrides
(OmegaConf dot-list) and ``--weights KEY=PATH``. ``${root}`` is the repository root; relative paths are read
from the repository root."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from omegaconf import DictConfig, OmegaConf

from eval.weights import REPO_ROOT, WEIGHTS

DEFAULT_CONFIG = Path(__file__).resolve().parent / "config.yaml"


def load_config(path: str | Path | None = None, sets: Iterable[str] = ()) -> DictConfig:
    """The config file with ``root`` set and the ``KEY=VALUE`` overrides merged in."""
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    cfg = OmegaConf.merge(OmegaConf.create({"root": str(REPO_ROOT)}), OmegaConf.load(path),
                          OmegaConf.from_dotlist(list(sets)))
    for key in ("weights", "splits", "scoring"):
        if key not in cfg:
            raise ValueError(f"{path}: missing section {key!r} (see eval/config.yaml)")
    return cfg


def parse_pair(spec: str, flag: str, what: str = "NAME=PATH") -> tuple[str, str]:
    """'NAME=VALUE' -> (NAME, VALUE); a clear error naming the flag otherwise."""
    name, sep, value = spec.partition("=")
    if not sep or not name or not value:
        raise ValueError(f"{flag} expects {what}, got {spec!r}")
    return name, value


def split_weights(cfg: DictConfig, split: str, overrides: Iterable[str] = ()) -> dict[str, str | None]:
    """{weight key: path}: config ``weights``, then the split's own ``splits.<split>.weights``, then
    ``--weights KEY=PATH``; relative paths are taken from the repository root."""
    merged = dict(OmegaConf.to_container(cfg.weights, resolve=True))
    split_cfg = cfg.splits.get(split)
    if split_cfg is not None and split_cfg.get("weights"):
        merged.update(OmegaConf.to_container(split_cfg.weights, resolve=True))
    for spec in overrides:
        key, value = parse_pair(spec, "--weights", "KEY=PATH")
        if key not in WEIGHTS:
            raise ValueError(f"--weights {spec}: unknown key {key!r}; known: {', '.join(WEIGHTS)}")
        merged[key] = value
    return {k: (resolve_path(v) if v else None) for k, v in merged.items()}


def resolve_path(value: str | Path) -> str:
    path = Path(value)
    return str(path if path.is_absolute() else REPO_ROOT / path)
