"""bf16 mixed precision (trainer=gpu / trainer=ddp default to it): on the CPU, a bf16-autocast training step of
each stage gives the fp32 loss within 1% on the same batch and weights, and Lightning's bf16-mixed plugin trains
both stages. GPU-only checks (kernels, CUDA bf16) are `gpu`-marked."""
from __future__ import annotations

import hydra
import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from src.models.renderer.chunked_attention import FUSED, sdpa_kernel
from tests.conftest import CONFIG_DIR, GEOMETRY_TEST_OVERRIDES, RENDER_TEST_OVERRIDES, compose_config

STAGES = {"render": ("render_dual_attn", RENDER_TEST_OVERRIDES),
          "geometry": ("geometry_demo", GEOMETRY_TEST_OVERRIDES)}


def system_and_batch(stage: str, shards, tmp_path):
    experiment, overrides = STAGES[stage]
    cfg = compose_config([f"experiment={experiment}", f"data.root='{shards}'", *overrides], tmp_path)
    torch.manual_seed(0)
    system = hydra.utils.instantiate(cfg.model)
    data = hydra.utils.instantiate(cfg.data)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    return system, batch, cfg


def training_loss(system, batch) -> float:
    system.log = system.log_dict = lambda *args, **kwargs: None  # outside a Trainer
    with torch.no_grad():
        return float(system.training_step(batch, 0))


@pytest.mark.parametrize("stage", STAGES)
def test_a_bf16_step_gives_the_fp32_loss_within_one_percent(stage, synthetic_shards, tmp_path, one_torch_thread):
    system, batch, _ = system_and_batch(stage, synthetic_shards, tmp_path)
    system.train()
    fp32 = training_loss(system, batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = training_loss(system, batch)
    assert fp32 > 0 and abs(bf16 - fp32) <= 0.01 * fp32, (fp32, bf16)


@pytest.mark.parametrize("stage", STAGES)
def test_lightning_bf16_mixed_trains_both_stages(stage, synthetic_shards, tmp_path, one_torch_thread):
    system, _, cfg = system_and_batch(stage, synthetic_shards, tmp_path)
    data = hydra.utils.instantiate(cfg.data)
    trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed", max_steps=2, limit_val_batches=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False)
    before = [p.detach().clone() for p in system.parameters() if p.requires_grad]
    trainer.fit(system, datamodule=data)
    after = [p for p in system.parameters() if p.requires_grad]
    assert trainer.global_step == 2 and all(p.dtype == torch.float32 for p in after)  # fp32 master weights
    assert any(not torch.equal(a, b) for a, b in zip(after, before))


@pytest.mark.parametrize("name", ["gpu", "ddp"])
def test_gpu_trainers_default_to_bf16_mixed_and_the_cpu_to_fp32(name):
    assert OmegaConf.load(CONFIG_DIR / "trainer" / f"{name}.yaml").precision == "bf16-mixed"
    assert OmegaConf.load(CONFIG_DIR / "trainer" / "default.yaml").precision == "32-true"


def test_the_attention_kernel_under_bf16_autocast_is_a_fused_one_on_the_cpu():
    """What the renderer's attention runs on this CPU: torch's flash kernel for fp32 and bf16 (no score matrix)."""
    q = torch.randn(1, 4, 64, 32)
    assert sdpa_kernel(q, q, q) in FUSED
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert sdpa_kernel(q, q, q) in FUSED


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_bf16_attention_runs_a_fused_kernel():
    q = torch.randn(1, 4, 4096, 64, device="cuda", dtype=torch.bfloat16)
    assert sdpa_kernel(q, q, q) in ("flash", "efficient", "cudnn")
