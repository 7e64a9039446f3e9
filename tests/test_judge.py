"""The self-supervised judge (gan/evaluation/judge.py): its parts against hand computations, then its soundness on
real images.

A judge is sound when (1) real against real scores near 0, (2) its Fréchet distance (FD) rises monotonically as
the images get worse (blur, noise) or lose a mode (a class removed), by more than sampling noise at every step, and
(3) it ranks generators of known different quality in the same order as the established, labelled judge (the
domain classifier). Also checked: it sees structure, not only the histogram (shuffled pixels score far from real).
The judge never sees a label here: every split it trains on carries -1.

"Near 0", defined. The FD of two finite samples is never 0: it carries a positive bias of order trace/n, so the
yardstick is the FD between the reference train images and n *other train images* (same split: what FD gives for
one distribution at this n). The real-vs-real floor (reference train images vs n test images) is near 0 when
  - it is at most 1.5 × that same-split FD: the judge tells the test split from the training split no better than
    two samples of the training split (measured: Fashion-MNIST 0.94×, emoji 1.04-1.2× over judge seeds); and
  - its excess over the same-split FD is below 10 % of what the mildest blur (Gaussian, sigma 0.5 px, barely
    visible) adds over it. Uncorrected, floor / FD(blur 0.5) is 0.4 % on Fashion-MNIST (n = 5000) and about 10 %
    on the emoji, where n = 600 makes the bias 8× larger.
  The ratio to the mildest noise (std 5/255) is reported, not bounded: that noise moves the labelled classifier's FD
  about as little (Fashion-MNIST: floor 0.61, noise 5: 1.12; the judge: 1.27 and 1.78), so neither passes it.

Sections: NT-Xent · random views · training (labels unused, determinism, shapes, errors) · soundness on
Fashion-MNIST · soundness on a colour folder (emoji) · rank agreement on GAN checkpoints · the bench.
Every number measured here is also written to test-output/judge-soundness.json.
"""

from __future__ import annotations

import gzip
import itertools
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from filelock import FileLock
from scipy.stats import kendalltau, spearmanr
from threadpoolctl import threadpool_limits

from gan.core.config import ClassifierConfig, JudgeConfig, ModelConfig, TrainConfig
from gan.core.errors import PipelineError
from gan.core.splits import UNLABELED
from gan.core.tensors import to_uint8
from gan.data.idx import parse_idx
from gan.data.imagedecode import Target, decode_image
from gan.evaluation.classifier import train_classifier
from gan.evaluation.features import ClassifierExtractor, JudgeExtractor
from gan.evaluation.judge import FEATURE_DIM, JudgeEncoder, embed, load_judge, nt_xent, random_views, train_judge
from gan.evaluation.metrics import fid_from_features
from gan.training.models import build_generator, load_generator
from gan.training.sampling import sample_batches
from gan.training.train import TrainOutputs, load_checkpoint, train

from .conftest import ARTIFACTS_DIR, DEBIAN_FMNIST, REPO, require_debian_fashion_mnist, run, shared_root

CPU = torch.device("cpu")
Extract = Callable[[torch.Tensor], np.ndarray]  # uint8 N×C×H×W -> N×D features


