"""Face-model loaders, all producing the neutral schema (``schema.FaceModelData``).

``load_face_model(spec)`` takes a spec string, as the configs and command lines do:

- ``procedural`` — the project's own model (the embedded default, ``procedural.py``);
- ``ict:PATH`` — ICT-FaceKit: its ``FaceXModel`` folder (OBJ files + ``vertex_indices.json``) or a
  converted ``.npz`` (``ict.py``);
- ``bfm:PATH`` — Deep3DFaceRecon's ``BFM_model_front.mat`` (``bfm.py``), user-supplied;
- ``npz:PATH`` — any model already saved in the schema.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from src.geometry.face_models.schema import PARTS, FaceModelData

KINDS = ("procedural", "ict", "bfm", "npz")


def load_face_model_data(spec: str) -> FaceModelData:
    """Spec string -> schema arrays (see the module docstring)."""
    kind, _, path = str(spec).partition(":")
    if kind not in KINDS:
        raise ValueError(f"face model spec must be one of 'procedural', 'ict:PATH', 'bfm:PATH', 'npz:PATH'; got {spec!r}")
    if kind == "procedural":
        from src.geometry.face_models.procedural import build_procedural
        return build_procedural()
    if not path:
        raise ValueError(f"face model spec {spec!r} needs a path: '{kind}:PATH'")
    if not Path(path).exists():
        raise FileNotFoundError(f"face model file or folder not found for {spec!r}: {path}")
    if kind == "ict":
        from src.geometry.face_models.ict import load_ict
        return load_ict(path)
    if kind == "bfm":
        from src.geometry.face_models.bfm import load_bfm
        return load_bfm(path)
    return FaceModelData.load(path)


def load_face_model(spec: str = "procedural"):
    """Spec string -> ``src.models.face_model.FaceModel`` (torch buffers, batched vertex construction)."""
    from src.models.face_model import FaceModel
    return FaceModel(load_face_model_data(spec))


@lru_cache(maxsize=4)
def shared_face_model(spec: str = "procedural"):
    """``load_face_model(spec)`` built once per process and shared (worker processes of data jobs); the
    module holds buffers only, so sharing is safe as long as callers do not modify them."""
    return load_face_model(spec)


__all__ = ["PARTS", "FaceModelData", "load_face_model", "load_face_model_data", "shared_face_model"]
