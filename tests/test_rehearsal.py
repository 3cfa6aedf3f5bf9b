"""The pieces of `make rehearse` (README, "Training at scale") and the defects it found, at reduced sizes: the BFM
stand-in (writer -> Deep3DFaceRecon layout -> load_bfm), fitting a PCA expression basis without [0, 1] bounds, the
synthetic corpus driving a BFM by retargeting, a save_pretrained HuBERT folder found by geometry_style's config
path, StepStats, stage-2 items that do not keep their clip's frames alive, and the figures' arithmetic. The full
sizes run in `make rehearse` and in the `slow` test at the end."""
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from hydra.utils import instantiate
from scipy.ndimage import gaussian_filter1d

from data_prep.synthetic import bfm_standin, motion
from data_prep.synthetic.phonemes import random_utterance
from data_prep.synthetic.visemes import SpeakingStyle, mouth_tracks
from eval import rehearse
from src.geometry import fitting
from src.geometry.face_models.bfm import load_bfm
from src.geometry.face_models.procedural import EXP_NAMES, IBUG68_FROM_MEDIAPIPE, build_procedural
from src.geometry.face_models.schema import FaceModelData
from src.metrics import fit as fit_error
from src.models.face_model import FaceModel, load_face_model

SMALL = 4000  # vertices of the reduced stand-in (level 2 subdivision + centroids); the real file has 35,709


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bfm") / "BFM_model_front.mat"
    assert bfm_standin.main(["--out", str(path), "--vertices", str(SMALL)]) == 0
    return path


def test_standin_has_deep3dfacerecon_layout_and_loads(standin):
    raw = scipy.io.loadmat(standin)
    assert raw["meanshape"].shape == (1, 3 * SMALL) and raw["meanshape"].dtype == np.float32
    assert raw["idBase"].shape == (3 * SMALL, 80) and raw["exBase"].shape == (3 * SMALL, 64)
    assert raw["keypoints"].shape == (1, 68) and raw["tri"].min() == 1 and raw["tri"].max() == SMALL  # 1-based
    assert raw["meantex"].shape == (1, 3 * SMALL) and 0 <= raw["meantex"].min() and raw["meantex"].max() <= 255
    data = load_bfm(standin)
    assert data.n_vertices == SMALL and not data.exp_bounded and data.units_to_mm == 100.0
    assert np.array_equal(data.lmk68, IBUG68_FROM_MEDIAPIPE)  # the procedural landmark vertices, 0-based
    proc = build_procedural()
    offset = data.mean[data.lmk68] * 100 - proc.mean[proc.lmk68]  # mm; the loader centres the mean
    assert np.abs(offset - offset.mean(0)).max() < 1e-3  # the keypoints sit where the procedural ones do
    fm = FaceModel(data)
    assert 55 < fit_error.eye_distance_mm(fm) < 65  # decimetres converted: a human eye distance
    assert abs(np.linalg.norm(data.exp_basis, axis=1).mean() - np.linalg.norm(proc.exp_basis, axis=1).mean() / 100) \
        < 0.01  # same order of motion as the procedural modes, in dm


def test_standin_is_deterministic_and_its_bases_are_pca_columns(standin):
    a, b = bfm_standin.build_standin(SMALL), scipy.io.loadmat(standin)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    for key in ("idBase", "exBase"):
        gram = a[key].astype(np.float64).T @ a[key].astype(np.float64)
        assert np.abs(gram - np.diag(np.diag(gram))).max() < 1e-4 * gram.max()  # orthogonal columns
        assert np.all(np.diff(np.diag(gram)) <= 1e-9 * gram.max())  # ordered by variance


def test_densify_hits_the_count_and_keeps_the_parent_vertices():
    proc = build_procedural()
    weights, tris, part = bfm_standin.densify(proc.triangles, proc.part, len(proc.mean), 5000)
    assert weights.shape == (5000, len(proc.mean)) and len(part) == 5000
    assert np.allclose(np.asarray(weights.sum(1)).ravel(), 1.0)  # barycentric rows
    assert np.allclose(weights[: len(proc.mean)].toarray(), np.eye(len(proc.mean)))
    assert len(np.unique(tris)) == 5000 and len(np.unique(np.sort(tris, 1), axis=0)) == len(tris)
    dense = weights @ proc.mean
    a, b, c = dense[tris[:, 0]], dense[tris[:, 1]], dense[tris[:, 2]]
    assert (np.linalg.norm(np.cross(b - a, c - a), axis=1) > 0).all()  # no degenerate triangle


