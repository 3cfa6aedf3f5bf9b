"""E_aud, the audio encoder of PersonaTalk (paper 3.2, docs/design.md, "Stage 1"): HuBERT at 50 Hz, then each pair of
50 Hz features concatenated and projected to one 25 fps frame feature A.

    waveform (B, N), 16 kHz  --pad-->  HuBERT  -> (B, 2T, H)  -> pairs (B, T, 2H)  -> Linear -> A (B, T, D)

Alignment: video frame t covers samples [640 t, 640 (t+1)). HuBERT's conv stack has a receptive field of
400 samples and a stride of 320, so padding 40 samples on each side makes its features 2t and 2t+1 centred
at 640 t + 160 and 640 t + 480, the two halves of frame t, and gives exactly 2T features.

Letters: b batch, n samples, t frames (25 fps), k HuBERT features (50 Hz), h HuBERT width, d width.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from transformers import HubertConfig, HubertModel

from src.media.contract import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME  # noqa: F401 (HuBERT's input rate is the project's)

WEIGHT_FILES = (
    "model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json"
)


class AudioEncoder(nn.Module):
    """E_aud: waveform `(B, N)` at 16 kHz -> A `(B, T, D)` at 25 fps, for any T.

    Exactly one of `pretrained` (a folder written by `save_pretrained`, loaded offline) or `config`
    (`HubertConfig` keyword arguments, random init) is given. HuBERT's SpecAugment masking is off unless
    `mask_time_prob` asks for it (the pretrained configs ship with 0.05). `normalize` standardises each
    waveform as HuBERT's feature extractor does; `freeze_feature_encoder` freezes HuBERT's conv stack.
    """

    def __init__(
        self,
        dim: int,
        pretrained: str | None = None,
        config: Mapping | None = None,
        freeze_feature_encoder: bool = False,
        normalize: bool = True,
        mask_time_prob: float | None = None,
    ) -> None:
        super().__init__()
        if (pretrained is None) == (config is None):
            raise ValueError(
                "AudioEncoder: give exactly one of pretrained (a save_pretrained folder) or config "
                f"(HubertConfig kwargs), got pretrained={pretrained!r} and config={config!r}"
            )
        self.dim, self.normalize = dim, normalize
        if pretrained is not None:
            self.hubert = _load_hubert(pretrained)
            _set_masking(self.hubert, 0.0 if mask_time_prob is None else mask_time_prob)
        else:
            overrides = {} if mask_time_prob is None else {"mask_time_prob": mask_time_prob}
            self.hubert = _random_hubert({**config, **overrides})
            _set_masking(self.hubert, self.hubert.config.mask_time_prob)
        self.pad = _alignment_padding(self.hubert.config)
        if freeze_feature_encoder:
            self.hubert.feature_extractor._freeze_parameters()  # what HubertForCTC.freeze_feature_encoder does
        self.to_frame = nn.Linear(2 * self.hubert.config.hidden_size, dim)

    def forward(self, audio: torch.Tensor, n_frames: int, features: torch.Tensor | None = None) -> torch.Tensor:
        """audio (B, N) float at 16 kHz, N within 640 samples of 640 * n_frames -> A (B, T, D). HuBERT reads the
        waveform itself: precomputed ``features`` (another front end's) are an error."""
        if features is not None:
            raise ValueError("AudioEncoder (HuBERT) reads the waveform; got precomputed audio features: the data "
                             "module's audio_features belong to another E_aud (e_aud_phones)")
        wave = self._fit(audio, n_frames)  # (B, 640 T + 2 pad)
        features = self.hubert(wave).last_hidden_state  # (B, 2T, H)
        if features.shape[1] != 2 * n_frames:  # guaranteed by _alignment_padding; a guard against config drift
            raise RuntimeError(f"AudioEncoder: HuBERT gave {features.shape[1]} features for {n_frames} frames")
        pairs = rearrange(features, "b (t two) h -> b t (two h)", two=2)  # (B, T, 2H)
        return self.to_frame(pairs)  # (B, T, D)

    def _fit(self, audio: torch.Tensor, n_frames: int) -> torch.Tensor:
        """Crop or zero-pad to 640 T samples, standardise over the real samples, pad `self.pad` each side."""
        if audio.ndim != 2 or not audio.is_floating_point():
            raise ValueError(
                f"AudioEncoder: audio must be a float (B, N) waveform, got {audio.dtype} {tuple(audio.shape)}"
            )
        if int(n_frames) != n_frames or n_frames < 1:
            raise ValueError(f"AudioEncoder: n_frames must be a positive int, got {n_frames!r}")
        target = SAMPLES_PER_FRAME * n_frames
        if abs(audio.shape[1] - target) > SAMPLES_PER_FRAME:
            raise ValueError(
                f"AudioEncoder: audio has {audio.shape[1]} samples but n_frames={n_frames} needs "
                f"{SAMPLES_PER_FRAME} * n_frames = {target} (16 kHz at 25 fps), give or take one frame"
            )
        wave = audio[:, :target]  # (B, <= 640 T)
        if self.normalize:
            mean = wave.mean(1, keepdim=True)  # (B, 1)
            var = wave.var(1, keepdim=True, unbiased=False)  # (B, 1)
            wave = (wave - mean) / torch.sqrt(var + 1e-7)  # (B, <= 640 T), the 1e-7 of Wav2Vec2FeatureExtractor
        # zeros after standardisation are the sequence mean, so padding adds no offset
        return F.pad(wave, (self.pad, self.pad + target - wave.shape[1]))  # (B, 640 T + 2 pad)


def _load_hubert(pretrained: str) -> HubertModel:
    folder = Path(pretrained)
    if not folder.is_dir():
        raise FileNotFoundError(f"AudioEncoder: pretrained folder {folder} does not exist; {_how_to_get(folder)}")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"AudioEncoder: {folder / 'config.json'} is missing; {_how_to_get(folder)}")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise FileNotFoundError(
            f"AudioEncoder: no weights file in {folder} (looked for {', '.join(WEIGHT_FILES)}); {_how_to_get(folder)}"
        )
    # from_pretrained returns the model in eval mode; an nn.Module starts in train mode and Lightning only toggles
    # modes around validation, so left so HuBERT would fine-tune with dropout, LayerDrop and SpecAugment off
    # (unlike the random-init path)
    return HubertModel.from_pretrained(str(folder), local_files_only=True).train()


