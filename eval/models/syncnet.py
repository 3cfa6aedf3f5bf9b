"""SyncNet (Chung and Zisserman 2016): the lip-sync expert behind SyncScore (LSE-C) and LSE-D (paper 4.2,
docs/design.md, "Evaluation").

Two towers map 5 video frames of a face and the 0.2 s of MFCCs under them to embeddings whose L2 distance
is small when sound and lips are in sync:

    lip   (B, 3, 5, H, W) pixels -> netcnnlip (3-D convs, the first folds time) -> (B, C, 1, 1, 1) -> netfclip -> (B, D)
    audio (B, 1, 13, 20) MFCCs   -> netcnnaud (2-D convs)                    -> (B, C, 1, 1)    -> netfcaud -> (B, D)

The layer structure, the order of layers inside each ``nn.Sequential`` and so every state-dict key follow
the reference implementation (joonson/syncnet_python, ``SyncNetModel.S``), so its published
``syncnet_v2.model`` loads with strict=True into ``SyncNet(SYNCNET_V2)``. ``SYNCNET_SMALL`` is our own
variant (narrower channels, 96x96 crops of the lower face) for a SyncNet trained on synthetic shards by
``python -m eval.train_syncnet``; the same layers, only widths and the last conv's kernel (which spans the
whole remaining map) change.

A ``SyncNetConfig`` also says what input the network expects (``crop_region``, ``image_size``,
``channel_order``, ``pixel_scale``, ``pad_value``): ``eval.metrics.sync.lip_input`` turns the benchmark's
256x256 RGB face crops into it, so a checkpoint always carries its own preprocessing.

Letters: b windows, c channels, t frames (5), h w pixels, m MFCC coefficients (13), k MFCC columns (20),
d embedding width.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

DEFAULT_WEIGHTS = Path("data/models/syncnet_v2.model")


@dataclass(frozen=True)
class SyncNetConfig:
    """Widths of both towers and the input the network expects.

    ``crop_region``: (x0, y0, x1, y1), fractions of the face crop given to the metric (data_prep's crops:
    the landmark box centred, side 1.6 x its extent), cut out (padded with ``pad_value`` outside the crop)
    and resized to ``image_size`` (H, W). ``channel_order``: "bgr" for the reference (it reads frames with
    OpenCV), "rgb" for ours. ``pixel_scale``: multiplies uint8 pixel values (1.0: the reference feeds raw
    0-255)."""

    lip_channels: tuple[int, ...] = (96, 256, 256, 256, 256, 512)
    aud_channels: tuple[int, ...] = (64, 192, 384, 256, 256, 512)
    hidden: int = 512
    embed_dim: int = 1024
    image_size: tuple[int, int] = (224, 224)
    # the reference's crop around an S3FD box of half-size s centred at (x, y): x +- 1.4 s, y - s .. y + 1.8 s
    # (crop_scale 0.4), with a face box ~ the landmark box: in a data_prep crop (s = 256 / 3.2 = 80 px)
    # x 16..240, y 48..272 px, the bottom 16 px below the crop filled with the reference's padding value
    crop_region: tuple[float, float, float, float] = (0.0625, 0.1875, 0.9375, 1.0625)
    pad_value: int = 110
    channel_order: str = "bgr"
    pixel_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("lip_channels", "aud_channels"):
            if len(getattr(self, name)) != 6:
                raise ValueError(f"SyncNetConfig.{name} must have 6 widths (one per conv layer), "
                                 f"got {getattr(self, name)}")
        x0, y0, x1, y1 = self.crop_region
        if not (x1 > x0 and y1 > y0):
            raise ValueError(f"SyncNetConfig.crop_region must be (x0, y0, x1, y1) with x1 > x0, y1 > y0, "
                             f"got {self.crop_region}")
        if self.channel_order not in ("rgb", "bgr"):
            raise ValueError(f"SyncNetConfig.channel_order must be 'rgb' or 'bgr', got {self.channel_order!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "SyncNetConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"SyncNetConfig: unknown keys {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


SYNCNET_V2 = SyncNetConfig()
SYNCNET_SMALL = SyncNetConfig(
    lip_channels=(16, 32, 64, 64, 64, 128), aud_channels=(16, 32, 64, 64, 64, 128), hidden=128, embed_dim=128,
    image_size=(96, 96),
    # the lower face of a data_prep crop: nose tip to below the chin, cheek to cheek (160 x 128 px)
    crop_region=(0.1875, 0.4375, 0.8125, 0.9375), pad_value=110, channel_order="rgb", pixel_scale=1.0 / 255.0,
)


def _lip_map_size(image_size: tuple[int, int]) -> tuple[int, int]:
    """Spatial size of the lip tower's map before its last conv (which then spans it)."""

    def conv(n: int, k: int, s: int, p: int) -> int:
        return (n + 2 * p - k) // s + 1

    out = []
    for n in image_size:
        n = conv(n, 7, 2, 0)  # conv 1
        n = conv(n, 3, 2, 0)  # pool 1
        n = conv(n, 5, 2, 1)  # conv 2
        n = conv(n, 3, 2, 1)  # pool 2 (convs 3-5 keep the size)
        n = conv(n, 3, 2, 0)  # pool 3
        if n < 1:
            raise ValueError(f"SyncNet: image_size {image_size} is too small for the lip tower (needs >= 67 px)")
        out.append(n)
    return out[0], out[1]


