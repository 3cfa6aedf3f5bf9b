"""Our evaluators: SyncNet and SyncScore (eval.models.syncnet, eval.audio_features, eval.metrics.sync,
eval.train_syncnet), the style encoder and StyleSim (eval.models.style_encoder, eval.metrics.stylesim,
eval.train_style_encoder), Fig. 5 (eval.style_tsne, eval.tsne)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from eval.audio_features import audio_windows, int16_scale, mfcc
from eval.metrics.stylesim import StyleSim, video_embedding
from eval.metrics.sync import SyncScore, lip_input, offset_distances, score
from eval.models.style_encoder import StyleEncoder, StyleEncoderConfig, load_style_encoder
from eval.models.syncnet import SYNCNET_SMALL, SYNCNET_V2, SyncNet, SyncNetConfig, load_syncnet


# ---------------------------------------------------------------------------------------- SyncNet --
def test_syncnet_v2_state_dict_has_the_reference_layout_and_round_trips(tmp_path, one_torch_thread):
    net = SyncNet(SYNCNET_V2)
    state = net.state_dict()
    # the published syncnet_v2.model's tensors (joonson/syncnet_python SyncNetModel.S)
    expected = {"netcnnaud.0.weight": (64, 1, 3, 3), "netcnnaud.4.weight": (192, 64, 3, 3),
                "netcnnaud.18.weight": (512, 256, 5, 4), "netcnnaud.19.running_var": (512,),
                "netfcaud.0.weight": (512, 512), "netfcaud.3.weight": (1024, 512),
                "netcnnlip.0.weight": (96, 3, 5, 7, 7), "netcnnlip.4.weight": (256, 96, 1, 5, 5),
                "netcnnlip.18.weight": (512, 256, 1, 6, 6), "netfclip.1.running_mean": (512,),
                "netfclip.3.weight": (1024, 512)}
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert len([k for k in state if not k.endswith("num_batches_tracked")]) == 88  # 12 convs, 12 BatchNorms, 2 heads
    # a file as the reference saved it: a plain dict of tensors, from a PyTorch without BatchNorm counters
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()
    plain = {k: v.clone() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(plain, tmp_path / "syncnet_v2.model")
    loaded = load_syncnet(tmp_path / "syncnet_v2.model")
    assert loaded.config == SYNCNET_V2 and not loaded.training
    for key, value in plain.items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with torch.no_grad():
        lip, aud = loaded(torch.rand(2, 3, 5, 224, 224) * 255, torch.randn(2, 1, 13, 20))
    assert lip.shape == aud.shape == (2, 1024)
    # a wrong file is refused with its name
    torch.save({k: v for k, v in plain.items() if "netfclip" not in k}, tmp_path / "bad.model")
    with pytest.raises(RuntimeError, match="bad.model"):
        load_syncnet(tmp_path / "bad.model")


def test_load_syncnet_missing_file_says_what_and_where(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"syncnet_v2\.model.*data/models/syncnet_v2\.model"):
        load_syncnet(tmp_path / "nowhere" / "syncnet_v2.model")


def test_syncnet_small_shape_and_backward(one_torch_thread):
    net = SyncNet(SYNCNET_SMALL)
    lip, aud = net(torch.rand(3, 3, 5, 96, 96), torch.randn(3, 1, 13, 20))
    assert lip.shape == aud.shape == (3, 128)
    (lip - aud).pow(2).sum().backward()
    assert net.netcnnlip[0].weight.grad is not None and net.netcnnaud[0].weight.grad is not None
    with pytest.raises(ValueError, match=r"\(B, 3, 5, 96, 96\)"):
        net.forward_lip(torch.rand(3, 3, 5, 224, 224))


# ------------------------------------------------------------------------------------------- MFCC --
def _mfcc_by_the_formula(x: np.ndarray) -> np.ndarray:
    """python_speech_features.mfcc(x, 16000) written out frame by frame from its definition."""
    x = x.astype(np.float64)
    y = np.empty_like(x)
    y[0] = x[0]
    y[1:] = x[1:] - 0.97 * x[:-1]
    n_frames = 1 if len(y) <= 400 else 1 + math.ceil((len(y) - 400) / 160)
    y = np.concatenate([y, np.zeros((n_frames - 1) * 160 + 400 - len(y))])

    def mel(f):
        return 2595 * math.log10(1 + f / 700)

    def hz(m):
        return 700 * (10 ** (m / 2595) - 1)

    edges = [math.floor(513 * hz(mel(8000) * j / 27) / 16000) for j in range(28)]
    bank = np.zeros((26, 257))
    for j in range(26):
        a, b, c = edges[j], edges[j + 1], edges[j + 2]
        for i in range(257):
            if a <= i < b:
                bank[j, i] = (i - a) / (b - a)
            elif b <= i < c:
                bank[j, i] = (c - i) / (c - b)
    n = np.arange(26)
    dct = np.array([[math.sqrt((1 if k == 0 else 2) / 26) * math.cos(math.pi * k * (2 * m + 1) / 52) for m in n]
                    for k in range(13)])
    out = []
    for f in range(n_frames):
        power = np.abs(np.fft.rfft(y[160 * f:160 * f + 400], 512)) ** 2 / 512
        ceps = dct @ np.log(bank @ power)
        ceps *= 1 + 11 * np.sin(np.pi * np.arange(13) / 22)
        ceps[0] = np.log(power.sum())
        out.append(ceps)
    return np.array(out)


def test_mfcc_matches_the_reference_formula():
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(16000 * 2 + 321) * 2000).astype(np.int16)
    ours = mfcc(audio)
    assert ours.shape == (1 + math.ceil((len(audio) - 400) / 160), 13)  # 100 per second
    np.testing.assert_allclose(ours, _mfcc_by_the_formula(audio), rtol=1e-9, atol=1e-9)
    # float audio in [-1, 1] is scored on the int16 scale the reference reads
    np.testing.assert_allclose(mfcc(int16_scale(audio.astype(np.float32) / 32768)), ours, atol=1e-9)


def test_mfcc_matches_python_speech_features_when_installed():
    psf = pytest.importorskip("python_speech_features")
    audio = (np.random.default_rng(1).standard_normal(16000) * 3000).astype(np.int16)
    np.testing.assert_allclose(mfcc(audio), psf.mfcc(audio, 16000), rtol=1e-9, atol=1e-9)


def test_audio_windows_are_four_columns_per_frame():
    feats = np.arange(119 * 13, dtype=np.float64).reshape(119, 13)  # 30 frames of audio
    windows = audio_windows(feats, 25)
    assert windows.shape == (25, 1, 13, 20)
    assert torch.equal(windows[7, 0], torch.from_numpy(feats[28:48].T).float())
    with pytest.raises(ValueError, match="MFCC frames"):
        audio_windows(feats, 26)


# ------------------------------------------------------------------------------------- SyncScore --
def test_offset_distances_are_the_reference_calc_pdist():
    torch.manual_seed(0)
    video, audio, shift = torch.randn(12, 8), torch.randn(12, 8), 4
    padded = torch.cat([torch.zeros(shift, 8), audio, torch.zeros(shift, 8)])
    loop = torch.stack([torch.nn.functional.pairwise_distance(video[[i]].repeat(2 * shift + 1, 1),
                                                              padded[i:i + 2 * shift + 1]) for i in range(12)])
    torch.testing.assert_close(offset_distances(video, audio, shift), loop)


class OracleSyncNet(nn.Module):
    """A hand-built stand-in for a trained SyncNet on ``oracle_clip``s: the lip feature is the log darkness
    of the mouth box in each of the 5 frames, the audio feature the log energy (MFCC c0) of each frame's 4
    columns, both standardised within the window; they agree exactly when sound and mouth are in sync."""

    config = SyncNetConfig(image_size=(32, 32), crop_region=(0.0, 0.0, 1.0, 1.0), channel_order="rgb",
                           pixel_scale=1 / 255)

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the metric a device

    @staticmethod
    def standardise(x):
        return (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True).clamp(min=1e-3)

    def forward_lip(self, lip):
        dark = 1 - lip[:, :, :, 12:20, 8:24].mean((1, 3, 4))  # (B, 5)
        return self.standardise(dark.clamp(min=1e-3).log())

    def forward_aud(self, mfccs):
        return self.standardise(mfccs[:, 0, 0].reshape(len(mfccs), 5, 4).mean(2))  # (B, 5)


def oracle_clip(n: int = 150, seed: int = 0, delay: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic face crops whose mouth box darkens with the loudness of the speech, frame by frame; the
    audio delayed by ``delay`` frames against the video (negative: ahead)."""
    rng = np.random.default_rng(seed)
    loud = np.exp(rng.uniform(np.log(0.05), 0, n + 40))  # (n + 40,) per-frame amplitude
    audio = (rng.standard_normal((n + 40, 640)) * loud[:, None] * 0.3).astype(np.float32)
    frames = np.full((n + 40, 32, 32, 3), 255, np.uint8)
    frames[:, 12:20, 8:24] = np.round(255 * (1 - loud)).astype(np.uint8)[:, None, None, None]
    return frames[20:20 + n], audio[20 - delay:20 - delay + n].reshape(-1)


