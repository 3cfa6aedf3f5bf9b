"""Source-filter formant synthesis of a phoneme sequence with a per-speaker voice.

Why formant synthesis: the corpus needs audio whose spectrum is caused by the same phoneme sequence
that drives the mouth, with per-speaker variation (pitch, vocal-tract length, breathiness) that a
network must learn to ignore, and it must run on a CPU at far faster than real time. A Klatt-style
source-filter model gives exactly that in a few vectorised numpy / scipy calls and no model weights:

- source: a Rosenberg glottal-flow-derivative pulse train (its abrupt closure is the main
  excitation) on an f0 contour = declination + random intonation + per-period jitter, with
  per-period shimmer and open-phase-gated breath noise; white noise for aspiration (HH, plosive
  release);
- oral filter: a cascade of four DC-normalised 2nd-order resonators (F1-F3 from the phonemes scaled
  by the voice's vocal-tract factor, F4 fixed), coefficients updated every 5 ms from formant targets
  smoothed across phoneme boundaries (transitions ~30-40 ms), filter state carried across blocks so
  coefficient updates do not click;
- nasal murmur (M N NG, voice bar of B D G closures): the voice source through a fixed low
  resonator;
- frication and plosive bursts: white noise band-passed per phoneme noise band (one filter per
  distinct band, each with its own smooth envelope so band changes do not click);
- amplitude: every source gain is a per-sample step function smoothed by a 6 ms boxcar (attack and
  release ramps), so silences and plosive closures are exactly silent apart from resonator ringing.

Intensity follows articulation as in real speech: open vowels are louder than close ones (intrinsic
vowel intensity), fricatives are weaker than vowels, closures are silent. That is what makes the
audio envelope predictive of mouth opening.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.signal import butter, sosfilt

from data_prep.synthetic.phonemes import PHONEMES, RELEASE_FRACTION, PhonemeEvent, check_events
from src.media.contract import SAMPLE_RATE

_HOP_S = 0.005  # formant filter update interval
_RAMP_S = 0.006  # attack / release of the source gains
_FORMANT_SMOOTH_S = 0.03  # boxcar on formant targets (applied twice -> triangular, ~60 ms support)
_BANDWIDTHS = np.array([80.0, 100.0, 150.0, 250.0])  # B1-B4 (Hz)
_F4 = 3300.0
_TP, _TN = 0.40, 0.16  # Rosenberg opening / closing phase, fractions of the period
# Frication gain of each fricative (before the band-pass); HH is aspiration, see _segment_levels.
_FRIC = {"S": 0.35, "Z": 0.2, "SH": 0.35, "F": 0.07, "V": 0.05, "TH": 0.06}
_BURST = {"P": 0.25, "B": 0.15, "T": 0.45, "D": 0.3, "K": 0.4, "G": 0.25}


@dataclass(frozen=True)
class Voice:
    """A speaker's voice: pitch, vocal-tract length and phonation quality."""

    f0_mean: float = 120.0  # Hz
    f0_range: float = 4.0  # semitones of intonation excursion
    formant_scale: float = 1.0  # 1 / vocal-tract length: ~1.0 male, ~1.15-1.2 female
    breathiness: float = 0.1  # 0..1, breath noise relative to the voice source
    jitter: float = 0.01  # relative per-period f0 perturbation
    shimmer: float = 0.05  # relative per-period amplitude perturbation
    loudness: float = 0.8  # (0, 1]; output peak is 0.8 * loudness

    def __post_init__(self) -> None:
        checks = {"f0_mean": (50.0, 400.0), "f0_range": (0.0, 12.0), "formant_scale": (0.8, 1.4),
                  "breathiness": (0.0, 1.0), "jitter": (0.0, 0.1), "shimmer": (0.0, 0.3),
                  "loudness": (1e-3, 1.0)}
        for name, (lo, hi) in checks.items():
            if not lo <= getattr(self, name) <= hi:
                raise ValueError(f"Voice.{name} must be in [{lo}, {hi}], got {getattr(self, name)}")

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "Voice":
        """A random adult speaker, male- or female-like with equal probability."""
        female = rng.random() < 0.5
        return cls(
            f0_mean=float(rng.uniform(170, 250) if female else rng.uniform(85, 145)),
            f0_range=float(rng.uniform(2.0, 6.0)),
            formant_scale=float(rng.uniform(1.12, 1.2) if female else rng.uniform(0.95, 1.05)),
            breathiness=float(rng.uniform(0.02, 0.3)),
            jitter=float(rng.uniform(0.003, 0.015)),
            shimmer=float(rng.uniform(0.02, 0.08)),
            loudness=float(rng.uniform(0.5, 1.0)),
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def synthesize(events: list[PhonemeEvent], voice: Voice, sample_rate: int = SAMPLE_RATE,
               rng: np.random.Generator | None = None) -> np.ndarray:
    """Render events as mono float32 audio of round(events[-1].end_s * sample_rate) samples.

    Deterministic for a given `rng` state (None means `np.random.default_rng(0)`). The peak is
    0.8 * voice.loudness; an all-silent sequence gives zeros.
    """
    check_events(events)
    if sample_rate < 8000:
        raise ValueError(f"sample_rate must be >= 8000 Hz (F4 is ~4 kHz), got {sample_rate}")
    rng = np.random.default_rng(0) if rng is None else rng
    n = int(round(events[-1].end_s * sample_rate))
    gains, bands = _source_gains(events, sample_rate, n)
    pulses, open_phase = _glottal_source(_f0_contour(events, voice, sample_rate, n, rng),
                                         voice, sample_rate, rng)
    breath = voice.breathiness * rng.standard_normal(n) * (0.3 + 0.7 * open_phase)
    oral_in = gains["av"] * (pulses + breath) + 0.5 * gains["ah"] * rng.standard_normal(n)
    oral = _formant_cascade(oral_in, events, voice, sample_rate)
    nasal = sosfilt(_nasal_sos(voice, sample_rate), gains["an"] * pulses)
    y = oral + nasal + _frication(bands, sample_rate, rng.standard_normal(n))
    return _normalise(y, 0.8 * voice.loudness)


def _segment_levels(ev: PhonemeEvent) -> list[tuple[float, float, dict]]:
    """Source gains of one event as (start_s, end_s, levels) pieces.

    levels keys: av (voicing into the oral tract), ah (aspiration), an (nasal murmur), af + band
    (frication). Vowel voicing grows with jaw opening (intrinsic vowel intensity).
    """
    p, s, e = PHONEMES[ev.symbol], ev.start_s, ev.end_s
    if p.kind == "vowel":
        return [(s, e, {"av": 0.6 + 0.4 * p.viseme["jaw_open"]})]
    if p.kind == "approximant":
        return [(s, e, {"av": 0.4})]
    if p.kind == "nasal":
        return [(s, e, {"av": 0.03, "an": 0.5})]
    if p.symbol == "HH":
        return [(s, e, {"ah": 0.35, "av": 0.05})]
    if p.kind == "fricative":
        return [(s, e, {"af": _FRIC[p.symbol], "band": p.noise_band, "av": 0.25 * p.voiced})]
    if p.kind == "plosive":
        release = s + RELEASE_FRACTION * (e - s)
        burst_end = min(release + 0.012, e)
        closure = {"an": 0.06} if p.voiced else {}  # voice bar: murmur through closed lips
        after = {"av": 0.4} if p.voiced else {"ah": 0.25}
        return [(s, release, closure),
                (release, burst_end, {"af": _BURST[p.symbol], "band": p.noise_band}),
                (burst_end, e, after)]
    return []  # silence


def _source_gains(events, sr: int, n: int) -> tuple[dict[str, np.ndarray], dict[tuple, np.ndarray]]:
    """Per-sample smoothed gains av / ah / an and one frication envelope per noise band."""
    gains = {k: np.zeros(n) for k in ("av", "ah", "an")}
    bands: dict[tuple, np.ndarray] = {}
    for ev in events:
        for t0, t1, levels in _segment_levels(ev):
            i0, i1 = int(round(t0 * sr)), int(round(t1 * sr))
            for key in ("av", "ah", "an"):
                gains[key][i0:i1] += levels.get(key, 0.0)
            if levels.get("af"):
                bands.setdefault(tuple(levels["band"]), np.zeros(n))[i0:i1] += levels["af"]
    ramp = max(int(round(_RAMP_S * sr)), 1)
    smooth = {k: uniform_filter1d(v, ramp, mode="constant") for k, v in gains.items()}
    return smooth, {b: uniform_filter1d(v, ramp, mode="constant") for b, v in bands.items()}


def _f0_contour(events, voice: Voice, sr: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Per-sample f0 (Hz): declination + smooth random intonation + per-period jitter.

    Declination falls from +0.4 to -0.6 of the range (semitones) over the utterance; accents are
    random knots every 0.3 s, linearly interpolated then smoothed over 0.15 s.
    """
    duration = events[-1].end_s
    t_ctrl = np.arange(0.0, duration + _HOP_S, _HOP_S)
    knots_t = np.arange(0.0, duration + 0.3, 0.3)
    accents = np.interp(t_ctrl, knots_t, rng.normal(0.0, 0.35 * voice.f0_range, len(knots_t)))
    accents = uniform_filter1d(accents, max(int(0.15 / _HOP_S), 1), mode="nearest")
    semitones = voice.f0_range * (0.4 - t_ctrl / max(duration, 1e-9)) + accents
    f0 = voice.f0_mean * 2.0 ** (semitones / 12.0)
    f0 = np.interp(np.arange(n) / sr, t_ctrl, f0)
    period = np.floor(np.cumsum(f0 / sr)).astype(np.int64)  # index of the glottal period per sample
    return f0 * (1.0 + voice.jitter * rng.standard_normal(period[-1] + 2 if n else 1)[period])


def _glottal_source(f0: np.ndarray, voice: Voice, sr: int, rng: np.random.Generator):
    """Rosenberg flow-derivative pulses (peak ~1, zero mean per period) with shimmer.

    Returns (pulses, open_phase); open_phase is 1 while the glottis is open (gates breath noise).
    """
    phase = np.cumsum(f0 / sr)
    period = np.floor(phase).astype(np.int64)
    frac = phase - period
    rising = frac < _TP
    falling = ~rising & (frac < _TP + _TN)
    pulses = np.zeros_like(frac)
    # derivative of 0.5 (1 - cos(pi x / Tp)) and cos(pi (x - Tp) / (2 Tn)), divided by pi / (2 Tn)
    pulses[rising] = (_TN / _TP) * np.sin(np.pi * frac[rising] / _TP)
    pulses[falling] = -np.sin(np.pi * (frac[falling] - _TP) / (2 * _TN))
    n_periods = int(period[-1]) + 2 if len(period) else 1
    pulses *= 1.0 + voice.shimmer * rng.standard_normal(n_periods)[period]
    return pulses, (rising | falling).astype(float)


def _resonator_sos(freqs: np.ndarray, bws: np.ndarray, sr: int) -> np.ndarray:
    """DC-normalised 2nd-order resonators (Klatt) as sos rows; (..., K) freqs -> (..., K, 6)."""
    r = np.exp(-np.pi * np.broadcast_to(bws, freqs.shape) / sr)
    a1 = -2.0 * r * np.cos(2.0 * np.pi * freqs / sr)
    a2 = r * r
    zeros = np.zeros_like(freqs)
    return np.stack([1.0 + a1 + a2, zeros, zeros, np.ones_like(freqs), a1, a2], axis=-1)


def _formant_targets(events, times: np.ndarray) -> np.ndarray:
    """(len(times), 3) F1-F3 targets; SIL and HH borrow the next (else previous) phoneme's."""
    own = [PHONEMES[e.symbol] for e in events]
    opaque = [i for i, p in enumerate(own) if p.symbol not in ("SIL", "HH")]
    table = np.array([p.formants for p in own])  # (P, 3)
    if opaque:
        nxt = np.searchsorted(opaque, np.arange(len(own)))  # first opaque index >= i
        src = np.array(opaque)[np.minimum(nxt, len(opaque) - 1)]
        table = table[src]
    starts = np.array([e.start_s for e in events])
    idx = np.clip(np.searchsorted(starts, times, side="right") - 1, 0, len(events) - 1)
    return table[idx]


def _formant_cascade(x: np.ndarray, events, voice: Voice, sr: int) -> np.ndarray:
    """Time-varying F1-F4 cascade; coefficients updated every _HOP_S, state carried over."""
    hop = max(int(round(_HOP_S * sr)), 1)
    n_blocks = -(-len(x) // hop)
    targets = _formant_targets(events, (np.arange(n_blocks) + 0.5) * hop / sr)  # (B, 3)
    width = max(int(round(_FORMANT_SMOOTH_S / _HOP_S)), 1)
    for _ in range(2):  # boxcar twice = triangular smoothing across phoneme boundaries
        targets = uniform_filter1d(targets, width, axis=0, mode="nearest")
    freqs = np.concatenate([targets, np.full((n_blocks, 1), _F4)], axis=1) * voice.formant_scale
    sos = _resonator_sos(np.minimum(freqs, 0.45 * sr), _BANDWIDTHS, sr)  # (B, 4, 6)
    y, zi = np.empty_like(x), np.zeros((4, 2))
    for b in range(n_blocks):
        y[b * hop:(b + 1) * hop], zi = sosfilt(sos[b], x[b * hop:(b + 1) * hop], zi=zi)
    return y


def _nasal_sos(voice: Voice, sr: int) -> np.ndarray:
    """Fixed nasal murmur filter: strong low resonance ~250 Hz and a weak one ~2.2 kHz."""
    freqs = np.array([250.0, 2200.0]) * voice.formant_scale
    return _resonator_sos(freqs, np.array([100.0, 300.0]), sr)


def _frication(bands: dict[tuple, np.ndarray], sr: int, white: np.ndarray) -> np.ndarray:
    """Sum over noise bands of band-passed white noise times that band's envelope."""
    out = np.zeros_like(white)
    for (lo, hi), envelope in bands.items():
        sos = butter(2, [lo, min(hi, 0.45 * sr)], btype="bandpass", fs=sr, output="sos")
        out += envelope * sosfilt(sos, white)
    return out


def _normalise(y: np.ndarray, peak: float) -> np.ndarray:
    """Scale to the given peak; silent or degenerate input raises rather than emitting NaN."""
    if not np.all(np.isfinite(y)):
        raise FloatingPointError("synthesis produced non-finite samples")
    top = float(np.max(np.abs(y))) if len(y) else 0.0
    if top < 1e-12:
        return np.zeros(len(y), dtype=np.float32)
    return (y * (peak / top)).astype(np.float32)
