"""Speaking-style encoder: the evaluator behind StyleSim and Fig. 5 (paper 4.2 and 4.5, "a pretrained
speaking style encoder Phi ... we refer to [Sun et al. 2023] for the design of its model structure").

As in DiffPoseTalk's style encoder (Sun et al. 2023): a transformer encoder over a window of per-frame
motion, its outputs averaged over time into one L2-normalised style code, trained contrastively (windows
of one speaker close, of other speakers apart; ``eval.train_style_encoder``). The motion here is the
paper's expression-only geometry Vtx_exp = M(0, beta, 0) - mean (3.1) in mm, of a fixed vertex subset:

    exp (B, T, L, 3) mm -> vertices ``vertex_index`` (B, T, V, 3) -> flatten, scale -> Linear -> (B, T, d)
      + sinusoidal positions -> ``depth`` pre-norm transformer layers -> LayerNorm -> mean over real frames
      -> Linear -> (B, E), unit length

Frames beyond a sequence's length are masked (``mask`` (B, T), True on real frames), so windows of
different lengths share a batch; any length up to a few windows works (positions are computed per call).

Letters: b sequences, t frames, l vertices of the face model, v selected vertices, c xyz, d width,
e embedding width.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

DEFAULT_WEIGHTS = Path("data/models/style_encoder.ckpt")


@dataclass(frozen=True)
class StyleEncoderConfig:
    """``n_vertices``: L of the face model the encoder reads (``face_model`` names it); ``vertex_index``:
    the V vertices it looks at; ``window``: frames per training window (the unit StyleSim embeds);
    ``mm_scale``: multiplies the mm displacements (a fixed scale, not a normalisation: amplitude is style)."""

    n_vertices: int
    vertex_index: tuple[int, ...]
    face_model: str = "procedural-v2"
    window: int = 50
    dim: int = 128
    depth: int = 3
    heads: int = 4
    embed_dim: int = 64
    mm_scale: float = 0.2
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if not self.vertex_index or min(self.vertex_index) < 0 or max(self.vertex_index) >= self.n_vertices:
            raise ValueError(f"StyleEncoderConfig.vertex_index must be non-empty indices in [0, {self.n_vertices})")
        if self.dim % self.heads:
            raise ValueError(f"StyleEncoderConfig: dim ({self.dim}) must be divisible by heads ({self.heads})")

    def to_dict(self) -> dict:
        return {**asdict(self), "vertex_index": list(self.vertex_index)}

    @classmethod
    def from_dict(cls, values: dict) -> "StyleEncoderConfig":
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"StyleEncoderConfig: unknown keys {sorted(unknown)}")
        return cls(**{**values, "vertex_index": tuple(int(i) for i in values["vertex_index"])})


def sinusoid(n: int, dim: int, device=None) -> torch.Tensor:
    """(n, dim) sinusoidal positions (Vaswani et al. 2017)."""
    position = torch.arange(n, device=device, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n, dim, device=device)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table


class StyleEncoder(nn.Module):
    """Phi of paper 4.2 (module docstring): exp (B, T, L, 3) mm, mask (B, T) bool or None -> (B, E) unit
    style codes."""

    def __init__(self, config: StyleEncoderConfig):
        super().__init__()
        self.config = config
        self.register_buffer("vertex_index", torch.tensor(config.vertex_index, dtype=torch.long), persistent=False)
        self.to_tokens = nn.Linear(3 * len(config.vertex_index), config.dim)
        layer = nn.TransformerEncoderLayer(config.dim, config.heads, 4 * config.dim, config.dropout, batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, config.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.dim)
        self.to_embedding = nn.Linear(config.dim, config.embed_dim)

    def forward(self, exp: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        L = self.config.n_vertices
        if exp.ndim != 4 or exp.shape[2:] != (L, 3):
            raise ValueError(f"StyleEncoder: exp must be (B, T, {L}, 3) expression-only vertices in mm of face model "
                             f"{self.config.face_model!r}, got {tuple(exp.shape)}")
        return self.forward_selected(exp[:, :, self.vertex_index], mask)  # (B, T, V, 3)

    def forward_selected(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The same from the selected vertices only, x (B, T, V, 3) mm: what training computes (for a large
        face model the full L would be wasted)."""
        V = len(self.config.vertex_index)
        if x.ndim != 4 or x.shape[2:] != (V, 3):
            raise ValueError(f"StyleEncoder.forward_selected: x must be (B, T, {V}, 3), got {tuple(x.shape)}")
        B, T = x.shape[:2]
        if mask is None:
            mask = torch.ones(B, T, dtype=torch.bool, device=x.device)
        elif mask.shape != (B, T) or mask.dtype != torch.bool:
            raise ValueError(f"StyleEncoder: mask must be (B, T) = ({B}, {T}) bool, "
                             f"got {tuple(mask.shape)} {mask.dtype}")
        x = x * self.config.mm_scale
        tokens = self.to_tokens(rearrange(x, "b t v c -> b t (v c)"))  # (B, T, d)
        tokens = tokens + sinusoid(T, self.config.dim, x.device)
        hidden = self.norm(self.blocks(tokens, src_key_padding_mask=~mask))  # (B, T, d)
        weights = mask.float()[..., None]  # (B, T, 1)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # (B, d)
        return F.normalize(self.to_embedding(pooled), dim=-1)  # (B, E)


def load_style_encoder(path: str | Path = DEFAULT_WEIGHTS, map_location: str | torch.device = "cpu") -> StyleEncoder:
    """The style encoder of an ``eval.train_style_encoder`` checkpoint, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"style encoder checkpoint not found: {path}. StyleSim and eval.style_tsne need one trained with "
            f"`python -m eval.train_style_encoder --shards DIR --out {DEFAULT_WEIGHTS}` (or give its path)")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not (isinstance(state, dict) and state.get("kind") == "style_encoder" and "state_dict" in state):
        raise ValueError(f"{path}: not an eval.train_style_encoder checkpoint "
                         f"(no kind='style_encoder' with a state_dict)")
    net = StyleEncoder(StyleEncoderConfig.from_dict(state["config"]))
    net.load_state_dict(state["state_dict"], strict=True)
    return net.eval()
