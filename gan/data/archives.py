"""Extracting a zip or tar archive of images safely: no path leaves the destination, no bomb fills the disk.

`extract_archive` takes a `.zip`, `.tar`, `.tar.gz`/`.tgz` (or a tar compressed with bz2/xz), told apart by
content, not by suffix, and refuses, with an ArchiveError naming the archive and the entry, any archive
holding:

- an absolute path or a `..` component (zip-slip, tar traversal);
- a link of any kind, symbolic or hard, even one that stays inside the destination: an archive of images
  has no need for one, and refusing them all is simpler to get right than judging where each one leads;
- a device file, fifo, socket or other special entry (only regular files and folders are extracted);
- more than `max_entries` entries, or more than `max_total_bytes` uncompressed in all;
- an entry that expands more than `max_ratio` times (zip bombs). A zip's entries are compressed one by one,
  so the ratio is the entry's; a compressed tar is one stream, so the ratio is that of the whole (the bytes
  the members declare over the archive's size). Entries below RATIO_FLOOR_BYTES are not held to the ratio:
  a small blank image can rightly compress 1000:1, and their sum is bounded by `max_total_bytes`;
- a zip entry that decompresses to more bytes than its header declares: the declared sizes are checked
  before anything is written, and the bytes actually written are counted while streaming, so a header that
  lies is caught too;
- an encrypted zip entry, two entries with the same path, or a corrupt or truncated archive.

Tar members also pass through `tarfile.data_filter` (PEP 706), the standard library's own guard, after
these checks. Extraction is atomic with respect to `dest`: everything goes into a temp folder beside it,
which is renamed onto `dest` only once the whole archive has been extracted, so a refused archive leaves
nothing behind and an existing `dest` untouched. A kill -9 mid-way can leave that temp folder
(".<dest name>.<8 chars>.tmp") beside `dest`; it is never renamed into place.
"""

from __future__ import annotations

import gzip
import lzma
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from gan.core import atomic
from gan.core.errors import PipelineError

# Defaults: generous for a real image dataset, far below what fills a disk or a day.
MAX_TOTAL_BYTES = 20 * 2**30  # 20 GiB uncompressed in all
MAX_RATIO = 200.0  # PNG/JPEG barely compress; raw greyscale on a blank background rarely tops ~50:1
MAX_ENTRIES = 1_000_000  # files and folders together
RATIO_FLOOR_BYTES = 2**20  # entries (zip) or running totals (tar) below 1 MiB are not held to the ratio

_CHUNK = 2**20
_CORRUPT = (zipfile.BadZipFile, tarfile.TarError, gzip.BadGzipFile, zlib.error, lzma.LZMAError, EOFError)
_SPECIAL = {stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFIFO: "a fifo"}
_SPECIAL |= {stat.S_IFSOCK: "a socket", stat.S_IFLNK: "a symbolic link"}
_TAR_SPECIAL = {tarfile.CHRTYPE: "a character device", tarfile.BLKTYPE: "a block device", tarfile.FIFOTYPE: "a fifo"}
_ONLY_FILES = "only regular files and folders are extracted; re-create the archive without it"
_NO_LINKS = "links are refused in archives of images; re-create it with the files themselves (zip without -y, tar -h)"


class ArchiveError(PipelineError, ValueError):
    """An archive is refused (unsafe, too big, corrupt); the message names the archive and the entry."""


