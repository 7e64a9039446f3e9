"""gan.data.prepare: every source kind to the same prepared format; bad files listed; splits stable; decoding cached."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gan.core.config import DataConfig
from gan.core.errors import PipelineError
from gan.core.splits import UNLABELED, load_split, read_summary
from gan.data import imagefolder
from gan.data.idx import read_idx
from gan.data.imagedecode import Target, decode_image
from gan.data.prepare import SUMMARY_KEYS, PrepareError, prepare

RNG = np.random.default_rng(0)


# ---- builders: raw data in the real on-disk formats


def write_idx(path: Path, arr: np.ndarray) -> None:
    """The IDX format: 0x0000, type code 0x08 (uint8), ndim, then each dimension as a big-endian uint32."""
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


def idx_raw(root: Path, n_train: int = 40, n_test: int = 12) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte", RNG.integers(0, 256, (n, 28, 28)))
        write_idx(root / f"{prefix}-labels-idx1-ubyte", RNG.integers(0, 10, n))
    return root


def cifar_raw(root: Path, per_batch: int = 3) -> tuple[Path, np.ndarray, np.ndarray]:
    """cifar-10-batches-bin as the archive extracts: records of 1 label byte + 3072 pixel bytes (R, G, B planes)."""
    batches = root / "cifar-10-batches-bin"
    batches.mkdir(parents=True)
    records = RNG.integers(0, 256, (6, per_batch, 3073)).astype(np.uint8)
    records[..., 0] = RNG.integers(0, 10, (6, per_batch))
    for i, name in enumerate([f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]):
        (batches / name).write_bytes(records[i].tobytes())
    (batches / "batches.meta.txt").write_text(
        "\n".join(("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")) + "\n"
    )
    return root, records[..., 1:].reshape(6, per_batch, 3, 32, 32), records[..., 0].astype(np.int64)


def noise(size: tuple[int, int] = (12, 10), mode: str = "RGB", seed: int | None = None) -> Image.Image:
    rng = np.random.default_rng(seed) if seed is not None else RNG
    channels = {"L": 1, "RGB": 3, "RGBA": 4, "LA": 2}[mode]
    arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(arr[..., 0] if channels == 1 else arr, mode)


def grey_folder(root: Path, n: int, start: int = 0) -> Path:
    """n distinct grey PNGs named img0000.png, ... (each its own noise: no duplicates)."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        noise((9, 9), "L", seed=1000 + i).save(root / f"img{i:04d}.png")
    return root


def run(raw: Path, tmp: Path, workers: int = 1, out: str = "out", **settings) -> dict:
    settings.setdefault("dataset", "folder")
    if settings["dataset"] == "folder":
        settings.setdefault("source", str(raw))
    return prepare(DataConfig(**settings), raw, tmp / out, tmp / "cache", workers=workers)


