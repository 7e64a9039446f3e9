"""Metric math on features and class predictions (no I/O, no models).

The Fréchet distance follows pytorch-fid exactly (scipy `sqrtm`, an eps
offset when the product is singular, the imaginary part dropped only when
negligible), so numbers computed on the same features agree with it.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, dtype=np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _sqrtm(m: np.ndarray) -> np.ndarray:
    """scipy's sqrtm without its (deprecated) `disp` tuple; singular input gives inf/nan, handled by the caller."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.asarray(linalg.sqrtm(m))


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"feature statistics differ in shape: {mu1.shape} vs {mu2.shape}")
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm has a large imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    return frechet_distance(*feature_stats(a), *feature_stats(b))


def class_histogram(predicted: np.ndarray, num_classes: int) -> np.ndarray:
    counts = np.bincount(np.asarray(predicted, dtype=np.int64), minlength=num_classes).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def kl_divergence(p: np.ndarray, q: np.ndarray, eps: float = 1e-10) -> float:
    """KL(p || q) in nats; eps keeps empty bins finite."""
    p = np.asarray(p, np.float64) + eps
    q = np.asarray(q, np.float64) + eps
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))


def classes_covered(p_gen: np.ndarray, p_real: np.ndarray, min_ratio: float = 0.25) -> int:
    """A class is covered when its generated share is at least `min_ratio` of its real share."""
    return int(np.sum((p_real > 0) & (p_gen >= min_ratio * p_real)))
