"""Stage 2 training: the dual-attention face renderer (``src.models.renderer``) on frames, PNCCs and lip
masks from ``src.data.render_datamodule`` (docs/design.md, "Stage 2"; paper 3.2).

Losses (the paper is silent; our choice):
- ``w_l1`` * L1 over the image: the reconstruction term every reference-based renderer uses;
- ``w_lip`` * L1 inside the (dilated) target lip mask, normalised by the mask area: the mouth is ~2% of
  the crop, so without it a blurry mouth costs almost nothing, and lip sync lives there;
- ``w_perceptual`` * LPIPS-VGG (``src.models.lpips_net``, backbone from a local file): sharper texture than
  L1 alone; off (0) when no backbone weights are configured, since random features measure nothing;
- ``w_dssim`` * (1 - SSIM) over the image (11x11 Gaussian windows, torchmetrics): a structural term for when no
  perceptual backbone file is at hand (L1 alone is content with a locally averaged face; off by default);
- ``w_texture`` * texture-energy error in the lip region (``texture_energy_error``): the Laplacian magnitude per
  4x4 patch of prediction and truth should match, so an uncertain mouth is not drawn as a blur (off by default);
  ``w_texture_image`` the same over the whole crop;
- ``w_adv`` * hinge adversarial loss of a PatchGAN (optional, ``discriminator``), trained in turn with
  manual optimisation. A lip-sync expert term is not implemented yet (it needs the SyncNet of the
  evaluation package).

Metrics (``val/``, ``test/``): ``psnr``, ``ssim`` (torchmetrics), ``lpips`` (only with calibrated weights);
the same for the *nearest reference* baseline (``*_nearest_ref``: the reference whose PNCC is closest to
the target PNCC, copied); ``lip_psnr`` (PSNR inside the lip mask); ``lip_sharpness``: variance of the
Laplacian inside the lip mask, prediction / ground truth (1 = as sharp as the truth; blur lowers it, ghost
edges raise it); ``lip_gms`` (and ``_nearest_ref``): gradient-magnitude similarity to the truth inside the
lip mask (1 = the same edges; blur and ghost edges both lower it).
A sample grid (references, target PNCC, prediction, ground truth) is written to ``<run>/samples/`` at every
validation, and sent to W&B when that logger is on.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.functional.image import structural_similarity_index_measure as ssim

from src.metrics.image import LAPLACIAN, dilate, gradient_similarity, lip_sharpness, psnr

EVAL_PREFIXES = ("val", "test")


class RenderSystem(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        perceptual: nn.Module | None = None,
        lpips_metric: nn.Module | None = None,
        discriminator: nn.Module | None = None,
        optimizer_d: Callable[..., torch.optim.Optimizer] | None = None,
        w_l1: float = 1.0,
        w_lip: float = 1.0,
        w_perceptual: float = 0.0,
        w_adv: float = 0.0,
        w_texture: float = 0.0,
        w_texture_image: float = 0.0,
        w_dssim: float = 0.0,
        lip_dilation: int = 5,
        samples: int = 4,
        face_model: str = "procedural",
    ) -> None:
        """``net``: a ``DualAttentionRenderer``. ``perceptual``: an ``LPIPS`` module (VGG) for the perceptual
        loss; ``lpips_metric``: an ``LPIPS`` (AlexNet) for the metric (logged only when calibrated).
        ``discriminator`` with ``optimizer_d``: the optional PatchGAN (needs ``w_adv`` > 0). ``face_model``: the
        spec the training PNCCs were rendered with; kept in the checkpoint's hyper-parameters so that dubbing
        renders with the same model."""
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "perceptual", "lpips_metric",
                                          "discriminator", "optimizer_d"])
        if w_perceptual > 0 and perceptual is None:
            raise ValueError("RenderSystem: w_perceptual > 0 needs a `perceptual` module (LPIPS-VGG)")
        if (w_adv > 0) != (discriminator is not None) or (discriminator is not None and optimizer_d is None):
            raise ValueError("RenderSystem: the adversarial term needs w_adv > 0, a discriminator and optimizer_d, "
                             "all three or none")
        self.net, self.optimizer, self.scheduler = net, optimizer, scheduler
        self.perceptual, self.lpips_metric = perceptual, lpips_metric
        self.discriminator, self.optimizer_d = discriminator, optimizer_d
        self.weights = {"l1": w_l1, "lip": w_lip, "perceptual": w_perceptual, "adv": w_adv, "texture": w_texture,
                        "texture_image": w_texture_image, "dssim": w_dssim}
        self.lip_dilation, self.n_samples = lip_dilation, samples
        self.automatic_optimization = discriminator is None
        names = ["loss", "psnr", "ssim", "psnr_nearest_ref", "ssim_nearest_ref", "lip_psnr", "lip_psnr_nearest_ref",
                 "lip_sharpness", "lip_gms", "lip_gms_nearest_ref", "lpips", "lpips_nearest_ref"]
        self.metrics = nn.ModuleDict({p: nn.ModuleDict({n: MeanMetric() for n in names}) for p in EVAL_PREFIXES})
        self._sample_batch: dict | None = None

    def forward(self, batch: dict) -> torch.Tensor:
        return self.net(batch["tgt_pncc"], batch["tgt_lip_mask"], batch["face_ref_img"], batch["face_ref_pncc"],
                        batch["lip_ref_img"], batch["lip_ref_pncc"])

    # -------------------------------------------------------------------------------------- losses --
    def lip_region(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) lip mask dilated by ``lip_dilation`` pixels (the lip edge and chin matter too)."""
        return dilate(mask, self.lip_dilation)

    def losses(self, pred: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        target = batch["tgt_img"]
        region = self.lip_region(batch["tgt_lip_mask"])  # (B, 1, H, W)
        error = (pred - target).abs()  # (B, 3, H, W)
        terms = {"l1": error.mean(),
                 "lip": (error * region).sum() / (region.sum() * 3).clamp(min=1.0)}
        if self.weights["perceptual"] > 0:
            terms["perceptual"] = self.perceptual(pred, target).mean()
        if self.weights["adv"] > 0:
            terms["adv"] = -self.discriminator(pred * 2 - 1).mean()  # hinge generator loss
        if self.weights["texture"] > 0:
            terms["texture"] = texture_energy_error(pred, target, region)
        if self.weights["texture_image"] > 0:
            terms["texture_image"] = texture_energy_error(pred, target, torch.ones_like(region))
        if self.weights["dssim"] > 0:
            terms["dssim"] = 1.0 - ssim(pred, target, data_range=1.0)
        terms["loss"] = sum(self.weights[k] * v for k, v in terms.items())
        return terms

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        pred = self(batch)
        terms = self.losses(pred, batch)
        B = pred.shape[0]
        if not self.automatic_optimization:
            self._manual_step(terms["loss"], pred.detach(), batch["tgt_img"])
        self.log("train/loss", terms["loss"], on_step=True, prog_bar=True, batch_size=B)
        self.log_dict({f"train/{k}": v for k, v in terms.items() if k != "loss"}, on_step=True, batch_size=B)
        return terms["loss"]

    def _manual_step(self, loss_g: torch.Tensor, fake: torch.Tensor, real: torch.Tensor) -> None:
        """Generator step, then a hinge discriminator step (PatchGAN), with the schedulers stepped."""
        opt_g, opt_d = self.optimizers()
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        opt_g.step()
        d_real, d_fake = self.discriminator(real * 2 - 1), self.discriminator(fake * 2 - 1)
        loss_d = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        opt_d.step()
        for scheduler in ((self.lr_schedulers() or []) if isinstance(self.lr_schedulers(), list)
                          else [self.lr_schedulers()]):
            if scheduler is not None:
                scheduler.step()
        self.log("train/loss_d", loss_d, on_step=True, batch_size=real.shape[0])

    # ---------------------------------------------------------------------------------- evaluation --
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "val", batch_idx)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test", batch_idx)

    def _evaluate(self, batch: dict, prefix: str, batch_idx: int) -> None:
        pred = self(batch).clamp(0, 1)
        target = batch["tgt_img"]
        nearest = nearest_reference(batch)
        m = self.metrics[prefix]
        B = pred.shape[0]
        m["loss"].update(self.losses(pred, batch)["loss"], weight=B)
        region = self.lip_region(batch["tgt_lip_mask"])
        for suffix, image in (("", pred), ("_nearest_ref", nearest)):
            m[f"psnr{suffix}"].update(psnr(image, target))
            m[f"ssim{suffix}"].update(ssim(image, target, data_range=1.0, reduction="none"))
            m[f"lip_psnr{suffix}"].update(psnr(image, target, region))
            m[f"lip_gms{suffix}"].update(gradient_similarity(image, target, region))
            if self.lpips_metric is not None and self.lpips_metric.calibrated:
                m[f"lpips{suffix}"].update(self.lpips_metric(image, target))
        m["lip_sharpness"].update(lip_sharpness(pred, target, region))
        if prefix == "val":
            self._collect_samples(batch, pred, nearest)

    def _collect_samples(self, batch: dict, pred: torch.Tensor, nearest: torch.Tensor) -> None:
        """Keep the first item of each clip until ``samples`` rows: the grid shows several held-out people, not
        one clip's frames (the validation order is fixed, so every grid shows the same frames)."""
        rows = self._sample_batch if self._sample_batch is not None else {"keys": []}
        images = {"pred": pred, "nearest": nearest, **{k: batch[k] for k in
                                                       ("tgt_img", "tgt_pncc", "face_ref_img", "lip_ref_img")}}
        for b, key in enumerate(batch["key"]):
            if len(rows["keys"]) >= self.n_samples or key in rows["keys"]:
                continue
            rows["keys"].append(key)
            for name, value in images.items():
                rows.setdefault(name, []).append(value[b].cpu())
        self._sample_batch = rows

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")
        if self._sample_batch is not None and self._sample_batch["keys"] and self.trainer.is_global_zero:
            self._write_samples({k: torch.stack(v) for k, v in self._sample_batch.items() if k != "keys"})
        self._sample_batch = None

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def _log_metrics(self, prefix: str) -> None:
        m = self.metrics[prefix]
        values = {k: metric.compute() for k, metric in m.items() if metric.update_count}
        self.log_dict({f"{prefix}/{k}": v.float() for k, v in values.items()})
        for metric in m.values():
            metric.reset()

    def _write_samples(self, s: dict) -> None:
        """One row per sample: face ref 0, lip refs 0-2, target PNCC, nearest ref, prediction, ground truth."""
        rows = []
        for b in range(s["pred"].shape[0]):
            tiles = [s["face_ref_img"][b, 0], *s["lip_ref_img"][b, :3], s["tgt_pncc"][b], s["nearest"][b],
                     s["pred"][b], s["tgt_img"][b]]
            rows.append(torch.cat(tiles, dim=2))  # (3, H, k W)
        grid = (torch.cat(rows, dim=1).clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        folder = Path(self.trainer.default_root_dir) / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step_{self.global_step:07d}.png"
        import cv2

        cv2.imwrite(str(path), grid[..., ::-1])
        for logger in self.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="val/samples", images=[grid], step=self.global_step,
                                 caption=["face ref | lip refs | target PNCC | nearest ref | prediction | truth"])

    # ---------------------------------------------------------------------------------- optimisers --
    def configure_optimizers(self):
        opt_g = self.optimizer(params=[p for p in self.net.parameters() if p.requires_grad])
        sched_g = None if self.scheduler is None else self.scheduler(optimizer=opt_g)
        if self.discriminator is None:
            if sched_g is None:
                return {"optimizer": opt_g}
            return {"optimizer": opt_g, "lr_scheduler": {"scheduler": sched_g, "interval": "step"}}
        opt_d = self.optimizer_d(params=self.discriminator.parameters())
        return ([opt_g, opt_d], [sched_g] if sched_g is not None else [])


