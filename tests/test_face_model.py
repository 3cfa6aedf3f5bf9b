"""FaceModel: schema, loaders (procedural, ICT originals vs npz, BFM 1-based), batched construction."""
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from src.geometry import camera
from src.geometry.face_models import PARTS, FaceModelData, load_face_model_data
from src.geometry.face_models.bfm import load_bfm
from src.geometry.face_models.ict import load_ict
from src.geometry.face_models.procedural import EXP_NAMES, build_procedural
from src.models.face_model import FaceModel, load_face_model

ICT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "facemodel" / "ict"
needs_ict = pytest.mark.skipif(not (ICT_DIR / "ict_facekit.npz").is_file(),
                               reason=f"ICT-FaceKit test files absent ({ICT_DIR})")


@pytest.fixture(scope="module")
def fm() -> FaceModel:
    return load_face_model("procedural")


def test_procedural_shapes_and_sets(fm):
    n = fm.n_vertices
    assert fm.mean.shape == (n, 3) and fm.id_basis.shape == (n, 3, 16) and fm.exp_basis.shape == (n, 3, len(EXP_NAMES))
    assert fm.triangles.shape[1] == 3 and int(fm.triangles.max()) < n
    assert fm.lmk68.shape == (68,) and fm.lmk478.shape == (478,) and bool((fm.lmk478 >= 0).all())
    assert torch.equal(fm.lmk478[:468], torch.arange(468))  # the face mesh is MediaPipe's topology
    lower, upper = set(fm.lower.tolist()), set(fm.upper.tolist())
    assert not lower & upper and len(lower | upper) == n
    assert set(fm.lip.tolist()) <= lower  # lips are part of the lower face
    assert 0.0 <= float(fm.pncc_colors.min()) and float(fm.pncc_colors.max()) <= 1.0
    assert int(fm.lip_triangles.sum()) > 50


def test_procedural_is_deterministic():
    build_procedural.cache_clear()
    a = build_procedural()
    build_procedural.cache_clear()
    b = build_procedural()
    assert np.array_equal(a.mean, b.mean) and np.array_equal(a.exp_basis, b.exp_basis)


def test_procedural_mesh_folds_are_slivers(fm):
    """The harmonic layout keeps the face triangles' winding in the frontal view, but for a few slivers
    at the eye and mouth corners (see procedural.py): under 2% of triangles and 0.3% of the area."""
    face_tris = fm.triangles[torch.as_tensor(fm.part)[fm.triangles].eq(PARTS["face"]).all(1)]
    v = fm.mean[:, :2]
    a, b, c = v[face_tris[:, 0]], v[face_tris[:, 1]], v[face_tris[:, 2]]
    cross = (b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]
    folded = cross < 0 if float((cross < 0).float().mean()) < 0.5 else cross > 0
    assert float(folded.float().mean()) < 0.02
    assert float(cross[folded].abs().sum() / cross.abs().sum()) < 0.003


def _onehot(fm, name, value=1.0):
    beta = torch.zeros(1, fm.n_exp)
    beta[0, fm.exp_names.index(name)] = value
    return beta


def test_speech_modes_move_the_mouth(fm):
    rest = float(fm.mouth_opening(fm.mean[None]))
    assert rest < 1.5
    assert float(fm.mouth_opening(fm.expression_vertices(_onehot(fm, "jaw_open")))) > 15.0
    closed = _onehot(fm, "jaw_open", 0.15) + _onehot(fm, "lip_close")
    assert float(fm.mouth_opening(fm.expression_vertices(closed))) < rest  # closure beats a slightly open jaw
    for name in ("blink_L", "brow_raise_R"):  # non-speech modes leave the lower face alone
        moved = (fm.expression_vertices(_onehot(fm, name)) - fm.mean)[0].norm(dim=-1)
        assert float(moved[fm.lip].max()) < 0.05 and float(moved.max()) > 3.0  # mm; harmonic fields leak a little


def test_blink_closes_the_eye(fm):
    upper_lid, lower_lid = 159, 145  # MediaPipe indices of the right eye's lid midpoints
    verts = fm.expression_vertices(_onehot(fm, "blink_R"))[0]
    assert float(fm.mean[upper_lid, 1] - fm.mean[lower_lid, 1]) > 7.0
    assert abs(float(verts[upper_lid, 1] - verts[lower_lid, 1])) < 2.5


