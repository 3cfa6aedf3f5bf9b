"""The hybrid 3DMM fit (src.geometry.fitting) on synthetic ground truth: a procedural face (identity ~ N(0, 1)),
speech-driven expression tracks with blinks and brows, a smoothly drifting head at 256x256, its 478
MediaPipe landmarks (and ICT-FaceKit's iBUG-68 when that file is present) with 0.5 px noise. These
landmarks are the model's own vertices, so the fits here run without the detector calibration
(``EXACT``); the calibration itself is tested at the end."""
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter1d

from data_prep.synthetic import motion
from data_prep.synthetic.phonemes import random_utterance
from data_prep.synthetic.visemes import SpeakingStyle, mouth_tracks
from src.geometry import camera
from src.geometry import fitting as fit
from src.geometry import landmarks as landmark_sets
from src.geometry.face_models import landmark_calibration
from src.geometry.face_models.procedural import VERSION, build_procedural
from src.metrics import fit as fit_error
from src.models.face_model import FaceModel, load_face_model

SIZE, FPS, NOISE_PX = 256, 25.0, 0.5
ICT_NPZ = Path(__file__).resolve().parents[2] / "shared" / "data" / "facemodel" / "ict" / "ict_facekit.npz"
EXACT = fit.FitConfig(landmark_calibration=None)  # landmarks that are the model's own vertices


def exact(**kw) -> fit.FitConfig:
    return dataclasses.replace(EXACT, **kw)


@pytest.fixture(scope="module")
def fm():
    return load_face_model("procedural")


def synthetic_clip(fm, n_frames: int, seed: int, landmarks: str = "mp478") -> dict:
    """Ground truth and noisy landmarks (T, N, 2) px of one synthetic clip."""
    rng = np.random.default_rng(seed)
    alpha = np.clip(rng.standard_normal(fm.n_id), -2.5, 2.5).astype(np.float32)
    channels = mouth_tracks(random_utterance(rng, n_frames / FPS), SpeakingStyle.sample(rng), FPS, n_frames=n_frames)
    blink = motion.blink_track(n_frames, FPS, 0.4, rng)
    channels.update(blink_L=blink, blink_R=blink, **motion.brow_tracks(n_frames, 0.5, rng))
    beta = motion.to_coefficients(channels, fm.exp_names)  # (T, K_exp)
    lmk68 = fm.mean[fm.lmk68].numpy()
    scale = 0.17 * SIZE / np.linalg.norm(lmk68[36:42].mean(0) - lmk68[42:48].mean(0))  # as the corpus frames faces
    pose = motion.head_pose(n_frames, 1.0, scale, (SIZE / 2, SIZE / 2), rng)
    pose = gaussian_filter1d(pose, 3.0, axis=0, mode="nearest").astype(np.float32)  # real heads drift smoothly
    screen = fm.posed_vertices(torch.from_numpy(alpha)[None].expand(n_frames, -1), torch.from_numpy(beta),
                               torch.from_numpy(pose))
    clean = screen[:, landmark_sets.landmark_indices(fm, landmarks), :2].numpy()
    noisy = clean + rng.normal(0.0, NOISE_PX, clean.shape).astype(np.float32)
    return {"alpha": alpha, "beta": beta, "pose": pose, "clean": clean, "noisy": noisy}


def reprojection_px(fm, coeffs, lmk: np.ndarray, landmarks: str = "mp478") -> float:
    n = len(coeffs.beta)
    screen = fm.posed_vertices(torch.as_tensor(coeffs.alpha)[None].expand(n, -1), coeffs.beta, coeffs.pose)
    return float((screen[:, landmark_sets.landmark_indices(fm, landmarks), :2]
                  - torch.from_numpy(lmk)).norm(dim=-1).mean())


def landmark_jitter_px(fm, coeffs, clean: np.ndarray, landmarks: str = "mp478") -> float:
    """Mean error of the fitted landmarks' frame-to-frame motion against the true motion, px."""
    n = len(coeffs.beta)
    screen = fm.posed_vertices(torch.as_tensor(coeffs.alpha)[None].expand(n, -1), coeffs.beta, coeffs.pose)
    err = screen[:, landmark_sets.landmark_indices(fm, landmarks), :2].numpy() - clean  # (T, N, 2)
    return float(np.linalg.norm(err[1:] - err[:-1], axis=-1).mean())


