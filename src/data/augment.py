"""Training-time augmentation of one stage-2 item (``src.data.render_datamodule``), for small real datasets: a
few dozen people are too few to cover lighting, pose and compression, so each item is varied the ways real
video varies, while the target and its references stay one consistent example.

- ``flip``: mirror the whole item (target and every reference). A PNCC colours each vertex by its normalised
  mean-shape position, so a mirrored face has red 1 - r where the face is (the mean shape is symmetric about
  x = 0; the background stays 0); the lip mask mirrors with it.
- colour (``brightness``, ``contrast``, ``saturation``, ``hue``): one random change for the whole item, target
  and references alike (a new lighting and camera, not a mismatch the renderer should correct).
- ``shift``, ``scale``: each frame (the target, each reference) moved and zoomed on its own, its PNCC and lip
  mask with it: real crops are never perfectly aligned, so the attention must find correspondences in the
  geometry, not only at the same place.
- ``jpeg``: the references (not the target) re-encoded at a random JPEG quality with probability ``jpeg_p``: the
  inputs of a dub are compressed video; the output should still look like the truth.

Items hold images as (3, S, S) / (N, 3, S, S) float32 in [0, 1], PNCCs as (S, S, 3) / (N, S, S, 3) float32 and
the lip mask as (S, S) bool.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# YIQ, where a hue change is a rotation of the (I, Q) chroma plane
RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ).astype(np.float32)
KINDS = ("face", "lip")


@dataclass
class RenderAugment:
    flip: float = 0.5  # probability of mirroring the item
    brightness: float = 0.2  # gain drawn from [1 - b, 1 + b]
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.03  # rotation of the chroma plane, as a fraction of a turn, drawn from [-h, h]
    shift: float = 0.03  # per-frame translation, fraction of the side, drawn from [-s, s] on each axis
    scale: float = 0.04  # per-frame zoom drawn from [1 - s, 1 + s]
    jpeg_p: float = 0.5  # probability that the references are JPEG-compressed
    jpeg_quality: tuple[int, int] = (30, 90)

    def __post_init__(self) -> None:
        for name in ("flip", "jpeg_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"RenderAugment: {name} is a probability in [0, 1], got {getattr(self, name)}")
        for name in ("brightness", "contrast", "saturation", "hue", "shift", "scale"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"RenderAugment: {name} must be in [0, 1), got {getattr(self, name)}")
        lo, hi = self.jpeg_quality
        if not 1 <= lo <= hi <= 100:
            raise ValueError(f"RenderAugment: jpeg_quality must be (lo, hi) with 1 <= lo <= hi <= 100, got "
                             f"{self.jpeg_quality}")

    def __call__(self, item: dict, rng: np.random.Generator) -> dict:
        item = dict(item)
        if rng.random() < self.flip:
            item = mirrored(item)
        colour = self._colour_matrix(rng)
        item["tgt_img"], item["tgt_pncc"], item["tgt_lip_mask"] = self._warp(
            colour(item["tgt_img"]), item["tgt_pncc"], item["tgt_lip_mask"], rng)
        compress = rng.random() < self.jpeg_p
        quality = int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
        for kind in KINDS:
            images, pnccs = [], []
            for img, pncc in zip(item[f"{kind}_ref_img"], item[f"{kind}_ref_pncc"]):
                img, pncc, _ = self._warp(colour(img), pncc, None, rng)
                images.append(jpeg(img, quality) if compress else img)
                pnccs.append(pncc)
            item[f"{kind}_ref_img"], item[f"{kind}_ref_pncc"] = np.stack(images), np.stack(pnccs)
        return item

    def _colour_matrix(self, rng: np.random.Generator):
        """One colour change for the item: (3, S, S) -> (3, S, S), in [0, 1]."""
        gain = rng.uniform(1 - self.brightness, 1 + self.brightness)
        contrast = rng.uniform(1 - self.contrast, 1 + self.contrast)
        saturation = rng.uniform(1 - self.saturation, 1 + self.saturation)
        angle = 2 * np.pi * rng.uniform(-self.hue, self.hue)
        rotate = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
        chroma = np.diag([1.0, saturation, saturation])
        matrix = (YIQ_TO_RGB @ rotate @ chroma @ RGB_TO_YIQ).astype(np.float32) * np.float32(gain)  # (3, 3)

        def apply(img: np.ndarray) -> np.ndarray:
            out = np.einsum("ij,jhw->ihw", matrix, img)  # (3, S, S)
            mean = out.mean(axis=(1, 2), keepdims=True)
            return np.clip((out - mean) * np.float32(contrast) + mean, 0.0, 1.0).astype(np.float32)

        return apply

    def _warp(self, img: np.ndarray, pncc: np.ndarray, lip: np.ndarray | None, rng: np.random.Generator):
        """One frame moved and zoomed about its centre; image linear, PNCC and mask nearest."""
        size = img.shape[-1]
        zoom = rng.uniform(1 - self.scale, 1 + self.scale)
        dx, dy = rng.uniform(-self.shift, self.shift, 2) * size
        centre = (size - 1) / 2
        matrix = np.array([[zoom, 0, centre - zoom * centre + dx], [0, zoom, centre - zoom * centre + dy]], np.float32)
        warped = cv2.warpAffine(np.ascontiguousarray(img.transpose(1, 2, 0)), matrix, (size, size),
                                flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)  # (S, S, 3)
        pncc = cv2.warpAffine(pncc, matrix, (size, size), flags=cv2.INTER_NEAREST, borderValue=0)
        if lip is not None:
            lip = cv2.warpAffine(lip.astype(np.uint8), matrix, (size, size), flags=cv2.INTER_NEAREST) > 0
        return np.ascontiguousarray(warped.transpose(2, 0, 1)), pncc, lip


def mirrored(item: dict) -> dict:
    """The item mirrored left-right: images, PNCCs (red channel 1 - r on the face) and the lip mask."""
    out = dict(item)
    out["tgt_img"] = item["tgt_img"][..., ::-1].copy()
    out["tgt_pncc"] = mirror_pncc(item["tgt_pncc"])
    out["tgt_lip_mask"] = item["tgt_lip_mask"][:, ::-1].copy()
    for kind in KINDS:
        out[f"{kind}_ref_img"] = item[f"{kind}_ref_img"][..., ::-1].copy()
        out[f"{kind}_ref_pncc"] = np.stack([mirror_pncc(p) for p in item[f"{kind}_ref_pncc"]])
    return out


def mirror_pncc(pncc: np.ndarray) -> np.ndarray:
    """(S, S, 3) PNCC -> its mirror image, red (the mean shape's x) replaced by 1 - red where the face is."""
    out = pncc[:, ::-1].copy()
    face = out.any(axis=-1)
    out[..., 0] = np.where(face, 1.0 - out[..., 0], 0.0)
    return out


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """(3, S, S) float in [0, 1] through a JPEG encoder at ``quality`` and back."""
    bgr = np.ascontiguousarray((img[::-1].transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8))  # OpenCV's order
    ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("RenderAugment: the JPEG encoder failed")
    back = cv2.imdecode(buffer, cv2.IMREAD_COLOR)  # (S, S, 3) BGR
    return np.ascontiguousarray(back.transpose(2, 0, 1)[::-1]).astype(np.float32) / 255.0
