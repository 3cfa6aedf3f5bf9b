"""Bad inputs and faults, as a new user meets them (issue 16), against dubbing, the shard build, training and the
benchmark. Each case asserts the exit status, that the message names the argument or the file, and that nothing is
left under a final name. Hostile checkpoints carry payloads that would create marker files: the markers must stay
absent. Tiny untrained networks and synthetic clips throughout."""
from __future__ import annotations

import io
import json
import logging
import os
import shutil
import socket
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from data_prep.build import DEFAULT_QUALITY as QUALITY
from data_prep.build import main as build_main
from eval import benchmark
from eval.splits import synthetic_videos
from src.dub import main as dub_main
from src.inference import pipeline
from src.inference.checkpoints import load_stage
from src.inference.writer import remove_stale_partials
from src.train import train
from tests import test_benchmark, test_dub
from tests.conftest import GEOMETRY_TEST_OVERRIDES, compose_config
from tests.test_benchmark import FAST as BENCH_FAST
from tests.test_benchmark import no_weights_config
from tests.test_dub import make_cfg, write_video

# the tiny checkpoints and media of tests/test_dub.py and the benchmark clips of tests/test_benchmark.py (fixtures)
ckpts, media, one_thread_for_this_module = test_dub.ckpts, test_dub.media, test_dub.one_thread_for_this_module
synthetic = test_benchmark.synthetic


# ------------------------------------------------------------------------------------------ helpers --
def dub(argv: list[str], capsys) -> tuple[int, str]:
    """Run ``python -m src.dub`` in-process: (exit status, stderr)."""
    try:
        code = dub_main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    return code, capsys.readouterr().err


def nothing_written(folder: Path, name: str = "o.mp4") -> bool:
    """No file under the final name and no partial of it left behind."""
    return not (folder / name).exists() and not list(folder.glob(f".{Path(name).stem}.partial-*"))