def test_batched_construction_matches_per_frame_loop(fm):
    gen = torch.Generator().manual_seed(0)
    alpha, beta = torch.randn(5, fm.n_id, generator=gen), torch.rand(5, fm.n_exp, generator=gen)
    pose = torch.cat([0.2 * torch.randn(5, 3, generator=gen), 128 + torch.randn(5, 2, generator=gen),
                      torch.full((5, 1), 1.2)], 1)
    batched = fm.posed_vertices(alpha, beta, pose)
    for t in range(5):
        verts = fm.mean + fm.id_basis @ alpha[t] + fm.exp_basis @ beta[t]  # (L, 3)
        rot = camera.euler_to_matrix(pose[t, :3])
        rv = verts @ rot.T
        screen = torch.stack([pose[t, 5] * rv[:, 0] + pose[t, 3], -pose[t, 5] * rv[:, 1] + pose[t, 4],
                              pose[t, 5] * rv[:, 2]], 1)
        torch.testing.assert_close(batched[t], screen, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(fm.expression_vertices(beta), fm.shape(torch.zeros_like(alpha), beta))
    torch.testing.assert_close(fm.template_vertices(alpha), fm.shape(alpha, torch.zeros_like(beta)))


def test_rotation_is_proper():
    rot = camera.euler_to_matrix(torch.tensor([[0.3, -0.5, 0.2]]))[0]
    torch.testing.assert_close(rot @ rot.T, torch.eye(3), atol=1e-6, rtol=0)
    assert abs(float(torch.det(rot)) - 1.0) < 1e-6


def test_errors_name_the_argument(fm):
    with pytest.raises(ValueError, match="beta must be"):
        fm.expression_vertices(torch.zeros(2, fm.n_exp + 1))
    with pytest.raises(ValueError, match="pose must be"):
        fm.posed_vertices(torch.zeros(1, fm.n_id), torch.zeros(1, fm.n_exp), torch.zeros(1, 5))
    with pytest.raises(ValueError, match="face model spec"):
        load_face_model_data("flame")
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        load_face_model_data("ict:/nowhere.npz")


def test_schema_npz_roundtrip(tmp_path):
    data = build_procedural()
    path = data.save(tmp_path / "proc.npz")
    again = load_face_model_data(f"npz:{path}")
    assert again.name == data.name and again.exp_names == data.exp_names
    for key in ("mean", "id_basis", "exp_basis", "triangles", "lmk68", "lmk478", "lip", "lower", "mouth_pairs", "uv"):
        assert np.array_equal(getattr(again, key), getattr(data, key)), key
    with pytest.raises(ValueError, match="lmk68"):
        FaceModelData(**{**vars(data), "lmk68": data.lmk68[:60]})


@needs_ict
def test_ict_originals_agree_with_npz():
    from_npz = load_ict(ICT_DIR / "ict_facekit.npz")
    from_obj = load_ict(ICT_DIR, require_all=False)  # the test folder holds a subset of the OBJ files
    np.testing.assert_allclose(from_obj.mean, from_npz.mean, atol=1e-5)
    assert np.array_equal(from_obj.triangles, from_npz.triangles) and np.array_equal(from_obj.lmk68, from_npz.lmk68)
    for j, name in enumerate(from_obj.exp_names):
        np.testing.assert_allclose(from_obj.exp_basis[:, :, j],
                                   from_npz.exp_basis[:, :, from_npz.exp_names.index(name)], atol=1e-5)
    np.testing.assert_allclose(from_obj.id_basis[:, :, 0], from_npz.id_basis[:, :, 0], atol=1e-5)
    with pytest.raises(FileNotFoundError, match="incomplete"):
        load_ict(ICT_DIR)
    assert int((from_npz.part == PARTS["eye"]).sum()) == 3140  # two eyeballs, from ICT's vertex ranges
    assert from_npz.triangles.max() < 24591  # translucent overlay shells (lashes, occlusion) dropped
    fm = FaceModel(from_npz)
    jaw = torch.zeros(1, fm.n_exp)
    jaw[0, fm.exp_names.index("jawOpen")] = 1.0
    assert float(fm.mouth_opening(fm.expression_vertices(jaw))) > 10.0 > float(fm.mouth_opening(fm.mean[None]))


def _fake_bfm(path: Path, n: int = 120, zero_based: bool = False) -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform(-1, 1, (n, 2))
    mean = np.c_[xy, 0.3 * rng.standard_normal(n)]
    tris = np.array([(i, i + 1, i + 2) for i in range(n - 2)]) + (0 if zero_based else 1)
    keypoints = rng.choice(n, 68, replace=False) + (0 if zero_based else 1)
    scipy.io.savemat(path, {"meanshape": mean.reshape(1, -1), "idBase": rng.standard_normal((3 * n, 80)),
                            "exBase": rng.standard_normal((3 * n, 64)), "tri": tris.astype(np.float64),
                            "keypoints": keypoints[None].astype(np.float64), "point_buf": np.ones((n, 8))})


def test_bfm_reader_converts_one_based_indices(tmp_path):
    _fake_bfm(tmp_path / "BFM_model_front.mat")
    raw = scipy.io.loadmat(tmp_path / "BFM_model_front.mat")
    data = load_bfm(tmp_path / "BFM_model_front.mat")
    assert data.id_basis.shape == (120, 3, 80) and data.exp_basis.shape == (120, 3, 64)
    assert np.array_equal(data.triangles, raw["tri"].astype(int) - 1)
    assert np.array_equal(data.lmk68, raw["keypoints"].ravel().astype(int) - 1)
    # interleaved xyz: vertex 5's y is meanshape[3 * 5 + 1] (before centring)
    centred = raw["meanshape"].reshape(-1, 3) - raw["meanshape"].reshape(-1, 3).mean(0)
    assert np.allclose(data.mean[5], centred[5], atol=1e-6)
    assert np.allclose(data.id_basis[5, 1], raw["idBase"][16], atol=1e-6)
    fm = load_face_model(f"bfm:{tmp_path / 'BFM_model_front.mat'}")
    assert fm.posed_vertices(torch.zeros(2, 80), torch.zeros(2, 64),
                             torch.tensor([[0, 0, 0, 64, 64, 20.0]] * 2)).shape == (2, 120, 3)


def test_bfm_reader_rejects_zero_based_and_missing(tmp_path):
    _fake_bfm(tmp_path / "zero.mat", zero_based=True)
    with pytest.raises(ValueError, match="1-based"):
        load_bfm(tmp_path / "zero.mat")
    with pytest.raises(FileNotFoundError, match="BFM_model_front.mat"):
        load_bfm(tmp_path / "absent.mat")
