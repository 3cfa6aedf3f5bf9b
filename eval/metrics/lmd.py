"""LMD (paper 4.2, lip sync; Guan et al. 2023): landmark distance around the lips, generated vs ground truth.

Landmarks: MediaPipe FaceMesh (478, refined lips) on the 256x256 crops of each video, with the project's
tracker (``src.tracking.tracker.FaceTracker``, its default ``TrackConfig``), run separately over the generated
and the ground-truth crop sequence (``CropLandmarker``). The lip points are the 40 vertices of
MediaPipe's ``FACEMESH_LIPS`` contours (outer and inner lip lines).

Definition, per frame t with a face in both crops:
    LMD_t = mean_i || p_gen[t, i] - p_gt[t, i] || / IOD_t,   i over the 40 lip points,
    IOD_t = || p_gt[t, 33] - p_gt[t, 263] ||  (the ground truth's outer eye corners, crop pixels),
and LMD is the mean of LMD_t over frames: a fraction of the inter-ocular distance (0.05 = 5% of IOD).
Both crops share the ground truth's crop box, so no further alignment is applied: a shifted mouth counts.
Frames where the ground-truth crop has no face are skipped; frames where only the generated crop has
none are skipped too and counted (``missing_gen`` in ``compute_details``), so a broken generation shows.
0 for identical landmarks; lower is better.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from torchmetrics import Metric

IOD_INDICES = (33, 263)  # outer eye corners (subject's right, left)


@functools.lru_cache(maxsize=1)
def lip_indices() -> tuple[int, ...]:
    """The 40 MediaPipe-478 indices of ``FACEMESH_LIPS`` (needs the mediapipe package)."""
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_LIPS

    return tuple(sorted({i for edge in FACEMESH_LIPS for i in edge}))


class CropLandmarker:
    """MediaPipe landmarks over one crop sequence, in order: ``update((B, H, W, 3) uint8 RGB) -> (B, 478, 2)``
    crop pixels, NaN where no face. Call ``close()`` at the end (or use as a context manager)."""

    def __init__(self) -> None:
        from src.tracking.tracker import FaceTracker, TrackConfig

        self.tracker = FaceTracker(TrackConfig())

    def update(self, crops: np.ndarray) -> np.ndarray:
        crops = np.asarray(crops)
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[-1] != 3:
            raise ValueError(f"CropLandmarker.update: crops must be uint8 (B, H, W, 3) RGB, "
                             f"got {crops.shape} {crops.dtype}")
        rows = []
        for image in crops:
            lmk = self.tracker.update(np.ascontiguousarray(image))
            rows.append(np.full((478, 2), np.nan, np.float32) if lmk is None else lmk[:478].astype(np.float32))
        return np.stack(rows)  # (B, 478, 2)

    def close(self) -> None:
        self.tracker.close()

    def __enter__(self) -> "CropLandmarker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LMD(Metric):
    """Lip landmark distance normalised by the ground truth's inter-ocular distance (module docstring).
    ``update(gen_lmk, gt_lmk)``: (B, 478, 2) crop pixels (tensor or ndarray), NaN rows where no face."""

    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("missing_gen", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("missing_gt", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, gen_lmk, gt_lmk) -> None:
        gen, gt = (torch.as_tensor(np.asarray(x), dtype=torch.float64) for x in (gen_lmk, gt_lmk))
        if gen.ndim != 3 or gen.shape[1:] != (478, 2) or gen.shape != gt.shape:
            raise ValueError(f"LMD.update: gen_lmk and gt_lmk must both be (B, 478, 2), got {tuple(gen.shape)}, "
                             f"{tuple(gt.shape)}")
        has_gt = torch.isfinite(gt).all(-1).all(-1)  # (B,)
        has_gen = torch.isfinite(gen).all(-1).all(-1)
        both = has_gt & has_gen
        lips = list(lip_indices())
        iod = (gt[:, IOD_INDICES[0]] - gt[:, IOD_INDICES[1]]).norm(dim=-1)  # (B,)
        per_frame = (gen[:, lips] - gt[:, lips]).norm(dim=-1).mean(-1) / iod  # (B,)
        self.total += per_frame[both].sum()
        self.count += int(both.sum())
        self.missing_gt += int((~has_gt).sum())
        self.missing_gen += int((has_gt & ~has_gen).sum())

    def compute(self) -> torch.Tensor:
        if self.count == 0:
            raise RuntimeError(f"LMD.compute: no frame with a face in both crops (gt missing {int(self.missing_gt)}, "
                               f"generated missing {int(self.missing_gen)})")
        return (self.total / self.count).float()

    def compute_details(self) -> dict:
        """The score and its frame counts: {"lmd", "frames", "missing_gen", "missing_gt"}; "lmd" is NaN when no
        frame had a face in both crops (a benchmark row records that instead of stopping)."""
        lmd = float(self.compute()) if self.count > 0 else float("nan")
        return {"lmd": lmd, "frames": int(self.count), "missing_gen": int(self.missing_gen),
                "missing_gt": int(self.missing_gt)}
