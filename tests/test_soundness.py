"""The ruler's own test (gan/evaluation/soundness.py): which extractors can tell degraded images from real ones, and
what the
probe and the champion gate do with one that cannot."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gan.core.config import auto_metric
from gan.evaluation.soundness import BLOB_RADIUS, BLUR_RADIUS, FAINT_RADIUS, LEVELS, blur, check, degraded, verdict
from gan.lifecycle.champion import decide


def shapes(n: int, seed: int) -> np.ndarray:
    """n colour images 3×32×32: a filled rectangle of a random colour at a random place on white, with a dark edge."""
    rng = np.random.default_rng(seed)
    images = np.full((n, 3, 32, 32), 255, np.uint8)
    for i in range(n):
        x0, y0 = rng.integers(0, 16, 2)
        w, h = rng.integers(8, 16, 2)
        images[i, :, y0 : y0 + h, x0 : x0 + w] = 20
        images[i, :, y0 + 1 : y0 + h - 1, x0 + 1 : x0 + w - 1] = rng.integers(0, 255, (3, 1, 1))
    return images


def palette(images_u8: torch.Tensor) -> np.ndarray:
    """A ruler that sees only each image's mean colour: the palette, nothing of its shapes or edges."""
    return images_u8.float().mean(dim=(2, 3)).numpy()


def pixels(images_u8: torch.Tensor) -> np.ndarray:
    """A ruler that sees the image: its pixels at half resolution (768 values) and its edges (mean absolute
    difference of neighbours, per channel and direction, weighted like a trained network weighs sharpness)."""
    x = images_u8.float() / 255
    small = F.avg_pool2d(x, 2).flatten(1)
    edges = [(x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(2, 3)), (x[..., 1:] - x[..., :-1]).abs().mean(dim=(2, 3))]
    return torch.cat([small, 100 * torch.cat(edges, 1)], 1).numpy()


def test_the_levels_keep_the_palette_and_lose_the_shapes():
    x = torch.from_numpy(shapes(20, 0))
    for level in LEVELS:
        y = degraded(x, level)
        assert y.shape == x.shape and y.dtype == torch.uint8
    faint, blurred, blobs = degraded(x, "faint"), degraded(x, "blurred"), degraded(x, "blobs")
    # the mean colour survives the blur (up to reflected borders and rounding); the edges do not
    assert (blobs.float().mean(dim=(2, 3)) - x.float().mean(dim=(2, 3))).abs().max() < 12
    contrast = [(im.float()[..., 1:, :] - im.float()[..., :-1, :]).abs().mean() for im in (x, faint, blurred, blobs)]
    assert contrast[0] > contrast[1] > contrast[2] > contrast[3]
    noise = degraded(x, "noise").float()
    assert 120 < noise.mean() < 135 and noise.std() > 70  # uniform on 0..255
    assert torch.equal(degraded(x, "noise", seed=3), degraded(x, "noise", seed=3))
    assert (FAINT_RADIUS, BLUR_RADIUS, BLOB_RADIUS) == (0.5, 1.5, 4.0)
    tiny = torch.zeros(2, 1, 6, 6, dtype=torch.uint8)
    assert blur(tiny, BLOB_RADIUS).shape == tiny.shape  # the kernel shrinks to fit a small image


@pytest.mark.parametrize(
    "floor_hi, distances, separates, fragment",
    [
        (10.0, {"faint": 12.0, "blurred": 30.0, "blobs": 60.0, "noise": 500.0}, True, "each beyond the floor's"),
        (10.0, {"faint": 12.0, "blurred": 30.0, "blobs": 60.0, "noise": 40.0}, True, "2x or more"),  # noise < blobs
        (
            10.0,
            {"faint": 9.0, "blurred": 30.0, "blobs": 60.0, "noise": 500.0},
            False,
            "faint images score within the real-vs-real floor",
        ),  # too coarse a ruler
        (10.0, {"faint": 12.0, "blurred": 30.0, "blobs": 8.0, "noise": 500.0}, False, "blobs images score within"),
        (10.0, {"faint": 12.0, "blurred": 15.0, "blobs": 60.0, "noise": 500.0}, False, "blurred images score less"),
        (10.0, {"faint": 40.0, "blurred": 30.0, "blobs": 60.0, "noise": 500.0}, False, "a heavier blur does not"),
    ],
)
def test_the_verdict(floor_hi, distances, separates, fragment):
    ok, reason = verdict(floor_hi, distances)
    assert ok is separates and fragment in reason, reason


def test_a_palette_ruler_fails_and_an_image_ruler_passes():
    """The failure the test exists for: a ruler that sees colours but not shapes scores palette blobs like real
    images. It is reported as unable to separate; a ruler that sees the image passes on the same data."""
    train, test = shapes(600, 1), shapes(300, 2)
    bad = check(palette, train, test, seed=0)
    assert not bad["separates"] and "blobs" in bad["reason"], bad
    assert bad["blobs"] <= 2 * bad["floor_ci95"][1]
    good = check(pixels, train, test, seed=0)
    assert good["separates"], good
    assert good["floor"] <= good["floor_ci95"][1] < good["faint"] < good["blurred"] / 2 < good["blobs"]
    assert good["n"] == 300 and set(good) >= {"floor", "floor_ci95", *LEVELS, "separates", "reason"}
    assert check(pixels, train[:1], test, seed=0) == {"n": 1, "separates": False,
                                                      "reason": "too few real images to test it (n = 1)"}  # fmt: skip


UNSOUND = {"faint": 1.0, "blurred": 1.0, "blobs": 1.0, "noise": 9.0, "separates": False,
           "reason": "blobs score like real images"}  # fmt: skip


def test_the_gate_refuses_what_an_unsound_ruler_ranks_and_auto_takes_a_sound_one():
    candidate = {"fid_classifier": 3.0, "fid_classifier_floor": 6.8, "separates_classifier": False,
                 "soundness_classifier": UNSOUND, "fid_judge": 40.0, "fid_judge_floor": 30.0,
                 "separates_judge": True}  # fmt: skip
    assert auto_metric(candidate) == "fid_judge"  # the classifier cannot separate here: the judge decides
    d = decide(candidate, None, margin=0.02, metric="auto")
    assert d.promote and d.metric == "fid_judge"
    d = decide(candidate, None, margin=0.02, metric="fid_classifier")  # asked for explicitly: refused, with why
    assert not d.promote and "not able to separate" in d.reason and "blobs score like real images" in d.reason
    anyway = decide(candidate, None, margin=0.02, metric="fid_classifier", require_sound=False)
    assert anyway.promote and "promote.require_sound is off" in anyway.reason
    neither = {**candidate, "separates_judge": False, "soundness_judge": UNSOUND}
    assert auto_metric(neither) == "fid_classifier"
    d = decide(neither, {"fid_classifier": 50.0}, margin=0.02, metric="auto")
    assert not d.promote and "fid_classifier is not able to separate on this data" in d.reason
    # metrics from before extractors were tested (no separates_ key): as before
    assert auto_metric({"fid_classifier": 3.0, "fid_judge": 4.0}) == "fid_classifier"
