"""Hybrid 3DMM fit of one clip to detected 2D landmarks (PersonaTalk 3.1, docs/design.md, "Face model and fitting").

Two stages, as in the paper:

1. ``initialise``: a closed-form estimate from the landmarks alone. Per frame, a weak-perspective pose
   from the current shape (weighted least-squares affine camera -> nearest scaled rotation by SVD ->
   Euler angles of ``camera.euler_to_matrix``), then a ridge least-squares for the clip's identity
   ``alpha`` and a bounded ridge for each frame's expression ``beta_t`` given those poses; a few
   alternations. This is the project's initialisation; a learned regressor (Deep3DFaceRecon style) is
   not part of it: whatever estimate one has goes in through ``fit_clip(init=...)``.
2. ``fit_clip``: joint Adam optimisation of all T frames of
   ``L_lmk + w_tempo * L_tempo (Eq. 1) + L_reg (Eq. 2) + priors``:

   - L_lmk: weighted squared pixel distance of the projected landmark vertices to the detections;
   - L_tempo, Eq. 1: ``sum_k sum_t ||(kp_k,t+1 - kp_k,t) - (gt_k,t+1 - gt_k,t)||^2
     + lambda (||Lap_t(p)||^2 + ||Lap_t(beta)||^2)``, Laplacian = second difference along time;
   - L_reg, Eq. 2: ``sum_t ||alpha_t - mean(alpha)||^2 + ||beta_t - beta_t^init||^2 + ||p_t - p_t^init||^2``.
     The identity is ONE alpha shared by the clip, i.e. Eq. 2's first term held at zero (its limit of
     infinite weight): the paper keeps the clip mean as the identity afterwards anyway (docs/design.md,
     "Face model and fitting"), and a per-frame alpha would only let identity modes soak up expression and
     pose error frame by frame;
   - priors (not in the paper, needed by a landmark-only fit): ``w_id ||alpha||^2`` (alpha ~ N(0, 1)) and
     ``w_exp ||beta_t||^2``, plus hard bounds on beta (projected after every step).

Units. Every term but the priors is in squared pixels: the optimiser works on "pixel-equivalent"
variables, so one learning rate suits all of them and the Laplacian of Eq. 1 weighs angles, pixels and
expression modes comparably. A pose ``(pitch, yaw, roll, tx, ty, s)`` becomes
``q = (angles * s0 * r, tx, ty, s * r)`` with ``s0`` the clip's initial scale (px per unit) and ``r``
the RMS radius of the landmark vertices (units): a rotation of q pixels moves a landmark about q px.
A mode coefficient is multiplied by its RMS 3D landmark displacement in pixels (``s0 * rms_k |B[lmk, :, k]|``).
Squared terms are means over frames (and weighted means over landmarks), so weights do not depend on T.

Frames with ``valid=False`` (no face found) are left out of L_lmk and of the velocity term; the Laplacian
and L_reg (with an initialisation interpolated from the neighbouring valid frames) bridge them.

Landmark calibration. The procedural model's landmark vertices are where the model *designs* MediaPipe's
478 landmarks; MediaPipe places them by its learned semantics, a systematic field of a few mm (narrower lower
face and mouth, higher chin, the face oval a silhouette guess that slides with the head) that also moves with
the expression (its lip contour follows the visible mouth opening). ``FitConfig.landmark_calibration`` adds a
per-landmark offset (478, 3), in the canonical frame so it turns with the head, plus a part linear in the
expression, ``E beta`` with E (478, 3, K_exp), to the landmark vertices where the fit compares them with
detections (``landmark_offset``, ``expression_offset``; files and rules in
``src.geometry.face_models.landmark_calibration``). Since the model is linear in beta, the second part is a
correction of the landmark rows of the expression basis. It is measured on a synthetic corpus against its
exact ground truth (``make calibrate-landmarks``), tied to the model's VERSION, zero for
ICT-FaceKit, BFM and iBUG-68, and off for the synthetic sidecar's landmarks (the model's own vertices). The
mesh is never changed: renders and training targets use the raw vertices.

Priors. Identity and expression modes overlap on the lips (mouth width, lip thickness): the split of a clip's
constant lip shape between alpha and beta is decided by the priors, and the fitted expression carries the
rest as a per-clip offset, which stage 1 must then learn. ``w_exp`` 0.5 (was 0.002) and ``w_id`` 0.01 (was
0.05) gave the smallest such offset on held-out synthetic speakers.

Measured (procedural model, 256 px crops, MediaPipe detections, the shard builder's defaults, 160 synthetic
clips of 40 speakers, 16,000 frames): reprojection 0.84-0.92 px per split; expression vertices vs the truth
0.64-0.83 mm over all vertices (1.1-1.4% of the eye distance), 1.25-1.64 mm on the lower face. Before the
expression terms and the priors (static offset, 500 steps): 1.10-1.16 mm, and the fitted mouth-opening
amplitude was 0.62 of the truth (0.73 now, correlation 0.91 -> 0.93). On exact landmarks with 0.5 px noise
the fit reaches the noise floor (~0.7 px).
Speed: 100 Adam steps (the default) reach the 500-step loss within 1% and the same frame-to-frame jitter;
a 150-frame clip fits in ~0.6 CPU-s on one thread (init ~0.35 s; the data-preparation speed benchmark,
README.md).

Letters: t frames, n landmarks, k modes.
"""
from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from src.geometry import camera
from src.geometry.face_models import landmark_calibration as calibration
from src.geometry.landmarks import DEFAULT_WEIGHTS, LANDMARK_SETS, landmark_indices, landmark_weights, select_landmarks


