"""E_aud from phones: a second audio encoder for stage 1 (docs/design.md, "Stage 1") whose front end already
understands real speech and installs with its weights (pocketsphinx's CMU en-US models; ``src.audio.phones``),
for when no pretrained HuBERT folder is at hand. Same contract as the HuBERT ``AudioEncoder``: waveform
(B, N) at 16 kHz and T -> A (B, T, D) at 25 fps.

    P_t   = phone coverage of frame t (recognised, or given as ``features``)      (B, T, P)
    x     = Linear(P, D)                                                          (B, T, D)
    x     = x + GELU(Conv1d_k(x))   ``depth`` times                               (B, T, D)   coarticulation
    A     = LayerNorm(x)                                                          (B, T, D)

Recognition is not differentiable and runs on the CPU; training passes the segment's cached phone frames as
``features`` (``src.data.geometry_datamodule``, ``audio_features``) instead of recognising every window again.

Letters: b batch, n samples, t frames (25 fps), p phones, d width.
"""
from __future__ import annotations

import numpy as np
import torch
from einops import rearrange
from torch import nn

from src.audio.phones import PHONES
from src.media.contract import SAMPLES_PER_FRAME


class PhoneAudioEncoder(nn.Module):
    """``recogniser``: a ``src.audio.phones.PhoneRecogniser`` (or ``FeatureCache``), used when no ``features`` are
    given (dubbing)."""

    def __init__(self, dim: int, recogniser=None, kernel: int = 5, depth: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0 or depth < 0:
            raise ValueError(f"PhoneAudioEncoder: kernel must be odd and >= 1, depth >= 0, got {kernel}, {depth}")
        self.dim, self.recogniser, self.n_phones = dim, recogniser, len(PHONES)
        self.embed = nn.Linear(self.n_phones, dim)
        self.convs = nn.ModuleList(nn.Conv1d(dim, dim, kernel, padding=kernel // 2) for _ in range(depth))
        self.act, self.drop, self.norm = nn.GELU(), nn.Dropout(dropout), nn.LayerNorm(dim)

    def forward(self, audio: torch.Tensor, n_frames: int, features: torch.Tensor | None = None) -> torch.Tensor:
        """audio (B, N) float 16 kHz; features (B, T, P) phone coverage, or None to recognise them -> (B, T, D)."""
        if features is None:
            features = self.recognise(audio, n_frames)
        if features.ndim != 3 or features.shape[1:] != (n_frames, self.n_phones):
            raise ValueError(f"PhoneAudioEncoder: features must be (B, {n_frames}, {self.n_phones}), got "
                             f"{tuple(features.shape)}")
        x = self.embed(features.to(self.embed.weight.dtype))  # (B, T, D)
        for conv in self.convs:
            y = conv(rearrange(x, "b t d -> b d t"))  # (B, D, T)
            x = x + self.drop(self.act(rearrange(y, "b d t -> b t d")))  # (B, T, D)
        return self.norm(x)

    @torch.no_grad()
    def recognise(self, audio: torch.Tensor, n_frames: int) -> torch.Tensor:
        """(B, N) waveforms -> (B, T, P) phone coverage, on the waveforms' device."""
        if self.recogniser is None:
            raise ValueError("PhoneAudioEncoder: no recogniser to turn audio into phones; build it with one "
                             "(model.net.e_aud.recogniser) or pass features")
        if audio.ndim != 2 or abs(audio.shape[1] - SAMPLES_PER_FRAME * n_frames) > SAMPLES_PER_FRAME:
            raise ValueError(f"PhoneAudioEncoder: audio must be (B, N) with N within one frame of "
                             f"{SAMPLES_PER_FRAME} * {n_frames}, got {tuple(audio.shape)}")
        rows = [self.recogniser.frames(a, n_frames) for a in audio.float().cpu().numpy()]
        return torch.from_numpy(np.stack(rows)).to(audio.device)  # (B, T, P)
