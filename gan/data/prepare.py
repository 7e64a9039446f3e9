"""Prepare stage: any source (a built-in dataset's files, a folder of images) to two uint8 arrays and a summary.

`prepare(data, raw_dir, out_dir, cache_dir)` picks the source's reader and runs `prepare_source`, one body for
every source, top to bottom:

1. read: the reader lists the items (a built-in's images in its files, a folder's image files sorted by
   path), their labels, classes and, for built-ins, the official split of each;
2. hash and decode: each file's SHA-256, then each item not in the decode cache decoded to the target shape
   (`image_resolution(data)`, `data.channels`; crop, filter, background) on `workers` processes, streamed into
   memory-mapped temp files in bounded chunks; bad files are set aside with their reason, never dropped;
3. choose: the channel count (a folder's `data.channels = 0`: 3 if any source image has colour, else 1), the
   split (built-ins: the official one; folders: by a hash of the decoded pixels, so adding images never moves
   an old one), exact duplicates (folders: the first in path order is kept), `data.limit_train/limit_test`;
4. check: more than `data.max_bad_fraction` of the files bad, or an empty split, stops the stage with a
   PrepareError, before anything in `out_dir` is touched (the list of bad files goes to `cache_dir`);
5. write, only on success and atomically: `train.npz` and `test.npz` (`images` uint8 N×C×H×W, `labels`
   int64, streamed into the zip without holding a split in memory), `skipped.csv` (path, reason, detail of
   every file not used) and `summary.json` (SUMMARY_KEYS).

A built-in at its native shape gives exactly the arrays its files hold. summary.json is a function of the data
and the settings alone (DVC compares it): run statistics (how many images were decoded now and how many came
from the cache, workers, seconds) are in the returned dict's "run" and in `cache_dir/last_run.json`.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import io
import json
import logging
import multiprocessing
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import PIL
from PIL import Image

from gan.core import atomic
from gan.core.config import DataConfig, image_resolution
from gan.core.datasets import DATASETS, SPLIT_FILES, DatasetSpec
from gan.core.errors import PipelineError
from gan.core.hashing import sha256_file
from gan.data.cifar import BATCHES_DIR_NAME, read_cifar10_split
from gan.data.idx import IDXError, read_idx
from gan.data.imagedecode import BadImage, Decoded, Target, convert_array, decode_file, pixel_digest
from gan.data.imagefolder import FolderError, list_folder

__all__ = ["READERS", "PrepareError", "Source", "prepare", "prepare_source"]

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
SKIPPED_COLUMNS = ("path", "reason", "detail")
NOT_BAD = frozenset({"duplicate", "ignored"})  # listed in skipped.csv, but not files that failed
SUMMARY_KEYS = (
    "dataset", "source", "shape", "channels", "resolution", "classes", "labeled", "label_source",
    "crop", "resize_filter", "background", "split_rule", "test_fraction", "counts", "splits",
)  # fmt: skip
CACHE_FILE = "decoded.sqlite"
CACHE_VERSION = 1  # bump when decoding changes in a way the settings key does not capture
_ROWS_PER_WRITE = 4096  # images copied into a zip entry at a time


class PrepareError(PipelineError, ValueError):
    """The prepare stage cannot produce the data; the message names the file or setting and the fix."""


# ---- readers: what a source holds, and how a chunk of its items is decoded (in a worker process)


@dataclass
class Source:
    names: list[str]  # one per item, in output order (a folder: sorted relative paths; a built-in: file#index)
    labels: np.ndarray  # int64 per item; UNLABELED for a source without labels
    classes: tuple[str, ...]  # () when unlabeled
    label_source: str  # "builtin" | "dataset.json" | "subfolders" | "none"
    payload: Callable[[list[int]], object]  # some items as `decode` and `hash` take them (picklable)
    decode: Callable[[object, tuple[Target, ...]], list[Decoded | tuple[str, str]]]  # module-level: runs in workers
    hash: Callable[[object], list[str | tuple[str, str]]] | None = None  # content keys for the cache (files only)
    splits: np.ndarray | None = None  # per item 0 = train, 1 = test (official splits); None = by content hash
    native_channels: int = 0  # the built-in's channel count; 0 = decide from the images
    dedupe: bool = False  # keep exact duplicates once (folders; built-ins are kept as published)
    set_aside: list[tuple[str, str, str]] = field(default_factory=list)  # (path, reason, detail) from listing


def read_idx_source(raw_dir: Path, data: DataConfig) -> Source:
    """fashion-mnist, mnist, kmnist: the four IDX files; the first limit_train / limit_test of each split."""
    parts = []
    for split, limit in zip(SPLITS, (data.limit_train, data.limit_test), strict=True):
        img_name, lbl_name = SPLIT_FILES[split]
        _require_files(raw_dir, (img_name, lbl_name))
        images, labels = read_idx(raw_dir / img_name), read_idx(raw_dir / lbl_name)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise IDXError(f"{raw_dir / img_name}: expected uint8 images N×H×W, got {images.dtype} {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise IDXError(
                f"{raw_dir / lbl_name}: expected {len(images)} labels to match {img_name}, got shape {labels.shape}"
            )
        limit = limit or len(images)
        parts.append((img_name, images[:limit, None], labels[:limit].astype(np.int64)))
    return _builtin_source(DATASETS[data.dataset], raw_dir, parts)


def read_cifar_source(raw_dir: Path, data: DataConfig) -> Source:
    """cifar10: the binary batches in cifar-10-batches-bin (train = data_batch_1..5, test = test_batch)."""
    batches = raw_dir / BATCHES_DIR_NAME
    if not batches.is_dir():
        raise PrepareError(f"{batches}: no such folder; run the download stage first (python -m gan download)")
    parts = []
    for split, limit in zip(SPLITS, (data.limit_train, data.limit_test), strict=True):
        images, labels = read_cifar10_split(batches, split)
        limit = limit or len(images)
        parts.append((f"{BATCHES_DIR_NAME}/{split}", images[:limit], labels[:limit]))
    return _builtin_source(DATASETS[data.dataset], raw_dir, parts)


def read_folder_source(raw_dir: Path, data: DataConfig) -> Source:
    """folder: every image file under raw_dir; labels from dataset.json, class subfolders, or none."""
    try:
        listing = list_folder(raw_dir)
    except FolderError as err:
        raise PrepareError(str(err)) from None
    paths = [str(listing.root / p) for p in listing.paths]
    return Source(
        names=listing.paths,
        labels=listing.labels,
        classes=listing.classes,
        label_source=listing.label_source,
        payload=lambda idx: [paths[i] for i in idx],
        decode=_decode_files,
        hash=_hash_files,
        dedupe=True,
        set_aside=[(s.path, s.reason, s.detail) for s in listing.set_aside],
    )


READERS: dict[str, Callable[[Path, DataConfig], Source]] = {
    "idx": read_idx_source,
    "cifar10-binary": read_cifar_source,
    "folder": read_folder_source,
}


def _builtin_source(spec: DatasetSpec, raw_dir: Path, parts: list[tuple[str, np.ndarray, np.ndarray]]) -> Source:
    for name, _, labels in parts:
        if labels.size and (labels.min() < 0 or labels.max() >= len(spec.classes)):
            raise PrepareError(
                f"{name}: labels from {labels.min()} to {labels.max()}, but {spec.name} has classes "
                f"0..{len(spec.classes) - 1}; the file is damaged: delete {raw_dir} and download again"
            )
    images = np.concatenate([im for _, im, _ in parts])
    return Source(
        names=[f"{name}#{i}" for name, im, _ in parts for i in range(len(im))],
        labels=np.concatenate([lb for _, _, lb in parts]),
        classes=spec.classes,
        label_source="builtin",
        payload=lambda idx: images[idx],
        decode=_decode_arrays,
        splits=np.concatenate([np.full(len(im), s, dtype=np.int8) for s, (_, im, _) in enumerate(parts)]),
        native_channels=int(images.shape[1]),
    )


def _require_files(raw_dir: Path, names: Iterable[str]) -> None:
    missing = [n for n in names if not (raw_dir / n).is_file()]
    if missing:
        raise PrepareError(f"{raw_dir}: missing {', '.join(missing)}; run the download stage (python -m gan download)")


def _decode_arrays(images: np.ndarray, targets: tuple[Target, ...]) -> list[Decoded | tuple[str, str]]:
    out: list[Decoded | tuple[str, str]] = []
    for im in images:
        colour = im.shape[0] == 3 and bool((im[0] != im[1]).any() or (im[1] != im[2]).any())
        out.append(Decoded(colour, tuple(convert_array(im, t) for t in targets)))
    return out


def _decode_files(paths: list[str], targets: tuple[Target, ...]) -> list[Decoded | tuple[str, str]]:
    out: list[Decoded | tuple[str, str]] = []
    for p in paths:
        try:
            out.append(decode_file(Path(p), targets))
        except BadImage as err:  # sent back as plain data (an exception does not cross processes cleanly)
            out.append((err.reason, err.detail))
    return out


def _hash_files(paths: list[str]) -> list[str | tuple[str, str]]:
    out: list[str | tuple[str, str]] = []
    for p in paths:
        try:
            out.append(sha256_file(p))
        except OSError as err:
            why = err.strerror or str(err)
            out.append(("unreadable", f"cannot read the file ({why}); check it exists, is a file and is readable"))
    return out


# ---- the stage


def prepare(data: DataConfig, raw_dir: Path, out_dir: Path, cache_dir: Path, workers: int | None = None) -> dict:
    """Prepare `data.dataset` from `raw_dir` into `out_dir` (see the module doc); returns the summary + "run"."""
    kind = DATASETS[data.dataset].format if data.dataset in DATASETS else "folder"
    return prepare_source(READERS[kind], data, Path(raw_dir), Path(out_dir), Path(cache_dir), workers)


def prepare_source(
    reader: Callable[[Path, DataConfig], Source],
    data: DataConfig,
    raw_dir: Path,
    out_dir: Path,
    cache_dir: Path,
    workers: int | None = None,
) -> dict:
    """The five steps of the module doc, for any source `reader` lists; returns the summary + "run"."""
    started = time.perf_counter()
    workers = max(1, workers or os.cpu_count() or 1)

    # ---- 1. read
    src = reader(raw_dir, data)
    _require_images(src, raw_dir)
    targets = _targets(src, data)
    cache_dir.mkdir(parents=True, exist_ok=True)
    for stale in cache_dir.glob(".prepare-*"):  # temp folders of a run that was killed
        shutil.rmtree(stale, ignore_errors=True)

    with (
        _Workers(workers) as pool,
        _DecodeCache(cache_dir / CACHE_FILE, targets) as cache,
        tempfile.TemporaryDirectory(dir=cache_dir, prefix=".prepare-") as tmp,
    ):
        # ---- 2. hash and decode
        keys, bad = _content_keys(src, pool)
        decoded = _decode(src, targets, keys, bad, pool, cache, Path(tmp))

        # ---- 3. choose
        chosen = _choose(src, data, decoded)

        # ---- 4. check
        skipped, reasons, n_bad, n_files = _unused(src, bad, chosen.duplicate_of)
        _check_usable(data, raw_dir, out_dir, cache_dir, skipped, reasons, n_bad, n_files, decoded, chosen)

        # ---- 5. write
        summary = _summary(data, src, targets, chosen, reasons, n_bad, n_files, decoded)
        _write_outputs(out_dir, summary, src, chosen, skipped)

    run = {
        "decoded_now": decoded.decoded_now,
        "from_cache": decoded.from_cache,
        "workers": workers,
        "seconds": round(time.perf_counter() - started, 3),
    }
    atomic.write_text(cache_dir / "last_run.json", json.dumps(run, indent=2) + "\n")
    log.info(
        "prepared %s: train %d, test %d, %s; %d skipped (%d bad, %d duplicates); decoded %d, %d from the cache, %.1f s",
        data.dataset, len(chosen.idx["train"]), len(chosen.idx["test"]), "×".join(map(str, summary["shape"])),
        len(skipped), n_bad, len(chosen.duplicate_of), run["decoded_now"], run["from_cache"], run["seconds"],
    )  # fmt: skip
    return {**summary, "run": run}


# ---- the steps


def _require_images(src: Source, raw_dir: Path) -> None:
    if not src.names:
        others = ", ".join(p for p, _, _ in src.set_aside[:3])
        raise PrepareError(
            f"{raw_dir}: no image files ({len(src.set_aside)} other files: {others}); image names end in .png, .jpg, "
            ".webp, ...: check data.source"
        )


def _targets(src: Source, data: DataConfig) -> tuple[Target, ...]:
    """One decode target per channel count still possible: the setting's, the built-in's, else grey and RGB."""
    variants = (data.channels,) if data.channels else (src.native_channels,) if src.native_channels else (1, 3)
    bg = (data.background[0], data.background[1], data.background[2])
    return tuple(Target(image_resolution(data), c, data.crop, data.resize_filter, bg) for c in variants)


def _content_keys(src: Source, pool: _Workers) -> tuple[list[str | None], dict[int, tuple[str, str]]]:
    """Each file's SHA-256 (what the decode cache is keyed by), and the items that could not be read."""
    n = len(src.names)
    keys: list[str | None] = [None] * n
    bad: dict[int, tuple[str, str]] = {}  # item -> (reason, detail)
    if src.hash is not None:
        for ids, results in pool.map_chunks(src.hash, src.payload, list(range(n))):
            for i, key in zip(ids, results, strict=True):
                if isinstance(key, str):
                    keys[i] = key
                else:
                    bad[i] = key
    return keys, bad


