"""eval.speed peers: the peer generators build from their published layouts and give frames of the right size;
the CLI prints one row per network and batch in fresh processes. Timings themselves are not asserted."""
from __future__ import annotations

import subprocess
import sys

import torch

from eval.models.musetalk_generator import UNET, VAE, MuseTalkGenerator
from eval.models.wav2lip_generator import Wav2LipGenerator

TINY_UNET = {**UNET, "block_out_channels": (32, 32, 64, 64), "attention_head_dim": 2, "norm_num_groups": 8,
             "cross_attention_dim": 16}
TINY_VAE = {**VAE, "block_out_channels": (8, 8, 16, 16), "norm_num_groups": 4, "layers_per_block": 1}


def test_musetalk_generator_maps_latents_and_audio_to_a_frame(one_torch_thread):
    net = MuseTalkGenerator(64, unet=TINY_UNET, vae=TINY_VAE).eval()
    inputs = net.inputs(2)
    assert inputs["latents"].shape == (2, 8, 8, 8) and inputs["audio"].shape == (2, 50, 16)
    with torch.no_grad():
        assert net(**inputs).shape == (2, 3, 64, 64)


def test_musetalk_published_layout_is_sd15_with_eight_input_channels():
    assert UNET["in_channels"] == 8 and UNET["out_channels"] == 4 and UNET["cross_attention_dim"] == 384
    assert UNET["block_out_channels"] == (320, 640, 1280, 1280) and VAE["latent_channels"] == 4


def test_wav2lip_generator_is_96_px_with_about_36m_parameters(one_torch_thread):
    net = Wav2LipGenerator().eval()
    with torch.no_grad():
        assert net(**net.inputs(2)).shape == (2, 3, 96, 96)
    assert 30e6 < sum(p.numel() for p in net.parameters()) < 45e6  # the paper's generator: ~36M


def test_peers_cli_prints_a_row_per_network_and_batch():
    done = subprocess.run([sys.executable, "-m", "eval.speed", "peers", "--networks", "wav2lip", "--batches", "1", "2",
                           "--calls", "1", "--threads", "1"], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| wav2lip |")]
    assert [r.split("|")[3].strip() for r in rows] == ["1", "2"]
