"""Tests for gan.evaluation.memorisation, the data-copying test of Meehan, Chaudhuri & Dasgupta (AISTATS 2020)."""

# ruff: noqa: UP032 (the verbatim reference code below uses str.format)
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import scipy.stats
from scipy.spatial.distance import cdist
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors as NN

from gan.data.idx import parse_idx
from gan.evaluation.memorisation import (
    COPYING_CT,
    choose_cells,
    data_copying_ct,
    fit_cells,
    memorisation,
    nearest_train,
    split_test,
    zu,
)

from .conftest import DEBIAN_FMNIST, require_debian_fashion_mnist

# ---------------------------------------------------------------------------------------------------------------
# The authors' reference implementation, copied verbatim (functions Zu, Zu_cells, C_T) from
# https://github.com/casey-meehan/data-copying/blob/a0ba2db5b42d7f3b1093b44a9d42065f041a98d6/data_copying_tests.py
# Only change: a noqa comment for E501 appended to one long line.
#
# MIT License. Copyright (c) 2020 Casey Meehan.
# Permission is hereby granted, free of charge, to any person obtaining a copy of this software and associated
# documentation files (the "Software"), to deal in the Software without restriction, including without limitation
# the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of the Software, and
# to permit persons to whom the Software is furnished to do so, subject to the following conditions:
# The above copyright notice and this permission notice shall be included in all copies or substantial portions
# of the Software.
# THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO
# THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
# AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF
# CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER
# DEALINGS IN THE SOFTWARE.
#
# Compatibility shim (outside the verbatim block): the reference passes (k, 1) columns from kneighbors to
# mannwhitneyu. scipy >= 1.7 then returns a shape-(1,) U, and NumPy >= 2.4 refuses to store that in a scalar
# slot (Zu_cells[i] = ...). Ravelling the columns gives the same U the authors' scipy computed (its rankdata
# flattened its input).


def mannwhitneyu(x, y, **kwargs):
    return scipy.stats.mannwhitneyu(np.ravel(x), np.ravel(y), **kwargs)


# fmt: off
def Zu(Pn, Qm, T): 
    """Extracts distances to training nearest neighbor
    L(P_n), L(Q_m), and runs Z-scored Mann Whitney U-test. 
    For the global test, this is used on the samples within each cell.

    Inputs: 
        Pn: (n X d) np array representing test sample of 
            length n (with dimension d)

        Qm: (m X d) np array representing generated sample of 
            length n (with dimension d) 

        T: (l X d) np array representing training sample of 
            length l (with dimension d)

    Ouptuts: 
        Zu: Z-scored U value. A large value >>0 indicates 
            underfitting by Qm. A small value <<0 indicates.
    """
    m = Qm.shape[0]
    n = Pn.shape[0]

    #fit NN model to training sample to get distances to test and generated samples
    T_NN = NN(n_neighbors = 1).fit(T)
    LQm, _ = T_NN.kneighbors(X = Qm, n_neighbors = 1)
    LPn, _ = T_NN.kneighbors(X = Pn, n_neighbors = 1)

    #Get Mann-Whitney U score and manually Z-score it using the conditions of null hypothesis H_0 
    u, _ = mannwhitneyu(LQm, LPn, alternative = 'less')
    mean = (n * m / 2) - 0.5 #0.5 is continuity correction
    std = np.sqrt(n*m*(n + m + 1) / 12)
    Z_u = (u - mean) / std 
    return Z_u

