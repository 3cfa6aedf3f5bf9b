"""MFCCs as the reference SyncNet evaluation computes them, and SyncNet's audio windows (docs/design.md, "Evaluation").

The reference (joonson/syncnet_python) calls ``python_speech_features.mfcc(audio, 16000)`` on the int16
samples of a 16 kHz mono wav, with that library's defaults. ``mfcc`` below takes the same steps in numpy
(no extra dependency; tests check it against the formulas, and against the library when it is installed):

1. pre-emphasis 0.97: ``y[0] = x[0]``, ``y[n] = x[n] - 0.97 x[n-1]``;
2. frames of 400 samples (25 ms) every 160 (10 ms), *rectangular* window (the library's default),
   ``1 + ceil((N - 400) / 160)`` frames (1 when N <= 400), the last zero-padded;
3. power spectrum ``|rfft(frame, 512)|^2 / 512`` (257 bins); total power per frame (the "energy");
4. 26 triangular mel filters from 0 Hz to 8 kHz on FFT bins ``floor(513 * mel2hz(m_j) / 16000)``,
   ``m_j`` evenly spaced in mel (``mel = 2595 log10(1 + hz / 700)``); exact zeros replaced by float eps;
5. log, orthonormal DCT-II, the first 13 coefficients;
6. sinusoidal lifter 22: ``c_n *= 1 + 11 sin(pi n / 22)``;
7. ``c_0`` replaced by the log of the frame energy (``appendEnergy``).

Result: (n_frames, 13), 100 frames per second. SyncNet's audio input for the 5-video-frame window that
starts at frame t is columns ``[4 t, 4 t + 20)`` of the transpose (13, n_frames): 0.2 s of audio.

Audio scale: the reference reads int16 samples; float audio in [-1, 1] (as the shards' loaders give it)
is multiplied by 32768 first. Scale only moves ``c_0`` (log energy), but it moves it, so keep it.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.fft import dct

from src.media.contract import SAMPLE_RATE, SAMPLES_PER_FRAME  # noqa: F401 (SyncNet's rates are the project's)

MFCC_PER_FRAME = 4  # 100 Hz MFCC / 25 fps video
WINDOW_FRAMES = 5  # video frames per SyncNet window
WINDOW_MFCC = 20  # MFCC columns per SyncNet window (0.2 s)

WIN_LEN, WIN_STEP, NFFT, N_FILTERS, N_CEPS, PREEMPH, LIFTER = 400, 160, 512, 26, 13, 0.97, 22


def hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_filters: int = N_FILTERS, nfft: int = NFFT, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(n_filters, nfft // 2 + 1) triangular filters on integer FFT bins, 0 Hz to Nyquist (step 4)."""
    mels = np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_filters + 2)
    bins = np.floor((nfft + 1) * mel_to_hz(mels) / sample_rate)  # (n_filters + 2,)
    bank = np.zeros((n_filters, nfft // 2 + 1))
    for j in range(n_filters):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        rising = np.arange(int(lo), int(mid))
        falling = np.arange(int(mid), int(hi))
        bank[j, rising] = (rising - lo) / (mid - lo)
        bank[j, falling] = (hi - falling) / (hi - mid)
    return bank


def frame_signal(signal: np.ndarray, length: int = WIN_LEN, step: int = WIN_STEP) -> np.ndarray:
    """(N,) -> (n_frames, length), the last frame zero-padded (step 2)."""
    n = len(signal)
    n_frames = 1 if n <= length else 1 + int(np.ceil((n - length) / step))
    padded = np.concatenate([signal, np.zeros((n_frames - 1) * step + length - n)])
    index = np.arange(length)[None, :] + step * np.arange(n_frames)[:, None]  # (n_frames, length)
    return padded[index]


def mfcc(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(N,) samples at 16 kHz on the int16 scale (see ``int16_scale``) -> (n_frames, 13) float64 MFCCs,
    the reference's features (module docstring)."""
    audio = np.asarray(audio)
    if audio.ndim != 1 or len(audio) == 0:
        raise ValueError(f"mfcc: audio must be a non-empty 1-D array of samples, got shape {audio.shape}")
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"mfcc: sample_rate must be {SAMPLE_RATE} (SyncNet's rate), got {sample_rate}; resample first")
    x = audio.astype(np.float64)
    emphasised = np.concatenate([x[:1], x[1:] - PREEMPH * x[:-1]])
    frames = frame_signal(emphasised)  # (F, 400)
    power = np.abs(np.fft.rfft(frames, NFFT)) ** 2 / NFFT  # (F, 257)
    eps = np.finfo(float).eps
    energy = power.sum(1)
    energy = np.where(energy == 0, eps, energy)
    filtered = power @ mel_filterbank().T  # (F, 26)
    filtered = np.where(filtered == 0, eps, filtered)
    ceps = dct(np.log(filtered), type=2, axis=1, norm="ortho")[:, :N_CEPS]  # (F, 13)
    ceps *= 1.0 + (LIFTER / 2.0) * np.sin(np.pi * np.arange(N_CEPS) / LIFTER)
    ceps[:, 0] = np.log(energy)
    return ceps


def int16_scale(audio: np.ndarray) -> np.ndarray:
    """Samples as the reference reads them: int16 arrays as they are, floats in [-1, 1] times 32768."""
    audio = np.asarray(audio)
    if audio.dtype == np.int16:
        return audio
    if not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"audio must be int16 samples or floats in [-1, 1], got dtype {audio.dtype}")
    return audio.astype(np.float64) * 32768.0


def audio_windows(mfccs: np.ndarray, n_windows: int) -> torch.Tensor:
    """(n_frames, 13) MFCCs -> (n_windows, 1, 13, 20) float32 SyncNet audio inputs; window t holds
    columns [4 t, 4 t + 20), the audio under video frames t .. t + 4."""
    need = MFCC_PER_FRAME * (n_windows - 1) + WINDOW_MFCC
    if n_windows < 1 or len(mfccs) < need:
        raise ValueError(f"audio_windows: {n_windows} windows need {need} MFCC frames, got {len(mfccs)}")
    cols = torch.from_numpy(np.ascontiguousarray(mfccs.T, np.float32))  # (13, F)
    windows = cols.unfold(1, WINDOW_MFCC, MFCC_PER_FRAME)[:, :n_windows]  # (13, W, 20)
    return windows.permute(1, 0, 2).unsqueeze(1).contiguous()  # (W, 1, 13, 20)
