"""Data-copying (memorisation) test for generative models, on feature vectors.

Implements the three-sample test of Meehan, Chaudhuri & Dasgupta, "A Non-Parametric Test to Detect
Data-Copying in Generative Models", AISTATS 2020 (arXiv:2004.05675), exactly as the authors' reference code
https://github.com/casey-meehan/data-copying, file ``data_copying_tests.py``, functions ``Zu``, ``Zu_cells``
and ``C_T``, with cells and tau set up as in their experiment scripts (``moons_experiments.py``,
``MNIST_kde_test.py``, ``MNIST_vae_test.py``, ``BigGan_test.py``):

* the instance space is cut into ``cells`` cells by k-means fitted on the training set; the cell of a
  training, test or generated point is ``KMeans.predict`` of it (``n_clusters=50`` in their MNIST runs);
* in each cell, every test point (P_n) and generated point (Q_m) gets its Euclidean distance to the nearest
  training point *of that cell*; Z_U is the Mann-Whitney U of the generated distances against the test
  distances, Z-scored by hand under H0 with a 0.5 continuity correction and no tie correction;
* C_T is the average of the per-cell Z_U over the cells holding more than a share ``tau`` of the generated
  points (their ``tau = 20 / m``: more than 20 generated points), weighted by each cell's share of test points.

How to read the numbers
-----------------------
Features are N x d float arrays (e.g. 128-d self-supervised embeddings of images): ``train`` (T, all training
images), ``test`` (held-out real images) and ``generated``.

* ``ct``: Z_U is roughly N(0, 1) when generated images are as far from the training set as unseen real images
  are, so C_T near 0 is healthy, C_T << 0 means generated images sit closer to training images than real
  unseen data does (data-copying), and C_T >> 0 means they sit further away (underfitting). We flag copying
  when C_T < ``COPYING_CT`` = -3. The reference code carries no threshold; -3 is our choice (a Z-score
  three standard deviations below its null mean, while a weighted average of per-cell Z-scores is no wider
  than one of them under H0). ``ct_floor`` is the same statistic for a "generator" that returns unseen real
  images (half of ``test``), i.e. what a perfect generator would score with these sample sizes. The size of
  C_T is bounded by the sample sizes: in a cell with n test and m generated points |Z_U| <= sqrt(3nm/(n+m+1)),
  so complete copying gives about -5 to -9 with 40 to 100 points per cell, and far lower with big sets.
* ``copy_fraction``: share of generated images whose nearest-training distance is at most
  ``copy_threshold``, the ``copy_quantile`` (1 %) quantile of the held-out images' nearest-training distances:
  "closer to a training image than 99 % of held-out real images are". A model that does not copy gives about
  ``copy_quantile`` (``copy_fraction_floor`` measures it on unseen real images); a copying one approaches 1.
* ``closest_pairs``: the generated images nearest to a training image, to look at side by side.

Deliberate differences from the reference code (none changes the arithmetic of C_T once the cells are fixed):

* KMeans gets ``random_state=seed`` (determinism) and ``n_init=KMEANS_N_INIT`` = 1, today's scikit-learn
  default for k-means++; the authors ran an older scikit-learn whose default was 10 restarts (10x the time).
* Nearest neighbours are exact brute force in float64 (``nearest_train``) instead of sklearn's
  ``NearestNeighbors``; exact duplicates give distance 0.
* Z_U is computed only for the cells that enter C_T. A cell with no test point has weight P_n(cell) = 0 in
  C_T, so it is left out (the reference raises instead); its count is reported as ``cells_without_test``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu
from sklearn.cluster import KMeans

COPYING_CT = -3.0  # C_T below this flags data-copying (our choice; see the module docstring)
TAU_GENERATED_POINTS = 20  # the reference's tau = 20 / m: a cell needs more than 20 generated points
TEST_POINTS_PER_CELL = 40  # memorisation() uses at most len(P_n) // 40 cells; see choose_cells
MIN_POINTS = 4  # fewest points accepted in a set
KMEANS_N_INIT = 1
_BLOCK_ELEMENTS = 1 << 23  # nearest_train's distance block: 8 Mi float64 = 64 MiB


# --- input checks --------------------------------------------------------------------------------------------


class TooFewPoints(ValueError):
    """A set is too small for the test (fewer than MIN_POINTS, or no cell with enough generated points)."""


def _features(name: str, x: Any, min_points: int = MIN_POINTS) -> np.ndarray:
    """``x`` as a finite float64 (N, d) array with N >= min_points, or a ValueError naming the set."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name}: features must be a 2-D array (points x features), got shape {arr.shape}")
    if arr.shape[0] < min_points:
        raise TooFewPoints(f"{name}: {arr.shape[0]} points; the data-copying test needs at least {min_points}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name}: features have 0 dimensions")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{name}: {int(bad.sum())} of {arr.shape[0]} points have NaN or infinite features "
            f"(first at row {int(np.argmax(bad))})"
        )
    return arr


