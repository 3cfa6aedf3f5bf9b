"""SyncScore (LSE-C), LSE-D and the audio-video offset, as the reference SyncNet evaluation computes them
(joonson/syncnet_python ``SyncNetInstance.evaluate``; paper 4.2, docs/design.md, "Evaluation", ENVIRONMENT.md).

Per video (``score``), on the first ``n = min(T, floor(N / 640))`` frames:

1. lip features ``v_t`` of the 5-frame windows starting at t = 0 .. n - 6 (``n - 5`` windows: the
   reference's count, one short of every possible window), audio features ``a_t`` of MFCC columns
   [4 t, 4 t + 20) (``eval.audio_features``);
2. for each offset index j = 0 .. 2 S (S = ``vshift`` = 15): ``D_j`` = mean over t of ``|| v_t - a_{t+j-S} ||``
   (``F.pairwise_distance``, eps 1e-6), where audio features outside the clip are zero vectors (the
   reference pads the audio features with S zero rows at each end);
3. ``lse_d = min_j D_j``, ``sync_conf`` (LSE-C, SyncScore) ``= median_j D_j - min_j D_j``,
   ``sync_offset = S - argmin_j D_j``.

Offset sign: at the best offset, video frame t matches the audio of frame ``t - sync_offset``. Positive:
the audio is ahead of the video (a sound is heard ``sync_offset`` frames before the lips make it);
negative: the audio lags. Delaying the audio of a synced clip by k frames gives ``-k``.

Tracks shorter than ``min_frames`` (the reference pipeline's 100) get no score: NaN, and the reason in the
per-video dict and in ``SyncScore.skipped``. Videos are 25 fps, audio 16 kHz mono aligned with frame 0.

Input crops: the benchmark's 256x256 RGB face crops; ``lip_input`` cuts out the network's
``config.crop_region`` (for syncnet_v2 the region the reference's own face-track crop covers, see
``eval.models.syncnet.SyncNetConfig``), pads outside the crop with the reference's grey (110), resizes to
its ``image_size`` with bilinear interpolation (as ``cv2.resize`` in the reference) and orders channels as
the network was trained (BGR for syncnet_v2). Mux audio as PCM when scoring files: AAC priming shifts it.
"""
from __future__ import annotations

import math
import warnings

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torchmetrics import Metric

from eval.audio_features import SAMPLES_PER_FRAME, WINDOW_FRAMES, audio_windows, int16_scale, mfcc
from eval.models.syncnet import SyncNetConfig

VSHIFT = 15
MIN_FRAMES = 100


def lip_input(frames: np.ndarray, config: SyncNetConfig) -> torch.Tensor:
    """(T, H, W, 3) uint8 RGB face crops -> (T, 3, h, w) uint8 network pixels (module docstring): the
    config's crop region, padded with ``pad_value`` outside the crop, resized, channels in its order."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}")
    _, H, W, _ = frames.shape
    x0, y0, x1, y1 = config.crop_region
    left, top, right, bottom = round(x0 * W), round(y0 * H), round(x1 * W), round(y1 * H)  # crop pixels
    pad = max(0, -left, -top, right - W, bottom - H)
    h, w = config.image_size
    out = np.empty((len(frames), h, w, 3), np.uint8)
    for i, frame in enumerate(frames):
        if pad:
            frame = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(config.pad_value,) * 3)
        region = frame[top + pad:bottom + pad, left + pad:right + pad]
        out[i] = cv2.resize(region, (w, h), interpolation=cv2.INTER_LINEAR)
    if config.channel_order == "bgr":
        out = out[..., ::-1]
    return torch.from_numpy(np.ascontiguousarray(out)).permute(0, 3, 1, 2)  # (T, 3, h, w)


def lip_windows(pixels: torch.Tensor, starts: torch.Tensor | range, scale: float) -> torch.Tensor:
    """(T, 3, h, w) uint8 -> (B, 3, 5, h, w) float network input of the windows starting at ``starts``."""
    index = torch.as_tensor(list(starts))[:, None] + torch.arange(WINDOW_FRAMES)  # (B, 5) frame numbers
    clips = pixels[index].float() * scale  # (B, 5, 3, h, w)
    return rearrange(clips, "b t c h w -> b c t h w")


def offset_distances(video: torch.Tensor, audio: torch.Tensor, vshift: int = VSHIFT) -> torch.Tensor:
    """The reference's ``calc_pdist``: video, audio (W, D) window features -> (W, 2 vshift + 1) distances,
    entry [t, j] = || video_t - audio_{t + j - vshift} ||, audio outside [0, W) a zero vector."""
    if video.shape != audio.shape or video.ndim != 2:
        raise ValueError(f"video and audio features must both be (W, D), got {tuple(video.shape)} and "
                         f"{tuple(audio.shape)}")
    padded = F.pad(audio, (0, 0, vshift, vshift))  # (W + 2 vshift, D)
    candidates = rearrange(padded.unfold(0, 2 * vshift + 1, 1)[: len(video)], "w d j -> w j d")  # (W, 2 vshift + 1, D)
    return F.pairwise_distance(video[:, None].expand_as(candidates), candidates)  # (W, 2 vshift + 1)


def sync_statistics(distances: torch.Tensor, vshift: int = VSHIFT) -> dict:
    """(W, 2 vshift + 1) distances -> ``sync_conf`` (median - min of the mean distances), ``lse_d`` (min),
    ``sync_offset`` (vshift - argmin) and the mean distance per offset (``mean_dist``, index j = offset
    ``vshift - j``)."""
    mean = distances.mean(0)  # (2 vshift + 1,)
    low, best = torch.min(mean, 0)
    return {"sync_conf": float(torch.median(mean) - low), "sync_offset": float(vshift - int(best)),
            "lse_d": float(low), "mean_dist": mean.tolist()}


@torch.no_grad()
def sync_features(syncnet: nn.Module, frames: np.ndarray, audio: np.ndarray, n_frames: int,
                  batch_size: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Lip and audio features (W, D) of the ``n_frames - 5`` windows of a clip (module docstring, step 1)."""
    config: SyncNetConfig = syncnet.config
    device = next(syncnet.parameters()).device
    pixels = lip_input(frames[:n_frames], config)  # (n, 3, h, w)
    n_windows = n_frames - WINDOW_FRAMES
    mfccs = audio_windows(mfcc(int16_scale(audio[: n_frames * SAMPLES_PER_FRAME])), n_windows)  # (W, 1, 13, 20)
    video, sound = [], []
    for start in range(0, n_windows, batch_size):
        starts = range(start, min(n_windows, start + batch_size))
        video.append(syncnet.forward_lip(lip_windows(pixels, starts, config.pixel_scale).to(device)).float().cpu())
        sound.append(syncnet.forward_aud(mfccs[starts.start:starts.stop].to(device)).float().cpu())
    return torch.cat(video), torch.cat(sound)


