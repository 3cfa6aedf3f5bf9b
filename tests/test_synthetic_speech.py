"""Synthetic speech corpus: phoneme timing, formant audio and style-shaped mouth tracks agree."""

import time

import numpy as np
import pytest

from data_prep.synthetic.phonemes import CHANNELS, PHONEMES, PhonemeEvent, random_utterance
from data_prep.synthetic.speech import Voice, synthesize
from data_prep.synthetic.visemes import (
    TRACK_CHANNELS,
    SpeakingStyle,
    mouth_opening_proxy,
    mouth_tracks,
)

SR, FPS = 16000, 25.0
RESERVED = SpeakingStyle(amplitude=0.7, asymmetry=-0.5, smile_bias=0.0, articulation_speed=0.8)
EXPRESSIVE = SpeakingStyle(amplitude=1.4, asymmetry=0.6, smile_bias=0.4, articulation_speed=1.4)


def _events(*pairs: tuple[str, float]) -> list[PhonemeEvent]:
    """Contiguous events from (symbol, seconds) pairs."""
    out, t = [], 0.0
    for symbol, dur in pairs:
        out.append(PhonemeEvent(symbol, t, t + dur))
        t += dur
    return out


def _rms_envelope(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """RMS of consecutive 40 ms windows, one per 25 fps frame (window centre = frame centre)."""
    hop = int(SR / FPS)
    return np.sqrt(np.mean(audio[: n_frames * hop].reshape(n_frames, hop).astype(float) ** 2, 1))


def test_inventory_is_complete_and_in_range():
    assert len(PHONEMES) >= 30
    for p in PHONEMES.values():
        assert set(p.viseme) == set(CHANNELS)
        assert all(0.0 <= v <= 1.0 for v in p.viseme.values()), p.symbol
        assert all(d > 0 for d in p.dominance.values()), p.symbol
    assert PHONEMES["AA"].viseme["jaw_open"] > 0.8 and PHONEMES["M"].viseme["lip_close"] == 1.0


@pytest.mark.parametrize("seconds,rate", [(6.0, 1.0), (2.5, 1.4), (0.15, 1.0)])
def test_random_utterance_fills_exactly(seconds, rate):
    events = random_utterance(np.random.default_rng(0), seconds, rate)
    assert events[0].symbol == "SIL" and events[-1].symbol == "SIL"
    assert events[0].start_s == 0.0 and events[-1].end_s == seconds
    assert all(a.end_s == b.start_s for a, b in zip(events, events[1:]))


def test_same_seed_same_audio_and_tracks():
    def run():
        rng = np.random.default_rng(7)
        events = random_utterance(rng, 3.0)
        voice, style = Voice.sample(rng), SpeakingStyle.sample(rng)
        return synthesize(events, voice, SR, rng), mouth_tracks(events, style, FPS)

    (a1, t1), (a2, t2) = run(), run()
    np.testing.assert_array_equal(a1, a2)
    for ch in TRACK_CHANNELS:
        np.testing.assert_array_equal(t1[ch], t2[ch])


def test_audio_length_range_and_peak():
    rng = np.random.default_rng(1)
    voice = Voice.sample(rng)
    audio = synthesize(random_utterance(rng, 2.0), voice, SR, rng)
    assert audio.shape == (int(2.0 * SR),) and audio.dtype == np.float32
    assert np.all(np.isfinite(audio))
    assert np.max(np.abs(audio)) == pytest.approx(0.8 * voice.loudness, rel=1e-4)


def test_audio_envelope_predicts_mouth_opening():
    """Pearson(RMS in 40 ms windows, opening proxy) > 0.5 for random utterances, voices, styles."""
    correlations = []
    for seed in range(6):
        rng = np.random.default_rng(100 + seed)
        events = random_utterance(rng, 6.0, rate=rng.uniform(0.8, 1.3))
        audio = synthesize(events, Voice.sample(rng), SR, rng)
        opening = mouth_opening_proxy(mouth_tracks(events, SpeakingStyle.sample(rng), FPS))
        correlations.append(np.corrcoef(_rms_envelope(audio, len(opening)), opening)[0, 1])
    print("audio-mouth Pearson:", np.round(correlations, 3))
    assert min(correlations) > 0.5


def test_styles_differ_on_same_events_and_reproduce():
    events = random_utterance(np.random.default_rng(3), 6.0)
    reserved, expressive = mouth_tracks(events, RESERVED), mouth_tracks(events, EXPRESSIVE)
    speaking = mouth_opening_proxy(mouth_tracks(events, SpeakingStyle())) > 0.05
    ratio = mouth_opening_proxy(expressive).mean() / mouth_opening_proxy(reserved).mean()
    corner = {name: float(np.mean(t["smile_L"][speaking] - t["smile_R"][speaking]))
              for name, t in (("reserved", reserved), ("expressive", expressive))}
    print(f"opening ratio {ratio:.2f}, corner L-R {corner}")
    assert ratio > 1.5
    assert corner["reserved"] < -0.03 and corner["expressive"] > 0.03
    assert expressive["mouth_shift"].mean() > 0 > reserved["mouth_shift"].mean()
    again = mouth_tracks(events, RESERVED)
    assert all(np.array_equal(again[ch], reserved[ch]) for ch in TRACK_CHANNELS)


def test_silence_is_silent_with_closed_jaw():
    events = _events(("SIL", 0.5), ("AA", 0.2), ("SIL", 0.8))
    audio = synthesize(events, Voice(), SR, np.random.default_rng(0))
    tracks = mouth_tracks(events, EXPRESSIVE)
    assert np.max(np.abs(audio[: int(0.45 * SR)])) < 1e-4
    assert np.max(np.abs(audio[int(0.8 * SR):])) < 1e-3
    frame_t = (np.arange(len(tracks["jaw_open"])) + 0.5) / FPS
    assert np.max(tracks["jaw_open"][(frame_t < 0.35) | (frame_t > 0.9)]) < 0.05
    assert np.max(tracks["jaw_open"]) > 0.5
    assert not np.any(synthesize(_events(("SIL", 1.0)), Voice(), SR))


def test_bilabial_closures_reach_lip_close():
    events = random_utterance(np.random.default_rng(5), 6.0, rate=1.3)
    tracks = mouth_tracks(events, SpeakingStyle(articulation_speed=0.5))  # lazy, fast
    frame_t = (np.arange(len(tracks["lip_close"])) + 0.5) / FPS
    closures = [e for e in events if e.symbol in ("P", "B", "M")]
    assert closures
    for ev in closures:
        near = np.abs(frame_t - (ev.start_s + ev.end_s) / 2) <= max(ev.end_s - ev.start_s, 1 / FPS)
        assert tracks["lip_close"][near].max() > 0.99, ev


def test_six_seconds_synthesise_fast():
    rng = np.random.default_rng(2)
    events, voice = random_utterance(rng, 6.0), Voice.sample(rng)
    start = time.perf_counter()
    synthesize(events, voice, SR, rng)
    elapsed = time.perf_counter() - start
    print(f"6 s of audio in {elapsed * 1000:.0f} ms")
    assert elapsed < 2.0


def test_bad_input_raises():
    with pytest.raises(ValueError, match="seconds"):
        random_utterance(np.random.default_rng(0), 0.0)
    with pytest.raises(ValueError, match="contiguous"):
        synthesize([PhonemeEvent("SIL", 0, 0.1), PhonemeEvent("AA", 0.2, 0.3)], Voice())
    with pytest.raises(KeyError, match="unknown phoneme"):
        mouth_tracks([PhonemeEvent("QQ", 0, 0.1)], SpeakingStyle())
    with pytest.raises(ValueError, match="asymmetry"):
        SpeakingStyle(asymmetry=2.0)
