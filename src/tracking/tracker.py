"""Face tracking: MediaPipe face landmarks (478) per frame, one tracked face, face segments and temporally
smoothed square crop boxes (the crops themselves: ``src.tracking.crops``).

Outputs of ``track_video`` (``Track``): per frame the 478 landmarks in frame pixels (NaN where no face),
the list of face segments (frames without the tracked face cut the clip), and per frame a smoothed crop
box ``(cx, cy, side)`` in frame pixels, which ``src.tracking.crops.crop_frame`` cuts out.

Detection: MediaPipe's face mesh finds faces with its short-range detector, which misses small faces in
large frames (a 1080x1920 clip with a distant speaker). When the face mesh finds nothing on the full
frame, the full-range face detector (``model_selection=1``) locates the faces, and the mesh runs on a
region around the chosen one; the region then follows the landmarks from frame to frame.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

from src.tracking.crops import crop_frame

N_LANDMARKS = 478


@dataclass
class TrackConfig:
    face_index: int = 0  # which face to follow at the start: 0 = largest, 1 = second largest, ...
    max_faces: int = 4
    box_scale: float = 1.6  # crop side / face size (landmark extent): the face fills ~2/3 of the crop
    smooth_sigma: float = 2.0  # frames, Gaussian smoothing of box centre and side within a segment
    min_confidence: float = 0.5
    roi_scale: float = 3.0  # side of the detection region around a small face / face size
    min_mesh_face_fraction: float = 0.2  # faces smaller than this fraction of the frame go through a region


@dataclass
class Track:
    landmarks: np.ndarray  # (T, 478, 2) frame pixels, NaN where the tracked face was not found
    segments: list[tuple[int, int]]  # [start, end) frame ranges with a face
    boxes: np.ndarray  # (T, 3) smoothed (cx, cy, side) in frame pixels, NaN outside segments
    frame_size: tuple[int, int]  # (H, W)
    stats: dict = field(default_factory=dict)

    @property
    def found(self) -> np.ndarray:
        return ~np.isnan(self.landmarks[:, 0, 0])


class FaceTracker:
    """Follows one face through a video's frames (call ``update`` frame by frame, in order)."""

    def __init__(self, cfg: TrackConfig):
        # MediaPipe's C++ side logs a warning per graph to stderr ("Feedback manager requires a model with a
        # single signature..."): harmless, and it buries the progress bar; errors still show
        os.environ.setdefault("GLOG_minloglevel", "2")
        import mediapipe as mp

        self.cfg = cfg
        self.mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=cfg.max_faces,
                                                    refine_landmarks=True, min_detection_confidence=cfg.min_confidence,
                                                    min_tracking_confidence=cfg.min_confidence)
        self.roi_mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                                                        min_detection_confidence=cfg.min_confidence)
        self.detector = mp.solutions.face_detection.FaceDetection(model_selection=1,
                                                                  min_detection_confidence=cfg.min_confidence)
        self.previous: np.ndarray | None = None  # (478, 2) last landmarks of the tracked face
        self.used_roi = 0

    def close(self) -> None:
        for graph in (self.mesh, self.roi_mesh, self.detector):
            graph.close()

    def update(self, image: np.ndarray) -> np.ndarray | None:
        """(H, W, 3) uint8 RGB -> (478, 2) landmarks of the tracked face in pixels, or None."""
        h, w = image.shape[:2]
        faces = self._mesh_faces(self.mesh, image)
        small = self.previous is not None and _extent(self.previous) < self.cfg.min_mesh_face_fraction * min(h, w)
        if not faces or small:
            faces = self._roi_faces(image) or faces
        chosen = self._choose(faces)
        self.previous = chosen
        return chosen

    def _mesh_faces(self, mesh, image: np.ndarray) -> list[np.ndarray]:
        return mesh_landmarks(mesh.process(image), image.shape)

    def _roi_faces(self, image: np.ndarray) -> list[np.ndarray]:
        """Face mesh on a square region around the tracked face (or the full-range detector's pick)."""
        h, w = image.shape[:2]
        if self.previous is not None:
            centre, size = self.previous.mean(0), _extent(self.previous)
        else:
            boxes = self._detect(image)
            if not boxes:
                return []
            pick = min(self.cfg.face_index, len(boxes) - 1)
            x0, y0, bw, bh = boxes[pick]
            centre, size = np.array([x0 + bw / 2, y0 + bh / 2]), max(bw, bh) * 1.3
        side = float(size * self.cfg.roi_scale)
        region, matrix = crop_frame(image, np.array([centre[0], centre[1], side]), 384)
        found = self._mesh_faces(self.roi_mesh, region)
        if not found:
            return []
        self.used_roi += 1
        inverse = cv2.invertAffineTransform(matrix)
        return [lmk @ inverse[:, :2].T + inverse[:, 2] for lmk in found]

    def _detect(self, image: np.ndarray) -> list[tuple[float, float, float, float]]:
        """Full-range detector boxes (x, y, w, h) in pixels, largest first."""
        result = self.detector.process(image)
        if not result.detections:
            return []
        h, w = image.shape[:2]
        boxes = [d.location_data.relative_bounding_box for d in result.detections]
        boxes = [(b.xmin * w, b.ymin * h, b.width * w, b.height * h) for b in boxes]
        return sorted(boxes, key=lambda b: -b[2] * b[3])

    def _choose(self, faces: list[np.ndarray]) -> np.ndarray | None:
        if not faces:
            return None
        if self.previous is None:  # the requested face by size at the start
            by_size = sorted(faces, key=lambda f: -_extent(f))
            return by_size[self.cfg.face_index] if self.cfg.face_index < len(by_size) else None
        # afterwards the face closest to where the tracked one was, if it plausibly is the same face
        dist = [np.linalg.norm(f.mean(0) - self.previous.mean(0)) for f in faces]
        best = int(np.argmin(dist))
        return faces[best] if dist[best] < 0.5 * _extent(self.previous) else None


