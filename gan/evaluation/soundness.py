"""Can an extractor tell real images from bad ones on *this* data? The ruler's own test, run where it is made.

A Fréchet distance is only as good as the features it is computed in. A classifier or a judge trained for a few
steps on a small folder can score colourful blobs as "almost real" (below the real-vs-real floor). So every
extractor is tested on the data it was trained for, right after its training: real *train* images stand in for
generated ones and are scored against real *test* images, as evaluation scores samples:

- the floor: the real train images unchanged (with its 95 % bootstrap interval);
- `faint`: a Gaussian blur of radius (sigma) 0.5 px, a softness a person barely sees;
- `blurred`: the same images under a Gaussian blur of radius 1.5 px;
- `blobs`: a radius-4 blur, which leaves palette-coloured blobs — what an undertrained generator makes;
- `noise`: uniform random pixels.

The extractor *separates* when each of them scores beyond the upper end of the floor's interval, all but the faint
blur at least `CLEAR_RATIO` times it, and the blurs rank in order (faint < blurred < blobs). The faint blur catches a
ruler that is too coarse: on 3,390 emoji at 32 px a classifier trained for 26 steps scored it within its floor (and
a generator's blurry emoji below the floor), the default 800-step one 1.7x above it. Noise is held to the first two
rules only: random pixels are a different kind of wrong, off the data's manifold, where a trained classifier's (ReLU)
features can sit closer to the real ones than a blob's do (requiring noise > blobs failed a good classifier whose
blur scored 31x its floor). Only an extractor that separates is used to choose snapshots during training
(`gan.evaluation.probe`) and by the champion gate; where none does, the metrics say "not able to separate" and the
gate refuses
to promote.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
import torch

from gan.evaluation.metrics import bootstrap_fid, fid_from_features

FAINT_RADIUS = 0.5  # px: a softness a person barely sees
BLUR_RADIUS = 1.5  # px: sharpness lost, shapes kept
BLOB_RADIUS = 4.0  # px: shapes lost, the palette kept
LEVELS = ("faint", "blurred", "blobs", "noise")
CLEAR = ("blurred", "blobs", "noise")  # the levels that must score clearly worse than the floor
CLEAR_RATIO = 2.0  # the mild blur must score at least this many times the floor's upper end
MAX_IMAGES = 2000  # per side: enough for a stable floor, cheap on a CPU
BOOTSTRAP_ROUNDS = 50

Extract = Callable[[torch.Tensor], np.ndarray]  # uint8 N×C×H×W -> N×D features


def blur(images_u8: torch.Tensor, radius: float) -> torch.Tensor:
    """Gaussian blur of standard deviation `radius` px (kernel ±3 sigma, reflected edges), uint8 in and out."""
    k = 2 * math.ceil(3 * radius) + 1
    k = min(k, 2 * (min(images_u8.shape[-2:]) // 2) - 1)  # reflect padding needs the kernel inside the image
    import torchvision.transforms.functional as TF  # here: torchvision's import costs seconds (it imports dynamo)

    out = TF.gaussian_blur(images_u8.float(), [k, k], [radius, radius])
    return out.round().clamp(0, 255).to(torch.uint8)


def degraded(images_u8: torch.Tensor, level: str, seed: int = 0) -> torch.Tensor:
    """The images made worse in one of `LEVELS`."""
    if level == "faint":
        return blur(images_u8, FAINT_RADIUS)
    if level == "blurred":
        return blur(images_u8, BLUR_RADIUS)
    if level == "blobs":
        return blur(images_u8, BLOB_RADIUS)
    if level == "noise":
        g = torch.Generator().manual_seed(seed)
        return torch.randint(0, 256, images_u8.shape, generator=g, dtype=torch.uint8)
    raise ValueError(f"unknown level {level!r}: one of {', '.join(LEVELS)}")


def verdict(floor_hi: float, distances: dict[str, float]) -> tuple[bool, str]:
    """(separates, why) from the floor's upper end and the degraded images' distances."""
    scores = ", ".join(f"{level} {distances[level]:.4g}" for level in LEVELS)
    below = [level for level in LEVELS if not distances[level] > floor_hi]
    if below:
        return False, (f"{' and '.join(below)} images score within the real-vs-real floor (upper end {floor_hi:.4g}; "
                       f"{scores}): it cannot tell them from real ones")  # fmt: skip
    unclear = [level for level in CLEAR if distances[level] < CLEAR_RATIO * floor_hi]
    if unclear:
        return False, (f"{' and '.join(unclear)} images score less than {CLEAR_RATIO:g}x the floor's upper end "
                       f"{floor_hi:.4g} ({scores}): not clearly worse")  # fmt: skip
    if not distances["faint"] < distances["blurred"] < distances["blobs"]:
        return False, f"a heavier blur does not score worse ({scores})"
    return True, (f"{scores}: each beyond the floor's upper end {floor_hi:.4g}, all but the faint blur by "
                  f"{CLEAR_RATIO:g}x or more")  # fmt: skip


def check(extract: Extract, train_u8: np.ndarray, test_u8: np.ndarray, seed: int = 0,
          max_images: int = MAX_IMAGES, rounds: int = BOOTSTRAP_ROUNDS) -> dict:  # fmt: skip
    """The soundness record of one extractor on this data: n, the floor and its interval, each level's distance,
    and the verdict ({"separates": bool, "reason": str}). n real train images (a seeded random draw) against as
    many real test images."""
    n = min(max_images, len(train_u8), len(test_u8))
    if n < 2:
        return {"n": n, "separates": False, "reason": f"too few real images to test it (n = {n})"}
    rng = np.random.default_rng(seed)
    side = torch.from_numpy(np.ascontiguousarray(train_u8[np.sort(rng.choice(len(train_u8), n, replace=False))]))
    f_test = extract(torch.from_numpy(np.ascontiguousarray(test_u8[:n])))
    f_real = extract(side)
    floor = fid_from_features(f_real, f_test)
    floor_ci = bootstrap_fid(f_real, f_test, rounds, seed) if rounds else (floor, floor)
    distances = {level: fid_from_features(extract(degraded(side, level, seed)), f_test) for level in LEVELS}
    separates, reason = verdict(max(floor, floor_ci[1]), distances)
    return {
        "n": n,
        "floor": round(floor, 6),
        "floor_ci95": [round(v, 6) for v in floor_ci],
        **{level: round(v, 6) for level, v in distances.items()},
        "separates": separates,
        "reason": reason,
    }


def recorded(weights_path) -> dict | None:
    """The soundness record an extractor's weights file carries (the classifier and judge stages write it), or None
    for a file made before extractors were tested."""
    blob = torch.load(weights_path, map_location="cpu", weights_only=True)
    text = blob.get("soundness") if isinstance(blob, dict) else None
    return json.loads(text) if text else None
