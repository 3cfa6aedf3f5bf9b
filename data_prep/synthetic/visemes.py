"""Mouth-motion tracks from a phoneme sequence: visemes, coarticulation and a speaking style.

Coarticulation model (Cohen & Massaro 1993): every phoneme i has, per mouth channel c, a target
T_ic (its viseme) and a dominance function D_ic(t) = a_ic * exp(-(d_i(t) / tau_c)^2), where
d_i(t) is the distance from t to the phoneme's core (its middle half, so long segments hold their
target) and a_ic the phoneme's dominance on that channel. The track is the dominance-weighted mean
sum_i D_ic T_ic / sum_i D_ic. It is symmetric in time, so it gives both carry-over and
anticipatory coarticulation (lips round during /s/ in "sue"), and it has no filter state, so the
mouth does not lag the audio. Phonemes that leave a channel free (tongue consonants on the lips)
have a small a_ic and take the neighbours' shape. Lip contact is fast: lip_close uses 0.4 tau.
On top, a hard rule: during the closure of P / B / M the lips ARE closed (lip_close = 1,
lower_lip_down = 0), since a sampled dominance blend can only approach closure.

The speaking style is the persona: `articulation_speed` sets tau (slow = lazy, smooth mouth;
fast = crisp), `amplitude` and the per-channel gains scale the excursions, `smile_bias` adds a
constant smile and extra spread, `asymmetry` makes one corner move more (smile_L / smile_R
imbalance) and shifts the mouth sideways while speaking. Frame f is sampled at its centre,
t_f = (f + 0.5) / fps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from data_prep.synthetic.phonemes import (
    BILABIALS,
    CHANNELS,
    PHONEMES,
    RELEASE_FRACTION,
    PhonemeEvent,
    check_events,
)
from src.media.contract import FPS

STYLE_CHANNELS = ("smile_L", "smile_R", "mouth_shift")
TRACK_CHANNELS = CHANNELS + STYLE_CHANNELS
_BASE_TAU_S = 0.05  # coarticulation time constant at articulation_speed 1.0
_CORE_FRACTION = 0.25  # half-width of a phoneme's held core, as a fraction of its duration
# Lip contact is made and released faster than the jaw moves, so its dominance decays faster.
_CHANNEL_TAU = np.array([0.4 if c == "lip_close" else 1.0 for c in CHANNELS])


@dataclass(frozen=True)
class SpeakingStyle:
    """How a persona moves the mouth; all fields are dimensionless."""

    amplitude: float = 1.0  # gain on all mouth excursions
    asymmetry: float = 0.0  # -1..1: >0 the left corner moves more and the mouth shifts left (+)
    smile_bias: float = 0.0  # 0..0.6: constant smile plus extra spread
    articulation_speed: float = 1.0  # tau = 50 ms / speed
    round_gain: float = 1.0  # lip_round, lip_funnel
    spread_gain: float = 1.0  # lip_spread
    jaw_gain: float = 1.0  # jaw_open, lower_lip_down

    def __post_init__(self) -> None:
        checks = {"amplitude": (0.1, 3.0), "asymmetry": (-1.0, 1.0), "smile_bias": (0.0, 0.6),
                  "articulation_speed": (0.2, 5.0), "round_gain": (0.0, 3.0),
                  "spread_gain": (0.0, 3.0), "jaw_gain": (0.0, 3.0)}
        for name, (lo, hi) in checks.items():
            if not lo <= getattr(self, name) <= hi:
                raise ValueError(f"SpeakingStyle.{name} must be in [{lo}, {hi}], "
                                 f"got {getattr(self, name)}")

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "SpeakingStyle":
        """A random persona; ranges are wide enough that two draws usually look different."""
        return cls(
            amplitude=float(rng.uniform(0.6, 1.5)),
            asymmetry=float(rng.uniform(-0.8, 0.8)),
            smile_bias=float(rng.uniform(0.0, 0.6)),
            articulation_speed=float(rng.uniform(0.7, 1.6)),
            round_gain=float(rng.uniform(0.7, 1.3)),
            spread_gain=float(rng.uniform(0.7, 1.3)),
            jaw_gain=float(rng.uniform(0.7, 1.3)),
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def mouth_tracks(events: list[PhonemeEvent], style: SpeakingStyle, fps: float = FPS,
                 n_frames: int | None = None) -> dict[str, np.ndarray]:
    """Per-frame values of TRACK_CHANNELS, each (T,) float32.

    T = n_frames, default round(duration * fps); frames past the last event hold its value.
    Ranges: [0, 1] for all channels except mouth_shift in [-1, 1].
    """
    check_events(events)
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if n_frames is None:
        n_frames = int(round(events[-1].end_s * fps))
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    times = (np.arange(n_frames) + 0.5) / fps
    raw = coarticulate(events, times, tau=_BASE_TAU_S / style.articulation_speed)  # (T, C)
    tracks = {ch: raw[:, k] for k, ch in enumerate(CHANNELS)}
    tracks = _apply_style(tracks, style)
    _enforce_closures(tracks, events, times)
    return {ch: tracks[ch].astype(np.float32) for ch in TRACK_CHANNELS}


def coarticulate(events: list[PhonemeEvent], times: np.ndarray, tau: float) -> np.ndarray:
    """Cohen-Massaro blend of viseme targets at `times` (s); returns (T, len(CHANNELS))."""
    phones = [PHONEMES[e.symbol] for e in events]
    targets = np.array([[p.viseme[c] for c in CHANNELS] for p in phones])  # (P, C)
    dominance = np.array([[p.dominance[c] for c in CHANNELS] for p in phones])  # (P, C)
    starts = np.array([e.start_s for e in events])
    ends = np.array([e.end_s for e in events])
    centres, core = (starts + ends) / 2, _CORE_FRACTION * (ends - starts)
    t = np.clip(times, starts[0], ends[-1])[:, None]  # (T, 1); hold the ends
    dist = np.maximum(np.abs(t - centres[None]) - core[None], 0.0)  # (T, P)
    scaled = dist[:, :, None] / (tau * _CHANNEL_TAU)  # (T, P, C)
    weight = np.exp(-(scaled**2)) * dominance[None]  # (T, P, C)
    # a frame always lies inside some event (dist 0), so the denominator is >= min dominance > 0
    return np.einsum("tpc,pc->tc", weight, targets) / weight.sum(axis=1)


def _apply_style(tracks: dict[str, np.ndarray], style: SpeakingStyle) -> dict[str, np.ndarray]:
    """Scale excursions by the style gains, derive the corners, add the smile; clip to ranges."""
    amp = style.amplitude
    gains = {"jaw_open": amp * style.jaw_gain, "lower_lip_down": amp * style.jaw_gain,
             "lip_round": amp * style.round_gain, "lip_funnel": amp * style.round_gain,
             "lip_spread": amp * style.spread_gain, "upper_lip_raise": amp, "lip_close": 1.0}
    # lip_close is a contact, not an excursion: a bigger speaker does not close "more"
    out = {ch: np.clip(tracks[ch] * gains[ch], 0.0, 1.0) for ch in CHANNELS}
    out.update(_corners(out, style))
    out["lip_spread"] = np.clip(out["lip_spread"] + 0.5 * style.smile_bias, 0.0, 1.0)
    return out


def _corners(tracks: dict[str, np.ndarray], style: SpeakingStyle) -> dict[str, np.ndarray]:
    """smile_L / smile_R / mouth_shift: corners follow spread and overall speech activity.

    The asymmetry gives the left corner a gain (1 + a) and the right (1 - a) on the speech-driven
    part only, and shifts the mouth by 0.3 a while it moves; the smile bias is symmetric.
    """
    activity = np.clip(tracks["jaw_open"] + 0.5 * (tracks["lip_round"] + tracks["lip_spread"]),
                       0.0, 1.0)
    moving = 0.35 * tracks["lip_spread"] + 0.15 * activity
    a = style.asymmetry
    return {"smile_L": np.clip(style.smile_bias + (1 + a) * moving, 0.0, 1.0),
            "smile_R": np.clip(style.smile_bias + (1 - a) * moving, 0.0, 1.0),
            "mouth_shift": np.clip(0.3 * a * activity, -1.0, 1.0)}


def _enforce_closures(tracks: dict[str, np.ndarray], events, times: np.ndarray) -> None:
    """Lips closed on every frame inside a P/B/M closure (or the nearest frame if none falls in)."""
    if len(times) == 0:
        return
    for ev in events:
        if ev.symbol not in BILABIALS:
            continue
        closure = 1.0 if ev.symbol == "M" else RELEASE_FRACTION
        end = ev.start_s + closure * (ev.end_s - ev.start_s)
        inside = np.flatnonzero((times >= ev.start_s) & (times < end))
        if len(inside) == 0:
            inside = [int(np.argmin(np.abs(times - (ev.start_s + end) / 2)))]
        tracks["lip_close"][inside] = 1.0
        tracks["lower_lip_down"][inside] = 0.0


def mouth_opening_proxy(tracks: dict[str, np.ndarray]) -> np.ndarray:
    """Scalar opening per frame: jaw_open + lower_lip_down - lip_close, clipped to [0, 2]."""
    missing = [c for c in ("jaw_open", "lower_lip_down", "lip_close") if c not in tracks]
    if missing:
        raise KeyError(f"tracks lack channels {missing}; expected the output of mouth_tracks")
    opening = tracks["jaw_open"] + tracks["lower_lip_down"] - tracks["lip_close"]
    return np.clip(opening, 0.0, 2.0)
