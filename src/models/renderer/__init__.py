"""Stage 2 of PersonaTalk, the dual-attention face renderer (DESIGN.md 5): one module per file."""
from src.models.renderer.attention import ReferenceAttention
from src.models.renderer.d_tex import TextureDecoder
from src.models.renderer.d_tex_sampled import SampledTextureDecoder
from src.models.renderer.e_geo import GeometryEncoder
from src.models.renderer.e_tex import TextureEncoder
from src.models.renderer.face_attention import FaceAttention
from src.models.renderer.lip_attention import LipAttention
from src.models.renderer.personatalk_renderer import MODES, DualAttentionRenderer

__all__ = [
    "MODES",
    "DualAttentionRenderer",
    "FaceAttention",
    "GeometryEncoder",
    "LipAttention",
    "ReferenceAttention",
    "SampledTextureDecoder",
    "TextureDecoder",
    "TextureEncoder",
]
