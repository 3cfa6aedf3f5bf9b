"""MuseTalk's generator, for timing only (``python -m eval.speed peers``), built from its published configs with
``diffusers`` and random weights (speed does not depend on them).

MuseTalk (Zhang et al. 2024) inpaints the lower half of the face in the latent space of Stable Diffusion's VAE
(sd-vae-ft-mse: ``AutoencoderKL``, 128-256-512-512 channels, 4 latent channels, 8x down) with one step of an SD-1.x
``UNet2DConditionModel`` (320-640-1280-1280, 8 input channels: the masked target's and a reference frame's latents
side by side, 4 output channels), cross-attending to Whisper-tiny audio features (50 x 384 per frame). Its
real-time mode precomputes both latents of every avatar frame, so a generated frame costs one U-Net call and
one VAE decode, which is what ``forward`` does:

    latents (B, 8, S/8, S/8) + audio (B, 50, 384) -> U-Net at t = 0 -> (B, 4, S/8, S/8) -> VAE decode -> (B, 3, S, S)
"""
from __future__ import annotations

import torch
from torch import nn

AUDIO_TOKENS, AUDIO_DIM = 50, 384  # Whisper-tiny features of the frame's audio window
UNET = dict(in_channels=8, out_channels=4, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
            attention_head_dim=8, cross_attention_dim=AUDIO_DIM, norm_num_groups=32, norm_eps=1e-5,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            flip_sin_to_cos=True, freq_shift=0, downsample_padding=1, act_fn="silu")
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
           layers_per_block=2, norm_num_groups=32, act_fn="silu",
           down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
VAE_SCALE = 0.18215  # SD's latent scaling


class MuseTalkGenerator(nn.Module):
    """One MuseTalk frame generation; ``unet`` / ``vae`` override the published configs (tests use tiny ones)."""

    def __init__(self, size: int = 256, unet: dict | None = None, vae: dict | None = None) -> None:
        super().__init__()
        from diffusers import AutoencoderKL, UNet2DConditionModel

        self.size = size
        self.unet = UNet2DConditionModel(sample_size=size // 8, **(unet or UNET))
        self.vae = AutoencoderKL(sample_size=size, **(vae or VAE))
        self.audio_dim = self.unet.config.cross_attention_dim

    def inputs(self, batch: int, device: str | torch.device = "cpu") -> dict:
        """Random inputs of one call: the two latents and the audio features."""
        latent = self.size // 8
        return {"latents": torch.randn(batch, 8, latent, latent, device=device),
                "audio": torch.randn(batch, AUDIO_TOKENS, self.audio_dim, device=device)}

    def forward(self, latents: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        out = self.unet(latents, 0, encoder_hidden_states=audio).sample  # (B, 4, S/8, S/8)
        return self.vae.decode(out / VAE_SCALE).sample  # (B, 3, S, S)
