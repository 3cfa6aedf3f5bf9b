"""Stage 1 of PersonaTalk, style-aware geometry construction (docs/design.md, "Stage 1"): one module per file."""
from src.models.geometry.attention import CrossAttentionBlock, SinusoidalPosition, TemporalSelfAttention
from src.models.geometry.audio_query_injection import AudioQueryInjection
from src.models.geometry.d_vtx import VertexDecoder
from src.models.geometry.e_aud import AudioEncoder
from src.models.geometry.e_vtx import VertexEncoder
from src.models.geometry.personatalk_geometry import StyleAwareGeometry
from src.models.geometry.style import StyleEncoder
from src.models.geometry.style_injection import StyleInjection
from src.models.geometry.template_driving import TemplateDriving

__all__ = [
    "AudioEncoder",
    "AudioQueryInjection",
    "CrossAttentionBlock",
    "SinusoidalPosition",
    "StyleAwareGeometry",
    "StyleEncoder",
    "StyleInjection",
    "TemplateDriving",
    "TemporalSelfAttention",
    "VertexDecoder",
    "VertexEncoder",
]
