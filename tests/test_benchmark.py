"""eval.benchmark end to end on tiny synthetic videos (injected scorer networks, fake SyncScore / StyleSim),
the split readers (HDTF layout + test list, synthetic shards, a folder), and the missing-weights error."""
import csv
import io
import json
import shutil
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from data_prep.synthetic.video_io import write_mp4
from eval import benchmark, table4
from eval.evaluators import Evaluators
from eval.expression import ExpressionFitter
from eval.generate import generate
from eval.splits import folder_videos, hdtf_videos, match_generated, synthetic_videos
from eval.weights import WEIGHTS, MissingWeightsError, check_weights
from src.media.decode import iter_frames, read_audio

FAST = ["--max-frames", "16", "--set", "scoring.fit_steps=20", "--device", "cpu"]


# ------------------------------------------------------------------------------------------- fixtures

def fake_shards(shards: Path, corpus: Path, clips: list[str]) -> Path:
    """A shard folder as data_prep.build leaves it, reduced to what the split reader reads: index.json and a
    test tar whose samples' .json name their corpus clips."""
    shards.mkdir(parents=True, exist_ok=True)
    with tarfile.open(shards / "test-000000.tar", "w") as tar:
        for i, clip in enumerate(clips):
            data = json.dumps({"clip": clip, "speaker": clip.split("/")[1], "split": "test"}).encode()
            info = tarfile.TarInfo(f"sample{i}.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    index = {"shards": {"test": ["test-000000.tar"], "train": []}, "args": {"root": str(corpus)}}
    (shards / "index.json").write_text(json.dumps(index))
    return shards


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> dict:
    """Two 1 s synthetic clips (256 px), their fake test shards, and a 'blur' method folder."""
    from data_prep.synthetic.generate import main as generate

    root = tmp_path_factory.mktemp("bench")
    corpus = root / "corpus"
    generate(["--out", str(corpus), "--speakers", "2", "--clips-per-speaker", "1", "--seconds", "1", "--seed", "5",
              "--workers", "1", "--size", "256"])
    clips = ["synthetic/" + "/".join(p.relative_to(corpus).with_suffix("").parts)
             for p in sorted(corpus.rglob("*.mp4"))]
    shards = fake_shards(root / "shards", corpus, clips)
    videos = synthetic_videos(shards)
    blur = root / "methods" / "blur"
    blur.mkdir(parents=True)
    for v in videos:
        frames = [cv2.GaussianBlur(f.image, (0, 0), 2.5) for f in iter_frames(v.gt)]
        write_mp4(blur / f"{v.name}.mp4", frames, read_audio(v.gt, 16000), 16000)
    return {"root": root, "corpus": corpus, "shards": shards, "videos": videos, "blur": blur}


class FakeSync:
    """SyncScore's interface (eval.metrics.sync), scoring how much the frames change (checks the inputs)."""

    def update(self, frames: np.ndarray, audio: np.ndarray) -> None:
        assert frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[-1] == 3
        assert audio.dtype == np.float32 and audio.ndim == 1 and len(audio) == len(frames) * 640
        self.value = float(np.abs(np.diff(frames.astype(np.float32), axis=0)).mean())

    def compute(self) -> dict:
        return {"sync_conf": self.value, "sync_offset": 0.0, "lse_d": 10.0 - self.value}


class FakeStyleSim:
    """StyleSim's interface (eval.metrics.stylesim): cosine of per-vertex motion energy."""

    def update(self, gen_exp: torch.Tensor, ref_exp: torch.Tensor) -> None:
        assert gen_exp.shape == ref_exp.shape and gen_exp.ndim == 3 and gen_exp.shape[-1] == 3
        self.value = nn.functional.cosine_similarity(gen_exp.std(0).flatten(), ref_exp.std(0).flatten(), dim=0)

    def compute(self) -> float:
        return float(self.value)


class TinyEmbedder(nn.Module):
    needs_points = False
    variant = "tiny test embedder (uncalibrated)"

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 16, 16)

    def forward(self, x, points=None):
        return self.conv(x).flatten(2).mean(-1)  # (B, 16)


class TinyLPIPS(nn.Module):
    def forward(self, x, y):
        return (x - y).abs().mean((1, 2, 3))  # (B,)


def fake_evaluators() -> Evaluators:
    ev = Evaluators(lpips=TinyLPIPS(), fid=nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten()), csim=TinyEmbedder(),
                    sync=FakeSync, stylesim=FakeStyleSim, expression=ExpressionFitter(fit_steps=20))
    ev.variants.update({m: "test (uncalibrated)" for m in ("lpips", "fid", "csim", "sync", "stylesim")})
    return ev


