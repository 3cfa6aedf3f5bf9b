"""Stage 1 at dubbing time (docs/design.md, "Stage 1" and "Dubbing"): lower-face geometry from the target audio in
the reference speaker's style, gated by voice activity, composed with the reference frames' upper face and head pose.

- Inputs of the network, once per dub: the style code S from Vtx_exp of up to ``style_frames`` frames
  spread over the reference's face frames (S pools mean and std over time, so a spread sample measures the
  same statistics as a contiguous window), and the identity template Vtx_temp of the reference's mean alpha.
  Units as in training (``src.geometry.net_units``): relative to the model's mean shape, in centimetres.
- ``LowerFaceStream``: the network over the whole target in windows of ``window`` frames overlapping by
  ``overlap``, run only when the dub reaches them (memory does not grow with the audio's length), blended
  where they overlap (``timeline.window_weights``: no seam between windows), blended by the voice-activity gate
  with the reference speaker's rest pose: a gate of 0 gives the mean lower face of the reference's most-closed
  frames (its ``rest_quantile`` of mouth openings), the way this person closes the mouth. A real face's fitted rest
  pose is not the model's neutral (beta = 0): lips pressed, a slight smile, the jaw of its identity fit.
- ``target_vertices``: predicted lower face + the reference frame's upper face, posed with its head pose
  (``src.geometry.compose``), in pixels of the 256 crop.

Letters: t frames, l vertices, k modes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from src.geometry import net_units
from src.geometry.compose import compose_posed
from src.inference.timeline import window_weights, windows


@dataclass(frozen=True)
class GeometryConfig:
    window: int = 250  # frames per stage-1 call (10 s)
    overlap: int = 25  # frames shared by neighbouring calls, crossfaded
    style_frames: int = 250  # reference frames the style code is computed from
    # the gate's closed mouth: the mean lower face of the reference frames whose opening is at most this quantile
    # of the reference's openings (0: its single most-closed frame)
    rest_quantile: float = 0.1
    # a baseline, not a dub: the mouth held at the reference's mean expression on every frame (no stage 1, no gate)
    frozen_mouth: bool = False

    def __post_init__(self) -> None:
        if self.window < 2 or not 0 <= 2 * self.overlap < self.window or self.style_frames < 1:
            raise ValueError(f"GeometryConfig: need window >= 2, 0 <= overlap < window / 2, style_frames >= 1, got "
                             f"{self.window}, {self.overlap}, {self.style_frames}")
        if not 0 <= self.rest_quantile <= 1:
            raise ValueError(f"GeometryConfig: rest_quantile must be in [0, 1], got {self.rest_quantile}")


@dataclass
class StageOneInputs:
    style_code: torch.Tensor | None  # (1, D), None for the w/o style ablation
    vtx_temp: torch.Tensor  # (1, L, 3) cm, relative to the mean shape
    mean_lower_mm: np.ndarray  # (n_lower, 3) the reference's mean lower-face expression offsets, mm
    rest_lower_mm: np.ndarray  # (n_lower, 3) its rest pose: the mean over its most-closed frames, mm


@torch.no_grad()
def stage_one_inputs(net, fm, analysis, cfg: GeometryConfig, device: str) -> StageOneInputs:
    """Style code and template of the reference speaker (module docstring)."""
    faces = np.flatnonzero(analysis.found)
    pick = faces[np.round(np.linspace(0, len(faces) - 1, min(cfg.style_frames, len(faces)))).astype(int)]
    exp = net_units.expression_input(fm, torch.from_numpy(analysis.beta[pick]))  # (R, L, 3) cm
    alpha = torch.from_numpy(analysis.alpha[faces].mean(0, keepdims=True))  # (1, K_id)
    temp = net_units.template_input(fm, alpha)  # (1, L, 3) cm
    style = net.style(exp[None].to(device)) if net.has_style else None  # (1, R, L, 3) -> (1, D)
    mean_lower = net_units.lower_face_mm(fm, torch.from_numpy(analysis.beta[faces])).mean(0).numpy()  # (n_lower, 3)
    return StageOneInputs(style, temp.to(device), mean_lower.astype(np.float32),
                          rest_pose_mm(fm, analysis.beta[pick], cfg.rest_quantile))


@torch.no_grad()
def rest_pose_mm(fm, beta: np.ndarray, quantile: float) -> np.ndarray:
    """(R, K_exp) expressions of reference frames -> (n_lower, 3) mm: the mean lower face of those whose mouth
    opening is at most the ``quantile`` of their openings."""
    beta_t = torch.from_numpy(np.ascontiguousarray(beta, np.float32))
    opening = fm.mouth_opening(fm.expression_vertices(beta_t)).numpy()  # (R,) mm
    closed = opening <= np.quantile(opening, quantile)
    return net_units.lower_face_mm(fm, beta_t[torch.from_numpy(closed)]).mean(0).numpy().astype(np.float32)


def whole_audio_features(net, samples: np.ndarray, n_frames: int) -> torch.Tensor | None:
    """(T, P) the front end's features of the whole target audio, for an E_aud that computes features from the audio
    (the phone recogniser): decoded once over the whole audio, as training decodes each clip, not per window (a
    window cut mid-word decodes worse, and its edges differ from what training saw); None for HuBERT."""
    if not hasattr(getattr(net, "e_aud", None), "recognise"):
        return None
    return net.e_aud.recognise(torch.from_numpy(np.ascontiguousarray(samples, np.float32))[None], n_frames)[0].cpu()


class LowerFaceStream:
    """Gated lower-face offsets (mm) of every output frame, computed window by window as they are asked for,
    in increasing order (module docstring)."""

    def __init__(self, net, inputs: StageOneInputs, samples: np.ndarray, gate: np.ndarray, cfg: GeometryConfig,
                 device: str):
        self.net, self.inputs, self.samples, self.gate = net, inputs, samples, gate
        self.cfg, self.device = cfg, device
        self.n_frames = len(gate)
        spf = len(samples) // self.n_frames
        if spf * self.n_frames != len(samples):
            raise ValueError(f"LowerFaceStream: {len(samples)} samples are not a whole number of "
                             f"{self.n_frames} frames")
        self.samples_per_frame = spf
        self.spans = windows(self.n_frames, cfg.window, cfg.overlap)
        self.done: dict[int, np.ndarray] = {}  # window -> its weighted offsets (t, n_lower, 3)
        self.features = None if cfg.frozen_mouth else whole_audio_features(net, samples, self.n_frames)

    def take(self, start: int, stop: int) -> np.ndarray:
        """Offsets of frames [start, stop): (stop - start, n_lower, 3) float32 mm, blended with the rest pose by
        the gate."""
        if not 0 <= start < stop <= self.n_frames:
            raise ValueError(f"LowerFaceStream.take: need 0 <= start < stop <= {self.n_frames}, got {start}, {stop}")
        if self.cfg.frozen_mouth:
            return np.repeat(self.inputs.mean_lower_mm[None], stop - start, axis=0)  # (c, n_lower, 3) mm
        out = None
        for i, (s, e) in enumerate(self.spans):
            if e <= start or s >= stop:
                continue
            part = self.done.get(i)
            if part is None:
                part = self.done[i] = self._window(i)
            lo, hi = max(s, start), min(e, stop)
            out = np.zeros((stop - start, *part.shape[1:]), np.float32) if out is None else out
            out[lo - start:hi - start] += part[lo - s:hi - s]
        for i in [i for i in self.done if self.spans[i][1] <= stop]:  # asked in increasing order: never needed again
            del self.done[i]
        gate = self.gate[start:stop, None, None]  # (c, 1, 1)
        return out * gate + self.inputs.rest_lower_mm * (1.0 - gate)

    @torch.no_grad()
    def _window(self, i: int) -> np.ndarray:
        s, e = self.spans[i]
        spf = self.samples_per_frame
        audio = torch.from_numpy(self.samples[s * spf:e * spf])[None].to(self.device)  # (1, 640 t)
        features = None if self.features is None else self.features[s:e][None].to(self.device)  # (1, t, P)
        offsets = self.net(audio, e - s, vtx_temp=self.inputs.vtx_temp, style_code=self.inputs.style_code,
                           audio_features=features)  # (1, t, n_lower, 3) cm
        weight = window_weights(self.spans, i, self.cfg.overlap)[:, None, None]  # (t, 1, 1)
        return net_units.output_to_mm(offsets[0].float().cpu()).numpy() * weight  # (t, n_lower, 3) mm


@torch.no_grad()
def target_vertices(fm, analysis, frames: np.ndarray, offsets_mm: np.ndarray) -> np.ndarray:
    """Reference frames (b,) and their new lower-face offsets (b, n_lower, 3) mm -> screen vertices (b, L, 3)
    in pixels of the 256 crop: predicted lower face, the frame's own upper face and head pose."""
    return compose_posed(fm, torch.from_numpy(analysis.alpha[frames]), torch.from_numpy(analysis.beta[frames]),
                         torch.from_numpy(analysis.pose[frames]), torch.from_numpy(offsets_mm)).numpy()


@torch.no_grad()
def reference_vertices(fm, analysis, frames: np.ndarray) -> np.ndarray:
    """The reference frames' own fitted geometry: (b,) -> screen vertices (b, L, 3), 256-crop pixels."""
    return fm.posed_vertices(torch.from_numpy(analysis.alpha[frames]), torch.from_numpy(analysis.beta[frames]),
                             torch.from_numpy(analysis.pose[frames])).numpy()
