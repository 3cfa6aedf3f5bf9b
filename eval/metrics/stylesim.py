"""StyleSim (paper 4.2, "Speaking Style Similarity"): the cosine similarity of the style codes of a
generated and a reference video, each from the expression-only vertices Vtx_exp of its frames (3.1),
embedded by a pretrained speaking-style encoder Phi (``eval.models.style_encoder``).

A video's style code (``video_embedding``): Phi of its windows of ``encoder.config.window`` frames (every
``stride`` frames, the last window flush with the end), averaged and renormalised; a video shorter than a
window is one window of its own length. Videos shorter than ``min_frames`` (default: half a window) get no
score: NaN, and the reason in ``StyleSim.skipped``. 1 for identical sequences; higher is better.

``update(gen_exp, ref_exp)``: (T, L, 3) and (T', L, 3) expression-only vertices of the encoder's face model
as displacements from its mean face in mm, ``(M(0, beta, 0) - mean) * units_to_mm`` (the ``exp`` of
``GeometrySystem``; ``eval.shard_clips.expression_mm``); vertex positions (the mean face kept in) are
refused with an error. The two need not have the same length. ``compute()``: {"stylesim"} the mean over videos.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import Metric

from eval.models.style_encoder import StyleEncoder

ABSOLUTE_MM = 20.0  # mean |coordinate| above this is a face's position, not an expression displacement


def check_displacements(exp, name: str) -> None:
    """Expression displacements are a few mm (the procedural face: 0.5 mm mean |x|), vertex positions tens of
    mm (41 mm): refuse the latter rather than score them against an encoder trained on the former."""
    size = float(torch.as_tensor(np.asarray(exp, np.float32) if isinstance(exp, np.ndarray) else exp).abs().mean())
    if size > ABSOLUTE_MM:
        raise ValueError(f"StyleSim: {name} has mean |coordinate| {size:.1f} mm: these look like vertex positions "
                         f"M(0, beta, 0); StyleSim takes expression displacements M(0, beta, 0) - mean face, in mm "
                         f"(eval.shard_clips.expression_mm)")


def window_starts(n_frames: int, window: int, stride: int) -> list[int]:
    """Starts of the windows covering ``n_frames`` (the last one ending at the last frame)."""
    if n_frames <= window:
        return [0]
    starts = list(range(0, n_frames - window + 1, stride))
    if starts[-1] != n_frames - window:
        starts.append(n_frames - window)
    return starts


@torch.no_grad()
def video_embedding(encoder: StyleEncoder, exp: np.ndarray | torch.Tensor, stride: int | None = None,
                    batch_size: int = 64) -> torch.Tensor:
    """(T, L, 3) mm -> (E,) the video's unit style code (module docstring)."""
    device = next(encoder.parameters()).device
    exp = torch.as_tensor(np.asarray(exp, np.float32) if isinstance(exp, np.ndarray) else exp).float()
    if exp.ndim != 3 or exp.shape[-1] != 3 or len(exp) == 0:
        raise ValueError(f"expression vertices must be (T, L, 3) in mm with T >= 1, got {tuple(exp.shape)}")
    window = min(encoder.config.window, len(exp))
    starts = window_starts(len(exp), window, stride or max(1, encoder.config.window // 2))
    index = torch.tensor(starts)[:, None] + torch.arange(window)  # (n, window) frame numbers
    codes = [encoder(exp[index[i:i + batch_size]].to(device)) for i in range(0, len(index), batch_size)]
    return F.normalize(torch.cat(codes).mean(0), dim=0).cpu()  # (E,)


class StyleSim(Metric):
    """Mean over videos of cos(Phi(generated), Phi(reference)) (module docstring)."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, encoder: StyleEncoder, stride: int | None = None, min_frames: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(encoder, StyleEncoder):
            raise TypeError("StyleSim: encoder must be an eval.models.style_encoder.StyleEncoder, e.g. "
                            "load_style_encoder(path)")
        self.encoder = encoder.eval().requires_grad_(False)
        self.stride = stride
        self.min_frames = max(1, encoder.config.window // 2) if min_frames is None else min_frames
        self.skipped: list[str] = []
        self.add_state("values", default=[], dist_reduce_fx="cat")

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()  # no dropout in an evaluator, whatever the caller's mode
        return self

    def score(self, gen_exp, ref_exp) -> dict:
        """One video pair -> {"stylesim"} (NaN with "skipped" when either is shorter than min_frames)."""
        for name, x in (("gen_exp", gen_exp), ("ref_exp", ref_exp)):
            check_displacements(x, name)
        short = [f"{name} has {len(x)} frames < min_frames={self.min_frames}"
                 for name, x in (("gen_exp", gen_exp), ("ref_exp", ref_exp)) if len(x) < self.min_frames]
        if short:
            return {"stylesim": math.nan, "skipped": "; ".join(short)}
        gen, ref = (video_embedding(self.encoder, x, self.stride) for x in (gen_exp, ref_exp))
        return {"stylesim": float(torch.dot(gen, ref).clamp(-1.0, 1.0))}

    def update(self, gen_exp, ref_exp) -> None:
        result = self.score(gen_exp, ref_exp)
        if "skipped" in result:
            self.skipped.append(result["skipped"])
        self.values.append(torch.tensor([result["stylesim"]], dtype=torch.float64, device=self.device))

    def compute(self) -> dict[str, torch.Tensor]:
        values = ((torch.cat(self.values) if self.values else torch.zeros(0)) if isinstance(self.values, list)
                  else self.values)
        scored = values[~values.isnan()]
        return {"stylesim": (scored.mean() if len(scored) else torch.tensor(math.nan)).float()}

    def reset(self) -> None:
        super().reset()
        self.skipped = []
