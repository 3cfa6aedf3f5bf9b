"""What a run records about itself: the resolved config and the code version (git SHA).

Both go into the run folder (rank 0 only) and into every checkpoint, so a checkpoint says how it was
made even when it is copied away from its run.
"""

import os
import subprocess
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

CONFIG_FILE = "config_resolved.yaml"
GIT_SHA_FILE = "git_sha.txt"


def git_sha(repo_dir: str | Path) -> str:
    """HEAD's commit of the repository holding `repo_dir`, with `-dirty` when tracked files changed;
    else $PERSONATALK_GIT_SHA (set in the Docker image), else "unknown"."""
    fallback = os.environ.get("PERSONATALK_GIT_SHA", "unknown")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=repo_dir, capture_output=True, text=True, timeout=10)

    try:
        head = run("rev-parse", "HEAD")
        if head.returncode != 0:  # not a repository, or no commit yet
            return fallback
        dirty = run("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):  # no git binary
        return fallback


def run_info(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain containers, plus the git SHA of the code that runs."""
    return {"config": OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True),
            "git_sha": git_sha(cfg.paths.root_dir)}


@rank_zero_only
def save_run_info(info: dict[str, Any], output_dir: str | Path) -> None:
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(info["config"]), out / CONFIG_FILE)
    (out / GIT_SHA_FILE).write_text(info["git_sha"] + "\n")


class RunInfoInCheckpoint(Callback):
    """Stores the run info under `checkpoint["run_info"]` in every checkpoint."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        checkpoint["run_info"] = self.info