@dataclass
class _Decoded:
    store: list[np.ndarray]  # per target: memory-mapped uint8 N×C×H×W
    ok: np.ndarray  # bool per item: decoded
    colour: np.ndarray  # bool per item: the source image has colour
    decoded_now: int
    from_cache: int


def _decode(src: Source, targets: tuple[Target, ...], keys: list[str | None], bad: dict[int, tuple[str, str]],
            pool: _Workers, cache: _DecodeCache, tmp: Path) -> _Decoded:  # fmt: skip
    """Every item not bad, from the cache or decoded now, into one memory-mapped array per target; the items that
    fail to decode are added to `bad`."""
    n, res = len(src.names), targets[0].resolution
    store = [np.lib.format.open_memmap(tmp / f"{t.channels}.npy", "w+", np.uint8, (n, t.channels, res, res))
             for t in targets]  # fmt: skip
    ok, colour = np.zeros(n, bool), np.zeros(n, bool)

    def keep(i: int, d: Decoded) -> None:
        for arr, im in zip(store, d.arrays, strict=True):
            arr[i] = im
        ok[i], colour[i] = True, d.colour

    todo, from_cache = [], 0
    for i in range(n):
        hit = cache.get(keys[i]) if keys[i] and i not in bad else None
        if hit is not None:
            keep(i, hit)
            from_cache += 1
        elif i not in bad:
            todo.append(i)
    decode = functools.partial(src.decode, targets=targets)
    for ids, results in pool.map_chunks(decode, src.payload, todo):
        for i, result in zip(ids, results, strict=True):
            if isinstance(result, Decoded):
                keep(i, result)
                if keys[i]:
                    cache.put(keys[i], result)
            else:
                bad[i] = result
        cache.commit()
    return _Decoded(store, ok, colour, len(todo), from_cache)


