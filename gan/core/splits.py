"""The prepared data every stage after `prepare` reads: two splits and their summary.

`data/prepared/{train,test}.npz` hold `images` (uint8 N×C×H×W, C = 1 or 3) and `labels` (int64 N; -1 for every
image of an unlabeled source); `summary.json` records the shape, the class names ([] when unlabeled), counts
and checksums. Stages take the image shape and the classes from here, never from constants.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

UNLABELED = -1
LEGACY_IMAGE_SHAPE = (1, 28, 28)  # generator/classifier/reference files written before shapes were recorded


def shape_text(shape: Sequence[int]) -> str:
    """(3, 32, 32) -> '3×32×32' (C×H×W), the way every message writes an image shape."""
    return "×".join(str(int(s)) for s in shape)


def describe_shape(shape: Sequence[int]) -> str:
    """(3, 32, 32) -> '3×32×32 (RGB)'; (1, 28, 28) -> '1×28×28 (grey)'."""
    kind = {1: "grey", 3: "RGB"}.get(int(shape[0]), f"{int(shape[0])} channels")
    return f"{shape_text(shape)} ({kind})"


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8 N×C×H×W
    labels: np.ndarray  # int64 N (UNLABELED when the source has no labels)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]


def load_split(path: str | Path) -> Split:
    """Load a prepared split (no pickle: allow_pickle=False)."""
    with np.load(path, allow_pickle=False) as z:
        return Split(images=z["images"], labels=z["labels"])


@dataclass(frozen=True)
class DataSummary:
    dataset: str
    shape: tuple[int, int, int]  # C, H, W of every image
    classes: tuple[str, ...]  # () when the source has no labels
    raw: dict  # the whole summary.json


def read_summary(path: str | Path) -> DataSummary:
    """data/prepared/summary.json as written by the prepare stage."""
    raw = json.loads(Path(path).read_text())
    return DataSummary(
        dataset=raw["dataset"], shape=tuple(int(s) for s in raw["shape"]), classes=tuple(raw["classes"]), raw=raw
    )
