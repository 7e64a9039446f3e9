"""uint8 image tensors to PNG files, written atomically: one image, or a grid of them.

The one place the project turns images into PNGs (the trainer's epoch grids, export's grid and PNGs, `gan sample`).
Images are uint8 C×H×W (or N×C×H×W for a grid), C = 1 (grey: a grey PNG, or RGB where asked) or 3 (RGB); a float
image from a generator is first made uint8 with `gan.core.tensors.to_uint8`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gan.core import atomic

GRID_PADDING = 2  # black pixels between (and around) the images of a grid
PNG_CHANNELS = (1, 3)  # grey or RGB


def png_array(image: torch.Tensor) -> np.ndarray:
    """uint8 C×H×W -> what PIL saves as a grey (C = 1: H×W) or RGB (C = 3: H×W×3) PNG."""
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] not in PNG_CHANNELS:
        raise ValueError(f"a PNG is made of a uint8 C×H×W image with C in {PNG_CHANNELS}, "
                         f"got {image.dtype} {tuple(image.shape)}")  # fmt: skip
    image = image.cpu()
    return image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).contiguous().numpy()


def grid(images: torch.Tensor, nrow: int | None = None, padding: int = GRID_PADDING) -> torch.Tensor:
    """uint8 N×C×H×W -> one uint8 C×H'×W' grid (torchvision's make_grid, `nrow` images a row, default
    ceil(sqrt(N)), `padding` black pixels between and around); grey stays one channel."""
    from torchvision.utils import make_grid  # here: torchvision's import costs seconds (it imports dynamo)

    nrow = nrow or math.ceil(math.sqrt(len(images)))
    g = make_grid(images.cpu(), nrow=nrow, padding=padding)
    return g[: images.shape[1]]  # make_grid repeats a grey channel three times


def write_png(image: torch.Tensor, path: str | Path, rgb: bool = False) -> None:
    """One uint8 C×H×W image to `path`, atomically; a grey image as RGB if `rgb` (as torchvision's `save_image`)."""
    array = png_array(image.expand(3, -1, -1) if rgb and image.dim() == 3 and image.shape[0] == 1 else image)
    with atomic.atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def write_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, rgb: bool = False) -> None:
    """uint8 N×C×H×W images as one grid PNG (`grid`; RGB even for grey images if `rgb`), atomically."""
    write_png(grid(images, nrow), path, rgb=rgb)
