"""The media contract every part of the project shares: one frame rate, one audio rate, one crop size.

Every video the project reads is resampled to ``FPS`` frames per second (``decode.iter_frames``), every
audio to ``SAMPLE_RATE`` Hz mono (``decode.read_audio``), so frame k of a clip covers audio samples
[k * SAMPLES_PER_FRAME, (k + 1) * SAMPLES_PER_FRAME). Faces are cut to ``CROP_SIZE`` x ``CROP_SIZE`` crops
(``src.tracking.crops``); poses, landmarks and PNCCs are in pixels of that crop. Shards, checkpoints and
the dubbing pipeline all assume these numbers: change them here or nowhere.
"""
from __future__ import annotations

FPS = 25  # video frames per second (the paper's, and HDTF's / VoxCeleb2's)
SAMPLE_RATE = 16_000  # audio samples per second (HuBERT's input rate)
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640 audio samples per video frame
CROP_SIZE = 256  # side of a face crop in pixels (the paper's renderer resolution)

if SAMPLES_PER_FRAME * FPS != SAMPLE_RATE:
    raise ValueError(f"SAMPLE_RATE {SAMPLE_RATE} must be a whole number of samples per frame at {FPS} fps")
