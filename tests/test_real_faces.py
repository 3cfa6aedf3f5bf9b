"""Stage 2 on real faces: person labels and clips without speech in data_prep.build, the training augmentation,
the target-excluded references, the Wav2Lip-style baseline, CSIM with dlib's ResNet, and eval.reconstruct end to
end (CSV columns, a mean row per method, contact sheets); the real clips' own shards when ../shared is present."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from data_prep.build import main as build
from data_prep.sources import list_clips
from src.data.augment import RenderAugment, mirror_pncc, mirrored
from src.data.render_datamodule import target_excluded_references
from src.models.baselines.reference_unet import ReferenceUNet
from src.train import train
from tests.conftest import RENDER_TEST_OVERRIDES, UNET_TEST_OVERRIDES

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL = SHARED / "real"
needs_real = pytest.mark.skipif(not (REAL / "MANIFEST.tsv").is_file(), reason=f"real clips absent ({REAL})")


# ----- data_prep: labels and clips without speech -----

def _touch_videos(root: Path, names: list[str]) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")  # list_clips reads names only


def test_labels_give_people_fixed_splits_and_hard_cases(tmp_path):
    _touch_videos(tmp_path, ["a.mp4", "b.mov", "c.mpg"])
    labels = tmp_path / "labels.tsv"
    labels.write_text("file\tperson\tsplit\thard\na.mp4\tann\ttrain\t\nb.mov\tbob\tval\t3/4 view\n"
                      "c.mpg\tann\ttrain\t\n")
    clips = {c.path.name: c for c in list_clips("folder", tmp_path, labels=labels)}
    assert {n: c.speaker for n, c in clips.items()} == {"a.mp4": "ann", "b.mov": "bob", "c.mpg": "ann"}
    assert clips["b.mov"].meta == {"split": "val", "hard": "3/4 view"} and clips["a.mp4"].meta == {"split": "train"}


@pytest.mark.parametrize("table, message", [
    ("file\tperson\na.mp4\tann\n", r"not in the labels, e.g. \['b.mp4'\]"),
    ("file\nname\n", "must name the columns file and person"),
    ("file\tperson\tsplit\na.mp4\tann\ttrain\nb.mp4\tann\tval\n", "a person must stay in one split"),
    ("file\tperson\tsplit\na.mp4\tann\tdev\nb.mp4\tbob\t\n", "split must be one of"),
    ("file\tperson\na.mp4\tann\nb.mp4\tbob\nz.mp4\tzed\n", "'z.mp4' is not a video under"),
])
def test_bad_labels_are_clear_errors(tmp_path, table, message):
    _touch_videos(tmp_path, ["a.mp4", "b.mp4"])
    (tmp_path / "labels.tsv").write_text(table)
    with pytest.raises(ValueError, match=message):
        list_clips("folder", tmp_path, labels=tmp_path / "labels.tsv")


def _remux(src: Path, dst: Path, audio: str) -> None:
    """The video stream of ``src`` copied into ``dst``, with no audio ("none") or an all-zero track ("zeros")."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = inp.streams.video[0]
        video = out.add_stream_from_template(stream)
        sound = out.add_stream("aac", rate=16000) if audio == "zeros" else None
        for packet in inp.demux(stream):
            if packet.dts is not None:
                packet.stream = video
                out.mux(packet)
        if sound is not None:
            for k in range(0, 16000 * 2, 1024):
                frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.int16), format="s16", layout="mono")
                frame.sample_rate, frame.pts = 16000, k
                out.mux(sound.encode(frame))
            out.mux(sound.encode(None))


