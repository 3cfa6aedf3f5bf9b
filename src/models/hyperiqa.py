"""HyperIQA: the blind image-quality model that PersonaTalk uses to filter its training videos (paper 4.1,
"Image Quality Assessment (IQA) [Su et al. 2020]"; Su et al., "Blindly Assess Image Quality in the Wild
Guided by a Self-Adaptive Hyper Network", CVPR 2020).

The architecture follows the reference implementation (SSL92/hyperIQA, ``models.py``), configured as its
demo and solver build it: ``HyperNet(16, 112, 224, 112, 56, 28, 14, 7)``.

    res        ResNet-50 backbone (torchvision layout) + local distortion aware (LDA) module: layers 1-3
               and layer 4 each give a pooled vector; concatenated they are the target net's input v (224)
    conv1      1x1 convs 2048 -> 1024 -> 512 -> 112 on the layer-4 map: the semantic feature S (112x7x7)
    fc{i}w_conv, fc{i}b_fc
               the hyper network: 3x3 convs on S generate the target FC weights, Linear on pooled S the biases
    target net v (224) -> 112 -> 56 -> 28 -> 14 -> 1, sigmoid after the first four layers, linear last;
               its weights differ per image (the reference runs it as a grouped 1x1 conv, here an einsum)

Input: ImageNet-normalised 224x224 crops. Output: the quality score, trained on KonIQ-10k MOS (0-100,
higher is better); the reference averages it over 10 random 224 crops of the image resized to 512x384
(``quality()`` here).

The published checkpoint ``koniq_pretrained.pkl`` is a plain ``state_dict`` of ``HyperNet`` (the backbone
weights inside it) and loads into this module with ``strict=True``. Its keys (checked against the
reference source, not against the file, which is not available offline):

    res.conv1.weight, res.bn1.{weight,bias,running_mean,running_var[,num_batches_tracked]},
    res.layer{1-4}.{j}.{conv1,conv2,conv3}.weight, res.layer{1-4}.{j}.{bn1,bn2,bn3}.*,
    res.layer{1-4}.0.downsample.{0.weight,1.*}          (torchvision's ResNet-50 names; no res.fc)
    res.lda1_pool.0.weight, res.lda2_pool.0.weight, res.lda3_pool.0.weight      (1x1 convs, no bias)
    res.lda{1-4}_fc.{weight,bias}
    conv1.0.{weight,bias}, conv1.2.{weight,bias}, conv1.4.{weight,bias}
    fc{1-4}w_conv.{weight,bias}, fc{1-4}b_fc.{weight,bias}, fc5w_fc.{weight,bias}, fc5b_fc.{weight,bias}

A checkpoint saved before PyTorch 0.4.1 lacks ``num_batches_tracked``; BatchNorm's own loader fills that
in, so strict loading still passes.

Letters: b batch, c channels, o/i target-layer output/input width.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet50

WEIGHTS_SOURCE = (
    "the HyperIQA repository (https://github.com/SSL92/hyperIQA, README: 'pretrained model on KonIQ-10k', "
    "koniq_pretrained.pkl)"
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP = 224
REFERENCE_RESIZE = (512, 384)  # (H, W): the reference's transforms.Resize((512, 384))


class LDABackbone(nn.Module):
    """ResNet-50 with the local distortion aware module (``res`` in the reference).

    x (B, 3, 224, 224) ImageNet-normalised -> {"hyper_in_feat": (B, 2048, 7, 7), "target_in_vec": (B, 224)}.
    Built from torchvision's ``resnet50(weights=None)``: same submodule names as the reference's own ResNet,
    so the checkpoint's backbone keys match; its ``avgpool``/``fc`` are dropped (the reference has none).
    """

    def __init__(self, lda_out_channels: int = 16, target_in_size: int = 224):
        super().__init__()
        base = resnet50(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = base.conv1, base.bn1, base.relu, base.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = base.layer1, base.layer2, base.layer3, base.layer4
        # LDA: 1x1 conv then 7x7/7 average pool on layers 1-3 (56, 28, 14 -> 8, 4, 2 cells), an FC each
        self.lda1_pool = _lda_pool(256, 16)
        self.lda1_fc = nn.Linear(16 * 64, lda_out_channels)
        self.lda2_pool = _lda_pool(512, 32)
        self.lda2_fc = nn.Linear(32 * 16, lda_out_channels)
        self.lda3_pool = _lda_pool(1024, 64)
        self.lda3_fc = nn.Linear(64 * 4, lda_out_channels)
        self.lda4_pool = nn.AvgPool2d(7, stride=7)
        self.lda4_fc = nn.Linear(2048, target_in_size - lda_out_channels * 3)
        for module in (self.lda1_pool[0], self.lda2_pool[0], self.lda3_pool[0]):
            nn.init.kaiming_normal_(module.weight)
        for module in (self.lda1_fc, self.lda2_fc, self.lda3_fc, self.lda4_fc):
            nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b = x.shape[0]
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, 56, 56)
        x = self.layer1(x)  # (B, 256, 56, 56)
        lda1 = self.lda1_fc(self.lda1_pool(x).reshape(b, -1))  # (B, 16*8*8) -> (B, 16)
        x = self.layer2(x)  # (B, 512, 28, 28)
        lda2 = self.lda2_fc(self.lda2_pool(x).reshape(b, -1))  # (B, 32*4*4) -> (B, 16)
        x = self.layer3(x)  # (B, 1024, 14, 14)
        lda3 = self.lda3_fc(self.lda3_pool(x).reshape(b, -1))  # (B, 64*2*2) -> (B, 16)
        x = self.layer4(x)  # (B, 2048, 7, 7)
        lda4 = self.lda4_fc(self.lda4_pool(x).reshape(b, -1))  # (B, 2048) -> (B, 176)
        return {"hyper_in_feat": x, "target_in_vec": torch.cat((lda1, lda2, lda3, lda4), 1)}  # vec (B, 224)


def _lda_pool(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.AvgPool2d(7, stride=7))


class HyperIQA(nn.Module):
    """HyperIQA (``HyperNet`` + ``TargetNet`` of the reference): (B, 3, 224, 224) normalised crops -> (B,)
    quality scores. ``hyper(x)`` exposes the generated target-net weights; ``forward`` runs the target net.
    """

    def __init__(
        self,
        lda_out_channels: int = 16,
        hyper_in_channels: int = 112,
        target_in_size: int = 224,
        target_fc_sizes: tuple[int, int, int, int] = (112, 56, 28, 14),
        feature_size: int = 7,
    ):
        super().__init__()
        f1, f2, f3, f4 = target_fc_sizes
        cells = feature_size**2
        for name, (n_in, n_out) in zip(
            ("fc1", "fc2", "fc3", "fc4"), ((target_in_size, f1), (f1, f2), (f2, f3), (f3, f4))
        ):
            if n_in * n_out % cells:
                raise ValueError(f"HyperIQA: {name} size {n_in}x{n_out} must be divisible by feature_size**2={cells}")
        self.target_in_size = target_in_size
        self.sizes = (target_in_size, f1, f2, f3, f4, 1)  # widths of the target net's layers
        self.feature_size = feature_size
        # attribute order matters to nothing but readability; names match the checkpoint keys
        self.res = LDABackbone(lda_out_channels, target_in_size)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.conv1 = nn.Sequential(
            nn.Conv2d(2048, 1024, 1), nn.ReLU(inplace=True),
            nn.Conv2d(1024, 512, 1), nn.ReLU(inplace=True),
            nn.Conv2d(512, hyper_in_channels, 1), nn.ReLU(inplace=True),
        )  # fmt: skip
        c = hyper_in_channels
        self.fc1w_conv = nn.Conv2d(c, target_in_size * f1 // cells, 3, padding=1)
        self.fc1b_fc = nn.Linear(c, f1)
        self.fc2w_conv = nn.Conv2d(c, f1 * f2 // cells, 3, padding=1)
        self.fc2b_fc = nn.Linear(c, f2)
        self.fc3w_conv = nn.Conv2d(c, f2 * f3 // cells, 3, padding=1)
        self.fc3b_fc = nn.Linear(c, f3)
        self.fc4w_conv = nn.Conv2d(c, f3 * f4 // cells, 3, padding=1)
        self.fc4b_fc = nn.Linear(c, f4)
        self.fc5w_fc = nn.Linear(c, f4)
        self.fc5b_fc = nn.Linear(c, 1)
        for i in range(1, 6):  # the reference initialises every hyper head's weight this way
            for kind in ("w_conv" if i < 5 else "w_fc", "b_fc"):
                nn.init.kaiming_normal_(getattr(self, f"fc{i}{kind}").weight)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def hyper(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The hyper network: crops (B, 3, 224, 224) -> target-net input ``target_in_vec`` (B, 224) and, per
        layer k = 1..5, ``target_fc{k}w`` (B, out_k, in_k) and ``target_fc{k}b`` (B, out_k)."""
        if x.ndim != 4 or x.shape[1:] != (3, CROP, CROP):
            raise ValueError(f"HyperIQA: x must be (batch, 3, {CROP}, {CROP}) normalised crops, got {tuple(x.shape)}")
        b, s = x.shape[0], self.sizes
        res_out = self.res(x)
        feat = self.conv1(res_out["hyper_in_feat"])  # (B, 112, 7, 7): S in the paper
        pooled = self.pool(feat).flatten(1)  # (B, 112)
        out = {"target_in_vec": res_out["target_in_vec"]}  # (B, 224)
        for k in range(1, 5):
            # the conv output (B, in*out/49, 7, 7) is read in memory order as (out, in), as the reference's view
            out[f"target_fc{k}w"] = getattr(self, f"fc{k}w_conv")(feat).reshape(b, s[k], s[k - 1])  # (B, o, i)
            out[f"target_fc{k}b"] = getattr(self, f"fc{k}b_fc")(pooled)  # (B, o)
        out["target_fc5w"] = self.fc5w_fc(pooled).reshape(b, 1, s[4])  # (B, 1, 14)
        out["target_fc5b"] = self.fc5b_fc(pooled)  # (B, 1)
        return out

    @staticmethod
    def target_net(paras: dict[str, torch.Tensor]) -> torch.Tensor:
        """The target network with per-image weights from ``hyper``: -> (B,) scores."""
        q = paras["target_in_vec"]  # (B, 224)
        for k in range(1, 6):
            q = torch.einsum("boi,bi->bo", paras[f"target_fc{k}w"], q) + paras[f"target_fc{k}b"]  # (B, o)
            if k < 5:
                q = torch.sigmoid(q)
        return q[:, 0]  # (B,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised crops (B, 3, 224, 224) -> quality (B,), ~0-100 with the KonIQ weights."""
        return self.target_net(self.hyper(x))

    @torch.no_grad()
    def quality(
        self,
        images: torch.Tensor,
        n_crops: int = 10,
        resize: tuple[int, int] | None = REFERENCE_RESIZE,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The reference's test protocol: images (B, 3, H, W) RGB in [0, 1] -> (B,) mean score over
        ``n_crops`` random 224 crops, after resizing to ``resize`` (H, W) (None: native resolution, which
        must then be at least 224 on each side). Pass a seeded ``generator`` for repeatable crops."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"HyperIQA.quality: images must be (batch, 3, H, W) in [0, 1], got {tuple(images.shape)}")
        if n_crops < 1:
            raise ValueError(f"HyperIQA.quality: n_crops must be >= 1, got {n_crops}")
        if resize is not None:
            images = F.interpolate(images, size=tuple(resize), mode="bilinear", antialias=True, align_corners=False)
        h, w = images.shape[-2:]
        if h < CROP or w < CROP:
            raise ValueError(f"HyperIQA.quality: images must be at least {CROP}x{CROP} (set resize), got {h}x{w}")
        images = (images - self.mean) / self.std
        tops = torch.randint(0, h - CROP + 1, (n_crops,), generator=generator).tolist()
        lefts = torch.randint(0, w - CROP + 1, (n_crops,), generator=generator).tolist()
        scores = [self(images[:, :, top : top + CROP, left : left + CROP])
                  for top, left in zip(tops, lefts)]  # n_crops x (B,)
        return torch.stack(scores, 0).mean(0)  # (B,)

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str | torch.device = "cpu") -> HyperIQA:
        """The network with the published KonIQ-10k weights (``koniq_pretrained.pkl``), in eval mode."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"HyperIQA weights not found: {path}. Download koniq_pretrained.pkl from {WEIGHTS_SOURCE} "
                "and pass its path."
            )
        state = torch.load(path, map_location=map_location, weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"HyperIQA: {path} holds a {type(state).__name__}, expected a HyperNet state_dict")
        model = cls()
        missing, unexpected = _key_mismatch(model, state)
        if missing or unexpected:
            raise ValueError(
                f"HyperIQA: {path} does not match the reference HyperNet layout: "
                f"{len(missing)} missing keys {missing[:8]}, {len(unexpected)} unexpected keys {unexpected[:8]}"
            )
        model.load_state_dict(state, strict=True)
        return model.eval()


def _key_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Missing and unexpected keys, ignoring BatchNorm's ``num_batches_tracked`` (absent from old files)."""
    expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    given = {k for k in state if not k.endswith("num_batches_tracked")}
    return sorted(expected - given), sorted(given - expected)
