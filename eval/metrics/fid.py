"""FID (paper 4.2, visual quality): Fréchet distance between Gaussians fitted to Inception pool3 features
(2048-d) of the generated frames and of the ground-truth frames.

The network is pytorch-fid's ``InceptionV3`` (the TF-ported FID Inception, ``use_fid_inception=True``)
with its weights ``pt_inception-2015-12-05-6726825d.pth`` from a local file: ``build_fid_inception(path)``.
pytorch-fid would download them; here its loader is pointed at the file for the duration of the build.
The input is resized to 299x299 (bilinear) and scaled to [-1, 1] inside the network.

``FID(feature_net)``: ``feature_net`` maps (B, 3, H, W) in [0, 1] to (B, D) features (tests inject a
small one). ``update(gen, gt)`` accumulates running sums (mean and covariance in float64) of each set, so
any number of frames fits in memory; ``compute()`` is the Fréchet distance (pytorch-fid's
``calculate_frechet_distance``, which adds eps to the diagonals when the product is singular). FID is a
statistic of a whole set: the benchmark computes it per method over all frames of all videos, not per
video. 0 for identical sets; lower is better.
"""
from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import torch
from torch import nn
from torchmetrics import Metric

from eval.metrics.image import check_frames

VARIANT = "pytorch-fid InceptionV3 pool3 (2048-d, TF FID weights)"


class FIDInception(nn.Module):
    """pytorch-fid's InceptionV3 as a feature network: (B, 3, H, W) in [0, 1] -> (B, 2048) pool3 features."""

    def __init__(self, inception: nn.Module) -> None:
        super().__init__()
        self.inception = inception.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inception(x)[0].flatten(1)  # (B, 2048, 1, 1) -> (B, 2048)


def build_fid_inception(weights: str | Path) -> FIDInception:
    """The FID Inception with weights from ``weights`` (pytorch-fid's pt_inception-2015-12-05-6726825d.pth)."""
    import pytorch_fid.inception as fid_inception

    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"FID: Inception weights not found: {path} (see eval/README.md, weights)")

    def load_local(url: str, *args, **kwargs) -> dict:  # instead of a download of `url`
        return torch.load(path, map_location="cpu", weights_only=True)

    block = fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]
    with mock.patch.object(fid_inception, "load_state_dict_from_url", load_local):
        net = fid_inception.InceptionV3([block], resize_input=True, normalize_input=True, use_fid_inception=True)
    return FIDInception(net)


class FID(Metric):
    """Fréchet distance between the feature Gaussians of generated and ground-truth frames (module docstring)."""

    higher_is_better = False
    full_state_update = False

    def __init__(self, feature_net: nn.Module, **kwargs) -> None:
        super().__init__(**kwargs)
        self.feature_net = feature_net.eval().requires_grad_(False)
        self._dim: int | None = None
        for side in ("gen", "gt"):
            self.add_state(f"{side}_sum", default=torch.zeros(0, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_outer", default=torch.zeros(0, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    @torch.no_grad()
    def update(self, gen: torch.Tensor, gt: torch.Tensor) -> None:
        """gen, gt: float (B, 3, H, W) in [0, 1]; each adds its frames to its own set (the pairing is not used)."""
        check_frames(gen, gt, "FID")
        for side, frames in (("gen", gen), ("gt", gt)):
            feats = self.feature_net(frames.float()).double()  # (B, D)
            if feats.ndim != 2:
                raise ValueError(f"FID: feature_net must return (B, D) features, got {tuple(feats.shape)}")
            if getattr(self, f"{side}_sum").numel() == 0:
                setattr(self, f"{side}_sum", feats.new_zeros(feats.shape[1]))
                setattr(self, f"{side}_outer", feats.new_zeros(feats.shape[1], feats.shape[1]))
            setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + feats.sum(0))
            setattr(self, f"{side}_outer", getattr(self, f"{side}_outer") + feats.T @ feats)  # (D, D)
            setattr(self, f"{side}_count", getattr(self, f"{side}_count") + feats.shape[0])

    def _gaussian(self, side: str) -> tuple[np.ndarray, np.ndarray]:
        n = int(getattr(self, f"{side}_count"))
        if n < 2:
            raise RuntimeError(f"FID.compute: needs at least 2 frames per set, got {n} ({side})")
        mean = getattr(self, f"{side}_sum") / n  # (D,)
        cov = (getattr(self, f"{side}_outer") - n * torch.outer(mean, mean)) / (n - 1)  # (D, D) unbiased
        return mean.cpu().numpy(), cov.cpu().numpy()

    def compute(self) -> torch.Tensor:
        from pytorch_fid.fid_score import calculate_frechet_distance

        (mu1, s1), (mu2, s2) = self._gaussian("gen"), self._gaussian("gt")
        return torch.tensor(max(float(calculate_frechet_distance(mu1, s1, mu2, s2)), 0.0))