@dataclass
class _Chosen:
    channels: int
    images: np.ndarray  # the decoded array of that channel count
    idx: dict[str, np.ndarray]  # split -> item indices written
    duplicate_of: dict[int, int]  # item -> the earlier item with the same pixels


def _choose(src: Source, data: DataConfig, decoded: _Decoded) -> _Chosen:
    """The channel count, the split of each item, duplicates, then the limits."""
    variants = [a.shape[1] for a in decoded.store]
    ok = decoded.ok
    channels = variants[0] if len(variants) == 1 else 3 if decoded.colour[ok].any() else 1
    images = decoded.store[variants.index(channels)]
    usable = [int(i) for i in np.flatnonzero(ok)]
    digests = {i: pixel_digest(images[i]) for i in usable} if src.dedupe or src.splits is None else {}
    split = src.splits
    if split is None:  # keyed by the 3-channel decode when there is one: stable if the channel choice flips
        by_content = decoded.store[-1]
        split = np.zeros(len(src.names), np.int8)
        for i in usable:
            key = digests[i] if by_content is images else pixel_digest(by_content[i])
            split[i] = int(key[:16], 16) / 2**64 < data.test_fraction
    duplicate_of: dict[int, int] = {}
    if src.dedupe:
        first: dict[str, int] = {}
        for i in usable:
            j = first.setdefault(digests[i], i)
            if j != i:
                duplicate_of[i] = j
    idx = {}
    for s, (name, limit) in enumerate(zip(SPLITS, (data.limit_train, data.limit_test), strict=True)):
        kept = [i for i in np.flatnonzero(ok & (split == s)) if i not in duplicate_of]
        idx[name] = np.array(kept[:limit] if limit else kept, dtype=np.int64)
    return _Chosen(channels, images, idx, duplicate_of)


