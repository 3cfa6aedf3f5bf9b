"""Stage-2 network (src/models/renderer): shapes for every attention variant and any number of references, chunked
attention against the plain formula, the never-the-full-score-matrix property, Eq. 4 fusion, gradient
flow, permutation invariance of the reference set, and clear errors."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from src.models.renderer import (
    DualAttentionFusion,
    DualAttentionRenderer,
    FaceAttention,
    FaceAttentionOnly,
    GeometryEncoder,
    LipAttention,
    LipAttentionOnly,
    ReferenceAttention,
    SingleAttention,
    TextureDecoder,
    TextureEncoder,
)
from src.models.renderer.attention import set_inference_temperature
from src.models.renderer.cell_patches import CellPatches
from src.models.renderer.chunked_attention import chunked_attention
from src.models.renderer.chunked_attention import sdpa_kernel as sdpa_kernel_for
from src.models.renderer.d_tex_sampled import SampledTextureDecoder
from src.models.renderer.flow_patches import FlowPatches
from src.models.renderer.nearest_references import NearestFaceReferences
from src.models.renderer.slot_code import SlotCode

C, HEADS, S = 16, 2, 32  # width, heads, image size (latent 8 x 8)
LATENT = (S // 4, S // 4)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


DECODERS = {"latent": TextureDecoder, "sampled": SampledTextureDecoder}
# the attention variants (experiments/model/net/attention/), each from the width, heads and query chunk
VARIANTS = {
    "dual": lambda *a: DualAttentionFusion(LipAttention(C, HEADS, LATENT, *a), FaceAttention(C, HEADS, LATENT, *a)),
    "single": lambda *a: SingleAttention(ReferenceAttention(C, HEADS, LATENT, *a)),
    "lip_only": lambda *a: LipAttentionOnly(LipAttention(C, HEADS, LATENT, *a)),
    "face_only": lambda *a: FaceAttentionOnly(FaceAttention(C, HEADS, LATENT, *a)),
}


def build(variant: str = "dual", query_chunk: int | None = 7, depth: int = 2, seed: int = 0,
          decoder: str = "latent", margin: int = 0, face_patches: CellPatches | None = None) -> DualAttentionRenderer:
    torch.manual_seed(seed)
    attention = VARIANTS[variant](query_chunk)
    d_tex = DECODERS[decoder](C, depth=depth)
    if decoder == "sampled":  # as after some training: the zero-initialised head would block every gradient
        torch.nn.init.normal_(d_tex.to_rgb.weight, std=0.1)
    return DualAttentionRenderer(GeometryEncoder(C, norm_groups=4), TextureEncoder(C), attention, d_tex,
                                 CellPatches(4, margin), face_patches)


def inputs(b: int = 2, n_face: int = 3, n_lip: int = 4, size: int | tuple[int, int] = S, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    h, w = (size, size) if isinstance(size, int) else size
    return dict(
        tgt_pncc=torch.rand(b, 3, h, w, generator=g),
        tgt_lip_mask=(torch.rand(b, 1, h, w, generator=g) > 0.6).float(),
        face_ref_img=torch.rand(b, n_face, 3, h, w, generator=g),
        face_ref_pncc=torch.rand(b, n_face, 3, h, w, generator=g),
        lip_ref_img=torch.rand(b, n_lip, 3, h, w, generator=g),
        lip_ref_pncc=torch.rand(b, n_lip, 3, h, w, generator=g),
    )


# ----- parts -----


def test_encoders_quarter_the_resolution():
    for encoder in (GeometryEncoder(C), TextureEncoder(C, norm_groups=2)):
        assert encoder(torch.rand(3, 3, 32, 48)).shape == (3, C, 8, 12)
        with pytest.raises(ValueError, match=r"must be \(B, 3, H, W\) with H, W multiples of 4"):
            encoder(torch.rand(1, 3, 30, 32))
    with pytest.raises(ValueError, match="dim must be an even width"):
        GeometryEncoder(15)
    with pytest.raises(ValueError, match="norm_groups must divide"):
        TextureEncoder(C, norm_groups=3)


def test_decoder_shape_range_and_depth():
    latent, pncc = torch.randn(2, C, 8, 12), torch.rand(2, 3, 32, 48)
    paper, deeper = TextureDecoder(C), TextureDecoder(C, depth=4, upsample="bilinear")
    for decoder in (paper, deeper):
        out = decoder(latent, pncc)
        assert out.shape == (2, 3, 32, 48) and out.min() >= 0 and out.max() <= 1
    extra = sum(p.numel() for p in deeper.parameters()) - sum(p.numel() for p in paper.parameters())
    assert extra == 2 * (C * C * 9 + C) + 2 * ((C // 2) ** 2 * 9 + C // 2)  # 2 residual 3x3 convs per stage
    with pytest.raises(ValueError, match=r"tgt_pncc must be \(B, 3, 4h, 4w\)"):
        paper(latent, torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="depth must be >= 2"):
        TextureDecoder(C, depth=1)


def reference_attention(attn: ReferenceAttention, q_geo, ref_geo, ref_tex) -> torch.Tensor:
    """The formula written out with an explicit score matrix, no SDPA, no chunks."""
    b, n, c, h, w = ref_geo.shape
    pos = attn.position(h, w)  # (1, h*w, C)
    q = attn.to_q(attn.norm_geo(q_geo.flatten(2).transpose(1, 2)) + pos)  # (B, h*w, C)
    k = attn.to_k(attn.norm_geo(ref_geo.flatten(3).transpose(2, 3)) + pos[:, None]).reshape(b, n * h * w, c)
    v = attn.to_v(ref_tex.flatten(3).transpose(2, 3).reshape(b, n * h * w, c))  # (B, N*h*w, C)
    q, k, v = (x.reshape(b, x.shape[1], HEADS, c // HEADS).transpose(1, 2) for x in (q, k, v))  # (B, nh, t, e)
    scores = q @ k.transpose(-1, -2) / math.sqrt(c // HEADS)  # (B, nh, h*w, N*h*w)
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, h * w, c)  # (B, h*w, C)
    return attn.to_out(out).transpose(1, 2).reshape(b, c, h, w)


@pytest.mark.parametrize("latent", [(8, 8), (12, 10)])
def test_chunked_attention_equals_unchunked(latent):
    g = torch.Generator().manual_seed(1)
    q_geo, ref = torch.randn(2, C, *latent, generator=g), torch.randn(2, 2, 3, C, *latent, generator=g)
    attns = {chunk: ReferenceAttention(C, HEADS, LATENT, query_chunk=chunk) for chunk in (7, 64, None)}
    for attn in attns.values():
        attn.load_state_dict(attns[None].state_dict())
    expected = reference_attention(attns[None], q_geo, ref[0], ref[1])
    for chunk, attn in attns.items():
        torch.testing.assert_close(attn(q_geo, ref[0], ref[1]), expected, atol=1e-5, rtol=1e-5, msg=f"chunk {chunk}")
    with sdpa_kernel([SDPBackend.MATH]):  # the fallback kernel that builds scores gives the same
        torch.testing.assert_close(attns[7](q_geo, ref[0], ref[1]), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk", [7, 16])
def test_attention_never_requests_the_full_score_matrix(monkeypatch, chunk):
    """Every SDPA call sees at most query_chunk queries against the N*h*w keys: the score block per head
    is <= query_chunk * N*h*w, linear in N, never (h*w) x (N*h*w)."""
    calls = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        calls.append((q.shape[-2], k.shape[-2]))
        return sdpa(q, k, v, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    tokens = LATENT[0] * LATENT[1]
    for n_lip in (1, 4, 16):
        calls.clear()
        renderer = build("dual", query_chunk=chunk)
        with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]):  # the kernel that would build the scores
            renderer(**inputs(b=1, n_face=2, n_lip=n_lip))
        lip_calls = [(q, k) for q, k in calls if k == n_lip * tokens]
        assert sum(q for q, _ in lip_calls) == tokens  # every query answered once
        assert all(q <= chunk < tokens for q, _ in calls)
        assert max(q * k for q, k in lip_calls) == chunk * n_lip * tokens  # the bound, linear in N_l


def test_a_fused_kernel_gets_every_query_in_one_call(monkeypatch):
    """Flash (on the CPU too, fp32 and bf16) never builds the scores: no chunking there."""
    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda q, k, v, **kw: calls.append(q.shape[-2]) or
                        sdpa(q, k, v, **kw))
    q = torch.randn(1, HEADS, 40, 8)
    kernel = sdpa_kernel_for(q, q, q)
    assert kernel in ("flash", "efficient", "cudnn", "math")
    chunked_attention(q, q, q, chunk=7)
    assert calls == ([40] if kernel != "math" else [7] * 5 + [5])
    with sdpa_kernel([SDPBackend.MATH]):
        assert sdpa_kernel_for(q, q, q) == "math"
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert sdpa_kernel_for(q, q, q) == "math"


def test_checkpointed_chunks_give_the_same_gradients():
    torch.manual_seed(0)
    plain = ReferenceAttention(C, HEADS, LATENT, query_chunk=5)
    recomputed = ReferenceAttention(C, HEADS, LATENT, query_chunk=5, checkpoint_chunks=True)
    recomputed.load_state_dict(plain.state_dict())
    q_geo, ref_geo, ref_tex = torch.randn(1, C, 8, 8), torch.randn(1, 3, C, 8, 8), torch.randn(1, 3, C, 8, 8)
    for attn in (plain, recomputed):
        with sdpa_kernel([SDPBackend.MATH]):  # the kernel that is chunked
            attn(q_geo, ref_geo, ref_tex).square().mean().backward()
    for (name, a), b in zip(plain.named_parameters(), recomputed.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_positional_embedding_resizes_to_other_latent_sizes():
    attn = ReferenceAttention(C, HEADS, latent_size=(8, 8))
    assert torch.equal(attn.position(8, 8), attn.position.weight.flatten(2).transpose(1, 2))  # configured size: as is
    assert attn.position(16, 16).shape == (1, 256, C) and attn.position(4, 6).shape == (1, 24, C)
    out = attn(torch.randn(1, C, 16, 16), torch.randn(1, 2, C, 16, 16), torch.randn(1, 2, C, 16, 16))
    assert out.shape == (1, C, 16, 16)


def test_reference_set_is_order_invariant_without_a_slot_code():
    torch.manual_seed(0)
    q_geo, ref_geo, ref_tex = torch.randn(1, C, 8, 8), torch.randn(1, 4, C, 8, 8), torch.randn(1, 4, C, 8, 8)
    perm = torch.tensor([2, 0, 3, 1])
    as_set = ReferenceAttention(C, HEADS, LATENT)
    torch.testing.assert_close(as_set(q_geo, ref_geo, ref_tex), as_set(q_geo, ref_geo[:, perm], ref_tex[:, perm]))
    ordered = ReferenceAttention(C, HEADS, LATENT, slot_code=SlotCode(C))
    assert not torch.allclose(ordered(q_geo, ref_geo, ref_tex), ordered(q_geo, ref_geo[:, perm], ref_tex[:, perm]))
    assert ordered(q_geo, torch.randn(1, 40, C, 8, 8), torch.randn(1, 40, C, 8, 8)).shape == (1, C, 8, 8)


def test_attention_bad_input():
    attn = LipAttention(C, HEADS, LATENT)
    with pytest.raises(ValueError, match=r"LipAttention: ref_geo must be \(B, N, C, h, w\)"):
        attn(torch.randn(1, C, 8, 8), torch.randn(1, 2, C, 8, 4), torch.randn(1, 2, C, 8, 4))
    with pytest.raises(ValueError, match="ref_tex must have ref_geo's shape"):
        attn(torch.randn(1, C, 8, 8), torch.randn(1, 2, C, 8, 8), torch.randn(1, 3, C, 8, 8))
    with pytest.raises(ValueError, match=r"q_geo must be \(B, 16, h, w\)"):
        attn(torch.randn(1, 8, 8, 8), torch.randn(1, 2, C, 8, 8), torch.randn(1, 2, C, 8, 8))
    with pytest.raises(ValueError, match="FaceAttention: dim .15. must be divisible by heads"):
        FaceAttention(15, 2)
    with pytest.raises(ValueError, match="slot_code has width 8, the attention 16"):
        FaceAttention(C, slot_code=SlotCode(8))
    with pytest.raises(ValueError, match="pos_init must be one of"):
        FaceAttention(C, pos_init="learned")
    with pytest.raises(ValueError, match="query_chunk must be a positive"):
        FaceAttention(C, query_chunk=0)


# ----- the renderer -----


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("n_face, n_lip", [(1, 1), (2, 3), (5, 25)])  # the last: inference counts > training
def test_renderer_shapes(variant, n_face, n_lip, decoder):
    out = build(variant, decoder=decoder)(**inputs(n_face=n_face, n_lip=n_lip))
    assert out.shape == (2, 3, S, S) and out.min() >= 0 and out.max() <= 1


def test_renderer_other_resolutions_share_weights():
    renderer = build("dual")
    assert renderer(**inputs(b=1, size=64)).shape == (1, 3, 64, 64)  # latent 16x16, P resized
    assert renderer(**inputs(b=1, size=(16, 24))).shape == (1, 3, 16, 24)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_reach_every_parameter(variant, decoder):
    renderer = build(variant, depth=3, decoder=decoder)
    batch = inputs(n_face=2, n_lip=3)
    batch["tgt_lip_mask"] = torch.rand_like(batch["tgt_lip_mask"])  # soft mask: both attentions matter
    renderer(**batch).square().mean().backward()
    missing = [name for name, p in renderer.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("mask_value, unused, used", [(1.0, "face", "lip"), (0.0, "lip", "face")])
def test_eq4_fusion_uses_lip_references_inside_the_mask_only(mask_value, unused, used, decoder):
    """M_l = 1 everywhere: the output is Lip-Attention's alone, face references do not matter; M_l = 0:
    Face-Attention's alone (the sampled pixels too)."""
    renderer = build("dual", decoder=decoder).eval()
    batch = inputs()
    batch["tgt_lip_mask"] = torch.full_like(batch["tgt_lip_mask"], mask_value)
    with torch.no_grad():
        out = renderer(**batch)
        changed = dict(batch, **{f"{unused}_ref_img": torch.rand_like(batch[f"{unused}_ref_img"]),
                                 f"{unused}_ref_pncc": torch.rand_like(batch[f"{unused}_ref_pncc"])})
        torch.testing.assert_close(renderer(**changed), out, atol=0, rtol=0)
        changed = dict(batch, **{f"{used}_ref_img": torch.rand_like(batch[f"{used}_ref_img"])})
        assert not torch.allclose(renderer(**changed), out)