def score(syncnet: nn.Module, frames: np.ndarray, audio: np.ndarray, vshift: int = VSHIFT,
          min_frames: int = MIN_FRAMES, batch_size: int = 20) -> dict:
    """One video: frames (T, H, W, 3) uint8 RGB face crops at 25 fps, audio (N,) float32 in [-1, 1] (or
    int16) at 16 kHz aligned with frame 0 -> {"sync_conf", "sync_offset", "lse_d", "n_frames",
    "mean_dist"}, or NaN scores with a "skipped" reason for a track shorter than ``min_frames``."""
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"audio must be (N,) mono samples at 16 kHz, got shape {audio.shape}")
    n_frames = min(len(frames), len(audio) // SAMPLES_PER_FRAME)
    if abs(len(frames) - len(audio) / SAMPLES_PER_FRAME) >= 1:
        warnings.warn(f"SyncScore: audio ({len(audio) / 16000:.3f} s) and video ({len(frames) / 25:.3f} s) lengths "
                      f"differ; scoring the first {n_frames} frames (as the reference does)", stacklevel=2)
    needed = max(min_frames, WINDOW_FRAMES + 1)
    if n_frames < needed:
        nan = float("nan")
        return {"sync_conf": nan, "sync_offset": nan, "lse_d": nan, "n_frames": n_frames,
                "skipped": f"track of {n_frames} frames is shorter than min_frames={needed}"}
    video, sound = sync_features(syncnet, frames, audio, n_frames, batch_size)
    return {**sync_statistics(offset_distances(video, sound, vshift), vshift), "n_frames": n_frames}


class SyncScore(Metric):
    """SyncScore / LSE-C, LSE-D and offset averaged over videos (module docstring). ``update(frames,
    audio)`` scores one video (see ``score``; its dict is appended to ``results``); ``compute()`` ->
    {"sync_conf", "sync_offset", "lse_d"}, means over the videos that got a score (NaN when none did;
    ``skipped`` says why)."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, syncnet: nn.Module, vshift: int = VSHIFT, min_frames: int = MIN_FRAMES, batch_size: int = 20,
                 **kwargs):
        super().__init__(**kwargs)
        if not isinstance(getattr(syncnet, "config", None), SyncNetConfig):
            raise TypeError("SyncScore: syncnet must be an eval.models.syncnet.SyncNet (with its .config), e.g. "
                            "load_syncnet(path)")
        self.syncnet = syncnet.eval().requires_grad_(False)
        self.vshift, self.min_frames, self.batch_size = vshift, min_frames, batch_size
        self.results: list[dict] = []  # per video, as ``score`` returns them (this process's videos)
        self.skipped: list[str] = []
        self.add_state("scores", default=[], dist_reduce_fx="cat")

    def train(self, mode: bool = True):
        super().train(mode)
        self.syncnet.eval()  # BatchNorm statistics stay the trained ones whatever the caller's mode
        return self

    def update(self, frames: np.ndarray, audio: np.ndarray) -> None:
        result = score(self.syncnet, frames, audio, self.vshift, self.min_frames, self.batch_size)
        self.results.append(result)
        if "skipped" in result:
            self.skipped.append(result["skipped"])
        values = [result["sync_conf"], result["sync_offset"], result["lse_d"]]
        self.scores.append(torch.tensor([values], dtype=torch.float64, device=self.device))  # (1, 3)

    def compute(self) -> dict[str, torch.Tensor]:
        if isinstance(self.scores, list):
            scores = torch.cat(self.scores) if self.scores else torch.zeros(0, 3, dtype=torch.float64)  # (V, 3)
        else:
            scores = self.scores
        scored = scores[~scores[:, 0].isnan()]
        means = scored.mean(0) if len(scored) else torch.full((3,), math.nan, dtype=torch.float64)
        return {name: means[i].float() for i, name in enumerate(("sync_conf", "sync_offset", "lse_d"))}

    def reset(self) -> None:
        super().reset()
        self.results, self.skipped = [], []
