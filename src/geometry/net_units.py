"""The units contract of the stage-1 network (docs/design.md, "Stage 1"), shared by training
(``src.systems.geometry_system``) and dubbing (``src.inference.geometry``).

The network sees and predicts vertices relative to the face model's mean shape, in centimetres (mm /
``MM_PER_NET_UNIT``), so that one set of widths and learning rates suits every face model (the procedural model
in mm, ICT-FaceKit in cm, BFM in dm):

    Vtx_exp input   = (M(0, beta, 0) - mean) * units_to_mm / 10       (..., L, 3) cm   style reference
    Vtx_temp input  = (M(alpha, 0, 0) - mean) * units_to_mm / 10      (..., L, 3) cm   identity template
    output          = lower-face displacements from the template      (..., n_lower, 3) cm; x 10 -> mm

Letters: l vertices, k modes.
"""
from __future__ import annotations

import torch

MM_PER_NET_UNIT = 10.0  # the network works in centimetres


def expression_input(fm, beta: torch.Tensor) -> torch.Tensor:
    """beta (N, K_exp) -> Vtx_exp, (N, L, 3) in network units."""
    return (fm.expression_vertices(beta) - fm.mean) * (fm.units_to_mm / MM_PER_NET_UNIT)  # (N, L, 3) cm


def template_input(fm, alpha: torch.Tensor) -> torch.Tensor:
    """alpha (N, K_id) -> Vtx_temp, (N, L, 3) in network units."""
    return (fm.template_vertices(alpha) - fm.mean) * (fm.units_to_mm / MM_PER_NET_UNIT)  # (N, L, 3) cm


def lower_face_mm(fm, beta: torch.Tensor) -> torch.Tensor:
    """beta (N, K_exp) -> the training target: lower-face expression displacements (N, n_lower, 3) in mm (the model
    is linear, so identity cancels: M(alpha, beta)[lower] - M(alpha, 0)[lower] = (Vtx_exp - mean)[lower])."""
    return (fm.expression_vertices(beta) - fm.mean)[:, fm.lower] * fm.units_to_mm  # (N, n_lower, 3) mm


def output_to_mm(offsets: torch.Tensor) -> torch.Tensor:
    """The network's lower-face offsets (..., n_lower, 3) in network units -> mm."""
    return offsets * MM_PER_NET_UNIT
