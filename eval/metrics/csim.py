"""CSIM (paper 4.2, persona preservation): cosine similarity of face-recognition embeddings of each
generated frame and its ground-truth frame, averaged over frames. 1 for identical frames; higher is better.

Three embedders, all (B, 3, H, W) face crops in [0, 1] (+ five points) -> (B, D) embeddings:

* ``FacenetEmbedder``: facenet-pytorch ``InceptionResnetV1`` trained on VGGFace2, weights from the
  user's ``20180402-114759-vggface2.pt``. Input: the centre of the crop (``face_fraction`` of its side,
  about the landmark box plus 10% margin, as MTCNN boxes are), resized to 160x160, standardised
  ``(x * 255 - 127.5) / 128``. No point alignment (the network was trained on unaligned MTCNN boxes).
* ``ArcFaceEmbedder``: an ArcFace ONNX model (paper: ArcFace; e.g. insightface's ``w600k_r50.onnx``) run
  by onnxruntime. Input: the standard ArcFace alignment, a similarity transform of five points (eye
  centres, nose tip, mouth corners, from the ground truth's MediaPipe landmarks, the same transform for
  both frames of a pair) onto the 112x112 template, then ``(x * 255 - 127.5) / 127.5``, NCHW RGB.

* ``DlibEmbedder``: dlib's ResNet face embedding (``dlib_face_recognition_resnet_model_v1.dat``, 128-d), which
  installs from PyPI with its weights (``dlib-bin`` and ``face-recognition-models``), so CSIM is computed out of
  the box: "CSIM (dlib ResNet)". Input: dlib's own alignment, its 5-point shape predictor run inside a face box
  derived from the five points above (so both frames of a pair get the same box), then the 150x150 chip that
  ``compute_face_descriptor`` cuts.

``CSIM(embedder).update(gen, gt, points=None)``: float (B, 3, H, W) in [0, 1]; ``points`` (B, 5, 2) crop
pixels, required when ``embedder.needs_points`` (``five_points(landmarks478)`` makes them).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric

from eval.metrics.image import check_frames

# The standard ArcFace 112x112 alignment template: eye centres (image left, right), nose tip, mouth
# corners (image left, right), in output pixels.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)
# MediaPipe-478 indices of those five points: each eye centre as the mean of its two corners
# (subject's right eye = image left: 33/133; left eye: 362/263), nose tip 1, mouth corners 61 / 291
FIVE_POINT_GROUPS = ((33, 133), (362, 263), (1,), (61,), (291,))


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """(..., 478, 2) MediaPipe landmarks -> (..., 5, 2) ArcFace points (eyes, nose tip, mouth corners)."""
    return np.stack([landmarks[..., list(g), :].mean(-2) for g in FIVE_POINT_GROUPS], -2).astype(np.float32)


class FacenetEmbedder(nn.Module):
    """InceptionResnetV1 (VGGFace2) on the crop's centre (module docstring) -> (B, 512) unit embeddings."""

    needs_points = False
    variant = "facenet-vggface2 (InceptionResnetV1, 160 px centre crop)"

    def __init__(self, net: nn.Module, face_fraction: float = 0.7) -> None:
        super().__init__()
        if not 0 < face_fraction <= 1:
            raise ValueError(f"FacenetEmbedder: face_fraction must be in (0, 1], got {face_fraction}")
        self.net = net.eval().requires_grad_(False)
        self.face_fraction = face_fraction

    def forward(self, x: torch.Tensor, points: torch.Tensor | None = None) -> torch.Tensor:
        h, w = x.shape[-2:]
        side = int(round(min(h, w) * self.face_fraction))
        top, left = (h - side) // 2, (w - side) // 2
        face = x[..., top:top + side, left:left + side]  # (B, 3, side, side)
        face = F.interpolate(face, size=(160, 160), mode="bilinear", align_corners=False, antialias=True)
        return self.net((face * 255 - 127.5) / 128)  # (B, 512), L2-normalised by the network


def build_facenet(weights: str | Path, face_fraction: float = 0.7) -> FacenetEmbedder:
    """InceptionResnetV1 with the state dict in ``weights`` (facenet-pytorch's 20180402-114759-vggface2.pt;
    its classification layer ``logits.*`` is not used and dropped)."""
    from facenet_pytorch import InceptionResnetV1

    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"CSIM: facenet VGGFace2 weights not found: {path} (see eval/README.md, weights)")
    net = InceptionResnetV1(pretrained=None, classify=False)
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict({k: v for k, v in state.items() if not k.startswith("logits.")})
    return FacenetEmbedder(net, face_fraction)