def test_retargeting_drives_the_standin_like_the_procedural_model(standin):
    fm = load_face_model(f"bfm:{standin}")
    proc = load_face_model("procedural")
    channels = {name: np.zeros(3, np.float32) for name in EXP_NAMES}
    channels["jaw_open"] = np.array([0.0, 0.5, 1.0], np.float32)
    beta = torch.from_numpy(motion.model_coefficients(channels, fm))  # (3, 64)
    want = proc.mouth_opening(proc.expression_vertices(torch.from_numpy(motion.to_coefficients(channels, EXP_NAMES))))
    got = fm.mouth_opening(fm.expression_vertices(beta))
    assert float(got[2]) > 15.0 and torch.allclose(got[1:], want[1:], rtol=0.15)
    assert (beta < 0).any()  # PCA coefficients are signed


def _stand_in_clip(fm, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """True beta (T, 64) and the 68 keypoints (T, 68, 2) px with 0.5 px noise, framed as the corpus frames faces."""
    rng = np.random.default_rng(seed)
    alpha = np.clip(rng.standard_normal(fm.n_id), -2.5, 2.5).astype(np.float32)
    channels = mouth_tracks(random_utterance(rng, n / 25.0), SpeakingStyle.sample(rng), 25.0, n_frames=n)
    beta = motion.model_coefficients(channels, fm)
    lmk = fm.mean[fm.lmk68].numpy()
    scale = 0.17 * 256 / np.linalg.norm(lmk[36:42].mean(0) - lmk[42:48].mean(0))
    pose = gaussian_filter1d(motion.head_pose(n, 1.0, scale, (128.0, 128.0), rng), 3.0, axis=0, mode="nearest")
    screen = fm.posed_vertices(torch.from_numpy(alpha)[None].expand(n, -1), torch.from_numpy(beta),
                               torch.from_numpy(pose.astype(np.float32)))
    clean = screen[:, fm.lmk68, :2].numpy()
    return beta, clean + rng.normal(0.0, 0.5, clean.shape).astype(np.float32)


def test_a_pca_expression_basis_is_fitted_unbounded(standin):
    """Defect found by the rehearsal: the fit clamped BFM coefficients to the blendshape bounds [0, 1], half of
    which are negative (lower-face error 2.78 mm bounded, 1.24 mm unbounded on the full-size stand-in)."""
    fm = load_face_model(f"bfm:{standin}")
    assert fitting._expression_bounds(fm, fitting.FitConfig()) == (None, None)
    assert fitting._expression_bounds(load_face_model("procedural"), fitting.FitConfig())[0] is not None
    beta, keypoints = _stand_in_clip(fm, 100, seed=4)
    cfg = fitting.FitConfig(landmarks="ibug68", landmark_calibration=None)
    res = fitting.fit_clip(fm, keypoints, cfg)
    err = fit_error.vertex_error_mm(fm, res.beta, beta)
    assert float(res.reproj_px.mean()) < 1.0
    assert (res.beta < 0).any() and err < 2.0  # mm, lower face; 0.03 of the 59 mm eye distance is 1.8


def test_exp_bounded_round_trips_through_the_schema_npz(standin, tmp_path):
    data = load_bfm(standin)
    back = FaceModelData.load(data.save(tmp_path / "bfm.npz"))
    assert back.exp_bounded is False and FaceModelData.load(build_procedural().save(tmp_path / "p.npz")).exp_bounded


def test_sidecar_landmarks_with_a_model_without_mediapipe_vertices_is_refused(standin, tmp_path):
    from data_prep.build import main as build

    (tmp_path / "corpus").mkdir()
    code = build(["--source", "synthetic", "--root", str(tmp_path / "corpus"), "--out", str(tmp_path / "shards"),
                  "--face-model", f"bfm:{standin}", "--landmarks", "sidecar"])
    assert code == 2


def test_a_synthetic_clip_is_rendered_with_the_standin(standin, tmp_path):
    from data_prep.synthetic.generate import main as generate

    assert generate(["--out", str(tmp_path), "--speakers", "1", "--clips-per-speaker", "1", "--seconds", "1",
                     "--seed", "3", "--workers", "1", "--face-model", f"bfm:{standin}"]) == 0
    (sidecar,) = tmp_path.glob("id*/*/*.json")
    side = json.loads(sidecar.read_text())
    assert side["face_model"] == "bfm-deep3dfacerecon" and np.asarray(side["beta"]).shape == (25, 64)
    assert side["landmarks_478"] is None and max(side["mouth_opening_mm"]) > 2.0


def test_geometry_style_loads_a_save_pretrained_hubert_from_its_config_path(make_config, tmp_path):
    """The paper's E_aud through geometry_style's own path, ${paths.data_dir}/models/hubert-base-ls960 (a tiny
    HubertConfig here; `make rehearse` saves the base sizes)."""
    from transformers import HubertConfig, HubertModel

    tiny = HubertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                        conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    saved = HubertModel(tiny)
    saved.save_pretrained(tmp_path / "data" / "models" / "hubert-base-ls960")
    cfg = make_config("experiment=geometry_style", f"paths.data_dir='{tmp_path / 'data'}'")
    assert cfg.model.net.e_aud.pretrained == str(tmp_path / "data" / "models" / "hubert-base-ls960")
    e_aud = instantiate(cfg.model.net.e_aud, dim=8)
    assert torch.equal(e_aud.hubert.encoder.layers[0].attention.k_proj.weight,
                       saved.encoder.layers[0].attention.k_proj.weight)
    assert e_aud(torch.randn(2, 640 * 10), 10).shape == (2, 10, 8)
    # defect found by the rehearsal: from_pretrained left HuBERT in eval mode, so it fine-tuned without dropout,
    # LayerDrop and SpecAugment, unlike the random-init path; now its mode follows the network's
    assert e_aud.hubert.training and all(m.training for m in e_aud.modules())
    e_aud.eval()
    assert not any(m.training for m in e_aud.modules())


def test_step_stats_logs_every_step_and_a_resume(make_config, tmp_path):
    from src.train import train

    stats = tmp_path / "run" / "step_stats.jsonl"
    extra = ["experiment=tiny", "data.num_train=64", "test=false", "+callbacks.step_stats._target_="
             "src.utils.step_stats.StepStats", f"+callbacks.step_stats.path='{stats}'"]
    train(make_config(*extra, "trainer.max_steps=2"))
    records = [json.loads(line) for line in stats.read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and records[1]["data_s"] is not None
    assert all(r["step_s"] > 0 and r["peak_rss_mb"] > 0 and r["batch_size"] == 32 for r in records)
    with pytest.raises(ValueError, match="no resumed fit"):
        rehearse.resumed(tmp_path / "run", 2)
    records[1]["pid"] += 1  # as if step 2 came from a resumed process
    stats.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert rehearse.resumed(tmp_path / "run", 2) == {"first": [1, 1], "resumed": [2, 2]}
    summary = rehearse.step_summary(stats)
    assert summary["batch_size"] == 32 and summary["steady_steps"] == 2


def test_the_data_prep_speed_benchmark_configures_like_a_build():
    """Defect found by the rehearsal: `python -m eval.speed data_prep` built its own namespace for
    data_prep.build.make_config and crashed (AttributeError: allow_no_audio) once the build gained that flag."""
    from argparse import Namespace

    from eval.speed_data_prep import process_config

    cfg = process_config(Namespace(face_model="procedural", hyperiqa=None, fit_steps=7))
    assert cfg.face_model == "procedural" and cfg.fit.steps == 7 and cfg.require_audio and cfg.min_seconds == 1.0


def test_the_80gb_extrapolation_is_a_least_squares_line():
    fit = rehearse.batch_fit([(1, 3000.0), (2, 4000.0), (4, 6000.0)], budget_mb=10000.0)
    assert fit["fixed_mb"] == pytest.approx(2000.0) and fit["per_sample_mb"] == pytest.approx(1000.0)
    assert fit["largest_batch"] == 8 and "(10000 - 2000) / 1000 = 8.0 -> batch 8" in fit["text"]


def test_stage2_items_do_not_keep_their_clip_alive(synthetic_shards):
    """Defect found by the rehearsal: items held views into the clip's (T, 3, S, S) frames, so each item waiting in
    the shuffle buffer kept its whole clip: 4.8 GB per data worker at 256 px (killed by the OOM killer)."""
    from src.data.render_datamodule import RenderDataModule

    dm = RenderDataModule(root=str(synthetic_shards), image_size=32, n_face=2, n_lip=2, batch_size=2,
                          targets_per_clip=2, shuffle_buffer=2, num_workers=0)
    stage = dm._items(train=True)
    import webdataset as wds

    from src.data.render_datamodule import decode_clip

    clips = (decode_clip(s) for s in wds.WebDataset(dm.shard_urls("train"), shardshuffle=False, empty_check=False))
    item = next(iter(stage(clips)))
    for key in ("tgt_img", "tgt_pncc", "tgt_lip_mask", "face_ref_img", "lip_ref_pncc"):
        assert item[key].base is None, f"{key} is a view into a larger array"


@pytest.mark.slow
def test_full_size_standin(tmp_path):
    """The real file's sizes: 35,709 vertices, ~70k triangles, idBase (3N, 80), exBase (3N, 64) (~10 s)."""
    path = tmp_path / "BFM_model_front.mat"
    assert bfm_standin.main(["--out", str(path)]) == 0
    data = load_bfm(path)
    assert data.n_vertices == 35709 and 69000 < len(data.triangles) < 72000
    assert data.id_basis.shape == (35709, 3, 80) and data.exp_basis.shape == (35709, 3, 64)
