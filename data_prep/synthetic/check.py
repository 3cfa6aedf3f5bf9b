"""How a face detector sees a synthetic corpus: ``python -m data_prep.synthetic.check DIR [--every K]``.

Runs MediaPipe's face mesh (478 landmarks, the detector data_prep uses) on the corpus' clips and prints
the fraction of frames with a face and the landmark error against the sidecar ground truth, in pixels,
overall and per region. The error mixes detector noise with the semantic offset between MediaPipe's
learned landmarks and the procedural model's vertices (largest on the face oval).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REGIONS = {"eyes": [33, 133, 159, 145, 362, 263, 386, 374], "iris": list(range(468, 478)),
           "lips": [0, 13, 14, 17, 61, 291, 78, 308], "nose": [1, 2, 4, 98, 327], "oval": [10, 152, 234, 454]}


def detection_report(root: Path, every: int = 1) -> dict:
    """{'frames', 'detected', 'rate', 'error_px': {'all', region...}} over the clips under ``root``."""
    import mediapipe as mp

    from data_prep.synthetic.video_io import read_mp4

    clips = sorted(root.glob("id*/*/*.mp4"))
    if not clips:
        raise FileNotFoundError(f"no synthetic clips (idNNNNN/VIDEOID/NNNNN.mp4) under {root}")
    total, errors = 0, []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, refine_landmarks=True) as mesh:
        for mp4 in clips:
            frames = read_mp4(mp4)[0]
            truth = json.loads(mp4.with_suffix(".json").read_text()).get("landmarks_478")
            for t in range(0, len(frames), every):
                total += 1
                found = mesh.process(frames[t]).multi_face_landmarks
                if found:
                    h, w = frames[t].shape[:2]
                    pts = np.array([[p.x * w, p.y * h] for p in found[0].landmark])
                    errors.append(np.linalg.norm(pts - np.asarray(truth[t]), axis=1) if truth else None)
    errs = np.array([e for e in errors if e is not None])
    report = {"frames": total, "detected": len(errors), "rate": len(errors) / max(total, 1)}
    if len(errs):
        report["error_px"] = {"all": float(errs.mean()), **{k: float(errs[:, v].mean()) for k, v in REGIONS.items()}}
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_prep.synthetic.check", description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path, help="corpus folder written by python -m data_prep.synthetic")
    p.add_argument("--every", type=int, default=1, help="check every K-th frame")
    args = p.parse_args(argv)
    report = detection_report(args.root, args.every)
    print(f"face found on {report['detected']}/{report['frames']} frames ({100 * report['rate']:.1f}%)")
    if "error_px" in report:
        print("landmark error vs ground truth (px): "
              + ", ".join(f"{k} {v:.2f}" for k, v in report["error_px"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
