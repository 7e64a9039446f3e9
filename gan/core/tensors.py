"""Device choice, image scaling, image shapes and batch order shared by every stage.

Kept apart from train.py so that editing the GAN loop does not invalidate the
domain classifier's DVC stage.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gan.core.config import ConfigError
from gan.core.errors import PipelineError
from gan.core.splits import shape_text


class ImageShapeError(PipelineError, ValueError):
    """Images whose shape is not the one expected (the prepared data's); the message says both."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device = {name!r}, but CUDA is not available here; use 'auto' or 'cpu'")
    return dev


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range of G's tanh."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> [0, 255] uint8 (rounded): the inverse of from_uint8."""
    return ((x + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """Batch order of an epoch, a pure function of (seed, epoch): resume needs no RNG state for it."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def check_image_shape(images: torch.Tensor, expected: Sequence[int], what: str) -> None:
    """Refuse N×C×H×W `images` whose C×H×W is not `expected`, saying what was expected and what came."""
    got = tuple(int(s) for s in images.shape[1:])
    if images.ndim != 4 or got != tuple(int(s) for s in expected):
        raise ImageShapeError(f"expected {shape_text(expected)} images ({what}), got {shape_text(got)}")