def _head(width: int, hidden: int, embed_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, embed_dim))


class SyncNet(nn.Module):
    """SyncNet's two towers (module docstring). ``forward_lip``: (B, 3, 5, H, W) -> (B, D); ``forward_aud``:
    (B, 1, 13, 20) -> (B, D); ``forward`` returns both. Embeddings are not normalised: SyncScore compares
    L2 distances, as the reference does."""

    def __init__(self, config: SyncNetConfig = SYNCNET_V2):
        super().__init__()
        self.config = config
        a1, a2, a3, a4, a5, a6 = config.aud_channels
        self.netcnnaud = nn.Sequential(  # (B, 1, 13, 20)
            nn.Conv2d(1, a1, 3, padding=1), nn.BatchNorm2d(a1), nn.ReLU(inplace=True),
            nn.MaxPool2d(1, 1),  # an identity; kept because it holds an index of the reference's Sequential
            nn.Conv2d(a1, a2, 3, padding=1), nn.BatchNorm2d(a2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=(1, 2)),  # -> (B, a2, 11, 9)
            nn.Conv2d(a2, a3, 3, padding=1), nn.BatchNorm2d(a3), nn.ReLU(inplace=True),
            nn.Conv2d(a3, a4, 3, padding=1), nn.BatchNorm2d(a4), nn.ReLU(inplace=True),
            nn.Conv2d(a4, a5, 3, padding=1), nn.BatchNorm2d(a5), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2),  # -> (B, a5, 5, 4)
            nn.Conv2d(a5, a6, (5, 4)), nn.BatchNorm2d(a6), nn.ReLU(),  # -> (B, a6, 1, 1)
        )
        self.netfcaud = _head(a6, config.hidden, config.embed_dim)

        l1, l2, l3, l4, l5, l6 = config.lip_channels
        map_h, map_w = _lip_map_size(config.image_size)  # (6, 6) at 224 x 224
        self.netcnnlip = nn.Sequential(  # (B, 3, 5, H, W)
            nn.Conv3d(3, l1, (5, 7, 7), stride=(1, 2, 2)), nn.BatchNorm3d(l1), nn.ReLU(inplace=True),  # time 5 -> 1
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),
            nn.Conv3d(l1, l2, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.BatchNorm3d(l2), nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.Conv3d(l2, l3, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(l3), nn.ReLU(inplace=True),
            nn.Conv3d(l3, l4, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(l4), nn.ReLU(inplace=True),
            nn.Conv3d(l4, l5, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(l5), nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),  # -> (B, l5, 1, map_h, map_w)
            nn.Conv3d(l5, l6, (1, map_h, map_w)), nn.BatchNorm3d(l6), nn.ReLU(inplace=True),  # -> (B, l6, 1, 1, 1)
        )
        self.netfclip = _head(l6, config.hidden, config.embed_dim)

    def forward_lip(self, lip: torch.Tensor) -> torch.Tensor:
        h, w = self.config.image_size
        if lip.ndim != 5 or tuple(lip.shape[1:]) != (3, 5, h, w):
            raise ValueError(f"SyncNet.forward_lip: expected (B, 3, 5, {h}, {w}) pixels, got {tuple(lip.shape)}")
        return self.netfclip(self.netcnnlip(lip).flatten(1))  # (B, l6, 1, 1, 1) -> (B, l6) -> (B, D)

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        if mfcc.ndim != 4 or tuple(mfcc.shape[1:]) != (1, 13, 20):
            raise ValueError(f"SyncNet.forward_aud: expected (B, 1, 13, 20) MFCC windows, got {tuple(mfcc.shape)}")
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))  # (B, a6, 1, 1) -> (B, a6) -> (B, D)

    def forward(self, lip: torch.Tensor, mfcc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_lip(lip), self.forward_aud(mfcc)


def load_syncnet(path: str | Path = DEFAULT_WEIGHTS, map_location: str | torch.device = "cpu") -> SyncNet:
    """A SyncNet in eval mode from ``path``: the reference's published ``syncnet_v2.model`` (a bare state
    dict, loaded into ``SyncNet(SYNCNET_V2)`` with strict=True) or a checkpoint of ``eval.train_syncnet``
    (``{"config": ..., "state_dict": ...}``). A state dict saved before PyTorch 0.4.1 lacks BatchNorm's
    ``num_batches_tracked`` counters; BatchNorm's own loader fills those for unversioned state dicts (they
    are unused in eval mode), every other key must match."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"SyncNet weights not found: {path}. SyncScore needs either the reference's published syncnet_v2.model "
            f"(joonson/syncnet_python, fetched by its download_model.sh) placed at {DEFAULT_WEIGHTS} or given by "
            f"path, or a SyncNet of our own trained with `python -m eval.train_syncnet --shards DIR --out CKPT`")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and "config" in state:
        config, weights = SyncNetConfig.from_dict(state["config"]), state["state_dict"]
    elif isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
        config, weights = SYNCNET_V2, state
    else:
        raise ValueError(f"{path}: not a SyncNet state dict (syncnet_v2.model) nor an eval.train_syncnet checkpoint "
                         f"(got {type(state).__name__} "
                         f"with keys {list(state)[:5] if isinstance(state, dict) else '-'})")
    net = SyncNet(config)
    try:
        net.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise RuntimeError(f"{path}: the weights do not fit SyncNet({config}): {err}") from err
    return net.eval()