# ---------------------------------------------------------------- shared helpers


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread and one BLAS thread for this module. The tests share 2 cores with other test processes, and
    under that contention a second thread waits more than it works. Measured on this machine with the load at 4:
    374 steps of the MLP GAN took 132 s with 2 torch threads and 1.7 s with 1; one epoch of the judge on 2,840
    images 59 s and 5.8 s; ten 128-d Fréchet distances (numpy's OpenBLAS) 8.9 s and 0.15 s."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Numbers the soundness tests measured; added to test-output/judge-soundness.json at the end. The Fashion-MNIST
    and the emoji tests may run on two workers: each adds its numbers to what this test run wrote there before."""
    numbers: dict = {}
    yield numbers
    if numbers:
        ARTIFACTS_DIR.mkdir(exist_ok=True)
        path, this_run = ARTIFACTS_DIR / "judge-soundness.json", str(shared_root(tmp_path_factory))
        with FileLock(f"{path}.lock"):
            before = json.loads(path.read_text()) if path.exists() else {}
            kept = before if before.get("test_run") == this_run else {}
            path.write_text(json.dumps({**kept, **numbers, "test_run": this_run}, indent=2) + "\n")


def write_split(path: Path, images: np.ndarray, labels: np.ndarray | None = None) -> Path:
    """A prepared split (the format gan.core.splits reads); labels None = unlabeled (-1)."""
    labels = np.full(len(images), UNLABELED, np.int64) if labels is None else np.asarray(labels, np.int64)
    np.savez(path, images=np.ascontiguousarray(images, np.uint8), labels=labels)
    return path


def random_images(n: int, shape: Sequence[int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def judge_extractor(model: JudgeEncoder) -> Extract:
    return lambda images: embed(model, images, CPU)


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of uint8 images (kernel 2·ceil(3 sigma)+1, reflected borders), back to uint8."""
    k = 2 * math.ceil(3 * sigma) + 1
    return TF.gaussian_blur(images.float(), [k, k], [sigma, sigma]).round().clamp(0, 255).to(torch.uint8)


def add_noise(images: torch.Tensor, std: float, seed: int = 1) -> torch.Tensor:
    """Gaussian noise of `std` uint8 levels, rounded and clipped to 0..255."""
    g = torch.Generator().manual_seed(seed)
    return (images.float() + std * torch.randn(images.shape, generator=g)).round().clamp(0, 255).to(torch.uint8)


def shuffle_pixels(images: torch.Tensor, seed: int = 2) -> torch.Tensor:
    """Each image's pixel positions permuted at random (one permutation for all its channels): every image keeps its
    exact histogram and loses all structure."""
    n, c, h, w = images.shape
    order = torch.rand(n, h * w, generator=torch.Generator().manual_seed(seed)).argsort(dim=1)
    return images.flatten(2).gather(2, order[:, None, :].expand(n, c, h * w)).view(n, c, h, w)


def assert_increasing(what: str, levels: Sequence, values: Sequence[float], margin: float) -> None:
    """Each value above the one before by more than `margin` (strictly increasing, beyond sampling noise)."""
    pairs = ", ".join(f"{lv}: {v:.3f}" for lv, v in zip(levels, values, strict=True))
    assert all(b - a > margin for a, b in itertools.pairwise(values)), (
        f"{what}: FD does not rise by more than {margin:.3f} at every step: {pairs}"
    )


# ---------------------------------------------------------------- NT-Xent


def nt_xent_by_hand(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """The paper's loss (Chen et al. 2020, eq. 1 and Algorithm 1), one of the 2N rows at a time, in plain Python:
    l(i, j) = -log(exp(sim(z_i, z_j)/t) / sum over k != i of exp(sim(z_i, z_k)/t)), averaged over the 2N rows,
    where row i < N is view 1 of image i, row N + i its view 2, and each row's positive is the other view."""
    z = [list(map(float, r)) for r in torch.cat([z1, z2])]
    n = len(z1)

    def sim(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        denominator = sum(math.exp(sim(z[i], z[k]) / t) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(sim(z[i], z[j]) / t) / denominator)
    return total / (2 * n)


def simclr_reference_loss(hidden: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's own loss: `add_contrastive_loss` of google-research/simclr, tf2/objective.py (Apache-2.0, commit
    67b562524223e65c0414a15c3bd7ac007d28f629), one replica, hidden_norm=True, translated from TensorFlow to torch
    statement by statement. `hidden` is [view 1 of the batch; view 2 of the batch]. It adds the two directions of
    each pair (loss_a + loss_b) and averages over the N pairs: twice the paper's mean over the 2N rows."""
    large_num = 1e9
    hidden = F.normalize(hidden, dim=-1)  # tf.math.l2_normalize(hidden, -1)
    hidden1, hidden2 = torch.chunk(hidden, 2, 0)  # tf.split(hidden, 2, 0)
    batch_size = hidden1.shape[0]
    labels = F.one_hot(torch.arange(batch_size), batch_size * 2).to(hidden.dtype)
    masks = F.one_hot(torch.arange(batch_size), batch_size).to(hidden.dtype)
    logits_aa = hidden1 @ hidden1.T / temperature
    logits_aa = logits_aa - masks * large_num
    logits_bb = hidden2 @ hidden2.T / temperature
    logits_bb = logits_bb - masks * large_num
    logits_ab = hidden1 @ hidden2.T / temperature
    logits_ba = hidden2 @ hidden1.T / temperature

    def softmax_cross_entropy_with_logits(lab: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return -(lab * F.log_softmax(logits, dim=1)).sum(dim=1)

    loss_a = softmax_cross_entropy_with_logits(labels, torch.cat([logits_ab, logits_aa], 1))
    loss_b = softmax_cross_entropy_with_logits(labels, torch.cat([logits_ba, logits_bb], 1))
    return torch.mean(loss_a + loss_b)


@pytest.mark.parametrize("n", [1, 2, 5])
@pytest.mark.parametrize("temperature", [0.1, 0.5, 2.0])
def test_nt_xent_matches_the_papers_formula_computed_by_hand(n, temperature):
    g = torch.Generator().manual_seed(n)
    z1, z2 = torch.randn(n, 4, generator=g, dtype=torch.float64), torch.randn(n, 4, generator=g, dtype=torch.float64)
    got = nt_xent(z1, z2, temperature).item()
    assert got == pytest.approx(nt_xent_by_hand(z1, z2, temperature), rel=1e-12, abs=1e-12)
    if n == 1:
        assert got == pytest.approx(0.0, abs=1e-12)  # one pair: each view's only candidate is its partner


def test_nt_xent_is_half_of_simclrs_reference_implementation_with_the_same_gradient():
    """SimCLR's code sums the two directions of a pair where the paper averages them: a factor 2, which Adam (the
    judge's optimiser) ignores. Values and gradients otherwise agree to float64 rounding."""
    g = torch.Generator().manual_seed(0)
    for temperature in (0.1, 0.5, 1.0):
        z1 = torch.randn(8, 16, generator=g, dtype=torch.float64, requires_grad=True)
        z2 = torch.randn(8, 16, generator=g, dtype=torch.float64, requires_grad=True)
        ours = nt_xent(z1, z2, temperature)
        reference = simclr_reference_loss(torch.cat([z1, z2]), temperature) / 2
        assert ours.item() == pytest.approx(reference.item(), rel=1e-12)
        grads = torch.autograd.grad(ours, (z1, z2))
        ref_grads = torch.autograd.grad(reference, (z1, z2))
        for a, b in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_nt_xent_closed_form_for_orthogonal_pairs_and_its_direction():
    """Partners identical and all images orthogonal: each row has sim 1 with its partner, 0 with the 2N-2 others,
    so l = -log(e^(1/t) / (e^(1/t) + 2N - 2)). It is invariant to the projections' scale, symmetric in the views,
    and lower for aligned partners than for unrelated ones (what training pulls towards)."""
    n, t = 4, 0.5
    z = torch.eye(8, dtype=torch.float64)[:n]
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * n - 2))
    assert nt_xent(z, z, t).item() == pytest.approx(expected, rel=1e-12)
    assert nt_xent(3 * z, 0.5 * z, t).item() == pytest.approx(expected, rel=1e-12)
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(6, 8, generator=g, dtype=torch.float64), torch.randn(6, 8, generator=g, dtype=torch.float64)
    assert nt_xent(a, b, t).item() == pytest.approx(nt_xent(b, a, t).item(), rel=1e-12)
    assert nt_xent(a, a + 0.01 * b, t) < nt_xent(a, b, t)


# ---------------------------------------------------------------- random views


def pattern(n: int, shape: Sequence[int]) -> torch.Tensor:
    """n copies of one structured image in [-1, 1]: a diagonal ramp with a bright square (channels differ)."""
    c, h, w = shape
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    img = torch.stack([(xx + yy) / 2 * (1 - 0.3 * k) for k in range(c)])
    img[:, h // 4 : h // 2, w // 4 : w // 2] = 1.0
    return img.expand(n, c, h, w).contiguous()


def test_random_views_draw_their_parameters_per_image():
    """Eight identical images in one batch get eight different views."""
    v = random_views(pattern(8, (3, 32, 32)), torch.Generator().manual_seed(0))
    flat = v.flatten(1)
    distances = torch.cdist(flat, flat) + torch.eye(8) * 1e9
    assert distances.min() > 0.5, f"two identical images got (nearly) the same view: min distance {distances.min()}"


def test_random_views_are_reproducible_from_the_generator_and_change_the_image():
    x = pattern(4, (1, 28, 28))
    a = random_views(x, torch.Generator().manual_seed(3))
    b = random_views(x, torch.Generator().manual_seed(3))
    c = random_views(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert (a - x).abs().flatten(1).mean(1).min() > 0.01, "a view must differ from its image"
    g = torch.Generator().manual_seed(3)
    assert not torch.allclose(random_views(x, g), random_views(x, g))  # the two views of a training step differ


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 64, 64)])
def test_random_views_keep_shape_dtype_and_range(shape):
    x = torch.rand(16, *shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x[:, :, 0, 0], x[:, :, -1, -1] = -1.0, 1.0  # the extremes of the range are present
    v = random_views(x, torch.Generator().manual_seed(0))
    assert v.shape == x.shape and v.dtype == torch.float32
    assert torch.isfinite(v).all() and v.min() >= -1 and v.max() <= 1


def test_random_views_of_flat_and_half_bright_images_behave_as_documented():
    """Identity-like cases with known answers. A flat grey image stays flat (crop, flip, contrast and saturation
    leave it unchanged) and only moves by the brightness shift, within ±0.3, spread over that range; an RGB grey
    stays grey. A left-bright/right-dark image is flipped about half the time, never upside down."""
    g = torch.Generator().manual_seed(0)
    flat = random_views(torch.zeros(2000, 3, 16, 16), g)
    per_image = flat.flatten(1)
    assert (per_image.max(1).values - per_image.min(1).values).max() < 1e-5, "a flat image must stay flat"
    shift = per_image[:, 0]
    assert shift.abs().max() <= 0.3 + 1e-6 and shift.min() < -0.25 and shift.max() > 0.25
    assert abs(shift.mean()) < 0.03

    n = 2000
    x = -torch.ones(n, 1, 28, 28)
    x[..., :14] = 1.0  # left half bright
    top = torch.full((n, 1, 28, 28), -1.0)
    top[:, :, :14, :] = 1.0  # top half bright
    v = random_views(x, g)
    flipped = (v[..., :, :4].mean(dim=(1, 2, 3)) < v[..., :, -4:].mean(dim=(1, 2, 3))).float().mean().item()
    assert 0.45 < flipped < 0.55, f"horizontal flips in {flipped:.1%} of views, documented: half"
    vt = random_views(top, g)
    assert (vt[:, :, :4].mean(dim=(1, 2, 3)) > vt[:, :, -4:].mean(dim=(1, 2, 3))).all(), "no vertical flips"


# ---------------------------------------------------------------- training: labels unused, determinism, errors

TINY_JUDGE = JudgeConfig(seed=0, steps=2, batch_size=16)


def tiny_splits(root: Path, shape: Sequence[int] = (1, 28, 28), n: int = 48) -> tuple[Path, Path, np.ndarray]:
    images, test = random_images(n, shape, 0), random_images(16, shape, 1)
    labels = np.random.default_rng(2).integers(0, 10, n)
    root.mkdir(parents=True, exist_ok=True)
    return write_split(root / "train.npz", images, labels), write_split(root / "test.npz", test, labels[:16]), labels


def train_tiny(root: Path, train_split: Path, test_split: Path, cfg: JudgeConfig = TINY_JUDGE) -> Path:
    train_judge(cfg, train_split, test_split, root / "judge.pt", root / "judge.json", device="cpu",
                progress_bar=False)  # fmt: skip
    return root / "judge.pt"


def state_dict(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def test_train_judge_ignores_labels(tmp_path):
    """The same images with their labels, with the labels permuted, and with no labels (-1): identical weights."""
    train_split, test_split, labels = tiny_splits(tmp_path / "labelled")
    images = np.load(train_split)["images"]
    variants = {
        "labelled": train_split,
        "permuted": write_split(tmp_path / "permuted.npz", images, np.random.default_rng(9).permutation(labels)),
        "unlabeled": write_split(tmp_path / "unlabeled.npz", images),
    }
    weights = {name: state_dict(train_tiny(tmp_path / name, path, test_split)) for name, path in variants.items()}
    for name in ("permuted", "unlabeled"):
        for key, value in weights["labelled"].items():
            assert torch.equal(value, weights[name][key]), f"{name}: {key} differs: the labels changed training"


def test_same_seed_gives_the_same_file_bytes_and_features(tmp_path):
    train_split, test_split, _ = tiny_splits(tmp_path / "data")
    a = train_tiny(tmp_path / "a", train_split, test_split)
    b = train_tiny(tmp_path / "b", train_split, test_split)
    assert a.read_bytes() == b.read_bytes()
    probe = torch.from_numpy(random_images(32, (1, 28, 28), 5))
    fa, fb = embed(load_judge(a), probe, CPU), embed(load_judge(b), probe, CPU)
    assert fa.shape == (32, FEATURE_DIM) and fa.dtype == np.float32 and np.array_equal(fa, fb)
    ma, mb = (json.loads((p.parent / "judge.json").read_text()) for p in (a, b))
    assert {**ma, "seconds": 0} == {**mb, "seconds": 0}
    c = train_tiny(tmp_path / "c", train_split, test_split, TINY_JUDGE.model_copy(update={"seed": 1}))
    assert not torch.equal(state_dict(a)["body.0.weight"], state_dict(c)["body.0.weight"])


def test_load_judge_of_a_missing_file_names_it(tmp_path):
    missing = tmp_path / "models" / "judge.pt"
    with pytest.raises(PipelineError, match=re.escape(str(missing)) + r" missing: train the judge first"):
        load_judge(missing)
    with pytest.raises(PipelineError, match=re.escape(str(missing))):
        JudgeExtractor(missing, CPU)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 64, 64)])
