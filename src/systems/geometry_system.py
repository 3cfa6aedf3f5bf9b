"""Stage 1 training: the style-aware geometry network (``src.models.geometry``) on fitted 3DMM
coefficients (docs/design.md, "Stage 1"; paper 3.1).

The system turns a batch of coefficients (``src.data.geometry_datamodule``) into vertices with the face
model (a buffer-only module, on the training device), runs the network and scores it.

Network I/O, face-model independent (``src.geometry.net_units``): vertices relative to the model's mean shape
in centimetres (mm / 10), so the same widths and learning rates suit the procedural model, ICT-FaceKit and BFM.

- input: audio (B, 640 T); reference expression-only vertices Vtx_exp (B, R, L, 3) and their mask;
  identity template Vtx_temp (B, L, 3);
- output: lower-face expression displacements (B, T, |lower|, 3), i.e. M(alpha, beta_t)[lower] - M(alpha, 0)[lower]
  (the model is linear: identity cancels, so this is (Vtx_exp_t - mean)[lower]).

Losses (the paper is silent; our choice):
- ``w_lower`` * mean squared vertex distance over the lower face (mm^2): the standard 3D talking-head
  reconstruction term (VOCA, FaceFormer);
- ``w_lip`` * the same over the lip vertices only: lips carry lip sync and are ~20% of the lower face, so
  without it the cheeks and chin dominate the average;
- ``w_vel`` * mean squared error of the frame-to-frame velocities (mm^2): penalises jitter and matches the
  speed of articulation, which is part of a speaker's style.

Metrics (``val/``, ``val_seen/`` (held-out clips of training speakers), ``test/``):
- ``lve``: lip vertex error (mm), max over lip vertices per frame, averaged;
- ``lve_mean_expr``: the same for a "mean expression" baseline, predicting the running mean of the
  training targets for every frame;
- ``mouth_corr``: Pearson correlation of predicted and true mouth opening over all frames;
- ``style_amp_error`` / ``style_amp_ratio``: per-speaker amplitude of the mouth opening, predicted / true
  (``src.metrics.geometry.SpeakerAmplitude``);
- ``loss`` and its terms.
"""
from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric, PearsonCorrCoef

from src.geometry import net_units
from src.geometry.compose import compose_canonical
from src.metrics.geometry import SpeakerAmplitude, lip_vertex_error
from src.models.face_model import load_face_model

EVAL_PREFIXES = ("val", "val_seen", "test")