@pytest.mark.parametrize("delay", [0, 3, -4, 11])
def test_syncscore_recovers_a_shift_of_k_frames(delay, one_torch_thread):
    """Sign convention: audio delayed by k frames against the video -> sync_offset = -k."""
    result = score(OracleSyncNet(), *oracle_clip(delay=delay))
    assert result["sync_offset"] == -delay
    assert result["sync_conf"] > 1.5 and result["lse_d"] < 1.0


def test_syncscore_is_best_on_synced_input_and_worse_when_not(one_torch_thread):
    net = OracleSyncNet()
    synced = score(net, *oracle_clip(seed=3))
    shifted = score(net, *oracle_clip(seed=3, delay=2))
    beyond = score(net, *oracle_clip(seed=3, delay=20))  # outside the +-15 search
    frames, _ = oracle_clip(seed=4)
    other = score(net, frames, oracle_clip(seed=5)[1])  # another clip's audio
    assert synced["sync_offset"] == 0 and shifted["sync_offset"] == -2
    assert synced["lse_d"] == min(synced["mean_dist"])
    assert synced["mean_dist"][15] < shifted["mean_dist"][15]  # at offset 0 the shifted clip is far worse
    for worse in (beyond, other):
        assert worse["sync_conf"] < synced["sync_conf"] / 3 and worse["lse_d"] > synced["lse_d"] + 1.0


