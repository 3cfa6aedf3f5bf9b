"""Shared fixtures: the real Hydra config (experiments/), composed with tiny overrides, writing only
under the test's tmp_path."""

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "experiments"

# what src/train.py does for `python -m src.train`; paths.root_dir reads it
os.environ.setdefault("PROJECT_ROOT", str(REPO_ROOT))


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """train.yaml with `overrides`, the run folder set to `output_dir` (no Hydra run needed)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(
            config_name="train.yaml",
            overrides=[
                f"paths.root_dir='{REPO_ROOT}'",
                f"paths.log_dir='{output_dir.parent}'",
                f"paths.output_dir='{output_dir}'",
                "trainer.enable_progress_bar=false",
                *overrides,
            ],
        )


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., DictConfig]:
    """`make_config("experiment=tiny", "debug=fdr", run="first")`: the composed config of a run that
    writes to tmp_path/<run>/."""

    def make(*overrides: str, run: str = "run") -> DictConfig:
        return compose_config(list(overrides), tmp_path / run)

    return make