def test_judge_trains_and_embeds_grey_and_rgb_shapes(tmp_path, shape):
    train_split, test_split, _ = tiny_splits(tmp_path, shape, n=32)
    metrics = json.loads(train_tiny(tmp_path, train_split, test_split).with_suffix(".json").read_text())
    assert metrics["steps"] == 2 and metrics["n_train"] == 32 and math.isfinite(metrics["loss_per_epoch"][0])
    assert "knn_accuracy_test" in metrics  # both splits labelled: the k-NN probe is reported
    model = load_judge(tmp_path / "judge.pt")
    assert model.image_shape == shape and not model.training
    features = JudgeExtractor(tmp_path / "judge.pt", CPU)(torch.from_numpy(random_images(5, shape, 3)))[0]
    assert features.shape == (5, FEATURE_DIM) and np.isfinite(features).all()
    other = (3, 28, 28) if shape[0] == 1 else (1, *shape[1:])
    with pytest.raises(ValueError, match="the judge was trained on this shape"):
        JudgeExtractor(tmp_path / "judge.pt", CPU)(torch.from_numpy(random_images(2, other, 4)))


# ---------------------------------------------------------------- the soundness sweep


@dataclass(frozen=True)
class Sweep:
    """Judge FDs against `n_ref` real train images, averaged over `draws` random draws of the sides."""

    n: int  # images on the measured side
    n_ref: int  # reference train images
    draws: int
    floor: float  # real vs real: reference train images vs n test images
    same_split: float  # reference vs n *other* train images: FD's own bias at this n
    blur: dict[float, float]  # sigma (px) -> FD of the same test images blurred
    noise: dict[float, float]  # std (uint8 levels) -> FD of the same test images noised
    removal: dict[int, float]  # k -> FD of n test images without the first k classes of the removal order
    shuffled: float  # the same test images with their pixels shuffled: histogram kept, structure gone


