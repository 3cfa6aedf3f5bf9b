"""The synthetic corpus: files as promised, deterministic, a real audio-mouth relation, distinct styles."""
import filecmp
import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from data_prep.synthetic import motion
from data_prep.synthetic.generate import main as generate
from data_prep.synthetic.persona import Persona
from data_prep.synthetic.phonemes import random_utterance
from data_prep.synthetic.video_io import read_mp4
from data_prep.synthetic.visemes import mouth_tracks
from src.models.face_model import load_face_model

ARGS = ["--speakers", "2", "--clips-per-speaker", "1", "--seconds", "2", "--seed", "0", "--size", "256",
        "--workers", "1"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn")
    assert generate(["--out", str(out), *ARGS]) == 0
    return out


def _clips(root: Path) -> list[Path]:
    return sorted(root.glob("id*/*/*.mp4"))


def test_layout_and_streams(corpus):
    clips = _clips(corpus)
    assert len(clips) == 2 and {c.parts[-3] for c in clips} == {"id00001", "id00002"}
    for mp4 in clips:
        assert mp4.name == "00001.mp4" and len(mp4.parent.name) == 11
        with av.open(str(mp4)) as container:
            video, audio = container.streams.video[0], container.streams.audio[0]
            assert video.average_rate == 25 and video.codec_context.name == "h264"
            assert (video.width, video.height) == (256, 256)
            assert audio.rate >= 16000
            assert abs(float(audio.duration * audio.time_base) - 2.0) < 0.05
            assert sum(1 for _ in container.decode(video=0)) == 50
        side = json.loads(mp4.with_suffix(".json").read_text())
        assert side["n_frames"] == 50 and len(side["beta"]) == 50 and len(side["pose"]) == 50
        assert np.asarray(side["landmarks_478"]).shape == (50, 478, 2)
        assert np.asarray(side["landmarks_68"]).shape == (50, 68, 2)
        assert side["phonemes"][0]["start"] == 0.0 and abs(side["phonemes"][-1]["end"] - 2.0) < 1e-6
        assert {"style", "voice", "appearance"} <= set(side["persona"])
    assert (corpus / "preview.png").is_file() and (corpus / "corpus.json").is_file()


def test_rerun_skips_and_fresh_run_is_identical(corpus, tmp_path, capsys):
    assert generate(["--out", str(corpus), *ARGS]) == 0
    assert "0 generated, 2 already there" in capsys.readouterr().out
    assert generate(["--out", str(tmp_path), *ARGS]) == 0
    for a, b in zip(_clips(corpus), _clips(tmp_path)):
        assert (filecmp.cmp(a, b, shallow=False)
                and filecmp.cmp(a.with_suffix(".json"), b.with_suffix(".json"), shallow=False))


def test_mouth_opening_follows_the_audio(corpus):
    """The mouth opening in the ground truth correlates with the energy envelope of the decoded audio."""
    for mp4 in _clips(corpus):
        frames, audio, fps, sr = read_mp4(mp4)
        opening = np.asarray(json.loads(mp4.with_suffix(".json").read_text())["mouth_opening_mm"])
        hop = sr // 25
        rms = np.array([np.sqrt(np.mean(audio[max(0, t * hop - hop // 2): t * hop + hop + hop // 2] ** 2))
                        for t in range(len(opening))])
        r = np.corrcoef(rms, opening)[0, 1]
        assert r > 0.5, f"{mp4}: audio-mouth correlation {r:.2f}"


def test_speakers_differ_on_the_same_sentence():
    """Same phonemes, two personas: amplitude and corner asymmetry of the mouth differ measurably."""
    fm = load_face_model("procedural")
    events = random_utterance(np.random.default_rng(3), 6.0)
    stats = []
    for speaker in range(2):
        persona = Persona.sample(f"id{speaker}", fm.n_id, np.random.default_rng([0, speaker]))
        beta = torch.from_numpy(motion.to_coefficients(mouth_tracks(events, persona.style, 25.0), fm.exp_names))
        verts = fm.expression_vertices(beta)  # (T, L, 3)
        corners = verts[:, [291, 61], 1] - fm.mean[[291, 61], 1]  # left, right corner lift (mm)
        stats.append((float(fm.mouth_opening(verts).mean()), float((corners[:, 0] - corners[:, 1]).mean())))
    (open_a, asym_a), (open_b, asym_b) = stats
    assert max(open_a, open_b) / min(open_a, open_b) > 1.15 or abs(asym_a - asym_b) > 0.5, stats


def test_detector_finds_the_faces(corpus):
    """MediaPipe's face mesh (the detector data_prep uses) finds the synthetic faces where they are."""
    pytest.importorskip("mediapipe")
    from data_prep.synthetic.check import detection_report

    report = detection_report(corpus, every=2)
    assert report["rate"] >= 0.9, report
    assert report["error_px"]["eyes"] < 5.0 and report["error_px"]["lips"] < 8.0, report  # 256 px frames


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(SystemExit):
        generate(["--out", str(tmp_path), "--speakers", "0"])
    with pytest.raises(ValueError, match="face model spec"):
        generate(["--out", str(tmp_path), "--face-model", "flame"])


def test_resume_with_other_settings_is_refused(corpus):
    changed = [*ARGS]
    changed[changed.index("--seconds") + 1] = "3"
    with pytest.raises(ValueError, match="--seconds 2.0 -> 3.0"):
        generate(["--out", str(corpus), *changed])
