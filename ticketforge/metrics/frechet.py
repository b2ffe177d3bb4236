"""The Frechet distance between two Gaussians fitted to feature sets (the formula behind FID).

``d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))``. The matrix square root comes from
``scipy.linalg.sqrtm``; as in pytorch-fid, a non-finite result is retried with ``eps * I`` added to
both covariances, and the tiny imaginary residue of a numerically real root is dropped.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import linalg

from ..errors import TicketforgeError


def _as_float64(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def feature_statistics(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[d]`` and covariance ``[d, d]`` (unbiased, float64) of ``features`` ``[n, d]``."""
    features = _as_float64(features)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need a [n >= 2, d] feature matrix, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(features.shape[1], features.shape[1])


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, *, eps: float = 1e-6,
                     imag_tol: float = 1e-3) -> float:
    """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    Raises:
        ValueError: the shapes do not match.
        TicketforgeError: the square root keeps a large imaginary part (too few samples for the
            feature dimension, usually).
    """
    mu1, mu2 = np.atleast_1d(_as_float64(mu1)), np.atleast_1d(_as_float64(mu2))
    sigma1, sigma2 = np.atleast_2d(_as_float64(sigma1)), np.atleast_2d(_as_float64(sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"shapes differ: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        residue = np.max(np.abs(np.diagonal(covmean).imag))
        if residue > imag_tol:
            raise TicketforgeError(
                f"Frechet distance: the covariance square root has an imaginary part of {residue:.3g}; "
                f"use more samples than feature dimensions ({sigma1.shape[0]})")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


__all__ = ["feature_statistics", "frechet_distance"]
