"""Stage-1 data and metrics: windows from the shards, reference spans, held-out clips, the style metric and
the composed output geometry."""
import io
import random
import zlib

import numpy as np
import pytest
import torch
import webdataset as wds

from src.data.geometry_datamodule import GeometryDataModule, reference_span
from src.geometry.compose import compose_canonical
from src.metrics.geometry import SpeakerAmplitude, lip_vertex_error
from src.models.face_model import shared_face_model


def _shard_audio(shards) -> dict[str, np.ndarray]:
    urls = sorted(str(p) for p in shards.glob("*.tar"))
    return {s["__key__"]: np.load(io.BytesIO(s["audio.npy"])) for s in wds.WebDataset(urls, shardshuffle=False)}


def _module(shards, **kw) -> GeometryDataModule:
    args = dict(root=str(shards), window=16, ref_window=16, min_ref=8, batch_size=4, train_batches=3, num_workers=0)
    return GeometryDataModule(**{**args, **kw})


@pytest.mark.parametrize("n,start", [(100, 0), (100, 50), (100, 20), (40, 10), (30, 7)])
def test_reference_span_never_overlaps_the_target(n, start):
    for rng in (None, random.Random(0), random.Random(1)):
        span = reference_span(n, start, 16, 20, 8, rng)
        if max(start, n - start - 16) < 8:
            assert span is None
            continue
        a, b = span
        assert 0 <= a < b <= n and 8 <= b - a <= 20
        assert b <= start or a >= start + 16


def test_train_batches_are_aligned_windows(synthetic_shards):
    dm = _module(synthetic_shards)
    audio = _shard_audio(synthetic_shards)
    batches = list(dm.train_dataloader())
    assert len(batches) == 3
    for batch in batches:
        B = len(batch["key"])
        assert batch["audio"].shape == (B, 16 * 640) and batch["beta"].shape[:2] == (B, 16)
        assert batch["pose"].shape == (B, 16, 6) and batch["ref_mask"].any(1).all()
        for i, key in enumerate(batch["key"]):
            s, r = int(batch["start"][i]), int(batch["ref_start"][i])
            expected = audio[key][s * 640:(s + 16) * 640].astype(np.float32) / 32768
            assert np.array_equal(batch["audio"][i].numpy(), expected)
            n_ref = int(batch["ref_mask"][i].sum())
            assert r + n_ref <= s or r >= s + 16, "reference window overlaps the target"


def test_eval_stream_is_fixed(synthetic_shards):
    dm = _module(synthetic_shards)
    first = [b["start"].tolist() + b["key"] for b in dm.val_dataloader()[0]]
    second = [b["start"].tolist() + b["key"] for b in dm.val_dataloader()[0]]
    assert first == second and first


def test_heldout_clips_are_never_trained_on(synthetic_shards):
    urls = sorted(str(p) for p in synthetic_shards.glob("train-*.tar"))
    clips = {s["json"]["clip"] for s in wds.WebDataset(urls, shardshuffle=False).decode()}
    hashes = sorted(zlib.crc32(c.encode()) % 10_000 for c in clips)
    assert len(hashes) >= 2
    dm = _module(synthetic_shards, heldout_clips=(hashes[0] + 1) / 10_000, train_batches=8)  # one clip held out
    held = {k for b in dm.val_dataloader()[1] for k in b["key"]}
    trained = {k for b in dm.train_dataloader() for k in b["key"]}
    assert held and trained and not held & trained
    assert dm.val_names == ["val", "val_seen"]


def test_missing_shards_are_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="index.json"):
        GeometryDataModule(root=str(tmp_path)).train_dataloader()
    with pytest.raises(ValueError, match="root"):
        GeometryDataModule()


def test_speaker_amplitude_metric():
    metric = SpeakerAmplitude()
    true = torch.randn(6, 20).abs()
    metric.update(["a", "a", "b", "b", "c", "c"], true.clone(), true)
    out = metric.compute()
    assert out["amp_error"] < 1e-5 and abs(out["amp_ratio"] - 1) < 1e-5 and out["speakers"] == 3
    metric.reset()
    scale = torch.tensor([2.0, 2.0, 0.5, 0.5, 1.0, 1.0])[:, None]
    metric.update(["a", "a", "b", "b", "c", "c"], true * scale + 3.0, true)  # offsets do not change amplitude
    out = metric.compute()
    assert abs(out["amp_error"] - 2 * np.log(2) / 3) < 1e-4 and abs(out["amp_ratio"] - 1) < 1e-4


def test_lip_vertex_error_is_the_max_distance():
    pred = torch.zeros(2, 3, 3)
    true = torch.zeros(2, 3, 3)
    true[0, 1, 0] = 3.0
    true[1, 2, 2] = 4.0
    true[1, 0, 1] = 1.0
    assert lip_vertex_error(pred, true).tolist() == [3.0, 4.0]


def test_compose_takes_the_lower_face_from_the_prediction():
    fm = shared_face_model("procedural")
    gen = torch.Generator().manual_seed(0)
    alpha = torch.randn(2, fm.n_id, generator=gen)
    beta_tgt, beta_ref = torch.rand(2, fm.n_exp, generator=gen), torch.rand(2, fm.n_exp, generator=gen)
    offsets = (fm.expression_vertices(beta_tgt) - fm.mean)[:, fm.lower] * fm.units_to_mm  # true displacement
    verts = compose_canonical(fm, alpha, beta_ref, offsets)
    truth_tgt, truth_ref = fm.canonical_vertices(alpha, beta_tgt), fm.canonical_vertices(alpha, beta_ref)
    assert torch.allclose(verts[:, fm.lower], truth_tgt[:, fm.lower], atol=1e-4)
    assert torch.allclose(verts[:, fm.upper], truth_ref[:, fm.upper], atol=1e-4)
    with pytest.raises(ValueError, match="lower_offsets_mm"):
        compose_canonical(fm, alpha, beta_ref, offsets[:, :10])


def test_a_training_stream_without_windows_fails_instead_of_hanging(synthetic_shards, monkeypatch):
    monkeypatch.setattr("src.data.geometry_datamodule.MAX_BARREN", 20)
    dm = _module(synthetic_shards, window=500)  # longer than any clip
    with pytest.raises(RuntimeError, match="no window"):
        next(iter(dm.train_dataloader()))
