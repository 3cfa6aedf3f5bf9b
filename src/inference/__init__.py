"""Dubbing with the two trained stages (docs/design.md, "Dubbing"): ``Dubber`` / ``dub`` (pipeline.py) and one module
per step: reference_analysis (cached), audio (target audio, voice activity), timeline (ping-pong),
geometry (stage 1), render (stage 2, Algorithm 1 references), paste, writer, checkpoints, batch
(frame access: ``src.media.frames``)."""
from src.inference.pipeline import Dubber, DubConfig, DubResult, dub

__all__ = ["DubConfig", "Dubber", "DubResult", "dub"]
