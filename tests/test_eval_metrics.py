"""eval/metrics: each metric is at its best value on identical inputs and worse on perturbed ones (blur, shift,
another identity, a shifted mouth). Networks are injected or randomly initialised ("uncalibrated": these
tests check the metric code, not the networks); faces come from a tiny synthetic corpus."""
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from eval.crops import to_tensor
from eval.metrics.csim import CSIM, FacenetEmbedder, build_facenet, five_points
from eval.metrics.fid import FID, build_fid_inception
from eval.metrics.image import PSNR, SSIM
from eval.metrics.lmd import LMD, CropLandmarker, lip_indices
from eval.metrics.lpips import LPIPSScore


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> dict:
    """256x256 face crops (uint8 (T, 256, 256, 3)) of two synthetic speakers, 1 s each, with their tracks'
    landmarks in crop pixels."""
    from data_prep.synthetic.generate import main as generate
    from eval.crops import iter_crop_pairs, track_ground_truth

    corpus = tmp_path_factory.mktemp("faces")
    generate(["--out", str(corpus), "--speakers", "2", "--clips-per-speaker", "1", "--seconds", "1", "--seed", "3",
              "--workers", "1", "--size", "256"])
    out = {}
    for i, path in enumerate(sorted(corpus.rglob("*.mp4"))):
        gt = track_ground_truth(path)
        chunk = next(iter_crop_pairs(path, gt, gt.span, 256, chunk=8))
        out[f"speaker{i}"], out[f"lmk{i}"] = chunk.gt, chunk.gt_landmarks
    return out


def blur(crops: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    return np.stack([cv2.GaussianBlur(c, (0, 0), sigma) for c in crops])


def shift(crops: np.ndarray, px: int = 6) -> np.ndarray:
    return np.roll(crops, px, axis=2)


def score(metric, gen: np.ndarray, gt: np.ndarray, *extra) -> float:
    metric.reset()
    metric.update(to_tensor(gen), to_tensor(gt), *extra)
    return float(metric.compute())


def test_psnr_ssim_best_on_identical_worse_on_blur_and_shift(faces, one_torch_thread):
    x = faces["speaker0"]
    psnr, ssim = PSNR(), SSIM()
    assert score(psnr, x, x) == float("inf")
    assert score(ssim, x, x) == pytest.approx(1.0, abs=1e-5)
    for perturbed in (blur(x), shift(x)):
        assert score(psnr, perturbed, x) < 40
        assert score(ssim, perturbed, x) < 0.99
    assert score(ssim, blur(x, 4.0), x) < score(ssim, blur(x, 1.0), x)


def test_frame_metrics_refuse_bad_input():
    x = np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match=r"float tensor \(B, 3, H, W\)"):
        PSNR().update(torch.from_numpy(x), torch.from_numpy(x))
    with pytest.raises(ValueError, match=r"values must lie in \[0, 1\]"):
        SSIM().update(torch.full((1, 3, 16, 16), 255.0), torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="same shape"):
        PSNR().update(torch.zeros(1, 3, 16, 16), torch.zeros(2, 3, 16, 16))


def test_lpips_zero_on_identical_positive_on_blur(faces, one_torch_thread):
    from src.models.lpips_net import LPIPS

    x = faces["speaker0"][:3]
    metric = LPIPSScore(LPIPS(net="alex", backbone_weights=None))  # uncalibrated (random backbone)
    assert score(metric, x, x) == pytest.approx(0.0, abs=1e-7)
    assert score(metric, blur(x), x) > 1e-4
    assert score(metric, shift(x), x) > 1e-4


