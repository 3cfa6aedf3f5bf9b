"""Image metrics of stage 2 on (B, 3, H, W) frames in [0, 1], shared by training (``RenderSystem``) and
``eval.reconstruct``, each optionally inside a (B, 1, H, W) region (the dilated lip mask):

- ``psnr``: 10 log10(1 / MSE) over the image or the region;
- ``laplacian_variance``: variance of the Laplacian of the grey image in the region, the usual focus measure;
  ``lip_sharpness`` is its ratio prediction / truth (1 = as sharp as the truth; blur lowers it, ghost edges
  raise it);
- ``gradient_similarity``: GMSD's gradient-magnitude similarity (Xue et al. 2014), (2 g_p g_t + c) /
  (g_p^2 + g_t^2 + c) of the grey images' Sobel magnitudes, averaged in the region: 1 = every edge where the
  truth has it, as strong; blur and ghost edges both lower it;
- ``dilate``: a mask grown by a square of ``pixels`` (max pooling).

Letters: b batch, h w rows and columns.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4
GMS_C = 170 / 255**2  # GMSD's constant, for images in [0, 1]


def psnr(image: torch.Tensor, target: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B,) PSNR in dB, over the whole image or a (B, 1, H, W) region."""
    sq = (image - target) ** 2
    if region is None:
        mse = sq.mean((1, 2, 3))
    else:
        mse = (sq * region).sum((1, 2, 3)) / (region.sum((1, 2, 3)) * 3).clamp(min=1.0)
    return 10 * torch.log10(1.0 / mse.clamp(min=1e-10))


def dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """(B, 1, H, W) mask grown by ``pixels`` in every direction."""
    k = 2 * pixels + 1
    return F.max_pool2d(mask, k, stride=1, padding=pixels) if pixels > 0 else mask


def _weights(region: torch.Tensor) -> torch.Tensor:
    return region / region.sum((1, 2, 3), keepdim=True).clamp(min=1.0)  # (B, 1, H, W), sums to 1


def laplacian_variance(images: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W), (B, 1, H, W) -> (B,) variance of the Laplacian of the grey image inside the region."""
    grey = images.mean(1, keepdim=True)  # (B, 1, H, W)
    lap = F.conv2d(grey, LAPLACIAN.to(images)[None, None], padding=1)
    w = _weights(region)
    mean = (lap * w).sum((1, 2, 3))
    return ((lap - mean[:, None, None, None]) ** 2 * w).sum((1, 2, 3))


def lip_sharpness(pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """(B,) Laplacian variance of the prediction over the truth's, inside the region."""
    return laplacian_variance(pred, region) / laplacian_variance(target, region).clamp(min=1e-8)


def gradient_similarity(pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) x 2, region (B, 1, H, W) -> (B,) mean gradient-magnitude similarity inside the region."""
    sobel = torch.stack([SOBEL_X, SOBEL_X.T])[:, None].to(pred)  # (2, 1, 3, 3)
    g_p, g_t = (F.conv2d(x.mean(1, keepdim=True), sobel, padding=1).norm(dim=1, keepdim=True)
                for x in (pred, target))  # (B, 1, H, W) each
    gms = (2 * g_p * g_t + GMS_C) / (g_p ** 2 + g_t ** 2 + GMS_C)  # (B, 1, H, W)
    return (gms * _weights(region)).sum((1, 2, 3))
