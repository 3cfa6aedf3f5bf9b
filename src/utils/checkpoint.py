"""StepCheckpoint: Lightning's ModelCheckpoint that also saves the final step.

With ``every_n_train_steps: k`` Lightning saves at multiples of k only, and at the end of training it writes
``last.ckpt`` only if nothing was ever saved: a run of ``max_steps`` not divisible by k ended with a
``last.ckpt`` up to k - 1 steps old (``make demo``'s 600-step stage 1 at k = 500 lost its last 100 steps).
Here the end of fit saves ``step_{max_steps}.ckpt`` and ``last.ckpt`` unless that step is already saved,
so ``last.ckpt`` is always the trained model and resumes at the step the run stopped.
"""
from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class StepCheckpoint(ModelCheckpoint):
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
        super().on_train_end(trainer, pl_module)