def test_matrix_to_euler_inverts_the_camera():
    angles = torch.tensor([[0.3, -0.5, 0.2], [-0.1, 0.9, -1.2], [0.0, 0.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(fit.matrix_to_euler(camera.euler_to_matrix(angles)), angles, atol=1e-10)


def test_initialise_alone_is_reasonable(fm):
    clip = synthetic_clip(fm, 100, seed=1)
    init = fit.initialise(fm, clip["noisy"], EXACT)
    reproj = reprojection_px(fm, init, clip["noisy"])
    err = fit_error.vertex_error_mm(fm, init.beta, clip["beta"])
    print(f"initialisation: reprojection {reproj:.2f} px, lower-face expression error {err:.2f} mm")
    assert reproj < 1.2
    assert err < 3.0
    assert np.abs(init.pose[:, :3].numpy() - clip["pose"][:, :3]).mean() < 0.03  # rad
    # the scale trades against the identity's face_width / face_height modes, so only loosely
    assert np.abs(init.pose[:, 5].numpy() / clip["pose"][:, 5] - 1).mean() < 0.06


def test_fit_recovers_synthetic_truth_in_time(fm):
    clip = synthetic_clip(fm, 150, seed=2)
    init = fit.initialise(fm, clip["noisy"], EXACT)
    fit.fit_clip(fm, clip["noisy"][:5], exact(steps=2))  # pay torch.optim's one-off imports outside the timing
    start = time.perf_counter()
    res = fit.fit_clip(fm, clip["noisy"], EXACT, init=init)
    seconds = time.perf_counter() - start
    eye = fit_error.eye_distance_mm(fm)
    errors = {name: fit_error.vertex_error_mm(fm, c.beta, clip["beta"]) for name, c in (("init", init), ("fit", res))}
    reproj = float(res.reproj_px.mean())
    print(f"150 frames, 478 landmarks, {fit.FitConfig().steps} steps on one thread: {seconds:.1f} s; reprojection "
          f"{reproj:.2f} px; lower-face expression error init {errors['init']:.2f} mm, fit {errors['fit']:.2f} mm "
          f"({100 * errors['fit'] / eye:.1f}% of the {eye:.0f} mm eye distance)")
    assert reproj < 1.0
    assert errors["fit"] < 0.03 * eye and errors["fit"] < 1.1 * errors["init"]
    assert seconds < 20.0  # ~3 s here; the brief allows ~10 s, loosely for a loaded CI machine


def test_temporal_terms_reduce_jitter(fm):
    """Eq. 1 smooths what the landmarks pin down poorly frame by frame: the head pose always (six parameters
    against per-landmark noise), and with the sparse iBUG-68 set the whole landmark motion. With all 478
    landmarks and independent noise the per-frame expression is already precise and Eq. 1's Laplacian
    costs a little on fast speech; on MediaPipe's detections, whose errors are correlated, it cuts the
    expression jitter (0.99 -> 0.63 mm on a synthetic corpus clip)."""
    jitter = {}
    for landmarks in ("mp478", "ibug68"):
        clip = synthetic_clip(fm, 100, seed=3, landmarks=landmarks)
        for name, w_tempo in (("with", 1.0), ("without", 0.0)):
            res = fit.fit_clip(fm, clip["noisy"], exact(landmarks=landmarks, steps=300, w_tempo=w_tempo))
            pose_err = res.pose.numpy() - clip["pose"]
            jitter[landmarks, name] = {"pose_mrad": np.abs(np.diff(pose_err[:, :3], axis=0)).mean() * 1e3,
                                       "landmark_px": landmark_jitter_px(fm, res, clip["clean"], landmarks),
                                       "expression_mm": fit_error.expression_jitter_mm(fm, res.beta, clip["beta"])}
    for (landmarks, name), values in jitter.items():
        print(f"{landmarks} {name} L_tempo: " + ", ".join(f"{k} {v:.3f}" for k, v in values.items()))
    for landmarks in ("mp478", "ibug68"):
        assert jitter[landmarks, "with"]["pose_mrad"] < 0.6 * jitter[landmarks, "without"]["pose_mrad"]
    assert jitter["ibug68", "with"]["landmark_px"] < 0.9 * jitter["ibug68", "without"]["landmark_px"]


def test_invalid_frames_are_bridged(fm):
    clip = synthetic_clip(fm, 60, seed=4)
    lmk = clip["noisy"].copy()
    lmk[25:31] = np.nan  # no face found on six frames
    res = fit.fit_clip(fm, lmk, exact(steps=300))
    assert bool(res.reproj_px[25:31].isnan().all()) and not bool(res.reproj_px[:25].isnan().any())
    assert torch.isfinite(res.beta).all() and torch.isfinite(res.pose).all()
    n = len(lmk)
    screen = fm.posed_vertices(res.alpha[None].expand(n, -1), res.beta, res.pose)[:, fm.lmk478, :2].numpy()
    bridged = np.linalg.norm(screen[25:31] - clip["clean"][25:31], axis=-1).mean()
    assert bridged < 4.0, f"bridged frames are {bridged:.2f} px off the truth"


def test_threads_are_restored_and_bad_input_refused(fm):
    before = torch.get_num_threads()
    clip = synthetic_clip(fm, 10, seed=5)
    fit.fit_clip(fm, clip["noisy"], exact(steps=5, threads=1))
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="lmk2d must be"):
        fit.fit_clip(fm, clip["noisy"][:, :68], EXACT)
    with pytest.raises(ValueError, match="landmarks must be one of"):
        fit.FitConfig(landmarks="dlib")
    with pytest.raises(ValueError, match="init.beta must be"):
        init = fit.initialise(fm, clip["noisy"], EXACT)
        fit.fit_clip(fm, clip["noisy"], EXACT, init=fit.Coeffs(init.alpha, init.beta[:3], init.pose))


@pytest.mark.skipif(not ICT_NPZ.is_file(), reason=f"ICT-FaceKit file absent ({ICT_NPZ})")
def test_ict_fits_ibug68():
    ict = load_face_model(f"ict:{ICT_NPZ}")
    with pytest.raises(ValueError, match="no MediaPipe-478"):
        fit.initialise(ict, np.zeros((2, 478, 2)))
    clip = synthetic_clip(ict, 100, seed=6, landmarks="ibug68")
    cfg = fit.FitConfig(landmarks="ibug68", steps=400, w_exp=0.2)  # ICT blendshapes are strongly correlated
    res = fit.fit_clip(ict, clip["noisy"], cfg)
    eye = fit_error.eye_distance_mm(ict)
    err = fit_error.vertex_error_mm(ict, res.beta, clip["beta"])
    print(f"ICT-FaceKit, iBUG-68: reprojection {float(res.reproj_px.mean()):.2f} px, lower-face expression error "
          f"{err:.2f} mm ({100 * err / eye:.1f}% of the {eye:.0f} mm eye distance), {res.seconds:.1f} s")
    assert float(res.reproj_px.mean()) < 1.0
    assert err < 0.05 * eye


# ------------------------------------------------------------------------------ landmark calibration --

def _save_calibration(tmp_path, offset, face_model=VERSION, landmarks="mp478", name="calibration") -> Path:
    cal = landmark_calibration.LandmarkCalibration(face_model, landmarks, offset, {"detector": "test"})
    return cal.save(tmp_path / f"{name}.npy")


def test_calibration_offset_is_applied_in_the_landmark_projection(fm, tmp_path):
    """Detections at the landmark vertices plus a known canonical-frame offset (rotating with the head):
    with that calibration the fit's projected landmarks are the offset vertices and it reaches the noise
    floor again; on the raw vertices it cannot. The mesh itself is not changed."""
    clip = synthetic_clip(fm, 40, seed=7)
    offset = np.random.default_rng(7).normal(0.0, 2.0, (478, 3)).astype(np.float32)  # mm, no mode can absorb it
    n = len(clip["beta"])
    mean_before = fm.mean.clone()

    def landmarks(alpha, beta, pose, shift):
        with torch.no_grad():
            verts = fm.canonical_vertices(torch.as_tensor(alpha)[None].expand(n, -1), torch.as_tensor(beta))
            return camera.project(verts[:, fm.lmk478] + torch.as_tensor(shift), torch.as_tensor(pose))[..., :2]

    rng = np.random.default_rng(8)
    detected = landmarks(clip["alpha"], clip["beta"], clip["pose"], offset).numpy()
    detected += rng.normal(0.0, NOISE_PX, detected.shape).astype(np.float32)
    cfg = exact(landmark_calibration=str(_save_calibration(tmp_path, offset)), steps=200)
    assert torch.equal(fit.landmark_offset(fm, cfg), torch.from_numpy(offset))
    calibrated, raw = fit.fit_clip(fm, detected, cfg), fit.fit_clip(fm, detected, exact(steps=200))
    projected = landmarks(calibrated.alpha, calibrated.beta, calibrated.pose, offset)
    assert torch.allclose((projected - torch.from_numpy(detected)).norm(dim=-1).mean(-1), calibrated.reproj_px,
                          atol=1e-3)
    reproj = {name: float(r.reproj_px.mean()) for name, r in (("calibrated", calibrated), ("raw", raw))}
    print(f"known offset: reprojection {reproj}")
    assert reproj["calibrated"] < 1.0 and reproj["raw"] > 1.5 * reproj["calibrated"]
    assert torch.equal(fm.mean, mean_before)


def test_packaged_calibration_is_the_default_for_procedural_mediapipe(fm):
    packaged = landmark_calibration.LandmarkCalibration.load(landmark_calibration.packaged_path(VERSION, "mp478"))
    assert packaged.face_model == fm.name == VERSION and packaged.landmarks == "mp478"
    offset = fit.landmark_offset(fm, fit.FitConfig())
    assert offset.shape == (478, 3) and offset.dtype == torch.float32
    assert torch.equal(offset, torch.from_numpy(packaged.offset))
    assert 1.0 < float(offset.norm(dim=-1).mean()) < 15.0  # mm: a layout correction, not noise or a blunder
    assert not fit.landmark_offset(fm, EXACT).any()  # exact landmarks: the model's own vertices
    assert not fit.landmark_offset(fm, fit.FitConfig(landmarks="ibug68")).any()  # calibrated for mp478 only
    expression = fit.expression_offset(fm, fit.FitConfig())  # the packaged one moves with the expression
    assert expression.shape == (478, 3, fm.n_exp) and torch.equal(expression, torch.from_numpy(packaged.expression))
    assert not fit.expression_offset(fm, EXACT).any()


def test_expression_dependent_calibration_round_trips_and_corrects_the_expression_basis(fm, tmp_path):
    rng = np.random.default_rng(3)
    offset = rng.normal(0.0, 1.0, (478, 3)).astype(np.float32)
    expression = rng.normal(0.0, 0.5, (478, 3, fm.n_exp)).astype(np.float32)
    path = landmark_calibration.LandmarkCalibration(VERSION, "mp478", offset, {"detector": "test"}, expression).save(
        tmp_path / "cal.npy")
    assert np.load(path).shape == (478, 3, 1 + fm.n_exp)
    cfg = exact(landmark_calibration=str(path))
    problem = fit._problem(fm, np.full((2, 478, 2), 100.0, np.float32), cfg, None)
    torch.testing.assert_close(problem.exp_basis, fm.exp_basis[fm.lmk478].float() + torch.from_numpy(expression))
    torch.testing.assert_close(problem.mean, fm.mean[fm.lmk478].float() + torch.from_numpy(offset))
    with pytest.raises(ValueError, match="expression terms must be a finite"):
        landmark_calibration.LandmarkCalibration(VERSION, "mp478", offset, {}, expression[:10])


def test_no_calibration_for_ict_and_bfm():
    """Other face models' landmark vertices are annotations of the detector's semantics: zero offset, even
    for a model with a MediaPipe-478 correspondence."""
    data = build_procedural()
    for name in ("ict-facekit", "bfm-deep3dfacerecon"):
        other = FaceModel(dataclasses.replace(data, name=name))
        for landmarks in ("mp478", "ibug68"):
            assert not fit.landmark_offset(other, fit.FitConfig(landmarks=landmarks)).any(), (name, landmarks)


def test_sidecar_landmarks_are_fitted_without_the_offset(fm):
    """data_prep.process: detections get the calibration, the synthetic sidecar's exact landmarks do not."""
    lmk = np.zeros((3, 478, 2), np.float32)
    _, detected = fit.fit_landmarks(fm, lmk, fit.FitConfig())
    _, sidecar = fit.fit_landmarks(fm, lmk, fit.FitConfig(), exact=True)
    assert detected.landmark_calibration == "auto" and bool(fit.landmark_offset(fm, detected).any())
    assert sidecar.landmark_calibration is None and not fit.landmark_offset(fm, sidecar).any()


def test_calibration_for_another_version_is_refused(fm, tmp_path, monkeypatch):
    zeros = np.zeros((478, 3), np.float32)
    old = _save_calibration(tmp_path, zeros, face_model="procedural-v1", name="procedural-v1_mp478")
    with pytest.raises(ValueError, match="made for face model 'procedural-v1'"):
        fit.fit_clip(fm, np.full((2, 478, 2), 100.0, np.float32), exact(landmark_calibration=str(old), steps=1))
    # the default lookup finds only an older version's file: an error naming the command, never a silent zero
    monkeypatch.setattr(landmark_calibration, "CALIBRATION_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="made for another version"):
        fit.landmark_offset(fm, fit.FitConfig())
    # a file under this version's name whose content is for another version
    _save_calibration(tmp_path, zeros, face_model="procedural-v1", name=f"{VERSION}_mp478")
    with pytest.raises(ValueError, match="re-run `make calibrate-landmarks`"):
        fit.landmark_offset(fm, fit.FitConfig())
    wrong_set = _save_calibration(tmp_path, zeros[:68], landmarks="ibug68", name="ibug")
    with pytest.raises(ValueError, match="landmarks='ibug68'"):
        fit.landmark_offset(fm, exact(landmark_calibration=str(wrong_set)))


def test_offset_solver_recovers_a_known_offset():
    """data_prep.calibrate_landmarks' least squares: detections = true projections + a canonical-frame offset
    seen under varied head poses (and 0.2 px noise) -> that offset, depth included."""
    from data_prep.calibrate_landmarks import OffsetSolver, projection_rows

    rng = np.random.default_rng(0)
    offset = rng.normal(0.0, 3.0, (478, 3))
    solver = OffsetSolver(478)
    for _ in range(4):  # clips
        t = 30
        pose = np.c_[rng.normal(0, [0.08, 0.15, 0.04], (t, 3)), rng.uniform(100, 150, (t, 2)), rng.uniform(2, 3, t)]
        true = rng.uniform(0, 256, (t, 478, 2))
        shift = np.einsum("tij,nj->tni", projection_rows(pose), offset) * pose[:, 5, None, None]
        solver.add(true + shift + rng.normal(0, 0.2, true.shape), true, pose)
    solved, expression = solver.solve(ridge=1e-6)
    error = np.abs(solved - offset)
    assert expression is None and error[:, :2].max() < 0.1 and error[:, 2].max() < 0.5, error.max(0)


def test_offset_solver_recovers_an_expression_dependent_offset():
    """The same with an offset that moves with the expression, d(beta) = d0 + E beta (the default
    calibration): d0 and E come back, depth included."""
    from data_prep.calibrate_landmarks import OffsetSolver, projection_rows

    rng = np.random.default_rng(1)
    n, k = 40, 3
    offset, expression = rng.normal(0.0, 3.0, (n, 3)), rng.normal(0.0, 2.0, (n, 3, k))
    solver = OffsetSolver(n, k)
    for _ in range(8):  # clips
        t = 60
        pose = np.c_[rng.normal(0, [0.1, 0.2, 0.05], (t, 3)), rng.uniform(100, 150, (t, 2)), rng.uniform(2, 3, t)]
        beta = rng.uniform(0, 1, (t, k))
        true = rng.uniform(0, 256, (t, n, 2))
        moved = offset + np.einsum("nck,tk->tnc", expression, beta)  # (T, N, 3)
        shift = np.einsum("tij,tnj->tni", projection_rows(pose), moved) * pose[:, 5, None, None]
        solver.add(true + shift + rng.normal(0, 0.2, true.shape), true, pose, beta)
    solved, solved_expression = solver.solve(ridge=1e-8)
    assert np.abs(solved - offset)[:, :2].max() < 0.2 and np.abs(solved_expression - expression)[:, :2].max() < 0.3
    assert np.abs(solved - offset)[:, 2].max() < 1.0 and np.abs(solved_expression - expression)[:, 2].max() < 1.5
    with pytest.raises(ValueError, match=r"needs beta \(T, 3\)"):
        solver.add(true, true, pose)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_calibration_command_on_a_tiny_corpus(tmp_path):
    """The whole command (synthetic corpus -> MediaPipe -> offset -> files), on two 1 s clips (~1 min)."""
    from data_prep.calibrate_landmarks import main as calibrate

    out = tmp_path / "cal.npy"
    assert calibrate(["--out", str(out), "--speakers", "2", "--seconds", "1", "--seed", "3", "--workers", "1",
                      "--check-clips", "0"]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["face_model"] == VERSION and meta["landmarks"] == "mp478" and meta["frames"] > 40
    assert meta["residual_px_after"] < 0.6 * meta["residual_px_before"]
    assert np.load(out).shape == (478, 3, 1 + load_face_model("procedural").n_exp)  # offset + expression terms


def test_real_face_refinement_learns_the_detector_bias_of_a_shard_folder(synthetic_shards, tmp_path):
    """data_prep.calibrate_real on shards whose landmarks are the model's own vertices (the sidecar): for
    them the packaged MediaPipe calibration is a pure bias, so the refinement, measured on the train people,
    must learn to undo it: the reprojection of the people it never saw (val, test) falls from ~3.3% of the
    eye distance to ~0.4%."""
    from data_prep.calibrate_real import main as calibrate_real
    from src.geometry.face_models import landmark_calibration

    out = tmp_path / "real_cal.npy"
    assert calibrate_real(["--shards", str(synthetic_shards), "--out", str(out), "--passes", "2",
                           "--fit-steps", "60"]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["face_model"] == VERSION and meta["split"] == "train" and meta["people"] == 2
    before, after = meta["reprojection_pct_iod_per_pass"][0], meta["reprojection_pct_iod_per_pass"][-1]
    assert after["other_splits"] < 0.6 * before["other_splits"], (before, after)
    assert after["measured_split"] < 0.6 * before["measured_split"], (before, after)
    assert after["over_2pct_not_hard"] == {} and len(before["over_2pct_not_hard"]) == 4
    base = landmark_calibration.resolve(VERSION, "mp478", 478, "auto")
    refined = landmark_calibration.LandmarkCalibration.load(out)
    assert refined.expression.shape == base.expression.shape and not np.allclose(refined.offset, base.offset)
    # what the fit and the shard builder accept
    fm = load_face_model("procedural")
    assert landmark_calibration.resolve(fm.name, "mp478", 478, str(out)).offset.shape == (478, 3)
    assert not list(tmp_path.glob(".*"))  # the per-pass files are gone


def test_real_face_refinement_and_its_consumers_refuse_bad_arguments(tmp_path, capsys):
    from data_prep.build import parse_args as build_args
    from data_prep.calibrate_real import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--shards", str(tmp_path), "--out", str(tmp_path / "c.npy")])
    assert "no index.json" in capsys.readouterr().err
    (tmp_path / "index.json").write_text("{}")
    with pytest.raises(SystemExit):
        parse_args(["--shards", str(tmp_path), "--out", str(tmp_path / "c.npy"), "--passes", "0"])
    assert "--passes must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_args(["--source", "folder", "--root", str(tmp_path), "--out", str(tmp_path / "s"),
                    "--landmark-calibration", str(tmp_path / "missing.npy")])
    assert "--landmark-calibration" in capsys.readouterr().err
