"""Renders the frames of one synthetic clip: background, head and shoulders, and the textured, lit face.

Per clip: a background (gradient with soft shapes, and shoulders in the speaker's shirt colour), a light
whose direction drifts slowly, and the speaker's texture. Per frame: the face model posed by the clip's
pose and coefficients, drawn by the project's rasteriser (``src.geometry.render``) over the head mesh.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from data_prep.synthetic.appearance import head_mesh, paint_texture, vertex_colours
from data_prep.synthetic.persona import Persona
from src.geometry import camera
from src.geometry.render import Light, render_shaded


class ClipRenderer:
    """Frames of one clip: ``render(t)`` -> (H, W, 3) uint8, for precomputed screen vertices."""

    def __init__(self, face_model, persona: Persona, size: int, rng: np.random.Generator,
                 albedo: np.ndarray | None = None):
        """``albedo``: (L, 3) vertex colours the model file carries (a BFM's meantex), used when the model has
        no texture coordinates; else colours from the persona (``vertex_colours``)."""
        self.fm, self.size = face_model, size
        self.tris = face_model.triangles.numpy().astype(np.int32)
        if face_model.uv is not None:
            self.albedo, self.uv = paint_texture(face_model.uv.numpy(), persona.appearance), face_model.uv.numpy()
        else:
            self.albedo = vertex_colours(face_model, persona.appearance) if albedo is None else albedo
            self.uv = None
        # the skull/neck mesh is designed around the procedural face (mm, eye line at y = 0)
        self.head = head_mesh(persona.appearance) if face_model.name.startswith("procedural") else None
        self.background = _background(size, persona.appearance.shirt, rng)
        self.light_dir = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.7, -0.1), 1.0])
        self.light_drift = rng.uniform(0.05, 0.2)
        self.light_level = rng.uniform(0.65, 0.85)
        self.ambient = rng.uniform(0.3, 0.42)

    def light(self, t: int) -> Light:
        wobble = self.light_drift * np.array([np.sin(0.05 * t), 0.5 * np.cos(0.031 * t), 0.0])
        return Light(direction=tuple(self.light_dir + wobble), color=(self.light_level,) * 3,
                     ambient=(self.ambient,) * 3, shininess=24.0)

    def render(self, face_screen: np.ndarray, head_screen: np.ndarray | None, t: int) -> np.ndarray:
        """face_screen (L, 3) and head_screen (V_h, 3) screen vertices of frame t -> (H, W, 3) uint8."""
        light = self.light(t)
        image = self.background.copy()
        if head_screen is not None:
            rgb, mask = render_shaded(head_screen, self.head[1], None, self.head[2], self.size, self.size, light,
                                      specular=0.05)
            image[mask] = rgb[mask]
        rgb, mask = render_shaded(face_screen, self.tris, None, self.albedo, self.size, self.size, light,
                                  uvs=self.uv, specular=0.12)
        image[mask] = rgb[mask]
        return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)

    def head_vertices(self, pose: torch.Tensor) -> np.ndarray | None:
        """(T, 6) poses -> (T, V_h, 3) screen vertices of the head mesh, or None without one."""
        if self.head is None:
            return None
        verts = torch.from_numpy(self.head[0] / self.fm.units_to_mm).expand(len(pose), -1, -1)
        return camera.project(verts, pose).numpy()


def _background(size: int, shirt, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float32: a vertical gradient, a few blurred shapes, and shoulders at the bottom."""
    top, bottom = rng.uniform(0.2, 0.9, 3), rng.uniform(0.1, 0.7, 3)
    ramp = np.linspace(0, 1, size)[:, None, None]
    image = Image.fromarray(((top * (1 - ramp) + bottom * ramp) * np.ones((1, size, 1)) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):
        x, y, w, h = rng.uniform(0, size, 4) * np.array([1, 1, 0.5, 0.5])
        colour = tuple(int(c) for c in rng.uniform(40, 230, 3))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)([x, y, x + w, y + h], fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(size / 60))
    draw = ImageDraw.Draw(image)
    shoulder = tuple(int(255 * c) for c in shirt)
    draw.ellipse([0.0, 0.8 * size, size, 1.45 * size], fill=shoulder)
    return np.asarray(image, np.float32) / 255.0
