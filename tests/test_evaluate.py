"""Evaluation on real data: reference cache, mode-collapse detection, `gan evaluate --samples`, Inception plumbing."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import subprocess
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from gan.core.config import EvaluateConfig, apply_overrides
from gan.core.splits import load_split
from gan.evaluation.features import INCEPTION_FILE, InceptionExtractor, MissingWeights, inception_weights

# These tests' evaluate settings: a reference of n = 500 real images per side (the test split's other 500 are never
# used by it: the memorisation test's unseen images), small bootstrap, KID and PRDC (the tests check metrics' meaning,
# not their precision).
SMALL_EVAL = ["evaluate.n_samples=500", "evaluate.bootstrap=10", "evaluate.kid_subsets=10",
              "evaluate.kid_subset_size=200", "evaluate.prdc_samples=500"]  # fmt: skip


@pytest.fixture(scope="module")
def workspace(completed_flow, tmp_path_factory) -> Path:
    """The session's completed flow (download → prepare → classifier → judge → ... on tiny real data: TINY's 3,000
    training and 1,000 test images of Fashion-MNIST), its prepared data and trained extractors copied here, and the
    reference built from them by the stage command at these tests' settings (SMALL_EVAL)."""
    repo = completed_flow[0]
    ws = tmp_path_factory.mktemp("eval")
    shutil.copytree(repo / "data/prepared", ws / "data/prepared")
    (ws / "data/models").mkdir()
    for model in ("classifier.pt", "judge.pt"):
        shutil.copy2(repo / "data/models" / model, ws / "data/models" / model)
    raw = apply_overrides(yaml.safe_load((repo / "params.yaml").read_text()), SMALL_EVAL)
    (ws / "params.yaml").write_text(yaml.safe_dump(raw))
    gan(ws, "reference")
    return ws


