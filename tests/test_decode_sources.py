"""data_prep.sources (dataset layouts, speaker splits) and src.media.decode (probe, constant-rate frames,
aligned audio), on tiny videos written here and, when present, the real clips in ../shared/data/."""
import json
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from data_prep.sources import list_clips, speaker_split
from data_prep.synthetic.video_io import write_mp4
from src.media.decode import DecodeError, iter_frames, n_output_frames, probe, read_audio, rotate_upright

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TICKS = 90000  # video time base of the test writer: 1/90000 s


# ------------------------------------------------------------------------------------------ writers

def _index_image(i: int, h: int = 32, w: int = 48) -> np.ndarray:
    """Flat colour encoding frame index i in R (low 5 bits) and G (high bits), 8 levels apart."""
    return np.broadcast_to(np.array([8 * (i % 32) + 4, 8 * (i // 32) + 4, 128], np.uint8), (h, w, 3)).copy()


def _read_index(image: np.ndarray) -> int:
    r, g = image[..., 0].mean(), image[..., 1].mean()
    return int(round((r - 4) / 8)) + 32 * int(round((g - 4) / 8))


def _write_indexed(path: Path, pts: list[int], rate=25, audio: np.ndarray | None = None, sr: int = 16000) -> Path:
    """Frame i (showing index i) at pts[i] / 90000 s; optional mono AAC audio starting at 0."""
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = 48, 32, "yuv420p"
        video.codec_context.time_base = Fraction(1, TICKS)
        video.options = {"crf": "10", "threads": "1"}
        sound = out.add_stream("aac", rate=sr, layout="mono") if audio is not None else None
        for i, t in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(_index_image(i), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, TICKS)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            frame = av.AudioFrame.from_ndarray(audio.astype(np.float32)[None], format="flt", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = sr, 0, Fraction(1, sr)
            out.mux(sound.encode(frame))
            out.mux(sound.encode(None))
    return path


def _set_rotation(path: Path, degrees: int) -> None:
    """Write a clockwise display rotation into the first track header (tkhd) matrix, as phones do."""
    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd")
    at += 4 + (52 if data[at + 4] == 1 else 40)  # version 1 has 64-bit times
    c, s = {0: (1, 0), 90: (0, 1), 180: (-1, 0), 270: (0, -1)}[degrees]
    data[at:at + 36] = struct.pack(">9i", c << 16, s << 16, 0, -s << 16, c << 16, 0, 0, 0, 1 << 30)
    path.write_bytes(bytes(data))


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


# ------------------------------------------------------------------------------------------ layouts

def test_voxceleb2_and_synthetic(tmp_path):
    _touch(tmp_path, "dev/mp4/id00012/21Uxsk56VDQ/00001.mp4", "dev/mp4/id00012/21Uxsk56VDQ/00002.mp4",
           "test/mp4/id00017/abcdefghijk/00001.mp4", "dev/aac/id00012/21Uxsk56VDQ/00001.m4a")
    clips = list_clips("voxceleb2", tmp_path)
    assert [c.key for c in clips] == ["voxceleb2/id00012/21Uxsk56VDQ/00001", "voxceleb2/id00012/21Uxsk56VDQ/00002",
                                      "voxceleb2/id00017/abcdefghijk/00001"]
    assert [c.speaker for c in clips] == ["id00012", "id00012", "id00017"]
    assert clips[2].meta == {"video_id": "abcdefghijk", "split": "test"} and "split" not in clips[0].meta
    _touch(tmp_path / "syn", "id00001/-Ab_c/00001.mp4", "id00001/-Ab_c/00001.json", "corpus.json")
    (clip,) = list_clips("synthetic", tmp_path / "syn")
    assert clip.speaker == "id00001" and clip.meta["sidecar"].endswith("00001.json")
    _touch(tmp_path / "syn", "id00002/xyz/00001.mp4")
    with pytest.raises(FileNotFoundError, match="sidecar"):
        list_clips("synthetic", tmp_path / "syn")


def test_celebvhq(tmp_path):
    _touch(tmp_path, "35666/-0IuQpMlSfU_0.mp4", "35666/-0IuQpMlSfU_1.mp4", "35666/zzzzzzzzzzz_3.mp4")
    info = {"meta_info": {}, "clips": {f"-0IuQpMlSfU_{i}": {
        "ytb_id": "-0IuQpMlSfU", "duration": {"start_sec": i, "end_sec": i + 5}, "bbox": {}, "attributes": {},
        "version": "v0.1"} for i in (0, 1)}}
    (tmp_path / "celebvhq_info.json").write_text(json.dumps(info))
    with pytest.warns(UserWarning, match="1 clips missing"):
        clips = list_clips("celebvhq", tmp_path)
    assert [c.speaker for c in clips] == ["-0IuQpMlSfU", "-0IuQpMlSfU", "zzzzzzzzzzz"]
    assert clips[1].meta["duration"] == {"start_sec": 1, "end_sec": 6} and clips[2].meta == {}
    (tmp_path / "celebvhq_info.json").unlink()
    with pytest.raises(ValueError, match="celebvhq_info.json"):
        list_clips("celebvhq", tmp_path)


VFHQ_TXT = """Video: Ab-12_cd
H: 720
W: 1280
FPS: 29.97

FRAME INDEX X0 Y0 W H [Landmarks (5 Points)]

000120 0 100 80 200 220 150.1 160.2 230.3 161.0 190.0 200.0 160.0 250.0 225.0 251.0
000121 0 101 80 200 220 150.1 160.2 230.3 161.0 190.0 200.0 160.0 250.0 225.0 251.0
CROP_BBOX: 40 20 400 380
"""


def test_vfhq(tmp_path):
    name = "Clip+Ab-12_cd+P0+C1+F120-F121"
    _touch(tmp_path, f"clips/{name}.mp4", "clips/Clip+Ab-12_cd+P1+C0+F5-F9.mp4")
    (tmp_path / "meta_info").mkdir()
    (tmp_path / "meta_info" / f"{name}.txt").write_text(VFHQ_TXT)
    with pytest.warns(UserWarning, match="1 clips without an annotation"):
        clips = list_clips("vfhq", tmp_path)
    assert [c.speaker for c in clips] == ["Ab-12_cd+P0", "Ab-12_cd+P1"]
    meta = clips[0].meta
    assert (meta["fps"], meta["width"], meta["height"], meta["crop_bbox"]) == (29.97, 1280, 720, [40, 20, 400, 380])
    assert (meta["person"], meta["clip"], meta["frame_start"], meta["frame_end"]) == (0, 1, 120, 121)
    assert meta["annotated_frames"] == 2 and meta["annotated_range"] == [120, 121]
    (tmp_path / "clips" / "Clip+Xy+P0+C0+F1-F2").mkdir()
    with pytest.raises(NotImplementedError, match="PNG frames"):
        list_clips("vfhq", tmp_path)


def test_hdtf_and_test_list(tmp_path):
    _touch(tmp_path, "WDA_KatieHill_000.mp4", "WDA_KatieHill_001.mp4", "RD_Radio31_000.mp4", "WRA_A_B_000.mp4")
    (tmp_path / "test.txt").write_text("RD_Radio31_000.mp4\n\nWRA_A_B_000\n")
    clips = list_clips("hdtf", tmp_path, test_list=tmp_path / "test.txt")
    assert {c.key: c.speaker for c in clips} == {"hdtf/RD_Radio31_000": "RD_Radio31", "hdtf/WDA_KatieHill_000":
                                                 "WDA_KatieHill", "hdtf/WDA_KatieHill_001": "WDA_KatieHill",
                                                 "hdtf/WRA_A_B_000": "WRA_A_B"}
    assert [c.meta.get("split") for c in clips] == ["test", None, None, "test"]
    (tmp_path / "test.txt").write_text("WDA_Nobody_000\n")
    with pytest.raises(ValueError, match="WDA_Nobody_000"):
        list_clips("hdtf", tmp_path, test_list=tmp_path / "test.txt")


def test_folder_and_errors(tmp_path):
    _touch(tmp_path, "alice/talk 1.MOV", "alice/b.mkv", "bob/x/c.webm", "solo.mp4", "notes.txt")
    clips = list_clips("folder", tmp_path)
    assert {c.key: c.speaker for c in clips} == {"folder/alice/talk_1": "alice", "folder/alice/b": "alice",
                                                 "folder/bob/x/c": "bob/x", "folder/solo": "solo"}
    with pytest.raises(ValueError, match="one of voxceleb2"):
        list_clips("lrs3", tmp_path)
    with pytest.raises(ValueError, match=r"expected \[dev\|test/\].*found .*notes.txt"):
        list_clips("voxceleb2", tmp_path)
    with pytest.raises(FileNotFoundError):
        list_clips("folder", tmp_path / "missing")
    _touch(tmp_path, "alice/b.mp4")
    with pytest.raises(ValueError, match="share the key"):
        list_clips("folder", tmp_path)


def test_speaker_split_deterministic_disjoint_stable():
    speakers = [f"id{i:05d}" for i in range(200)]
    split = speaker_split(speakers, val=0.1, test=0.1, seed=0)
    assert split == speaker_split(list(reversed(speakers)), val=0.1, test=0.1, seed=0)
    assert set(split) == set(speakers) and set(split.values()) == {"train", "val", "test"}
    assert 10 <= list(split.values()).count("test") <= 30
    grown = speaker_split(speakers + [f"new{i}" for i in range(50)], val=0.1, test=0.1, seed=0)
    assert all(grown[s] == split[s] for s in speakers)
    assert speaker_split(speakers, 0.1, 0.1, seed=1) != split
    for n in (3, 4, 5):
        assert set(speaker_split(speakers[:n], 0.05, 0.05, seed=0).values()) == {"train", "val", "test"}
    with pytest.raises(ValueError, match="val and test"):
        speaker_split(speakers, 0.6, 0.5, seed=0)


# ------------------------------------------------------------------------------------------ decoding

@pytest.mark.parametrize("name, pts", [
    ("30fps", [3000 * i for i in range(40)]),
    ("22.13fps", [round(i * TICKS / 22.13) for i in range(30)]),
    ("vfr", [sum(3000 if j % 2 else 6000 for j in range(i)) for i in range(30)]),  # 1/15 s and 1/30 s, as real phones
    ("25fps", [3600 * i for i in range(30)]),
])
def test_fps_resampling_picks_the_displayed_frame(tmp_path, name, pts):
    path = _write_indexed(tmp_path / f"{name}.mp4", pts)
    info = probe(path)
    frames = list(iter_frames(path, fps=25.0))
    assert len(frames) == n_output_frames(info.duration_s, 25.0) > 0
    expected = [max(i for i, t in enumerate(pts) if t <= 3600 * k) for k in range(len(frames))]
    assert [_read_index(f.image) for f in frames] == expected
    assert [f.index for f in frames] == list(range(len(frames))) and frames[3].time_s == pytest.approx(0.12)
    assert frames[0].image.shape == (32, 48, 3) and frames[0].image.dtype == np.uint8


@pytest.mark.parametrize("fmt, codec", [("matroska", "libx264"), ("webm", "libvpx-vp9"), ("avi", "mpeg4")])
def test_other_containers(tmp_path, fmt, codec):
    path = tmp_path / f"clip.{fmt}"
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        stream.bit_rate = 4_000_000  # flat colours must survive mpeg4's default quality
        for i in range(30):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(_index_image(i), format="rgb24")))
        out.mux(stream.encode(None))
    assert probe(path).duration_s == pytest.approx(1.0)
    assert [_read_index(f.image) for f in iter_frames(path)] == [k * 30 // 25 for k in range(25)]


def test_rotation_metadata_and_arrays(tmp_path):
    image = np.zeros((2, 3, 1), np.uint8)
    image[0, 0] = 1  # top-left
    assert rotate_upright(image, 90)[0, -1, 0] == 1 and rotate_upright(image, 90).shape == (3, 2, 1)
    assert rotate_upright(image, 180)[-1, -1, 0] == 1 and rotate_upright(image, 270)[-1, 0, 0] == 1
    with pytest.raises(ValueError, match="rotation"):
        rotate_upright(image, 45)
    path = _write_indexed(tmp_path / "rot.mp4", [3600 * i for i in range(5)])
    _set_rotation(path, 90)
    info = probe(path)
    assert (info.rotation, info.width, info.height) == (90, 32, 48)
    assert next(iter_frames(path)).image.shape == (48, 32, 3)


def _click_clip(tmp_path: Path, sr: int) -> Path:
    audio = np.zeros(2 * sr, np.float32)
    audio[sr:sr + sr // 1000] = 0.8  # 1 ms click at exactly 1.0 s
    frames = (np.full((32, 32, 3), 100, np.uint8) for _ in range(50))
    return write_mp4(tmp_path / f"click{sr}.mp4", frames, audio, sr, fps=25)


@pytest.mark.parametrize("sr", [16000, 44100])
def test_audio_click_lands_at_one_second(tmp_path, sr):
    path = _click_clip(tmp_path, sr)
    audio = read_audio(path, 16000, n_frames=50, fps=25.0)
    assert audio.dtype == np.float32 and audio.shape == (32000,) and np.abs(audio).max() <= 1.0
    onset = np.flatnonzero(np.abs(audio) > 0.5 * np.abs(audio).max())[0] / 16000
    assert abs(onset - 1.0) < 0.001  # AAC priming removed, resampler delay compensated
    assert read_audio(path, 16000, n_frames=40, fps=25.0).shape == (25600,)
    padded = read_audio(path, 16000, n_frames=60, fps=25.0)
    assert padded.shape == (38400,) and not padded[32500:].any()


def test_audio_follows_a_late_video_start(tmp_path):
    sr = 16000
    audio = np.zeros(2 * sr, np.float32)
    audio[sr:sr + 16] = 0.8  # click at 1.0 s of the file's clock
    path = _write_indexed(tmp_path / "late.mp4", [18000 + 3600 * i for i in range(40)], audio=audio, sr=sr)
    info = probe(path)
    assert info.start_s == pytest.approx(0.2) and info.has_audio and info.audio_rate == sr
    out = read_audio(path, sr, n_frames=n_output_frames(info.duration_s, 25), fps=25.0)
    onset = np.flatnonzero(np.abs(out) > 0.5 * np.abs(out).max())[0] / sr
    assert abs(onset - 0.8) < 0.001  # t = 0 is the first video frame, not the file's clock


def test_no_audio_and_errors(tmp_path):
    path = _write_indexed(tmp_path / "silent.mp4", [3600 * i for i in range(5)])
    assert read_audio(path) is None and not probe(path).has_audio and probe(path).codec == "h264"
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(DecodeError, match="notes.mp4"):
        probe(tmp_path / "notes.mp4")
    with pytest.raises(FileNotFoundError, match="nothing.mp4"):
        probe(tmp_path / "nothing.mp4")
    with pytest.raises(ValueError, match="fps"):
        next(iter_frames(path, fps=0))
    with pytest.raises(ValueError, match="together"):
        read_audio(path, n_frames=3)
    with av.open(str(tmp_path / "speech.wav"), "w") as out:  # audio only: readable, but not a video
        stream = out.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.full((1, 800), 1000, np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with pytest.raises(DecodeError, match="no video stream"):
        probe(tmp_path / "speech.wav")
    wav = read_audio(tmp_path / "speech.wav", 16000)
    assert len(wav) == pytest.approx(1600, abs=40) and abs(wav[800] - 1000 / 32768) < 1e-3


# ------------------------------------------------------------------------------------------ real clips

def _real(name: str) -> Path:
    path = DATA / "video" / name
    if not path.is_file():
        pytest.skip(f"real test clip {path} not present (../shared/data is outside the repository)")
    return path


def test_real_clips_probe():
    if not (DATA / "video").is_dir():
        pytest.skip(f"{DATA / 'video'} not present")
    infos = {p.name: probe(p) for p in sorted((DATA / "video").glob("*.mp4"))}
    assert len(infos) >= 1 and all(i.width > 0 and i.duration_s > 0 and i.fps > 0 for i in infos.values())
    if "Weizhi-Zhong__IP_LAP__129.mp4" in infos:
        assert not infos["Weizhi-Zhong__IP_LAP__129.mp4"].has_audio


def test_real_hevc_portrait_clip():
    path = _real("bytedance__LatentSync__demo1_video.mp4")
    info = probe(path)
    assert (info.codec, info.width, info.height, info.rotation) == ("hevc", 1080, 1920, 0)
    frames = iter_frames(path)
    assert [next(frames).image.shape for _ in range(3)] == [(1920, 1080, 3)] * 3
    frames.close()


def test_real_variable_rate_clip():
    path = _real("OpenTalker__video-retalking__1.mp4")  # 22.13 fps average: frames of 1/30 s and 1/15 s
    info = probe(path)
    assert info.fps == pytest.approx(22.13, abs=0.01) and info.n_frames == 135
    n = sum(1 for _ in iter_frames(path, fps=25.0))
    assert n == int(info.duration_s * 25) == 152
    assert read_audio(path, 16000, n_frames=n, fps=25.0).shape == (n * 640,)
