"""FaceModel: the linear 3DMM M(alpha, beta, p) of PersonaTalk (paper 3.1, docs/design.md, "Face model and fitting")
as a torch module, batched over frames.

    M(alpha, beta)      = mean + B_id @ alpha + B_exp @ beta          canonical vertices (B, L, 3)
    Vtx_exp             = M(0, beta, 0)                               expression-only (style input)
    Vtx_temp            = M(alpha, 0, 0)                              identity template
    M(alpha, beta, p)   = project(M(alpha, beta), p)                  screen-space vertices

Any model in the neutral schema (``src.geometry.face_models.schema``) loads into it: the procedural
default, ICT-FaceKit, BFM. Buffers only: it has no trainable parameters.

Letters: b batch (frames), l vertices, k modes.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import nn

from src.geometry import camera
from src.geometry.face_models import load_face_model_data
from src.geometry.face_models.schema import FaceModelData


class FaceModel(nn.Module):
    """Mean, bases, topology, landmarks and regions of one linear face model, as buffers."""

    def __init__(self, data: FaceModelData):
        super().__init__()
        self.name = data.name
        self.exp_names = list(data.exp_names)
        self.units_to_mm = float(data.units_to_mm)
        self.exp_bounded = bool(data.exp_bounded)  # blendshape weights in [0, 1]; False: a PCA basis (BFM)
        self.register_buffer("mean", torch.from_numpy(data.mean))  # (L, 3)
        self.register_buffer("id_basis", torch.from_numpy(data.id_basis))  # (L, 3, K_id)
        self.register_buffer("exp_basis", torch.from_numpy(data.exp_basis))  # (L, 3, K_exp)
        self.register_buffer("triangles", torch.from_numpy(data.triangles))  # (F, 3)
        self.register_buffer("lmk68", torch.from_numpy(data.lmk68))  # (68,)
        lmk478 = data.lmk478 if data.lmk478 is not None else np.full(478, -1, np.int64)
        self.register_buffer("lmk478", torch.from_numpy(lmk478))  # (478,), -1 = none
        for key in ("lower", "upper", "lip", "mouth_pairs"):
            self.register_buffer(key, torch.from_numpy(getattr(data, key)))
        self.register_buffer("pncc_colors", pncc_colors(self.mean))  # (L, 3) in [0, 1]
        lip = torch.zeros(self.n_vertices, dtype=torch.bool)
        lip[self.lip] = True
        self.register_buffer("lip_triangles", lip[self.triangles].all(1))  # (F,) bool
        self.uv = None if data.uv is None else torch.from_numpy(np.asarray(data.uv, np.float32))
        self.part = None if data.part is None else torch.from_numpy(np.asarray(data.part, np.int64))

    @property
    def n_vertices(self) -> int:
        return self.mean.shape[0]

    @property
    def n_id(self) -> int:
        return self.id_basis.shape[2]

    @property
    def n_exp(self) -> int:
        return self.exp_basis.shape[2]

    def shape(self, alpha: torch.Tensor | None = None, beta: torch.Tensor | None = None) -> torch.Tensor:
        """M(alpha, beta) without pose: alpha (B, K_id) or None, beta (B, K_exp) or None -> (B, L, 3)."""
        batch = _batch_size(alpha, beta)
        verts = self.mean.expand(batch, -1, -1)  # (B, L, 3)
        if alpha is not None:
            verts = verts + torch.einsum("lck,bk->blc", self.id_basis, self._check(alpha, self.n_id, "alpha"))
        if beta is not None:
            verts = verts + torch.einsum("lck,bk->blc", self.exp_basis, self._check(beta, self.n_exp, "beta"))
        return verts

    def expression_vertices(self, beta: torch.Tensor) -> torch.Tensor:
        """Vtx_exp = M(0, beta, 0): (B, K_exp) -> (B, L, 3)."""
        return self.shape(None, beta)

    def template_vertices(self, alpha: torch.Tensor) -> torch.Tensor:
        """Vtx_temp = M(alpha, 0, 0): (B, K_id) -> (B, L, 3)."""
        return self.shape(alpha, None)

    def canonical_vertices(self, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """M(alpha, beta, 0): identity and expression, no pose -> (B, L, 3)."""
        return self.shape(alpha, beta)

    def posed_vertices(self, alpha: torch.Tensor, beta: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """M(alpha, beta, p): screen-space vertices (x_px, y_px, depth) -> (B, L, 3)."""
        return camera.project(self.shape(alpha, beta), pose)

    def mouth_opening(self, verts: torch.Tensor) -> torch.Tensor:
        """Inner-lip distance of canonical (B, L, 3) vertices -> (B,) in millimetres, mean over the mouth
        pairs; a pair whose lower lip is above its upper lip (lips pressed past each other) counts as 0."""
        gap = verts[:, self.mouth_pairs[:, 0]] - verts[:, self.mouth_pairs[:, 1]]  # (B, P, 3)
        return (gap.norm(dim=-1) * (gap[..., 1] > 0)).mean(-1) * self.units_to_mm

    def landmarks68(self, verts: torch.Tensor) -> torch.Tensor:
        """(B, L, C) -> (B, 68, C) iBUG-68 landmark vertices."""
        return verts[:, self.lmk68]

    def landmarks478(self, verts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, C) -> ((B, 478, C) MediaPipe landmarks, (478,) bool valid); invalid rows are zero."""
        valid = self.lmk478 >= 0
        out = verts[:, self.lmk478.clamp(min=0)] * valid[None, :, None]
        return out, valid

    @staticmethod
    def _check(coeffs: torch.Tensor, k: int, name: str) -> torch.Tensor:
        if coeffs.ndim != 2 or coeffs.shape[1] != k:
            raise ValueError(f"{name} must be (B, {k}), got {tuple(coeffs.shape)}")
        return coeffs


def pncc_colors(mean: torch.Tensor) -> torch.Tensor:
    """PNCC (Zhu et al. 2017): each vertex coloured by its mean-shape (x, y, z) normalised to [0, 1]."""
    lo, hi = mean.min(0).values, mean.max(0).values
    return ((mean - lo) / (hi - lo).clamp(min=1e-8)).float()


def _batch_size(alpha: torch.Tensor | None, beta: torch.Tensor | None) -> int:
    sizes = {t.shape[0] for t in (alpha, beta) if t is not None}
    if not sizes:
        raise ValueError("give at least one of alpha (B, K_id) or beta (B, K_exp)")
    if len(sizes) > 1:
        raise ValueError(f"alpha and beta batch sizes differ: {sorted(sizes)}")
    return sizes.pop()


def load_face_model(spec: str = "procedural") -> FaceModel:
    """Spec string (``src.geometry.face_models``: procedural, ict:PATH, bfm:PATH, npz:PATH) -> ``FaceModel``."""
    return FaceModel(load_face_model_data(spec))


@lru_cache(maxsize=4)
def shared_face_model(spec: str = "procedural") -> FaceModel:
    """``load_face_model(spec)`` built once per process and shared (worker processes of data jobs); the
    module holds buffers only, so sharing is safe as long as callers do not modify them."""
    return load_face_model(spec)
