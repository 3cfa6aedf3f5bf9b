"""Shared fixtures: the real Hydra config (experiments/), composed with tiny overrides, writing only
under the test's tmp_path."""

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import src.utils.resolvers  # noqa: F401  (registers ${face_model:...}, as src.train does)

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


@pytest.fixture
def one_torch_thread():
    """For tests of tiny tensors: one thread is faster, and immune to a busy machine's thread contention."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def synthetic_shards(tmp_path_factory) -> Path:
    """A tiny synthetic corpus (4 speakers, one 3 s clip each) built into shards: 2 train speakers, 1 val,
    1 test. Ground-truth (sidecar) landmarks and a short fit keep it fast; the detector path is covered by
    tests/test_build.py."""
    from data_prep.build import main as build
    from data_prep.synthetic.generate import main as generate

    corpus = tmp_path_factory.mktemp("geometry_corpus")
    shards = tmp_path_factory.mktemp("geometry_shards")
    generate(["--out", str(corpus), "--speakers", "4", "--clips-per-speaker", "1", "--seconds", "3", "--seed", "11",
              "--workers", "1"])
    assert build(["--source", "synthetic", "--root", str(corpus), "--out", str(shards), "--workers", "1",
                  "--landmarks", "sidecar", "--fit-steps", "60", "--min-seconds", "1", "--val", "0.25",
                  "--test", "0.25"]) == 0
    return shards


# the stage-1 experiments on the tiny shards: short windows, no data workers, a tiny HuBERT
GEOMETRY_TEST_OVERRIDES = ["data.window=16", "data.ref_window=16", "data.min_ref=8", "data.batch_size=4",
                           "data.num_workers=0", "data.train_batches=4", "model/net/e_aud=hubert_tiny"]


def _geometry_overrides(shards: Path) -> list[str]:
    return [f"data.root='{shards}'", *GEOMETRY_TEST_OVERRIDES]


@pytest.fixture
def experiment_geometry_style_overrides(synthetic_shards) -> list[str]:
    return _geometry_overrides(synthetic_shards)


@pytest.fixture
def experiment_geometry_no_style_overrides(synthetic_shards) -> list[str]:
    return _geometry_overrides(synthetic_shards)


@pytest.fixture
def experiment_geometry_demo_overrides(synthetic_shards) -> list[str]:
    return _geometry_overrides(synthetic_shards)


@pytest.fixture
def experiment_geometry_real_overrides(synthetic_shards, tmp_path) -> list[str]:
    """The phone front end stays (it is what the experiment is about), its cache in the test's folder."""
    windows = [o for o in GEOMETRY_TEST_OVERRIDES if not o.startswith("model/net/e_aud")]
    return [f"data.root='{synthetic_shards}'", *windows,
            f"data.audio_features.cache_dir='{tmp_path / 'phones'}'"]


# the stage-2 experiments on the tiny shards: 32 px crops, a narrow network, no perceptual backbone file
RENDER_TEST_OVERRIDES = ["data.image_size=32", "data.batch_size=2", "data.num_workers=0", "data.train_batches=2",
                         "data.targets_per_clip=2", "data.eval_targets_per_clip=2", "data.shuffle_buffer=4",
                         "data.eval_n_lip=7", "model.net.e_geo.dim=16", "model.perceptual=null", "model.w_perceptual=0",
                         "model.lpips_metric.backbone_weights=null"]
RENDER_EXPERIMENTS = ["render_dual_attn", "render_single_attn", "render_no_lip_attn", "render_no_face_attn",
                      "render_random_refs", "render_demo", "render_real"]
# the U-Net baseline has no E_geo: a narrow, shallow U-Net instead
UNET_TEST_OVERRIDES = [o for o in RENDER_TEST_OVERRIDES if not o.startswith("model.net.")] + [
    "model.net.width=8", "model.net.depth=2", "model.net.max_width=16"]


def _render_overrides(shards: Path) -> list[str]:
    return [f"data.root='{shards}'", *RENDER_TEST_OVERRIDES]


def _make_render_fixture(name: str):
    @pytest.fixture(name=f"experiment_{name}_overrides")
    def fixture(synthetic_shards) -> list[str]:
        return _render_overrides(synthetic_shards)

    return fixture


for _name in RENDER_EXPERIMENTS:
    globals()[f"experiment_{_name}_overrides"] = _make_render_fixture(_name)


@pytest.fixture
def experiment_render_unet_baseline_overrides(synthetic_shards) -> list[str]:
    return [f"data.root='{synthetic_shards}'", *UNET_TEST_OVERRIDES]