def test_clips_without_speech_are_kept_for_stage_two_only_when_asked(tmp_path):
    from data_prep.synthetic.generate import main as generate

    corpus = tmp_path / "corpus"
    generate(["--out", str(corpus), "--speakers", "1", "--clips-per-speaker", "1", "--seconds", "2", "--seed", "3",
              "--workers", "1"])
    source = next(corpus.rglob("*.mp4"))
    root = tmp_path / "videos"
    root.mkdir()
    _remux(source, root / "mute.mp4", "none")
    _remux(source, root / "zeros.mp4", "zeros")
    args = ["--source", "folder", "--root", str(root), "--workers", "1", "--fit-steps", "20", "--min-seconds", "1",
            "--val", "0", "--test", "0"]
    assert build([*args, "--out", str(tmp_path / "strict")]) == 1  # every clip removed: no shards, exit 1
    removed = json.loads((tmp_path / "strict" / "index.json").read_text())["report"]["removed_by_reason"]
    assert removed == {"no_audio": 1, "silent_audio": 1}
    assert build([*args, "--out", str(tmp_path / "kept"), "--allow-no-audio"]) == 0
    index = json.loads((tmp_path / "kept" / "index.json").read_text())
    assert index["splits"]["train"]["samples"] == 2
    metas = [json.loads(p.read_text()) for p in (tmp_path / "kept" / "work").glob("*/report.json")]
    assert all(s["has_audio"] is False for m in metas for s in m["samples"])


# ----- augmentation and references -----

def _item(rng: np.random.Generator, size: int = 16) -> dict:
    pncc = np.zeros((size, size, 3), np.float32)
    pncc[4:12, 2:10] = rng.random((8, 8, 3))
    lip = np.zeros((size, size), bool)
    lip[9:11, 4:8] = True
    img = rng.random((3, size, size)).astype(np.float32)
    return {"tgt_img": img, "tgt_pncc": pncc, "tgt_lip_mask": lip, "key": "k", "frame": 0,
            **{f"{k}_ref_img": np.stack([img] * n) for k, n in (("face", 3), ("lip", 2))},
            **{f"{k}_ref_pncc": np.stack([pncc] * n) for k, n in (("face", 3), ("lip", 2))}}


def test_mirroring_flips_pixels_and_the_pncc_x_channel():
    item = _item(np.random.default_rng(0))
    flipped = mirrored(item)
    np.testing.assert_array_equal(flipped["tgt_img"], item["tgt_img"][..., ::-1])
    np.testing.assert_array_equal(flipped["tgt_lip_mask"], item["tgt_lip_mask"][:, ::-1])
    face = item["tgt_pncc"][:, ::-1].any(-1)
    np.testing.assert_allclose(flipped["tgt_pncc"][..., 0][face], 1 - item["tgt_pncc"][:, ::-1, 0][face])
    assert not flipped["tgt_pncc"][~face].any()  # the background stays 0
    np.testing.assert_allclose(mirror_pncc(mirror_pncc(item["tgt_pncc"])), item["tgt_pncc"], atol=1e-6)


def test_augmentation_keeps_shapes_and_changes_the_whole_item_the_same_way():
    item = _item(np.random.default_rng(1))
    colour_only = RenderAugment(flip=0, shift=0, scale=0, jpeg_p=0)
    out = colour_only(item, np.random.default_rng(2))
    assert not np.allclose(out["tgt_img"], item["tgt_img"])
    for kind in ("face", "lip"):  # one colour change for target and references alike
        np.testing.assert_allclose(out[f"{kind}_ref_img"], np.stack([out["tgt_img"]] * len(out[f"{kind}_ref_img"])),
                                   atol=1e-6)
    full = RenderAugment()(item, np.random.default_rng(3))
    for name, value in item.items():
        if isinstance(value, np.ndarray):
            assert full[name].shape == value.shape and full[name].dtype == value.dtype, name
    assert 0 <= full["lip_ref_img"].min() and full["lip_ref_img"].max() <= 1
    with pytest.raises(ValueError, match="jpeg_quality"):
        RenderAugment(jpeg_quality=(90, 30))


def test_target_excluded_references_are_the_nearest_other_frames():
    rng = np.random.default_rng(0)
    for i, T in ((0, 30), (14, 30), (29, 30), (1, 3)):
        face, lip = target_excluded_references(i, T, 5, 7, rng)
        assert i not in face and i not in lip and len(face) == 5 and len(lip) == 7
    assert target_excluded_references(14, 30, 5, 7, rng)[0].tolist() == [12, 13, 15, 16, 17]


# ----- the U-Net baseline -----