def Zu_cells(Pn, Pn_cells, Qm, Qm_cells, T, T_cells): 
    """Collects the Zu statistic in each of k cells. 
    There should be >0 test (Pn) and train (T) samples in each of the cells. 

    Inputs: 
        Pn: (n X d) np array representing test sample of length
            n (with dimension d)

        Pn_cells: (1 X n) np array of integers indicating which 
            of the k cells each sample belongs to 
        
        Qm: (m X d) np array representing generated sample of 
            length n (with dimension d) 

        Qm_cells: (1 X m) np array of integers indicating which of the 
            k cells each sample belongs to

        T: (l X d) np array representing training sample of 
            length l (with dimension d)

        T_cells: (1 X l) np array of integers indicating which of the 
            k cells each sample belongs to

    Outputs: 
        Zus: length k np array, where entry i indicates the Zu score for cell i
    """
    #assume cells are labeled 0 to k-1
    k = len(np.unique(Pn_cells))
    Zu_cells = np.zeros(k)
    
    #get samples in each cell and collect Zu 
    for i in range(k): 
        Pn_cell_i = Pn[Pn_cells == i]
        Qm_cell_i = Qm[Qm_cells == i]
        T_cell_i = T[T_cells == i]
        #check that the cell has test and training samples present 
        if len(Pn_cell_i) * len(T_cell_i) == 0: 
            raise ValueError("Cell {:n} lacks test samples and/or training samples. Consider reducing the number of cells in partition.".format(i))  # noqa: E501

        #if there are no generated samples present, add a 0 for Zu. This cell will be excluded in \Pi_\tau 
        if len(Qm_cell_i) > 0: 
            Zu_cells[i] = Zu(Pn_cell_i, Qm_cell_i, T_cell_i)
        else: 
            Zu_cells[i] = 0 
            print("cell {:n} unrepresented by Qm".format(i))

    return Zu_cells

            



def C_T(Pn, Pn_cells, Qm, Qm_cells, T, T_cells, tau):
    """Runs C_T test given samples and their respective cell labels. 
    The C_T statistic is a weighted average of the in-cell Zu statistics, weighted
    by the share of test samples (Pn) in each cell. Cells with an insufficient number 
    of generated samples (Qm) are not included in the statistic. 

    Inputs: 
        Pn: (n X d) np array representing test sample of length
            n (with dimension d)

        Pn_cells: (1 X n) np array of integers indicating which 
            of the k cells each sample belongs to 
        
        Qm: (m X d) np array representing generated sample of 
            length n (with dimension d) 

        Qm_cells: (1 X m) np array of integers indicating which of the 
            k cells each sample belongs to

        T: (l X d) np array representing training sample of 
            length l (with dimension d)

        T_cells: (1 X l) np array of integers indicating which of the 
            k cells each sample belongs to

        tau: (scalar between 0 and 1) fraction of Qm samples that a
            cell needs to be included in C_T statistic. 

    Outputs:
        C_T: The C_T statistic for the three samples Pn, Qm, T
    """

    m = Qm.shape[0]
    n = Pn.shape[0]
    k = np.max(np.unique(T_cells)) + 1 #number of cells

    #First, determine which of the cells have sufficient generated samples (Qm(pi) > tau) 
    labels, cts = np.unique(Qm_cells, return_counts = True) 
    Qm_cts = np.zeros(k)
    Qm_cts[labels.astype(int)] = cts #put in order of cell label 
    Qm_of_pi = Qm_cts / m 
    Pi_tau = Qm_of_pi > tau #binary array selecting which cells have sufficient samples 

    #Get the fraction of test samples in each cell Pn(pi) 
    labels, cts = np.unique(Pn_cells, return_counts = True)  
    Pn_cts = np.zeros(k)
    Pn_cts[labels.astype(int)] = cts #put in order of cell label 
    Pn_of_pi = Pn_cts / n 

    #Now get the in-cell Zu scores 
    Zu_scores = Zu_cells(Pn, Pn_cells, Qm, Qm_cells, T, T_cells)

    #compute C_T: 
    C_T = Pn_of_pi[Pi_tau].dot(Zu_scores[Pi_tau])/np.sum(Pn_of_pi[Pi_tau])

    return C_T
    
# fmt: on
# ---------------------------------------------------------------------------------------------------------------


def u_by_pairs(gen: np.ndarray, test: np.ndarray) -> float:
    """Mann-Whitney U of ``gen`` by explicit pair counting: pairs with gen > test, ties count 1/2."""
    return sum(1.0 if g > p else 0.5 if g == p else 0.0 for g in gen for p in test)


