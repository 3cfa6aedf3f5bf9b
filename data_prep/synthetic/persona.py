"""A synthetic speaker: identity shape, appearance, voice, speaking style and habits of motion.

Everything about a speaker that stays the same across their clips lives here, drawn once from the
speaker's seed; what changes per clip (the sentence, lighting, background, head motion) is drawn from
the clip's seed in ``generate.py``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from data_prep.synthetic.speech import Voice
from data_prep.synthetic.visemes import SpeakingStyle

# (light skin ... dark skin) base albedos, sRGB in [0, 1]
SKIN_TONES = np.array([[0.93, 0.76, 0.66], [0.87, 0.67, 0.55], [0.78, 0.58, 0.44], [0.66, 0.46, 0.33],
                       [0.52, 0.35, 0.24], [0.38, 0.25, 0.17]])
HAIR_COLOURS = np.array([[0.08, 0.06, 0.05], [0.25, 0.16, 0.09], [0.45, 0.3, 0.16], [0.7, 0.55, 0.32],
                         [0.55, 0.55, 0.55], [0.35, 0.12, 0.06]])
IRIS_COLOURS = np.array([[0.25, 0.15, 0.08], [0.35, 0.45, 0.6], [0.3, 0.45, 0.3], [0.15, 0.1, 0.06]])


@dataclass(frozen=True)
class Appearance:
    skin: tuple[float, float, float]
    lips: tuple[float, float, float]
    hair: tuple[float, float, float]
    brows: tuple[float, float, float]
    iris: tuple[float, float, float]
    shirt: tuple[float, float, float]
    brow_thickness: float  # mm
    blush: float  # 0..1 cheek redness
    texture_seed: int

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "Appearance":
        skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.95, 1.05, 3)
        hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))]
        lips = skin * np.array([0.85, 0.55, 0.55]) + rng.uniform(-0.04, 0.04, 3)
        return cls(skin=_tup(skin), lips=_tup(lips), hair=_tup(hair), brows=_tup(hair * 0.8 + 0.02),
                   iris=_tup(IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))]), shirt=_tup(rng.uniform(0.1, 0.8, 3)),
                   brow_thickness=float(rng.uniform(2.5, 4.5)), blush=float(rng.uniform(0.0, 0.6)),
                   texture_seed=int(rng.integers(2 ** 31)))


@dataclass(frozen=True)
class Habits:
    """Audio-unrelated motion: how often a speaker blinks, how much they move their head and brows."""

    blink_rate_hz: float
    head_motion: float  # scale of head-pose drift
    brow_activity: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "Habits":
        return cls(blink_rate_hz=float(rng.uniform(0.15, 0.5)), head_motion=float(rng.uniform(0.5, 1.5)),
                   brow_activity=float(rng.uniform(0.2, 1.0)))


@dataclass(frozen=True)
class Persona:
    speaker_id: str
    alpha: np.ndarray  # (K_id,) identity coefficients of the face model
    style: SpeakingStyle
    voice: Voice
    appearance: Appearance
    habits: Habits
    speech_rate: float

    @classmethod
    def sample(cls, speaker_id: str, n_id: int, rng: np.random.Generator) -> "Persona":
        return cls(speaker_id=speaker_id, alpha=np.clip(rng.standard_normal(n_id), -2.5, 2.5).astype(np.float32),
                   style=SpeakingStyle.sample(rng), voice=Voice.sample(rng), appearance=Appearance.sample(rng),
                   habits=Habits.sample(rng), speech_rate=float(rng.uniform(0.85, 1.2)))

    def to_dict(self) -> dict:
        return {"speaker_id": self.speaker_id, "alpha": self.alpha.round(5).tolist(), "style": self.style.to_dict(),
                "voice": self.voice.to_dict(), "appearance": asdict(self.appearance), "habits": asdict(self.habits),
                "speech_rate": self.speech_rate}


def _tup(x) -> tuple[float, float, float]:
    x = np.clip(np.asarray(x, float), 0.0, 1.0)
    return (float(x[0]), float(x[1]), float(x[2]))
