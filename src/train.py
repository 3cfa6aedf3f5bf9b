"""Training entry: compose the config, build everything from it, fit, test.

    python -m src.train experiment=<name> [key=value ...]

The config root is experiments/ (train.yaml). Every object is built from its `_target_`; this file
only wires them together. The run folder (outputs/runs/<task_name>/<time>/) gets the resolved config,
the git SHA, checkpoints (step_XXXXXXX.ckpt, last.ckpt) and logs.
"""

import os
from pathlib import Path

# paths.root_dir in the config reads this; set before Hydra resolves anything, inherited by DDP ranks
os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))

import hydra  # noqa: E402
import lightning as L  # noqa: E402
from lightning.pytorch.utilities.model_helpers import is_overridden  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

import src.utils.resolvers  # noqa: E402,F401  (${face_model:...} in the configs)
from src.utils.instantiate import close_loggers, instantiate_callbacks, instantiate_loggers  # noqa: E402
from src.utils.metrics import LastValidatedStep, format_metrics, metric_value  # noqa: E402
from src.utils.run_info import RunInfoInCheckpoint, run_info, save_run_info  # noqa: E402


def train(cfg: DictConfig) -> tuple[dict, dict]:
    """Fits and/or tests as the config says. Returns (metrics, objects): the trainer's final logged
    metrics, and the built datamodule, system and trainer."""
    for group in ("data", "model"):
        if cfg.get(group) is None:
            raise ValueError(f"no `{group}` config: pick an experiment, e.g. `python -m src.train "
                             f"experiment=tiny` (files in experiments/experiment/)")
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path not in (None, "last", "best", "hpc") and not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path!r}: no such checkpoint file")
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    system: L.LightningModule = hydra.utils.instantiate(cfg.model)
    info = run_info(cfg)
    last_validated = LastValidatedStep()
    callbacks = [*instantiate_callbacks(cfg.get("callbacks")), RunInfoInCheckpoint(info), last_validated]
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)

    save_run_info(info, cfg.paths.output_dir)
    for logger in trainer.loggers:
        logger.log_hyperparams({"git_sha": info["git_sha"], **info["config"]})

    try:
        metrics = {}
        if cfg.get("train"):
            trainer.fit(system, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
            metrics.update(trainer.callback_metrics)
            if (last_validated.step != trainer.global_step and trainer.limit_val_batches
                    and is_overridden("validation_step", system)):
                # fit stopped between validations (max_steps inside an epoch, or a resumed run that had
                # already finished): validate the final weights so the reported val metrics describe them
                trainer.validate(system, datamodule=datamodule)
                metrics.update(trainer.callback_metrics)
        if cfg.get("test"):
            # after fit: the weights as they are now; test-only: the weights from ckpt_path
            trainer.test(system, datamodule=datamodule, ckpt_path=None if cfg.get("train") else ckpt_path,
                         weights_only=True)
            metrics.update(trainer.callback_metrics)
    finally:
        close_loggers()
    return metrics, {"datamodule": datamodule, "system": system, "trainer": trainer}


@hydra.main(version_base="1.3", config_path="../experiments", config_name="train.yaml")
def main(cfg: DictConfig) -> float | None:
    metrics, objects = train(cfg)
    table = format_metrics(metrics)
    if table and objects["trainer"].is_global_zero:
        print(f"final metrics ({cfg.paths.output_dir}):\n{table}")
    return metric_value(metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
