"""LPIPS (Zhang et al. 2018) with its backbone loaded from a local file: the perceptual loss of stage 2 and
the LPIPS metric (paper 4.2).

The ``lpips`` package ships its calibrated linear layers (v0.1) but takes the AlexNet / VGG16 backbone from
torchvision's download cache. Nothing is downloaded here: the backbone comes from a torchvision state-dict
file given by path (``alexnet-owt-7be5be79.pth``, ``vgg16-397923af.pth``; any machine with internet:
``torchvision.models.alexnet(weights="DEFAULT").state_dict()`` saved with ``torch.save``).
``backbone_weights=None`` builds a randomly initialised backbone, for tests and wiring checks only: its
distances are not LPIPS, and the module says so (``self.calibrated``).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}


class LPIPS(nn.Module):
    """Images (B, 3, H, W) in [0, 1] -> (B,) LPIPS distance. Frozen."""

    def __init__(self, net: str = "alex", backbone_weights: str | None = None) -> None:
        super().__init__()
        import lpips
        import torchvision

        if net not in BACKBONE_FILES:
            raise ValueError(f"LPIPS: net must be one of {sorted(BACKBONE_FILES)}, got {net!r}")
        self.calibrated = backbone_weights is not None
        self.model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        if backbone_weights is not None:
            path = Path(backbone_weights)
            if not path.is_file():
                raise FileNotFoundError(
                    f"LPIPS backbone weights not found: {path} (expected torchvision's {BACKBONE_FILES[net]}; save "
                    f"`torchvision.models.{'alexnet' if net == 'alex' else 'vgg16'}(weights='DEFAULT').state_dict()` "
                    f"there with torch.save)")
            tv = torchvision.models.alexnet() if net == "alex" else torchvision.models.vgg16()
            tv.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            features = tv.features
            for i in range(1, self.model.net.N_slices + 1):
                for name, module in getattr(self.model.net, f"slice{i}").named_children():
                    module.load_state_dict(features[int(name)].state_dict())
        self.model.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "LPIPS":
        super().train(mode)
        self.model.eval()  # dropout off, always
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.model(x * 2 - 1, y * 2 - 1).flatten()  # lpips takes [-1, 1]