def gan(ws: Path, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m gan ARGV` in `ws`, run in this process (the same `main`, its exit code, stdout and stderr; a torch
    import saved per call)."""
    from gan.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(ws), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    proc = subprocess.CompletedProcess(["gan", *argv], code, out.getvalue(), err.getvalue())
    assert not check or code == 0, f"gan {' '.join(argv)} exited {code}:\n{proc.stderr}"
    return proc


def score(ws: Path, samples: Path, *extra: str, check: bool = True):
    proc = gan(ws, "evaluate", "--samples", str(samples), *extra, check=check)
    return json.loads(proc.stdout) if check else proc


def test_reference_is_cached_with_its_provenance(workspace):
    meta = json.loads((workspace / "data/reference/meta.json").read_text())
    assert meta["n"] == 500 and meta["reference_split"].startswith("test")
    info = meta["extractors"]["classifier"]
    assert info["feature_dim"] == 128 and len(info["weights_sha256"]) == 64
    with np.load(workspace / "data/reference/classifier.npz") as z:
        assert z["test_features"].shape == (500, 128) and z["train_features"].shape == (500, 128)
        assert "train_all_features" not in z.files
    judge = meta["extractors"]["judge"]
    assert judge["weights_sha256"] == hashlib.sha256((workspace / "data/models/judge.pt").read_bytes()).hexdigest()
    with np.load(workspace / "data/reference/judge.npz") as z:
        assert z["test_features"].shape == (500, 128) and "test_probs" not in z.files
        assert z["train_all_features"].shape == (3000, 128)  # every training image: the memorisation check's set
    assert meta["not_applicable"] == {}


def test_the_memorisation_check_flags_training_images_and_passes_unseen_ones(workspace, tmp_path):
    """A "generator" that returns training images (or lightly noised ones) is flagged as copying; real test images
    it never saw are not, and score like the floor (unseen real images)."""
    train = load_split(workspace / "data/prepared/train.npz")
    test = load_split(workspace / "data/prepared/test.npz")
    rng = np.random.default_rng(0)
    copies = train.images[rng.choice(len(train.images), 500, replace=False)]
    noisy = np.clip(copies + rng.normal(0, 8, copies.shape), 0, 255).astype(np.uint8)
    unseen = test.images[500:1000]  # the reference holds the first 500 test images; these were never used
    results = {}
    for name, images in (("copies", copies), ("noisy", noisy), ("unseen", unseen)):
        np.save(tmp_path / f"{name}.npy", images)
        results[name] = score(workspace, tmp_path / f"{name}.npy")
    for name in ("copies", "noisy"):
        m = results[name]
        assert m["copying_judge"] is True and m["copy_ct_judge"] < -3, (name, m["copy_ct_judge"])
        assert m["copy_fraction_judge"] > 0.5, (name, m["copy_fraction_judge"])
    u = results["unseen"]
    assert u["copying_judge"] is False and abs(u["copy_ct_judge"]) < 3, u["copy_ct_judge"]
    assert u["copy_fraction_judge"] < 0.05 and u["copy_fraction_judge_floor"] < 0.05
    assert u["fid_judge"] < 3 * u["fid_judge_floor"] + 1  # unseen real images score like real images
    assert "is_judge" not in u  # the judge has no classes


def test_real_images_score_near_the_floor_and_collapse_is_flagged(workspace, tmp_path):
    train = load_split(workspace / "data/prepared/train.npz")
    real = tmp_path / "real.npz"
    np.savez(real, images=train.images[-500:].transpose(0, 2, 3, 1))  # NHWC, like external tools write
    m = score(workspace, real)
    assert m["mode_collapse"] is False and m["classes_covered"] == m["num_classes"] == 10
    assert m["fid_classifier"] < 3 * m["fid_classifier_floor"] + 5
    assert m["precision_classifier"] > 0.5 and m["recall_classifier"] > 0.5
    lo, hi = m["fid_classifier_ci95"]
    assert lo <= hi
    for key in ("kid_classifier", "is_classifier", "density_classifier", "coverage_classifier"):
        assert f"{key}_floor" in m, key

    # Only five classes of real images: a generator that dropped half the modes.
    some = train.images[np.isin(train.labels, [0, 1, 2, 3, 4])][:500]
    collapsed = tmp_path / "collapsed.npy"
    np.save(collapsed, some)
    c = score(workspace, collapsed)
    assert c["mode_collapse"] is True and c["classes_covered"] <= 6
    assert c["recall_classifier"] < m["recall_classifier"] and c["coverage_classifier"] < m["coverage_classifier"]
    assert c["fid_classifier"] > m["fid_classifier"] and c["class_kl"] > m["class_kl"]
    assert c["per_class_fid_classifier"]["Bag"] is None  # no bags generated: no per-class distance


def test_png_folder_and_out_file(workspace, tmp_path):
    test = load_split(workspace / "data/prepared/test.npz")
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, img in enumerate(test.images[:500]):
        Image.fromarray(img[0]).save(folder / f"{i:04d}.png")
    out = tmp_path / "m.json"
    m = score(workspace, folder, "--out", str(out))
    assert json.loads(out.read_text()) == m
    assert m["fid_classifier"] < 1e-6  # these are exactly the reference images


def test_bad_samples_are_refused_with_the_file_named(workspace, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.new("L", (28, 28)).save(folder / "a.png")
    Image.new("L", (32, 32)).save(folder / "b.png")
    proc = score(workspace, folder, check=False)
    assert (
        proc.returncode == 1 and "expected 1×28×28 images (the prepared data's shape), got 1×32×32 in " in proc.stderr
    )
    assert "b.png" in proc.stderr
    (folder / "b.png").write_bytes(b"not a png")
    assert "b.png: not a readable image" in score(workspace, folder, check=False).stderr
    bad = tmp_path / "bad.npz"
    np.savez(bad, pictures=np.zeros((10, 28, 28), np.uint8))
    assert "no array 'images' (has: pictures)" in score(workspace, bad, check=False).stderr
    few = tmp_path / "few.npy"
    np.save(few, np.zeros((10, 28, 28), np.uint8))
    proc = score(workspace, few, check=False)
    assert proc.returncode == 2 and "need at least n=500 samples" in proc.stderr


def test_missing_inception_weights_is_a_clear_error_never_a_fallback(tmp_path, monkeypatch):
    with pytest.raises(MissingWeights, match="no such file"):
        inception_weights(str(tmp_path / "nope.pth"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    with mock.patch("torch.hub.download_url_to_file", offline), pytest.raises(MissingWeights) as info:
        inception_weights("")
    msg = str(info.value)
    assert INCEPTION_FILE in msg and str(tmp_path / "torch" / "hub" / "checkpoints") in msg
    assert "No other extractor is substituted" in msg


def test_inception_plumbing_with_random_weights(tmp_path):
    """Same architecture as the FID Inception, random init: uint8 grey 28×28 or RGB 32×32 in, 2048-d features out."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    with mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None), \
         mock.patch("torch.load", lambda *a, **k: {}):  # fmt: skip
        net = FeatureExtractorInceptionV3("random", ["2048"], feature_extractor_weights_path="unused")
    weights = tmp_path / "random-inception.pth"
    torch.save(net.state_dict(), weights)
    with pytest.raises(MissingWeights, match="not the FID Inception"):
        InceptionExtractor(weights, torch.device("cpu"))
    ex = InceptionExtractor(weights, torch.device("cpu"), batch_size=2, verify_hash=False)
    for shape in ((1, 28, 28), (3, 32, 32)):  # grey is repeated to RGB; RGB goes in as is
        images = torch.randint(0, 256, (3, *shape), dtype=torch.uint8)
        feats, probs = ex(images)
        assert feats.shape == (3, 2048) and probs.shape == (3, 1008)
        assert np.allclose(probs.sum(1), 1) and np.isfinite(feats).all()


def test_real_inception_weights_when_available():
    path = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if not path.exists():
        pytest.skip(f"{path} not on this machine (offline); the plumbing test covers the code path")
    ex = InceptionExtractor(path, torch.device("cpu"), batch_size=8)
    feats, probs = ex(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    assert feats.shape == (2, 2048)
    assert EvaluateConfig(extractors=["classifier", "inception"]).extractors == ["classifier", "inception"]


def test_the_floor_is_what_the_floors_own_train_images_score(workspace, tmp_path):
    """Every `_floor` is the metric with n real *train* images in place of the generated ones (README):
    so scoring exactly those train images as samples must reproduce each floor."""
    cfg = EvaluateConfig(**yaml.safe_load((workspace / "params.yaml").read_text())["evaluate"])
    train = load_split(workspace / "data/prepared/train.npz")
    n = json.loads((workspace / "data/reference/meta.json").read_text())["n"]
    idx = np.sort(np.random.default_rng(cfg.seed).choice(len(train.labels), size=n, replace=False))
    samples = tmp_path / "floor_images.npy"
    np.save(samples, train.images[idx])
    m = score(workspace, samples)
    keys = ("fid_classifier", "kid_classifier", "is_classifier", "precision_classifier", "recall_classifier",
            "density_classifier", "coverage_classifier", "mean_confidence", "class_kl", "classes_covered")  # fmt: skip
    for key in keys:
        assert m[key] == pytest.approx(m[f"{key}_floor"], rel=1e-5, abs=1e-6), key
    per_class, floor = m["per_class_fid_classifier"], m["per_class_fid_classifier_floor"]
    assert per_class.keys() == floor.keys() and any(v is not None for v in per_class.values())
    for c in per_class:
        assert per_class[c] == (None if floor[c] is None else pytest.approx(floor[c], rel=1e-5, abs=1e-6)), c


def test_class_metrics_group_real_images_by_prediction_like_generated_ones():
    """A biased classifier (it calls most real images class 0) must not make real images look mode-collapsed:
    real test images are grouped by the classifier's prediction, as generated ones are."""
    from gan.evaluation.evaluate import _class_metrics

    k, n = 4, 400
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(k), n // k)  # true labels: balanced
    predicted = np.where(rng.random(n) < 0.7, 0, labels)  # the classifier's bias toward class 0
    probs = np.eye(k)[predicted]
    feats = rng.normal(size=(n, 8))
    ref = {"test_labels": labels, "test_probs": probs, "test_features": feats,
           "train_probs": probs, "train_features": feats}  # fmt: skip
    m = _class_metrics(ref, probs.copy(), feats.copy(), [str(c) for c in range(k)])  # generated = real
    assert m["classes_covered"] == m["classes_covered_floor"] == k
    assert m["class_kl"] == pytest.approx(0.0, abs=1e-9) and not m["mode_collapse"]
