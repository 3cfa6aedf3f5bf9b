"""Build the callback and logger lists of a run from their config groups (name -> `_target_` node)."""

import hydra
from lightning.pytorch import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig


def _instantiate_all(group: DictConfig | None, kind: type, group_name: str) -> list:
    if not group:
        return []
    if not isinstance(group, DictConfig):
        raise TypeError(f"`{group_name}` must be a mapping of name -> config with _target_, got {group!r}")
    built = []
    for name, node in group.items():
        if node is None:  # `callbacks.lr_monitor=null` switches one off
            continue
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ValueError(f"`{group_name}.{name}` needs a `_target_` (a class path), got {node!r}")
        obj = hydra.utils.instantiate(node)
        if not isinstance(obj, kind):
            raise TypeError(f"`{group_name}.{name}` built a {type(obj).__name__}, expected a {kind.__name__}")
        built.append(obj)
    return built


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    return _instantiate_all(cfg, Callback, "callbacks")


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    return _instantiate_all(cfg, Logger, "logger")


def close_loggers() -> None:
    """Finishes the W&B run, if one is open: Lightning leaves it open, and the next run in the same
    process (a Hydra multirun job, a test) would otherwise log into it."""
    import sys

    wandb = sys.modules.get("wandb")  # only if something imported it
    if wandb is not None and wandb.run is not None:
        wandb.finish()