@dataclass
class FitConfig:
    """Settings of ``initialise`` and ``fit_clip``; see the module docstring for the terms and units."""

    steps: int = 100  # Adam steps over the whole clip (100 reach the 500-step loss within 1%)
    lr: float = 0.1  # Adam step size in pixel-equivalent units, cosine-decayed to lr_final_fraction
    lr_final_fraction: float = 0.05
    landmarks: str = "mp478"  # "mp478" (MediaPipe 478, needs fm.lmk478) or "ibug68"
    # per-landmark offset added to the landmark vertices (module docstring, Landmark calibration): "auto" = the
    # packaged calibration of the model and landmark set where it needs one (procedural + mp478), else none;
    # None = no offset (landmarks that are the model's own vertices: the synthetic sidecar); or a file path
    landmark_calibration: str | None = "auto"
    weights: dict = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))  # region -> landmark weight
    w_tempo: float = 1.0  # weight of Eq. 1 as a whole
    lambda_lap: float = 0.2  # lambda of Eq. 1
    w_reg_beta: float = 0.01  # Eq. 2: ||beta_t - beta_t^init||^2 (pixel-equivalent)
    w_reg_pose: float = 0.01  # Eq. 2: ||p_t - p_t^init||^2 (pixel-equivalent)
    w_id: float = 0.01  # prior ||alpha||^2, alpha ~ N(0, 1)
    w_exp: float = 0.5  # prior ||beta_t||^2 (module docstring, Priors: the identity / expression split of the lips)
    # bounds of blendshape weights (None: unbounded); a model with a PCA expression basis (fm.exp_bounded False:
    # BFM) is never bounded, whatever this says: its coefficients are signed
    exp_bounds: tuple[float, float] | None = (0.0, 1.0)
    signed_modes: tuple[str, ...] = ("mouth_shift",)  # modes bounded by (-hi, hi) instead
    init_rounds: int = 3  # pose <-> shape alternations of the closed-form initialisation
    threads: int = 1  # torch threads while fitting (one per clip; run clips in parallel)

    def __post_init__(self) -> None:
        if self.landmarks not in LANDMARK_SETS:
            raise ValueError(f"FitConfig.landmarks must be one of {LANDMARK_SETS}, got {self.landmarks!r}")
        unknown = set(self.weights) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ValueError(f"FitConfig.weights has unknown regions {sorted(unknown)}; "
                             f"known: {sorted(DEFAULT_WEIGHTS)}")
        if self.steps < 0 or self.threads < 1:
            raise ValueError(f"FitConfig needs steps >= 0 and threads >= 1, got {self.steps}, {self.threads}")


@dataclass
class Coeffs:
    """One clip's coefficients: alpha (K_id,), beta (T, K_exp), pose (T, 6) as in ``camera``."""

    alpha: torch.Tensor
    beta: torch.Tensor
    pose: torch.Tensor


