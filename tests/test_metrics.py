import numpy as np
import pytest

from gan.metrics import (
    class_histogram,
    classes_covered,
    feature_stats,
    fid_from_features,
    frechet_distance,
    kl_divergence,
)


def reference_fd(a: np.ndarray, b: np.ndarray) -> float:
    """Independent formula: Tr sqrt(S1 S2) via eigenvalues of sqrt(S1) S2 sqrt(S1) (symmetric PSD)."""
    m1, m2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    ev = np.linalg.eigvalsh(r1 @ s2 @ r1)
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(ev, 0, None)).sum())


def test_frechet_matches_independent_reference():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 16)) @ rng.normal(size=(16, 16))
    b = rng.normal(0.3, 1.2, size=(2000, 16)) @ rng.normal(size=(16, 16))
    assert fid_from_features(a, b) == pytest.approx(reference_fd(a, b), rel=1e-3)


def test_frechet_1d_closed_form_and_identity():
    # For 1-D Gaussians, FD = (m1 - m2)^2 + (s1 - s2)^2.
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]])) == pytest.approx(
        4 + 1
    )
    x = np.random.default_rng(1).normal(size=(500, 8))
    assert abs(frechet_distance(*feature_stats(x), *feature_stats(x))) < 1e-6


def test_frechet_singular_covariance_is_finite():
    x = np.random.default_rng(2).normal(size=(300, 6))
    x[:, 3:] = 0  # dead ReLU-like features
    y = x + 0.1
    assert np.isfinite(fid_from_features(x, y))


def test_mode_collapse_shows_in_coverage_and_kl():
    real = class_histogram(np.repeat(np.arange(10), 100), 10)
    collapsed = class_histogram(np.array([0, 1, 2] * 300), 10)
    assert classes_covered(real, real) == 10
    assert classes_covered(collapsed, real) == 3
    assert kl_divergence(real, real) == pytest.approx(0, abs=1e-9)
    assert kl_divergence(collapsed, real) == pytest.approx(np.log(10 / 3), rel=1e-3)
