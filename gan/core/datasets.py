"""Dataset registry: where each built-in dataset lives, what its files must hash to, its classes and shape.

Checksums are, where we know them, SHA-256 of the *decompressed* bytes, so a re-gzipped copy (Debian's
`dataset-fashion-mnist`) verifies exactly like the upstream file. For KMNIST and CIFAR-10 the only published
checksums are MD5s of the compressed files as served (torchvision's and the CIFAR page's); those are verified
on the bytes as downloaded (`Checksum.of == "download"`). The stored file is always decompressed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Checksum:
    hexdigest: str
    algorithm: Literal["sha256", "md5"] = "sha256"
    of: Literal["decompressed", "download"] = "decompressed"  # the stored bytes, or the bytes as served


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    mirrors: tuple[str, ...]  # base URLs; a file's name is appended
    files: dict[str, Checksum | str]  # remote file name -> checksum (a str: SHA-256 of the decompressed bytes)
    classes: tuple[str, ...]
    shape: tuple[int, int, int] = (1, 28, 28)  # native C, H, W
    format: Literal["idx", "cifar10-binary"] = "idx"
    checksums: dict[str, Checksum] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        sums = {k: v if isinstance(v, Checksum) else Checksum(v) for k, v in self.files.items()}
        object.__setattr__(self, "checksums", sums)

    @staticmethod
    def local_name(remote: str) -> str:
        """We store decompressed files: `x-idx3-ubyte.gz` -> `x-idx3-ubyte`, `x.tar.gz` -> `x.tar`."""
        return remote[:-3] if remote.endswith(".gz") else remote


SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"

DATASETS: dict[str, DatasetSpec] = {
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        mirrors=(
            "https://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            f"file://{DEBIAN_FASHION_MNIST}/",
        ),
        files={
            "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    ),
    "mnist": DatasetSpec(
        name="mnist",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        files={
            "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        classes=tuple(str(d) for d in range(10)),
    ),
    "kmnist": DatasetSpec(
        name="kmnist",
        mirrors=(
            "https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
            "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        ),
        # SHA-256 of the decompressed files cannot be computed offline; torchvision's MD5s of the .gz are verified.
        files={
            "train-images-idx3-ubyte.gz": Checksum("bdb82020997e1d708af4cf47b453dcf7", "md5", "download"),
            "train-labels-idx1-ubyte.gz": Checksum("e144d726b3acfaa3e44228e80efcd344", "md5", "download"),
            "t10k-images-idx3-ubyte.gz": Checksum("5c965bf0a639b31b8f53240b1b52f4d7", "md5", "download"),
            "t10k-labels-idx1-ubyte.gz": Checksum("7320c461ea6c1c855c0b718fb2a4b134", "md5", "download"),
        },
        classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    ),
    "cifar10": DatasetSpec(
        name="cifar10",
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        # The CIFAR page's MD5 of the archive as served (also torchvision-free tools' pin); stored as .tar.
        files={"cifar-10-binary.tar.gz": Checksum("c32a1d4ab5d03f1284b67883e8d87530", "md5", "download")},
        classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        shape=(3, 32, 32),
        format="cifar10-binary",
    ),
}


def get_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"data.dataset = {name!r}: unknown dataset (known: {', '.join(DATASETS)})") from None
