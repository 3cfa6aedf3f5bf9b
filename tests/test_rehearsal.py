"""The BFM stand-in of `make rehearse` and the defects the rehearsal found, at reduced sizes; the full sizes run
in the `slow` test and in `make rehearse` (README, "Training at scale")."""
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from data_prep.synthetic import bfm_standin, motion
from src.geometry.face_models.bfm import load_bfm
from src.geometry.face_models.procedural import EXP_NAMES, IBUG68_FROM_MEDIAPIPE, build_procedural
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
    assert data.n_vertices == SMALL and data.units_to_mm == 100.0
    assert np.array_equal(data.lmk68, IBUG68_FROM_MEDIAPIPE)  # the procedural landmark vertices, 0-based
    proc = build_procedural()
    offset = data.mean[data.lmk68] * 100 - proc.mean[proc.lmk68]  # mm; the loader centres the mean
    assert np.abs(offset - offset.mean(0)).max() < 1e-3  # the keypoints sit where the procedural ones do
    fm = FaceModel(data)
    assert 55 < fit_error.eye_distance_mm(fm) < 65  # decimetres converted: a human eye distance
    assert abs(np.linalg.norm(data.exp_basis, axis=1).mean() - np.linalg.norm(proc.exp_basis, axis=1).mean() / 100) \
        < 0.01  # same order of motion as the procedural modes, in dm


def test_standin_is_deterministic_and_its_bases_are_pca_columns():
    a, b = bfm_standin.build_standin(SMALL), bfm_standin.build_standin(SMALL)
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


def test_a_synthetic_clip_is_rendered_with_the_standin(standin, tmp_path):
    from data_prep.synthetic.generate import main as generate

    assert generate(["--out", str(tmp_path), "--speakers", "1", "--clips-per-speaker", "1", "--seconds", "1",
                     "--seed", "3", "--workers", "1", "--face-model", f"bfm:{standin}"]) == 0
    (sidecar,) = tmp_path.glob("id*/*/*.json")
    side = json.loads(sidecar.read_text())
    assert side["face_model"] == "bfm-deep3dfacerecon" and np.asarray(side["beta"]).shape == (25, 64)
    assert side["landmarks_478"] is None and max(side["mouth_opening_mm"]) > 2.0


@pytest.mark.slow
def test_full_size_standin(tmp_path):
    """The real file's sizes: 35,709 vertices, ~70k triangles, idBase (3N, 80), exBase (3N, 64) (~10 s)."""
    path = tmp_path / "BFM_model_front.mat"
    assert bfm_standin.main(["--out", str(path)]) == 0
    data = load_bfm(path)
    assert data.n_vertices == 35709 and 69000 < len(data.triangles) < 72000
    assert data.id_basis.shape == (35709, 3, 80) and data.exp_basis.shape == (35709, 3, 64)
