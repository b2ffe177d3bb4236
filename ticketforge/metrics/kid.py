"""Kernel Inception Distance (Binkowski et al. 2018) on any features.

The unbiased estimate of MMD^2 with the polynomial kernel ``k(x, y) = (x.y / d + 1)^3``, averaged
over random subsets of both feature sets. Unlike the Frechet distance it is unbiased in the sample
count, so values from different sample counts can be compared.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .frechet import _as_float64


def polynomial_mmd2(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> float:
    """Unbiased MMD^2 of ``x`` ``[m, d]`` and ``y`` ``[m', d]`` under ``(x.y / d + coef0)^degree``."""
    d = x.shape[1]
    kxx = (x @ x.T / d + coef0) ** degree
    kyy = (y @ y.T / d + coef0) ** degree
    kxy = (x @ y.T / d + coef0) ** degree
    m, n = x.shape[0], y.shape[0]
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(xx + yy - 2.0 * kxy.mean())


def kernel_distance(real: Any, fake: Any, *, subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> tuple[float, float]:
    """KID of two feature sets ``[n, d]``: ``(mean, std)`` of MMD^2 over ``subsets`` random subsets.

    ``subset_size`` is clamped to the smaller set; each subset is drawn without replacement.
    """
    real, fake = _as_float64(real), _as_float64(fake)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"need two [n, d] feature sets with the same d, got {real.shape} and {fake.shape}")
    size = min(subset_size, real.shape[0], fake.shape[0])
    if size < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    rng = np.random.default_rng(seed)
    values = [polynomial_mmd2(real[rng.choice(real.shape[0], size, replace=False)],
                              fake[rng.choice(fake.shape[0], size, replace=False)]) for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


__all__ = ["kernel_distance", "polynomial_mmd2"]
