"""Reading a run's final metrics."""

from collections.abc import Mapping

import torch


def metric_value(metrics: Mapping[str, torch.Tensor | float], name: str | None) -> float | None:
    """The value of `name` (e.g. `val/loss`) among the trainer's logged metrics; None when no name."""
    if name is None:
        return None
    if name not in metrics:
        raise KeyError(f"optimized_metric={name!r} was not logged; logged metrics: {sorted(metrics)}. "
                       f"Set optimized_metric to one of them, or to null.")
    return float(metrics[name])
