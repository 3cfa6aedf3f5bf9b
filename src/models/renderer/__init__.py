"""Stage 2 of PersonaTalk, the dual-attention face renderer (docs/design.md, "Stage 2"): one module per file."""
from src.models.renderer.attention import ReferenceAttention
from src.models.renderer.d_tex import TextureDecoder
from src.models.renderer.d_tex_sampled import SampledTextureDecoder
from src.models.renderer.dual_fusion import DualAttentionFusion
from src.models.renderer.e_geo import GeometryEncoder
from src.models.renderer.e_tex import TextureEncoder
from src.models.renderer.face_attention import FaceAttention
from src.models.renderer.face_attention_only import FaceAttentionOnly
from src.models.renderer.lip_attention import LipAttention
from src.models.renderer.lip_attention_only import LipAttentionOnly
from src.models.renderer.personatalk_renderer import DualAttentionRenderer
from src.models.renderer.single_attention import SingleAttention

__all__ = [
    "DualAttentionFusion",
    "DualAttentionRenderer",
    "FaceAttention",
    "FaceAttentionOnly",
    "GeometryEncoder",
    "LipAttention",
    "LipAttentionOnly",
    "ReferenceAttention",
    "SampledTextureDecoder",
    "SingleAttention",
    "TextureDecoder",
    "TextureEncoder",
]
