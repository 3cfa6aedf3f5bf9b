"""Errors of a fitted expression track against the truth (synthetic clips, whose generator knows it): the
figures the shard builder reports per clip and the tests hold the fit to.
"""
from __future__ import annotations

import numpy as np
import torch


def vertex_error_mm(fm, beta_fit, beta_true, region: str = "lower") -> float:
    """Mean L2 distance in mm between expression-only vertices M(0, beta, 0) of two (T, K_exp) tracks,
    over the ``lower`` face vertices or ``all``."""
    diff = _expression_diff(fm, beta_fit, beta_true, region)  # (T, L', 3)
    return float(diff.norm(dim=-1).mean()) * fm.units_to_mm


def expression_jitter_mm(fm, beta_fit, beta_true, region: str = "lower") -> float:
    """Frame-to-frame jitter: mean L2 (mm) of the difference between fitted and true expression-vertex
    velocities, (v_t+1 - v_t)_fit - (v_t+1 - v_t)_true, over the region's vertices."""
    diff = _expression_diff(fm, beta_fit, beta_true, region)
    return float((diff[1:] - diff[:-1]).norm(dim=-1).mean()) * fm.units_to_mm


def eye_distance_mm(fm) -> float:
    """Distance between the eye centres (iBUG-68 landmarks 36-41 and 42-47) of the mean face, in mm."""
    lmk = fm.mean[fm.lmk68]
    return float((lmk[36:42].mean(0) - lmk[42:48].mean(0)).norm()) * fm.units_to_mm


def _expression_diff(fm, beta_fit, beta_true, region: str) -> torch.Tensor:
    if region not in ("lower", "all"):
        raise ValueError(f"region must be 'lower' or 'all', got {region!r}")
    fit, true = (torch.as_tensor(np.asarray(b), dtype=torch.float32) for b in (beta_fit, beta_true))
    if fit.shape != true.shape:
        raise ValueError(f"beta_fit {tuple(fit.shape)} and beta_true {tuple(true.shape)} differ in shape")
    diff = fm.exp_basis.float() @ (fit - true).T  # (L, 3, T): the model is linear in beta
    diff = diff.permute(2, 0, 1)  # (T, L, 3)
    return diff[:, fm.lower] if region == "lower" else diff
