"""LPIPS (Zhang et al. 2018; paper 4.2, persona preservation): AlexNet features with the ``lpips`` package's
v0.1 linear heads, the AlexNet backbone from a local torchvision file (``alexnet-owt-7be5be79.pth``).

``LPIPSScore(net)`` takes the built network (``src.models.lpips_net.LPIPS``: (B, 3, H, W) pairs in [0, 1]
-> (B,) distances); ``build_lpips(path)`` builds it from the weights file and refuses a missing one.
``update(gen, gt)``: float (B, 3, H, W) in [0, 1], aligned frames; ``compute()``: mean distance over all
frames since the last reset. 0 for identical frames; lower is better.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchmetrics import Metric

from eval.metrics.image import check_frames

VARIANT = "alex v0.1 (lpips package heads, torchvision AlexNet backbone)"


def build_lpips(backbone_weights: str | Path) -> nn.Module:
    """The LPIPS AlexNet network with its backbone from ``backbone_weights`` (must exist)."""
    from src.models.lpips_net import LPIPS

    path = Path(backbone_weights)
    if not path.is_file():
        raise FileNotFoundError(f"LPIPS: AlexNet backbone weights not found: {path} (see eval/README.md, weights)")
    return LPIPS(net="alex", backbone_weights=str(path))


class LPIPSScore(Metric):
    """Mean LPIPS distance of aligned frame pairs (module docstring)."""

    higher_is_better = False
    full_state_update = False

    def __init__(self, net: nn.Module, **kwargs) -> None:
        super().__init__(**kwargs)
        self.net = net.eval().requires_grad_(False)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    @torch.no_grad()
    def update(self, gen: torch.Tensor, gt: torch.Tensor) -> None:
        check_frames(gen, gt, "LPIPSScore")
        dist = self.net(gen.float(), gt.float()).flatten()  # (B,)
        self.total += dist.double().sum()
        self.count += dist.numel()

    def compute(self) -> torch.Tensor:
        if self.count == 0:
            raise RuntimeError("LPIPSScore.compute: no frames were given to update()")
        return (self.total / self.count).float()
