"""HyperIQA (src/models/hyperiqa.py) with random weights, and the quality-filter step (data_prep/quality.py)
on synthetic images and landmarks."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from data_prep.quality import (
    ClipContext,
    EmbeddedScorer,
    FilterReport,
    HyperIQAScorer,
    QualityFilter,
    landmark_jitter,
    score_clip,
)
from src.models.hyperiqa import HyperIQA

CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "data_prep" / "quality.yaml"


@pytest.fixture(scope="module")
def hyperiqa() -> HyperIQA:
    torch.manual_seed(0)
    return HyperIQA()


def test_hyperiqa_forward_backward(hyperiqa):
    x = torch.randn(1, 3, 224, 224, requires_grad=True)
    score = hyperiqa(x)
    assert score.shape == (1,) and torch.isfinite(score).all()
    paras = hyperiqa.hyper(x.detach())
    assert paras["target_in_vec"].shape == (1, 224)
    widths = [224, 112, 56, 28, 14, 1]
    for k in range(1, 6):
        assert paras[f"target_fc{k}w"].shape == (1, widths[k], widths[k - 1])
        assert paras[f"target_fc{k}b"].shape == (1, widths[k])
    score.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert hyperiqa.fc1w_conv.weight.grad is not None and hyperiqa.res.conv1.weight.grad is not None
    hyperiqa.zero_grad(set_to_none=True)


def test_hyperiqa_target_net_matches_reference_grouped_conv(hyperiqa):
    """The einsum target net equals the reference's TargetFC (grouped 1x1 conv, one group per image)."""
    torch.manual_seed(1)
    b, widths = 2, [224, 112, 56, 28, 14, 1]
    paras = {"target_in_vec": torch.randn(b, 224)}
    for k in range(1, 6):
        paras[f"target_fc{k}w"] = torch.randn(b, widths[k], widths[k - 1]) * 0.1
        paras[f"target_fc{k}b"] = torch.randn(b, widths[k])
    q = paras["target_in_vec"].view(b, 224, 1, 1)
    for k in range(1, 6):
        w, bias = paras[f"target_fc{k}w"], paras[f"target_fc{k}b"]
        q = F.conv2d(q.view(1, -1, 1, 1), w.reshape(-1, w.shape[2], 1, 1), bias.reshape(-1), groups=b)
        q = q.view(b, w.shape[1], 1, 1)
        q = torch.sigmoid(q) if k < 5 else q
    torch.testing.assert_close(HyperIQA.target_net(paras), q.flatten(), rtol=1e-5, atol=1e-5)


def test_hyperiqa_rejects_wrong_size(hyperiqa):
    with pytest.raises(ValueError, match="224"):
        hyperiqa(torch.randn(1, 3, 256, 256))
    with pytest.raises(ValueError, match="at least 224"):
        hyperiqa.quality(torch.rand(1, 3, 128, 128), resize=None)


