"""data_prep.build end to end: synthetic corpus -> shards that decode, resume, ray; real clips when present."""
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import av
import numpy as np
import pytest
import webdataset as wds

from data_prep.build import main as build
from data_prep.synthetic.generate import main as generate

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_real = pytest.mark.skipif(not (SHARED / "video").is_dir(), reason=f"real test clips absent ({SHARED / 'video'})")
FAST = ["--fit-steps", "150", "--min-seconds", "1", "--val", "0.25", "--test", "0.25"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    # 384 px frames (the default): at 256 px the synthetic faces are below the quality filter's face size
    generate(["--out", str(out), "--speakers", "4", "--clips-per-speaker", "1", "--seconds", "2", "--seed", "5",
              "--workers", "1"])
    return out


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    assert build(["--source", "synthetic", "--root", str(corpus), "--out", str(out), "--workers", "1", *FAST]) == 0
    return out


def _samples(shard_dir: Path) -> list[dict]:
    urls = sorted(str(p) for p in shard_dir.glob("*.tar"))
    return list(wds.WebDataset(urls, shardshuffle=False).decode())


def test_shards_decode_with_per_frame_arrays(built):
    index = json.loads((built / "index.json").read_text())
    samples = _samples(built)
    assert len(samples) == sum(s["samples"] for s in index["splits"].values()) == 4
    assert set(index["splits"]) <= {"train", "val", "test"} and "train" in index["splits"]
    assert index["quality_scorers"] == ["embedded"]  # no --hyperiqa: stated, not silent
    for sample in samples:
        meta = sample["json"]
        n = meta["n_frames"]
        with av.open(io.BytesIO(sample["mp4"])) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) == n and frames[0].shape == (256, 256, 3)
        assert sample["beta.npy"].shape[0] == sample["pose.npy"].shape[0] == sample["lmk.npy"].shape[0] == n
        assert sample["box.npy"].shape == (n, 3) and sample["lmk.npy"].shape[1:] == (478, 2)
        assert sample["audio.npy"].dtype == np.int16 and len(sample["audio.npy"]) == n * 640
        assert meta["face_model"].startswith("procedural") and "gt_exp_error_mm" in meta


def test_fit_is_close_to_ground_truth(built):
    """Detected landmarks -> fitted expression vertices near the truth. With the packaged MediaPipe landmark
    calibration (made from another seed's corpus, data_prep.calibrate_landmarks) the reprojection meets the
    data_prep issue's target, < 1.5 px at 256 (measured 0.91 px here; 3.4 px without the calibration). The
    expression error bound is today's measurement (1.21 mm over all vertices) plus margin: the calibration is
    a fixed offset, and the detector's expression-dependent error on the mouth remains (data_prep/README.md)."""
    index = json.loads((built / "index.json").read_text())
    train = index["splits"]["train"]
    assert train["reprojection_px"] < 1.5 and train["gt_exp_error_mm"] < 1.4, train


def test_rerun_skips_and_gives_identical_shards(built, corpus, tmp_path):
    before = {p.name: p.read_bytes() for p in built.glob("*.tar")}
    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    # a killed run: one work item half-written (temporary name), one missing entirely
    items = sorted(p for p in (copy / "work").iterdir() if p.is_dir())
    shutil.move(items[0], items[0].with_name(f".{items[0].name}.tmp"))
    for tar in copy.glob("*.tar"):
        tar.unlink()
    assert build(["--source", "synthetic", "--root", str(corpus), "--out", str(copy), "--workers", "1", *FAST]) == 0
    assert {p.name: p.read_bytes() for p in copy.glob("*.tar")} == before


