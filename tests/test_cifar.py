import ast
import tarfile
from pathlib import Path

import numpy as np
import pytest

from gan.data import cifar
from gan.data.archives import extract_archive
from gan.data.cifar import CIFAR10_CLASSES, CifarError, check_meta, read_cifar10_batch, read_cifar10_split

PER_BATCH = 3
BATCHES = ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"]
FILES = [*BATCHES, "test_batch.bin"]  # record k overall (train then test) has label k % 10
MARK = (2, 5)  # (row, col) of a pixel set to 255 in the red plane only


def record(k: int) -> bytes:
    """Record k, built byte by byte from the format's description (not with numpy's reshape)."""
    red = [k] * 1024
    red[MARK[0] * 32 + MARK[1]] = 255
    return bytes([k % 10]) + bytes(red) + bytes([100 + k] * 1024) + bytes([200 + k] * 1024)


def build_archive(tmp_path: Path, skip: str | None = None) -> Path:
    """A cifar-10-binary.tar.gz in the real layout, PER_BATCH records per batch file."""
    src = tmp_path / "src" / "cifar-10-batches-bin"
    src.mkdir(parents=True)
    for b, name in enumerate(FILES):
        if name != skip:
            (src / name).write_bytes(b"".join(record(b * PER_BATCH + i) for i in range(PER_BATCH)))
    (src / "batches.meta.txt").write_text("\n".join(CIFAR10_CLASSES) + "\n\n")  # the real one ends in blank lines
    (src / "readme.html").write_text("<html>CIFAR-10</html>\n")
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-bin")
    return archive


def extracted(tmp_path: Path, skip: str | None = None) -> Path:
    files = extract_archive(build_archive(tmp_path, skip), tmp_path / "data")
    root = tmp_path / "data" / "cifar-10-batches-bin"
    assert root / "batches.meta.txt" in files and root / "readme.html" in files
    return root


@pytest.fixture
def batches_dir(tmp_path):
    return extracted(tmp_path)


def test_shapes_and_dtypes(batches_dir):
    images, labels = read_cifar10_split(batches_dir, "train")
    assert images.shape == (5 * PER_BATCH, 3, 32, 32) and images.dtype == np.uint8
    assert labels.shape == (5 * PER_BATCH,) and labels.dtype == np.int64
    assert images.flags.c_contiguous and images.flags.writeable


def test_channel_order_is_rgb(batches_dir):
    images, _ = read_cifar10_batch(batches_dir / "data_batch_2.bin")
    for i in range(PER_BATCH):
        k = PER_BATCH + i
        assert images[i, :, 0, 0].tolist() == [k, 100 + k, 200 + k]
        assert images[i, :, 31, 31].tolist() == [k, 100 + k, 200 + k]


def test_planes_are_row_major(batches_dir):
    images, _ = read_cifar10_batch(batches_dir / "data_batch_1.bin")
    red = images[:, 0]
    assert (red[:, MARK[0], MARK[1]] == 255).all()
    assert (red[:, MARK[1], MARK[0]] != 255).all()  # transposed (column-major) position is not marked
    assert ((red == 255).sum(axis=(1, 2)) == 1).all()
    assert not (images[:, 1:] == 255).any()  # the mark is in the red plane only


def test_train_is_the_five_batches_in_order(batches_dir):
    images, labels = read_cifar10_split(batches_dir, "train")
    ks = np.arange(5 * PER_BATCH)
    np.testing.assert_array_equal(images[:, 0, 0, 0], ks)
    np.testing.assert_array_equal(labels, ks % 10)
    for b, name in enumerate(BATCHES):
        im, lb = read_cifar10_batch(batches_dir / name)
        np.testing.assert_array_equal(images[b * PER_BATCH : (b + 1) * PER_BATCH], im)
        np.testing.assert_array_equal(labels[b * PER_BATCH : (b + 1) * PER_BATCH], lb)


def test_test_split_is_test_batch_only(batches_dir):
    images, labels = read_cifar10_split(batches_dir, "test")
    ks = 5 * PER_BATCH + np.arange(PER_BATCH)
    assert images.shape == (PER_BATCH, 3, 32, 32)
    np.testing.assert_array_equal(images[:, 2, 7, 7], 200 + ks)
    np.testing.assert_array_equal(labels, ks % 10)


def test_wrong_size_is_named(tmp_path):
    f = tmp_path / "data_batch_1.bin"
    f.write_bytes(record(0) + record(1) + b"\x00")
    with pytest.raises(CifarError, match=r"data_batch_1\.bin: 6147 bytes is not a whole number of 3073-byte"):
        read_cifar10_batch(f)
    f.write_bytes((record(0) + record(1))[:-1])
    with pytest.raises(CifarError, match=r"data_batch_1\.bin: .*1 records and 3072 bytes left over"):
        read_cifar10_batch(f)


def test_label_out_of_range_names_the_record(tmp_path):
    f = tmp_path / "test_batch.bin"
    f.write_bytes(record(9) + b"\x0a" + record(0)[1:] + record(3))
    with pytest.raises(CifarError, match=r"test_batch\.bin: record 1 has label 10, but CIFAR-10 labels are 0-9"):
        read_cifar10_batch(f)
    f.write_bytes(record(9) + record(3))
    assert read_cifar10_batch(f)[1].tolist() == [9, 3]


def test_empty_file_is_named(tmp_path):
    f = tmp_path / "data_batch_4.bin"
    f.write_bytes(b"")
    with pytest.raises(CifarError, match=r"data_batch_4\.bin: empty file"):
        read_cifar10_batch(f)


def test_missing_batch_is_named(tmp_path):
    root = extracted(tmp_path, skip="data_batch_3.bin")
    with pytest.raises(CifarError, match=r"train split is missing data_batch_3\.bin; re-extract"):
        read_cifar10_split(root, "train")
    assert read_cifar10_split(root, "test")[0].shape == (PER_BATCH, 3, 32, 32)
    with pytest.raises(CifarError, match=r"data_batch_3\.bin: no such CIFAR-10 batch file"):
        read_cifar10_batch(root / "data_batch_3.bin")


def test_parent_folder_gets_a_hint(batches_dir):
    with pytest.raises(CifarError, match=r"pass the folder .*cifar-10-batches-bin"):
        read_cifar10_split(batches_dir.parent, "train")


def test_unknown_split(batches_dir):
    with pytest.raises(CifarError, match=r"unknown CIFAR-10 split 'val'"):
        read_cifar10_split(batches_dir, "val")  # type: ignore[arg-type]


def test_meta_names(batches_dir):
    check_meta(batches_dir)  # the real file's trailing blank lines are accepted
    (batches_dir / "batches.meta.txt").write_text("\n".join(["apple", *CIFAR10_CLASSES[1:]]) + "\n")
    with pytest.raises(CifarError, match=r"batches\.meta\.txt: class names \['apple'"):
        check_meta(batches_dir)
    with pytest.raises(CifarError, match=r"batches\.meta\.txt"):
        read_cifar10_split(batches_dir, "test")
    (batches_dir / "batches.meta.txt").unlink()
    check_meta(batches_dir)  # absent: nothing to check
    assert read_cifar10_split(batches_dir, "test")[1].tolist() == [5, 6, 7]


def test_no_pickle_anywhere():
    tree = ast.parse(Path(cifar.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not imported & {"pickle", "cPickle", "_pickle", "dill", "joblib", "torch"}
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr in ("load", "loads")]