class ArcFaceEmbedder(nn.Module):
    """An ArcFace ONNX model through onnxruntime on five-point-aligned 112x112 faces -> (B, D) embeddings.
    Runs on the CPU (or the session's providers), whatever the device of the inputs."""

    needs_points = True

    def __init__(self, model_path: str | Path, providers: list[str] | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"CSIM: ArcFace ONNX model not found: {path} (see eval/README.md, weights)")
        self.session = ort.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.variant = f"arcface-onnx ({path.name}, 5-point aligned 112 px)"

    def forward(self, x: torch.Tensor, points: torch.Tensor | None = None) -> torch.Tensor:
        if points is None or tuple(points.shape) != (x.shape[0], 5, 2):
            got = None if points is None else tuple(points.shape)
            raise ValueError(f"ArcFaceEmbedder: points must be (B, 5, 2) crop pixels for B={x.shape[0]}, got {got}")
        faces = np.stack([align_arcface(img, pts) for img, pts in
                          zip(x.permute(0, 2, 3, 1).cpu().numpy(), points.cpu().numpy())])  # (B, 112, 112, 3)
        blob = ((faces * 255 - 127.5) / 127.5).transpose(0, 3, 1, 2).astype(np.float32)  # (B, 3, 112, 112)
        out = np.concatenate([self.session.run(None, {self.input_name: blob[i:i + 1]})[0] for i in range(len(blob))])
        return torch.from_numpy(out).to(x.device).flatten(1)  # (B, D); one at a time: many exports fix B = 1


def align_arcface(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(H, W, 3) float image and its (5, 2) points -> the 112x112 ArcFace-aligned face (similarity transform)."""
    matrix, _ = cv2.estimateAffinePartial2D(points.astype(np.float32), ARCFACE_TEMPLATE, method=cv2.LMEDS)
    if matrix is None:
        raise ValueError(f"ArcFace alignment failed for points {points.tolist()}")
    return cv2.warpAffine(image, matrix, (112, 112), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


class CSIM(Metric):
    """Mean cosine similarity of the embeddings of aligned generated and ground-truth frames."""

    higher_is_better = True
    full_state_update = False

    def __init__(self, embedder: nn.Module, **kwargs) -> None:
        super().__init__(**kwargs)
        self.embedder = embedder
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    @torch.no_grad()
    def update(self, gen: torch.Tensor, gt: torch.Tensor, points: torch.Tensor | None = None) -> None:
        check_frames(gen, gt, "CSIM")
        if getattr(self.embedder, "needs_points", False) and points is None:
            raise ValueError("CSIM.update: this embedder aligns faces on five points; pass points (B, 5, 2)")
        cos = F.cosine_similarity(self.embedder(gen.float(), points), self.embedder(gt.float(), points), dim=-1)  # (B,)
        self.total += cos.double().sum()
        self.count += cos.numel()

    def compute(self) -> torch.Tensor:
        if self.count == 0:
            raise RuntimeError("CSIM.compute: no frames were given to update()")
        return (self.total / self.count).float()


def face_recognition_models_dir() -> Path:
    """The model folder of the ``face-recognition-models`` package, found without importing it (its import pulls
    in the deprecated ``pkg_resources``)."""
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("CSIM (dlib ResNet) needs the face-recognition-models package (dlib's face "
                                  "embedding weights): pip install 'face-recognition-models==0.3.0' dlib-bin")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


class DlibEmbedder(nn.Module):
    """dlib's ResNet face embedding (module docstring) -> (B, 128) embeddings; CPU, one face at a time."""

    needs_points = True
    variant = "dlib ResNet (dlib_face_recognition_resnet_model_v1, 5-point aligned 150 px chip)"
    MODEL = "dlib_face_recognition_resnet_model_v1.dat"
    SHAPE = "shape_predictor_5_face_landmarks.dat"

    def __init__(self, models: str | Path | None = None) -> None:
        super().__init__()
        try:
            import dlib
        except ImportError as err:
            raise ModuleNotFoundError("CSIM (dlib ResNet) needs dlib: pip install dlib-bin") from err
        folder = Path(models) if models is not None else face_recognition_models_dir()
        for name in (self.MODEL, self.SHAPE):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"CSIM (dlib ResNet): {folder / name} not found")
        self.dlib = dlib
        self.shape = dlib.shape_predictor(str(folder / self.SHAPE))
        self.net = dlib.face_recognition_model_v1(str(folder / self.MODEL))

    def forward(self, x: torch.Tensor, points: torch.Tensor | None = None) -> torch.Tensor:
        if points is None or tuple(points.shape) != (x.shape[0], 5, 2):
            got = None if points is None else tuple(points.shape)
            raise ValueError(f"DlibEmbedder: points must be (B, 5, 2) crop pixels for B={x.shape[0]}, got {got}")
        images = (x.clamp(0, 1) * 255 + 0.5).byte().permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3) RGB
        out = []
        for image, pts in zip(images, points.cpu().numpy()):
            shape = self.shape(np.ascontiguousarray(image), self.face_box(pts))
            out.append(np.asarray(self.net.compute_face_descriptor(np.ascontiguousarray(image), shape), np.float32))
        return torch.from_numpy(np.stack(out)).to(x.device)  # (B, 128)

    def face_box(self, points: np.ndarray):
        """A dlib face box from the five points: centred between the eyes and the mouth, 2.4 eye distances wide
        (about the box of dlib's own frontal detector)."""
        eyes, mouth = points[:2].mean(0), points[3:].mean(0)
        centre = (eyes + mouth) / 2
        side = 2.4 * float(np.linalg.norm(points[1] - points[0]))
        x0, y0 = (centre - side / 2).round().astype(int)
        return self.dlib.rectangle(int(x0), int(y0), int(x0 + side), int(y0 + side))
