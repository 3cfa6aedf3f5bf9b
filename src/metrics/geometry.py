"""Stage-1 geometry metrics (docs/design.md, "Stage 1").

- ``lip_vertex_error``: the lip vertex error of 3D talking-head work (VOCA, FaceFormer): per frame the
  largest L2 distance over the lip vertices, averaged over frames (mm).
- ``SpeakerAmplitude``: speaking style as mouth-opening amplitude per speaker. For each speaker, the
  standard deviation over all their frames of the predicted and of the true mouth opening; their ratio
  says how wide the prediction articulates compared with the speaker (1 = the speaker's own style).
  Reported: ``amp_error`` = mean over speakers of |log ratio| (0 is best) and ``amp_ratio`` = geometric mean
  of the ratios. A model without style drifts towards the average speaker, so its error is the spread of
  the speakers' amplitudes around it.
"""
from __future__ import annotations

import zlib

import torch
from torchmetrics import Metric


def lip_vertex_error(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """pred, true (..., n_lip, 3) in mm -> (...) per-frame maximum lip-vertex distance."""
    return (pred - true).norm(dim=-1).amax(dim=-1)


def speaker_id(name: str) -> int:
    """A stable integer for a speaker name (metric states must be tensors to be gathered across ranks)."""
    return zlib.crc32(name.encode())


class SpeakerAmplitude(Metric):
    """Per-speaker mouth-opening amplitude ratio, predicted / true (module docstring)."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in ("speaker", "sums"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, speakers: list[str], pred: torch.Tensor, true: torch.Tensor) -> None:
        """speakers: B names; pred, true (B, T) mouth openings (mm) of B windows."""
        if pred.shape != true.shape or pred.ndim != 2 or pred.shape[0] != len(speakers):
            raise ValueError(f"SpeakerAmplitude.update: pred and true must both be (B={len(speakers)}, T), got "
                             f"{tuple(pred.shape)} and {tuple(true.shape)}")
        pred, true = pred.double(), true.double()
        count = torch.full_like(pred[:, 0], pred.shape[1])
        self.speaker.append(torch.tensor([speaker_id(s) for s in speakers], device=pred.device))
        self.sums.append(torch.stack([count, pred.sum(1), (pred ** 2).sum(1),
                                      true.sum(1), (true ** 2).sum(1)], 1))  # (B, 5)

    def compute(self) -> dict[str, torch.Tensor]:
        speaker = torch.cat(self.speaker) if isinstance(self.speaker, list) else self.speaker
        sums = torch.cat(self.sums) if isinstance(self.sums, list) else self.sums  # (W, 5)
        ids, inverse = torch.unique(speaker, return_inverse=True)
        total = torch.zeros(len(ids), 5, dtype=sums.dtype, device=sums.device).index_add_(0, inverse, sums)  # (S, 5)
        n = total[:, 0]

        def std(s, s2):
            return (s2 / n - (s / n) ** 2).clamp(min=1e-12).sqrt()

        ratio = std(total[:, 1], total[:, 2]) / std(total[:, 3], total[:, 4])  # (S,)
        log_ratio = ratio.log()
        return {"amp_error": log_ratio.abs().mean().float(), "amp_ratio": log_ratio.mean().exp().float(),
                "speakers": torch.tensor(float(len(ids)))}
