import gzip
import struct

import numpy as np
import pytest

from gan.data.idx import IDXError, parse_idx, read_idx

from .conftest import DEBIAN_FMNIST, require_debian_fashion_mnist


def idx_bytes(arr: np.ndarray) -> bytes:
    return struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def test_roundtrip_images_and_labels():
    imgs = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    out = parse_idx(idx_bytes(imgs))
    assert out.shape == (2, 3, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, imgs)
    labels = np.array([3, 1, 4], dtype=np.uint8)
    np.testing.assert_array_equal(parse_idx(idx_bytes(labels)), labels)


def test_big_endian_int32():
    data = struct.pack(">HBB", 0, 0x0C, 1) + struct.pack(">I", 2) + struct.pack(">ii", -5, 70000)
    np.testing.assert_array_equal(parse_idx(data), [-5, 70000])


@pytest.mark.parametrize(
    "bad", [b"\x1f\x8b\x08\x00" + b"\x00" * 20, b"\x00\x00\x07\x01" + b"\x00" * 8, b"\x00\x00\x08\x00"]
)
def test_wrong_magic_is_named(bad, tmp_path):
    f = tmp_path / "bad-idx3-ubyte"
    f.write_bytes(bad)
    with pytest.raises(IDXError, match=r"bad-idx3-ubyte: bad magic number"):
        read_idx(f)


def test_wrong_length_is_named(tmp_path):
    f = tmp_path / "short-idx3-ubyte"
    f.write_bytes(idx_bytes(np.zeros((5, 28, 28), np.uint8))[:-10])
    with pytest.raises(IDXError, match=r"short-idx3-ubyte: wrong length .* shape \(5, 28, 28\)"):
        read_idx(f)
    f.write_bytes(idx_bytes(np.zeros((5, 28, 28), np.uint8)) + b"x")
    with pytest.raises(IDXError, match="wrong length"):
        read_idx(f)


def test_real_fashion_mnist_test_split():
    require_debian_fashion_mnist()
    data = gzip.decompress((DEBIAN_FMNIST / "t10k-labels-idx1-ubyte.gz").read_bytes())
    labels = parse_idx(data)
    assert labels.shape == (10000,)
    assert np.bincount(labels).tolist() == [1000] * 10