def z_by_hand(test: np.ndarray, gen: np.ndarray) -> float:
    n, m = len(test), len(gen)
    return (u_by_pairs(gen, test) - (n * m / 2 - 0.5)) / np.sqrt(n * m * (n + m + 1) / 12)


def nn_by_loops(points: np.ndarray, train: np.ndarray) -> np.ndarray:
    return np.array([min(float(np.sqrt(np.sum((x - t) ** 2))) for t in train) for x in points])


# --- Z_U ---------------------------------------------------------------------------------------------------------


def test_zu_tiny_example_by_hand():
    test_dist = np.array([1.0, 2.0, 3.5, 4.0])
    gen_dist = np.array([0.5, 2.0, 3.0])
    # U = 0 (0.5 beats nothing) + 1.5 (2.0 beats 1.0, ties 2.0) + 2 (3.0 beats 1.0, 2.0) = 3.5;
    # mean = 4 * 3 / 2 - 0.5 = 5.5; std = sqrt(4 * 3 * 8 / 12) = sqrt(8).
    assert u_by_pairs(gen_dist, test_dist) == 3.5
    assert zu(test_dist, gen_dist) == pytest.approx((3.5 - 5.5) / np.sqrt(8), abs=1e-12)


def test_zu_matches_pair_counting_with_ties():
    rng = np.random.default_rng(3)
    test_dist = rng.integers(0, 6, 23).astype(float)  # many ties
    gen_dist = rng.integers(0, 6, 17).astype(float)
    assert zu(test_dist, gen_dist) == pytest.approx(z_by_hand(test_dist, gen_dist), abs=1e-12)


def test_zu_matches_reference_zu():
    rng = np.random.default_rng(4)
    train, test, gen = rng.normal(size=(400, 6)), rng.normal(size=(150, 6)), 0.8 * rng.normal(size=(120, 6))
    ours = zu(nearest_train(test, train)[0], nearest_train(gen, train)[0])
    assert ours == pytest.approx(float(Zu(test, gen, train)), abs=1e-9)
    assert ours < -1  # gen is tighter than the training distribution: closer to training points


# --- C_T ---------------------------------------------------------------------------------------------------------

CENTRES = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])


def blobs(rng: np.random.Generator, counts: list[int], scale: float = 1.0) -> np.ndarray:
    return np.concatenate([c + scale * rng.normal(size=(k, 2)) for c, k in zip(CENTRES, counts, strict=True)])


def test_ct_tiny_example_by_hand():
    rng = np.random.default_rng(5)
    train, test = blobs(rng, [30, 30, 30]), blobs(rng, [6, 9, 5])
    gen = blobs(rng, [7, 4, 1], scale=0.7)  # blob 2 holds 1/12 of gen: not above tau = 0.1, so it is left out
    res = data_copying_ct(train, test, gen, cells=3, seed=0, tau=0.1)

    def blob(x):
        return np.argmin(cdist(x, CENTRES), axis=1)

    z, w = [], []
    for c in (0, 1):
        t, p, q = train[blob(train) == c], test[blob(test) == c], gen[blob(gen) == c]
        z.append(z_by_hand(nn_by_loops(p, t), nn_by_loops(q, t)))
        w.append(len(p) / len(test))
    assert res["cells"] == 3 and res["cells_used"] == 2
    assert res["ct"] == pytest.approx(np.dot(w, z) / np.sum(w), abs=1e-12)
    assert sorted(x for x in res["cell_zu"] if x is not None) == pytest.approx(sorted(z), abs=1e-12)


@pytest.mark.parametrize("scale", [0.6, 1.0, 1.4])
def test_ct_matches_reference_c_t(scale, capsys):
    rng = np.random.default_rng(6)
    train, test = rng.normal(size=(2000, 5)), rng.normal(size=(1000, 5))
    gen = scale * rng.normal(size=(200, 5))  # about 20 per cell: some cells fall below tau = 20 / 200
    cells, seed = 10, 7
    km = fit_cells(train, cells, seed)
    expected = C_T(test, km.predict(test), gen, km.predict(gen), train, km.predict(train), tau=20 / len(gen))
    res = data_copying_ct(train, test, gen, cells=cells, seed=seed)
    assert res["ct"] == pytest.approx(float(expected), abs=1e-9)
    assert res["tau"] == 20 / 200
    assert 0 < res["cells_used"] < cells  # the tau rule was exercised
    capsys.readouterr()