def extract_archive(
    archive: Path,
    dest: Path,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    max_ratio: float = MAX_RATIO,
    max_entries: int = MAX_ENTRIES,
) -> list[Path]:
    """Extract `archive` into the folder `dest`, all or nothing; return the extracted regular files, sorted.

    `dest` must be a folder or not exist; on success it is replaced as a whole by the archive's contents,
    on any failure it is left as it was. See the module docstring for what is refused and why.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise ArchiveError(f"{archive}: no such archive file; check the path")
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise ArchiveError(f"cannot extract {archive} into {dest}: it exists and is not a folder; remove it first")
    dest.parent.mkdir(parents=True, exist_ok=True)
    kept = f"{dest} is unchanged" if dest.exists() else f"{dest} was not created"
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        limits = (max_total_bytes, max_ratio, max_entries)
        if zipfile.is_zipfile(archive):
            names = _extract_zip(archive, tmp, *limits)
        elif tarfile.is_tarfile(archive):
            names = _extract_tar(archive, tmp, *limits)
        else:
            raise ArchiveError(f"{archive}: not a zip or tar archive (.zip, .tar, .tar.gz, .tgz); check the file")
        atomic.replace_dir(tmp, dest)
    except ArchiveError as err:
        raise ArchiveError(f"{err}. Nothing was extracted; {kept}.") from err.__cause__
    except OSError as err:  # disk full, permissions: say where, and that nothing was lost
        raise OSError(err.errno, f"cannot extract {archive} into {dest}: {err.strerror or err}; {kept}") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(dest.joinpath(*parts) for parts in names)


# ---- zip: every header checked before anything is written, then each entry streamed with a byte count


def _extract_zip(
    archive: Path, root: Path, max_total_bytes: int, max_ratio: float, max_entries: int
) -> list[tuple[str, ...]]:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            if len(infos) > max_entries:
                raise _too_many(archive, infos[max_entries].filename, max_entries)
            total = 0
            for info in infos:
                name = info.filename
                _safe_parts(archive, name)
                kind = stat.S_IFMT(info.external_attr >> 16)
                if kind in _SPECIAL:
                    what = _SPECIAL[kind]
                    hint = _NO_LINKS if kind == stat.S_IFLNK else _ONLY_FILES
                    raise ArchiveError(f"{archive}: entry {name!r} is {what}; {hint}")
                if info.flag_bits & 0x1:
                    raise ArchiveError(f"{archive}: entry {name!r} is encrypted; decrypt the archive and zip it again")
                total += info.file_size
                if total > max_total_bytes:
                    raise _too_big(archive, name, total, max_total_bytes)
                if info.file_size > RATIO_FLOOR_BYTES and info.file_size > max_ratio * info.compress_size:
                    ratio = info.file_size / max(info.compress_size, 1)
                    raise _bomb(archive, name, ratio, info.compress_size, info.file_size, max_ratio)

            files = []
            for info in infos:
                parts = _safe_parts(archive, info.filename)
                if info.is_dir() or stat.S_ISDIR(info.external_attr >> 16):
                    _mkdir(archive, info.filename, root.joinpath(*parts))
                    continue
                try:
                    with zf.open(info) as src:
                        _write_file(archive, info.filename, src, root, parts, limit=info.file_size)
                except _CORRUPT as err:
                    raise _corrupt(archive, info.filename, err) from err
                files.append(parts)
            return files
    except _CORRUPT as err:
        raise _corrupt(archive, None, err) from err


# ---- tar: one pass (a compressed tar is a single stream), each member checked before it is written


def _extract_tar(
    archive: Path, root: Path, max_total_bytes: int, max_ratio: float, max_entries: int
) -> list[tuple[str, ...]]:
    size = archive.stat().st_size
    files: list[tuple[str, ...]] = []
    total = 0
    try:
        with tarfile.open(archive, "r:*") as tar:
            for count, member in enumerate(_members(tar), start=1):
                name = member.name
                if count > max_entries:
                    raise _too_many(archive, name, max_entries)
                parts = _safe_parts(archive, name)
                if member.issym() or member.islnk():
                    what = "a symbolic link" if member.issym() else "a hard link"
                    raise ArchiveError(f"{archive}: entry {name!r} is {what} (to {member.linkname!r}); {_NO_LINKS}")
                if not (member.isreg() or member.isdir()):
                    what = _TAR_SPECIAL.get(member.type, f"of tar type {member.type!r}")
                    raise ArchiveError(f"{archive}: entry {name!r} is {what}; {_ONLY_FILES}")
                try:
                    tarfile.data_filter(member, str(root))
                except tarfile.FilterError as err:
                    raise ArchiveError(f"{archive}: entry {name!r} is refused by tarfile's data filter: {err}") from err
                total += member.size
                if total > max_total_bytes:
                    raise _too_big(archive, name, total, max_total_bytes)
                if total > RATIO_FLOOR_BYTES and total > max_ratio * size:
                    raise _bomb(archive, name, total / size, size, total, max_ratio, whole=True)
                if member.isdir():
                    _mkdir(archive, name, root.joinpath(*parts))
                    continue
                try:
                    src = tar.extractfile(member)
                    assert src is not None  # a regular file always has a data stream
                    with src:
                        _write_file(archive, name, src, root, parts, limit=member.size)
                except _CORRUPT as err:
                    raise _corrupt(archive, name, err) from err
                files.append(parts)
            return files
    except _CORRUPT as err:
        raise _corrupt(archive, None, err) from err


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The members one by one, without keeping them all (tar.members would grow with the archive)."""
    while (member := tar.next()) is not None:
        yield member
        tar.members.clear()


