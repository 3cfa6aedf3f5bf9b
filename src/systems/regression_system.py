"""Supervised regression around any network: MSE loss, optimiser and scheduler from config, logging.

Used by the tests-only `tiny` experiment; the smallest example of how a system wraps an injected
network. Logs `train/loss`, `val/loss`, `test/loss`.
"""

from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn


class RegressionSystem(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
    ) -> None:
        """`optimizer` and `scheduler` are partials (`_partial_: true`) still missing the parameters and
        the optimiser; the scheduler is stepped after every optimiser step."""
        super().__init__()
        self.net = net
        self.optimizer = optimizer
        self.scheduler = scheduler

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch  # (B, D_in), (B, D_out)
        loss = F.mse_loss(self.net(x), y)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=not on_step, prog_bar=True,
                 sync_dist=not on_step, batch_size=x.shape[0])
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> dict:
        optimizer = self.optimizer(params=self.parameters())
        if self.scheduler is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
