"""Prepare stage: decode IDX files into one compact array file per split.

`data/prepared/{train,test}.npz` hold `images` (uint8, N×1×28×28) and
`labels` (int64); `summary.json` records counts per class and checksums, so
downstream stages (and readers) know exactly which data version they used.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gan import atomic
from gan.datasets import SPLIT_FILES, DatasetSpec
from gan.idx import IDXError, read_idx


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8 N×1×H×W
    labels: np.ndarray  # int64 N


def load_split(path: str | Path) -> Split:
    """Load a prepared split (no pickle: allow_pickle=False)."""
    with np.load(path, allow_pickle=False) as z:
        return Split(images=z["images"], labels=z["labels"])


def _decode(raw_dir: Path, split: str, limit: int) -> Split:
    img_name, lbl_name = SPLIT_FILES[split]
    images = read_idx(raw_dir / img_name)
    labels = read_idx(raw_dir / lbl_name)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise IDXError(f"{raw_dir / img_name}: expected uint8 images N×H×W, got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise IDXError(
            f"{raw_dir / lbl_name}: expected {len(images)} labels to match {img_name}, got shape {labels.shape}"
        )
    if limit:
        images, labels = images[:limit], labels[:limit]
    return Split(images=np.ascontiguousarray(images[:, None]), labels=labels.astype(np.int64))


def prepare(
    spec: DatasetSpec, raw_dir: str | Path, out_dir: str | Path, limit_train: int = 0, limit_test: int = 0
) -> dict:
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    summary: dict = {"dataset": spec.name, "classes": list(spec.classes), "splits": {}}
    for split, limit in (("train", limit_train), ("test", limit_test)):
        data = _decode(raw_dir, split, limit)
        if data.labels.size and (data.labels.min() < 0 or data.labels.max() >= len(spec.classes)):
            raise IDXError(f"{raw_dir}: {split} labels outside 0..{len(spec.classes) - 1}")
        with atomic.atomic_path(out_dir / f"{split}.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, images=data.images, labels=data.labels)
        counts = np.bincount(data.labels, minlength=len(spec.classes))
        summary["splits"][split] = {
            "n": int(len(data.labels)),
            "shape": list(data.images.shape[1:]),
            "counts_per_class": {c: int(n) for c, n in zip(spec.classes, counts, strict=True)},
            "sha256_images": hashlib.sha256(data.images.tobytes()).hexdigest(),
            "sha256_labels": hashlib.sha256(data.labels.tobytes()).hexdigest(),
        }
    atomic.write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