def test_hyperiqa_state_dict_round_trip(hyperiqa, tmp_path):
    path = tmp_path / "koniq_pretrained.pkl"
    torch.save(hyperiqa.state_dict(), path)
    loaded = HyperIQA.from_pretrained(path)
    assert not loaded.training
    x = torch.randn(1, 3, 224, 224)
    hyperiqa.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), hyperiqa(x))
    # an old checkpoint without BatchNorm's num_batches_tracked still loads strictly
    old = {k: v for k, v in hyperiqa.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(old, path)
    HyperIQA.from_pretrained(path)
    # a foreign layout names its missing and unexpected keys
    bad = {("backbone." + k if k.startswith("res.") else k): v for k, v in old.items()}
    torch.save(bad, path)
    with pytest.raises(ValueError, match=r"missing keys \['res\..*unexpected keys \['backbone\."):
        HyperIQA.from_pretrained(path)


def test_hyperiqa_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.pkl.*koniq_pretrained\.pkl.*hyperIQA"):
        HyperIQA.from_pretrained(tmp_path / "nope.pkl")
    with pytest.raises(FileNotFoundError, match="nope.pkl"):
        HyperIQAScorer(tmp_path / "nope.pkl")


def test_hyperiqa_scorer(hyperiqa):
    scorer = HyperIQAScorer.from_network(hyperiqa, n_frames=2, n_crops=1)
    crops, ctx = _clip(np.full((4, 240, 240, 3), 128, np.uint8))
    out = scorer.score(crops, ctx)
    assert set(out) == {"hyperiqa"} and np.isfinite(out["hyperiqa"])
    assert scorer.score(crops, ctx) == out  # seeded crops: repeatable


# ------------------------------------------------------------------------------------------ embedded


def _texture(size: int = 256, seed: int = 0) -> np.ndarray:
    """A sharp, mid-grey textured RGB image (random blocks and edges)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(60, 200, (size // 8, size // 8, 3), dtype=np.uint8)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_NEAREST)


def _landmarks(t: int, n: int = 68, seed: int = 0) -> np.ndarray:
    """(t, n, 2) landmarks of one rigid face moving smoothly (rotation, scale, translation)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(-50, 50, (n, 2))
    eyes = (36, 45) if n == 68 else (33, 263)
    base[eyes[0]], base[eyes[1]] = (-40, -20), (40, -20)  # inter-ocular distance 80
    th = np.linspace(0, 0.5, t)
    rot = np.stack([np.cos(th), -np.sin(th), np.sin(th), np.cos(th)], -1).reshape(t, 2, 2)
    scale = np.linspace(1.0, 1.3, t)[:, None, None]
    return np.einsum("tij,nj->tni", rot, base) * scale + 128 + np.linspace(0, 30, t)[:, None, None]


def _clip(crops: np.ndarray, landmarks: np.ndarray | None = None):
    t = len(crops)
    lmk = _landmarks(t) if landmarks is None else landmarks
    return crops, ClipContext(face_size_px=np.full(t, 200.0), landmarks=lmk, fps=25.0)


def test_embedded_ranks_sharp_above_blurred_and_bright_above_dark():
    sharp = np.stack([_texture(seed=i) for i in range(3)])
    blurred = np.stack([cv2.GaussianBlur(c, (0, 0), 3) for c in sharp])
    dark = (sharp * 0.03).astype(np.uint8)  # near-black: luma <= 6
    scorer = EmbeddedScorer(n_frames=3)
    s_sharp, s_blur, s_dark = (scorer.score(*_clip(c)) for c in (sharp, blurred, dark))
    assert s_sharp["sharpness"] > 10 * s_blur["sharpness"]
    assert s_sharp["brightness"] > 100 > 20 > s_dark["brightness"]
    assert s_sharp["clipped"] == 0 and s_dark["clipped"] > 0.5
    assert s_sharp["face_size"] == 200.0
    assert set(s_sharp) == {"sharpness", "face_size", "brightness", "clipped", "landmark_jitter"}


@pytest.mark.parametrize("n", [68, 478])
def test_landmark_jitter_rigid_vs_jittered(n):
    rigid = _landmarks(20, n)
    assert landmark_jitter(rigid) < 1e-9
    noisy = rigid + np.random.default_rng(1).normal(0, 0.02 * 80, rigid.shape)  # 2% of the IOD
    assert 0.02 < landmark_jitter(noisy) < 0.06


def test_landmark_jitter_errors():
    with pytest.raises(ValueError, match="N=10"):
        landmark_jitter(np.zeros((3, 10, 2)))
    bad = _landmarks(3)
    bad[1, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        landmark_jitter(bad)


def test_context_and_crop_validation():
    with pytest.raises(ValueError, match="landmarks"):
        ClipContext(np.zeros(3), np.zeros((4, 68, 2)), 25.0)
    with pytest.raises(ValueError, match="uint8"):
        EmbeddedScorer().score(*_clip(np.zeros((2, 64, 64, 3), np.float32)))


def test_score_clip_merges_and_rejects_clashes():
    crops, ctx = _clip(np.stack([_texture()] * 2))
    scorer = EmbeddedScorer(n_frames=2)
    assert set(score_clip([scorer], crops, ctx)) == set(scorer.score(crops, ctx))
    with pytest.raises(ValueError, match="repeats"):
        score_clip([scorer, scorer], crops, ctx)


# ------------------------------------------------------------------------------------------ filter


def test_filter_and_report_counts():
    keep = QualityFilter({"sharpness": (40.0, None), "brightness": [50, 200]}, min_frames=50)
    good = {"sharpness": 100.0, "brightness": 120.0}
    assert keep.check(good, 60) == []
    assert keep.check({"sharpness": 10.0, "brightness": 250.0}, 60) == ["sharpness<40.0", "brightness>200.0"]
    assert keep.check(good, 12) == ["too_short(12<50)"]
    assert keep.check({"sharpness": float("nan"), "brightness": 120.0}, 60) == ["sharpness=nan"]
    with pytest.raises(KeyError, match="brightness"):
        keep.check({"sharpness": 100.0}, 60)

    report = FilterReport()
    report.add(keep.check(good, 60), "a")
    report.add(keep.check({"sharpness": 10.0, "brightness": 10.0}, 12), "b")
    report.add(keep.check({"sharpness": 10.0, "brightness": 120.0}, 60), "c")
    d = report.to_dict()
    assert (d["total"], d["kept"], d["removed"]) == (3, 1, 2)
    assert d["by_criterion"] == {"brightness": 1, "sharpness": 2, "too_short": 1}
    assert d["failures"]["b"] == ["too_short(12<50)", "sharpness<40.0", "brightness<50.0"]
    assert "3 clips, kept 1, removed 2" in report.summary()


def test_filter_rejects_bad_thresholds():
    with pytest.raises(ValueError, match="sharpness"):
        QualityFilter({"sharpness": 40.0}, min_frames=1)
    with pytest.raises(ValueError, match="min 2.0 > max 1.0"):
        QualityFilter({"clipped": (2, 1)}, min_frames=1)
    with pytest.raises(ValueError, match="min_frames"):
        QualityFilter({}, min_frames=0)


def test_config_instantiates_and_keeps_a_clean_clip():
    cfg = OmegaConf.load(CONFIG)
    scorers = [instantiate(s) for s in cfg.scorers.values()]
    keep = instantiate(cfg.filter)
    t = keep.min_frames
    crops, ctx = _clip(np.stack([_texture(seed=i) for i in range(t)]))
    scores = score_clip(scorers, crops, ctx)
    assert keep.check(scores, t) == []
    dark = (crops * 0.1).astype(np.uint8)
    assert {"brightness<50.0", "sharpness<15.0"} <= set(keep.check(score_clip(scorers, dark, ctx), t))
