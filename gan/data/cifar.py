"""CIFAR-10 reader for the binary version (cifar-10-binary.tar.gz), with strict validation and no pickle.

The dataset's Python version is a set of pickles, and unpickling a downloaded file can run any code in it;
the binary version holds the same data as plain records, so it is the only one read here. Its layout, from
https://www.cs.toronto.edu/~kriz/cifar.html, once extracted:

    cifar-10-batches-bin/
        data_batch_1.bin .. data_batch_5.bin   10000 records each (the train split, in this order)
        test_batch.bin                          10000 records (the test split)
        batches.meta.txt                        the 10 class names, one per line
        readme.html

Each record is 1 label byte (0-9) then 3072 pixel bytes: the 1024 red, then 1024 green, then 1024 blue
values of a 32x32 image, each plane row-major; so a record's pixels reshape to 3x32x32 (C, H, W) directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from gan.core.errors import PipelineError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CHANNELS, HEIGHT, WIDTH = 3, 32, 32
RECORD_BYTES = 1 + CHANNELS * HEIGHT * WIDTH  # 3073
BATCHES_DIR_NAME = "cifar-10-batches-bin"
META_FILE = "batches.meta.txt"
SPLIT_FILES: dict[str, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    "test": ("test_batch.bin",),
}
_NOT_CIFAR10 = "a corrupted file, or not a CIFAR-10 binary batch (CIFAR-100's binary records have 2 label bytes)"


class CifarError(PipelineError, ValueError):
    """A CIFAR-10 file or folder is malformed or incomplete; the message names the file and what is wrong."""


def parse_cifar10_batch(data: bytes, name: str = "<bytes>") -> tuple[np.ndarray, np.ndarray]:
    """Decode the records of one batch file: (images uint8 N x 3 x 32 x 32, labels int64 N)."""
    if not data:
        raise CifarError(
            f"{name}: empty file (0 bytes); a CIFAR-10 batch holds records of {RECORD_BYTES} bytes "
            "(1 label + 3072 pixels): re-extract cifar-10-binary.tar.gz"
        )
    count, extra = divmod(len(data), RECORD_BYTES)
    if extra:
        raise CifarError(
            f"{name}: {len(data)} bytes is not a whole number of {RECORD_BYTES}-byte records ({count} records and "
            f"{extra} bytes left over); the file is truncated, or {_NOT_CIFAR10}"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(count, RECORD_BYTES)
    bad = np.flatnonzero(records[:, 0] >= len(CIFAR10_CLASSES))
    if bad.size:
        first = int(bad[0])
        raise CifarError(
            f"{name}: record {first} has label {records[first, 0]}, but CIFAR-10 labels are 0-9 "
            f"({bad.size} of {count} records out of range); {_NOT_CIFAR10}"
        )
    labels = records[:, 0].astype(np.int64)
    images = np.ascontiguousarray(records[:, 1:].reshape(count, CHANNELS, HEIGHT, WIDTH))
    return images, labels


def read_cifar10_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch file (e.g. data_batch_1.bin): (images uint8 N x 3 x 32 x 32, labels int64 N)."""
    path = Path(path)
    if not path.is_file():
        raise CifarError(f"{path}: no such CIFAR-10 batch file; re-extract cifar-10-binary.tar.gz")
    return parse_cifar10_batch(path.read_bytes(), str(path))


def check_meta(batches_dir: str | Path) -> None:
    """If batches.meta.txt is present, require its class names (blank lines ignored) to be CIFAR10_CLASSES."""
    meta = Path(batches_dir) / META_FILE
    if not meta.is_file():
        return
    names = tuple(line.strip() for line in meta.read_text(encoding="utf-8", errors="replace").splitlines())
    names = tuple(n for n in names if n)
    if names != CIFAR10_CLASSES:
        raise CifarError(
            f"{meta}: class names {list(names)} are not CIFAR-10's {list(CIFAR10_CLASSES)}; "
            "is this folder really cifar-10-batches-bin (and not CIFAR-100 or another dataset)?"
        )


def read_cifar10_split(batches_dir: str | Path, split: Literal["train", "test"]) -> tuple[np.ndarray, np.ndarray]:
    """Read a split from the extracted `cifar-10-batches-bin` folder: train is data_batch_1..5 in order."""
    batches_dir = Path(batches_dir)
    if split not in SPLIT_FILES:
        raise CifarError(f"unknown CIFAR-10 split {split!r}; expected one of {sorted(SPLIT_FILES)}")
    paths = [batches_dir / name for name in SPLIT_FILES[split]]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise CifarError(f"{batches_dir}: CIFAR-10 {split} split is missing {', '.join(missing)}; {_hint(batches_dir)}")
    check_meta(batches_dir)
    parts = [read_cifar10_batch(p) for p in paths]
    return np.concatenate([im for im, _ in parts]), np.concatenate([lb for _, lb in parts])


def _hint(batches_dir: Path) -> str:
    if (batches_dir / BATCHES_DIR_NAME).is_dir():
        return f"pass the folder {batches_dir / BATCHES_DIR_NAME} that the archive extracts to"
    if (batches_dir / "data_batch_1").is_file():
        return "this looks like the Python (pickle) version, which is not read; use cifar-10-binary.tar.gz"
    return "re-extract cifar-10-binary.tar.gz (the folder must hold data_batch_1..5.bin and test_batch.bin)"