@pytest.fixture(scope="module")
def bad(media, ckpts, tmp_path_factory) -> dict[str, Path]:
    """Files that are not what their flag wants."""
    root = tmp_path_factory.mktemp("bad_inputs")
    rng = np.random.default_rng(0)
    (root / "noise.mp4").write_bytes(rng.bytes(4096))
    (root / "noise.wav").write_bytes(rng.bytes(4096))
    frame = np.full((64, 64, 3), 128, np.uint8)
    cv2.imwrite(str(root / "face.png"), frame)
    write_video(root / "one_frame.mp4", [frame], np.zeros(640, np.float32))
    # a video without an audio track, as --audio
    import av
    with av.open(str(root / "silent.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for _ in range(10):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    (root / "a_file").write_text("not a folder")
    (root / "folder").mkdir()
    (root / "random.ckpt").write_bytes(rng.bytes(20000))
    (root / "truncated.ckpt").write_bytes(ckpts["geometry"].read_bytes()[:5000])
    torch.save(torch.zeros(3), root / "tensor.ckpt")
    return {"root": root, **{p.stem: p for p in root.iterdir()}}


def base_argv(media, ckpts, out: Path) -> list[str]:
    return ["--video", str(media["ref"]), "--audio", str(media["short"]), "--out", str(out),
            "--geometry-ckpt", str(ckpts["geometry"]), "--render-ckpt", str(ckpts["render"]),
            "--cache-dir", str(out.parent / "cache"), "--no-progress"]


def replace_flag(argv: list[str], flag: str, value: str) -> list[str]:
    argv = list(argv)
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    return argv


# ------------------------------------------------------------------------- dub: flags and files --
FLAG_CASES = [  # (flag, value, what the message must say)
    ("--n-lip", "0", "--n-lip must be >= 1"),
    ("--n-face", "0", "--n-face must be >= 1"),
    ("--render-batch", "0", "--render-batch must be >= 1"),
    ("--chunk", "0", "--chunk must be >= 1"),
    ("--fit-steps", "0", "--fit-steps must be >= 1"),
    ("--vad-min-silence", "-1", "--vad-min-silence must be >= 0"),
    ("--vad-range-db", "-3", "--vad-range-db must be >= 0"),
    ("--geometry-overlap", "500", "--geometry-overlap must be in [0, --geometry-window / 2)"),
    ("--geometry-overlap", "-1", "--geometry-overlap must be in [0, --geometry-window / 2)"),
    ("--geometry-window", "1", "--geometry-window must be >= 2"),
    ("--threads", "0", "--threads must be >= 1"),
    ("--attention-temperature", "0", "--attention-temperature must be a number > 0"),
    ("--attention-temperature", "nan", "--attention-temperature must be a number > 0"),
    ("--preset", "bogus", "--preset must be an x264 preset"),
    ("--crf", "99", "--crf must be in [0, 51]"),
    ("--face", "-1", "--face must be an integer in [0, 3]"),
]


@pytest.mark.parametrize("flag, value, message", FLAG_CASES, ids=[f"{f}={v}" for f, v, _ in FLAG_CASES])
def test_bad_flag_values_name_the_flag(flag, value, message, media, ckpts, tmp_path, capsys):
    code, err = dub(replace_flag(base_argv(media, ckpts, tmp_path / "o.mp4"), flag, value), capsys)
    assert code == 2 and message in err, err
    assert "Config" not in err  # the flag the user typed, not an internal config field
    assert nothing_written(tmp_path)


FILE_CASES = [  # (flag, which bad file, what the message must say)
    ("--video", "folder", "--video {path}: is a folder"),
    ("--video", "missing", "--video {path}: no such file"),
    ("--video", "face", "--video {path}: is a still image, not a video"),
    ("--video", "one_frame", "--video {path}: too short: 1 frame"),
    ("--video", "noise", "--video {path}: not a readable video"),
    ("--audio", "missing", "--audio {path}: no such file"),
    ("--audio", "noise", "--audio {path}: not a readable audio file"),
    ("--audio", "silent", "--audio {path}: the file has no audio stream"),
    ("--geometry-ckpt", "missing", "--geometry-ckpt {path}: no such checkpoint file"),
    ("--geometry-ckpt", "random", "--geometry-ckpt {path}: not a readable checkpoint"),
    ("--geometry-ckpt", "truncated", "--geometry-ckpt {path}: not a readable checkpoint"),
    ("--render-ckpt", "tensor", "--render-ckpt {path}: not a src.train checkpoint"),
]


@pytest.mark.parametrize("flag, which, message", FILE_CASES, ids=[f"{f}={w}" for f, w, _ in FILE_CASES])
def test_bad_input_files_name_the_flag_and_the_file(flag, which, message, bad, media, ckpts, tmp_path, capsys):
    path = bad.get(which, bad["root"] / "missing.mp4")
    code, err = dub(replace_flag(base_argv(media, ckpts, tmp_path / "o.mp4"), flag, str(path)), capsys)
    assert code == 2 and message.format(path=path) in err, err
    assert "Traceback" not in err
    assert nothing_written(tmp_path)


def test_swapped_checkpoints_say_which_stage_each_is(media, ckpts, tmp_path, capsys):
    argv = base_argv(media, ckpts, tmp_path / "o.mp4")
    argv = replace_flag(replace_flag(argv, "--geometry-ckpt", str(ckpts["render"])), "--render-ckpt",
                        str(ckpts["geometry"]))
    code, err = dub(argv, capsys)
    assert code == 2 and f"--geometry-ckpt {ckpts['render']}: this is a render (stage 2) checkpoint" in err, err
    assert "pass it as --render-ckpt" in err and nothing_written(tmp_path)


@pytest.mark.parametrize("out, message", [
    ("folder", "--out {out}: is a folder"),
    ("a_file/o.mp4", "is a file, not a folder"),
    ("o.avi", "--out {out}: the output must be an .mp4"),
])
def test_bad_output_paths(out, message, bad, media, ckpts, capsys):
    out = bad["root"] / out
    code, err = dub(base_argv(media, ckpts, out), capsys)
    assert code == 2 and message.format(out=out) in err, err


def test_output_over_an_input_is_refused(media, ckpts, tmp_path, capsys):
    argv = base_argv(media, ckpts, tmp_path / "o.mp4")
    copy_ref = tmp_path / "ref.mp4"
    shutil.copy(media["ref"], copy_ref)
    argv = replace_flag(replace_flag(argv, "--video", str(copy_ref)), "--out", str(copy_ref))
    code, err = dub(argv, capsys)
    assert code == 2 and "would overwrite an input" in err and copy_ref.read_bytes() == media["ref"].read_bytes()


def test_read_only_output_folder_fails_before_the_work(media, ckpts, tmp_path, capsys, monkeypatch):
    """(as root, chmod does not stop writes: the permission check itself is what is tested)"""
    folder = tmp_path / "ro"
    folder.mkdir()
    monkeypatch.setattr(pipeline.os, "access", lambda path, mode: Path(path) != folder)
    monkeypatch.setattr(pipeline, "analyse_reference", _must_not_run)
    code, err = dub(base_argv(media, ckpts, folder / "o.mp4"), capsys)
    assert code == 2 and f"the folder {folder} is not writable" in err, err
    assert nothing_written(folder)


def test_full_disk_fails_before_the_work(media, ckpts, tmp_path, capsys, monkeypatch):
    full = shutil._ntuple_diskusage(100 << 20, 99 << 20, 1 << 20)  # (total, used, free) bytes
    monkeypatch.setattr(pipeline.shutil, "disk_usage", lambda path: full)
    monkeypatch.setattr(pipeline, "analyse_reference", _must_not_run)
    code, err = dub(base_argv(media, ckpts, tmp_path / "o.mp4"), capsys)
    assert code == 2 and "only 1.0 MiB free" in err, err
    assert nothing_written(tmp_path)


def test_a_bad_audio_stops_the_dub_before_the_video_analysis(bad, media, ckpts, tmp_path, capsys, monkeypatch):
    """An audio file whose stream cannot be decoded (header fine, data not) fails before the reference is analysed."""
    monkeypatch.setattr(pipeline, "analyse_reference", _must_not_run)
    broken = tmp_path / "broken.wav"
    data = bytearray(media["short"].read_bytes())
    broken.write_bytes(bytes(data[:44]))  # a WAV header and no samples
    code, err = dub(replace_flag(base_argv(media, ckpts, tmp_path / "o.mp4"), "--audio", str(broken)), capsys)
    assert code == 2 and f"--audio {broken}" in err, err
    assert nothing_written(tmp_path)


def _must_not_run(*args, **kwargs):
    raise AssertionError("the reference analysis ran before the error was found")


def test_ctrl_c_says_interrupted_and_writes_nothing(media, ckpts, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "render_faces", interrupted)
    argv = base_argv(media, ckpts, tmp_path / "o.mp4") + ["--fit-steps", "40", "--n-lip", "7"]
    code, err = dub(argv, capsys)
    assert code == 130 and "interrupted, nothing written" in err and "Traceback" not in err
    assert nothing_written(tmp_path)


def test_stale_partials_of_dead_dubs_are_removed(tmp_path):
    out = tmp_path / "o.mp4"
    dead, alive, other = (tmp_path / f".o.partial-{pid}.mp4" for pid in (2**22 + 12345, os.getpid(), 1))
    unrelated = tmp_path / ".p.partial-99999999.mp4"
    for path in (dead, alive, other, unrelated):
        path.write_bytes(b"x")
    remove_stale_partials(out)
    assert not dead.exists() and alive.exists() and other.exists() and unrelated.exists()


def test_long_audio_on_a_short_video_warns_with_the_figures(caplog):
    with caplog.at_level(logging.WARNING, logger="src.inference.pipeline"):
        pipeline.warn_long_output(25 * 7200, 125, Path("v.mp4"), Path("a.wav"))
    assert "7200.0 s" in caplog.text and "5.0 s" in caplog.text and "1440 times" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="src.inference.pipeline"):
        pipeline.warn_long_output(250, 125, Path("v.mp4"), Path("a.wav"))
    assert not caplog.text


# ------------------------------------------------------------------------------ hostile checkpoints --
class Payload:
    """Unpickling this creates the marker file (it would run any code the same way)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def hostile(ckpts, tmp_path: Path, edit) -> tuple[Path, Path]:
    """A copy of the stage-1 checkpoint with ``edit(checkpoint, marker)`` applied; (checkpoint, marker)."""
    marker = tmp_path / "MARKER"
    checkpoint = torch.load(ckpts["geometry"], map_location="cpu", weights_only=True)
    edit(checkpoint, marker)
    path = tmp_path / "hostile.ckpt"
    torch.save(checkpoint, path)
    return path, marker


def _pickle_payload(ckpt, marker):
    ckpt["payload"] = Payload(marker)


def _target_open(ckpt, marker):
    ckpt["run_info"]["config"]["model"]["net"] = {"_target_": "builtins.open", "file": str(marker), "mode": "w"}


def _nested_target(ckpt, marker):
    ckpt["run_info"]["config"]["model"]["net"]["e_aud"] = {"_target_": "builtins.open", "file": str(marker),
                                                           "mode": "w"}


def _walk_out_of_the_project(ckpt, marker):
    ckpt["run_info"]["config"]["model"]["net"]["e_aud"] = {"_target_": "src.models.face_model.os.system",
                                                           "command": f"touch {marker}"}


def _args_key(ckpt, marker):
    ckpt["run_info"]["config"]["model"]["net"]["_args_"] = [str(marker)]


HOSTILE = {"pickle payload": (_pickle_payload, "refused: the file holds Python objects"),
           "_target_ builtins.open": (_target_open, "model.net._target_='builtins.open'"),
           "nested _target_": (_nested_target, "model.net.e_aud._target_='builtins.open'"),
           "path out of the project": (_walk_out_of_the_project, "'src.models.face_model.os.system', which is not one"),
           "_args_ key": (_args_key, "refused: its config uses model.net._args_")}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_checkpoints_are_refused_with_nothing_executed(case, ckpts, tmp_path):
    edit, message = HOSTILE[case]
    path, marker = hostile(ckpts, tmp_path, edit)
    with pytest.raises(ValueError, match="refused") as err:
        load_stage("geometry", path)
    assert message in str(err.value) and str(path) in str(err.value)
    assert not marker.exists()


def test_a_target_that_walks_out_of_the_project_is_refused(ckpts, tmp_path):
    def edit(ckpt, marker):
        ckpt["run_info"]["config"]["model"]["net"]["e_aud"] = {"_target_": "src.models.face_model.subprocess.Popen"}

    path, marker = hostile(ckpts, tmp_path, edit)
    with pytest.raises(ValueError, match="src.models.face_model.subprocess.Popen.*not one of the project's model"):
        load_stage("geometry", path)


def test_the_dub_cli_refuses_a_hostile_checkpoint(media, ckpts, tmp_path, capsys):
    path, marker = hostile(ckpts, tmp_path, _target_open)
    code, err = dub(replace_flag(base_argv(media, ckpts, tmp_path / "o.mp4"), "--geometry-ckpt", str(path)), capsys)
    assert code == 2 and f"--geometry-ckpt {path}: refused" in err and not marker.exists()


# ------------------------------------------------------------------------------------------- build --
def build(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = build_main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--root", "{missing}"], "--root {missing}: no such folder"),
    (["--root", "{empty}"], "--root {empty}: folder: no clips under"),
    (["--root", "{empty}", "--limit", "0"], "--limit must be >= 1"),
    (["--root", "{empty}", "--quality", "{missing}"], "--quality {missing}: no such file"),
    (["--root", "{empty}", "--workers", "0"], "--workers and --shard-size must be >= 1"),
    (["--root", "{empty}", "--val", "0.6", "--test", "0.6"], "val + test < 1"),
])
def test_build_argument_errors(extra, message, tmp_path, capsys):
    names = {"missing": tmp_path / "nope", "empty": tmp_path / "empty"}
    names["empty"].mkdir()
    argv = ["--source", "folder", "--out", str(tmp_path / "shards")] + [a.format(**names) for a in extra]
    code, err = build(argv, capsys)
    assert code == 2 and message.format(**names) in err, err
    assert "Traceback" not in err and not list((tmp_path / "shards").glob("*.tar"))


def test_a_failed_clip_is_retried_and_a_build_without_samples_fails(media, tmp_path, capsys):
    """A clip that cannot be decoded fails; with every clip failed the build exits 1 and writes no shard. Once the
    file is fixed, the re-run processes it (no stale error) and writes its shard."""
    root, out = tmp_path / "clips", tmp_path / "shards"
    root.mkdir()
    clip = root / "person_a.mp4"
    clip.write_bytes(np.random.default_rng(1).bytes(5000))  # a broken download
    quality = tmp_path / "quality.yaml"  # the test clip's face is small (256 px frames): no face-size threshold
    quality.write_text(QUALITY.read_text().replace("face_size: [128.0, null]", "face_size: [null, null]"))
    argv = ["--source", "folder", "--root", str(root), "--out", str(out), "--workers", "1", "--fit-steps", "60",
            "--min-seconds", "1", "--val", "0", "--test", "0", "--quality", str(quality)]
    code, err = build(argv, capsys)
    printed = err + capsys.readouterr().out
    assert code == 1 and "no shards written" in err and not list(out.glob("*.tar")), printed
    shutil.copy(media["long"], clip)  # fixed: a 3 s clip of one synthetic speaker
    code, err = build(argv, capsys)
    assert code == 0, err
    assert "1 failed last time: tried again" in err
    assert [p.name for p in out.glob("*.tar")] == ["train-000000.tar"]
    assert not json.loads((out / "index.json").read_text())["report"]["failed"]


# ---------------------------------------------------------------------------------------- training --
def truncated_copy(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes()[: src.stat().st_size // 3])
    return dst


def test_training_skips_a_truncated_shard_and_logs_it(synthetic_shards, tmp_path, caplog):
    (good,) = sorted(synthetic_shards.glob("train-*.tar"))
    again = tmp_path / "train-copy.tar"
    shutil.copy(good, again)
    broken = truncated_copy(good, tmp_path / "train-broken.tar")
    urls = "data.urls={train:[" + ",".join(f"'{p}'" for p in (good, again, broken)) + "]}"
    cfg = compose_config(["experiment=geometry_demo", f"data.root={synthetic_shards}", *GEOMETRY_TEST_OVERRIDES,
                          urls, "data.max_bad_fraction=0.5", "trainer.max_steps=3", "test=false",
                          "data.train_batches=3", "+trainer.limit_val_batches=1"], tmp_path / "run")
    with caplog.at_level(logging.WARNING, logger="src.data.shards"):
        _, objects = train(cfg)
    assert objects["trainer"].global_step == 3
    assert f"skipped unreadable shard {broken}" in caplog.text


def test_training_fails_past_the_bad_fraction_naming_the_shards(synthetic_shards, tmp_path):
    (good,) = sorted(synthetic_shards.glob("train-*.tar"))
    broken = [truncated_copy(good, tmp_path / f"train-broken{i}.tar") for i in range(2)]
    cfg = compose_config(["experiment=geometry_demo", f"data.root={synthetic_shards}", *GEOMETRY_TEST_OVERRIDES,
                          "data.urls={train:[" + ",".join(f"'{p}'" for p in (good, *broken)) + "]}",
                          "data.max_bad_fraction=0.4",
                          "trainer.max_steps=3", "test=false"], tmp_path / "run")
    with pytest.raises(RuntimeError, match="shards are unreadable, more than max_bad_fraction=0.4") as err:
        train(cfg)
    assert str(broken[0]) in str(err.value)


# --------------------------------------------------------------------------------------- benchmark --
def test_benchmark_scores_the_readable_clips_and_lists_the_bad_shard(synthetic, tmp_path, capsys):
    shards = tmp_path / "shards"
    shutil.copytree(synthetic["shards"], shards)
    with tarfile.open(shards / "test-000000.tar") as tar:
        first = next(m for m in tar.getmembers() if m.name.endswith(".json"))
        data = tar.extractfile(first).read()
    with tarfile.open(shards / "test-000000.tar", "w") as tar:  # the first clip only
        info = tarfile.TarInfo(first.name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    # the second clip's shard, cut inside its first member's data
    (shards / "test-000001.tar").write_bytes((synthetic["shards"] / "test-000000.tar").read_bytes()[:520])
    index = json.loads((shards / "index.json").read_text())
    index["shards"]["test"].append("test-000001.tar")
    (shards / "index.json").write_text(json.dumps(index))
    bad: list[str] = []
    assert len(synthetic_videos(shards, unreadable=bad)) == 1 and "test-000001.tar" in bad[0]
    out = tmp_path / "out"
    args = ["--split", "synthetic", "--shards", str(shards), "--method", f"blur={synthetic['blur']}", "--metrics",
            "ssim", "psnr", "--out", str(out), *no_weights_config(tmp_path), *BENCH_FAST]
    assert benchmark.main(args) == 0
    printed = capsys.readouterr().out
    assert "(1 videos)" in printed and "unreadable shard, its clips not scored" in printed
    result = json.loads((out / "benchmark.json").read_text())
    assert any("test-000001.tar" in s for s in result["unreadable_shards"])
    assert "test-000001.tar" in (out / "benchmark.md").read_text()


# --------------------------------------------------------------------------------- no network at all --
@pytest.fixture
def no_network(monkeypatch):
    def refuse(self, *args, **kwargs):
        raise OSError("network access attempted during a test with sockets blocked")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def test_a_dub_runs_with_sockets_blocked(no_network, media, ckpts, tmp_path):
    from src.inference.pipeline import Dubber

    result = Dubber(ckpts["geometry"], ckpts["render"]).dub(media["ref"], media["short"], tmp_path / "o.mp4",
                                                             make_cfg(tmp_path))
    assert result.out.is_file() and result.n_frames == 30


def test_a_tiny_training_runs_with_sockets_blocked(no_network, synthetic_shards, tmp_path):
    cfg = compose_config(["experiment=geometry_demo", f"data.root={synthetic_shards}", *GEOMETRY_TEST_OVERRIDES,
                          "trainer.max_steps=2", "test=false", "+trainer.limit_val_batches=1"], tmp_path / "run")
    _, objects = train(cfg)
    assert objects["trainer"].global_step == 2