def test_syncscore_metric_averages_videos_and_skips_short_tracks(one_torch_thread):
    metric = SyncScore(OracleSyncNet())
    for clip in (oracle_clip(seed=0), oracle_clip(seed=1, delay=2), oracle_clip(n=60)):
        metric.update(*clip)
    a, b, short = metric.results
    assert math.isnan(short["sync_conf"]) and "min_frames=100" in short["skipped"]
    out = metric.compute()
    assert set(out) == {"sync_conf", "sync_offset", "lse_d"}
    assert out["sync_conf"].item() == pytest.approx((a["sync_conf"] + b["sync_conf"]) / 2, rel=1e-5)
    assert out["sync_offset"].item() == pytest.approx(-1.0)
    assert metric.skipped == [short["skipped"]]
    metric.reset()
    assert metric.skipped == [] and metric.results == []


def test_lip_input_crops_pads_and_orders_channels():
    frames = np.zeros((2, 256, 256, 3), np.uint8)
    frames[..., 0] = 200  # red
    v2 = lip_input(frames, SYNCNET_V2)  # the reference's region runs 16 px below the crop: padded with 110
    assert v2.shape == (2, 3, 224, 224) and v2.dtype == torch.uint8
    assert v2[0, 2, 100, 112] == 200 and v2[0, 0, 100, 112] == 0  # BGR: red is the last channel
    assert v2[0, 2, -1, 112] == 110 and v2[0, 0, -1, 112] == 110
    small = lip_input(frames, SYNCNET_SMALL)
    assert small.shape == (2, 3, 96, 96) and small[0, 0].min() == 200  # RGB, inside the crop
    with pytest.raises(ValueError, match="uint8 RGB"):
        lip_input(frames.astype(np.float32), SYNCNET_V2)


