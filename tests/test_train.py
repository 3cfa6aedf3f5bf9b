"""src.train end to end on the real configs: every experiment file, checkpoints and run info, resume,
and DDP on two CPU processes."""

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from src.train import train
from src.utils.metrics import LastValidatedStep, metric_value

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "experiments"
EXPERIMENTS = sorted(path.stem for path in (CONFIG_DIR / "experiment").glob("*.yaml"))

# 128 samples / batch 32 = 4 steps per epoch (2 per rank under 2-process DDP); a checkpoint every 4 steps
SHORT_RUN = ["experiment=tiny", "data.num_train=128", "callbacks.model_checkpoint.every_n_train_steps=4"]


def checkpoint_names(run_dir: Path) -> list[str]:
    return sorted(path.name for path in (run_dir / "checkpoints").glob("*.ckpt"))


def test_experiments_exist():
    assert "tiny" in EXPERIMENTS, f"no experiment files found in {CONFIG_DIR / 'experiment'}"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_fast_dev_run(experiment, make_config, request):
    """Every experiment composes and runs one batch of train/val/test on the CPU. An experiment that
    needs data on disk gets it from a fixture named `experiment_<name>_overrides` (in conftest.py)
    returning the extra overrides that point it there."""
    try:
        extra = request.getfixturevalue(f"experiment_{experiment}_overrides")
    except pytest.FixtureLookupError:
        extra = []
    cfg = make_config(f"experiment={experiment}", "debug=fdr", *extra)
    metrics, objects = train(cfg)
    assert objects["trainer"].state.finished
    # the metric sweeps optimise must be one the experiment logs
    assert math.isfinite(metric_value(metrics, cfg.optimized_metric))


def _experiment_using(group: str, option: str) -> str:
    """An experiment that selects `group=option` (data and model options belong together), else tiny."""
    for name in EXPERIMENTS:
        if f"override /{group}: {option}" in (CONFIG_DIR / "experiment" / f"{name}.yaml").read_text():
            return name
    return "tiny"


@pytest.mark.parametrize("group", ["trainer", "logger", "callbacks", "debug", "paths", "data", "model"])
def test_config_group_options_compose(group, make_config):
    for option in sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml")):
        experiment = _experiment_using(group, option) if group in ("data", "model") else "tiny"
        cfg = make_config(f"experiment={experiment}", f"{group}={option}")
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def test_missing_experiment_is_a_clear_error(make_config):
    with pytest.raises(ValueError, match="experiment=tiny"):
        train(make_config())


def test_run_writes_checkpoints_config_and_git_sha(make_config, tmp_path):
    metrics, objects = train(make_config(*SHORT_RUN, "trainer.max_steps=8"))
    run = tmp_path / "run"
    assert objects["trainer"].global_step == 8
    assert checkpoint_names(run) == ["last.ckpt", "step_0000004.ckpt", "step_0000008.ckpt"]
    assert math.isfinite(metrics["val/loss"]) and math.isfinite(metrics["test/loss"])

    text = (run / "config_resolved.yaml").read_text()
    assert "${" not in text, "config_resolved.yaml still has interpolations"
    assert OmegaConf.create(text).trainer.max_steps == 8

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    expected = head.stdout.strip() if head.returncode == 0 else "unknown"
    sha = (run / "git_sha.txt").read_text().strip()
    assert sha.removesuffix("-dirty") == expected

    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 8
    assert ckpt["run_info"]["config"]["trainer"]["max_steps"] == 8 and ckpt["run_info"]["git_sha"] == sha


