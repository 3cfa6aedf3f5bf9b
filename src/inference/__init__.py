"""Dubbing with the two trained stages (DESIGN.md 6): ``Dubber`` / ``dub`` (pipeline.py) and one module
per step: reference_analysis (cached), audio (target audio, voice activity), timeline (ping-pong),
geometry (stage 1), render (stage 2, Algorithm 1 references), paste, writer, checkpoints, frames, batch."""
from src.inference.pipeline import DubConfig, Dubber, DubResult, dub

__all__ = ["DubConfig", "Dubber", "DubResult", "dub"]
