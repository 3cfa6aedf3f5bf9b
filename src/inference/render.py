"""Stage 2 at dubbing time (docs/design.md, "Stage 2" and "Dubbing"): the dual-attention renderer on the target
geometry, with references chosen by Algorithm 1's inference strategy (``src.data.reference_selection``).

- face references: the ``n_face`` frames centred on the reference frame shown (inside its face segment);
- lip references: the same ``n_lip`` frames for every output frame, spread over the reference's frames
  sorted by mouth opening (chosen and cropped by ``reference_analysis``).

Images are prepared as in training (``src.data.render_datamodule``): 256 x 256 crops resized to the
renderer's size with area averaging, RGB in [0, 1]; PNCCs from the fitted coefficients at that size.
``ReferenceBank`` holds the lip references for the whole dub and the face references of one chunk.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from src.data.reference_selection import inference_face_references
from src.geometry.pncc import render_vertices
from src.inference.geometry import reference_vertices
from src.media.contract import CROP_SIZE
from src.tracking.crops import crop_frame


@dataclass(frozen=True)
class RenderConfig:
    batch: int = 8  # frames per renderer call
    n_face: int = 5  # Algorithm 1's N_f at inference

    def __post_init__(self) -> None:
        if self.batch < 1 or self.n_face < 1:
            raise ValueError(f"RenderConfig: batch and n_face must be >= 1, got {self.batch}, {self.n_face}")


def to_chw(images: np.ndarray) -> torch.Tensor:
    """(n, S, S, 3) uint8 or float in [0, 1] -> (n, 3, S, S) float32 in [0, 1]."""
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float() / scale


def resize_crop(crop: np.ndarray, size: int) -> np.ndarray:
    """A 256 crop at the renderer's size, as the training data module resizes it."""
    return crop if crop.shape[0] == size else cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


class ReferenceBank:
    """Reference frames and PNCCs at the renderer's ``size``: lip references for the whole dub, face
    references for the current chunk (``prepare``)."""

    def __init__(self, fm, analysis, size: int, cfg: RenderConfig):
        self.fm, self.analysis, self.size, self.cfg = fm, analysis, size, cfg
        lip = analysis.lip_refs
        self.lip_img = to_chw(np.stack([resize_crop(c, size) for c in analysis.lip_crops]))  # (N_l, 3, S, S)
        self.lip_pncc = to_chw(self._pncc(lip))  # (N_l, 3, S, S)
        self.face: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # frame -> (img, pncc) (3, S, S) each

    def face_references(self, frame: int) -> np.ndarray:
        """Algorithm 1: the n_face frames centred on ``frame``, inside its face segment."""
        start, end = self.analysis.face_segment(frame)
        return start + inference_face_references(frame - start, end - start, self.cfg.n_face)

    def prepare(self, images: dict[int, np.ndarray]) -> None:
        """Crops and PNCCs of the given full frames (frame -> (H, W, 3) uint8); drops the previous chunk's."""
        frames = np.array(sorted(images), np.int64)
        crops = np.stack([resize_crop(crop_frame(images[j], self.analysis.boxes[j], CROP_SIZE)[0], self.size)
                          for j in frames])  # (n, S, S, 3)
        imgs, pnccs = to_chw(crops), to_chw(self._pncc(frames))
        self.face = {int(j): (imgs[k], pnccs[k]) for k, j in enumerate(frames)}

    def _pncc(self, frames: np.ndarray) -> np.ndarray:
        return render_vertices(self.fm, reference_vertices(self.fm, self.analysis, frames), self.size)[0]

    def face_batch(self, refs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per target frame its face references -> (img, pncc) each (B, N_f, 3, S, S)."""
        img = torch.stack([torch.stack([self.face[int(j)][0] for j in r]) for r in refs])  # (B, N_f, 3, S, S)
        pncc = torch.stack([torch.stack([self.face[int(j)][1] for j in r]) for r in refs])  # (B, N_f, 3, S, S)
        return img, pncc


@torch.no_grad()
def render_faces(net, tgt_pncc: np.ndarray, tgt_lip: np.ndarray, face_refs: list[np.ndarray], bank: ReferenceBank,
                 batch: int, device: str) -> np.ndarray:
    """Target PNCCs (b, S, S, 3) float and lip masks (b, S, S) bool, each frame's face references -> faces
    (b, S, S, 3) uint8, ``batch`` frames per renderer call."""
    out = []
    for i in range(0, len(tgt_pncc), batch):
        b = len(tgt_pncc[i:i + batch])
        pncc = to_chw(tgt_pncc[i:i + batch]).to(device)  # (B, 3, S, S)
        lip_mask = torch.from_numpy(tgt_lip[i:i + batch])[:, None].float().to(device)  # (B, 1, S, S)
        face = [None, None]
        if net.uses_face_refs:
            face = [x.to(device) for x in bank.face_batch(face_refs[i:i + batch])]
        lip = [None, None]
        if net.uses_lip_refs:
            lip = [x[None].expand(b, *x.shape).to(device) for x in (bank.lip_img, bank.lip_pncc)]  # (B, N_l, 3, S, S)
        image = net(pncc, lip_mask, face[0], face[1], lip[0], lip[1])  # (B, 3, S, S)
        out.append((image.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy())  # (B, S, S, 3)
    return np.concatenate(out)