@pytest.mark.parametrize("how", ["path", "last"])
def test_resume_continues_at_the_saved_step(how, make_config, tmp_path):
    train(make_config(*SHORT_RUN, "trainer.max_steps=8", "test=false", run="first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    if how == "path":  # from any checkpoint file, into a new run folder
        resume = [f"ckpt_path='{last}'"]
    else:  # `last` of the same run folder
        resume = ["ckpt_path=last"]
    run = "second" if how == "path" else "first"
    _, objects = train(make_config(*SHORT_RUN, "trainer.max_steps=12", "test=false", *resume, run=run))
    assert objects["trainer"].ckpt_path == str(last)  # what fit restored from
    assert objects["trainer"].global_step == 12
    if how == "path":  # started at step 8: no step 4 or 8 checkpoint of its own
        assert checkpoint_names(tmp_path / "second") == ["last.ckpt", "step_0000012.ckpt"]


def test_a_run_that_stops_between_periodic_saves_saves_its_last_step(make_config, tmp_path):
    """every_n_train_steps=4, max_steps=6: Lightning alone would leave last.ckpt at step 4."""
    train(make_config(*SHORT_RUN, "trainer.max_steps=6", "test=false", run="first"))
    assert checkpoint_names(tmp_path / "first") == ["last.ckpt", "step_0000004.ckpt", "step_0000006.ckpt"]
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 6
    _, objects = train(make_config(*SHORT_RUN, "trainer.max_steps=9", "test=false", f"ckpt_path='{last}'",
                                   run="second"))
    assert objects["trainer"].global_step == 9
    assert checkpoint_names(tmp_path / "second") == ["last.ckpt", "step_0000008.ckpt", "step_0000009.ckpt"]


@pytest.mark.parametrize("max_steps", [2, 6])
def test_a_run_that_stops_between_validations_validates_its_final_weights(max_steps, make_config, tmp_path):
    """4 steps per epoch: max_steps=2 ends fit before any validation, 6 ends it two steps after one.
    The reported val metrics must describe the final weights, and a sweep's optimized_metric must exist."""
    cfg = make_config(*SHORT_RUN, f"trainer.max_steps={max_steps}", "test=false", run="first")
    metrics, objects = train(cfg)
    last_validated = next(cb for cb in objects["trainer"].callbacks if isinstance(cb, LastValidatedStep))
    assert last_validated.step == (4 if max_steps == 6 else None)
    expected = objects["trainer"].validate(objects["system"], datamodule=objects["datamodule"], verbose=False)
    assert metrics["val/loss"] == pytest.approx(expected[0]["val/loss"])
    # the same run resumed after it finished: fit does nothing, the metrics still come
    again, _ = train(make_config(*SHORT_RUN, f"trainer.max_steps={max_steps}", "test=false", "ckpt_path=last",
                                 run="first"))
    assert again["val/loss"] == pytest.approx(expected[0]["val/loss"])


def test_missing_checkpoint_is_a_clear_error(make_config, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        train(make_config(*SHORT_RUN, f"ckpt_path='{tmp_path / 'nope.ckpt'}'"))


# set by an earlier in-process DDP run (or a launcher around pytest); they make Lightning think it
# is a rank of an existing job
DDP_ENV = {"LOCAL_RANK", "NODE_RANK", "GLOBAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
           "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT"}


def run_train_subprocess(overrides: list[str], timeout: float = 240) -> None:
    """`python -m src.train <overrides>` from the repo root, in a clean environment, in its own
    process group so that a hung DDP job is killed whole."""
    env = {k: v for k, v in os.environ.items()
           if k not in DDP_ENV and not k.startswith(("PL_", "TORCHELASTIC_", "SLURM_"))}
    proc = subprocess.Popen([sys.executable, "-m", "src.train", *overrides], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"src.train {' '.join(overrides)} timed out after {timeout} s:\n{out[-4000:]}")
    assert proc.returncode == 0, f"src.train {' '.join(overrides)} failed:\n{out[-4000:]}"


def test_ddp_two_cpu_processes_train_and_resume(tmp_path):
    common = [*SHORT_RUN, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
              "trainer.enable_progress_bar=false", "test=false", f"paths.log_dir='{tmp_path}'"]
    first, second = tmp_path / "first", tmp_path / "second"
    run_train_subprocess([*common, "trainer.max_steps=4", f"hydra.run.dir='{first}'"])
    # rank 1 was re-launched into rank 0's run folder and wrote nothing but its log there
    assert (first / "train_ddp_process_1.log").exists() and (first / "config_resolved.yaml").exists()
    assert checkpoint_names(first) == ["last.ckpt", "step_0000004.ckpt"]

    last = first / "checkpoints" / "last.ckpt"
    run_train_subprocess([*common, "trainer.max_steps=8", f"ckpt_path='{last}'", f"hydra.run.dir='{second}'"])
    assert checkpoint_names(second) == ["last.ckpt", "step_0000008.ckpt"]
    ckpt = torch.load(second / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 8


def test_wandb_logger_writes_an_offline_run(make_config, tmp_path):
    wandb = pytest.importorskip("wandb")
    train(make_config(*SHORT_RUN, "logger=wandb", "trainer.max_steps=4", "test=false"))
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")), "no offline W&B run written"
    assert wandb.run is None, "the W&B run was left open"
