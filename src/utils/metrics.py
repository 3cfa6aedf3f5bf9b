"""Reading a run's final metrics."""

from collections.abc import Mapping

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn


def metric_value(metrics: Mapping[str, torch.Tensor | float], name: str | None) -> float | None:
    """The value of `name` (e.g. `val/loss`) among the trainer's logged metrics; None when no name."""
    if name is None:
        return None
    if name not in metrics:
        raise KeyError(f"optimized_metric={name!r} was not logged; logged metrics: {sorted(metrics)}. "
                       f"Set optimized_metric to one of them, or to null.")
    return float(metrics[name])


def format_metrics(metrics: Mapping[str, torch.Tensor | float],
                   stages: tuple[str, ...] = ("val", "val_seen", "test")) -> str:
    """The final epoch-level metrics of a run as a table: one row per metric name, one column per stage."""
    names = sorted({key.split("/", 1)[1] for key in metrics if key.split("/", 1)[0] in stages and "/" in key})
    present = [s for s in stages if any(f"{s}/{n}" in metrics for n in names)]
    if not names:
        return ""
    width = max(len(n) for n in names)
    lines = [" " * width + "".join(f"{s:>12s}" for s in present)]
    for name in names:
        cells = [f"{float(metrics[f'{s}/{name}']):12.4f}" if f"{s}/{name}" in metrics else " " * 12 for s in present]
        lines.append(f"{name:<{width}s}" + "".join(cells))
    return "\n".join(lines)


class LastValidatedStep(Callback):
    """Remembers the global step of the latest validation run during fit (sanity checks excluded), so the
    caller can tell whether the final weights were ever validated: `max_steps` inside an epoch, or a resume
    of a finished run, stops fit without validating."""

    def __init__(self) -> None:
        self.step: int | None = None

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self.step = trainer.global_step
