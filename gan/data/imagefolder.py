"""A folder of images as the prepare stage sees it: which files are images, and their labels.

`list_folder(root)` walks the folder (hidden files and folders skipped, names sorted, `/` separated), first
stepping into a lone wrapper folder (a folder that holds nothing but one folder, as many archives do). Files
whose name ends in an image suffix (IMAGE_SUFFIXES, any case) are the images; any other file is set aside with
the reason "ignored" (listed, never counted as bad), and `dataset.json` at the root is read, not listed.

Labels, the first rule that applies:

1. `dataset.json` at the root, NVlabs dataset_tool's convention: `{"labels": [["dir/img.png", 3], ...]}`,
   paths relative to the root; class names are "0".."K-1" for labels 0..K-1. `"labels": null` means
   unlabeled. Every image must be listed and every listed path must be an image here, else FolderError.
2. class subfolders, torchvision ImageFolder's convention: when some images lie in subfolders, the
   first-level subfolders that hold images (sorted by name) are the classes. An image directly at the root is
   then set aside with the reason "outside-class-folders", which counts as a bad file (so a few stray files
   pass, a folder that is mostly unsorted fails the stage's max_bad_fraction check with the list).
3. otherwise unlabeled: every label is UNLABELED (-1) and there are no classes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from gan.core.errors import PipelineError
from gan.core.splits import UNLABELED

IMAGE_SUFFIXES = frozenset(
    (".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".mpo", ".webp", ".bmp", ".dib", ".gif", ".tif", ".tiff")
    + (".ppm", ".pgm", ".pbm", ".pnm")
)
LABELS_FILE = "dataset.json"
LabelSource = Literal["builtin", "dataset.json", "subfolders", "none"]


class FolderError(PipelineError, ValueError):
    """A folder source cannot be listed or its labels read; the message names the file and the fix."""


@dataclass(frozen=True)
class SetAside:
    path: str  # relative to the listed folder, `/` separated
    reason: str  # "ignored" (not an image name) or "outside-class-folders"
    detail: str


@dataclass
class FolderListing:
    root: Path  # the folder the paths are relative to (the given one, not a wrapper folder inside it)
    paths: list[str]  # the images, sorted
    labels: np.ndarray  # int64, one per path (UNLABELED when unlabeled)
    classes: tuple[str, ...]  # () when unlabeled
    label_source: LabelSource
    set_aside: list[SetAside] = field(default_factory=list)


def list_folder(root: Path) -> FolderListing:
    """The images under `root` with their labels; raises FolderError for a missing folder or a bad dataset.json."""
    root = Path(root)
    if not root.is_dir():
        raise FolderError(f"{root}: no such folder; run the download stage first (python -m gan download)")
    base = _unwrap(root)
    prefix = base.relative_to(root).as_posix() + "/" if base != root else ""
    names = _walk(base)  # relative to base
    images = [n for n in names if Path(n).suffix.lower() in IMAGE_SUFFIXES and n != LABELS_FILE]
    is_image = set(images)  # a list's `in` would make the listing quadratic in the number of files
    set_aside = [
        SetAside(prefix + n, "ignored", f"not an image file name ({Path(n).suffix or 'no suffix'}); "
                 f"rename it with an image suffix ({', '.join(sorted(IMAGE_SUFFIXES))}) if it is one")
        for n in names if n not in is_image and n != LABELS_FILE
    ]  # fmt: skip
    if (base / LABELS_FILE).is_file():
        labels, classes = _read_labels_file(base / LABELS_FILE, images)
        source: LabelSource = "dataset.json" if classes else "none"
    elif any("/" in n for n in images):
        at_root = [n for n in images if "/" not in n]
        images = [n for n in images if "/" in n]
        set_aside += [
            SetAside(prefix + n, "outside-class-folders", "an image directly in the folder, where the other images "
                     "are in class subfolders; move it into its class's subfolder, or remove it")
            for n in at_root
        ]  # fmt: skip
        classes = tuple(sorted({n.split("/", 1)[0] for n in images}))
        index = {c: i for i, c in enumerate(classes)}
        labels = np.array([index[n.split("/", 1)[0]] for n in images], dtype=np.int64)
        source = "subfolders"
    else:
        labels, classes, source = np.full(len(images), UNLABELED, dtype=np.int64), (), "none"
    set_aside.sort(key=lambda s: s.path)
    return FolderListing(root, [prefix + n for n in images], labels, classes, source, set_aside)


def _unwrap(root: Path) -> Path:
    """Step into lone wrapper folders: `root/photos/{a,b}` is read as `root/photos`."""
    while True:
        entries = [e for e in os.scandir(root) if not e.name.startswith(".")]
        if len(entries) != 1 or not entries[0].is_dir(follow_symlinks=False):
            return root
        root = Path(entries[0].path)


def _walk(base: Path) -> list[str]:
    def unreadable(err: OSError) -> None:  # os.walk would otherwise skip the folder and its images silently
        raise FolderError(f"cannot read {err.filename}: {err.strerror or err}; check that it is a readable folder")

    found = []
    for dirpath, dirnames, filenames in os.walk(base, onerror=unreadable):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(base).as_posix()
        found += [f if rel == "." else f"{rel}/{f}" for f in filenames if not f.startswith(".")]
    return sorted(found)


def _read_labels_file(path: Path, images: list[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    fix = 'it must be {"labels": [["relative/path.png", 0], ...]} (NVlabs dataset_tool), or {"labels": null}'
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FolderError(f"{path}: cannot read it as JSON ({err}); {fix}") from None
    if not isinstance(doc, dict) or "labels" not in doc:
        raise FolderError(f"{path}: no 'labels' key at the top level; {fix}")
    if doc["labels"] is None:
        return np.full(len(images), UNLABELED, dtype=np.int64), ()
    entries = doc["labels"]
    ok = isinstance(entries, list) and all(
        isinstance(e, list) and len(e) == 2 and isinstance(e[0], str) and type(e[1]) is int and e[1] >= 0
        for e in entries
    )
    if not ok:
        raise FolderError(f"{path}: 'labels' must be a list of [path, label] pairs with labels ints >= 0; {fix}")
    given: dict[str, int] = {}
    for name, label in entries:
        name = name.replace("\\", "/").removeprefix("./")
        if given.setdefault(name, label) != label:
            raise FolderError(f"{path}: {name!r} is listed twice, with labels {given[name]} and {label}; keep one")
    unlisted = [n for n in images if n not in given]
    missing = sorted(set(given) - set(images))
    for what, names in (("images not listed in it", unlisted), ("listed paths that are not images here", missing)):
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            raise FolderError(
                f"{path}: {len(names)} {what}: {shown}; every image (paths relative to {path.parent}) must have "
                "exactly one label: update dataset.json, or remove it to use class subfolders or no labels"
            )
    labels = np.array([given[n] for n in images], dtype=np.int64)
    n_classes = int(labels.max()) + 1 if labels.size else 0
    return labels, tuple(str(i) for i in range(n_classes))