class PooledFeatures(nn.Module):
    """A small injected FID feature network: (B, 3, H, W) -> (B, 48) pooled colour statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)  # (B, 3 * 16)


def test_fid_zero_on_identical_sets_worse_on_perturbed(faces, one_torch_thread):
    x = np.concatenate([faces["speaker0"], faces["speaker1"]])
    metric = FID(PooledFeatures())
    assert score(metric, x, x) == pytest.approx(0.0, abs=1e-4)
    blurred, other = score(metric, blur(x, 4.0), x), score(metric, shift(x, 30), x)
    assert blurred > 1e-4 and other > 1e-4
    metric.reset()
    with pytest.raises(RuntimeError, match="at least 2 frames"):
        metric.compute()


def test_fid_inception_loads_its_weights_from_a_local_file(tmp_path, one_torch_thread):
    import pytorch_fid.inception as fid_inception

    with pytest.raises(FileNotFoundError, match="pt_inception"):
        build_fid_inception(tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    # a random-initialised FID Inception's state dict stands in for the real file (uncalibrated)
    with mock.patch.object(fid_inception, "load_state_dict_from_url", lambda *a, **k: None), \
            mock.patch("torch.nn.Module.load_state_dict", lambda self, *a, **k: None):
        state = fid_inception.fid_inception_v3().state_dict()
    torch.save(state, tmp_path / "fid.pth")
    net = build_fid_inception(tmp_path / "fid.pth")
    assert torch.equal(net.inception.blocks[0][0].conv.weight, state["Conv2d_1a_3x3.conv.weight"])
    assert net(torch.rand(1, 3, 64, 64)).shape == (1, 2048)


class TinyEmbedder(nn.Module):
    """An injected face embedder: strided convolution, pooled -> (B, 32)."""

    needs_points = False

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 32, 16, 16)

    def forward(self, x: torch.Tensor, points=None) -> torch.Tensor:
        return self.conv(x).flatten(2).mean(-1)  # (B, 32)


def test_csim_best_on_identical_lower_for_another_identity(faces, one_torch_thread):
    a, b = faces["speaker0"][:4], faces["speaker1"][:4]
    metric = CSIM(FacenetEmbedder(TinyEmbedder(), face_fraction=0.7))
    assert score(metric, a, a) == pytest.approx(1.0, abs=1e-5)
    assert score(metric, b, a) < score(metric, blur(a), a) < 1.0


def test_facenet_loads_the_vggface2_state_dict(tmp_path, one_torch_thread):
    from facenet_pytorch import InceptionResnetV1

    with pytest.raises(FileNotFoundError, match="vggface2"):
        build_facenet(tmp_path / "20180402-114759-vggface2.pt")
    state = InceptionResnetV1(pretrained=None).state_dict()
    state |= {"logits.weight": torch.zeros(8631, 512), "logits.bias": torch.zeros(8631)}  # as in the real file
    torch.save(state, tmp_path / "vggface2.pt")
    embedder = build_facenet(tmp_path / "vggface2.pt")
    assert torch.equal(embedder.net.last_linear.weight, state["last_linear.weight"])
    assert embedder(torch.rand(2, 3, 256, 256)).shape == (2, 512)


def tiny_arcface_onnx(path: Path) -> Path:
    """A stand-in ArcFace in ONNX: (1, 3, 112, 112) -> average pool 8x8 -> flatten -> linear -> (1, 16)."""
    onnx = pytest.importorskip("onnx", reason="onnx is needed to write the test ArcFace model")
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).standard_normal((3 * 14 * 14, 16)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[8, 8], strides=[8, 8]),
         helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["y"])],
        "tiny_arcface", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 112, 112])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_arcface_onnx_csim(faces, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime runs ArcFace models")
    from eval.metrics.csim import ArcFaceEmbedder

    embedder = ArcFaceEmbedder(tiny_arcface_onnx(tmp_path / "arcface.onnx"))
    a, b = faces["speaker0"][:3], faces["speaker1"][:3]
    points = torch.from_numpy(five_points(faces["lmk0"][:3]))
    metric = CSIM(embedder)
    assert score(metric, a, a, points) == pytest.approx(1.0, abs=1e-5)
    assert score(metric, b, a, points) < 0.999
    with pytest.raises(ValueError, match="five points"):
        metric.update(to_tensor(a), to_tensor(a))


def test_five_points_follow_the_arcface_template_order(faces):
    pts = five_points(faces["lmk0"][0])  # (5, 2): eyes (image left, right), nose tip, mouth corners
    assert pts[0, 0] < pts[1, 0] and pts[3, 0] < pts[4, 0]
    assert pts[0, 1] < pts[2, 1] < pts[3, 1]


def test_lmd_zero_on_identical_positive_on_shifted_mouth(faces):
    x = faces["speaker0"]
    moved = x.copy()
    moved[:, 150:230] = np.roll(x[:, 150:230], 8, axis=1)  # the lower face, mouth included, 8 px down
    with CropLandmarker() as det_a, CropLandmarker() as det_b, CropLandmarker() as det_c:
        gt, same, gen = det_a.update(x), det_b.update(x), det_c.update(moved)
    assert np.isfinite(gt).all() and len(lip_indices()) == 40
    metric = LMD()
    metric.update(same, gt)
    assert float(metric.compute()) == pytest.approx(0.0, abs=1e-6)
    metric.reset()
    metric.update(gen, gt)
    assert float(metric.compute()) > 0.02  # > 2% of the inter-ocular distance


def test_lmd_counts_frames_without_a_generated_face():
    gt = np.random.default_rng(0).uniform(50, 200, (3, 478, 2)).astype(np.float32)
    gen = gt.copy()
    gen[1] = np.nan
    metric = LMD()
    metric.update(gen, gt)
    assert metric.compute_details() == {"lmd": 0.0, "frames": 2, "missing_gen": 1, "missing_gt": 0}
    metric.reset()
    metric.update(np.full_like(gt, np.nan), gt)  # a generation without any detectable face: NaN, not a crash
    assert np.isnan(metric.compute_details()["lmd"]) and metric.compute_details()["missing_gen"] == 3
    with pytest.raises(ValueError, match=r"\(B, 478, 2\)"):
        metric.update(gen[:, :68], gt[:, :68])
