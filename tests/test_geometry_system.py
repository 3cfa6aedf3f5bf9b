"""Stage 1 system on the real configs: it learns, its metrics mean what they say, the paper recipe loads a
saved HuBERT through its config path, and 2-process DDP trains and resumes."""
import math

import hydra
import pytest
import torch
from torch import nn
from transformers import HubertConfig, HubertModel

from tests.conftest import GEOMETRY_TEST_OVERRIDES
from tests.test_train import checkpoint_names, run_train_subprocess


def _build(make_config, shards, *extra):
    cfg = make_config("experiment=geometry_demo", f"data.root='{shards}'", *GEOMETRY_TEST_OVERRIDES, *extra)
    return cfg, hydra.utils.instantiate(cfg.data), hydra.utils.instantiate(cfg.model)


def test_system_learns_a_batch(make_config, synthetic_shards):
    torch.manual_seed(0)
    _, dm, system = _build(make_config, synthetic_shards)
    batch = next(iter(dm.train_dataloader()))
    optimizer = torch.optim.Adam(system.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        pred, v = system(batch)
        loss = system.losses(pred, v["target"])["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::5]


class _Oracle(nn.Module):
    """Returns a fixed prediction (the network's output units, cm)."""

    def __init__(self, output: torch.Tensor):
        super().__init__()
        self.output = output

    def forward(self, *args, **kwargs):
        return self.output


def test_metrics_of_perfect_and_mean_predictions(make_config, synthetic_shards):
    _, dm, system = _build(make_config, synthetic_shards)
    batch = next(iter(dm.val_dataloader()[0]))
    target = system.vertices(batch)["target"]  # (B, T, |lower|, 3) mm
    system.net = _Oracle(target / 10)
    system.target_sum += target.sum((0, 1)).double()
    system.target_count += target.shape[0] * target.shape[1]
    system._evaluate(batch, "val")
    m = system.metrics["val"]
    assert m["lve"].compute() < 1e-4 and m["loss"].compute() < 1e-6
    assert m["mouth_corr"].compute() > 0.999 and m["style"].compute()["amp_error"] < 1e-4
    assert m["lve_mean_expr"].compute() > 0.5  # the mean expression is mm away from the truth

    for metric in m.values():
        metric.reset()
    system.net = _Oracle(target / 10 * 0.5)  # half the articulation: amplitude ratio ~0.5
    system._evaluate(batch, "val")
    ratio = m["style"].compute()["amp_ratio"]
    assert 0.3 < ratio < 0.7, ratio


def test_paper_recipe_loads_hubert_from_its_config_path(make_config, tmp_path):
    saved = HubertModel(HubertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                     conv_dim=(16,) * 7, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2))
    saved.save_pretrained(tmp_path / "hubert")
    cfg = make_config("experiment=geometry_style", f"model.net.e_aud.pretrained='{tmp_path / 'hubert'}'",
                      "model.net.temporal.dim=32", "model.net.temporal.depth=1")
    system = hydra.utils.instantiate(cfg.model)
    hubert = next(m for m in system.net.e_aud.modules() if isinstance(m, HubertModel))
    for name, tensor in saved.state_dict().items():
        assert torch.equal(hubert.state_dict()[name], tensor), name
    # the feature encoder is frozen in the paper recipe
    assert not any(p.requires_grad for p in hubert.feature_extractor.parameters())


def test_paper_recipe_without_hubert_names_the_missing_folder(make_config, tmp_path):
    cfg = make_config("experiment=geometry_style", f"paths.data_dir='{tmp_path}'")
    with pytest.raises(Exception, match="hubert-base-ls960"):
        hydra.utils.instantiate(cfg.model)


def test_ddp_two_cpu_processes_train_and_resume(synthetic_shards, tmp_path):
    common = ["experiment=geometry_demo", f"data.root='{synthetic_shards}'", *GEOMETRY_TEST_OVERRIDES,
              "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.enable_progress_bar=false",
              "callbacks.model_checkpoint.every_n_train_steps=2", "data.train_batches=2", "test=false",
              f"paths.log_dir='{tmp_path}'"]
    first, second = tmp_path / "first", tmp_path / "second"
    run_train_subprocess([*common, "trainer.max_steps=2", f"hydra.run.dir='{first}'"], timeout=280)
    assert checkpoint_names(first) == ["last.ckpt", "step_0000002.ckpt"]
    run_train_subprocess([*common, "trainer.max_steps=4", f"ckpt_path='{first / 'checkpoints' / 'last.ckpt'}'",
                          f"hydra.run.dir='{second}'"], timeout=280)
    ckpt = torch.load(second / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 4
    assert math.isfinite(float(ckpt["callbacks"][next(k for k in ckpt["callbacks"] if "Checkpoint{" in k)]
                               .get("best_model_score") or 0.0))