def test_sampled_pixels_are_the_attention_weights_times_the_reference_patches():
    """sample(): the latent output is forward()'s, and the pixels are softmax(q k^T / sqrt(e)) @ patches per
    head (the score matrix written out), averaged over the heads; chunking does not change them."""
    g = torch.Generator().manual_seed(3)
    q_geo, ref = torch.randn(2, C, *LATENT, generator=g), torch.randn(2, 2, 3, C, *LATENT, generator=g)
    pixels = torch.rand(2, 3, 48, *LATENT, generator=g)
    attn = ReferenceAttention(C, HEADS, LATENT, query_chunk=7)
    latent, sampled = attn.sample(q_geo, ref[0], ref[1], pixels)
    torch.testing.assert_close(latent, reference_attention(attn, q_geo, ref[0], ref[1]), atol=1e-5, rtol=1e-5)
    b, n, c, h, w = ref[0].shape
    pos = attn.position(h, w)
    q = attn.to_q(attn.norm_geo(q_geo.flatten(2).transpose(1, 2)) + pos)  # (B, h*w, C)
    k = attn.to_k(attn.norm_geo(ref[0].flatten(3).transpose(2, 3)) + pos[:, None]).reshape(b, n * h * w, c)
    q, k = (x.reshape(b, x.shape[1], HEADS, c // HEADS).transpose(1, 2) for x in (q, k))  # (B, nh, t, e)
    weights = (q @ k.transpose(-1, -2) / math.sqrt(c // HEADS)).softmax(-1)  # (B, nh, h*w, N*h*w)
    patches = pixels.permute(0, 1, 3, 4, 2).reshape(b, 1, n * h * w, 48)  # (B, 1, N*h*w, P)
    expected = (weights @ patches).mean(1).transpose(1, 2).reshape(b, 48, h, w)
    torch.testing.assert_close(sampled, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"ref_pixels must be \(B, N, P, h, w\)"):
        attn.sample(q_geo, ref[0], ref[1], pixels[:, :2])


def test_inference_temperature_divides_the_logits_outside_training_only():
    """eval(): softmax(q k^T / (sqrt(e) T)); train(): T is ignored; set_inference_temperature reaches every
    attention of a renderer; T -> 0 copies the best-matching reference cell."""
    g = torch.Generator().manual_seed(4)
    q_geo, ref = torch.randn(2, C, *LATENT, generator=g), torch.randn(2, 2, 3, C, *LATENT, generator=g)
    pixels = torch.rand(2, 3, 48, *LATENT, generator=g)
    attn = ReferenceAttention(C, HEADS, LATENT, query_chunk=7).eval()
    plain = attn.sample(q_geo, ref[0], ref[1], pixels)[1]
    attn.inference_temperature = 0.5
    sharp = attn.sample(q_geo, ref[0], ref[1], pixels)[1]
    assert not torch.allclose(sharp, plain)
    with torch.no_grad():  # the same as scaling the queries by 1 / T at T = 1
        attn.inference_temperature = 1.0
        attn.to_q.weight.mul_(2.0)
        torch.testing.assert_close(attn.sample(q_geo, ref[0], ref[1], pixels)[1], sharp, atol=1e-5, rtol=1e-5)
        attn.to_q.weight.div_(2.0)
    attn.train().inference_temperature = 0.5
    torch.testing.assert_close(attn.sample(q_geo, ref[0], ref[1], pixels)[1], plain, atol=1e-5, rtol=1e-5)

    renderer = build("dual")
    assert set_inference_temperature(renderer, 0.25) == 2
    assert {m.inference_temperature for m in renderer.modules() if isinstance(m, ReferenceAttention)} == {0.25}
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="must be a number > 0"):
            set_inference_temperature(renderer, bad)
    with pytest.raises(ValueError, match="inference_temperature must be a number > 0"):
        ReferenceAttention(C, HEADS, LATENT, inference_temperature=0.0)


@pytest.mark.parametrize("margin", [0, 2])
def test_sampled_decoder_starts_as_a_copy_of_aligned_references(margin):
    """Every reference is the same frame with the target's own geometry: with a sharp same-place prior the
    attentions pick each cell's own patch, and the zero-initialised correction leaves it as it is, so the
    untrained renderer returns that frame (the latent-only decoder returns a blur of random features), with
    disjoint 4x4 blocks and with overlapping 8x8 patches alike."""
    torch.manual_seed(0)
    lip, face = (cls(C, HEADS, LATENT, pos_scale=400.0) for cls in (LipAttention, FaceAttention))
    renderer = DualAttentionRenderer(GeometryEncoder(C), TextureEncoder(C), DualAttentionFusion(lip, face),
                                     SampledTextureDecoder(C), CellPatches(4, margin))
    batch = inputs(b=1, n_face=3, n_lip=4)
    frame, pncc = batch["face_ref_img"][:, :1], batch["tgt_pncc"][:, None]
    for kind, n in (("face", 3), ("lip", 4)):
        batch[f"{kind}_ref_img"], batch[f"{kind}_ref_pncc"] = (frame.expand(-1, n, -1, -1, -1),
                                                               pncc.expand(-1, n, -1, -1, -1))
    with torch.no_grad():
        torch.testing.assert_close(renderer(**batch), frame[:, 0], atol=2e-3, rtol=0)


def test_unused_references_may_be_none():
    batch = inputs()
    assert build("lip_only")(**dict(batch, face_ref_img=None, face_ref_pncc=None, tgt_lip_mask=None)).shape[1] == 3
    assert build("face_only")(**dict(batch, lip_ref_img=None, lip_ref_pncc=None, tgt_lip_mask=None)).shape[1] == 3


def test_single_attention_attends_to_face_and_lip_references_together():
    renderer = build("single").eval()
    batch = inputs()
    with torch.no_grad():
        out = renderer(**batch)
        for name in ("face_ref_img", "lip_ref_img"):
            assert not torch.allclose(renderer(**dict(batch, **{name: torch.rand_like(batch[name])})), out)


def test_each_variant_reads_only_the_references_it_uses():
    """A variant is a module: the flags it declares are what the renderer validates and feeds."""
    flags = {name: (VARIANTS[name]().uses_face_refs, VARIANTS[name]().uses_lip_refs, VARIANTS[name]().needs_lip_mask)
             for name in VARIANTS}
    assert flags == {"dual": (True, True, True), "single": (True, True, False), "lip_only": (False, True, False),
                     "face_only": (True, False, False)}
    batch = inputs()
    with torch.no_grad():
        out = build("face_only")(**batch)
        torch.testing.assert_close(build("face_only")(**dict(batch, lip_ref_img=torch.rand_like(batch["lip_ref_img"]))),
                                   out, atol=0, rtol=0)


def test_renderer_construction_errors():
    enc = dict(e_geo=GeometryEncoder(C), e_tex=TextureEncoder(C), d_tex=TextureDecoder(C))
    lip, face = LipAttention(C, HEADS, LATENT), FaceAttention(C, HEADS, LATENT)
    with pytest.raises(ValueError, match="the same width C"):
        DualAttentionRenderer(**dict(enc, d_tex=TextureDecoder(2 * C)), attention=DualAttentionFusion(lip, face))
    with pytest.raises(ValueError, match="lip_attention and face_attention need the same width"):
        DualAttentionFusion(lip, FaceAttention(2 * C, HEADS, LATENT))


def test_renderer_input_errors():
    renderer = build("dual")
    batch = inputs()
    with pytest.raises(ValueError, match=r"tgt_lip_mask must be \(B, 1, H, W\)"):
        renderer(**dict(batch, tgt_lip_mask=None))
    with pytest.raises(ValueError, match=r"lip_ref_pncc must be \(B, N, 3, H, W\) = \(2, N >= 1, 3, 32, 32\)"):
        renderer(**dict(batch, lip_ref_pncc=torch.rand(2, 4, 3, 16, 16)))
    with pytest.raises(ValueError, match="face_ref_img must be"):
        renderer(**dict(batch, face_ref_img=torch.rand(2, 0, 3, S, S)))
    with pytest.raises(ValueError, match="must match .one PNCC per reference frame."):
        renderer(**dict(batch, face_ref_pncc=torch.rand(2, 2, 3, S, S)))
    with pytest.raises(ValueError, match="tgt_pncc must be"):
        renderer(**dict(batch, tgt_pncc=torch.rand(2, 3, 30, 30)))


# ----- the geometric correspondence term -----


def test_correspondence_adds_minus_gamma_half_squared_pncc_distance_to_the_logits():
    from src.models.renderer.correspondence import GeometricCorrespondence

    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, HEADS, 6, 8, generator=g), torch.randn(2, HEADS, 10, 8, generator=g)
    p_t, p_r = torch.rand(2, 6, 3, generator=g), torch.rand(2, 10, 3, generator=g)
    corr = GeometricCorrespondence(HEADS, gamma=50.0)
    scale = 8 ** -0.5
    q2, k2 = corr.extend(q, k, p_t, p_r, scale)
    logits, plain = (q2 @ k2.transpose(-1, -2)) * scale, (q @ k.transpose(-1, -2)) * scale
    expected = plain - 25.0 * (p_t[:, None, :, None] - p_r[:, None, None]).square().sum(-1)  # (B, nh, T, S)
    # equal up to a constant per query, which softmax ignores
    torch.testing.assert_close(logits.softmax(-1), expected.softmax(-1), atol=1e-5, rtol=1e-4)


def test_correspondence_lets_attention_find_a_moved_surface_point():
    """The reference is the target's own cells shifted by two cells: with the correspondence term the sampled pixels
    come back in place (the positional prior alone would copy the shifted image)."""
    from src.models.renderer.correspondence import GeometricCorrespondence

    torch.manual_seed(0)
    h = w = 8
    colours = torch.rand(1, 3, h, w)  # distinct PNCC colours per cell
    pixels = torch.rand(1, 48, h, w)

    def shifted(x: torch.Tensor) -> torch.Tensor:
        return torch.roll(x, 2, dims=-1)

    q_geo, ref = torch.zeros(1, C, h, w), torch.zeros(1, 1, C, h, w)
    cases = ((None, True, 400.0), (GeometricCorrespondence(HEADS, gamma=5000.0), False, 0.5))
    for corr, expect_shift, pos_scale in cases:
        attn = ReferenceAttention(C, HEADS, (h, w), pos_scale=pos_scale, correspondence=corr)
        _, sampled = attn.sample(q_geo, ref, ref, shifted(pixels)[:, None], colours, shifted(colours)[:, None])
        error = (sampled - (shifted(pixels) if expect_shift else pixels)).abs().mean()
        assert error < 0.05, (corr, float(error))
    with pytest.raises(ValueError, match="with a correspondence or a reference prior, tgt_coords must be"):
        attn.sample(q_geo, ref, ref)


# ----- the per-reference prior -----


def test_reference_prior_adds_minus_beta_times_each_references_mean_pncc_distance():
    from src.models.renderer.reference_prior import ReferencePrior

    g = torch.Generator().manual_seed(0)
    b, n, h, w, e = 2, 3, 2, 3, 8
    q, k = torch.randn(b, HEADS, h * w, e, generator=g), torch.randn(b, HEADS, n * h * w, e, generator=g)
    p_t, p_r = torch.rand(b, 3, h, w, generator=g), torch.rand(b, n, 3, h, w, generator=g)
    prior = ReferencePrior(HEADS, beta=40.0)
    scale = e ** -0.5
    q2, k2 = prior.extend(q, k, p_t, p_r, scale)
    logits, plain = (q2 @ k2.transpose(-1, -2)) * scale, (q @ k.transpose(-1, -2)) * scale  # (B, nh, T, S)
    d = (p_r - p_t[:, None]).abs().sum(2).mean((-2, -1))  # (B, N) by hand
    expected = plain - 40.0 * d.repeat_interleave(h * w, dim=1)[:, None, None, :]  # one value for all cells of a ref
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


def test_reference_prior_makes_unplaceable_cells_copy_the_nearest_reference():
    """Background cells (PNCC 0 in the target and in every reference) against three references whose pixels differ:
    without the prior the same-place attention averages the three; with it, the reference whose face (the other
    cells) is nearest the target's wins them."""
    from src.models.renderer.reference_prior import ReferencePrior

    torch.manual_seed(0)
    h = w = 8
    face = torch.zeros(1, 1, h, w)
    face[..., 2:6, 2:6] = 1.0  # the face's cells; the rest is background
    tgt = torch.rand(1, 3, h, w) * face  # (1, 3, h, w)
    refs = torch.stack([tgt[0] + 0.2 * face[0], tgt[0], tgt[0] + 0.1 * face[0]])[None]  # (1, 3, 3, h, w) ref 1 nearest
    pixels = torch.stack([torch.full((48, h, w), v) for v in (0.1, 0.3, 0.9)])[None]  # (1, 3, 48, h, w)
    q_geo, ref = torch.zeros(1, C, h, w), torch.zeros(1, 3, C, h, w)
    background = face[0, 0] == 0
    with torch.no_grad():
        plain = ReferenceAttention(C, HEADS, (h, w), pos_scale=4.0)
        _, sampled = plain.sample(q_geo, ref, ref, pixels, tgt, refs)
        assert (sampled[0, :, background] - 1.3 / 3).abs().max() < 1e-3  # the average of the three references
        attn = ReferenceAttention(C, HEADS, (h, w), pos_scale=4.0, reference_prior=ReferencePrior(HEADS, beta=500.0))
        for order, expected in (([0, 1, 2], 0.3), ([1, 0, 2], 0.1), ([0, 2, 1], 0.9)):  # the nearest one moves
            _, sampled = attn.sample(q_geo, ref, ref, pixels, tgt, refs[:, order])
            assert (sampled[0, :, background] - expected).abs().max() < 0.02, (order, float(sampled.mean()))
    with pytest.raises(ValueError, match="with a correspondence or a reference prior, tgt_coords must be"):
        attn.sample(q_geo, ref, ref, pixels)


def test_reference_prior_errors():
    from src.models.renderer.reference_prior import ReferencePrior

    with pytest.raises(ValueError, match="heads >= 1 and beta > 0"):
        ReferencePrior(HEADS, beta=0.0)
    with pytest.raises(ValueError, match="reference_prior has 1 heads, the attention 2"):
        ReferenceAttention(C, HEADS, LATENT, reference_prior=ReferencePrior(1))
    q, k = torch.zeros(1, HEADS, 4, 8), torch.zeros(1, HEADS, 12, 8)
    with pytest.raises(ValueError, match="N h w = 12"):
        ReferencePrior(HEADS).extend(q, k, torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 3, 2, 2), 1.0)


# ----- reference patches (cell_patches.py) -----


def test_cell_patches_without_margin_are_pixel_shuffling():
    frames = torch.rand(2, 3, 3, 12, 16)
    patches = CellPatches(4, 0)
    cells = patches.extract(frames)  # (2, 3, 48, 3, 4)
    torch.testing.assert_close(cells, F.pixel_unshuffle(frames, 4), rtol=0, atol=0)
    torch.testing.assert_close(patches.assemble(cells[:, 1]), frames[:, 1], rtol=0, atol=0)


@pytest.mark.parametrize("margin", [1, 2, 4])
def test_overlapping_patches_of_one_frame_put_back_that_frame(margin):
    """Overlap-add of consistent patches divided by the summed window is the identity, borders included."""
    frames = torch.rand(2, 3, 3, 12, 16)
    patches = CellPatches(4, margin)
    cells = patches.extract(frames)
    assert cells.shape == (2, 3, 3 * (4 + 2 * margin) ** 2, 3, 4) and patches.numbers == cells.shape[2]
    torch.testing.assert_close(patches.assemble(cells[:, 2]), frames[:, 2], rtol=0, atol=1e-6)


def test_overlapping_patches_blend_neighbouring_cells_that_sample_different_frames():
    """Left half of the cells from a black frame, right half from a white one: disjoint blocks meet at a hard
    edge; with a margin the pixels either side of the edge are grey, rising monotonically across it."""
    frames = torch.stack([torch.zeros(3, 8, 16), torch.ones(3, 8, 16)])[None]  # (1, 2, 3, 8, 16)
    rows = {}
    for margin in (0, 2):
        patches = CellPatches(4, margin)
        cells = patches.extract(frames)  # (1, 2, P, 2, 4)
        mixed = torch.cat([cells[:, 0, :, :, :2], cells[:, 1, :, :, 2:]], dim=-1)  # (1, P, 2, 4)
        rows[margin] = patches.assemble(mixed)[0, 0, 0]  # (16,) one image row
    assert rows[0][:8].eq(0).all() and rows[0][8:].eq(1).all()
    blended = rows[2]
    assert blended[:6].eq(0).all() and blended[10:].eq(1).all()  # 2 px each side of the edge are mixed
    assert ((blended[6:10] > 0) & (blended[6:10] < 1)).all() and (blended.diff() >= 0).all()


def test_cell_patches_errors():
    with pytest.raises(ValueError, match="margin must be an integer in"):
        CellPatches(4, 5)
    with pytest.raises(ValueError, match="cell must be a positive integer"):
        CellPatches(0)
    with pytest.raises(ValueError, match=r"patches must be \(B, 192, h, w\)"):
        CellPatches(4, 2).assemble(torch.rand(1, 48, 2, 2))
    with pytest.raises(ValueError, match="patches.cell must be 4"):
        DualAttentionRenderer(GeometryEncoder(C), TextureEncoder(C), VARIANTS["dual"](None), SampledTextureDecoder(C),
                              CellPatches(2))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_renders_with_overlapping_patches(variant):
    renderer = build(variant, decoder="sampled", margin=2)
    out = renderer(**inputs())
    assert out.shape == (2, 3, S, S)
    out.mean().backward()
    assert renderer.d_tex.to_rgb.weight.grad.abs().sum() > 0


# ----- patches along the attention's flow (flow_patches.py) -----


def move(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """What an attention does to the values: values (B, N, P, h, w), weights (B, h*w, N*h*w) -> (B, P, h, w)."""
    b, n, p, h, w = values.shape
    keys = values.permute(0, 1, 3, 4, 2).reshape(b, n * h * w, p)  # (B, N h w, P) references major
    return (weights @ keys).transpose(1, 2).reshape(b, p, h, w)


def smooth_frames(b: int, n: int, h: int, w: int) -> torch.Tensor:
    """(B, N, 3, H, W) frames of sines, smooth enough that bilinear sampling at whole pixels is exact."""
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    images = [torch.stack([0.5 + 0.4 * torch.sin(x / (3 + k) + y / (5 + c) + k) for c in range(3)])
              for k in range(n)]
    return torch.stack(images)[None].expand(b, -1, -1, -1, -1).clone()


@pytest.mark.parametrize("sigma,sampling", [(0.0, "bilinear"), (2.0, "bilinear"), (2.0, "bicubic")])
def test_flow_patches_of_one_frame_put_back_that_frame(sigma, sampling):
    frames = torch.rand(2, 3, 3, 16, 24)
    layout = FlowPatches(4, 2, sigma=sigma, sampling=sampling)
    values = layout.extract(frames)  # (2, 3, P + 12, 4, 6)
    assert values.shape == (2, 3, layout.numbers + layout.extra_numbers(3), 4, 6)
    torch.testing.assert_close(layout.assemble(values[:, 1], frames), frames[:, 1], rtol=0, atol=1e-5)


def test_flow_patches_move_texture_to_the_sub_pixel_where_cell_patches_blur():
    """Each target cell attends half to the same cell of a reference and half to the next one to the right: the
    source is 2 px (half a cell) to the right. Plain patches average the two cells' patches (a blur); the flow
    cuts the patch 2 px to the right, the frame shifted by 2 px."""
    b, n, height, width = 1, 2, 16, 96
    frames = smooth_frames(b, n, height, width)
    h, w = height // 4, width // 4
    weights = torch.zeros(b, h * w, n * h * w)
    for t in range(h * w):
        row, col = divmod(t, w)
        right = row * w + min(col + 1, w - 1)  # the last column has no next cell: its source stays (not compared)
        weights[0, t, h * w + t] += 0.5  # reference 1, the same cell
        weights[0, t, h * w + right] += 0.5  # reference 1, the next cell
    truth = frames[0, 1, :, 2:-2, 4:66]  # output pixels x = 2 ... 63 show x + 2 (the smoothing reaches 5 cells)
    for sigma in (0.0, 2.0):  # a uniform shift stays the same when smoothed
        layout = FlowPatches(4, 2, sigma=sigma)
        out = layout.assemble(move(layout.extract(frames), weights), frames)[0]  # (3, H, W)
        torch.testing.assert_close(out[:, 2:-2, 2:64], truth, rtol=0, atol=1e-5)
    plain = CellPatches(4, 2)
    blurred = plain.assemble(move(plain.extract(frames), weights))[0]
    assert (blurred[:, 2:-2, 2:64] - truth).abs().mean() > 0.02


def test_flow_patches_keep_the_plain_patch_where_the_source_is_spread():
    """Half of each cell's weight on the same cell, half 3 cells away (spread 2.25 cells^2 > var_max 1): the flow
    is not trusted and the result is the plain overlap-added patches."""
    b, n, height, width = 1, 1, 16, 32
    frames = torch.rand(b, n, 3, height, width)
    h, w = height // 4, width // 4
    weights = torch.zeros(b, h * w, n * h * w)
    for t in range(h * w):
        row, col = divmod(t, w)
        weights[0, t, t] += 0.5
        weights[0, t, row * w + (col + 3) % w] += 0.5
    layout, plain = FlowPatches(4, 2, sigma=0.0, var_max=1.0), CellPatches(4, 2)
    out = layout.assemble(move(layout.extract(frames), weights), frames)
    torch.testing.assert_close(out, plain.assemble(move(plain.extract(frames), weights)), rtol=0, atol=1e-5)


def test_flow_patches_smooth_a_noisy_flow():
    """Every cell's source is the same cell of the reference, except one cell whose source is a whole cell to the
    right: without smoothing that cell's patch is cut there; smoothed over 2 cells it moves a quarter as far or
    less, its neighbours a little (the flow of a head's motion is smooth; a lone jump is the measurement's noise)."""
    b, n, height, width = 1, 1, 32, 32
    frames = smooth_frames(b, n, height, width)
    h, w = height // 4, width // 4
    odd = 3 * w + 3
    weights = torch.eye(h * w)[None].clone()  # (1, h w, h w) each cell its own place
    weights[0, odd] = 0
    weights[0, odd, odd + 1] = 1
    moved = {sigma: FlowPatches(4, 2, sigma=sigma) for sigma in (0.0, 2.0)}
    outs = {sigma: layout.assemble(move(layout.extract(frames), weights), frames)[0] for sigma, layout in moved.items()}
    block = (slice(None), slice(12, 16), slice(12, 16))  # the odd cell's own 4 x 4 pixels
    error = {sigma: (out[block] - frames[0, 0][block]).abs().mean() for sigma, out in outs.items()}
    assert error[2.0] < 0.5 * error[0.0]
    assert (outs[2.0] - frames[0, 0]).abs().max() < (outs[0.0] - frames[0, 0]).abs().max()


def test_flow_patches_errors():
    with pytest.raises(ValueError, match="sigma >= 0"):
        FlowPatches(sigma=-1.0)
    with pytest.raises(ValueError, match="var_max > 0"):
        FlowPatches(var_max=0.0)
    with pytest.raises(ValueError, match="sampling must be 'bilinear' or 'bicubic'"):
        FlowPatches(sampling="nearest")
    with pytest.raises(ValueError, match="during_training must be true or false"):
        FlowPatches(during_training="no")
    layout, frames = FlowPatches(4, 2), torch.rand(1, 2, 3, 8, 8)
    moved = layout.extract(frames)[:, 0]
    with pytest.raises(ValueError, match="needs the reference frames"):
        layout.assemble(moved)
    with pytest.raises(ValueError, match=r"moved must be \(B, P \+ 4N, h, w\)"):
        layout.assemble(moved, torch.rand(1, 3, 3, 8, 8))
    with pytest.raises(ValueError, match="needs them in float32"):
        layout.assemble(moved.bfloat16(), frames)
    with pytest.raises(ValueError, match="face_patches needs an attention that keeps face and lip"):
        build("single", decoder="sampled", margin=2, face_patches=FlowPatches(4, 2))


@pytest.mark.parametrize("variant", ["dual", "face_only", "lip_only"])
def test_variants_render_with_flow_patches_for_the_face_references(variant):
    renderer = build(variant, decoder="sampled", margin=2, face_patches=FlowPatches(4, 2))
    batch = inputs()
    out = renderer(**batch)
    assert out.shape == (2, 3, S, S)
    out.mean().backward()
    assert renderer.d_tex.to_rgb.weight.grad.abs().sum() > 0
    if renderer.uses_face_refs:
        assert renderer.attention.face_attention.to_q.weight.grad.abs().sum() > 0


def test_flow_patches_off_during_training_are_plain_patches_until_eval():
    """during_training=False: while training, the layout and the whole renderer are exactly the plain-patch ones;
    after eval() the face references follow the flow (a different image from the same weights)."""
    torch.manual_seed(0)
    flow = build("dual", decoder="sampled", margin=2, face_patches=FlowPatches(4, 2, during_training=False))
    plain = build("dual", decoder="sampled", margin=2)
    plain.load_state_dict(flow.state_dict())
    batch = inputs()
    frames = batch["face_ref_img"]
    layout = flow.face_patches
    assert layout.extract(frames).shape == CellPatches(4, 2).extract(frames).shape  # no moment channels
    assert torch.equal(flow(**batch), plain(**batch))
    flow.eval(), plain.eval()
    assert layout.extract(frames).shape[2] == layout.numbers + 4 * frames.shape[1]
    with torch.no_grad():
        assert not torch.allclose(flow(**batch), plain(**batch), atol=1e-4)
    flow.train()
    assert torch.equal(flow(**batch), plain(**batch))


# ----- face references chosen by geometry (nearest_references.py) -----


def test_nearest_face_references_keep_the_k_nearest_of_all_kinds_outside_training():
    """Face refs at PNCC distances 0.5, 0.1 and lip refs at 0.3, 0.05, 0.7 from the target: k = 3 keeps lip 2
    (0.05), face 2 (0.1), lip 1 (0.3), nearest first, as frames and PNCCs together; the lip refs are untouched."""
    tgt = torch.full((1, 3, 4, 4), 0.5)
    face_off, lip_off = [0.5, 0.1], [0.3, 0.05, 0.7]
    face = (torch.arange(2.0).view(1, 2, 1, 1, 1).expand(1, 2, 3, 4, 4),
            tgt[:, None] + torch.tensor(face_off).view(1, 2, 1, 1, 1))
    lip = (10 + torch.arange(3.0).view(1, 3, 1, 1, 1).expand(1, 3, 3, 4, 4),
           tgt[:, None] - torch.tensor(lip_off).view(1, 3, 1, 1, 1))
    choice = NearestFaceReferences(k=3).eval()
    out = choice(tgt, {"face": face, "lip": lip})
    assert out["face"][0][0, :, 0, 0, 0].tolist() == [11.0, 1.0, 10.0]  # which frames, nearest first
    assert torch.allclose(NearestFaceReferences.distance(tgt, out["face"][1]), torch.tensor([[0.05, 0.1, 0.3]]))
    assert out["lip"] is lip
    assert NearestFaceReferences(k=9).eval()(tgt, {"face": face, "lip": lip})["face"][0].shape[1] == 5  # all 5
    training = NearestFaceReferences(k=1).train()
    assert training(tgt, {"face": face, "lip": lip})["face"] is face  # the training strategy's references
    assert NearestFaceReferences(k=1, during_training=True).train()(tgt, {"face": face, "lip": lip})[
        "face"][0][0, :, 0, 0, 0].tolist() == [11.0]
    assert choice(tgt, {"lip": lip}) == {"lip": lip}  # no face references read: nothing to choose


def test_nearest_face_references_in_the_renderer():
    """The renderer renders and back-propagates with a face choice; outside training its output depends only on
    the chosen references (a far reference added changes nothing); errors are clear."""
    renderer = build("dual", decoder="sampled", margin=2, face_patches=FlowPatches(4, 2))
    renderer.face_choice = NearestFaceReferences(k=2)
    batch = inputs()
    out = renderer(**batch)
    out.mean().backward()
    assert renderer.attention.face_attention.to_q.weight.grad.abs().sum() > 0
    renderer.eval()
    far = dict(batch, face_ref_img=torch.cat([batch["face_ref_img"], torch.rand(2, 1, 3, S, S)], 1),
               face_ref_pncc=torch.cat([batch["face_ref_pncc"], 1 - batch["tgt_pncc"][:, None].round()], 1))
    with torch.no_grad():
        assert torch.allclose(renderer(**batch), renderer(**far), atol=1e-6)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        NearestFaceReferences(k=0)
    with pytest.raises(ValueError, match="during_training must be true or false"):
        NearestFaceReferences(during_training=1)
    with pytest.raises(ValueError, match="face_choice picks face references"):
        torch.manual_seed(0)
        DualAttentionRenderer(GeometryEncoder(C, norm_groups=4), TextureEncoder(C), VARIANTS["lip_only"](None),
                              DECODERS["sampled"](C), CellPatches(4, 2), None, NearestFaceReferences())
