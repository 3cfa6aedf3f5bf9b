"""OmegaConf resolvers the experiment configs use; registered on import (src.train and the tests import
this module before composing).

``${face_model:SPEC,WHAT}``: a size of a face model, so network widths follow the model the shards were
fitted with: WHAT is ``vertices`` (L), ``lower`` (|lower|), ``id`` (K_id) or ``exp`` (K_exp).
"""
from omegaconf import OmegaConf


def face_model_size(spec: str, what: str) -> int:
    from src.models.face_model import shared_face_model

    fm = shared_face_model(str(spec))
    sizes = {"vertices": fm.n_vertices, "lower": int(fm.lower.shape[0]), "id": fm.n_id, "exp": fm.n_exp}
    if what not in sizes:
        raise ValueError(f"${{face_model:{spec},{what}}}: WHAT must be one of {sorted(sizes)}")
    return sizes[what]


def register() -> None:
    OmegaConf.register_new_resolver("face_model", face_model_size, replace=True, use_cache=True)


register()