def _unused(src: Source, bad: dict[int, tuple[str, str]], duplicate_of: dict[int, int]
            ) -> tuple[list[tuple[str, str, str]], Counter, int, int]:  # fmt: skip
    """skipped.csv's rows, the count per reason, the bad files and all files (images and files set aside as bad)."""
    skipped = sorted(
        [(src.names[i], reason, detail) for i, (reason, detail) in bad.items()]
        + [(src.names[i], "duplicate", f"the same pixels as {src.names[j]}, which is kept")
           for i, j in duplicate_of.items()]
        + src.set_aside
    )  # fmt: skip
    reasons = Counter(reason for _, reason, _ in skipped)
    n_bad = sum(v for k, v in reasons.items() if k not in NOT_BAD)
    n_files = len(src.names) + n_bad - len(bad)  # the images, and the image files the reader set aside as bad
    return skipped, reasons, n_bad, n_files


def _check_usable(data: DataConfig, raw_dir: Path, out_dir: Path, cache_dir: Path, skipped: list, reasons: Counter,
                  n_bad: int, n_files: int, decoded: _Decoded, chosen: _Chosen) -> None:  # fmt: skip
    """Too many bad files or an empty split stop the stage, before anything in `out_dir` is touched."""
    if n_bad > data.max_bad_fraction * n_files:
        where = cache_dir / "skipped.csv"
        atomic.write_bytes(where, _csv(skipped))
        top = ", ".join(f"{k} {v}" for k, v in reasons.most_common() if k not in NOT_BAD)
        raise PrepareError(
            f"{raw_dir}: {n_bad} of {n_files} image files cannot be used ({n_bad / max(n_files, 1):.1%}: {top}), "
            f"more than data.max_bad_fraction = {data.max_bad_fraction}; the list is in {where}. Fix or remove "
            f"those files, or raise data.max_bad_fraction to train without them. {out_dir} was left as it was."
        )
    for name, idx in chosen.idx.items():
        if not len(idx):
            raise PrepareError(
                f"{raw_dir}: no image in the {name} split ({int(decoded.ok.sum())} usable images, "
                f"{len(chosen.duplicate_of)} duplicates, data.test_fraction = {data.test_fraction}, "
                f"data.limit_{name} = {getattr(data, f'limit_{name}')}); add images, or change those settings"
            )