def _how_to_get(folder: Path) -> str:
    return (
        "download facebook/hubert-base-ls960 on a machine with internet access, "
        f"HubertModel.from_pretrained('facebook/hubert-base-ls960').save_pretrained('{folder}'), and copy that "
        "folder here"
    )


def _random_hubert(config: Mapping) -> HubertModel:
    # Hydra hands over ListConfig values; HubertConfig wants plain tuples (it serialises them to JSON)
    kwargs = {k: tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v for k, v in config.items()}
    return HubertModel(HubertConfig(**{"mask_time_prob": 0.0, **kwargs}))


def _set_masking(hubert: HubertModel, mask_time_prob: float) -> None:
    """Set SpecAugment's time-mask rate; an unused mask embedding is frozen so DDP sees no unused parameter."""
    if mask_time_prob > 0 and not hasattr(hubert, "masked_spec_embed"):
        raise ValueError(
            f"AudioEncoder: mask_time_prob={mask_time_prob} but this pretrained HuBERT has no mask embedding "
            "(its config.json has mask_time_prob 0 and mask_feature_prob 0); use mask_time_prob=None or 0"
        )
    hubert.config.mask_time_prob = float(mask_time_prob)
    if hasattr(hubert, "masked_spec_embed") and mask_time_prob == 0 and hubert.config.mask_feature_prob == 0:
        hubert.masked_spec_embed.requires_grad_(False)


def _alignment_padding(config: HubertConfig) -> int:
    """Samples to pad on each side so that the conv stack gives two features per 640-sample frame."""
    stride = math.prod(config.conv_stride)
    field = 1 + sum((k - 1) * math.prod(config.conv_stride[:i]) for i, k in enumerate(config.conv_kernel))
    if stride * 2 != SAMPLES_PER_FRAME or (field - stride) % 2:
        raise ValueError(
            f"AudioEncoder: HuBERT conv_stride {tuple(config.conv_stride)} / conv_kernel {tuple(config.conv_kernel)} "
            f"give stride {stride} and receptive field {field}; need stride 320 (50 Hz) and an even field - stride; "
            "keep HuBERT's (5,2,2,2,2,2,2) / (10,3,3,3,3,2,2)"
        )
    return (field - stride) // 2  # 40 for HuBERT