def test_unet_baseline_reads_the_first_face_reference_only():
    torch.manual_seed(0)
    net = ReferenceUNet(width=8, depth=2, max_width=16).eval()
    g = torch.Generator().manual_seed(0)
    x = [torch.rand(2, 3, 32, 32, generator=g), None, torch.rand(2, 3, 3, 32, 32, generator=g),
         torch.rand(2, 3, 3, 32, 32, generator=g)]
    with torch.no_grad():
        out = net(*x)
        assert out.shape == (2, 3, 32, 32) and 0 <= out.min() and out.max() <= 1
        other = x[2].clone()
        other[:, 1:] = torch.rand_like(other[:, 1:])
        torch.testing.assert_close(net(x[0], None, other, x[3]), out, rtol=0, atol=0)
        other[:, 0] = torch.rand_like(other[:, 0])
        assert not torch.allclose(net(x[0], None, other, x[3]), out)
    net.train()(*x).square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    with pytest.raises(ValueError, match="multiples of 4"):
        net(torch.rand(1, 3, 30, 30), None, torch.rand(1, 1, 3, 30, 30), torch.rand(1, 1, 3, 30, 30))


# ----- CSIM (dlib ResNet) -----

def test_dlib_csim_is_one_for_the_same_face_and_needs_points():
    from eval.metrics.csim import DlibEmbedder

    embedder = DlibEmbedder()
    faces = torch.rand(2, 3, 96, 96)
    points = torch.tensor([[[34.0, 40], [62, 40], [48, 55], [38, 70], [58, 70]]] * 2)
    a, b = embedder(faces, points), embedder(faces.clone(), points)
    assert a.shape == (2, 128)
    torch.testing.assert_close(torch.nn.functional.cosine_similarity(a, b), torch.ones(2))
    with pytest.raises(ValueError, match=r"points must be \(B, 5, 2\)"):
        embedder(faces, None)


def test_the_benchmark_computes_dlib_csim_out_of_the_box():
    from eval.evaluators import build_evaluators, required_weights

    assert required_weights(["csim_dlib"], {}) == {}  # no weight file to provide
    ev = build_evaluators(["csim_dlib"], {}, {"device": "cpu"})
    assert ev.csim_dlib is not None and "csim_dlib" in ev.computed() and "dlib ResNet" in ev.variants["csim_dlib"]


# ----- eval.reconstruct end to end -----

@pytest.fixture(scope="module")
def render_checkpoints(synthetic_shards, tmp_path_factory) -> dict[str, Path]:
    from tests.conftest import compose_config

    out = {}
    for name, experiment, extra in (("dual", "render_real", RENDER_TEST_OVERRIDES),
                                    ("unet", "render_unet_baseline", UNET_TEST_OVERRIDES)):
        run = tmp_path_factory.mktemp(name)
        cfg = compose_config([f"experiment={experiment}", f"data.root='{synthetic_shards}'", *extra,
                              "trainer.max_steps=2", "logger=csv"], run)
        train(cfg)
        out[name] = run / "checkpoints" / "last.ckpt"
    return out