def _summary(data: DataConfig, src: Source, targets: tuple[Target, ...], chosen: _Chosen, reasons: Counter,
             n_bad: int, n_files: int, decoded: _Decoded) -> dict:  # fmt: skip
    """summary.json without its per-split entries (`_write_outputs` adds them): the data and settings only."""
    res, channels = targets[0].resolution, chosen.channels
    return {
        "dataset": data.dataset,
        "source": data.source,
        "shape": [channels, res, res],
        "channels": channels,
        "resolution": res,
        "classes": list(src.classes),
        "labeled": bool(src.classes),
        "label_source": src.label_source,
        "crop": data.crop,
        "resize_filter": data.resize_filter,
        "background": list(targets[0].background),
        "split_rule": "official" if src.splits is not None else "content-hash",
        "test_fraction": None if src.splits is not None else data.test_fraction,
        "counts": {
            "files": n_files,
            "decoded": int(decoded.ok.sum()),
            "bad": n_bad,
            "duplicates": len(chosen.duplicate_of),
            "ignored": reasons.get("ignored", 0),
            "reasons": dict(sorted(reasons.items())),
        },
        "splits": {},
    }


def _write_outputs(out_dir: Path, summary: dict, src: Source, chosen: _Chosen, skipped: list) -> None:
    """All or nothing: every file goes to a temp name and is renamed only when all are written (the summary last)."""
    shape = summary["shape"]
    with contextlib.ExitStack() as stack:
        temp = {
            name: stack.enter_context(atomic.atomic_path(out_dir / name))
            for name in ("summary.json", "skipped.csv", "test.npz", "train.npz")
        }  # renamed in reverse order on success: the summary last
        for name, idx in chosen.idx.items():
            labels = src.labels[idx]
            sha_images = _write_npz(temp[f"{name}.npz"], chosen.images, idx, labels)
            counts = np.bincount(labels[labels >= 0], minlength=len(src.classes))
            summary["splits"][name] = {
                "n": len(idx),
                "shape": shape,
                "counts_per_class": {c: int(k) for c, k in zip(src.classes, counts, strict=False)},
                "sha256_images": sha_images,
                "sha256_labels": hashlib.sha256(labels.tobytes()).hexdigest(),
            }
        temp["skipped.csv"].write_bytes(_csv(skipped))
        temp["summary.json"].write_text(json.dumps(summary, indent=2) + "\n")


