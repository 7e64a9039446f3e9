from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")

os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def require_debian_fashion_mnist() -> None:
    """Real-data tests need the Debian package; CI (GAN_REQUIRE_REAL_DATA=1) fails instead of skipping."""
    if (DEBIAN_FMNIST / "train-images-idx3-ubyte.gz").exists():
        return
    msg = f"{DEBIAN_FMNIST} missing: apt-get install -y dataset-fashion-mnist"
    if os.environ.get("GAN_REQUIRE_REAL_DATA") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture
def tiny_split(tmp_path: Path) -> Path:
    """A synthetic prepared split: 256 images of 10 'classes' (class k = a bright band at row 2k)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 256).astype(np.int64)
    images = rng.integers(0, 40, (256, 1, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        images[i, 0, 2 * k + 3 : 2 * k + 6, 4:24] = 220
    path = tmp_path / "train.npz"
    np.savez(path, images=images, labels=labels)
    return path
