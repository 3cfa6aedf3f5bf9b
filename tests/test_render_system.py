"""Stage 2 system on the real configs: data items follow Algorithm 1, the renderer learns, its metrics and
baseline mean what they say, the optional PatchGAN trains, and 2-process DDP runs."""
import hydra
import numpy as np
import torch

from src.data.render_datamodule import RenderDataModule, eval_references
from src.metrics.image import gradient_similarity, lip_sharpness, psnr
from src.systems.render_system import nearest_reference
from src.train import train
from tests.conftest import RENDER_TEST_OVERRIDES
from tests.test_train import checkpoint_names, run_train_subprocess


def _config(make_config, shards, *extra):
    return make_config("experiment=render_demo", f"data.root='{shards}'", *RENDER_TEST_OVERRIDES, *extra)


def test_eval_references_leave_the_target_out():
    opening = np.random.default_rng(0).random(30)
    for i in (0, 1, 14, 29):
        face, lip = eval_references(i, opening, 5, 7)
        assert i not in face and i not in lip and len(face) == 5 and len(lip) == 7
    assert eval_references(14, opening, 5, 7)[0].tolist() == [12, 13, 15, 16, 17]  # the nearest other frames
    assert eval_references(0, opening, 5, 7)[0].tolist() == [1, 2, 3, 4, 5]
    assert eval_references(29, opening, 5, 7)[0].tolist() == [24, 25, 26, 27, 28]


def test_items_are_aligned(synthetic_shards):
    dm = RenderDataModule(root=str(synthetic_shards), image_size=32, batch_size=2, train_batches=1,
                          targets_per_clip=2, shuffle_buffer=2, eval_n_lip=7)
    batch = next(iter(dm.train_dataloader()))
    assert batch["tgt_img"].shape == (2, 3, 32, 32) and batch["lip_ref_pncc"].shape == (2, 5, 3, 32, 32)
    assert batch["tgt_lip_mask"].sum() > 0 and batch["tgt_img"].max() <= 1
    # the face references are Algorithm 1's window around the target: frame i itself is among them
    # when not clipped, so its image equals the target's
    val = next(iter(dm.val_dataloader()))
    assert val["lip_ref_img"].shape[1] == 7
    same = (val["face_ref_img"] - val["tgt_img"][:, None]).abs().amax((2, 3, 4))  # (B, N_f)
    assert (same > 0).all(), "a validation reference is the target frame itself"


def test_nearest_reference_and_psnr():
    g = torch.Generator().manual_seed(0)
    batch = {k: torch.rand(2, 3, 3, 8, 8, generator=g)
             for k in ("face_ref_img", "face_ref_pncc", "lip_ref_img", "lip_ref_pncc")}
    batch["tgt_pncc"] = batch["lip_ref_pncc"][:, 1].clone()
    assert torch.equal(nearest_reference(batch), batch["lip_ref_img"][:, 1])
    image = torch.rand(2, 3, 8, 8, generator=g)
    assert torch.isclose(psnr(image, (image + 0.1).clamp(max=10)), torch.tensor(20.0)).all()
    region = torch.zeros(2, 1, 8, 8)
    region[..., :4, :] = 1
    noisy = image.clone()
    noisy[..., 4:, :] += 0.5  # outside the region
    assert (psnr(noisy, image, region) > 90).all()


def test_lip_gradient_similarity_is_one_for_the_truth_and_lower_for_blur_and_ghosts():
    g = torch.Generator().manual_seed(0)
    target = torch.nn.functional.avg_pool2d(torch.rand(2, 3, 32, 32, generator=g), 3, 1, 1)  # some texture
    region = torch.zeros(2, 1, 32, 32)
    region[..., 8:24, 8:24] = 1
    blur = torch.nn.functional.avg_pool2d(target, 5, 1, 2)
    ghost = 0.5 * target + 0.5 * torch.roll(target, 3, dims=-1)  # a double image: more edges, wrong ones
    same = gradient_similarity(target, target, region)
    torch.testing.assert_close(same, torch.ones(2))
    assert (gradient_similarity(blur, target, region) < 0.9).all()
    assert (gradient_similarity(ghost, target, region) < 0.9).all()


def test_system_learns_and_scores(make_config, synthetic_shards):
    torch.manual_seed(0)
    cfg = _config(make_config, synthetic_shards)
    dm, system = hydra.utils.instantiate(cfg.data), hydra.utils.instantiate(cfg.model)
    batch = next(iter(dm.train_dataloader()))
    optimizer = torch.optim.Adam(system.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = system.losses(system(batch), batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses[::5]
    region = system.lip_region(batch["tgt_lip_mask"])
    blurred = torch.nn.functional.avg_pool2d(batch["tgt_img"], 3, stride=1, padding=1)
    ratio = lip_sharpness(blurred, batch["tgt_img"], region)
    assert (ratio < 0.8).all(), ratio


def test_structural_term_is_zero_for_the_truth_and_grows_with_blur(make_config, synthetic_shards):
    cfg = _config(make_config, synthetic_shards, "model.w_dssim=2.0")
    dm, system = hydra.utils.instantiate(cfg.data), hydra.utils.instantiate(cfg.model)
    batch = next(iter(dm.train_dataloader()))
    truth = batch["tgt_img"]
    same = system.losses(truth, batch)
    assert float(same["dssim"]) < 1e-4
    blurred = system.losses(torch.nn.functional.avg_pool2d(truth, 5, stride=1, padding=2), batch)
    assert float(blurred["dssim"]) > 0.01
    rest = sum(system.weights[k] * v for k, v in blurred.items() if k not in ("loss", "dssim"))
    torch.testing.assert_close(blurred["loss"], rest + 2.0 * blurred["dssim"])
    off = hydra.utils.instantiate(_config(make_config, synthetic_shards).model)
    assert "dssim" not in off.losses(truth, batch)  # off (0) by default


def test_adversarial_term_trains_with_manual_optimisation(make_config, synthetic_shards):
    cfg = _config(make_config, synthetic_shards, "trainer.max_steps=2", "test=false", "model.w_adv=0.1",
                  "trainer.gradient_clip_val=null",
                  "+model.discriminator._target_=src.models.renderer.patchgan.PatchDiscriminator",
                  "+model.discriminator.dim=8", "+model.optimizer_d._target_=torch.optim.Adam",
                  "+model.optimizer_d._partial_=true", "+model.optimizer_d.lr=1e-4")
    metrics, objects = train(cfg)
    assert objects["trainer"].global_step == 2
    assert "train/loss_d" in metrics


def test_ddp_two_cpu_processes(synthetic_shards, tmp_path):
    run = tmp_path / "ddp"
    run_train_subprocess(["experiment=render_demo", f"data.root='{synthetic_shards}'", *RENDER_TEST_OVERRIDES,
                          "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_steps=2",
                          "trainer.enable_progress_bar=false", "callbacks.model_checkpoint.every_n_train_steps=2",
                          "test=false", f"paths.log_dir='{tmp_path}'", f"hydra.run.dir='{run}'"], timeout=280)
    assert checkpoint_names(run) == ["last.ckpt", "step_0000002.ckpt"]
    assert list((run / "samples").glob("*.png"))