@pytest.mark.timeout(600)
def test_sigkill_at_a_random_moment_then_rerun_gives_identical_shards(built, corpus, tmp_path):
    """`kill -9` of the whole build (the command and its two worker processes) at a random moment after the
    first clip is finished (mid-clip, between clips, or while the shards are being packed), then a plain
    re-run: no half-written file under a final name, and the shards are byte-identical to the uninterrupted
    in-process run's. The moment is random on purpose; its seed is in the failure message."""
    seed = random.SystemRandom().randrange(2**31)
    delay = random.Random(seed).uniform(0.0, 1.5)  # the other three clips take ~3 s more
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "data_prep.build", "--source", "synthetic", "--root", str(corpus), "--out", str(out),
           "--workers", "2", *FAST]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and not list(out.glob("work/*/report.json")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(delay)
    finally:
        killed = proc.poll() is None
        if killed:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    where = f"seed {seed}: killed {delay:.2f} s after the first finished clip"
    assert killed, f"{where}: the build had already finished, nothing was interrupted"
    for tar in out.glob("*.tar"):  # anything under a final name is complete
        with tarfile.open(tar) as t:
            assert t.getmembers(), where
    rerun = subprocess.run(cmd, capture_output=True, text=True)
    assert rerun.returncode == 0, f"{where}\n{rerun.stderr[-3000:]}"
    expected = {p.name: p.read_bytes() for p in built.glob("*.tar")}
    assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == expected, where
    assert not list(out.glob(".*.tmp")) and not list(out.glob("work/.*.tmp")), where


def test_resuming_with_other_settings_is_refused(built, corpus, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    other = [a if a != "150" else "151" for a in FAST]  # --fit-steps 151
    assert build(["--source", "synthetic", "--root", str(corpus), "--out", str(copy), "--workers", "1", *other]) == 2
    assert re.search(r"other settings \(process\.fit\.steps\).*new --out folder", capsys.readouterr().err)


def test_sidecar_landmarks_path(corpus, tmp_path):
    out = tmp_path / "side"
    assert build(["--source", "synthetic", "--root", str(corpus), "--out", str(out), "--workers", "1",
                  "--landmarks", "sidecar", "--limit", "1", *FAST]) == 0
    (sample,) = _samples(out)
    assert sample["json"]["reprojection_px"] < 1.0
    with pytest.raises(SystemExit):
        build(["--source", "folder", "--root", str(corpus), "--out", str(out), "--landmarks", "sidecar"])


def test_ray_executor(corpus, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    assert build(["--source", "synthetic", "--root", str(corpus), "--out", str(out), "--workers", "2",
                  "--executor", "ray", "--limit", "2", *FAST]) == 0
    assert len(_samples(out)) == 2


@needs_real
def test_real_hevc_and_silent_clips(tmp_path):
    """The 1080x1920 HEVC clip gives a sample; the clip without audio is reported, not a crash."""
    root = tmp_path / "real"
    root.mkdir()
    for name in ("bytedance__LatentSync__demo1_video.mp4", "Weizhi-Zhong__IP_LAP__129.mp4"):
        (root / name).symlink_to(SHARED / "video" / name)
    out = tmp_path / "out"
    assert build(["--source", "folder", "--root", str(root), "--out", str(out), "--workers", "1",
                  "--fit-steps", "200"]) == 0
    index = json.loads((out / "index.json").read_text())
    assert index["report"]["removed_by_reason"].get("no_audio") == 1
    assert index["report"]["clips_with_samples"] == 1 and not index["report"]["failed"]


@needs_real
@pytest.mark.slow
def test_real_clips(tmp_path):
    """Every human clip with audio gives shards; faces on >= 95% of frames; reprojection < 2% of IOD (the
    data_prep issue's target, met with the synthetic-only landmark calibration: 1.2-2.0%, d12 the closest)."""
    out = tmp_path / "out"
    assert build(["--source", "folder", "--root", str(SHARED / "video"), "--out", str(out), "--workers", "2"]) == 0
    reports = {r["clip"]: r for r in (json.loads(p.read_text()) for p in (out / "work").glob("*/report.json"))}
    for key, report in reports.items():
        if "IP_LAP__129" in key:
            assert report["removed"] == ["no_audio"]
        elif "yongen" not in key:  # the drawn character may be kept or filtered, with a reason
            assert report["samples"], (key, report["removed"], report.get("error"))
            assert report["face_frames"] >= 0.95 * report["frames"], key
            for sample in report["samples"]:
                assert sample["reprojection_pct_iod"] < 2.0, (key, sample["reprojection_px"], sample["iod_px"])