def texture_energy_error(pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor, cell: int = 4) -> torch.Tensor:
    """Mean |E(pred) - E(target)| inside the region, E = the Laplacian magnitude of the grey image averaged over
    ``cell`` x ``cell`` patches: how much fine texture each patch holds, not where its edges are. L1 alone prefers a
    blur wherever an edge's exact place is uncertain (the mean of shifted edges is flat); this term says that the
    patch must still be as textured as the truth's (teeth, lip creases)."""
    def energy(x: torch.Tensor) -> torch.Tensor:
        lap = F.conv2d(x.mean(1, keepdim=True), LAPLACIAN.to(x)[None, None], padding=1)  # (B, 1, H, W)
        return F.avg_pool2d(lap.abs(), cell, stride=cell)  # (B, 1, H / cell, W / cell)

    weight = F.avg_pool2d(region, cell, stride=cell)  # (B, 1, H / cell, W / cell) share of each patch in the region
    return ((energy(pred) - energy(target)).abs() * weight).sum() / weight.sum().clamp(min=1.0)


def nearest_reference(batch: dict) -> torch.Tensor:
    """The "nearest reference frame" baseline: per sample, the reference image (face or lip) whose PNCC is
    closest (L1) to the target PNCC -> (B, 3, H, W)."""
    images = torch.cat([batch["face_ref_img"], batch["lip_ref_img"]], 1)  # (B, N, 3, H, W)
    pnccs = torch.cat([batch["face_ref_pncc"], batch["lip_ref_pncc"]], 1)
    distance = (pnccs - batch["tgt_pncc"][:, None]).abs().mean((2, 3, 4))  # (B, N)
    best = distance.argmin(1)
    return images[torch.arange(len(best)), best]
