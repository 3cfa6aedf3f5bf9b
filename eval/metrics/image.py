"""PSNR and SSIM (paper 4.2, visual quality) of generated vs ground-truth face crops.

Contract of ``update(gen, gt)``: two float tensors (B, 3, H, W) in [0, 1], frame i of ``gen`` aligned with
frame i of ``gt`` (the same crop box, ``eval.crops``). Both metrics are computed per frame and averaged
over all frames given since the last ``reset`` (one video, in the benchmark):

* PSNR: 10 log10(1 / MSE) over the frame's pixels and channels (data range 1); identical frames give
  +inf, which the table prints as "inf" (the paper prints N/A for its GT row).
* SSIM: torchmetrics' structural similarity (11x11 Gaussian window, sigma 1.5, K = 0.01 / 0.03, data
  range 1), averaged over the three channels.
"""
from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def check_frames(gen: torch.Tensor, gt: torch.Tensor, name: str) -> None:
    """Raise unless gen and gt are float (B, 3, H, W) tensors of one shape with values in [0, 1]."""
    for arg, x in (("gen", gen), ("gt", gt)):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 4 or x.shape[1] != 3:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            dtype = getattr(x, "dtype", None)
            raise ValueError(f"{name}.update: {arg} must be a float tensor (B, 3, H, W) in [0, 1], got {got} {dtype}")
        lo, hi = (float(v) for v in torch.aminmax(x.detach())) if x.numel() else (0.0, 0.0)
        if lo < 0 or hi > 1:
            raise ValueError(f"{name}.update: {arg} values must lie in [0, 1], got [{lo:.3g}, {hi:.3g}] "
                             "(divide uint8 frames by 255)")
    if gen.shape != gt.shape:
        raise ValueError(f"{name}.update: gen {tuple(gen.shape)} and gt {tuple(gt.shape)} must have the same shape")


class _FrameMean(Metric):
    """Mean over frames of a per-frame score (sum and count states)."""

    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def per_frame(self, gen: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def update(self, gen: torch.Tensor, gt: torch.Tensor) -> None:
        check_frames(gen, gt, type(self).__name__)
        scores = self.per_frame(gen.float(), gt.float())  # (B,)
        self.total += scores.double().sum()
        self.count += scores.numel()

    def compute(self) -> torch.Tensor:
        if self.count == 0:
            raise RuntimeError(f"{type(self).__name__}.compute: no frames were given to update()")
        return (self.total / self.count).float()


class PSNR(_FrameMean):
    """Peak signal-to-noise ratio in dB, per frame, averaged (module docstring). Higher is better."""

    def per_frame(self, gen: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        return peak_signal_noise_ratio(gen, gt, data_range=1.0, reduction="none", dim=(1, 2, 3))  # (B,)


class SSIM(_FrameMean):
    """Structural similarity, per frame, averaged (module docstring). 1 for identical frames."""

    def per_frame(self, gen: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        return structural_similarity_index_measure(gen, gt, data_range=1.0, reduction="none")  # (B,)
