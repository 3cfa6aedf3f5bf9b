"""Voice activity per 25 fps frame from silero-vad's ONNX model, which its wheel ships (nothing downloaded), run by
onnxruntime. ``SileroVAD().speech(samples)`` -> (T,) bool: frames inside the speech segments silero finds
(``get_speech_timestamps`` with its own hysteresis, minimum speech and silence durations). The dub's gate
(``src.inference.audio.voice_activity``) then bridges short pauses and ramps the mouth open and closed.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from src.media.contract import SAMPLE_RATE, SAMPLES_PER_FRAME


@lru_cache(maxsize=1)
def _model():
    try:
        from silero_vad import load_silero_vad
    except ImportError as err:
        raise ModuleNotFoundError("voice activity with silero needs silero-vad (its wheel ships the model): "
                                  "pip install 'silero-vad>=5,<7', or use the energy detector (--vad-detector "
                                  "energy)") from err
    return load_silero_vad(onnx=True)


class SileroVAD:
    """``threshold``: silero's speech probability threshold; ``min_speech_s`` / ``min_silence_s``: its shortest
    speech segment and the shortest pause that ends one."""

    def __init__(self, threshold: float = 0.5, min_speech_s: float = 0.15, min_silence_s: float = 0.1) -> None:
        if not 0 < threshold < 1 or min_speech_s < 0 or min_silence_s < 0:
            raise ValueError(f"SileroVAD: need 0 < threshold < 1 and durations >= 0, got {threshold}, "
                             f"{min_speech_s}, {min_silence_s}")
        self.threshold, self.min_speech_s, self.min_silence_s = threshold, min_speech_s, min_silence_s

    def speech(self, samples: np.ndarray) -> np.ndarray:
        """(640 T,) float 16 kHz -> (T,) bool, True on the frames of a speech segment."""
        from silero_vad import get_speech_timestamps

        n_frames = len(samples) // SAMPLES_PER_FRAME
        segments = get_speech_timestamps(torch.from_numpy(np.ascontiguousarray(samples, np.float32)), _model(),
                                         threshold=self.threshold, sampling_rate=SAMPLE_RATE,
                                         min_speech_duration_ms=int(self.min_speech_s * 1000),
                                         min_silence_duration_ms=int(self.min_silence_s * 1000), speech_pad_ms=0,
                                         return_seconds=False)
        out = np.zeros(n_frames, bool)
        for seg in segments:
            first, last = seg["start"] / SAMPLES_PER_FRAME, seg["end"] / SAMPLES_PER_FRAME
            out[int(np.floor(first)):int(np.ceil(last))] = True
        return out