@dataclass
class FitResult:
    """``fit_clip``'s output. ``reproj_px`` (T,): mean distance over all landmarks of the clip's landmark
    set (unweighted), NaN on invalid frames; ``losses``: final values of each term; ``landmarks_px``
    (T, N, 2): the fitted landmark vertices (with the calibration's offset) projected, what the detections
    were compared with."""

    alpha: torch.Tensor  # (K_id,)
    beta: torch.Tensor  # (T, K_exp)
    pose: torch.Tensor  # (T, 6)
    reproj_px: torch.Tensor  # (T,)
    losses: dict[str, float]
    init: Coeffs
    seconds: float
    landmarks_px: torch.Tensor | None = None  # (T, N, 2)


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` torch threads; the caller's setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------- setup --

@dataclass
class _Problem:
    """The landmark vertices' slices of the model and everything fixed during one clip's fit."""

    target: torch.Tensor  # (T, N, 2) detected landmarks, px (0 where invalid)
    valid: torch.Tensor  # (T,) bool
    weight: torch.Tensor  # (N,) landmark weights
    mean: torch.Tensor  # (N, 3)
    id_basis: torch.Tensor  # (N, 3, K_id)
    exp_basis: torch.Tensor  # (N, 3, K_exp)
    lo: torch.Tensor | None  # (K_exp,) bounds on beta
    hi: torch.Tensor | None

    def shape(self, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """alpha (K_id,), beta (T, K_exp) -> landmark vertices (T, N, 3) in model units."""
        ident = self.mean + torch.einsum("nck,k->nc", self.id_basis, alpha)  # (N, 3)
        return ident + torch.einsum("nck,tk->tnc", self.exp_basis, beta)  # (T, N, 3)

    def projected(self, alpha: torch.Tensor, beta: torch.Tensor, proj: torch.Tensor,
                  trans: torch.Tensor) -> torch.Tensor:
        """The landmark vertices projected by ``_affine``'s proj (T, 2, 3) and trans (T, 2): (T, 2, N) px.
        Coordinates-first, so the shape is one (T, K) @ (K, 3N) product and the projection one batched
        (2, 3) @ (3, N) product per frame: about 3x faster than the (T, N, 3) layout's einsums, which copy
        permuted tensors in forward and backward of every Adam step (measured: 1.2 vs 3.4 ms, 150 frames)."""
        ident = self._mean_cn + self._id_cn @ alpha  # (3N,)
        verts = (ident + beta @ self._exp_cn).unflatten(1, (3, -1))  # (T, 3, N)
        return torch.baddbmm(trans[:, :, None], proj, verts)  # (T, 2, N)

    @functools.cached_property
    def target_cn(self) -> torch.Tensor:
        return self.target.transpose(1, 2).contiguous()  # (T, 2, N)

    @functools.cached_property
    def _mean_cn(self) -> torch.Tensor:
        return self.mean.T.flatten()  # (3N,) x of every landmark, then y, then z

    @functools.cached_property
    def _id_cn(self) -> torch.Tensor:
        return self.id_basis.permute(1, 0, 2).flatten(0, 1)  # (3N, K_id)

    @functools.cached_property
    def _exp_cn(self) -> torch.Tensor:
        return self.exp_basis.permute(2, 1, 0).flatten(1).contiguous()  # (K_exp, 3N)

    def clamp(self, beta: torch.Tensor) -> torch.Tensor:
        return beta if self.lo is None else torch.maximum(torch.minimum(beta, self.hi), self.lo)


def _problem(fm, lmk2d, cfg: FitConfig, valid) -> _Problem:
    idx = landmark_indices(fm, cfg.landmarks)
    target = torch.as_tensor(np.asarray(lmk2d), dtype=torch.float32)
    if target.ndim != 3 or target.shape[1:] != (len(idx), 2):
        raise ValueError(f"lmk2d must be (T, {len(idx)}, 2) pixels for landmarks={cfg.landmarks!r}, "
                         f"got {tuple(target.shape)}")
    finite = torch.isfinite(target).all(-1).all(-1)  # (T,)
    valid = finite if valid is None else torch.as_tensor(np.asarray(valid), dtype=torch.bool)
    if valid.shape != finite.shape:
        raise ValueError(f"valid must be (T,) = ({len(finite)},) bool, got {tuple(valid.shape)}")
    if bool((valid & ~finite).any()):
        raise ValueError("lmk2d has non-finite values on frames marked valid")
    if not bool(valid.any()):
        raise ValueError("no valid frame in the clip: nothing to fit")
    mean = fm.mean[idx].float() + landmark_offset(fm, cfg)  # where the detector puts the landmarks
    exp_basis = fm.exp_basis[idx].float() + expression_offset(fm, cfg)  # and how they move with the expression
    return _Problem(torch.where(valid[:, None, None], target.nan_to_num(0.0), 0.0), valid,
                    landmark_weights(cfg.landmarks, cfg.weights), mean,
                    fm.id_basis[idx].float(), exp_basis, *_expression_bounds(fm, cfg))


def landmark_offset(fm, cfg: FitConfig) -> torch.Tensor:
    """(N, 3) offset the fit adds to the landmark vertices (model units, canonical frame), from
    ``cfg.landmark_calibration`` (``landmark_calibration.landmark_offset``): zero for ICT-FaceKit, BFM and
    iBUG-68, the packaged MediaPipe calibration for the procedural model; raises for a calibration made for
    another version of the model."""
    n = len(landmark_indices(fm, cfg.landmarks))
    return torch.from_numpy(calibration.landmark_offset(fm.name, cfg.landmarks, n, cfg.landmark_calibration))


def expression_offset(fm, cfg: FitConfig) -> torch.Tensor:
    """(N, 3, K_exp) change of ``landmark_offset`` per unit of each expression mode (the calibration's
    expression-dependent part; zero where it has none), added to the landmark rows of the expression basis."""
    n = len(landmark_indices(fm, cfg.landmarks))
    return torch.from_numpy(calibration.expression_offset(fm.name, cfg.landmarks, n, fm.n_exp,
                                                          cfg.landmark_calibration))


def _expression_bounds(fm, cfg: FitConfig) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(lo, hi) (K_exp,) bounds on beta, or (None, None): none for ``cfg.exp_bounds=None`` or a PCA basis."""
    if cfg.exp_bounds is None or not fm.exp_bounded:
        return None, None
    lo = torch.full((fm.n_exp,), float(cfg.exp_bounds[0]))
    hi = torch.full((fm.n_exp,), float(cfg.exp_bounds[1]))
    signed = torch.tensor([name in cfg.signed_modes for name in fm.exp_names])
    return torch.where(signed, -hi, lo), hi


# ------------------------------------------------------------------------------- initialisation --

def initialise(fm, lmk2d, cfg: FitConfig | None = None, valid=None) -> Coeffs:
    """Closed-form initialisation from landmarks (module docstring, stage 1): lmk2d (T, N, 2) px ->
    Coeffs. Frames with ``valid=False`` (default: frames with non-finite landmarks) take values
    interpolated from their valid neighbours."""
    cfg = cfg or FitConfig()
    prob = _problem(fm, lmk2d, cfg, valid)
    with torch_threads(cfg.threads):
        return _initialise(prob, cfg)


def _initialise(prob: _Problem, cfg: FitConfig) -> Coeffs:
    p64 = _Problem(**{k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v
                      for k, v in vars(prob).items()})
    x = p64.target[prob.valid]  # (Tv, N, 2)
    w = p64.weight / p64.weight.sum()
    alpha = torch.zeros(p64.id_basis.shape[2], dtype=torch.float64)
    beta = torch.zeros(len(x), p64.exp_basis.shape[2], dtype=torch.float64)
    gram_id, gram_exp = _gram(p64.id_basis, w), _gram(p64.exp_basis, w)  # (3, 3, K, K) each
    for _ in range(max(cfg.init_rounds, 1)):
        pose = pose_from_landmarks(p64.shape(alpha, beta), x, w)
        proj, trans = _affine(pose)
        alpha = _solve_alpha(p64, proj, trans, beta, x, w, cfg.w_id, gram_id)
        beta = _solve_beta(p64, proj, trans, alpha, x, w, cfg.w_exp, gram_exp)
    valid = prob.valid
    return Coeffs(alpha.float(), _fill_invalid(beta, valid).float(), _fill_invalid(pose, valid).float())


def pose_from_landmarks(verts: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Weak-perspective pose per frame: model points (T, N, 3), image points (T, N, 2), weights (N,)
    summing to 1 -> (T, 6). Least-squares affine camera, then the nearest scaled rotation (SVD)."""
    vm, xm = torch.einsum("n,tnc->tc", w, verts), torch.einsum("n,tnc->tc", w, x)  # (T, 3), (T, 2)
    vc, xc = verts - vm[:, None], x - xm[:, None]
    cov = torch.einsum("tnc,n,tnd->tcd", vc, w, vc)  # (T, 3, 3)
    affine = torch.linalg.solve(cov, torch.einsum("tnc,n,tnd->tcd", vc, w, xc)).transpose(1, 2)  # (T, 2, 3)
    affine[:, 1] = -affine[:, 1]  # screen y is down: rows are now s * R[:2]
    u, sv, vh = torch.linalg.svd(affine, full_matrices=False)  # (T, 2, 2), (T, 2), (T, 2, 3)
    rows = u @ vh  # (T, 2, 3) orthonormal rows
    rot = torch.cat([rows, torch.linalg.cross(rows[:, 0], rows[:, 1])[:, None]], 1)  # (T, 3, 3), det +1
    scale = sv.mean(-1)  # (T,)
    pose = torch.cat([matrix_to_euler(rot), torch.zeros_like(xm), scale[:, None]], 1)
    proj, _ = _affine(pose)
    pose[:, 3:5] = xm - torch.einsum("tij,tj->ti", proj, vm)
    return pose


def matrix_to_euler(rot: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation ``Rz(roll) @ Ry(yaw) @ Rx(pitch)`` -> (..., 3) (pitch, yaw, roll), the inverse
    of ``camera.euler_to_matrix`` for |yaw| < pi/2."""
    pitch = torch.atan2(rot[..., 2, 1], rot[..., 2, 2])
    yaw = torch.atan2(-rot[..., 2, 0], torch.hypot(rot[..., 2, 1], rot[..., 2, 2]))
    roll = torch.atan2(rot[..., 1, 0], rot[..., 0, 0])
    return torch.stack([pitch, yaw, roll], -1)


def _affine(pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pose (T, 6) -> the projection as x_px = proj @ X + trans: proj (T, 2, 3), trans (T, 2)."""
    rot = camera.euler_to_matrix(pose[:, :3])[:, :2]  # (T, 2, 3)
    flip = torch.tensor([1.0, -1.0], dtype=pose.dtype)
    return pose[:, 5, None, None] * flip[:, None] * rot, pose[:, 3:5]


def _gram(basis: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """sum_n w_n B[n, a, k] B[n, b, l] -> (3, 3, K, K): with M_t = P_t' P_t (3, 3), a frame's normal matrix
    J_t' W J_t (J_t = P_t B, the (N, 2, K) Jacobian) is sum_ab M_t[a, b] G[a, b], so the (T, N, 2, K)
    Jacobians are never built (they were most of the initialisation's time)."""
    return torch.einsum("n,nak,nbl->abkl", w, basis, basis)


def _solve_alpha(prob, proj, trans, beta, x, w, w_id: float, gram: torch.Tensor) -> torch.Tensor:
    """Ridge least squares for the clip's alpha given poses and per-frame beta: (K_id,). gram: _gram(id_basis)."""
    fixed = torch.bmm(prob.shape(torch.zeros_like(prob.id_basis[0, 0]), beta), proj.transpose(1, 2)) + trans[:, None]
    normal = (proj.transpose(1, 2) @ proj).sum(0)  # (3, 3) sum_t P_t' P_t
    k = gram.shape[-1]
    hess = torch.einsum("ab,abkl->kl", normal, gram) / len(x) + w_id * torch.eye(k, dtype=x.dtype)
    u = torch.bmm(x - fixed, proj) * w[:, None]  # (T, N, 3) = W P_t' r_t per landmark
    grad = u.sum(0).flatten() @ prob.id_basis.flatten(0, 1) / len(x)  # (3N,) @ (3N, K_id)
    return torch.linalg.solve(hess, grad)


def _solve_beta(prob, proj, trans, alpha, x, w, w_exp: float, gram: torch.Tensor) -> torch.Tensor:
    """Bounded ridge least squares for each frame's beta given poses and alpha: (T, K_exp). gram: _gram(exp_basis)."""
    ident = prob.mean + torch.einsum("nck,k->nc", prob.id_basis, alpha)  # (N, 3)
    fixed = torch.matmul(ident, proj.transpose(1, 2)) + trans[:, None]  # (T, N, 2)
    k = gram.shape[-1]
    normal = (proj.transpose(1, 2) @ proj).flatten(1)  # (T, 9) P_t' P_t
    hess = (normal @ gram.flatten(0, 1).flatten(1)).unflatten(1, (k, k)) + w_exp * torch.eye(k, dtype=x.dtype)
    u = torch.bmm(x - fixed, proj) * w[:, None]  # (T, N, 3)
    grad = u.flatten(1) @ prob.exp_basis.flatten(0, 1)  # (T, 3N) @ (3N, K_exp)
    return _bounded_ridge(hess, grad, prob.lo, prob.hi)


def _bounded_ridge(hess: torch.Tensor, grad: torch.Tensor, lo, hi, iters: int = 150) -> torch.Tensor:
    """min 1/2 b'Hb - g'b s.t. lo <= b <= hi, batched over frames: (T, K, K), (T, K) -> (T, K).
    The unconstrained solution, clamped, refined by accelerated projected gradient (FISTA)."""
    beta = torch.linalg.solve(hess, grad)
    if lo is None:
        return beta
    lo, hi = lo.to(beta), hi.to(beta)
    step = 1.0 / torch.linalg.eigvalsh(hess)[:, -1:]  # (T, 1) = 1 / Lipschitz constant
    x = y = beta.clamp(lo, hi)
    momentum = 1.0
    for _ in range(iters):
        x_new = (y - step * (torch.einsum("tkl,tl->tk", hess, y) - grad)).clamp(lo, hi)
        m_new = (1 + (1 + 4 * momentum ** 2) ** 0.5) / 2
        y, x, momentum = x_new + (momentum - 1) / m_new * (x_new - x), x_new, m_new
    return x


def _fill_invalid(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(Tv, D) values on the valid frames -> (T, D), linear in time between them, held at the ends."""
    if bool(valid.all()):
        return values
    t_all, t_valid = np.arange(len(valid)), np.flatnonzero(valid.numpy())
    v = values.numpy()
    return torch.from_numpy(np.stack([np.interp(t_all, t_valid, v[:, d]) for d in range(v.shape[1])], 1))


# ------------------------------------------------------------------------------------ joint fit --

def fit_clip(fm, lmk2d, cfg: FitConfig | None = None, valid=None, init: Coeffs | None = None) -> FitResult:
    """Joint fit of all T frames (module docstring, stage 2): lmk2d (T, N, 2) px, N = 478 ("mp478") or 68
    ("ibug68"); valid (T,) bool (default: frames whose landmarks are all finite); init: any Coeffs
    (default ``initialise``), projected onto the expression bounds."""
    cfg = cfg or FitConfig()
    start = time.perf_counter()
    prob = _problem(fm, lmk2d, cfg, valid)
    with torch_threads(cfg.threads):
        init = _initialise(prob, cfg) if init is None else _checked(init, fm, len(prob.valid))
        scales = _Scales(prob, init)
        params = {k: v.detach().clone().requires_grad_(True) for k, v in scales.to_params(init).items()}
        anchor = {k: v.detach().clone() for k, v in params.items()}
        opt = torch.optim.Adam(list(params.values()), lr=cfg.lr)  # the first in a process imports torch._dynamo (~4 s)
        decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(cfg.steps, 1),
                                                           eta_min=cfg.lr * cfg.lr_final_fraction)
        for _ in range(cfg.steps):
            opt.zero_grad(set_to_none=True)
            _objective(prob, scales, params, anchor, cfg)[0].backward()
            opt.step()
            decay.step()
            with torch.no_grad():
                params["b"].copy_(scales.clamp_b(params["b"]))
                params["q"][:, 5].clamp_(min=1e-3 * float(anchor["q"][:, 5].median()))
        with torch.no_grad():
            _, losses, kp = _objective(prob, scales, params, anchor, cfg)
            coeffs = scales.to_coeffs(params)
    reproj = (kp - prob.target).norm(dim=-1).mean(-1).masked_fill(~prob.valid, float("nan"))  # (T,)
    return FitResult(coeffs.alpha, coeffs.beta, coeffs.pose, reproj, losses, init, time.perf_counter() - start, kp)


class _Scales:
    """The pixel-equivalent parameterisation (module docstring, Units): a = alpha * a_scale,
    b = beta * b_scale, q = (angles * s0 * r, tx, ty, s * r)."""

    def __init__(self, prob: _Problem, init: Coeffs):
        self.s0 = float(init.pose[:, 5].median())
        centred = prob.mean - prob.mean.mean(0)
        self.r = float(centred.square().sum(-1).mean().sqrt())
        self.a_scale = self.s0 * _rms_displacement(prob.id_basis)  # (K_id,)
        self.b_scale = self.s0 * _rms_displacement(prob.exp_basis)  # (K_exp,)
        self.q_scale = torch.tensor([self.s0 * self.r] * 3 + [1.0, 1.0, self.r])  # (6,)
        self.prob = prob

    def to_params(self, c: Coeffs) -> dict[str, torch.Tensor]:
        return {"a": c.alpha * self.a_scale, "b": self.prob.clamp(c.beta) * self.b_scale, "q": c.pose * self.q_scale}

    def to_coeffs(self, p: dict[str, torch.Tensor]) -> Coeffs:
        return Coeffs(p["a"] / self.a_scale, p["b"] / self.b_scale, p["q"] / self.q_scale)

    def clamp_b(self, b: torch.Tensor) -> torch.Tensor:
        return self.prob.clamp(b / self.b_scale) * self.b_scale


def _rms_displacement(basis: torch.Tensor) -> torch.Tensor:
    """(N, 3, K) -> (K,) RMS 3D displacement of the landmark vertices per unit coefficient (3D, so depth
    modes, which show only under rotation, are not scaled to zero), floored at 5% of the median."""
    rms = basis.square().sum(1).mean(0).sqrt()
    return rms.clamp(min=0.05 * float(rms.median()) + 1e-12)


def _objective(prob: _Problem, scales: _Scales, p: dict, anchor: dict, cfg: FitConfig):
    """Total loss, {term: value}, and the projected landmarks (T, N, 2)."""
    c = scales.to_coeffs(p)
    proj, trans = _affine(c.pose)  # camera.project's x and y rows only: the depth row is not needed
    kp = prob.projected(c.alpha, c.beta, proj, trans)  # (T, 2, N)
    target = prob.target_cn  # (T, 2, N)
    w = prob.weight / prob.weight.sum()
    valid = prob.valid.float()
    lmk = ((kp - target).square().sum(1) @ w * valid).sum() / valid.sum()
    pair = valid[1:] * valid[:-1]  # (T-1,) both frames seen
    dvel = (kp[1:] - kp[:-1]) - (target[1:] - target[:-1])  # (T-1, 2, N)
    vel = (dvel.square().sum(1) @ w * pair).sum() / pair.sum().clamp(min=1.0)
    n_lap = max(len(valid) - 2, 1)
    lap = (_laplacian(p["q"]).square().sum() + _laplacian(p["b"]).square().sum()) / n_lap
    tempo = vel + cfg.lambda_lap * lap  # Eq. 1
    reg = (cfg.w_reg_beta * (p["b"] - anchor["b"]).square().sum(-1).mean()
           + cfg.w_reg_pose * (p["q"] - anchor["q"]).square().sum(-1).mean())  # Eq. 2 (alpha shared)
    prior = cfg.w_id * c.alpha.square().sum() + cfg.w_exp * c.beta.square().sum(-1).mean()
    total = lmk + cfg.w_tempo * tempo + reg + prior
    terms = {"total": total, "lmk": lmk, "vel": vel, "lap": lap, "reg": reg, "prior": prior}
    return total, {k: float(v.detach()) for k, v in terms.items()}, kp.transpose(1, 2)  # kp (T, N, 2)


def _laplacian(x: torch.Tensor) -> torch.Tensor:
    """Second difference along time: (T, D) -> (T-2, D)."""
    return x[2:] - 2 * x[1:-1] + x[:-2]


def _checked(init: Coeffs, fm, n_frames: int) -> Coeffs:
    want = {"alpha": (fm.n_id,), "beta": (n_frames, fm.n_exp), "pose": (n_frames, camera.POSE_DIM)}
    for name, shape in want.items():
        got = tuple(getattr(init, name).shape)
        if got != shape:
            raise ValueError(f"init.{name} must be {shape}, got {got}")
    return Coeffs(*(torch.as_tensor(getattr(init, k), dtype=torch.float32) for k in want))


def fit_landmarks(fm, lmk: np.ndarray, fit_cfg: FitConfig, exact: bool = False) -> tuple[torch.Tensor, FitConfig]:
    """The tracker's MediaPipe-478 landmarks (T, 478, 2) and the fit settings for this face model: all 478 where
    the model has that correspondence (the procedural model), else their iBUG-68 subset (ICT-FaceKit, BFM).
    ``exact``: the landmarks are the model's own vertices (the synthetic sidecar), so no detector calibration
    applies."""
    if exact:
        fit_cfg = replace(fit_cfg, landmark_calibration=None)
    selected, name = select_landmarks(fm, lmk)
    return torch.from_numpy(np.ascontiguousarray(selected)), replace(fit_cfg, landmarks=name)
