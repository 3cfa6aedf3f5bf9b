"""Rasterisers (numba and torch) and the renders built on them: agreement, conventions, validation."""

import numpy as np
import pytest
import torch

from src.geometry.rasterizer import interpolate, rasterize
from src.geometry.rasterizer_torch import interpolate_torch, rasterize_torch
from src.geometry.render import (
    Light,
    icosphere,
    render_mask,
    render_mask_torch,
    render_pncc,
    render_pncc_torch,
    render_shaded,
    vertex_normals,
    vertex_normals_torch,
)


def _both(verts: np.ndarray, tris: np.ndarray, height: int, width: int, **kw):
    """Rasterise a (B, V, 3) batch with numba (frame by frame) and torch: ((id, bary, depth), (id, bary, depth))."""
    frags = [rasterize(v, tris, height, width) for v in verts]
    ours = tuple(np.stack([getattr(f, k) for f in frags]) for k in ("tri_id", "bary", "depth"))
    theirs = rasterize_torch(torch.from_numpy(verts), torch.from_numpy(tris), height, width, **kw)
    return ours, tuple(t.numpy() for t in theirs)


def _assert_agree(ours, theirs):
    same = ours[0] == theirs[0]
    assert same.mean() >= 0.999, f"triangle ids agree on {same.mean():.5f} of pixels"
    np.testing.assert_allclose(ours[1][same], theirs[1][same], atol=1e-6)
    np.testing.assert_allclose(ours[2][same], theirs[2][same], atol=1e-5)


def _random_soup(rng, batch, num_tris, height, width):
    """Overlapping random triangles (some partly off-screen, some degenerate) with random depths."""
    verts = np.stack([rng.uniform(-10, width + 10, (batch, 3 * num_tris)),
                      rng.uniform(-10, height + 10, (batch, 3 * num_tris)),
                      rng.uniform(-1, 1, (batch, 3 * num_tris))], -1).astype(np.float32)  # (B, 3F, 3)
    tris = np.arange(3 * num_tris, dtype=np.int32).reshape(num_tris, 3)
    tris[-1] = [0, 0, 1]  # degenerate
    return verts, tris


def _face_like(frames: int, size: int):
    """An ellipsoid 'head' (subdivided icosahedron) turning left to right, projected orthographically."""
    v, tris = icosphere(3)
    v = v * np.array([0.75, 1.0, 0.85], np.float32)
    out = []
    for yaw in np.linspace(-0.6, 0.6, frames):
        c, s = np.cos(yaw), np.sin(yaw)
        x, z = c * v[:, 0] + s * v[:, 2], -s * v[:, 0] + c * v[:, 2]
        scale = 0.4 * size
        out.append(np.stack([x * scale + size / 2, -v[:, 1] * scale + size / 2, z * scale], 1))
    return np.stack(out).astype(np.float32), tris  # (B, V, 3), (F, 3)


def test_random_soup_agrees():
    verts, tris = _random_soup(np.random.default_rng(0), batch=4, num_tris=120, height=48, width=64)
    ours, theirs = _both(verts, tris, 48, 64, max_pairs=4096)  # small chunks exercise the chunking
    _assert_agree(ours, theirs)
    assert (ours[0] >= 0).mean() > 0.9


def test_face_like_mesh_agrees():
    verts, tris = _face_like(frames=3, size=96)
    ours, theirs = _both(verts, tris, 96, 96)
    _assert_agree(ours, theirs)
    np.testing.assert_allclose(ours[1].sum(-1)[ours[0] >= 0], 1.0, atol=1e-5)


def test_single_triangle_coverage_and_background():
    verts = np.array([[[0, 0, 2], [4, 0, 2], [0, 4, 2]]], np.float32)  # covers centres with i + j <= 3
    tris = np.array([[0, 1, 2]], np.int32)
    for tri_id, bary, depth in _both(verts, tris, 8, 8):
        assert (tri_id >= 0).sum() == 10
        assert (tri_id[tri_id < 0] == -1).all() and (bary[tri_id < 0] == 0).all()
        assert np.isneginf(depth[tri_id < 0]).all() and np.allclose(depth[tri_id >= 0], 2.0)


@pytest.mark.parametrize("near_first", [True, False])
def test_near_triangle_hides_far(near_first):
    square = [[0, 0], [8, 0], [0, 8]]
    near = np.array([[x, y, 5.0] for x, y in square], np.float32)
    far = np.array([[x, y, -5.0] for x, y in square], np.float32)
    verts = np.concatenate([near, far] if near_first else [far, near])[None]  # (1, 6, 3)
    tris = np.array([[0, 1, 2], [3, 4, 5]], np.int32)
    for tri_id, _, _ in _both(verts, tris, 8, 8):
        assert set(np.unique(tri_id[tri_id >= 0])) == {0 if near_first else 1}


