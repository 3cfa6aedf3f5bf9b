"""Reference patches moved along the attention's smoothed flow (our addition where the paper is silent; docs/design.md,
"Stage 2"): a ``CellPatches`` layout whose patches are cut from the references at the place the attention points to,
to the sub-pixel, with that place smoothed over neighbouring cells.

Besides each cell's plain patch the attention carries, per reference n, the moments of the source position
(one-hot by reference, so the weights of reference n add up separately):

    values(n, s)  = [patch_s, onehot_n (x) (1, x_s, y_s, x_s^2 + y_s^2)]        P + 4N numbers per reference cell
    moved(t)      = sum_s a_ts values(s)  ->  m_tn = mass of reference n,  mu_tn = sum a x / m_tn,
                                              var_tn = sum a |x|^2 / m_tn - |mu_tn|^2
    d_tn          = G_sigma * (w (mu - c_t)) / G_sigma * w,   w = m_tn [var_tn < var_max]      smoothed displacement
    patch(t)      = sum_n w_tn bilinear(ref_n, c_t + d_tn + patch offsets) + plain(t) (1 - sum_n w_tn / sum_n m_tn)

then overlap-added like ``CellPatches``. Cells whose source in a reference is spread over far-apart places
(var >= var_max: the attention is unsure there) keep the plain moved patch for that share of their weight.

Why: with plain patches a target cell's texture moves in whole cells (4 px): each cell comes from the reference
cell whose geometry matches best, rounded to the cell, and next to it a cell rounded the other way; where the
fitted geometry of the reference and of the target are each a pixel or two off (1.5% of the eye distance on real
faces), neighbouring cells land a pixel apart and the features come out slightly redrawn. dlib's face embedding
notices: on the 15 val clips the renderer scored CSIM 0.981 against the nearest reference copy's 0.988, and even
given the copy's own frame as its only face reference 0.983 (the target frame itself as reference: 0.997). A
smooth warp, like a head's motion between two frames, keeps the features' shapes; the per-cell correspondence
the attention found is its noisy measurement. For the face references only (``DualAttentionRenderer.face_patches``):
the lips move non-rigidly, and smoothing their flow blurred the mouth (3 val clips: lip PSNR -0.3 dB at sigma 2 cells).

``during_training=False`` keeps plain patches while the module trains and cuts along the flow outside training (the
renderer's ``eval()``): render_real's decoder trained on flow patches came out softer at the mouth (lip sharpness
0.73-0.77 on the val people against 0.80 plain), while the plainly trained decoder given flow patches at inference
kept it (0.82) and gained the flow's CSIM and SSIM (0.981 -> 0.985, 0.804 -> 0.809).

The moments are carried in latent cells divided by max(h, w) (in [0, 1], one scale for rows and columns): in float32
the spread of a 64-cell latent is good to ~1e-3 cell^2; in bfloat16 (autocast) it would be noise, so ``assemble``
refuses 16-bit input (render_real is a full-precision recipe). Letters: b batch, n reference frames, p numbers per
patch, h w latent rows and columns, y x pixels of a patch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from src.models.renderer.cell_patches import CellPatches


class FlowPatches(CellPatches):
    """``extract(frames)``: (B, N, 3, H, W) -> (B, N, P + 4N, h, w); ``assemble(moved, frames)``: (B, P + 4N, h, w)
    and the same frames -> (B, 3, H, W). ``sigma``: the smoothing's standard deviation in latent cells (0: none,
    the expected positions as they are); ``var_max``: the spread of a cell's source positions, in cells^2, above
    which that cell keeps its plain patch; ``sampling``: how a patch is read between pixels, "bilinear" (at a
    half-pixel position it averages two pixels: a slight blur) or "bicubic"; ``during_training``: False, plain
    ``CellPatches`` while ``self.training`` (module docstring)."""

    def __init__(self, cell: int = 4, margin: int = 2, sigma: float = 2.0, var_max: float = 1.0,
                 sampling: str = "bilinear", during_training: bool = True) -> None:
        super().__init__(cell, margin)
        if not isinstance(during_training, bool):
            raise ValueError(f"FlowPatches: during_training must be true or false, got {during_training!r}")
        self.during_training = during_training
        if sampling not in ("bilinear", "bicubic"):
            raise ValueError(f"FlowPatches: sampling must be 'bilinear' or 'bicubic', got {sampling!r}")
        self.sampling = sampling
        if not (isinstance(sigma, (int, float)) and sigma >= 0) or not (isinstance(var_max, (int, float))
                                                                        and var_max > 0):
            raise ValueError(f"FlowPatches: need sigma >= 0 (latent cells) and var_max > 0 (cells^2), "
                             f"got {sigma!r} and {var_max!r}")
        self.sigma, self.var_max = float(sigma), float(var_max)

    @property
    def flowing(self) -> bool:
        """Whether the patches follow the flow now (always, or outside training when ``during_training`` is off)."""
        return self.during_training or not self.training

    def extra_numbers(self, n: int) -> int:
        """Numbers each reference cell carries beyond the patch, for N references: 4N (0 while not ``flowing``)."""
        return 4 * n if self.flowing else 0

    def extract(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, N, 3, H, W) -> (B, N, P + 4N, h, w): the plain patches, then per reference the moment channels
        (only the plain patches, (B, N, P, h, w), while not ``flowing``)."""
        plain = super().extract(frames)  # (B, N, P, h, w)
        if not self.flowing:
            return plain
        b, n, _, h, w = plain.shape
        cy, cx = self._centres(h, w, frames)  # (h, 1), (1, w) in cells / max(h, w)
        base = torch.stack([torch.ones(h, w).to(frames), cx.expand(h, w), cy.expand(h, w),
                            cx ** 2 + cy ** 2])  # (4, h, w)
        eye = torch.eye(n).to(frames)  # (N, N)
        moments = torch.einsum("nm,khw->nmkhw", eye, base).reshape(n, 4 * n, h, w)  # (N, 4N, h, w) one-hot by ref
        return torch.cat([plain, moments[None].expand(b, -1, -1, -1, -1)], dim=2)  # (B, N, P + 4N, h, w)

    def assemble(self, moved: torch.Tensor | None, frames: torch.Tensor | None = None) -> torch.Tensor | None:
        """moved (B, P + 4N, h, w), the attention's output over values from ``extract(frames)``, and those frames
        (B, N, 3, H, W) -> (B, 3, H, W); None stays None."""
        if moved is None or not self.flowing:
            return super().assemble(moved)
        if frames is None or frames.ndim != 5:
            raise ValueError(f"FlowPatches: assemble needs the reference frames (B, N, 3, H, W) the values were "
                             f"extracted from, got {None if frames is None else tuple(frames.shape)}")
        b, n, _, height, width = frames.shape
        h, w = height // self.cell, width // self.cell
        p = self.numbers
        if moved.shape != (b, p + 4 * n, h, w):
            raise ValueError(f"FlowPatches: moved must be (B, P + 4N, h, w) = ({b}, {p + 4 * n}, {h}, {w}) for "
                             f"frames {tuple(frames.shape)}, got {tuple(moved.shape)}")
        if moved.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"FlowPatches: the moved source positions arrived in {moved.dtype}; the flow needs them "
                             f"in float32 (16 bits place a source to 1/256 of the crop and lose the spread): train "
                             f"and run this renderer in full precision (trainer.precision=32-true)")
        plain = moved[:, :p]  # (B, P, h, w)
        mom = rearrange(moved[:, p:], "b (n k) h w -> b n k h w", k=4).float()  # (B, N, 4, h, w)
        mass, first, second = mom[:, :, 0], mom[:, :, 1:3], mom[:, :, 3]  # (B, N, h, w), (B, N, 2, h, w), (B, N, h, w)
        cy, cx = self._centres(h, w, mass)
        cells = max(h, w)  # positions are carried in cells / max(h, w): one unit = that many cells
        with torch.no_grad():  # the gate is a comparison: no gradient through the spread
            mean = first / mass[:, :, None].clamp_min(1e-6)  # (B, N, 2, h, w)
            var = (second / mass.clamp_min(1e-6) - (mean ** 2).sum(2)).clamp_min(0) * cells ** 2  # (B, N, h, w) cells^2
            sure = (var < self.var_max).float()
        weight = mass * sure  # (B, N, h, w)
        centre = torch.stack([cx.expand(h, w), cy.expand(h, w)])  # (2, h, w)
        offset = (first - mass[:, :, None] * centre) * sure[:, :, None]  # (B, N, 2, h, w) = w (mu - c)
        num, den = self._smooth(offset), self._smooth(weight[:, :, None])  # (B, N, 2, h, w), (B, N, 1, h, w)
        shift = num / den.clamp_min(1e-6) * cells  # (B, N, 2, h, w) smoothed displacement in cells
        s = self.size
        pix = (torch.arange(s).to(shift) - (s - 1) / 2) / self.cell  # (s,) patch pixel offsets in cells
        col = torch.arange(w).to(shift) + 0.5  # (w,) cell centres in cells
        row = torch.arange(h).to(shift) + 0.5  # (h,)
        gx = (col + shift[:, :, 0])[:, :, :, None, :, None] + pix  # (B, N, h, 1, w, s) in cells
        gy = (row[:, None] + shift[:, :, 1])[:, :, :, None, :, None] + pix[:, None, None]  # (B, N, h, s, w, 1)
        grid = torch.stack(torch.broadcast_tensors(gx * (2.0 / w) - 1, gy * (2.0 / h) - 1), dim=-1)  # normalised
        grid = rearrange(grid, "b n h y w x c -> (b n) (h y) (w x) c")  # (B N, h s, w s, 2)
        cut = F.grid_sample(rearrange(frames, "b n c H W -> (b n) c H W").float(), grid, mode=self.sampling,
                            padding_mode="border", align_corners=False)  # (B N, 3, h s, w s)
        cut = rearrange(cut, "(b n) c (h y) (w x) -> b n (c y x) h w", b=b, h=h, w=w)  # (B, N, P, h, w) unfold order
        shifted = (cut * weight[:, :, None]).sum(1)  # (B, P, h, w)
        rest = 1 - weight.sum(1, keepdim=True) / mass.sum(1, keepdim=True).clamp_min(1e-6)  # (B, 1, h, w)
        return super().assemble((shifted + plain.float() * rest).to(moved.dtype))

    @staticmethod
    def _centres(h: int, w: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The latent cells' centres in cells / max(h, w) (one scale for rows and columns): (h, 1), (1, w)."""
        cells = max(h, w)
        cy = ((torch.arange(h) + 0.5) / cells).to(like)[:, None]  # (h, 1)
        cx = ((torch.arange(w) + 0.5) / cells).to(like)[None, :]  # (1, w)
        return cy, cx

    def _smooth(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, k, h, w) -> the same, Gaussian-smoothed over (h, w) with sigma cells, edges replicated."""
        if self.sigma == 0:
            return x
        radius = max(1, round(2.5 * self.sigma))
        taps = torch.exp(-0.5 * ((torch.arange(-radius, radius + 1).to(x)) / self.sigma) ** 2)
        taps = taps / taps.sum()  # (2r + 1,)
        b, n, k, h, w = x.shape
        flat = rearrange(x, "b n k h w -> (b n k) 1 h w")
        flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), taps.view(1, 1, 1, -1))  # along w
        flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), taps.view(1, 1, -1, 1))  # along h
        return rearrange(flat, "(b n k) 1 h w -> b n k h w", b=b, n=n, k=k)