# ---- output files


def _write_npz(path: Path, images: np.ndarray, idx: np.ndarray, labels: np.ndarray) -> str:
    """Write images[idx] and labels as an uncompressed .npz (np.load-able, no pickle), a chunk at a time.

    Returns the SHA-256 of the images' bytes. The zip entries carry a fixed date, so equal data gives an
    equal file.
    """
    shape = (len(idx), *images.shape[1:])
    digest = hashlib.sha256()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open(zipfile.ZipInfo("images.npy", date_time=(1980, 1, 1, 0, 0, 0)), "w", force_zip64=True) as f:
            header = {"descr": np.lib.format.dtype_to_descr(images.dtype), "fortran_order": False, "shape": shape}
            np.lib.format.write_array_header_1_0(f, header)
            for start in range(0, len(idx), _ROWS_PER_WRITE):
                block = np.ascontiguousarray(images[idx[start : start + _ROWS_PER_WRITE]]).tobytes()
                digest.update(block)
                f.write(block)
        with zf.open(zipfile.ZipInfo("labels.npy", date_time=(1980, 1, 1, 0, 0, 0)), "w", force_zip64=True) as f:
            np.lib.format.write_array(f, np.ascontiguousarray(labels, dtype=np.int64), allow_pickle=False)
    return digest.hexdigest()