def no_weights_config(tmp_path: Path) -> list[str]:
    """Config overrides that point every weight file into an empty folder."""
    return ["--set", f"data_dir={tmp_path / 'nothing'}",
            "--set", f"splits.synthetic.weights.syncnet={tmp_path / 'nothing' / 'syncnet.ckpt'}",
            "--set", f"splits.synthetic.weights.style_encoder={tmp_path / 'nothing' / 'style.ckpt'}"]


# ------------------------------------------------------------------------------------------- tests

def test_benchmark_end_to_end_with_injected_scorers(synthetic, tmp_path, one_torch_thread):
    videos = synthetic["videos"]
    matched = {"blur": match_generated(videos, "blur", synthetic["blur"])}
    scoring = {"fps": 25, "crop_size": 256, "chunk": 8, "max_frames": 20, "fid_stride": 1}
    result = benchmark.run_benchmark("synthetic", videos, matched, fake_evaluators(), scoring, tmp_path / "out")
    summary = result["summary"]
    assert list(summary) == ["GT", "blur"] and result["metrics"] == list(benchmark.METRICS)
    gt, blur = summary["GT"], summary["blur"]
    assert gt["ssim"] == pytest.approx(1.0, abs=1e-4) and gt["psnr"] == float("inf")
    assert gt["lpips"] == 0 and gt["csim"] == pytest.approx(1.0) and gt["lmd"] == 0 and gt["fid"] < 1e-4
    assert blur["ssim"] < 0.99 and blur["psnr"] < 40 and blur["lpips"] > 0 and blur["csim"] < 1 and blur["fid"] > 1e-4
    assert blur["sync_conf"] < gt["sync_conf"]  # the fake scores motion, which blur smooths
    assert 0 < gt["stylesim"] <= 1 and 0 < blur["stylesim"] <= 1
    assert len(result["rows"]) == 4 and all(r["frames_used"] == 20 for r in result["rows"])

    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["benchmark.csv", "benchmark.json", "benchmark.md"]
    md = (out / "benchmark.md").read_text()
    assert "| GT | 1.000 | inf |" in md and "| blur |" in md and "## Per video" in md
    rows = list(csv.DictReader((out / "benchmark.csv").open()))
    assert {(r["method"], r["video"]) for r in rows} >= {("GT", "mean"), ("blur", "mean"), ("GT", videos[0].name)}
    saved = json.loads((out / "benchmark.json").read_text())
    assert saved["summary"]["GT"]["psnr"] == "inf" and len(saved["rows"]) == 4 and "lmd" in saved["scorers"]


def test_benchmark_cli_generates_the_synthetic_split_and_prints_the_table(synthetic, tmp_path, monkeypatch, capsys):
    """`--split synthetic --generate` with a stand-in for the dubbing call; without weight files, only with
    --allow-missing, and the table says which metrics were left out."""
    calls = []

    def fake_dub(video, audio, out, geometry_ckpt, render_ckpt, device):
        assert video == audio  # self-dubbing: each video driven by its own audio
        calls.append(video)
        shutil.copy(synthetic["blur"] / next(v.name + ".mp4" for v in synthetic["videos"] if v.gt == video), out)

    monkeypatch.setattr("eval.generate.dub_video", fake_dub)
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"")
    args = ["--split", "synthetic", "--shards", str(synthetic["shards"]), "--generate", "--geometry-ckpt", str(ckpt),
            "--render-ckpt", str(ckpt), "--out", str(tmp_path / "out"), *no_weights_config(tmp_path), *FAST]
    assert benchmark.main(args) == 2  # fails fast: weights missing, nothing generated
    assert calls == [] and "5 evaluator weight file(s) missing" in capsys.readouterr().err
    assert benchmark.main([*args, "--allow-missing"]) == 0
    printed = capsys.readouterr().out
    assert "| ours |" in printed and "| GT | 1.000 | inf |" in printed and "lpips: not computed (missing " in printed
    assert len(calls) == 2 and (tmp_path / "out" / "benchmark.md").is_file()
    generate(synthetic["videos"], tmp_path / "out" / "generated" / "ours", ckpt, ckpt)  # outputs exist: no dubbing
    assert len(calls) == 2