def test_reconstruct_writes_the_table_and_contact_sheets(render_checkpoints, synthetic_shards, tmp_path):
    from eval.reconstruct import main as reconstruct

    out = tmp_path / "recon"
    assert reconstruct(["--render-ckpt", str(render_checkpoints["dual"]), "--render-ckpt",
                        f"unet={render_checkpoints['unet']}", "--render-ckpt", f"t1={render_checkpoints['dual']}",
                        "--attention-temperature", "t1=1", "--shards", str(synthetic_shards), "--out", str(out),
                        "--split", "val", "--frames-per-clip", "3", "--size", "48", "--n-lip", "7"]) == 0
    with open(out / "reconstruct.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["method", "clip", "psnr", "ssim", "lip_psnr", "lpips", "csim", "lip_sharpness"]
    methods = {r["method"] for r in rows}
    assert methods == {"render_real", "unet", "t1", "nearest_ref", "nearest_ref_warped"}
    psnr_of = {r["method"]: r["psnr"] for r in rows if r["clip"] == "mean"}
    assert psnr_of["t1"] != psnr_of["render_real"]  # the same weights at T = 1 (render_real checkpoints: 0.25)
    clips = {r["clip"] for r in rows} - {"mean"}
    assert len(rows) == len(methods) * (len(clips) + 1) and all(r["lpips"] == "" for r in rows)
    for r in rows:
        assert -1 <= float(r["csim"]) <= 1 and float(r["psnr"]) > 5 and float(r["lip_sharpness"]) > 0
    result = json.loads((out / "reconstruct.json").read_text())
    assert result["settings"]["size"] == 48
    assert result["resolutions"] == {"render_real": 32, "unet": 32, "t1": 32}
    assert sorted(p.stem for p in (out / "sheets").glob("*.png")) == sorted(clips)
    assert "## Per person" in (out / "reconstruct.md").read_text()


def test_composite_scores_only_what_a_dub_changes(render_checkpoints, synthetic_shards, tmp_path):
    from eval.reconstruct import main as reconstruct
    from eval.reconstruct import paste_masks
    from eval.shard_clips import face_model_spec, iter_samples, npy, split_urls
    from src.models.face_model import load_face_model

    sample = next(iter(iter_samples(split_urls(synthetic_shards, "val", "test"))))
    fm = load_face_model(face_model_spec(synthetic_shards))
    targets = np.array([0, 5])
    mask = paste_masks(fm, sample, targets, 64)  # (2, 1, 64, 64)
    assert mask.shape == (2, 1, 64, 64) and 0 <= float(mask.min()) and float(mask.max()) <= 1
    lmk = npy(sample, "lmk.npy")[targets] * (64 / 256)  # (2, 478, 2) at 64 px
    for k in range(2):
        lips = np.round(lmk[k, [13, 14]].mean(0)).astype(int)  # between the inner lips
        assert float(mask[k, 0, lips[1], lips[0]]) > 0.9
        upper = np.round([lmk[k, [33, 133]].mean(0), lmk[k, [362, 263]].mean(0), lmk[k, 168]]).astype(int)
        assert all(float(mask[k, 0, y, x]) == 0.0 for x, y in upper)  # eyes, nose bridge: the input's pixels
    common = ["--render-ckpt", str(render_checkpoints["dual"]), "--shards", str(synthetic_shards), "--split", "val",
              "--frames-per-clip", "2", "--size", "48", "--n-lip", "7", "--max-clips", "1"]
    assert reconstruct([*common, "--out", str(tmp_path / "raw")]) == 0
    assert reconstruct([*common, "--out", str(tmp_path / "comp"), "--composite"]) == 0

    def means(out: str) -> dict:
        with open(tmp_path / out / "reconstruct.csv", newline="") as f:
            return {r["method"]: float(r["psnr"]) for r in csv.DictReader(f) if r["clip"] == "mean"}

    raw, comp = means("raw"), means("comp")
    assert all(comp[m] > raw[m] for m in raw), (raw, comp)  # the rest of the crop is the truth's
    assert "Composited as a dub shows it" in (tmp_path / "comp" / "reconstruct.md").read_text()


def test_reconstruct_refuses_bad_input_before_the_work(render_checkpoints, synthetic_shards, tmp_path):
    from eval.reconstruct import main as reconstruct

    with pytest.raises(SystemExit):
        reconstruct(["--render-ckpt", str(render_checkpoints["dual"]), "--shards", str(tmp_path), "--out", "x"])
    with pytest.raises(ValueError, match="the method name 'render_real' is taken"):
        reconstruct(["--render-ckpt", str(render_checkpoints["dual"]), "--render-ckpt", str(render_checkpoints["dual"]),
                     "--shards", str(synthetic_shards), "--out", str(tmp_path / "o")])
    for bad in ("0", "x=-1", "sharp=abc"):
        with pytest.raises(SystemExit):
            reconstruct(["--render-ckpt", str(render_checkpoints["dual"]), "--attention-temperature", bad,
                         "--shards", str(synthetic_shards), "--out", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="no method named"):
        reconstruct(["--render-ckpt", str(render_checkpoints["dual"]), "--attention-temperature", "nope=0.5",
                     "--shards", str(synthetic_shards), "--out", str(tmp_path / "o")])


# ----- the real clips (../shared/data/real) -----

@needs_real
def test_the_real_manifest_labels_every_clip_and_keeps_people_apart():
    clips = list_clips("folder", REAL, labels=REAL / "MANIFEST.tsv")
    splits = {}
    for clip in clips:
        splits.setdefault(clip.speaker, set()).add(clip.meta["split"])
    assert len(clips) == 73 and all(len(s) == 1 for s in splits.values())
    val = {p for p, s in splits.items() if s == {"val"}}
    assert len(val) == 11 and not val & {p for p, s in splits.items() if s == {"train"}}