def test_depth_tie_lowest_index_wins():
    tri = np.array([[0, 0, 1], [8, 0, 1], [0, 8, 1]], np.float32)
    verts = np.concatenate([tri, tri[::-1], tri])[None]  # three copies at equal depth, two windings
    tris = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8]], np.int32)
    for tri_id, _, _ in _both(verts, tris, 8, 8):
        assert set(np.unique(tri_id[tri_id >= 0])) == {0}


def test_pncc_range_and_torch_match():
    verts, tris = _face_like(frames=2, size=64)
    colors = (icosphere(3)[0] * 0.5 + 0.5).astype(np.float32)
    pncc = np.stack([render_pncc(v, tris, colors, 64, 64) for v in verts])  # (B, H, W, 3)
    covered = rasterize(verts[0], tris, 64, 64).mask
    assert pncc.dtype == np.float32 and pncc.min() >= 0.0 and pncc.max() <= 1.0
    assert (pncc[0][~covered] == 0).all() and (pncc[0][covered].sum(-1) > 0).all()
    pncc_t = render_pncc_torch(torch.from_numpy(verts), torch.from_numpy(tris).long(), torch.from_numpy(colors), 64, 64)
    assert pncc_t.shape == (2, 3, 64, 64)
    np.testing.assert_allclose(pncc_t.permute(0, 2, 3, 1).numpy(), pncc, atol=1e-5)


def test_lip_mask_respects_occlusion():
    square = [[0, 0], [8, 0], [0, 8]]
    verts = np.array([[x, y, z] for z in (5.0, -5.0) for x, y in square], np.float32)  # near 0, far 1
    tris = np.array([[0, 1, 2], [3, 4, 5]], np.int32)
    assert not render_mask(verts, tris, np.array([1]), 8, 8).any()  # the hidden subset does not show
    near = render_mask(verts, tris, np.array([True, False]), 8, 8)
    assert near.sum() == (rasterize(verts, tris, 8, 8).tri_id == 0).sum() > 0
    masks = render_mask_torch(torch.from_numpy(verts)[None], torch.from_numpy(tris), torch.tensor([1]), 8, 8)
    assert masks.shape == (1, 8, 8) and not masks.any()


def _quad(size: int):
    """Two triangles covering a size x size image facing the viewer, uvs at the corners."""
    verts = np.array([[0, 0, 0], [size, 0, 0], [size, size, 0], [0, size, 0]], np.float32)
    uvs = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
    return verts, np.array([[0, 1, 2], [0, 2, 3]], np.int32), uvs


def test_texture_sampling_under_flat_light():
    verts, tris, uvs = _quad(32)
    blocks = np.array([[[1, 0, 0], [0, 1, 0]], [[0, 0, 1], [1, 1, 0]]], np.float32)  # (2, 2, 3) quadrants
    texture = blocks.repeat(4, axis=0).repeat(4, axis=1)  # (8, 8, 3): 4x4 texels per colour
    flat = Light(color=(0, 0, 0), ambient=(1, 1, 1))
    rgb, mask = render_shaded(verts, tris, None, texture, 32, 32, light=flat, uvs=uvs, specular=0.0)
    assert mask.all()
    for r, c in np.ndindex(2, 2):  # pixels >= 5 away from the quadrant border sample one colour only
        patch = rgb[r * 19:r * 19 + 13, c * 19:c * 19 + 13]
        np.testing.assert_allclose(patch, np.broadcast_to(blocks[r, c], patch.shape), atol=1e-6)


def test_lambert_two_sided_and_range():
    verts, tris, _ = _quad(16)
    colors = np.full((4, 3), 0.5, np.float32)
    light = Light(direction=(0, 0, 1), color=(1, 1, 1), ambient=(0, 0, 0))
    for normal_z in (1.0, -1.0):  # a normal facing away is flipped: same image
        normals = np.tile(np.array([[0, 0, normal_z]], np.float32), (4, 1))
        rgb, _ = render_shaded(verts, tris, normals, colors, 16, 16, light=light, specular=0.0)
        np.testing.assert_allclose(rgb, 0.5, atol=1e-6)
    v, t = icosphere(2)
    sphere = v * 10 + np.float32([16, 16, 0])
    rgb, mask = render_shaded(sphere, t, None, np.ones_like(v), 32, 32, specular=np.ones(len(v)))
    assert rgb.min() >= 0 and rgb.max() <= 1 and (rgb[~mask] == 0).all() and rgb[mask].std() > 0.05