# -------------------------------------------------------------------------- style encoder, StyleSim --
def _tiny_encoder(n_vertices: int = 20, window: int = 8) -> StyleEncoder:
    config = StyleEncoderConfig(n_vertices=n_vertices, vertex_index=tuple(range(0, n_vertices, 2)), window=window,
                                dim=16, depth=1, heads=2, embed_dim=8)
    return StyleEncoder(config)


def test_style_encoder_shape_backward_and_mask(one_torch_thread):
    torch.manual_seed(0)
    net = _tiny_encoder()
    x = torch.randn(3, 8, 20, 3, requires_grad=True)
    codes = net(x)
    assert codes.shape == (3, 8)
    torch.testing.assert_close(codes.norm(dim=1), torch.ones(3))
    codes.sum().backward()
    assert x.grad is not None and net.to_tokens.weight.grad is not None
    net.eval()
    padded = torch.cat([x[:1, :5], torch.randn(1, 3, 20, 3)], 1)
    mask = torch.tensor([[True] * 5 + [False] * 3])
    torch.testing.assert_close(net(padded, mask), net(x[:1, :5]), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\(B, T, 20, 3\)"):
        net(torch.randn(1, 8, 21, 3))


def test_load_style_encoder_missing_file_says_how_to_train(tmp_path):
    with pytest.raises(FileNotFoundError, match="eval.train_style_encoder"):
        load_style_encoder(tmp_path / "style_encoder.ckpt")


def test_stylesim_refuses_vertex_positions(one_torch_thread):
    metric = StyleSim(_tiny_encoder())
    with pytest.raises(ValueError, match="mean face"):
        metric.update(torch.randn(10, 20, 3) + 40.0, torch.randn(10, 20, 3))


@pytest.fixture(scope="module")
def style_checkpoint(synthetic_shards, tmp_path_factory):
    """A style encoder trained briefly on the synthetic shards' two training speakers (16-frame windows)."""
    from eval.train_style_encoder import main

    out = tmp_path_factory.mktemp("style") / "style.ckpt"
    threads = torch.get_num_threads()
    assert main(["--shards", str(synthetic_shards), "--out", str(out), "--steps", "60", "--window", "16", "--dim", "32",
                 "--depth", "1", "--embed-dim", "16", "--windows-per-speaker", "6", "--threads", "1",
                 "--save-every", "30", "--no-progress", "--device", "cpu"]) == 0
    torch.set_num_threads(threads)
    return out


def _speaker_sequences(shards, fm) -> dict[str, torch.Tensor]:
    from eval.shard_clips import expression_mm, iter_samples, meta, npy, split_urls

    return {meta(s)["speaker"]: expression_mm(fm, npy(s, "beta.npy"))
            for s in iter_samples(split_urls(shards, "train", "test"))}


def test_train_style_encoder_checkpoint_and_stylesim(style_checkpoint, synthetic_shards, one_torch_thread):
    from src.models.face_model import load_face_model

    state = torch.load(style_checkpoint, weights_only=True)
    assert state["step"] == 60 and "val/stylesim_same" in state["metrics"]
    encoder = load_style_encoder(style_checkpoint)
    fm = load_face_model("procedural")
    (a, seq_a), (b, seq_b) = sorted(_speaker_sequences(synthetic_shards, fm).items())
    metric = StyleSim(encoder)
    assert metric.score(seq_a, seq_a)["stylesim"] == pytest.approx(1.0, abs=1e-5)
    metric.update(seq_a, seq_a)
    same = metric.score(seq_a[:37], seq_a[38:])["stylesim"]  # two halves of one speaker's clip
    other = metric.score(seq_a[:37], seq_b[38:])["stylesim"]
    assert same > other
    assert metric.compute()["stylesim"].item() == pytest.approx(1.0, abs=1e-5)
    assert video_embedding(encoder, seq_b).shape == (encoder.config.embed_dim,)


# ---------------------------------------------------------------------------------- training runs --
def test_train_syncnet_writes_a_loadable_checkpoint_and_resumes(synthetic_shards, tmp_path):
    from eval.train_syncnet import main

    out = tmp_path / "syncnet.ckpt"
    args = ["--shards", str(synthetic_shards), "--out", str(out), "--batch-size", "4", "--run", "3",
            "--max-shift", "2", "--runs-per-clip", "2", "--shuffle-buffer", "4", "--threads", "1", "--no-progress",
            "--device", "cpu"]
    threads = torch.get_num_threads()
    try:
        assert main([*args, "--steps", "2"]) == 0
        state = torch.load(out, weights_only=True)
        assert state["step"] == 2 and "val/offset0_acc" in state["metrics"] and "train/loss" in state["metrics"]
        net = load_syncnet(out)
        assert net.config == SYNCNET_SMALL
        with pytest.raises(SystemExit, match="--resume"):
            main([*args, "--steps", "3"])
        assert main([*args, "--steps", "3", "--resume"]) == 0
        assert torch.load(out, weights_only=True)["step"] == 3
    finally:
        torch.set_num_threads(threads)


def test_style_tsne_writes_a_png(style_checkpoint, synthetic_shards, tmp_path):
    from eval.shard_clips import iter_samples, meta, npy, split_urls
    from eval.style_tsne import main

    generated = tmp_path / "generated"
    generated.mkdir()
    for sample in iter_samples(split_urls(synthetic_shards, "train", "test")):
        np.save(generated / f"{sample['__key__']}.npy", npy(sample, "beta.npy") * 0.8)
        (generated / f"{sample['__key__']}.json").write_text(json.dumps({"speaker": meta(sample)["speaker"]}))
    out = tmp_path / "fig5.png"
    assert main(["--encoder", str(style_checkpoint), "--real", str(synthetic_shards), "--split", "train",
                 "--generated", str(generated), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp*"))


def test_tsne_keeps_clusters_apart():
    from eval.tsne import tsne

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, 12)) * 4
    x = np.concatenate([c + rng.standard_normal((15, 12)) for c in centres])
    labels = np.repeat(np.arange(4), 15)
    y = tsne(x, perplexity=10, iters=500)
    dist = ((y[:, None] - y[None]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    assert (labels[dist.argmin(1)] == labels).mean() == 1.0


# ------------------------------------------------------------------------------------------- slow --
@pytest.mark.slow
@pytest.mark.timeout(5400)
def test_trained_syncnet_recovers_the_offset_of_shifted_clips(tmp_path):
    """Our SyncNet trained on a synthetic corpus (10 speakers, 2 clips of 6 s each) finds the offset of
    held-out speakers' clips, synced and with the audio 3 frames late or early. Measured: ~9 min in all
    (corpus, 300 training steps, scoring) on 2 shared CPU cores."""
    from data_prep.build import main as build
    from data_prep.synthetic.generate import main as generate
    from eval.shard_clips import iter_samples, npy, split_urls, video_frames
    from eval.train_syncnet import main as train

    corpus, shards, ckpt = tmp_path / "corpus", tmp_path / "shards", tmp_path / "syncnet.ckpt"
    generate(["--out", str(corpus), "--speakers", "10", "--clips-per-speaker", "2", "--seconds", "6", "--seed", "3",
              "--workers", "2"])
    assert build(["--source", "synthetic", "--root", str(corpus), "--out", str(shards), "--workers", "2",
                  "--landmarks", "sidecar", "--fit-steps", "30", "--min-seconds", "1", "--val", "0.2",
                  "--test", "0.2"]) == 0
    assert train(["--shards", str(shards), "--out", str(ckpt), "--steps", "300", "--runs-per-clip", "16",
                  "--workers", "1", "--no-progress"]) == 0
    net = load_syncnet(ckpt)
    found, wanted = [], []
    for split in ("val", "test"):
        for sample in iter_samples(split_urls(shards, split, "test")):
            frames, audio = video_frames(sample["mp4"]), npy(sample, "audio.npy").astype(np.float32) / 32768
            n = len(frames) - 3
            cases = {0: (frames, audio), -3: (frames[3:], audio[:n * 640]), 3: (frames[:n], audio[3 * 640:])}
            for offset, (f, a) in cases.items():
                result = score(net, f, a)
                found.append(result["sync_offset"])
                wanted.append(offset)
    found, wanted = np.array(found), np.array(wanted)
    assert len(found) >= 12
    assert (found == wanted).mean() >= 0.8, list(zip(wanted, found))