# ---- shared: names, writing, moving into place, messages


def _safe_parts(archive: Path, name: str) -> tuple[str, ...]:
    """The path components of an entry name, refusing absolute paths, '..' and NUL; '.' and '' are dropped."""
    if name.startswith(("/", "\\")):
        raise ArchiveError(
            f"{archive}: entry {name!r} has an absolute path; an archive must hold relative paths only: re-create it "
            "from inside the image folder (e.g. `cd images && zip -r ../images.zip .`, or `tar -C images -czf x.tgz .`)"
        )
    if ".." in name.replace("\\", "/").split("/"):
        raise ArchiveError(
            f"{archive}: entry {name!r} has a '..' component, which would write outside the destination; "
            "re-create the archive without it"
        )
    if "\x00" in name:
        raise ArchiveError(f"{archive}: entry {name!r} has a NUL character in its name; re-create the archive")
    return tuple(p for p in name.split("/") if p not in ("", "."))


def _mkdir(archive: Path, name: str, path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        raise _clash(archive, name) from err


def _write_file(archive: Path, name: str, src: IO[bytes], root: Path, parts: tuple[str, ...], limit: int) -> None:
    """Stream `src` to root/parts, refusing to write more than `limit` bytes (what the header declared)."""
    if not parts:
        raise ArchiveError(f"{archive}: entry {name!r} is a file with an empty name; re-create the archive")
    target = root.joinpath(*parts)
    _mkdir(archive, name, target.parent)
    try:
        out = open(target, "xb")  # exclusive: a second entry of the same path is refused, never overwrites
    except (FileExistsError, IsADirectoryError, NotADirectoryError) as err:
        raise _clash(archive, name) from err
    with out:
        written = 0
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            if written > limit:
                raise ArchiveError(
                    f"{archive}: entry {name!r} decompresses to more than the {limit} bytes its header declares; "
                    "the header lies (a zip-bomb trick), so the archive is refused"
                )
            out.write(chunk)


def _too_many(archive: Path, name: str, max_entries: int) -> ArchiveError:
    return ArchiveError(
        f"{archive}: more than max_entries={max_entries} entries (the first over the limit is {name!r}); "
        "split the archive, or raise max_entries if it is genuine"
    )


def _too_big(archive: Path, name: str, total: int, max_total_bytes: int) -> ArchiveError:
    return ArchiveError(
        f"{archive}: the entries up to {name!r} add up to {total} bytes uncompressed, more than "
        f"max_total_bytes={max_total_bytes}; raise max_total_bytes if the archive is genuine"
    )


def _bomb(
    archive: Path, name: str, ratio: float, packed: int, unpacked: int, max_ratio: float, whole: bool = False
) -> ArchiveError:
    what = f"the archive up to entry {name!r} expands" if whole else f"entry {name!r} expands"
    return ArchiveError(
        f"{archive}: {what} {ratio:.0f} times ({packed} bytes to {unpacked}), more than max_ratio={max_ratio:g}, "
        "as a decompression bomb does; raise max_ratio if the data is genuine"
    )


def _clash(archive: Path, name: str) -> ArchiveError:
    return ArchiveError(
        f"{archive}: entry {name!r} clashes with an earlier entry of the same path (a duplicate, or a file where "
        "a folder should be); re-create the archive without duplicates"
    )


def _corrupt(archive: Path, name: str | None, err: Exception) -> ArchiveError:
    where = f"entry {name!r}" if name is not None else "the archive"
    return ArchiveError(f"{archive}: cannot read {where}: {err}; it is corrupt or truncated, fetch or re-create it")