# --- nearest_train -----------------------------------------------------------------------------------------------


def test_nearest_train_exact_duplicates():
    rng = np.random.default_rng(8)
    train = 1e3 + rng.normal(size=(500, 32))  # a large offset invites cancellation in ||a||^2 + ||b||^2 - 2ab
    picks = np.array([3, 499, 0, 250, 3])
    dist, index = nearest_train(train[picks], train, batch=2)
    assert dist.tolist() == [0.0] * 5
    assert index.tolist() == picks.tolist()


def test_nearest_train_matches_brute_force():
    rng = np.random.default_rng(9)
    train, queries = rng.normal(size=(700, 12)), rng.normal(size=(130, 12))
    full = cdist(queries, train)
    dist, index = nearest_train(queries, train, batch=7)
    assert index.tolist() == full.argmin(axis=1).tolist()
    np.testing.assert_allclose(dist, full.min(axis=1), rtol=0, atol=1e-12)


# --- the report on synthetic gaussians ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gauss():
    rng = np.random.default_rng(10)
    return rng, rng.normal(size=(3000, 16)), rng.normal(size=(1000, 16))


def test_copies_of_training_points_are_flagged(gauss):
    rng, train, test = gauss
    picks = rng.choice(len(train), 1000, replace=False)
    for gen in (train[picks], train[picks] + 1e-3 * rng.normal(size=(1000, 16))):
        r = memorisation(train, test, gen, seed=0)
        assert r["ct"] < -8 and r["copying"] is True and r["copying_ct"] == COPYING_CT
        assert r["copy_fraction"] == 1.0
        assert abs(r["ct_floor"]) < 3 and r["copy_fraction_floor"] < 0.04
        pair = r["closest_pairs"][0]
        assert pair["train"] == picks[pair["generated"]] and pair["distance"] < 1e-2


def test_fresh_draws_are_not_flagged(gauss):
    rng, train, test = gauss
    r = memorisation(train, test, rng.normal(size=(1000, 16)), seed=0)
    assert abs(r["ct"]) < 3 and r["copying"] is False
    assert abs(r["copy_fraction"] - 0.01) < 0.015 and abs(r["copy_fraction_floor"] - 0.01) < 0.015
    assert r["cells"] == 12 and r["n_test_a"] == 500  # 50 capped to len(A) // 40
    assert r["cells_used"] == r["cells_used_floor"] == 12


def test_underfit_generator_gives_positive_ct(gauss):
    rng, train, test = gauss
    r = memorisation(train, test, 0.3 + 1.4 * rng.normal(size=(1000, 16)), seed=0)
    assert r["ct"] > 5 and r["copying"] is False
    assert r["copy_fraction"] < 0.01


def test_closest_pairs_find_planted_copies(gauss):
    rng, train, test = gauss
    gen = rng.normal(size=(400, 16))
    gen[[5, 17, 42]] = train[[10, 20, 30]]
    pairs = memorisation(train, test, gen, n_pairs=4)["closest_pairs"]
    assert [(p["generated"], p["train"], p["distance"]) for p in pairs[:3]] == [
        (5, 10, 0.0),
        (17, 20, 0.0),
        (42, 30, 0.0),
    ]
    assert len(pairs) == 4 and pairs[3]["distance"] > 0


def test_report_is_deterministic_and_json(gauss):
    rng, train, test = gauss
    gen = 0.9 * rng.normal(size=(500, 16))
    first = memorisation(train, test, gen, seed=3)
    assert json.loads(json.dumps(first, allow_nan=False)) == first
    assert memorisation(train, test, gen, seed=3) == first
    assert memorisation(train, test, gen, seed=4)["ct_floor"] != first["ct_floor"]  # the seed drives the split


