"""Head pose and camera: Euler rotation and weak-perspective projection.

Pose per frame is a 6-vector ``p = (pitch, yaw, roll, tx, ty, s)``: rotation in radians about the
model's x (pitch), y (yaw) and z (roll) axes, applied as ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)``; image
translation ``(tx, ty)`` in pixels; scale ``s`` in pixels per model unit. Model space: x to the
subject's left, y up, z towards the camera. Screen space (what the rasteriser takes): x right, y down,
depth larger = closer, i.e. ``(s * X + tx, -s * Y + ty, s * Z)`` with ``(X, Y, Z) = R v``.

Weak perspective (scaled orthographic) is enough for 256x256 face crops, whose depth range is small
against the camera distance, and it keeps the fit well conditioned (no focal/depth ambiguity).

Letters: b batch, l vertices.
"""
from __future__ import annotations

import torch

POSE_DIM = 6


def euler_to_matrix(angles: torch.Tensor) -> torch.Tensor:
    """(..., 3) radians (pitch, yaw, roll) -> (..., 3, 3) rotation ``Rz @ Ry @ Rx``."""
    if angles.shape[-1] != 3:
        raise ValueError(f"angles must have a last dimension of 3 (pitch, yaw, roll), got {tuple(angles.shape)}")
    cx, cy, cz = torch.cos(angles).unbind(-1)
    sx, sy, sz = torch.sin(angles).unbind(-1)
    one, zero = torch.ones_like(cx), torch.zeros_like(cx)
    rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1)
    rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1)
    shape = angles.shape[:-1] + (3, 3)
    return rz.reshape(shape) @ ry.reshape(shape) @ rx.reshape(shape)


def rotate(verts: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    """Rotate model-space vertices ``(B, L, 3)`` by the pose's rotation -> ``(B, L, 3)``."""
    check_pose(pose, verts.shape[0])
    rot = euler_to_matrix(pose[:, :3])  # (B, 3, 3)
    return verts @ rot.transpose(1, 2)


def project(verts: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    """Model-space vertices ``(B, L, 3)`` -> screen space ``(B, L, 3)`` = (x_px, y_px, depth)."""
    rotated = rotate(verts, pose)  # (B, L, 3)
    scale = pose[:, 5, None]  # (B, 1)
    x = scale * rotated[..., 0] + pose[:, 3, None]
    y = -scale * rotated[..., 1] + pose[:, 4, None]
    return torch.stack([x, y, scale * rotated[..., 2]], -1)


def check_pose(pose: torch.Tensor, batch: int | None = None) -> None:
    if pose.ndim != 2 or pose.shape[1] != POSE_DIM:
        raise ValueError(f"pose must be (B, {POSE_DIM}) = (pitch, yaw, roll, tx, ty, scale), got {tuple(pose.shape)}")
    if batch is not None and pose.shape[0] != batch:
        raise ValueError(f"pose batch {pose.shape[0]} does not match the vertices' batch {batch}")