BLUR_SIGMAS = (0.5, 1.0, 1.5, 2.0)
NOISE_STDS = (5.0, 10.0, 20.0, 40.0)
REMOVED = (0, 1, 2, 4)


def features_of(extract: Extract, images: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Features of images[rows] in an array indexed like `images` (other rows are NaN)."""
    rows = np.unique(rows)
    out = np.full((len(images), FEATURE_DIM), np.nan, np.float32)
    out[rows] = extract(torch.from_numpy(images[rows]))
    return out


def soundness_sweep(extract: Extract, train_images: np.ndarray, test_images: np.ndarray, test_labels: np.ndarray,
                    removal_order: Sequence[int], n: int, n_ref: int, draws: int, seed: int = 0) -> Sweep:  # fmt: skip
    """Each draw: a random reference of n_ref train images, n other train images, and a random order of the test
    images whose first n are the measured side (degraded in place: paired), or, for class removal, the first n
    in that order outside the removed classes (nested: k+1 classes removed swaps images of one more class only)."""
    rng = np.random.default_rng(seed)
    train_perms = [rng.permutation(len(train_images))[: n_ref + n] for _ in range(draws)]
    test_orders = [rng.permutation(len(test_images)) for _ in range(draws)]
    f_train = features_of(extract, train_images, np.concatenate(train_perms))
    f_test = features_of(extract, test_images, np.arange(len(test_images)))
    rows = np.unique(np.concatenate([o[:n] for o in test_orders]))  # every measured test image of any draw
    x = torch.from_numpy(test_images[rows])
    degradations = [*((("blur", s), lambda s=s: blur(x, s)) for s in BLUR_SIGMAS),
                    *((("noise", s), lambda s=s: add_noise(x, s)) for s in NOISE_STDS),
                    (("shuffle", 0), lambda: shuffle_pixels(x))]  # fmt: skip
    degraded = {}
    for key, images in degradations:
        degraded[key] = np.full_like(f_test, np.nan)
        degraded[key][rows] = extract(images())

    def mean_fd(side: Callable[[int], np.ndarray]) -> float:
        return float(np.mean([fid_from_features(f_train[p[:n_ref]], side(d)) for d, p in enumerate(train_perms)]))

    def without(k: int, d: int) -> np.ndarray:
        order = test_orders[d]
        kept = order[~np.isin(test_labels[order], list(removal_order[:k]))][:n]
        assert len(kept) == n, f"only {len(kept)} test images outside classes {removal_order[:k]}; need {n}"
        return f_test[kept]

    return Sweep(
        n=n, n_ref=n_ref, draws=draws,
        floor=mean_fd(lambda d: f_test[test_orders[d][:n]]),
        same_split=mean_fd(lambda d: f_train[train_perms[d][n_ref:]]),
        blur={s: mean_fd(lambda d, s=s: degraded["blur", s][test_orders[d][:n]]) for s in BLUR_SIGMAS},
        noise={s: mean_fd(lambda d, s=s: degraded["noise", s][test_orders[d][:n]]) for s in NOISE_STDS},
        removal={k: mean_fd(lambda d, k=k: without(k, d)) for k in REMOVED},
        shuffled=mean_fd(lambda d: degraded["shuffle", 0][test_orders[d][:n]]),
    )  # fmt: skip


def step_margin(s: Sweep) -> float:
    """A step must add 5 % of the same-split FD (FD's own bias at this n). With random features the steps measured
    were at most 4 % of it, of either sign, and a bare strict increase passes by chance (it did, once, for the emoji's
    categories: 1 in 24 for 4 values). The judge's smallest step is 16 % (emoji, noise 0 -> 5)."""
    return 0.05 * s.same_split


def check_floor_near_zero(name: str, s: Sweep) -> None:
    """floor <= 1.5 × the same-split FD, and its excess over the same-split FD < 10 % of the mildest blur's, which
    must itself stand clear of sampling noise (> 2 × the same-split FD): "near 0" needs a scale."""
    assert s.blur[0.5] > 2 * s.same_split, (
        f"{name}: blur sigma 0.5 scores {s.blur[0.5]:.3f}, not clear of the same-split FD {s.same_split:.3f}"
    )
    assert s.floor <= 1.5 * s.same_split, (
        f"{name}: real-vs-real floor {s.floor:.3f} is more than 1.5 × the same-split FD {s.same_split:.3f}: the "
        "judge tells test images from training images apart"
    )
    excess, blur_excess = s.floor - s.same_split, s.blur[0.5] - s.same_split
    assert excess < 0.1 * blur_excess, (
        f"{name}: floor {s.floor:.3f} exceeds the same-split FD {s.same_split:.3f} by {excess:.3f}, not below 10 % of "
        f"what blur sigma 0.5 adds ({s.blur[0.5]:.3f}: {blur_excess:.3f})"
    )


def check_sees_structure(name: str, s: Sweep) -> None:
    """Shuffling each image's pixels keeps its histogram and destroys everything else. Matching colour histograms
    is the shortcut SimCLR is known to take when its views allow it (Chen et al. 2020, sec. 3 and fig. 6); a judge
    that took it, or any judge of global statistics (brightness, contrast), scores shuffled images like real ones."""
    assert s.shuffled > 10 * s.same_split and s.shuffled > s.blur[2.0], (
        f"{name}: images with shuffled pixels score {s.shuffled:.3f}, real ones {s.floor:.3f} (same split "
        f"{s.same_split:.3f}, blur sigma 2: {s.blur[2.0]:.3f}): the judge sees the histogram, not the structure"
    )


def record(report: dict, name: str, s: Sweep) -> None:
    report[name] = {k: ({str(kk): round(vv, 4) for kk, vv in v.items()} if isinstance(v, dict) else v)
                    for k, v in asdict(s).items()}  # fmt: skip
    report[name]["floor_over_mildest"] = {
        "blur 0.5": round(s.floor / s.blur[0.5], 4),
        "noise 5": round(s.floor / s.noise[5.0], 4),
        "1 class removed": round(s.floor / s.removal[1], 4),
    }
    print(f"\n{name}: {json.dumps(report[name])}")


# ---------------------------------------------------------------- soundness on Fashion-MNIST


@dataclass(frozen=True)
class FashionMNIST:
    train_images: np.ndarray  # uint8 60000×1×28×28
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


FMNIST_JUDGE_IMAGES = 12_000  # the judge's training images: the first 12k of the training split, labels withheld


@pytest.fixture(scope="module")
def fmnist() -> FashionMNIST:
    require_debian_fashion_mnist()

    def read(name: str) -> np.ndarray:
        return parse_idx(gzip.decompress((DEBIAN_FMNIST / name).read_bytes()), name)

    return FashionMNIST(
        read("train-images-idx3-ubyte.gz")[:, None], read("train-labels-idx1-ubyte.gz").astype(np.int64),
        read("t10k-images-idx3-ubyte.gz")[:, None], read("t10k-labels-idx1-ubyte.gz").astype(np.int64),
    )  # fmt: skip


@dataclass(frozen=True)
class TrainedJudge:
    path: Path
    model: JudgeEncoder
    metrics: dict
    seconds: float


@pytest.fixture(scope="module")
def fmnist_judge(fmnist, tmp_path_factory) -> TrainedJudge:
    """The judge trained on 12,000 Fashion-MNIST training images with every label replaced by -1, for 1 epoch."""
    root = tmp_path_factory.mktemp("fmnist-judge")
    train_split = write_split(root / "train.npz", fmnist.train_images[:FMNIST_JUDGE_IMAGES])
    test_split = write_split(root / "test.npz", fmnist.test_images)
    t0 = time.perf_counter()
    metrics = train_judge(JudgeConfig(seed=0, steps=46), train_split, test_split, root / "judge.pt",
                          root / "judge.json", device="cpu", progress_bar=False)  # fmt: skip
    seconds = time.perf_counter() - t0
    return TrainedJudge(root / "judge.pt", load_judge(root / "judge.pt"), metrics, seconds)


@pytest.fixture(scope="module")
def fmnist_sweep(fmnist, fmnist_judge, report) -> Sweep:
    """n = 5000 test images (what removing 4 of the 10 classes leaves room for) against 5000 train images, 3 draws
    averaged (one FD at this n varies by about 15 % from draw to draw)."""
    s = soundness_sweep(judge_extractor(fmnist_judge.model), fmnist.train_images, fmnist.test_images,
                        fmnist.test_labels, removal_order=range(10), n=5000, n_ref=5000, draws=3)  # fmt: skip
    record(report, "fashion-mnist", s)
    return s


@pytest.mark.slow
@pytest.mark.xdist_group("judge-fmnist")
def test_fmnist_judge_learns_without_labels(fmnist_judge, report):
    m, seconds = fmnist_judge.metrics, fmnist_judge.seconds
    report["fashion-mnist judge"] = {**m, "wall_seconds": round(seconds, 1)}
    print(f"\nFashion-MNIST judge: {m['n_train']} images, {m['steps']} steps, {seconds:.1f} s, {m}")
    assert "knn_accuracy_test" not in m  # it had no labels to report a k-NN accuracy with
    assert m["positive_retrieval_test"] > 50 * m["positive_retrieval_chance"]
    # Its time is reported (test-output/judge-soundness.json), not asserted: speed is a bench's job, not a test's.


@pytest.mark.slow
@pytest.mark.xdist_group("judge-fmnist")
def test_fmnist_real_vs_real_floor_is_near_zero(fmnist_sweep):
    check_floor_near_zero("Fashion-MNIST", fmnist_sweep)


@pytest.mark.slow
@pytest.mark.xdist_group("judge-fmnist")
def test_fmnist_judge_sees_structure_not_only_the_histogram(fmnist_sweep):
    check_sees_structure("Fashion-MNIST", fmnist_sweep)


@pytest.mark.slow
@pytest.mark.xdist_group("judge-fmnist")
def test_fmnist_fd_rises_with_blur(fmnist_sweep):
    s = fmnist_sweep
    assert_increasing("Fashion-MNIST blur sigma", (0, *s.blur), (s.floor, *s.blur.values()), step_margin(s))


@pytest.mark.slow
@pytest.mark.xdist_group("judge-fmnist")
def test_fmnist_fd_rises_with_noise(fmnist_sweep):
    s = fmnist_sweep
    assert_increasing("Fashion-MNIST noise std", (0, *s.noise), (s.floor, *s.noise.values()), step_margin(s))


@pytest.mark.slow
@pytest.mark.xdist_group("judge-fmnist")
def test_fmnist_fd_rises_as_classes_are_removed(fmnist_sweep):
    s = fmnist_sweep
    assert_increasing("Fashion-MNIST classes removed", tuple(s.removal), tuple(s.removal.values()), step_margin(s))


# ---------------------------------------------------------------- soundness on a colour folder (emoji)

EMOJI_TGZ = "emoji-datasource-google-16.0.0.tgz"  # examples/emoji_folder.py's pinned package, as `npm pack` names it
EMOJI_SHA256 = "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438"
TEST_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gan-pipeline-tests"


def load_emoji_example():
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import emoji_folder
    finally:
        sys.path.remove(str(REPO / "examples"))
    return emoji_folder


def sha256_of(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def emoji_tgz() -> Path:
    """The npm package's tarball, fetched once with `npm pack` into ~/.cache/gan-pipeline-tests and checked."""
    cached = TEST_CACHE / EMOJI_TGZ
    if not cached.is_file():
        TEST_CACHE.mkdir(parents=True, exist_ok=True)
        try:
            packed = load_emoji_example().npm_pack(TEST_CACHE)
        except (OSError, subprocess.CalledProcessError) as err:
            detail = getattr(err, "stderr", "") or err
            msg = f"`npm pack {load_emoji_example().PACKAGE}` failed, so no colour example data: {detail}"
            if os.environ.get("GAN_REQUIRE_REAL_DATA") == "1":
                pytest.fail(msg)
            pytest.skip(msg)
        packed.replace(cached)
    assert sha256_of(cached) == EMOJI_SHA256, f"{cached}: not the pinned package (sha256 {sha256_of(cached)})"
    return cached


@dataclass(frozen=True)
class Emoji:
    categories: tuple[str, ...]
    train_images: np.ndarray  # uint8 N×3×32×32, composited on white
    train_labels: np.ndarray  # index into categories
    test_images: np.ndarray
    test_labels: np.ndarray


EMOJI_TEST_SHARE = 0.25


@pytest.fixture(scope="module")
def emoji(emoji_tgz, tmp_path_factory) -> Emoji:
    """The emoji folder (examples/emoji_folder.py: one subfolder per category), decoded by the project's decoder at
    32×32 RGB on white; 25 % of each category held out as the test split (seed 0)."""
    folder = tmp_path_factory.mktemp("emoji") / "folder"
    counts = load_emoji_example().build(emoji_tgz, folder)
    categories = tuple(sorted(counts))
    target = Target(resolution=32, channels=3)
    images, labels = [], []
    for k, category in enumerate(categories):
        for png in sorted((folder / category).iterdir()):
            images.append(decode_image(png, target))
            labels.append(k)
    x, y = np.stack(images), np.array(labels, np.int64)
    rng = np.random.default_rng(0)
    test = np.zeros(len(x), bool)
    for k in range(len(categories)):
        members = np.flatnonzero(y == k)
        test[rng.choice(members, round(EMOJI_TEST_SHARE * len(members)), replace=False)] = True
    return Emoji(categories, x[~test], y[~test], x[test], y[test])


EMOJI_JUDGE = JudgeConfig(seed=0, steps=176, batch_size=64)  # 4 epochs here
NOT_MODES = ("component", "people-and-body")  # 5 skin-tone swatches; 60 % of the images (n would not fit without it)


def most_separated(images: np.ndarray, labels: np.ndarray, candidates: Sequence[int]) -> list[int]:
    """Categories ordered by how far their mean image lies from the other images' mean, over their own spread, in
    pixel space (no model involved): the categories that stand apart as modes come first."""
    x = images.reshape(len(images), -1).astype(np.float64) / 255

    def separation(k: int) -> float:
        inside, outside = x[labels == k], x[labels != k]
        spread = ((inside - inside.mean(0)) ** 2).sum(1).mean()
        return float(((inside.mean(0) - outside.mean(0)) ** 2).sum() / spread)

    return sorted(candidates, key=separation, reverse=True)


@pytest.fixture(scope="module")
def emoji_judge(emoji, tmp_path_factory) -> TrainedJudge:
    root = tmp_path_factory.mktemp("emoji-judge")
    train_split = write_split(root / "train.npz", emoji.train_images)
    test_split = write_split(root / "test.npz", emoji.test_images)
    t0 = time.perf_counter()
    metrics = train_judge(EMOJI_JUDGE, train_split, test_split, root / "judge.pt", root / "judge.json", device="cpu",
                          progress_bar=False)  # fmt: skip
    return TrainedJudge(root / "judge.pt", load_judge(root / "judge.pt"), metrics, time.perf_counter() - t0)


@pytest.fixture(scope="module")
def emoji_sweep(emoji, emoji_judge, report) -> Sweep:
    """n = 600 of the 946 test images (what removing 4 categories leaves room for), 10 draws averaged."""
    candidates = [k for k, c in enumerate(emoji.categories) if c not in NOT_MODES]
    order = most_separated(emoji.train_images, emoji.train_labels, candidates)
    s = soundness_sweep(judge_extractor(emoji_judge.model), emoji.train_images, emoji.test_images, emoji.test_labels,
                        removal_order=order, n=600, n_ref=len(emoji.train_images) - 600, draws=10)  # fmt: skip
    record(report, "emoji", s)
    report["emoji"]["removal_order"] = [emoji.categories[k] for k in order[: max(REMOVED)]]
    report["emoji judge"] = {**emoji_judge.metrics, "wall_seconds": round(emoji_judge.seconds, 1)}
    return s


@pytest.mark.slow
@pytest.mark.xdist_group("judge-emoji")
def test_emoji_judge_learns_without_labels(emoji, emoji_judge):
    m = emoji_judge.metrics
    print(f"\nemoji judge: {len(emoji.train_images)} images, {m['steps']} steps, {emoji_judge.seconds:.1f} s, {m}")
    assert m["n_train"] == len(emoji.train_images) > 2500 and "knn_accuracy_test" not in m
    assert m["positive_retrieval_test"] > 100 * m["positive_retrieval_chance"]


@pytest.mark.slow
@pytest.mark.xdist_group("judge-emoji")
def test_emoji_real_vs_real_floor_is_near_zero(emoji_sweep):
    check_floor_near_zero("emoji", emoji_sweep)


@pytest.mark.slow
@pytest.mark.xdist_group("judge-emoji")
def test_emoji_judge_sees_structure_not_only_the_histogram(emoji_sweep):
    check_sees_structure("emoji", emoji_sweep)


@pytest.mark.slow
@pytest.mark.xdist_group("judge-emoji")
def test_emoji_fd_rises_with_blur(emoji_sweep):
    s = emoji_sweep
    assert_increasing("emoji blur sigma", (0, *s.blur), (s.floor, *s.blur.values()), step_margin(s))


@pytest.mark.slow
@pytest.mark.xdist_group("judge-emoji")
def test_emoji_fd_rises_with_noise(emoji_sweep):
    s = emoji_sweep
    assert_increasing("emoji noise std", (0, *s.noise), (s.floor, *s.noise.values()), step_margin(s))


@pytest.mark.slow
@pytest.mark.xdist_group("judge-emoji")
def test_emoji_fd_rises_as_categories_are_removed(emoji_sweep):
    s = emoji_sweep
    assert_increasing("emoji categories removed", tuple(s.removal), tuple(s.removal.values()), step_margin(s))


# ---------------------------------------------------------------- rank agreement on GAN checkpoints

GAN_MODEL = ModelConfig(arch="dcgan", channels=16, z_dim=64)
GAN_TRAIN = TrainConfig(seed=0, batch_size=64, device="cpu")
GAN_STEPS = (23, 92, 187, 561)  # ~1/8, 1/2, 1 and 3 epochs of 12,000 images at batch 64 (187 steps an epoch)
N_SCORE = 5000  # samples per generator and real test images


def train_with_snapshots(model_cfg: ModelConfig, train_cfg: TrainConfig, split: Path, root: Path,
                         steps: Sequence[int]) -> dict[int, torch.nn.Module]:  # fmt: skip
    """G after each of `steps` optimiser steps, from one training run. The trainer checkpoints at every epoch end and
    every `checkpoint_every` steps (here the gcd of the mid-epoch steps); when it reports step s + 1, last.pt holds
    step s."""
    n = len(np.load(split)["labels"])
    per_epoch = n // train_cfg.batch_size
    mid = [s for s in steps if s % per_epoch]
    cfg = train_cfg.model_copy(update={"epochs": math.ceil(max(steps) / per_epoch), "log_flush_every": 1,
                                       "checkpoint_every": math.gcd(*mid) if mid else 0})  # fmt: skip
    out = TrainOutputs(root / "generator.pt", root / "checkpoints", root / "log")
    kept: dict[int, torch.nn.Module] = {}

    def keep(stats: dict) -> None:
        step = stats["step"] - 1
        if step in steps and step not in kept:
            ckpt = load_checkpoint(out.checkpoint_dir / "last.pt")
            assert ckpt["step"] == step
            G = build_generator(model_cfg, np.load(split)["images"].shape[1:])
            G.load_state_dict(ckpt["G"])
            kept[step] = G.eval()

    result = train(model_cfg, cfg, split, out, on_progress=keep, progress_bar=False)
    kept.setdefault(result.steps, load_generator(out.generator)[0])
    assert sorted(kept) == sorted(steps), f"kept G after steps {sorted(kept)}, wanted {sorted(steps)}"
    return dict(sorted(kept.items()))


@pytest.fixture(scope="module")
def fmnist_labelled(fmnist, tmp_path_factory) -> tuple[Path, Path]:
    """The judge's 12,000 training images *with* their labels (for the classifier and the GAN), and the test split."""
    root = tmp_path_factory.mktemp("fmnist-labelled")
    n = FMNIST_JUDGE_IMAGES
    return (write_split(root / "train.npz", fmnist.train_images[:n], fmnist.train_labels[:n]),
            write_split(root / "test.npz", fmnist.test_images, fmnist.test_labels))  # fmt: skip


@pytest.fixture(scope="module")
def fmnist_classifier(fmnist_labelled, tmp_path_factory) -> Path:
    """The established, labelled judge: the domain classifier trained on the same 12,000 images with labels."""
    root = tmp_path_factory.mktemp("fmnist-classifier")
    train_split, test_split = fmnist_labelled
    train_classifier(ClassifierConfig(seed=0, steps=94), train_split, test_split, root / "classifier.pt",
                     root / "classifier.json", num_classes=10, device="cpu", progress_bar=False)  # fmt: skip
    return root / "classifier.pt"


@pytest.fixture(scope="module")
def gan_snapshots(fmnist_labelled, tmp_path_factory) -> dict[int, torch.nn.Module]:
    return train_with_snapshots(GAN_MODEL, GAN_TRAIN, fmnist_labelled[0], tmp_path_factory.mktemp("gan"), GAN_STEPS)


@pytest.mark.slow
@pytest.mark.xdist_group("judge-fmnist")
def test_judge_ranks_generators_like_the_labelled_classifier(fmnist, fmnist_judge, fmnist_classifier, gan_snapshots,
                                                             report):  # fmt: skip
    """DCGAN checkpoints after 23, 92, 187 and 561 steps, each scored by the judge (FD against real test images)
    and by the classifier (its FID): the two rankings must agree exactly (Kendall tau 1 over 4 generators)."""
    clf = ClassifierExtractor(fmnist_classifier, CPU)
    judges: dict[str, Extract] = {"classifier": lambda x: clf(x)[0], "judge": judge_extractor(fmnist_judge.model)}
    real = torch.from_numpy(fmnist.test_images[:N_SCORE])
    reference = {name: f(real) for name, f in judges.items()}
    scores: dict[str, list[float]] = {name: [] for name in judges}
    for G in gan_snapshots.values():
        fake = torch.cat([to_uint8(b) for b in sample_batches(G, N_SCORE, seed=7)])
        for name, f in judges.items():
            scores[name].append(fid_from_features(reference[name], f(fake)))
    tau, rho = kendalltau(scores["classifier"], scores["judge"]), spearmanr(scores["classifier"], scores["judge"])
    ranking = {name: [f"step {s}" for _, s in sorted(zip(v, gan_snapshots, strict=True))] for name, v in scores.items()}
    rows = zip(gan_snapshots, scores["classifier"], scores["judge"], strict=True)
    table = "\n".join(f"  step {s:4d}: FID classifier {c:9.2f}   FD judge {j:9.2f}" for s, c, j in rows)
    summary = (f"{table}\n  best to worst, classifier: {ranking['classifier']}\n  best to worst, judge:      "
               f"{ranking['judge']}\n  Kendall tau {tau.statistic:.3f} (p {tau.pvalue:.3f}), Spearman rho "
               f"{rho.statistic:.3f}, classifier test accuracy {clf.test_accuracy:.3f}")  # fmt: skip
    print(f"\nrank agreement on DCGAN checkpoints:\n{summary}")
    report["rank agreement"] = {
        "steps": list(gan_snapshots), **{k: [round(v, 3) for v in vs] for k, vs in scores.items()},
        "kendall_tau": float(tau.statistic), "spearman_rho": float(rho.statistic), "ranking": ranking,
    }  # fmt: skip
    best_to_worst = sorted(scores["classifier"])
    assert all(b > 1.1 * a for a, b in itertools.pairwise(best_to_worst)), (
        f"the generators' qualities must differ clearly (>10 % apart by the classifier) for a ranking test:\n{summary}"
    )
    assert tau.statistic == pytest.approx(1.0), f"the judge ranks the generators unlike the classifier:\n{summary}"


# ---------------------------------------------------------------- the bench

BENCH_ROW = re.compile(r"^\| epoch (\d+) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", re.M)
SWEEP_ROW = re.compile(r"^\| (floor: train vs test|same split: train vs train|blur sigma \(px\)|noise std \(0-255\)|"
                       r"classes removed) \| ([\d.-]+) \| ([\d.]+) \| ([\d.]+) \|$", re.M)  # fmt: skip


@pytest.mark.slow
@pytest.mark.xdist_group("judge-fmnist")
def test_judge_soundness_bench_runs_end_to_end(fmnist, fmnist_classifier, tmp_path):
    """bench/judge_soundness.py on a workspace of 1,000 training images: no judge.pt, so it trains one; an MLP GAN
    kept after 1 and 2 epochs; every table present and every number parses."""
    prepared, models = tmp_path / "data" / "prepared", tmp_path / "data" / "models"
    prepared.mkdir(parents=True)
    models.mkdir()
    write_split(prepared / "train.npz", fmnist.train_images[:2000], fmnist.train_labels[:2000])
    write_split(prepared / "test.npz", fmnist.test_images[:1000], fmnist.test_labels[:1000])
    (models / "classifier.pt").write_bytes(fmnist_classifier.read_bytes())
    out = run([sys.executable, str(REPO / "bench" / "judge_soundness.py"), "--epochs", "2,1", "--limit-train", "1000",
               "--n", "400", "--threads", "1", "--set", "model.arch=mlp", "--set", "train.batch_size=64",
               "--set", "judge.batch_size=128", "--set", "judge.steps=7"], cwd=tmp_path).stdout  # fmt: skip

    lines = out.splitlines()
    assert lines[0].startswith("cpu: ") and len(lines[0]) > len("cpu: "), out
    assert re.fullmatch(rf"torch: {re.escape(torch.__version__)} \(1 threads\), cuda (True|False)", lines[1]), out
    assert "judge: data/models/judge.pt missing: training one here" in out, out
    assert re.search(r"judge: trained on 1000 images without labels, 1 epoch\(s\), 7 steps", out), out
    assert re.search(r"classifier: data/models/classifier.pt \(test accuracy 0\.\d+\)", out), out

    rows = BENCH_ROW.findall(out)
    assert [(int(e), int(s)) for e, s, *_ in rows] == [(1, 15), (2, 30)], out  # 1000 // 64 = 15 steps an epoch
    for _, _, fid_c, fd_j, rank_c, rank_j in rows:
        assert float(fid_c) > 0 and float(fd_j) > 0 and {float(rank_c), float(rank_j)} <= {1.0, 1.5, 2.0}, out
    m = re.search(r"^Kendall tau (-?[\d.]+|nan) \(p ([\d.]+|nan)\), Spearman rho (-?[\d.]+|nan) \(p ([\d.]+|nan)\) "
                  r"over 2 generators$", out, re.M)  # fmt: skip
    assert m and all(math.isnan(float(v)) or -1 <= float(v) <= 1 for v in m.groups()), out

    assert "## Soundness (400 images per side, one random draw; reference: 400 real train images)" in out, out
    sweep = SWEEP_ROW.findall(out)
    assert [(probe.split()[0], level) for probe, level, *_ in sweep] == [
        ("floor:", "-"), ("same", "-"), *(("blur", f"{s:g}") for s in (0.5, 1, 1.5, 2)),
        *(("noise", f"{s:g}") for s in (5, 10, 20, 40)), ("classes", "1"), ("classes", "2"), ("classes", "4"),
    ], out  # fmt: skip
    assert all(float(c) >= 0 and float(j) >= 0 for *_, c, j in sweep), out
    for name in ("classifier", "judge"):
        assert re.search(rf"^monotonic \({name}\): blur (yes|NO), noise (yes|NO), classes (yes|NO); floor / blur 0.5: "
                         r"[\d.]+, floor / same split: [\d.]+$", out, re.M), out  # fmt: skip
