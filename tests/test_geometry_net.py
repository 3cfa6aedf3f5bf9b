"""Stage-1 network (src/models/geometry): shapes for any T, E_aud alignment and loading, the style and
w/o-style paths, gradient flow and overfitting, the zero-start decoder, ALiBi translation equivariance."""
import re

import pytest
import torch
from transformers import HubertConfig, HubertModel

from src.models.geometry import (
    AudioEncoder,
    AudioQueryInjection,
    StyleAwareGeometry,
    StyleEncoder,
    StyleInjection,
    TemplateDriving,
    TemporalSelfAttention,
    VertexDecoder,
    VertexEncoder,
)

D, L, N_LOWER = 32, 40, 24
TINY_HUBERT = dict(
    hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, conv_dim=(16,) * 7,
    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, layerdrop=0.0, hidden_dropout=0.0,
    attention_dropout=0.0, activation_dropout=0.0,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def e_aud(**kwargs) -> AudioEncoder:
    return AudioEncoder(D, config={**TINY_HUBERT, **kwargs.pop("config", {})}, **kwargs)


def build(style: bool = True, injection: type = StyleInjection, freeze: bool = False) -> StyleAwareGeometry:
    torch.manual_seed(0)
    return StyleAwareGeometry(
        e_aud=e_aud(freeze_feature_encoder=freeze),
        e_vtx=VertexEncoder(L, D, hidden=16, input_scale=0.1),
        style_encoder=StyleEncoder(D) if style else None,
        style_injection=injection(D, heads=2) if style else None,
        template_driving=TemplateDriving(D, heads=2),
        temporal=TemporalSelfAttention(D, depth=2, heads=2),
        d_vtx=VertexDecoder(D, N_LOWER, hidden=16),
    )


def batch(b: int = 2, t: int = 7, t_ref: int = 5, n_samples: int | None = None, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return dict(
        audio=torch.randn(b, 640 * t if n_samples is None else n_samples, generator=g),
        n_frames=t,
        vtx_exp_ref=torch.randn(b, t_ref, L, 3, generator=g),
        vtx_temp=torch.randn(b, L, 3, generator=g),
    )


def unfreeze_decoder(net: StyleAwareGeometry) -> None:
    """The zero-initialised last layer blocks every gradient upstream until its first update."""
    torch.nn.init.normal_(net.d_vtx.net[-1].weight, std=0.1)


@pytest.mark.parametrize("t", [1, 7, 61])
@pytest.mark.parametrize("injection", [StyleInjection, AudioQueryInjection])
def test_shapes_any_length(t, injection):
    net = build(injection=injection).eval()
    with torch.no_grad():
        out = net(**batch(b=2, t=t, t_ref=4))
    assert out.shape == (2, t, N_LOWER, 3)


def test_decoder_starts_at_zero_offset():
    net = build()
    assert torch.equal(net(**batch()), torch.zeros(2, 7, N_LOWER, 3))


def test_audio_encoder_two_features_per_frame_aligned():
    # "layer" norm keeps the conv stack local in time (HuBERT-base's group norm spans the whole clip)
    enc = e_aud(config=dict(feat_extract_norm="layer"), normalize=False).eval()
    features = {}
    enc.hubert.feature_extractor.register_forward_hook(lambda m, i, o: features.__setitem__("conv", o))
    t, frame = 6, 3
    audio = torch.randn(1, 640 * t)
    with torch.no_grad():
        enc(audio, t)
        before = features["conv"].clone()  # (1, C, 2T)
        bumped = audio.clone()
        bumped[:, 640 * frame + 60 : 640 * frame + 580] += 1.0  # inside frame 3, off its 40-sample borders
        enc(bumped, t)
    assert before.shape[-1] == 2 * t
    changed = (features["conv"] - before).abs().amax(1)[0] > 1e-6  # (2T,)
    assert changed.nonzero().flatten().tolist() == [2 * frame, 2 * frame + 1]


@pytest.mark.parametrize("n_samples", [640 * 7 - 5, 640 * 7 + 3, 640 * 7 - 640, 640 * 7 + 640])
def test_audio_encoder_tolerates_up_to_one_frame_off(n_samples):
    with torch.no_grad():
        a = e_aud().eval()(torch.randn(2, n_samples), 7)
    assert a.shape == (2, 7, D)


@pytest.mark.parametrize("n_samples", [640 * 7 - 641, 640 * 7 + 641])
def test_audio_encoder_rejects_more_than_one_frame_off(n_samples):
    with pytest.raises(ValueError, match="n_frames=7"):
        e_aud()(torch.randn(2, n_samples), 7)


def test_audio_normalisation_uses_real_samples_only():
    # a short waveform is zero-padded; gain and offset must still cancel, so padding comes after the statistics
    enc = e_aud().eval()
    audio = torch.randn(2, 640 * 5 - 100)
    with torch.no_grad():
        assert torch.allclose(enc(audio, 5), enc(3.0 * audio + 0.5, 5), atol=1e-4)


def test_audio_encoder_needs_exactly_one_source():
    with pytest.raises(ValueError, match="exactly one"):
        AudioEncoder(D)
    with pytest.raises(ValueError, match="exactly one"):
        AudioEncoder(D, pretrained="x", config=TINY_HUBERT)


def test_audio_encoder_loads_pretrained_folder(tmp_path):
    torch.manual_seed(1)
    saved = HubertModel(HubertConfig(**TINY_HUBERT, mask_time_prob=0.05))
    saved.save_pretrained(tmp_path)
    enc = AudioEncoder(D, pretrained=str(tmp_path), freeze_feature_encoder=True)
    expected, loaded = saved.state_dict(), enc.hubert.state_dict()
    assert expected.keys() == loaded.keys()
    assert all(torch.equal(expected[k], loaded[k]) for k in expected)
    assert enc.hubert.config.mask_time_prob == 0.0 and not enc.hubert.masked_spec_embed.requires_grad
    assert not any(p.requires_grad for p in enc.hubert.feature_extractor.parameters())


def test_audio_encoder_missing_pretrained_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "absent"))):
        AudioEncoder(D, pretrained=str(tmp_path / "absent"))
    HubertConfig(**TINY_HUBERT).save_pretrained(tmp_path)  # config.json only, no weights
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        AudioEncoder(D, pretrained=str(tmp_path))
    (tmp_path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        AudioEncoder(D, pretrained=str(tmp_path))


@pytest.mark.parametrize("seed", range(3))
def test_style_query_reads_the_audio_around_its_frame(seed):
    """style_query with the ALiBi bias (the default): frame 0's output depends on the audio near frame 0 far
    more than on frames 30-49 (about 0.2x with ALiBi's own slopes, against about 1x from the position codes
    alone)."""
    ratios = {}
    for alibi in (True, False):
        torch.manual_seed(seed)
        injection = StyleInjection(64, heads=4, alibi=alibi, alibi_max_slope=None)
        audio = torch.randn(1, 50, 64, requires_grad=True)
        injection(audio, torch.randn(1, 64))[0, 0].sum().backward()
        grad = audio.grad[0].norm(dim=-1)  # (T,) influence of each audio frame on frame 0
        ratios[alibi] = float(grad[30:].mean() / grad[:3].mean())
    assert ratios[True] < 0.35 and ratios[False] > 2 * ratios[True], ratios


def test_style_code_and_mask():
    net = build().eval()
    b = batch(t_ref=6)
    mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    with torch.no_grad():
        s = net.style(b["vtx_exp_ref"], mask)
        s_crop = net.style(b["vtx_exp_ref"][:1, :4])
        assert torch.allclose(s[:1], s_crop, atol=1e-5)  # padded frames do not count
        unfreeze_decoder(net)
        from_ref = net(**b)
        from_code = net(b["audio"], 7, vtx_temp=b["vtx_temp"], style_code=net.style(b["vtx_exp_ref"]))
        other = net(b["audio"], 7, vtx_temp=b["vtx_temp"], style_code=net.style(-b["vtx_exp_ref"]))
    assert torch.allclose(from_ref, from_code)
    assert not torch.allclose(from_ref, other, atol=1e-4)  # the style code reaches the output
    with pytest.raises(ValueError, match="exactly one"):
        net(b["audio"], 7, vtx_temp=b["vtx_temp"])


def test_without_style():
    net = build(style=False)
    unfreeze_decoder(net)
    b = batch()
    out = net(b["audio"], 7, vtx_temp=b["vtx_temp"])
    assert out.shape == (2, 7, N_LOWER, 3)
    assert torch.equal(out, net(**b))  # the reference is unused
    with pytest.raises(ValueError, match="no style branch"):
        net(b["audio"], 7, vtx_temp=b["vtx_temp"], style_code=torch.zeros(2, D))
    with pytest.raises(ValueError, match="both"):
        StyleAwareGeometry(net.e_aud, net.e_vtx, StyleEncoder(D), None, net.template_driving, net.temporal, net.d_vtx)


def test_template_tokens_beyond_one_not_implemented():
    with pytest.raises(NotImplementedError, match="template_tokens=3"):
        TemplateDriving(D, heads=2, template_tokens=3)


def test_gradients_reach_every_trainable_parameter():
    net = build(freeze=True)
    unfreeze_decoder(net)
    out = net(**batch())
    out.square().mean().backward()
    # one key token makes the softmax constant: its query/key projections get an exact zero gradient
    single_token_qk = ("template_driving.block.attn.to_q", "template_driving.block.attn.to_k")
    silent = [n for n, p in net.named_parameters()
              if p.requires_grad and not n.startswith(single_token_qk) and (p.grad is None or p.grad.abs().sum() == 0)]
    assert silent == []
    frozen = [p for n, p in net.named_parameters() if n.startswith("e_aud.hubert.feature_extractor.")]
    assert frozen and all(not p.requires_grad and p.grad is None for p in frozen)


def test_overfits_a_tiny_batch():
    net = build()
    b = batch(b=2, t=6, t_ref=5, seed=3)
    # a per-sample pose scaled over time: learnable through the 16-wide decoder bottleneck, unlike noise
    pose = torch.randn(2, 1, N_LOWER, 3, generator=torch.Generator().manual_seed(4))
    target = pose * torch.linspace(0.5, 1.5, 6)[None, :, None, None]  # (2, 6, N_LOWER, 3)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = (net(**b) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def test_temporal_attention_is_translation_equivariant():
    # the same 9 frames placed at the start or after 5 padded frames: ALiBi sees only distances, and the
    # padded frames must be invisible, so the outputs on the real frames agree
    torch.manual_seed(0)
    temporal = TemporalSelfAttention(D, depth=2, heads=4).eval()
    x = torch.randn(1, 9, D)
    early = torch.cat([x, torch.randn(1, 5, D)], 1)  # (1, 14, D)
    late = torch.cat([torch.randn(1, 5, D), x], 1)  # (1, 14, D)
    mask_early = torch.arange(14)[None] < 9
    mask_late = torch.arange(14)[None] >= 5
    with torch.no_grad():
        out_early = temporal(early, mask_early)[:, :9]
        out_late = temporal(late, mask_late)[:, 5:]
        unmasked = temporal(late)[:, 5:]
    assert torch.allclose(out_early, out_late, atol=1e-5)
    assert not torch.allclose(out_early, unmasked, atol=1e-3)  # the mask matters
