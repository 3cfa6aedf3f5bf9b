"""Face-model loaders, all producing the neutral schema (``schema.FaceModelData``).

``load_face_model_data(spec)`` takes a spec string, as the configs and command lines do (the torch module
built from it: ``src.models.face_model.load_face_model``):

- ``procedural`` — the project's own model (the embedded default, ``procedural.py``);
- ``ict:PATH`` — ICT-FaceKit: its ``FaceXModel`` folder (OBJ files + ``vertex_indices.json``) or a
  converted ``.npz`` (``ict.py``);
- ``bfm:PATH`` — Deep3DFaceRecon's ``BFM_model_front.mat`` (``bfm.py``), user-supplied;
- ``npz:PATH`` — any model already saved in the schema.
"""
from __future__ import annotations

from pathlib import Path

from src.geometry.face_models.schema import PARTS, FaceModelData

KINDS = ("procedural", "ict", "bfm", "npz")


def load_face_model_data(spec: str) -> FaceModelData:
    """Spec string -> schema arrays (see the module docstring)."""
    kind, _, path = str(spec).partition(":")
    if kind not in KINDS:
        raise ValueError(f"face model spec must be one of 'procedural', 'ict:PATH', 'bfm:PATH', 'npz:PATH'; "
                         f"got {spec!r}")
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


__all__ = ["PARTS", "FaceModelData", "load_face_model_data"]
