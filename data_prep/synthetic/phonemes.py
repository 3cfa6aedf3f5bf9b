"""Phoneme inventory and a random-utterance generator for the synthetic talking-head corpus.

Each phoneme carries everything the two renderers of the synthetic corpus need, so the audio
(`speech.py`) and the mouth (`visemes.py`) are two views of the SAME symbol sequence, which is
what makes the audio -> mouth relation learnable:

- acoustics: class, voicing, formants F1-F3 (typical adult male values, Hz; the voice scales them),
  a noise band for frication / plosive bursts, a mean duration;
- articulation: a viseme target over the fixed mouth channels `CHANNELS` (names shared with the face
  model's expression modes) and a Cohen-Massaro dominance per channel. Low dominance on a
  channel means the phoneme leaves it free, so it is taken from the neighbours (the lip rounding
  of /s/ in "sue" comes from the vowel); high dominance means the phoneme must reach its target
  (lip closure of P/B/M, lower-lip tuck of F/V).

The generator strings CV / CVC syllables into words of 1-3 syllables with optional word gaps and
occasional longer pauses (SIL). It is a rhythm model, not a language model: the networks only need
plausible phoneme statistics, timing and pauses.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping, NamedTuple

import numpy as np

CHANNELS: tuple[str, ...] = (
    "jaw_open",
    "lip_round",
    "lip_spread",
    "lip_close",
    "upper_lip_raise",
    "lower_lip_down",
    "lip_funnel",
)
KINDS = ("vowel", "plosive", "nasal", "fricative", "approximant", "silence")
BILABIALS = ("P", "B", "M")
# Plosives: closure over the first RELEASE_FRACTION of the segment, then burst and release.
# Shared by the audio (silent closure) and the mouth (lips closed): both tell the same story.
RELEASE_FRACTION = 0.6


@dataclass(frozen=True, eq=False)
class Phoneme:
    """One inventory entry; `kind` is the phoneme class (one of `KINDS`)."""

    symbol: str
    kind: str
    voiced: bool
    formants: tuple[float, float, float]  # F1, F2, F3 in Hz (adult male)
    noise_band: tuple[float, float] | None  # Hz; frication or burst spectrum, None if no noise
    duration_ms: float  # mean duration at rate 1.0
    viseme: Mapping[str, float]  # target per channel in CHANNELS, all in [0, 1]
    dominance: Mapping[str, float]  # Cohen-Massaro dominance per channel (> 0)


class PhonemeEvent(NamedTuple):
    """One phoneme placed in time (seconds)."""

    symbol: str
    start_s: float
    end_s: float


_SHORT = {"jaw": "jaw_open", "round": "lip_round", "spread": "lip_spread", "close": "lip_close",
          "upper": "upper_lip_raise", "lower": "lower_lip_down", "funnel": "lip_funnel"}


def _channels(default: float, **short: float) -> Mapping[str, float]:
    """Channel dict from short names (`jaw=0.9`); unnamed channels get `default`."""
    out = {ch: default for ch in CHANNELS}
    for key, value in short.items():
        out[_SHORT[key]] = float(value)
    return MappingProxyType(out)


def _ph(symbol, kind, voiced, formants, ms, band=None, dom=1.0, dom_over=None, **viseme):
    """Build a Phoneme; `dom` is the base dominance, `dom_over` per-channel overrides."""
    if kind == "vowel" and dom_over is None:
        dom_over = {"close": 2.0}  # a vowel needs the lips apart, whatever its neighbours
    return Phoneme(symbol, kind, voiced, tuple(float(f) for f in formants), band, float(ms),
                   _channels(0.0, **viseme), _channels(dom, **(dom_over or {})))


# Lips are free (taken from neighbouring vowels) for tongue/velum consonants.
_LIPS_FREE = {"round": 0.15, "spread": 0.15, "funnel": 0.15, "upper": 0.3, "lower": 0.3}
_BILABIAL = {"close": 3.0, "jaw": 1.5, "lower": 1.5, "round": 0.3, "spread": 0.3, "funnel": 0.3}
_LABIODENTAL = {"close": 2.0, "upper": 2.0, "lower": 2.0, "jaw": 1.5}

_TABLE = [
    # vowels (Peterson & Barney / Hillenbrand male means); diphthongs EY AY AW get one mid target
    _ph("AA", "vowel", True, (730, 1090, 2440), 130, jaw=0.9, lower=0.45, spread=0.1),
    _ph("AE", "vowel", True, (660, 1720, 2410), 130, jaw=0.75, lower=0.35, spread=0.45, upper=0.1),
    _ph("AH", "vowel", True, (520, 1190, 2390), 90, jaw=0.55, lower=0.25, spread=0.1),
    _ph("AO", "vowel", True, (570, 840, 2410), 130, jaw=0.7, lower=0.3, round=0.55, funnel=0.25),
    _ph("EH", "vowel", True, (530, 1840, 2480), 100, jaw=0.5, lower=0.2, spread=0.45),
    _ph("ER", "vowel", True, (490, 1350, 1690), 120, jaw=0.35, lower=0.1, round=0.35, funnel=0.35),
    _ph("IH", "vowel", True, (390, 1990, 2550), 80, jaw=0.3, lower=0.1, spread=0.55),
    _ph("IY", "vowel", True, (270, 2290, 3010), 110, jaw=0.2, spread=0.85, upper=0.15),
    _ph("UW", "vowel", True, (300, 870, 2240), 120, jaw=0.15, round=0.9, funnel=0.5),
    _ph("OW", "vowel", True, (450, 900, 2400), 140, jaw=0.45, lower=0.15, round=0.75, funnel=0.35),
    _ph("EY", "vowel", True, (480, 2000, 2600), 140, jaw=0.45, lower=0.15, spread=0.55),
    _ph("AY", "vowel", True, (660, 1500, 2500), 150, jaw=0.75, lower=0.35, spread=0.3),
    _ph("AW", "vowel", True, (680, 1100, 2400), 150, jaw=0.7, lower=0.3, round=0.35, funnel=0.2),
    # plosives: formants are the place loci; band is the burst spectrum
    _ph("P", "plosive", False, (250, 900, 2200), 85, (400, 3000), dom_over=_BILABIAL, close=1.0),
    _ph("B", "plosive", True, (250, 900, 2200), 75, (300, 2500), dom_over=_BILABIAL, close=1.0),
    _ph("T", "plosive", False, (300, 1700, 2600), 80, (3000, 7000), dom_over=_LIPS_FREE,
        jaw=0.2, spread=0.2),
    _ph("D", "plosive", True, (300, 1700, 2600), 70, (2500, 6000), dom_over=_LIPS_FREE,
        jaw=0.2, spread=0.2),
    _ph("K", "plosive", False, (300, 1900, 2400), 85, (1500, 3500), dom_over=_LIPS_FREE, jaw=0.25),
    _ph("G", "plosive", True, (300, 1900, 2400), 75, (1200, 3000), dom_over=_LIPS_FREE, jaw=0.25),
    # nasals
    _ph("M", "nasal", True, (250, 900, 2200), 75, dom_over=_BILABIAL, close=1.0),
    _ph("N", "nasal", True, (300, 1700, 2600), 65, dom_over=_LIPS_FREE, jaw=0.2, spread=0.15),
    _ph("NG", "nasal", True, (300, 1900, 2400), 75, dom_over=_LIPS_FREE, jaw=0.25),
    # fricatives
    _ph("F", "fricative", False, (300, 1400, 2400), 95, (1000, 7500), dom_over=_LABIODENTAL,
        jaw=0.1, close=0.5, upper=0.4),
    _ph("V", "fricative", True, (300, 1400, 2400), 70, (1000, 7000), dom_over=_LABIODENTAL,
        jaw=0.1, close=0.5, upper=0.4),
    _ph("TH", "fricative", False, (300, 1600, 2600), 90, (1200, 7500), jaw=0.2, spread=0.2,
        lower=0.1),
    _ph("S", "fricative", False, (300, 1700, 2600), 105, (3800, 7500), dom=1.5,
        dom_over={"round": 0.2, "funnel": 0.2}, jaw=0.1, spread=0.5),
    _ph("Z", "fricative", True, (300, 1700, 2600), 80, (3500, 7500), dom=1.5,
        dom_over={"round": 0.2, "funnel": 0.2}, jaw=0.1, spread=0.5),
    _ph("SH", "fricative", False, (300, 1900, 2500), 110, (1800, 6000), dom=1.5,
        dom_over={"funnel": 3.0}, jaw=0.15, round=0.5, funnel=0.9),
    _ph("HH", "fricative", False, (500, 1500, 2500), 60, None, dom=0.2, jaw=0.35, lower=0.15),
    # approximants
    _ph("L", "approximant", True, (360, 1000, 2650), 65, dom_over=_LIPS_FREE, jaw=0.3, lower=0.1),
    _ph("R", "approximant", True, (350, 1100, 1500), 70, jaw=0.25, round=0.5, funnel=0.35),
    _ph("W", "approximant", True, (300, 650, 2200), 65, dom=2.0, jaw=0.1, round=1.0, funnel=0.6),
    _ph("Y", "approximant", True, (260, 2100, 3000), 60, jaw=0.15, spread=0.6),
    # pause: neutral formants (the synthesiser takes its neighbours'), closed relaxed mouth
    _ph("SIL", "silence", False, (500, 1500, 2500), 150, dom=0.8),
]

PHONEMES: Mapping[str, Phoneme] = MappingProxyType({p.symbol: p for p in _TABLE})
VOWELS = tuple(s for s, p in PHONEMES.items() if p.kind == "vowel")
CONSONANTS = tuple(s for s, p in PHONEMES.items() if p.kind not in ("vowel", "silence"))
# Codas exclude sounds that English does not allow syllable-finally.
CODAS = tuple(s for s in CONSONANTS if s not in ("HH", "W", "Y"))
ONSETS = tuple(s for s in CONSONANTS if s != "NG")


def phoneme(symbol: str) -> Phoneme:
    """Look a symbol up, with an error that lists the inventory."""
    if symbol not in PHONEMES:
        raise KeyError(f"unknown phoneme {symbol!r}; expected one of {sorted(PHONEMES)}")
    return PHONEMES[symbol]


def _duration_s(symbol: str, rng: np.random.Generator, rate: float) -> float:
    """Mean duration jittered log-normally (~15 %) and scaled by 1 / rate."""
    jitter = float(np.clip(np.exp(rng.normal(0.0, 0.15)), 0.6, 1.6))
    return PHONEMES[symbol].duration_ms * 1e-3 * jitter / rate


def _random_word(rng: np.random.Generator) -> list[str]:
    """1-3 syllables, each (C)V(C): onset 85 %, coda 35 %."""
    symbols: list[str] = []
    for _ in range(int(rng.integers(1, 4))):
        if rng.random() < 0.85:
            symbols.append(str(rng.choice(ONSETS)))
        symbols.append(str(rng.choice(VOWELS)))
        if rng.random() < 0.35:
            symbols.append(str(rng.choice(CODAS)))
    return symbols


def _word_gap_s(rng: np.random.Generator, rate: float) -> float:
    """Seconds of SIL after a word: 12 % a pause, 40 % a short gap, else connected speech."""
    u = rng.random()
    if u < 0.12:
        return float(rng.uniform(0.25, 0.5)) / rate
    if u < 0.52:
        return float(rng.uniform(0.04, 0.09)) / rate
    return 0.0


def random_utterance(rng: np.random.Generator, seconds: float, rate: float = 1.0,
                     max_tries: int = 3) -> list[PhonemeEvent]:
    """Random contiguous phoneme events covering exactly [0, seconds].

    Starts with a short SIL, then words with gaps until the next word no longer fits (after
    `max_tries` fresh words), then a final SIL of at least 0.1 s clipped to end at `seconds`.
    `rate` > 1 speaks faster (all durations scale by 1 / rate).
    """
    if seconds <= 0 or rate <= 0:
        raise ValueError(f"seconds and rate must be > 0, got seconds={seconds}, rate={rate}")
    min_end = 0.1 / rate
    events: list[PhonemeEvent] = []
    cursor = min(float(rng.uniform(0.12, 0.3)) / rate, float(seconds))
    events.append(PhonemeEvent("SIL", 0.0, cursor))
    tries = 0
    while tries < max_tries:
        word = [(s, _duration_s(s, rng, rate)) for s in _random_word(rng)]
        gap = _word_gap_s(rng, rate)
        if cursor + sum(d for _, d in word) + min_end > seconds:
            tries += 1
            continue
        for symbol, dur in word:
            events.append(PhonemeEvent(symbol, cursor, cursor + dur))
            cursor += dur
        gap = min(gap, max(seconds - min_end - cursor, 0.0))
        if gap > 0:
            events.append(PhonemeEvent("SIL", cursor, cursor + gap))
            cursor += gap
    return _close_with_silence(events, float(seconds))


def _close_with_silence(events: list[PhonemeEvent], seconds: float) -> list[PhonemeEvent]:
    """Append (or extend a trailing) SIL so that the last event ends exactly at `seconds`."""
    last = events[-1]
    if last.symbol == "SIL":
        events[-1] = PhonemeEvent("SIL", last.start_s, seconds)
    elif last.end_s < seconds:
        events.append(PhonemeEvent("SIL", last.end_s, seconds))
    return events


def check_events(events: list[PhonemeEvent]) -> None:
    """Raise ValueError unless events are non-empty, known, contiguous and of positive length."""
    if not events:
        raise ValueError("events must be a non-empty list of PhonemeEvent")
    for prev, ev in zip([None, *events[:-1]], events):
        phoneme(ev.symbol)
        if ev.end_s <= ev.start_s:
            raise ValueError(f"event {ev} has non-positive duration")
        if prev is not None and abs(prev.end_s - ev.start_s) > 1e-9:
            raise ValueError(f"events must be contiguous: {prev} then {ev}")
