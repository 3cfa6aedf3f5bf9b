"""Stage 1 on real speech: the phone front end (pocketsphinx, weights in its wheel), its cache, the phone E_aud,
silero voice activity, the frozen-mouth baseline and eval.lipsync end to end."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from src.audio.phones import PHONES, FeatureCache, PhoneRecogniser, phone_frames
from src.audio.vad import SileroVAD
from src.inference.audio import VadConfig, voice_activity
from src.models.geometry.e_aud_phones import PhoneAudioEncoder
from src.train import train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
LJ = SHARED / "audio" / "coqui-ai__TTS__LJ001-0001.wav"
needs_speech = pytest.mark.skipif(not LJ.is_file(), reason=f"real speech absent ({LJ})")


def test_phone_frames_cover_each_frame_once():
    frames = phone_frames([("AA", 0.0, 0.06), ("M", 0.06, 0.1), ("+NSN+", 0.1, 0.12)], 4)
    assert frames.shape == (4, len(PHONES))
    np.testing.assert_allclose(frames.sum(1), 1.0, atol=1e-6)
    aa, m = PHONES.index("AA"), PHONES.index("M")
    assert frames[0, aa] == pytest.approx(1.0) and frames[1, aa] == pytest.approx(0.5)
    assert frames[1, m] == pytest.approx(0.5) and frames[2, m] == pytest.approx(0.5)
    assert frames[2, 0] == pytest.approx(0.5)
    assert frames[3, 0] == pytest.approx(1.0)  # unknown symbols and uncovered time are silence


def test_recogniser_hears_silence_as_silence_and_is_picklable():
    import pickle

    recogniser = pickle.loads(pickle.dumps(PhoneRecogniser()))  # a data worker's own copy
    frames = recogniser.frames(np.zeros(640 * 25, np.float32))
    assert frames.shape == (25, len(PHONES)) and frames[:, 0].mean() > 0.9


@needs_speech
def test_recogniser_hears_phones_in_real_speech():
    from src.media.decode import read_audio

    frames = PhoneRecogniser().frames(read_audio(LJ))
    spoken = frames.argmax(1)
    assert (spoken != 0).mean() > 0.6 and len(set(spoken.tolist())) > 15


def test_feature_cache_computes_once(tmp_path, monkeypatch):
    cache = FeatureCache(PhoneRecogniser(), tmp_path)
    audio = np.random.default_rng(0).standard_normal(640 * 10).astype(np.float32) * 0.01
    first = cache.frames(audio, 10)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    monkeypatch.setattr(cache.extractor, "frames", lambda *a: pytest.fail("recognised again"))
    np.testing.assert_array_equal(cache.frames(audio, 10), first)


def test_phone_encoder_takes_features_or_recognises_them():
    torch.manual_seed(0)
    encoder = PhoneAudioEncoder(16, PhoneRecogniser(), kernel=3, depth=2)
    audio = torch.zeros(2, 640 * 8)
    assert encoder(audio, 8).shape == (2, 8, 16)
    features = torch.zeros(2, 8, len(PHONES))
    features[..., PHONES.index("AA")] = 1
    out = encoder(audio, 8, features)
    out.square().mean().backward()
    assert out.shape == (2, 8, 16) and all(p.grad is not None for p in encoder.parameters())
    with pytest.raises(ValueError, match="features must be"):
        encoder(audio, 8, features[:, :5])
    with pytest.raises(ValueError, match="no recogniser"):
        PhoneAudioEncoder(16)(audio, 8)


def test_hubert_encoder_refuses_another_front_ends_features():
    from src.models.geometry.e_aud import AudioEncoder

    tiny = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                conv_dim=[8] * 7, num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2)
    with pytest.raises(ValueError, match="reads the waveform"):
        AudioEncoder(dim=16, config=tiny)(torch.zeros(1, 640 * 4), 4, torch.zeros(1, 4, len(PHONES)))


def test_silero_gate_is_closed_in_silence():
    assert not SileroVAD().speech(np.zeros(640 * 50, np.float32)).any()
    gate = voice_activity(np.zeros(640 * 50, np.float32), VadConfig())
    assert gate.shape == (50,) and gate.max() == 0
    with pytest.raises(ValueError, match="--vad-detector must be one of"):
        VadConfig(detector="webrtc")


@needs_speech
def test_silero_closes_the_mouth_in_a_pause_and_opens_it_again():
    """Two sentences with 2 s of silence between: the gate is closed within 0.2 s of the pause and open again
    within 0.2 s of the speech coming back."""
    from src.media.decode import read_audio

    speech = read_audio(LJ)[:16000 * 3]
    audio = np.concatenate([speech, np.zeros(32000, np.float32), speech])
    gate = voice_activity(audio[: len(audio) // 640 * 640], VadConfig())
    pause = (3 * 25, 5 * 25)  # frames of the silence
    assert gate[pause[0] + 5:pause[1]].max() < 0.05  # closed 0.2 s into the pause
    assert gate[pause[1] + 5:pause[1] + 15].min() > 0.5  # open 0.2 s after speech resumes


# ----- eval.lipsync end to end -----

@pytest.fixture(scope="module")
def phone_geometry_ckpt(synthetic_shards, tmp_path_factory) -> Path:
    from tests.conftest import GEOMETRY_TEST_OVERRIDES, compose_config

    run = tmp_path_factory.mktemp("geometry_real")
    windows = [o for o in GEOMETRY_TEST_OVERRIDES if not o.startswith("model/net/e_aud")]
    cfg = compose_config(["experiment=geometry_real", f"data.root='{synthetic_shards}'",
                          *windows, "trainer.max_steps=2", "logger=csv",
                          f"data.audio_features.cache_dir='{run / 'phones'}'"], run)
    train(cfg)
    return run / "checkpoints" / "last.ckpt"


def test_lipsync_scores_self_dubbing_against_the_frozen_mouth(phone_geometry_ckpt, synthetic_shards, tmp_path):
    from eval.lipsync import main as lipsync

    out = tmp_path / "lipsync"
    assert lipsync(["--geometry-ckpt", f"phones={phone_geometry_ckpt}", "--shards", str(synthetic_shards),
                    "--out", str(out), "--split", "val"]) == 0
    with open(out / "lipsync.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["method", "clip", "person", "mouth_corr", "lower_mm", "baseline_mm", "ratio"]
    assert rows[-1]["clip"] == "mean" and float(rows[-1]["baseline_mm"]) > 0
    assert all(float(r["ratio"]) == pytest.approx(float(r["lower_mm"]) / float(r["baseline_mm"]), rel=1e-4)
               for r in rows)


@needs_speech
def test_silence_measurement_cuts_mid_speech_and_times_the_mouth(phone_geometry_ckpt, synthetic_shards, tmp_path):
    """eval.lipsync --silence: the gapped audio has digital silence exactly where it should, speech at both cuts,
    and the closing / reopening times come out in seconds, within the clip."""
    from eval.lipsync import GAP, PART, gapped_speech
    from eval.lipsync import main as lipsync
    from src.media.decode import read_audio

    gapped = gapped_speech(read_audio(LJ), VadConfig())
    assert len(gapped) == (2 * PART + GAP) * 640 and not gapped[PART * 640:(PART + GAP) * 640].any()
    assert np.abs(gapped[(PART - 2) * 640:PART * 640]).max() > 0.01  # speech right up to the gap
    out = tmp_path / "lipsync"
    assert lipsync(["--geometry-ckpt", f"phones={phone_geometry_ckpt}", "--shards", str(synthetic_shards),
                    "--out", str(out), "--split", "val", "--silence", str(LJ)]) == 0
    (row,) = json.loads((out / "lipsync.json").read_text())["silence"]
    assert 0 <= row["close_s"] <= GAP / 25 and 0 <= row["open_s"] <= PART / 25
