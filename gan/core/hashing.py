"""File hashing shared by several stages (download verifies files, evaluation records extractor weights)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def file_digests(path: str | Path, algorithms: Iterable[str]) -> dict[str, str]:
    """Hex digests of the file for each hashlib algorithm named, in one read."""
    hashers = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            for h in hashers.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hashers.items()}


def sha256_file(path: str | Path) -> str:
    return file_digests(path, ("sha256",))["sha256"]
