"""StyleAwareGeometry: the stage-1 network of PersonaTalk, style-aware geometry construction (paper 3.2,
docs/design.md, "Stage 1"). Audio and a reference clip of the speaker in, lower-face vertex offsets from the speaker's
template out, one set per video frame.

    A      = E_aud(audio)                                   (B, T, D)
    S      = FC([mean_t, std_t] E_vtx(Vtx_exp_ref))         (B, D)        StyleEncoder
    X      = StyleInjection(A, S)                           (B, T, D)     X = A in the `w/o style` ablation
                                                                           (or AudioQueryInjection)
    X      = TemplateDriving(X, E_vtx(Vtx_temp))            (B, T, D)
    X      = TemporalSelfAttention(X)                       (B, T, D)
    offset = D_vtx(X)                                       (B, T, n_lower, 3)

Every submodule is built outside and passed in (Hydra `_target_` tree). E_vtx is owned here and used twice
(style and template), so the style branch is only the pooling + FC (`StyleEncoder`). Vertices come in
relative to the face model's mean shape, in its units; the system adds the offsets to the template's lower
face and converts units (see `VertexEncoder.input_scale`).

Letters: b batch, n audio samples, t frames, r reference frames, l vertices, d width.
"""
from __future__ import annotations

import torch
from torch import nn

from src.models.geometry.attention import TemporalSelfAttention
from src.models.geometry.d_vtx import VertexDecoder
from src.models.geometry.e_aud import AudioEncoder
from src.models.geometry.e_vtx import VertexEncoder
from src.models.geometry.style import StyleEncoder
from src.models.geometry.template_driving import TemplateDriving


class StyleAwareGeometry(nn.Module):
    """Stage 1: audio `(B, N)` + reference `Vtx_exp` `(B, T_ref, L, 3)` + `Vtx_temp` `(B, L, 3)` ->
    lower-face offsets `(B, T, n_lower, 3)`.

    `style_encoder` and `style_injection` are both None for the `w/o style` ablation, else both given.
    """

    def __init__(
        self,
        e_aud: AudioEncoder,
        e_vtx: VertexEncoder,
        style_encoder: StyleEncoder | None,
        style_injection: nn.Module | None,
        template_driving: TemplateDriving,
        temporal: TemporalSelfAttention,
        d_vtx: VertexDecoder,
    ) -> None:
        super().__init__()
        if (style_encoder is None) != (style_injection is None):
            raise ValueError(
                "StyleAwareGeometry: style_encoder and style_injection must both be given, or both None "
                f"(the w/o style ablation); got {type(style_encoder).__name__} and {type(style_injection).__name__}"
            )
        parts = dict(e_aud=e_aud, e_vtx=e_vtx, style_encoder=style_encoder, style_injection=style_injection,
                     template_driving=template_driving, temporal=temporal, d_vtx=d_vtx)
        dims = {name: part.dim for name, part in parts.items() if part is not None}
        if len(set(dims.values())) != 1:
            raise ValueError(f"StyleAwareGeometry: all submodules need the same width dim, got {dims}")
        self.e_aud, self.e_vtx, self.d_vtx = e_aud, e_vtx, d_vtx
        self.style_encoder, self.style_injection = style_encoder, style_injection
        self.template_driving, self.temporal = template_driving, temporal
        self.dim, self.n_lower = e_vtx.dim, d_vtx.n_lower

    @property
    def has_style(self) -> bool:
        return self.style_encoder is not None

    def style(self, vtx_exp_ref: torch.Tensor, ref_mask: torch.Tensor | None = None) -> torch.Tensor:
        """S from a reference clip: Vtx_exp_ref (B, T_ref, L, 3), ref_mask (B, T_ref) bool, True = valid
        -> (B, D). Computed once per speaker when dubbing, then passed to forward as `style_code`."""
        if self.style_encoder is None:
            raise ValueError("StyleAwareGeometry.style: this network has no style branch (w/o style ablation)")
        if vtx_exp_ref.ndim != 4:
            raise ValueError(
                f"StyleAwareGeometry.style: vtx_exp_ref must be (B, T_ref, L, 3), got {tuple(vtx_exp_ref.shape)}"
            )
        return self.style_encoder(self.e_vtx(vtx_exp_ref), ref_mask)  # (B, T_ref, D) -> (B, D)

    def forward(
        self,
        audio: torch.Tensor,
        n_frames: int,
        vtx_exp_ref: torch.Tensor | None = None,
        vtx_temp: torch.Tensor | None = None,
        ref_mask: torch.Tensor | None = None,
        style_code: torch.Tensor | None = None,
        audio_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """audio (B, N) 16 kHz with N ~ 640 n_frames; vtx_exp_ref (B, T_ref, L, 3) or a precomputed
        style_code (B, D), exactly one (neither for w/o style; a given vtx_exp_ref is then unused);
        vtx_temp (B, L, 3); audio_features (B, T, F): a front end's precomputed features of the audio, for an E_aud
        that takes them (``e_aud_phones``) -> lower-face offsets (B, T, n_lower, 3)."""
        if vtx_temp is None:
            raise ValueError("StyleAwareGeometry: vtx_temp (B, L, 3), the identity template, is required")
        features = self.e_aud(audio, n_frames, audio_features)  # (B, T, D)
        if self.style_injection is not None:
            features = self.style_injection(features, self._style_code(vtx_exp_ref, ref_mask, style_code))  # (B, T, D)
        elif style_code is not None:
            raise ValueError("StyleAwareGeometry: style_code given, but this network has no style branch")
        features = self.template_driving(features, self.e_vtx(vtx_temp))  # template code (B, D) -> (B, T, D)
        return self.d_vtx(self.temporal(features))  # (B, T, D) -> (B, T, n_lower, 3)

    def _style_code(self, vtx_exp_ref, ref_mask, style_code) -> torch.Tensor:
        if (vtx_exp_ref is None) == (style_code is None):
            raise ValueError(
                "StyleAwareGeometry: give exactly one of vtx_exp_ref (B, T_ref, L, 3) or style_code (B, D)"
            )
        return style_code if style_code is not None else self.style(vtx_exp_ref, ref_mask)  # (B, D)