def test_cells_adapt_to_small_test_sets(gauss):
    rng, train, test = gauss
    a, b = split_test(372, seed=0)
    assert len(a) == 186 and len(b) == 186 and sorted(np.concatenate([a, b]).tolist()) == list(range(372))
    r = memorisation(train, test[:372], rng.normal(size=(500, 16)))
    assert r["cells"] == choose_cells(50, 186, 3000) == 4 and r["n_test_a"] == 186
    assert choose_cells(50, 10, 3000) == 1 and choose_cells(50, 10_000, 30) == 30


# --- errors -------------------------------------------------------------------------------------------------------


def test_errors_name_the_set(gauss):
    rng, train, test = gauss
    with pytest.raises(ValueError, match=r"train has 16 .* generated has 8"):
        memorisation(train, test, rng.normal(size=(100, 8)))
    bad = test.copy()
    bad[7, 3] = np.nan
    with pytest.raises(ValueError, match=r"test: 1 of 1000 points have NaN or infinite features \(first at row 7\)"):
        memorisation(train, bad, train[:100])
    with pytest.raises(ValueError, match=r"generated: 3 points"):
        data_copying_ct(train, test, train[:3])
    with pytest.raises(ValueError, match=r"generated: .*inf"):
        memorisation(train, test, np.full((9, 16), np.inf))
    with pytest.raises(ValueError, match=r"no cell holds more than tau"):
        data_copying_ct(train, test, train[:20], cells=1)  # 20 generated points never exceed tau = 20 / 20


# --- real images: Fashion-MNIST pixels projected by PCA ------------------------------------------------------------


def read_images(name: str, n: int) -> np.ndarray:
    images = parse_idx(gzip.decompress((DEBIAN_FMNIST / name).read_bytes()), name)
    return images[:n].reshape(n, -1).astype(np.float64) / 255.0


@pytest.fixture(scope="module")
def fashion():
    require_debian_fashion_mnist()
    train = read_images("train-images-idx3-ubyte.gz", 10_000)
    test = read_images("t10k-images-idx3-ubyte.gz", 4000)
    pca = PCA(n_components=64, random_state=0).fit(train)
    return pca, train, test


def test_fashion_mnist_training_images_are_flagged(fashion):
    pca, train, test = fashion
    rng = np.random.default_rng(11)
    copies = train[rng.choice(len(train), 2000, replace=False)]
    noisy = np.clip(copies + rng.normal(scale=0.05, size=copies.shape), 0.0, 1.0)
    for gen in (copies, noisy):
        r = memorisation(pca.transform(train), pca.transform(test[:2000]), pca.transform(gen))
        assert r["copying"] is True and r["ct"] < -8
        assert r["copy_fraction"] > 0.9 and r["copy_fraction_floor"] < 0.04


def test_fashion_mnist_test_images_are_not_flagged(fashion):
    pca, train, test = fashion
    r = memorisation(pca.transform(train), pca.transform(test[:2000]), pca.transform(test[2000:]))
    assert r["copying"] is False and abs(r["ct"]) < 3 and abs(r["ct_floor"]) < 3
    assert r["copy_fraction"] < 0.03 and r["copy_fraction_floor"] < 0.03


def test_too_few_unseen_images_for_the_floor_is_its_own_error_naming_that_set():
    """A tiny folder: the floor's half of the test split holds no cell with more than 20 points. evaluate turns this
    error into `not_applicable["memorisation"]` with the message, instead of a number without meaning."""
    from gan.evaluation.memorisation import TooFewPoints

    rng = np.random.default_rng(0)
    train, test, gen = rng.normal(size=(200, 8)), rng.normal(size=(38, 8)), rng.normal(size=(100, 8))
    with pytest.raises(TooFewPoints, match=r"the floor's 19 unseen real images \(half of the test images\): no cell"):
        memorisation(train, test, gen)
    with pytest.raises(TooFewPoints, match=r"the 15 generated images: no cell holds more than"):
        memorisation(train, rng.normal(size=(60, 8)), gen[:15])
