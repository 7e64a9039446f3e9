"""Write-then-rename, so an interrupted or failed write never leaves a
half-written file at a final path and never destroys the previous version.

A write killed outright (kill -9) leaves its temp file beside the final path;
each stage removes those from its outputs when it starts (remove_stale_temps)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

_UMASK = os.umask(0)
os.umask(_UMASK)

# The temp names atomic_path makes (tempfile.mkstemp: 8 characters from [a-z0-9_]): ".<final name>.<8>.tmp".
_TEMP_NAME = re.compile(r"\.(?P<final>.+)\.[a-z0-9_]{8}\.tmp")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` on success."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give final files normal permissions
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:  # disk full, read-only, permissions: say which file, and that nothing was lost
        kept = "the previous version is intact" if path.exists() else "nothing was written there"
        raise OSError(err.errno, f"cannot write {path}: {err.strerror or err}; {kept}") from err
    finally:
        if tmp is not None:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass


def remove_stale_temps(outputs: Iterable[str | Path]) -> list[Path]:
    """Delete the temp files an interrupted write (kill -9, power loss) left in `outputs`; return them.

    Only names atomic_path makes are touched: ".<name>.<8 random chars>.tmp" beside a file output
    named <name>, or anywhere inside a directory output; nothing else, and no symlinks. Call it at
    the start of the stage that owns `outputs`, before it writes: it assumes no other process is
    writing there at the same time (one stage writes each output, and `dvc repro` holds the
    repository lock while it runs a stage), since it cannot tell a live temp from a dead one.
    """
    removed = []
    for out in map(Path, outputs):
        if out.is_dir():
            found = [Path(d, f) for d, _, files in os.walk(out) for f in files if _TEMP_NAME.fullmatch(f)]
        else:
            found = [p for p in out.parent.glob(".*.tmp") if _is_temp_of(p.name, out.name)]
        for p in found:
            if p.is_file() and not p.is_symlink():
                p.unlink(missing_ok=True)
                removed.append(p)
    if removed:
        log.info("removed %d temp file(s) left by an interrupted run: %s", len(removed), ", ".join(map(str, removed)))
    return removed


def _is_temp_of(name: str, final: str) -> bool:
    m = _TEMP_NAME.fullmatch(name)
    return m is not None and m["final"] == final


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def save_torch(path: str | Path, obj: object) -> None:
    """torch.save, atomically; serialised in memory first so a full disk surfaces as an OSError."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())


def replace_dir(tmp: Path, dest: Path) -> None:
    """Rename `tmp` onto `dest`; an existing `dest` is moved aside first and deleted once `tmp` is in place."""
    if not dest.exists():
        os.rename(tmp, dest)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
    os.replace(dest, aside)  # onto an empty folder: allowed by rename(2)
    try:
        os.rename(tmp, dest)
    except OSError:
        os.replace(aside, dest)
        raise
    shutil.rmtree(aside, ignore_errors=True)