def mesh_landmarks(result, shape: tuple[int, ...]) -> list[np.ndarray]:
    """A MediaPipe face-mesh result -> one (478, 2) float32 array of pixel landmarks per face found."""
    if not result.multi_face_landmarks:
        return []
    h, w = shape[:2]
    return [np.array([[p.x * w, p.y * h] for p in face.landmark], np.float32) for face in result.multi_face_landmarks]


def _extent(lmk: np.ndarray) -> float:
    """Face size in pixels: the larger side of the landmarks' bounding box."""
    span = lmk.max(0) - lmk.min(0)
    return float(max(span[0], span[1]))


def track_video(frames, cfg: TrackConfig, min_frames: int = 1) -> Track:
    """Track one face through an iterable of ``decode.Frame`` (or (H, W, 3) arrays) -> ``Track``."""
    tracker = FaceTracker(cfg)
    rows, size = [], None
    try:
        for frame in frames:
            image = getattr(frame, "image", frame)
            size = image.shape[:2]
            lmk = tracker.update(image)
            rows.append(np.full((N_LANDMARKS, 2), np.nan, np.float32) if lmk is None else lmk[:N_LANDMARKS])
    finally:
        tracker.close()
    if size is None:
        raise ValueError("track_video got no frames")
    landmarks = np.stack(rows)  # (T, 478, 2)
    found = ~np.isnan(landmarks[:, 0, 0])
    segments = [s for s in face_segments(found) if s[1] - s[0] >= min_frames]
    boxes = smooth_boxes(landmarks, segments, cfg)
    stats = {"frames": len(rows), "found": int(found.sum()), "roi_frames": tracker.used_roi}
    return Track(landmarks, segments, boxes, size, stats)


def face_segments(found: np.ndarray) -> list[tuple[int, int]]:
    """Runs of True in a (T,) bool array as [start, end) pairs."""
    edges = np.diff(np.r_[0, found.astype(np.int8), 0])
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def smooth_boxes(landmarks: np.ndarray, segments: list[tuple[int, int]], cfg: TrackConfig) -> np.ndarray:
    """(T, 3) square boxes (cx, cy, side): landmark-box centre and ``box_scale`` x extent, Gaussian-smoothed
    over time within each segment (never across a cut)."""
    boxes = np.full((len(landmarks), 3), np.nan, np.float32)
    for start, end in segments:
        lmk = landmarks[start:end]  # (t, 478, 2)
        lo, hi = lmk.min(1), lmk.max(1)  # (t, 2)
        raw = np.c_[(lo + hi) / 2, cfg.box_scale * (hi - lo).max(1)]  # (t, 3)
        if cfg.smooth_sigma > 0 and end - start > 1:
            raw = gaussian_filter1d(raw, cfg.smooth_sigma, axis=0, mode="nearest")
        boxes[start:end] = raw
    return boxes


def face_thumbnails(frames, cfg: TrackConfig = TrackConfig(), size: int = 128, search: int = 25) -> list[np.ndarray]:
    """Crops of the faces in the first of ``frames`` (up to ``search``) that has any, largest first: thumbnail
    ``i`` is the face that ``TrackConfig.face_index = i`` (``--face i``) follows. Each (size, size, 3) uint8."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    import mediapipe as mp

    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=cfg.max_faces, refine_landmarks=True,
                                         min_detection_confidence=cfg.min_confidence) as mesh:
        for k, image in enumerate(frames):
            if k >= search:
                break
            faces = mesh_landmarks(mesh.process(image), image.shape)
            if not faces:
                continue
            faces.sort(key=lambda f: -_extent(f))  # (478, 2) each, largest first, as FaceTracker._choose orders them
            return [crop_frame(image, np.array([*f.mean(0), _extent(f) * cfg.box_scale]), size)[0] for f in faces]
    return []