def _csv(rows: list[tuple[str, str, str]]) -> bytes:
    """UTF-8 whatever the locale; a file name that is not UTF-8 on disk keeps its own bytes (surrogateescape)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(SKIPPED_COLUMNS)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8", "surrogateescape")


# ---- the decode cache: decoded images by file content and target settings


class _DecodeCache:
    """One SQLite file: (file SHA-256, settings) -> colour flag and the decoded pixels of every target.

    The settings key covers the targets, the Pillow version and CACHE_VERSION, so a change to any of them
    decodes again. A cache file that cannot be read is replaced (it only saves time).
    """

    def __init__(self, path: Path, targets: tuple[Target, ...]) -> None:
        self.path, self.targets = path, targets
        blob = json.dumps([[asdict(t) for t in targets], PIL.__version__, CACHE_VERSION], sort_keys=True)
        self.settings = hashlib.sha256(blob.encode()).hexdigest()[:16]
        self.sizes = [t.channels * t.resolution**2 for t in targets]

    def __enter__(self) -> _DecodeCache:
        try:
            self.db = self._open()
        except sqlite3.DatabaseError as err:
            log.warning("%s: unreadable decode cache (%s); starting a new one", self.path, err)
            self.path.unlink(missing_ok=True)
            self.db = self._open()
        return self

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60)
        db.execute(
            "CREATE TABLE IF NOT EXISTS decoded (file_sha256 TEXT, settings TEXT, colour INTEGER, pixels BLOB, "
            "PRIMARY KEY (file_sha256, settings))"
        )
        return db

    def __exit__(self, *exc: object) -> None:
        self.db.commit()
        self.db.close()

    def get(self, key: str) -> Decoded | None:
        row = self.db.execute(
            "SELECT colour, pixels FROM decoded WHERE file_sha256 = ? AND settings = ?", (key, self.settings)
        ).fetchone()
        if row is None or len(row[1]) != sum(self.sizes):
            return None
        flat = np.frombuffer(row[1], np.uint8)
        ends = np.cumsum(self.sizes)
        arrays = tuple(
            flat[end - size : end].reshape(t.channels, t.resolution, t.resolution)
            for t, size, end in zip(self.targets, self.sizes, ends, strict=True)
        )
        return Decoded(bool(row[0]), arrays)

    def put(self, key: str, d: Decoded) -> None:
        pixels = b"".join(a.tobytes() for a in d.arrays)
        self.db.execute(
            "INSERT OR REPLACE INTO decoded VALUES (?, ?, ?, ?)", (key, self.settings, int(d.colour), pixels)
        )

    def commit(self) -> None:
        self.db.commit()


# ---- worker processes: bounded chunks in flight, results as they finish


def _init_worker(max_image_pixels: int | None) -> None:
    Image.MAX_IMAGE_PIXELS = max_image_pixels  # the parent's decompression-bomb limit, whatever the start method


def _mp_context() -> multiprocessing.context.BaseContext:
    """spawn (a fresh interpreter: no threads' locks or torch state inherited); fork when the main module
    cannot be imported again by a spawned process (code read from stdin)."""
    main = getattr(sys.modules["__main__"], "__file__", None)
    return multiprocessing.get_context("fork" if main and not os.path.isfile(main) else "spawn")


class _Workers:
    """`workers` processes (spawned: no state inherited by accident), or the calling process when 1."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> _Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def map_chunks(
        self, fn: Callable, payload: Callable[[list[int]], object], items: list[int]
    ) -> Iterator[tuple[list[int], list]]:
        """fn(payload(chunk)) for chunks of `items`; yields (the chunk, its results) as chunks finish.

        At most 2 chunks per worker are in flight, so memory stays bounded however many items there are.
        """
        size = max(1, min(128, len(items) // (self.workers * 8)))
        chunks = [items[s : s + size] for s in range(0, len(items), size)]
        if self.workers == 1 or len(chunks) < 2:
            for chunk in chunks:
                yield chunk, fn(payload(chunk))
            return
        if self.pool is None:
            self.pool = ProcessPoolExecutor(self.workers, _mp_context(), _init_worker, (Image.MAX_IMAGE_PIXELS,))
        pending: dict[Future, list[int]] = {}
        for chunk in chunks:
            if len(pending) >= 2 * self.workers:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield pending.pop(fut), fut.result()
            pending[self.pool.submit(fn, payload(chunk))] = chunk
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield pending.pop(fut), fut.result()