def _same_dims(**sets: np.ndarray) -> None:
    (first, ref), *rest = sets.items()
    for name, arr in rest:
        if arr.shape[1] != ref.shape[1]:
            raise ValueError(
                f"feature dimension mismatch: {first} has {ref.shape[1]} features per point, {name} has {arr.shape[1]}"
            )


def _distances(name: str, x: Any) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0 or not np.isfinite(arr).all():
        raise ValueError(f"{name}: need a non-empty 1-D array of finite distances, got shape {arr.shape}")
    return arr


# --- nearest neighbours --------------------------------------------------------------------------------------


def _nearest(queries: np.ndarray, train: np.ndarray, batch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Unchecked core of nearest_train (float64 arrays of equal width)."""
    centre = train.mean(axis=0)  # distances are shift-invariant; centring shrinks the cancellation below
    t = train - centre
    t_sq = np.einsum("ij,ij->i", t, t)
    rows = batch or max(1, _BLOCK_ELEMENTS // len(t))
    index = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), rows):
        block = queries[start : start + rows] - centre
        score = block @ t.T  # ||q - t||^2 - ||q||^2 = ||t||^2 - 2 q.t; ||q||^2 does not change the argmin
        score *= -2.0
        score += t_sq
        index[start : start + rows] = score.argmin(axis=1)
    # The expanded formula loses precision by cancellation; recompute the chosen neighbour's distance directly,
    # so that a query equal to a training point gets exactly 0.
    distance = np.sqrt(np.einsum("ij,ij->i", queries - train[index], queries - train[index]))
    return distance, index


def nearest_train(queries: Any, train: Any, batch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance to, and index of, each query's nearest training point.

    Exact brute force in float64, ``batch`` query rows at a time (default: blocks of at most 64 MiB), so a
    10,000 x 60,000 distance matrix is never built at once. Ties go to the lowest training index.
    """
    q = _features("queries", queries, min_points=1)
    t = _features("train", train, min_points=1)
    _same_dims(train=t, queries=q)
    if batch is not None and batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    return _nearest(q, t, batch)


# --- the statistic -------------------------------------------------------------------------------------------


def zu(test_dist: Any, gen_dist: Any) -> float:
    """Meehan et al.'s Z_U from nearest-training distances of test (P_n) and generated (Q_m) points.

    As ``Zu`` in data_copying_tests.py: U = Mann-Whitney U of the generated distances (pairs (q, p) with
    L(q) > L(p), ties counting 1/2), Z = (U - (n m / 2 - 1/2)) / sqrt(n m (n + m + 1) / 12).
    Negative: generated points are closer to the training set than test points are (copying).
    """
    lp = _distances("test_dist", test_dist)
    lq = _distances("gen_dist", gen_dist)
    n, m = len(lp), len(lq)
    u = float(mannwhitneyu(lq, lp, alternative="less", method="asymptotic").statistic)  # U of the first sample
    mean = n * m / 2 - 0.5  # 0.5 is the reference's continuity correction
    std = np.sqrt(n * m * (n + m + 1) / 12)
    return float((u - mean) / std)


def fit_cells(train: Any, cells: int, seed: int = 0) -> KMeans:
    """The partition of the instance space: k-means with ``cells`` clusters fitted on the training set."""
    t = _features("train", train)
    if not 1 <= cells <= len(t):
        raise ValueError(f"cells must be between 1 and the number of training points ({len(t)}), got {cells}")
    return KMeans(n_clusters=cells, n_init=KMEANS_N_INIT, random_state=seed).fit(t)


def _within_cell_distances(
    points: np.ndarray, point_cells: np.ndarray, train: np.ndarray, train_cells: np.ndarray, n_cells: int
) -> np.ndarray:
    """Each point's distance to the nearest training point of its own cell."""
    distance = np.empty(len(points))
    for cell in range(n_cells):
        here = point_cells == cell
        if not here.any():
            continue
        members = train[train_cells == cell]
        if len(members) == 0:
            raise ValueError(f"cell {cell} holds points but no training points; use fewer cells")
        distance[here] = _nearest(points[here], members)[0]
    return distance


def _ct_from_cells(
    test_dist: np.ndarray,
    test_cells: np.ndarray,
    gen_dist: np.ndarray,
    gen_cells: np.ndarray,
    n_cells: int,
    tau: float,
) -> dict[str, Any]:
    """C_T from within-cell distances and cell labels (the arithmetic of the reference ``C_T``)."""
    test_share = np.bincount(test_cells, minlength=n_cells) / len(test_cells)
    gen_share = np.bincount(gen_cells, minlength=n_cells) / len(gen_cells)
    kept = gen_share > tau  # the reference's Pi_tau
    without_test = kept & (test_share == 0)
    kept &= test_share > 0
    if not kept.any():
        raise TooFewPoints(
            f"no cell holds more than tau = {tau:.4g} of the generated points (and any test point), so C_T is "
            f"undefined; {len(gen_cells)} generated points over {n_cells} cells: generate more or use fewer cells"
        )
    z = np.zeros(n_cells)
    for cell in np.flatnonzero(kept):
        z[cell] = zu(test_dist[test_cells == cell], gen_dist[gen_cells == cell])
    ct = test_share[kept].dot(z[kept]) / np.sum(test_share[kept])
    return {
        "ct": float(ct),
        "cells": int(n_cells),
        "cells_used": int(kept.sum()),
        "cells_without_test": int(without_test.sum()),
        "tau": float(tau),
        "cell_zu": [float(z[c]) if kept[c] else None for c in range(n_cells)],
        "cell_test_share": test_share.tolist(),
        "cell_generated_share": gen_share.tolist(),
    }


def _default_tau(m: int) -> float:
    return TAU_GENERATED_POINTS / m


def data_copying_ct(
    train: Any, test: Any, generated: Any, cells: int = 50, seed: int = 0, tau: float | None = None
) -> dict[str, Any]:
    """Meehan et al.'s C_T(P_n = test, Q_m = generated) with ``cells`` k-means cells fitted on ``train``.

    ``tau`` defaults to the reference's 20 / len(generated). Returns ``ct``, ``cells`` (k-means clusters),
    ``cells_used`` (cells entering C_T), ``cells_without_test``, ``tau``, and per cell ``cell_zu`` (None
    where unused), ``cell_test_share`` and ``cell_generated_share``.
    """
    t, p, q = _features("train", train), _features("test", test), _features("generated", generated)
    _same_dims(train=t, test=p, generated=q)
    tau = _default_tau(len(q)) if tau is None else float(tau)
    km = fit_cells(t, cells, seed)
    t_cells, p_cells, q_cells = km.predict(t), km.predict(p), km.predict(q)
    return _ct_from_cells(
        _within_cell_distances(p, p_cells, t, t_cells, cells),
        p_cells,
        _within_cell_distances(q, q_cells, t, t_cells, cells),
        q_cells,
        cells,
        tau,
    )


# --- the report ----------------------------------------------------------------------------------------------


def split_test(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of halves A (the first ceil(n/2) of a seeded permutation) and B (the rest) of the test set."""
    order = np.random.default_rng(seed).permutation(n)
    half = (n + 1) // 2
    return np.sort(order[:half]), np.sort(order[half:])


def choose_cells(cells: int, n_test: int, n_train: int) -> int:
    """The number of k-means cells for a P_n of ``n_test`` points: min(cells, n_test // 40, n_train), at least 1.

    About 40 test points per cell or more, so that each Z_U rests on enough points and copying can drive it well
    below COPYING_CT (|Z_U| <= sqrt(3 n m / (n + m + 1)) in a cell with n test and m generated points: 7.7 for
    n = m = 40). 40 rather than 20 because the floor's "generator" B is as large as P_n = A and the reference
    tau keeps only cells with more than 20 generated points: at 20 test points per cell about half of the cells
    would drop out of ``ct_floor``. For comparison, the authors' MNIST runs had 200 test points per cell.
    """
    return max(1, min(cells, n_test // TEST_POINTS_PER_CELL, n_train))


def memorisation(
    train: Any,
    test: Any,
    generated: Any,
    cells: int = 50,
    copy_quantile: float = 0.01,
    seed: int = 0,
    n_pairs: int = 8,
) -> dict[str, Any]:
    """The data-copying report for ``generated`` against ``train``, with ``test`` as unseen real data.

    ``test`` is split by a seeded permutation (``split_test``) into A, which plays P_n everywhere, and B, a
    "generator" of unseen real data that gives the floor values a non-copying model would get. The number of
    k-means cells is ``choose_cells(cells, len(A), len(train))``. Returns JSON-serialisable values:

    ``ct``, ``ct_floor`` (C_T of generated / of B against A), ``copying`` (ct < ``copying_ct``),
    ``copying_ct``, ``cells`` (k-means clusters), ``cells_used``, ``cells_used_floor``, ``tau``, ``tau_floor``,
    ``copy_quantile``, ``copy_threshold``, ``copy_fraction``, ``copy_fraction_floor``,
    ``nn_distance_median`` (of generated, A and B), ``closest_pairs`` (list of {"generated", "train",
    "distance"}, nearest first), ``n_train``, ``n_test_a``, ``n_test_b``, ``n_generated``, ``seed``.
    """
    t, p, q = _features("train", train), _features("test", test, 2 * MIN_POINTS), _features("generated", generated)
    _same_dims(train=t, test=p, generated=q)
    if not 0.0 < copy_quantile < 1.0:
        raise ValueError(f"copy_quantile must be in (0, 1), got {copy_quantile}")
    if n_pairs < 0:
        raise ValueError(f"n_pairs must be >= 0, got {n_pairs}")
    ia, ib = split_test(len(p), seed)
    a, b = p[ia], p[ib]
    k = choose_cells(cells, len(a), len(t))

    km = fit_cells(t, k, seed)
    t_cells, a_cells, b_cells, q_cells = (km.predict(x) for x in (t, a, b, q))
    a_within = _within_cell_distances(a, a_cells, t, t_cells, k)

    def ct_against(points: np.ndarray, point_cells: np.ndarray, what: str) -> dict[str, Any]:
        within = _within_cell_distances(points, point_cells, t, t_cells, k)
        try:
            return _ct_from_cells(a_within, a_cells, within, point_cells, k, _default_tau(len(points)))
        except TooFewPoints as err:
            raise TooFewPoints(f"{what}: {err}") from None

    ct = ct_against(q, q_cells, f"the {len(q)} generated images")
    floor = ct_against(b, b_cells, f"the floor's {len(b)} unseen real images (half of the test images)")

    a_dist = _nearest(a, t)[0]
    b_dist = _nearest(b, t)[0]
    q_dist, q_index = _nearest(q, t)
    threshold = float(np.quantile(a_dist, copy_quantile))
    closest = np.argsort(q_dist, kind="stable")[:n_pairs]
    return {
        "ct": ct["ct"],
        "ct_floor": floor["ct"],
        "copying": bool(ct["ct"] < COPYING_CT),
        "copying_ct": COPYING_CT,
        "cells": int(k),
        "cells_used": ct["cells_used"],
        "cells_used_floor": floor["cells_used"],
        "tau": ct["tau"],
        "tau_floor": floor["tau"],
        "copy_quantile": float(copy_quantile),
        "copy_threshold": threshold,
        "copy_fraction": float(np.mean(q_dist <= threshold)),
        "copy_fraction_floor": float(np.mean(b_dist <= threshold)),
        "nn_distance_median": {
            "generated": float(np.median(q_dist)),
            "test_a": float(np.median(a_dist)),
            "test_b": float(np.median(b_dist)),
        },
        "closest_pairs": [
            {"generated": int(i), "train": int(q_index[i]), "distance": float(q_dist[i])} for i in closest
        ],
        "n_train": len(t),
        "n_test_a": len(a),
        "n_test_b": len(b),
        "n_generated": len(q),
        "seed": int(seed),
    }