class GeometrySystem(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        face_model: str = "procedural",
        w_lower: float = 1.0,
        w_lip: float = 1.0,
        w_vel: float = 1.0,
    ) -> None:
        """``net``: a ``StyleAwareGeometry`` (built by Hydra, passed in). ``face_model``: the spec the shards
        were fitted with (``load_face_model``); its buffers are part of the checkpoint, so a checkpoint
        always carries the model it was trained for."""
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.net = net
        self.optimizer, self.scheduler = optimizer, scheduler
        self.face_model = load_face_model(face_model)
        self.weights = {"lower": w_lower, "lip": w_lip, "vel": w_vel}
        lower = self.face_model.lower
        position = torch.full((self.face_model.n_vertices,), -1, dtype=torch.long)
        position[lower] = torch.arange(len(lower))
        lip_in_lower = position[self.face_model.lip]
        if (lip_in_lower < 0).any():
            raise ValueError(f"face model {face_model!r}: lip vertices outside the lower face")
        self.register_buffer("lip_in_lower", lip_in_lower, persistent=False)
        n_out = getattr(getattr(net, "d_vtx", None), "n_lower", None)
        if n_out is not None and n_out != len(lower):
            raise ValueError(f"net.d_vtx predicts {n_out} lower-face vertices but face model {face_model!r} has "
                             f"{len(lower)}; set the decoder's n_lower to the face model's")
        # running mean of the training targets: the "mean expression" baseline
        self.register_buffer("target_sum", torch.zeros(len(lower), 3, dtype=torch.float64))
        self.register_buffer("target_count", torch.zeros((), dtype=torch.float64))
        self.metrics = nn.ModuleDict({p: nn.ModuleDict({
            "loss": MeanMetric(), "lve": MeanMetric(), "lve_mean_expr": MeanMetric(),
            "mouth_corr": PearsonCorrCoef(), "style": SpeakerAmplitude()}) for p in EVAL_PREFIXES})

    # ------------------------------------------------------------------------------------ geometry --
    def vertices(self, batch: dict) -> dict[str, torch.Tensor]:
        """Batch coefficients -> network inputs (cm) and targets (mm)."""
        fm = self.face_model
        beta, ref_beta, alpha = batch["beta"], batch["ref_beta"], batch["alpha"]
        (B, T, K), R = beta.shape, ref_beta.shape[1]
        target = net_units.lower_face_mm(fm, beta.reshape(B * T, K))  # (B*T, |lower|, 3) mm
        ref = net_units.expression_input(fm, ref_beta.reshape(B * R, K))  # (B*R, L, 3) cm
        return {
            "target": target.reshape(B, T, *target.shape[1:]),  # (B, T, |lower|, 3) mm
            "vtx_exp_ref": ref.reshape(B, R, *ref.shape[1:]),  # (B, R, L, 3) cm
            "vtx_temp": net_units.template_input(fm, alpha),  # (B, L, 3) cm
        }

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """-> (predicted lower-face displacements (B, T, |lower|, 3) in mm, the vertices dict)."""
        v = self.vertices(batch)
        T = batch["beta"].shape[1]
        pred = self.net(batch["audio"], T, vtx_exp_ref=v["vtx_exp_ref"], vtx_temp=v["vtx_temp"],
                        ref_mask=batch["ref_mask"], audio_features=batch.get("audio_features"))
        return net_units.output_to_mm(pred), v

    def mouth_opening(self, batch: dict, lower_mm: torch.Tensor) -> torch.Tensor:
        """Mouth opening (B, T) mm of the true canonical geometry with its lower face replaced by lower_mm."""
        fm = self.face_model
        beta, alpha = batch["beta"], batch["alpha"]
        B, T, K = beta.shape
        alpha_t = alpha[:, None].expand(B, T, alpha.shape[1]).reshape(B * T, -1)  # (B*T, K_id)
        verts = compose_canonical(fm, alpha_t, beta.reshape(B * T, K), lower_mm.reshape(B * T, -1, 3))  # (B*T, L, 3)
        return fm.mouth_opening(verts).reshape(B, T)

    # -------------------------------------------------------------------------------------- losses --
    def losses(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        sq = ((pred - target) ** 2).sum(-1)  # (B, T, |lower|) mm^2
        vel = ((pred.diff(dim=1) - target.diff(dim=1)) ** 2).sum(-1)  # (B, T-1, |lower|)
        terms = {"lower": sq.mean(), "lip": sq[..., self.lip_in_lower].mean(), "vel": vel.mean()}
        terms["loss"] = sum(self.weights[k] * terms[k] for k in ("lower", "lip", "vel"))
        return terms

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        pred, v = self(batch)
        terms = self.losses(pred, v["target"])
        loss = terms["loss"]
        with torch.no_grad():
            self.target_sum += v["target"].sum((0, 1)).double()
            self.target_count += v["target"].shape[0] * v["target"].shape[1]
        B = pred.shape[0]
        self.log("train/loss", terms.pop("loss"), on_step=True, prog_bar=True, batch_size=B)
        self.log_dict({f"train/{k}": t for k, t in terms.items()}, on_step=True, batch_size=B)
        return loss

    # ---------------------------------------------------------------------------------- evaluation --
    def _evaluate(self, batch: dict, prefix: str) -> None:
        pred, v = self(batch)
        target = v["target"]
        m = self.metrics[prefix]
        m["loss"].update(self.losses(pred, target)["loss"], weight=pred.shape[0])
        lip = self.lip_in_lower
        m["lve"].update(lip_vertex_error(pred[..., lip, :], target[..., lip, :]))
        if self.target_count > 0:
            mean = (self.target_sum / self.target_count).to(pred.dtype).expand_as(target)
            m["lve_mean_expr"].update(lip_vertex_error(mean[..., lip, :], target[..., lip, :]))
        opening_pred, opening_true = self.mouth_opening(batch, pred), self.mouth_opening(batch, target)
        m["mouth_corr"].update(opening_pred.reshape(-1), opening_true.reshape(-1))
        m["style"].update(batch["speaker"], opening_pred, opening_true)

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, self._val_prefix(dataloader_idx))

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _val_prefix(self, dataloader_idx: int) -> str:
        names = getattr(getattr(self.trainer, "datamodule", None), "val_names", None) or ["val"]
        if dataloader_idx >= len(names) or names[dataloader_idx] not in EVAL_PREFIXES:
            raise ValueError(f"validation loader {dataloader_idx} has no metric prefix (datamodule.val_names={names})")
        return names[dataloader_idx]

    def on_validation_epoch_end(self) -> None:
        names = getattr(getattr(self.trainer, "datamodule", None), "val_names", None) or ["val"]
        for prefix in names:
            self._log_metrics(prefix)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def _log_metrics(self, prefix: str) -> None:
        """Compute (synchronised across ranks by torchmetrics), log, reset. A loader that gave no batch here
        (e.g. no held-out clip fell into the hash range) logs nothing; every rank reads the same evaluation
        shards unless there are more shards than ranks, so ranks agree on this."""
        m = self.metrics[prefix]
        if not m["lve"].update_count:
            return
        values = {"loss": m["loss"].compute(), "lve": m["lve"].compute(), "mouth_corr": m["mouth_corr"].compute()}
        if m["lve_mean_expr"].update_count:
            values["lve_mean_expr"] = m["lve_mean_expr"].compute()
        style = m["style"].compute()
        values["style_amp_error"], values["style_amp_ratio"] = style["amp_error"], style["amp_ratio"]
        values["speakers"] = style["speakers"]
        self.log_dict({f"{prefix}/{k}": v.float() for k, v in values.items()}, prog_bar=False, add_dataloader_idx=False)
        for metric in m.values():
            metric.reset()

    # ---------------------------------------------------------------------------------- optimisers --
    def configure_optimizers(self) -> dict:
        optimizer = self.optimizer(params=[p for p in self.parameters() if p.requires_grad])
        if self.scheduler is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