def skipped(out: Path) -> dict[str, tuple[str, str]]:
    with open(out / "skipped.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(set(r) == {"path", "reason", "detail"} for r in rows)
    return {r["path"]: (r["reason"], r["detail"]) for r in rows}


def rows(out: Path) -> dict[bytes, str]:
    """Each prepared image's bytes -> the split it is in."""
    return {im.tobytes(): s for s in ("train", "test") for im in load_split(out / f"{s}.npz").images}


# ---- built-in datasets


def test_idx_at_native_shape_is_byte_identical_to_the_files(tmp_path: Path) -> None:
    raw = idx_raw(tmp_path / "raw")
    summary = run(raw, tmp_path, dataset="fashion-mnist", limit_train=30)
    for split, prefix, limit in (("train", "train", 30), ("test", "t10k", None)):
        got = load_split(tmp_path / "out" / f"{split}.npz")
        images = read_idx(raw / f"{prefix}-images-idx3-ubyte")[:limit, None]
        labels = read_idx(raw / f"{prefix}-labels-idx1-ubyte")[:limit].astype(np.int64)
        assert got.images.dtype == np.uint8 and np.array_equal(got.images, images)
        assert got.labels.dtype == np.int64 and np.array_equal(got.labels, labels)
        assert summary["splits"][split]["n"] == len(labels)
        assert sum(summary["splits"][split]["counts_per_class"].values()) == len(labels)
    assert set(SUMMARY_KEYS) <= set(summary) and summary["label_source"] == "builtin"
    assert summary["shape"] == [1, 28, 28] and summary["classes"][0] == "T-shirt/top"
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk == {k: v for k, v in summary.items() if k != "run"}  # run statistics stay out of the file
    assert read_summary(tmp_path / "out" / "summary.json").shape == (1, 28, 28)
    assert skipped(tmp_path / "out") == {}


def test_idx_converted_to_another_size_and_to_rgb(tmp_path: Path) -> None:
    raw = idx_raw(tmp_path / "raw", 6, 3)
    summary = run(raw, tmp_path, dataset="mnist", resolution=32, channels=3, resize_filter="bicubic")
    got = load_split(tmp_path / "out" / "train.npz").images
    assert got.shape == (6, 3, 32, 32) and summary["shape"] == [3, 32, 32]
    for img, row in zip(read_idx(raw / "train-images-idx3-ubyte"), got, strict=True):
        expected = Image.fromarray(img, "L").convert("RGB").resize((32, 32), Image.Resampling.BICUBIC)
        assert np.array_equal(row, np.asarray(expected).transpose(2, 0, 1))


def test_cifar_native_converted_and_grey(tmp_path: Path) -> None:
    raw, images, labels = cifar_raw(tmp_path / "raw")
    run(raw, tmp_path, dataset="cifar10")
    train, test = load_split(tmp_path / "out" / "train.npz"), load_split(tmp_path / "out" / "test.npz")
    assert np.array_equal(train.images, images[:5].reshape(-1, 3, 32, 32))  # data_batch_1..5 in order
    assert np.array_equal(train.labels, labels[:5].reshape(-1)) and np.array_equal(test.images, images[5])
    run(raw, tmp_path, out="big", dataset="cifar10", resolution=64, channels=1, limit_test=2)
    big = load_split(tmp_path / "big" / "test.npz").images
    assert big.shape == (2, 1, 64, 64)
    expected = Image.fromarray(images[5, 0].transpose(1, 2, 0), "RGB").convert("L").resize((64, 64), Image.LANCZOS)
    assert np.array_equal(big[0, 0], np.asarray(expected))


def test_missing_builtin_files_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(PrepareError, match="train-images-idx3-ubyte.*download"):
        run(tmp_path / "nothing", tmp_path, dataset="kmnist")


# ---- folders: formats, modes, orientation


def test_folder_of_every_format_and_mode(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    root.mkdir()
    cmyk = noise().convert("CMYK")
    i16 = Image.fromarray(RNG.integers(0, 65536, (10, 12), dtype=np.uint16))
    images = {
        "a.png": noise(), "b.jpg": noise(), "c.webp": noise(), "d.bmp": noise(), "e.gif": noise().convert("P"),
        "f.tiff": cmyk, "g.ppm": noise(), "h_l.png": noise(mode="L"), "i_la.png": noise(mode="LA"),
        "j_rgba.png": noise(mode="RGBA"), "k_i16.png": i16, "l_1.png": noise().convert("1"),
        "m_p.png": noise().convert("P"),
    }  # fmt: skip
    for name, im in images.items():
        im.save(root / name, **({"lossless": True} if name.endswith(".webp") else {}))
    (root / "notes.txt").write_text("not an image")
    summary = run(root, tmp_path, resolution=16, channels=3, crop="pad", background=[10, 200, 30],
                  max_bad_fraction=0, test_fraction=0.5)  # fmt: skip
    target = Target(16, 3, "pad", "lanczos", (10, 200, 30))
    got = rows(tmp_path / "out")
    assert len(got) == len(images) == summary["counts"]["decoded"] == summary["counts"]["files"]
    for name in images:  # each is the file decoded on its own, so every mode went through the same steps
        assert decode_image(root / name, target).tobytes() in got, name
    assert skipped(tmp_path / "out") == {"notes.txt": ("ignored", skipped(tmp_path / "out")["notes.txt"][1])}
    assert summary["counts"]["ignored"] == 1 and summary["counts"]["bad"] == 0


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    root = grey_folder(tmp_path / "raw", 9)
    arr = np.zeros((8, 8, 3), np.uint8)
    arr[:, :4] = (255, 0, 0)  # left half red, right half blue
    arr[:, 4:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 3  # orientation: rotated 180°, so it is shown blue | red
    Image.fromarray(arr).save(root / "photo.png", exif=exif)
    run(root, tmp_path, resolution=8, channels=3, resize_filter="nearest", test_fraction=0.5)
    decoded = [np.frombuffer(b, np.uint8).reshape(3, 8, 8) for b in rows(tmp_path / "out")]
    (img,) = [im for im in decoded if (im[0] != im[1]).any()]  # the only colour image
    assert img[:, 4, 0].tolist() == [0, 0, 255] and img[:, 4, 7].tolist() == [255, 0, 0]


# ---- bad files


def _bad_files(root: Path) -> None:
    (root / "empty.png").write_bytes(b"")
    png = (root / "img0000.png").read_bytes()
    (root / "cut.png").write_bytes(png[: len(png) // 2])
    (root / "text.jpg").write_bytes(b"hello, I am not a JPEG" * 10)
    noise((40, 40), seed=7).save(root / "huge.png")  # 1600 pixels: a bomb once MAX_IMAGE_PIXELS is lowered
    (root / "gone.png").symlink_to(root / "missing-target.png")  # unreadable (chmod does not stop root)


@pytest.mark.parametrize("workers", [1, 2])
def test_each_bad_file_is_listed_with_its_reason(tmp_path: Path, monkeypatch, workers: int) -> None:
    root = grey_folder(tmp_path / "raw", 20)
    _bad_files(root)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 700)  # workers get the parent's limit
    summary = run(root, tmp_path, workers=workers, max_bad_fraction=0.5)
    listed = skipped(tmp_path / "out")
    assert {p: r for p, (r, _) in listed.items()} == {
        "empty.png": "empty", "cut.png": "truncated", "text.jpg": "not-an-image",
        "huge.png": "decompression-bomb", "gone.png": "unreadable",
    }  # fmt: skip
    assert all(detail for _, detail in listed.values())
    assert summary["counts"]["bad"] == 5 and summary["counts"]["files"] == 25 and summary["counts"]["decoded"] == 20
    assert summary["counts"]["reasons"]["truncated"] == 1
    assert len(rows(tmp_path / "out")) == 20


def test_too_many_bad_files_fails_and_keeps_the_old_outputs(tmp_path: Path) -> None:
    root = grey_folder(tmp_path / "raw", 20)
    run(root, tmp_path)
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    _bad_files(root)
    grey_folder(root, 5, start=100)  # new good images too: the old outputs must not take them
    with pytest.raises(PrepareError) as info:
        run(root, tmp_path, max_bad_fraction=0.1)
    msg = str(info.value)
    assert isinstance(info.value, PipelineError)
    assert "4 of 30" in msg and "13.3%" in msg and "data.max_bad_fraction = 0.1" in msg, msg  # no bomb here
    assert str(tmp_path / "cache" / "skipped.csv") in msg and "remove" in msg
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    assert len(skipped(tmp_path / "cache")) == 4


def test_exact_duplicates_are_kept_once_and_listed(tmp_path: Path) -> None:
    root = grey_folder(tmp_path / "raw", 10)
    Image.open(root / "img0003.png").save(root / "copy.bmp")  # other format, same pixels
    (root / "sub").mkdir()
    (root / "zz.png").write_bytes((root / "img0005.png").read_bytes())
    summary = run(root, tmp_path, max_bad_fraction=0)  # duplicates are not bad files
    listed = skipped(tmp_path / "out")
    assert listed == {
        "img0003.png": ("duplicate", "the same pixels as copy.bmp, which is kept"),  # "copy.bmp" sorts first
        "zz.png": ("duplicate", "the same pixels as img0005.png, which is kept"),
    }
    assert summary["counts"]["duplicates"] == 2 and summary["counts"]["bad"] == 0
    assert len(rows(tmp_path / "out")) == 10


# ---- labels


def test_labels_from_class_subfolders(tmp_path: Path) -> None:
    root = tmp_path / "raw" / "wrapper"  # a lone wrapper folder (as archives have) is stepped into
    grey_folder(root / "dogs", 6)
    grey_folder(root / "cats" / "deeper", 5, start=50)
    noise((9, 9), "L", seed=999).save(root / "stray.png")
    summary = run(tmp_path / "raw", tmp_path, max_bad_fraction=0.2, test_fraction=0.3)
    assert summary["classes"] == ["cats", "dogs"] and summary["label_source"] == "subfolders" and summary["labeled"]
    assert skipped(tmp_path / "out")["wrapper/stray.png"][0] == "outside-class-folders"
    assert summary["counts"]["bad"] == 1
    both = [load_split(tmp_path / "out" / f"{s}.npz") for s in ("train", "test")]
    labels = np.concatenate([s.labels for s in both])
    assert sorted(labels.tolist()) == [0] * 5 + [1] * 6
    cats = {decode_image(p, Target(64, 1)).tobytes() for p in (root / "cats" / "deeper").iterdir()}
    for split in both:
        for im, label in zip(split.images, split.labels, strict=True):
            assert (im.tobytes() in cats) == (label == 0)
    counts = summary["splits"]["train"]["counts_per_class"]
    assert set(counts) == {"cats", "dogs"} and sum(counts.values()) == summary["splits"]["train"]["n"]


def test_labels_from_dataset_json(tmp_path: Path) -> None:
    root = grey_folder(tmp_path / "raw" / "a", 8)
    names = sorted(p.name for p in root.iterdir())
    (tmp_path / "raw" / "b.png").write_bytes((root / names[0]).read_bytes())  # a duplicate, labelled too
    labels = [[f"a/{n}", i % 3] for i, n in enumerate(names)] + [["b.png", 0]]
    (tmp_path / "raw" / "dataset.json").write_text(json.dumps({"labels": labels}))
    summary = run(tmp_path / "raw", tmp_path, test_fraction=0.3)
    assert summary["label_source"] == "dataset.json" and summary["classes"] == ["0", "1", "2"]
    expected = {decode_image(root / n, Target(64, 1)).tobytes(): i % 3 for i, n in enumerate(names)}
    for s in ("train", "test"):
        split = load_split(tmp_path / "out" / f"{s}.npz")
        assert [expected[im.tobytes()] for im in split.images] == split.labels.tolist()
    assert "dataset.json" not in skipped(tmp_path / "out")


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "cannot read it as JSON"),
        (json.dumps({"labels": [["img0000.png", 0]]}), "1 images not listed in it: img0001.png"),
        (json.dumps({"labels": [["img0000.png", "cat"], ["img0001.png", 1]]}), "list of \\[path, label\\] pairs"),
    ],
)
def test_bad_dataset_json_names_the_file(tmp_path: Path, content: str, match: str) -> None:
    root = grey_folder(tmp_path / "raw", 2)
    (root / "dataset.json").write_text(content)
    with pytest.raises(PrepareError, match=match) as info:
        run(root, tmp_path)
    assert str(root / "dataset.json") in str(info.value)


def test_unlabeled_folder(tmp_path: Path) -> None:
    summary = run(grey_folder(tmp_path / "raw", 12), tmp_path, test_fraction=0.3)
    assert summary["classes"] == [] and not summary["labeled"] and summary["label_source"] == "none"
    for s in ("train", "test"):
        assert (load_split(tmp_path / "out" / f"{s}.npz").labels == UNLABELED).all()
        assert summary["splits"][s]["counts_per_class"] == {}
    assert read_summary(tmp_path / "out" / "summary.json").classes == ()


# ---- splits, cache, channels, parallelism


def test_adding_images_never_moves_an_old_one_and_decodes_only_the_new(tmp_path: Path) -> None:
    root = grey_folder(tmp_path / "raw", 60)
    first = run(root, tmp_path, test_fraction=0.25)
    assert first["run"] == {**first["run"], "decoded_now": 60, "from_cache": 0}
    before = rows(tmp_path / "out")
    assert set(before.values()) == {"train", "test"}
    grey_folder(root, 30, start=500)
    (root / "img0000.png").rename(root / "zzz-renamed.png")  # a renamed file is not decoded again either
    second = run(root, tmp_path, test_fraction=0.25)
    assert second["run"]["decoded_now"] == 30 and second["run"]["from_cache"] == 60
    after = rows(tmp_path / "out")
    assert len(after) == 90 and all(after[b] == s for b, s in before.items())
    names = sorted(p.name for p in root.iterdir())  # order within a split: by path
    order = {decode_image(root / n, Target(64, 1)).tobytes(): k for k, n in enumerate(names)}
    for s in ("train", "test"):
        ranks = [order[im.tobytes()] for im in load_split(tmp_path / "out" / f"{s}.npz").images]
        assert ranks == sorted(ranks)
    assert json.loads((tmp_path / "cache" / "last_run.json").read_text())["decoded_now"] == 30
    third = run(root, tmp_path, resolution=32, test_fraction=0.25)  # other settings: decoded again
    assert third["run"]["decoded_now"] == 90


def test_channels_follow_the_images_colour(tmp_path: Path) -> None:
    root = grey_folder(tmp_path / "raw", 6)
    grey_rgb = np.repeat(np.asarray(noise((9, 9), "L", seed=5))[..., None], 3, axis=2)
    Image.fromarray(grey_rgb, "RGB").save(root / "rgb-but-grey.png")
    hidden = np.dstack([grey_rgb, np.full((9, 9), 255, np.uint8)])
    hidden[0, 0] = (255, 0, 0, 0)  # colour only under full transparency
    Image.fromarray(hidden, "RGBA").save(root / "rgba-grey.png")
    assert run(root, tmp_path, test_fraction=0.3)["shape"] == [1, 64, 64]
    noise((9, 9), "RGB", seed=6).save(root / "colour.png")
    summary = run(root, tmp_path, test_fraction=0.3)
    assert summary["shape"] == [3, 64, 64] and summary["channels"] == 3
    assert load_split(tmp_path / "out" / "train.npz").images.shape[1] == 3
    assert run(root, tmp_path, channels=1, test_fraction=0.3)["shape"] == [1, 64, 64]  # an explicit choice wins


def test_parallel_decode_gives_the_same_bytes(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    for i in range(48):
        folder = root / ("cats" if i % 2 else "dogs")
        folder.mkdir(parents=True, exist_ok=True)
        noise((7 + i % 5, 9), "RGB" if i % 3 else "L", seed=i).save(folder / f"{i:03d}.{('png', 'jpg', 'webp')[i % 3]}")
    one = run(root, tmp_path, workers=1, out="one", resolution=16)
    two = prepare(DataConfig(dataset="folder", source=str(root), resolution=16), root, tmp_path / "two",
                  tmp_path / "cache2", workers=2)  # fmt: skip
    assert two["run"]["workers"] == 2 and two["run"]["decoded_now"] == 48
    for name in ("train.npz", "test.npz", "skipped.csv", "summary.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    assert one["splits"] == two["splits"]


def test_empty_test_split_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PrepareError, match="no image in the test split.*data.test_fraction"):
        run(grey_folder(tmp_path / "raw", 2), tmp_path, test_fraction=0.01)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(PrepareError, match="no such folder.*download"):
        run(tmp_path / "absent", tmp_path)
    assert not os.path.exists(tmp_path / "out" / "summary.json")


def test_file_names_that_are_not_utf8_are_listed_not_a_crash(tmp_path: Path) -> None:
    root = grey_folder(tmp_path / "raw", 12)
    odd = os.fsdecode(os.fsencode(root) + b"/caf\xe9 copy.png")  # Latin-1 bytes on disk, as old tar files hold
    (root / "img0003.png").rename(odd)
    Image.open(odd).save(odd.replace("copy.png", "twin.bmp"))  # a duplicate: listed with both odd names
    (root / "chat \u732b notes.txt").write_text("x")
    run(root, tmp_path, test_fraction=0.3)
    text = (tmp_path / "out" / "skipped.csv").read_bytes()
    assert b'caf\xe9 twin.bmp,duplicate,"the same pixels as caf\xe9 copy.png' in text
    assert "chat \u732b notes.txt,ignored".encode() in text


def test_listing_is_not_quadratic_in_the_number_of_files(tmp_path: Path, monkeypatch) -> None:
    names = [f"img{i:06d}.png" for i in range(60_000)]  # a list's `in` per name: about 20 s; a set's: < 0.1 s
    monkeypatch.setattr(imagefolder, "_walk", lambda base: names)
    started = time.perf_counter()
    listing = imagefolder.list_folder(grey_folder(tmp_path / "raw", 1))
    assert len(listing.paths) == 60_000 and time.perf_counter() - started < 5


def test_an_unreadable_subfolder_is_an_error_not_a_silent_skip(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "raw"
    grey_folder(root / "cats", 3)
    grey_folder(root / "dogs", 3)
    real = os.scandir

    def scandir(path="."):
        if Path(path).name == "dogs":  # what chmod 000 does (root ignores the mode, so it is simulated)
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(PrepareError, match=f"cannot read {root / 'dogs'}: Permission denied"):
        run(root, tmp_path)


def test_a_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "README.md").write_text("hi")
    with pytest.raises(PrepareError, match="no image files.*README.md"):
        run(tmp_path / "raw", tmp_path)