def test_missing_weights_error_lists_every_file(tmp_path, capsys):
    with pytest.raises(MissingWeightsError) as err:
        check_weights({key: tmp_path / w.filename for key, w in WEIGHTS.items() if not w.optional})
    message = str(err.value)
    for key, w in WEIGHTS.items():
        assert (w.filename in message) != w.optional and (w.metric in message) != w.optional
    assert str(tmp_path / "syncnet_v2.model") in message and "how to obtain" in message
    # the HDTF benchmark fails before it reads any video, listing exactly the five default files
    args = ["--split", "hdtf", "--method", f"ours={tmp_path}", "--set", f"data_dir={tmp_path / 'data'}"]
    assert benchmark.main(args) == 2
    stderr = capsys.readouterr().err
    assert "5 evaluator weight file(s) missing" in stderr
    for key in ("lpips_alex", "fid_inception", "facenet_vggface2", "syncnet", "style_encoder"):
        assert str(tmp_path / "data" / "models" / WEIGHTS[key].filename) in stderr
    assert "w600k_r50.onnx" not in stderr  # ArcFace is optional: needed only when configured


def test_hdtf_reader_takes_the_dataset_layout_and_a_test_list(tmp_path):
    names = [f"WDA_Speaker{i:02d}_000" for i in range(20)] + [f"RD_Radio{i}_000" for i in range(12)] + ["WRA_X_001"]
    for i, name in enumerate(names):
        folder = tmp_path / "HDTF" / ("WDA" if name.startswith("WDA") else "other")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.mp4").write_bytes(b"")  # only names are read
    test = names[:30]
    lines = ["# HDTF test videos"] + [n + (".mp4" if i % 2 else "") for i, n in enumerate(test)]
    (tmp_path / "test.txt").write_text("\n".join(lines) + "\n")
    videos = hdtf_videos(tmp_path / "HDTF", tmp_path / "test.txt")
    assert sorted(v.name for v in videos) == sorted(test) and len(videos) == 30
    assert {v.speaker for v in videos if v.name.startswith("RD_Radio1_")} == {"RD_Radio1"}
    (tmp_path / "bad.txt").write_text("WDA_Nobody_000\n")
    with pytest.raises(ValueError, match="WDA_Nobody_000"):
        hdtf_videos(tmp_path / "HDTF", tmp_path / "bad.txt")
    with pytest.raises(FileNotFoundError, match="test list"):
        hdtf_videos(tmp_path / "HDTF", None)


def test_folder_and_synthetic_readers_and_matching(synthetic, tmp_path):
    videos = synthetic["videos"]
    assert len(videos) == 2 and all(v.gt.is_file() and v.name.count("__") == 2 for v in videos)
    flat = tmp_path / "gt"
    flat.mkdir()
    for v in videos:
        shutil.copy(v.gt, flat / f"{v.name}.mp4")
    assert [v.name for v in folder_videos(flat)] == [v.name for v in videos]
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(videos[0].gt, partial / f"{videos[0].name}.mp4")
    with pytest.raises(FileNotFoundError, match=f"no generated video for 1 of 2 videos: {videos[1].name}"):
        match_generated(videos, "partial", partial)
    with pytest.raises(ValueError, match="no split 'val'"):
        synthetic_videos(synthetic["shards"], split="val")


def test_table4_runs_each_ablation_into_one_table(synthetic, tmp_path, monkeypatch, capsys):
    def fake_dub(video, audio, out, geometry_ckpt, render_ckpt, device):
        shutil.copy(video if render_ckpt.name == "ours.ckpt" else
                    synthetic["blur"] / next(v.name + ".mp4" for v in synthetic["videos"] if v.gt == video), out)

    monkeypatch.setattr("eval.generate.dub_video", fake_dub)
    for name in ("geometry.ckpt", "ours.ckpt", "single.ckpt"):
        (tmp_path / name).write_bytes(b"")
    args = ["--shards", str(synthetic["shards"]), "--geometry", str(tmp_path / "geometry.ckpt"),
            "--checkpoints", f"ours={tmp_path / 'ours.ckpt'}", "--checkpoints", f"w/o dual={tmp_path / 'single.ckpt'}",
            "--out", str(tmp_path / "t4"), "--allow-missing", "--metrics", "ssim", "lpips",
            *no_weights_config(tmp_path), *FAST]
    assert table4.main(args) == 0
    table = (tmp_path / "t4" / "table4.md").read_text()
    assert "| ours |" in table and "| w/o dual |" in table and "| GT |" in table
    assert (tmp_path / "t4" / "generated" / "w_o_dual").is_dir()
