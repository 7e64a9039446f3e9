"""Pictures people look at rather than read: the closest generated/training pairs and samples by class.

Both are plain PNGs (RGB for RGB data, grey repeated to RGB) built from uint8 N×C×H×W images, so they render
anywhere — in `data/samples/` and inlined in the Prefect report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from gan import atomic

GAP = 2  # px between tiles
PAIR_GAP = 8  # px between one pair and the next


def _rgb(images_u8: np.ndarray) -> np.ndarray:
    """uint8 N×C×H×W (C = 1 or 3) -> uint8 N×H×W×3."""
    x = np.asarray(images_u8)
    x = np.repeat(x, 3, axis=1) if x.shape[1] == 1 else x
    return x.transpose(0, 2, 3, 1)


def _upscale(side: int) -> int:
    """Small images (28 px) are drawn 2× larger so a person can compare them."""
    return max(1, 64 // side)


def _save(img: Image.Image, path: str | Path) -> None:
    with atomic.atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def closest_pairs_picture(generated_u8: np.ndarray, train_u8: np.ndarray, distances: np.ndarray,
                          path: str | Path) -> None:  # fmt: skip
    """One row per pair: the generated image, then its nearest training image; the feature distance beside them."""
    g, t = _rgb(generated_u8), _rgb(train_u8)
    n, h, w, _ = g.shape
    s = _upscale(max(h, w))
    th, tw = h * s, w * s
    label_w = 70
    canvas = Image.new("RGB", (2 * tw + GAP + label_w + 2 * GAP, max(n, 1) * (th + PAIR_GAP) + 16), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((GAP, 2), "generated | nearest training image", fill="black")
    for i in range(n):
        y = 16 + i * (th + PAIR_GAP)
        canvas.paste(Image.fromarray(g[i]).resize((tw, th), Image.NEAREST), (GAP, y))
        canvas.paste(Image.fromarray(t[i]).resize((tw, th), Image.NEAREST), (GAP + tw + GAP, y))
        draw.text((2 * tw + 3 * GAP + 4, y + th // 2 - 6), f"d = {float(distances[i]):.3g}", fill="black")
    _save(canvas, path)


def class_grid(images_u8: torch.Tensor, predicted: np.ndarray, classes: list[str], per_class: int,
               path: str | Path) -> list[int]:  # fmt: skip
    """One row per class: the first `per_class` images the classifier assigns to it (blank where fewer), the class
    name on the left. Returns how many images each row holds."""
    x = _rgb(images_u8.numpy() if isinstance(images_u8, torch.Tensor) else images_u8)
    _, h, w, _ = x.shape
    s = _upscale(max(h, w))
    th, tw = h * s, w * s
    label_w = 8 + 7 * max((len(c) for c in classes), default=4)
    canvas = Image.new("RGB", (label_w + per_class * (tw + GAP), len(classes) * (th + GAP)), "white")
    draw = ImageDraw.Draw(canvas)
    counts = []
    for row, name in enumerate(classes):
        idx = np.flatnonzero(predicted == row)[:per_class]
        counts.append(len(idx))
        y = row * (th + GAP)
        draw.text((4, y + th // 2 - 6), name, fill="black")
        for col, i in enumerate(idx):
            canvas.paste(Image.fromarray(x[i]).resize((tw, th), Image.NEAREST), (label_w + col * (tw + GAP), y))
    _save(canvas, path)
    return counts