def test_vertex_normals_on_sphere_and_torch():
    v, t = icosphere(2)
    normals = vertex_normals(v, t)
    assert (np.einsum("vc,vc->v", normals, v) > 0.99).all()
    normals_t = vertex_normals_torch(torch.from_numpy(v)[None].repeat(2, 1, 1), torch.from_numpy(t))
    np.testing.assert_allclose(normals_t[1].numpy(), normals, atol=1e-5)


def test_interpolate_shared_and_batched_attrs():
    verts, tris = _face_like(frames=2, size=32)
    attrs = np.random.default_rng(1).random((verts.shape[1], 2)).astype(np.float32)
    tri_id, bary, _ = rasterize_torch(torch.from_numpy(verts), torch.from_numpy(tris), 32, 32)
    shared = interpolate_torch(tri_id, bary, torch.from_numpy(tris), torch.from_numpy(attrs))
    batched = interpolate_torch(tri_id, bary, torch.from_numpy(tris), torch.from_numpy(attrs)[None].repeat(2, 1, 1))
    np.testing.assert_allclose(shared.numpy(), batched.numpy())
    expected = interpolate(rasterize(verts[1], tris, 32, 32), tris, attrs)
    np.testing.assert_allclose(shared[1].numpy(), expected, atol=1e-6)


def test_input_validation():
    verts, tris, _ = _quad(8)
    bad = verts.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        rasterize(bad, tris, 8, 8)
    with pytest.raises(ValueError, match=r"\(V, 3\)"):
        rasterize(verts[:, :2], tris, 8, 8)
    with pytest.raises(TypeError, match="integer"):
        rasterize(verts, tris.astype(np.float32), 8, 8)
    with pytest.raises(ValueError, match="out of range"):
        rasterize(verts, tris + 4, 8, 8)
    with pytest.raises(ValueError, match="height"):
        rasterize(verts, tris, 0, 8)
    with pytest.raises(ValueError, match="NaN"):
        rasterize_torch(torch.from_numpy(bad)[None], torch.from_numpy(tris), 8, 8)
    with pytest.raises(ValueError, match=r"\(B, V, 3\)"):
        rasterize_torch(torch.from_numpy(verts), torch.from_numpy(tris), 8, 8)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        render_pncc(verts, tris, np.full((4, 3), 2.0), 8, 8)
    with pytest.raises(ValueError, match="tri_subset"):
        render_mask(verts, tris, np.array([True]), 8, 8)
    with pytest.raises(ValueError, match="uvs"):
        render_shaded(verts, tris, None, np.ones((4, 4, 3)), 8, 8)


def test_speed_raster_smoke(capsys):
    from eval.speed import main

    main(["raster", "--size", "24", "--frames", "2", "--torch-frames", "2", "--face-model", "icosphere:1"])
    out = capsys.readouterr().out
    assert "| icosphere:1 | 42 | 80 |" in out


# ----- a frame moved through two meshes (mesh_warp.py) -----

def test_warp_by_meshes_moves_the_mesh_region_and_keeps_the_rest():
    """A square of two triangles covering x, y in [4, 12): the same mesh both ways gives the frame back exactly;
    the source mesh 2 px to the right of the destination reads each covered pixel 2 px to the right (a shift),
    while pixels off the destination mesh keep the frame's own."""
    from src.geometry.mesh_warp import warp_by_meshes

    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(20.0), indexing="ij")
    frame = torch.stack([0.5 + 0.4 * torch.sin(xx / 3 + yy / (4 + c)) for c in range(3)])  # (3, 16, 20) smooth
    dst = np.array([[4, 4, 1], [12, 4, 1], [12, 12, 1], [4, 12, 1]], np.float32)
    tris = np.array([[0, 1, 2], [0, 2, 3]], np.int64)
    assert torch.allclose(warp_by_meshes(frame, dst, dst, tris), frame, atol=1e-5)
    src = dst + np.array([2, 0, 0], np.float32)
    out = warp_by_meshes(frame, src, dst, tris)
    assert torch.allclose(out[:, 4:12, 4:12], frame[:, 4:12, 6:14], atol=1e-5)  # covered: read 2 px to the right
    assert torch.allclose(out[:, :, 14:], frame[:, :, 14:], atol=1e-5)  # off the mesh: the frame's own
    assert torch.allclose(out[:, :3], frame[:, :3], atol=1e-5)
    with pytest.raises(ValueError, match=r"frame must be \(3, H, W\)"):
        warp_by_meshes(frame[0], dst, dst, tris)
    with pytest.raises(ValueError, match=r"must both be \(L, 3\)"):
        warp_by_meshes(frame, dst[:3], dst, tris)
