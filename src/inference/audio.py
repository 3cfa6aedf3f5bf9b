"""The target audio of a dub: decoded once at 16 kHz for stage 1 (and the voice-activity gate) and once at
a muxing rate for the output's AAC track, both cut or zero-padded to a whole number of 25 fps frames.

Voice activity (``voice_activity``), per 25 fps frame: ``detector`` "silero" (the default: silero-vad's neural
detector, ``src.audio.vad``, which tells speech from breathing, music and noise) or "energy": a frame is speech when
its RMS level (dBFS) is above ``max(floor_db, loud_db - range_db)``, ``loud_db`` being a high percentile of the
clip's frame levels (so the threshold follows the recording's loudness). Pauses shorter than ``min_silence_s``
stay open (the mouth keeps moving between words); speech is extended by ``preroll_s`` before (lips move
before sound comes out) and ``hangover_s`` after; the binary decision is then smoothed with a
``ramp_s`` moving average, so the mouth closes and opens over a few frames, not in one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from src.audio.vad import SileroVAD
from src.media import decode
from src.media.contract import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME

AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)


@dataclass(frozen=True)
class TargetAudio:
    """The target audio on the output's timeline: ``n_frames`` 25 fps frames; ``samples`` (640 n_frames,)
    float32 at 16 kHz (the model's input); ``mux`` (n_frames / 25 * mux_rate,) int16 mono for the AAC track."""

    path: Path
    n_frames: int
    samples: np.ndarray
    mux: np.ndarray
    mux_rate: int

    @property
    def seconds(self) -> float:
        return self.n_frames / FPS


VAD_DETECTORS = ("silero", "energy")


@dataclass(frozen=True)
class VadConfig:
    enabled: bool = True
    detector: str = "silero"  # silero | energy
    floor_db: float = -50.0  # frames quieter than this (dBFS) are never speech
    range_db: float = 35.0  # ... nor frames this far below the clip's loud level
    loud_percentile: float = 95.0
    min_silence_s: float = 0.3  # shorter pauses stay open
    preroll_s: float = 0.12  # silero finds onsets ~0.1-0.2 s late, and lips move before the sound
    hangover_s: float = 0.04
    ramp_s: float = 0.12  # moving average of the gate (0: a hard gate)

    def __post_init__(self) -> None:
        if self.detector not in VAD_DETECTORS:
            raise ValueError(f"--vad-detector must be one of {VAD_DETECTORS}, got {self.detector!r}")
        for name in ("range_db", "min_silence_s", "preroll_s", "hangover_s", "ramp_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"VadConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.loud_percentile <= 100:
            raise ValueError(f"VadConfig.loud_percentile must be in (0, 100], got {self.loud_percentile}")


def load_target_audio(path: str | Path) -> TargetAudio:
    """Decode ``path`` (any audio or video file with an audio stream): n_frames = its duration in 25 fps
    frames, rounded, at least 1."""
    path = Path(path)
    samples = decode.read_audio(path, SAMPLE_RATE)
    if samples is None:
        raise ValueError(f"--audio {path}: the file has no audio stream")
    if len(samples) < SAMPLES_PER_FRAME // 2:
        raise ValueError(f"--audio {path}: the audio is shorter than one 25 fps frame "
                         f"({len(samples)} samples at 16 kHz)")
    n_frames = max(1, round(len(samples) / SAMPLES_PER_FRAME))
    samples = _fit(samples, n_frames * SAMPLES_PER_FRAME)
    rate = mux_rate(path)
    mux = decode.read_audio(path, rate)
    mux = _fit(mux, round(n_frames * rate / FPS))
    mux = np.round(mux * 32767).astype(np.int16)  # half the memory of float32 for long audio
    return TargetAudio(path, n_frames, samples, mux, rate)


def mux_rate(path: Path) -> int:
    """The audio stream's own rate when AAC supports it, else 48 kHz."""
    with av.open(str(path)) as container:
        rate = container.streams.audio[0].rate
    return rate if rate in AAC_RATES else 48000


def _fit(audio: np.ndarray, length: int) -> np.ndarray:
    """Cut or zero-pad at the end to ``length`` samples."""
    if len(audio) >= length:
        return audio[:length]
    return np.concatenate([audio, np.zeros(length - len(audio), audio.dtype)])


def frame_levels_db(samples: np.ndarray) -> np.ndarray:
    """(640 T,) 16 kHz samples -> (T,) RMS level of each 25 fps frame in dBFS."""
    frames = samples[: len(samples) // SAMPLES_PER_FRAME * SAMPLES_PER_FRAME].reshape(-1, SAMPLES_PER_FRAME)  # (T, 640)
    return 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)


def voice_activity(samples: np.ndarray, cfg: VadConfig = VadConfig()) -> np.ndarray:
    """(640 T,) 16 kHz samples -> (T,) gate in [0, 1]: 1 while speaking, 0 in silence (module docstring).
    All ones when ``cfg.enabled`` is False."""
    if not cfg.enabled:
        return np.ones(len(samples) // SAMPLES_PER_FRAME, np.float32)
    speech = energy_speech(samples, cfg) if cfg.detector == "energy" else SileroVAD().speech(samples)
    speech = _close_gaps(speech, _frames(cfg.min_silence_s))
    speech = _widen(speech, _frames(cfg.preroll_s), _frames(cfg.hangover_s))
    return _smooth(speech.astype(np.float32), _frames(cfg.ramp_s))


def energy_speech(samples: np.ndarray, cfg: VadConfig) -> np.ndarray:
    """(640 T,) samples -> (T,) bool: frames louder than the clip's loud level minus ``range_db`` (and ``floor_db``)."""
    levels = frame_levels_db(samples)
    threshold = max(cfg.floor_db, float(np.percentile(levels, cfg.loud_percentile)) - cfg.range_db)
    return levels > threshold


def _frames(seconds: float) -> int:
    return int(round(seconds * FPS))


def _close_gaps(speech: np.ndarray, shortest: int) -> np.ndarray:
    """Fill runs of False shorter than ``shortest`` frames that lie between two runs of True."""
    out = speech.copy()
    edges = np.flatnonzero(np.diff(speech.astype(np.int8)))  # last frame before each change
    for begin, end in zip(edges[:-1], edges[1:]):  # a False run is begin + 1 .. end when speech[begin]
        if speech[begin] and end - begin < shortest:
            out[begin + 1:end + 1] = True
    return out


def _widen(speech: np.ndarray, before: int, after: int) -> np.ndarray:
    """Extend every run of True by ``before`` frames before it and ``after`` frames after it."""
    out = speech.copy()
    for shift in range(1, before + 1):
        out[:-shift] |= speech[shift:]
    for shift in range(1, after + 1):
        out[shift:] |= speech[:-shift]
    return out


def _smooth(gate: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average over ``width`` frames (edges padded with their own value)."""
    if width <= 1:
        return gate
    padded = np.pad(gate, (width // 2, width - 1 - width // 2), mode="edge")
    return np.convolve(padded, np.ones(width, np.float32) / width, mode="valid").astype(np.float32)
