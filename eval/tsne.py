"""Exact t-SNE (van der Maaten and Hinton 2008) in numpy, for Fig. 5's few hundred style embeddings
(scikit-learn is not a dependency). O(N^2) memory and time: meant for N up to a few thousand.

Steps: Gaussian affinities per point with the bandwidth found by bisection to the target perplexity,
symmetrised ``P = (P_cond + P_cond^T) / 2N``; a 2-D layout initialised from the first principal components
(scaled to std 1e-4, deterministic up to sign) and optimised by gradient descent on KL(P || Q) with
Student-t ``Q``, momentum 0.5 then 0.8, per-coordinate gains, early exaggeration 12 for the first 250
iterations; the learning rate ``max(N / 12 / 4, 50)`` (the "auto" rule of Belkina et al. 2019).
"""
from __future__ import annotations

import numpy as np


def _squared_distances(x: np.ndarray) -> np.ndarray:
    sq = (x ** 2).sum(1)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)


def affinities(x: np.ndarray, perplexity: float, tol: float = 1e-5, iters: int = 100) -> np.ndarray:
    """(N, D) -> (N, N) symmetric joint probabilities P."""
    n = len(x)
    dist = _squared_distances(x)
    target = np.log(perplexity)
    cond = np.zeros((n, n))
    for i in range(n):
        d = np.delete(dist[i], i)
        lo, hi, beta = 0.0, np.inf, 1.0
        for _ in range(iters):
            p = np.exp(-(d - d.min()) * beta)
            total = p.sum()
            entropy = np.log(total) + beta * ((d - d.min()) * p).sum() / total
            if abs(entropy - target) < tol:
                break
            if entropy > target:  # too flat: narrow the Gaussian
                lo, beta = beta, beta * 2.0 if hi == np.inf else (beta + hi) / 2.0
            else:
                hi, beta = beta, (beta + lo) / 2.0
        cond[i, np.arange(n) != i] = p / total
    return np.maximum((cond + cond.T) / (2.0 * n), 1e-12)


def tsne(x: np.ndarray, perplexity: float = 30.0, iters: int = 1000, seed: int = 0) -> np.ndarray:
    """(N, D) -> (N, 2) t-SNE layout (module docstring). ``perplexity`` is capped at (N - 1) / 3."""
    x = np.asarray(x, np.float64)
    n = len(x)
    if x.ndim != 2 or n < 3:
        raise ValueError(f"tsne: x must be (N, D) with N >= 3 points, got {x.shape}")
    perplexity = min(perplexity, (n - 1) / 3.0)
    P = affinities(x, perplexity)
    centred = x - x.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    y = centred @ vt[:2].T  # (N, 2) first principal components
    if y.shape[1] < 2:
        y = np.c_[y, np.random.default_rng(seed).standard_normal(n)]
    y = y / max(y[:, 0].std(), 1e-12) * 1e-4
    lr, exaggeration = max(n / 12.0 / 4.0, 50.0), 12.0
    velocity, gains = np.zeros_like(y), np.ones_like(y)
    for it in range(iters):
        num = 1.0 / (1.0 + _squared_distances(y))  # (N, N) Student-t kernel
        np.fill_diagonal(num, 0.0)
        Q = np.maximum(num / num.sum(), 1e-12)
        W = ((exaggeration if it < 250 else 1.0) * P - Q) * num  # (N, N)
        grad = 4.0 * (W.sum(1)[:, None] * y - W @ y)  # (N, 2)
        gains = np.where(np.sign(grad) != np.sign(velocity), gains + 0.2, gains * 0.8).clip(min=0.01)
        velocity = (0.5 if it < 250 else 0.8) * velocity - lr * gains * grad
        y = y + velocity
        y -= y.mean(0)
    return y
