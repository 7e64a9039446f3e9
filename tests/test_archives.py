"""gan.data.archives.extract_archive on real zip and tar archives built here, good ones and hostile ones.

Every hostile archive must be refused with an ArchiveError naming the archive, the entry and what was
wrong, and must leave no trace: `dest` not created (or, when it existed, exactly as it was) and no temp
folder beside it.
"""

from __future__ import annotations

import io
import random
import stat
import struct
import tarfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from gan.data.archives import ArchiveError, extract_archive

PNG = b"\x89PNG\r\n\x1a\n"


def image(seed: int, n: int = 3000) -> bytes:
    """Image-like bytes: a PNG signature and incompressible noise."""
    return PNG + random.Random(seed).randbytes(n)


def make_zip(path: Path, entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name" for the duplicate-entry case
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in entries:
                zf.writestr(name, data)
    return path


def zinfo(name: str, mode: int) -> zipfile.ZipInfo:
    """A zip entry carrying Unix file-type bits, as `zip -y` writes a symlink."""
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def tinfo(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def patch_central_directory(path: Path, offset: int, fmt: str, value: int) -> None:
    """Overwrite one field of the (only) central-directory header, which is what zipfile trusts."""
    data = bytearray(path.read_bytes())
    at = data.rindex(b"PK\x01\x02") + offset
    struct.pack_into(fmt, data, at, value)
    path.write_bytes(bytes(data))


def contents(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- good archives

GOOD = {
    "train/cat/0001.png": image(1),
    "train/dog/0002.png": image(2),
    "val/0003.png": image(3),
    "val/blank.pgm": b"P5 64 64 255\n" + bytes(200_000),  # compresses ~1000:1, but is below the ratio floor
}


def good_archive(path: Path, fmt: str) -> Path:
    if fmt == "zip":
        return make_zip(path, [("train/", b""), ("train/cat/", b""), *GOOD.items()])
    members = [(tinfo(".", tarfile.DIRTYPE), None), (tinfo("./train", tarfile.DIRTYPE), None)]
    members += [(tinfo(f"./{name}"), data) for name, data in GOOD.items()]
    return make_tar(path, members, mode={"tar": "w", "gz": "w:gz", "xz": "w:xz"}[fmt])


@pytest.mark.parametrize(
    "fmt, filename",
    [
        ("zip", "images.zip"),
        ("tar", "images.tar"),
        ("gz", "images.tar.gz"),
        ("gz", "images.tgz"),
        ("xz", "images.tar.xz"),
        ("zip", "images.tar"),  # told apart by content, not by suffix
        ("gz", "images.dat"),
    ],
)
def test_extracts_good_archive(tmp_path: Path, fmt: str, filename: str) -> None:
    archive = good_archive(tmp_path / filename, fmt)
    dest = tmp_path / "out"
    files = extract_archive(archive, dest)
    assert files == sorted(dest / name for name in GOOD)
    assert contents(dest) == GOOD
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([filename, "out"])  # no temp folder left


def test_replaces_existing_dest_as_a_whole(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    (dest / "old").mkdir(parents=True)
    (dest / "old" / "stale.png").write_bytes(b"old")
    extract_archive(good_archive(tmp_path / "a.zip", "zip"), dest)
    assert contents(dest) == GOOD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "out"]


def test_refuses_dest_that_is_a_file(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.write_bytes(b"keep")
    with pytest.raises(ArchiveError, match="not a folder"):
        extract_archive(good_archive(tmp_path / "a.zip", "zip"), dest)
    assert dest.read_bytes() == b"keep"


# ---- hostile archives: (builder, entry the message must name, what it must say, limits)

BIG = 1000
HOSTILE: dict[str, tuple[Callable[[Path], Path], str, str, dict]] = {
    "zip absolute path": (
        lambda d: make_zip(d / "h.zip", [("ok.png", image(0)), ("/etc/evil.png", image(1))]),
        "/etc/evil.png",
        "absolute path",
        {},
    ),
    "zip ../ traversal": (
        lambda d: make_zip(d / "h.zip", [("ok.png", image(0)), ("imgs/../../evil.png", image(1))]),
        "imgs/../../evil.png",
        "'..' component",
        {},
    ),
    "zip symlink to /etc/passwd": (
        lambda d: make_zip(d / "h.zip", [(zinfo("link.png", stat.S_IFLNK | 0o777), b"/etc/passwd")]),
        "link.png",
        "symbolic link",
        {},
    ),
    "zip char device": (
        lambda d: make_zip(d / "h.zip", [(zinfo("null", stat.S_IFCHR | 0o666), b"")]),
        "null",
        "character device",
        {},
    ),
    "zip bomb (ratio)": (
        lambda d: make_zip(d / "h.zip", [("ok.png", image(0)), ("bomb.png", bytes(4 << 20))]),
        "bomb.png",
        "max_ratio=200",
        {},
    ),
    "zip total size": (
        lambda d: make_zip(d / "h.zip", [(f"{c}.png", image(i, BIG)) for i, c in enumerate("abc")]),
        "c.png",
        "max_total_bytes=2500",
        {"max_total_bytes": 2500},
    ),
    "zip too many entries": (
        lambda d: make_zip(d / "h.zip", [(f"{c}.png", image(i, 10)) for i, c in enumerate("abcde")]),
        "e.png",
        "max_entries=4",
        {"max_entries": 4},
    ),
    "zip header lies about size": (
        lambda d: _lying_zip(d / "h.zip"),
        "liar.png",
        "corrupt",
        {},
    ),
    "zip encrypted entry": (
        lambda d: _encrypted_zip(d / "h.zip"),
        "secret.png",
        "encrypted",
        {},
    ),
    "zip duplicate entry": (
        lambda d: make_zip(d / "h.zip", [("a.png", image(0)), ("a.png", image(1))]),
        "a.png",
        "clashes",
        {},
    ),
    "tar absolute path": (
        lambda d: make_tar(d / "h.tar", [(tinfo("ok.png"), image(0)), (tinfo("/tmp/evil.png"), image(1))]),
        "/tmp/evil.png",
        "absolute path",
        {},
    ),
    "tar ../ traversal": (
        lambda d: make_tar(d / "h.tar", [(tinfo("imgs/../../evil.png"), image(1))]),
        "imgs/../../evil.png",
        "'..' component",
        {},
    ),
    "tar symlink to /etc/passwd": (
        lambda d: make_tar(d / "h.tar", [(tinfo("link.png", tarfile.SYMTYPE, "/etc/passwd"), None)]),
        "link.png",
        "symbolic link",
        {},
    ),
    "tar symlink inside root": (  # the data filter would allow it: links are refused entirely
        lambda d: make_tar(d / "h.tar", [(tinfo("a.png"), image(0)), (tinfo("b.png", tarfile.SYMTYPE, "a.png"), None)]),
        "b.png",
        "symbolic link",
        {},
    ),
    "tar hardlink out of root": (
        lambda d: make_tar(d / "h.tar", [(tinfo("hard.png", tarfile.LNKTYPE, "/etc/passwd"), None)]),
        "hard.png",
        "hard link",
        {},
    ),
    "tar char device": (
        lambda d: make_tar(d / "h.tar", [(tinfo("ok.png"), image(0)), (tinfo("null", tarfile.CHRTYPE), None)]),
        "null",
        "character device",
        {},
    ),
    "tar fifo": (
        lambda d: make_tar(d / "h.tar", [(tinfo("pipe", tarfile.FIFOTYPE), None)]),
        "pipe",
        "fifo",
        {},
    ),
    "tar.gz bomb (ratio)": (
        lambda d: make_tar(d / "h.tgz", [(tinfo("ok.png"), image(0)), (tinfo("bomb.png"), bytes(4 << 20))], "w:gz"),
        "bomb.png",
        "max_ratio=200",
        {},
    ),
    "tar total size": (
        lambda d: make_tar(d / "h.tar", [(tinfo(f"{c}.png"), image(i, BIG)) for i, c in enumerate("abc")]),
        "c.png",
        "max_total_bytes=2500",
        {"max_total_bytes": 2500},
    ),
    "tar too many entries": (
        lambda d: make_tar(d / "h.tar", [(tinfo(f"{c}.png"), image(i, 10)) for i, c in enumerate("abcde")]),
        "e.png",
        "max_entries=4",
        {"max_entries": 4},
    ),
    "tar.gz truncated": (
        lambda d: _truncated_tgz(d / "h.tgz"),
        "big.png",
        "corrupt or truncated",
        {},
    ),
}


def _lying_zip(path: Path) -> Path:
    """2 MiB of noise whose central directory declares 1000 bytes: passes the declared-size checks."""
    make_zip(path, [("liar.png", image(0, 2 << 20))])
    patch_central_directory(path, 24, "<I", 1000)  # uncompressed size
    return path


def _encrypted_zip(path: Path) -> Path:
    make_zip(path, [("secret.png", image(0))])
    patch_central_directory(path, 8, "<H", 0x1)  # general-purpose flags: bit 0, encrypted
    return path


def _truncated_tgz(path: Path) -> Path:
    make_tar(path, [(tinfo("big.png"), image(0, 200_000))], "w:gz")
    path.write_bytes(path.read_bytes()[:100_000])
    return path


@pytest.mark.parametrize("existing", [False, True], ids=["no dest", "existing dest"])
@pytest.mark.parametrize("case", list(HOSTILE))
def test_refuses_hostile_archive(tmp_path: Path, case: str, existing: bool) -> None:
    build, entry, says, limits = HOSTILE[case]
    archive = build(tmp_path)
    dest = tmp_path / "out"
    if existing:
        dest.mkdir()
        (dest / "keep.png").write_bytes(b"old")
    with pytest.raises(ArchiveError) as info:
        extract_archive(archive, dest, **limits)
    msg = str(info.value)
    assert str(archive) in msg and repr(entry) in msg and says in msg, msg
    assert ("is unchanged" if existing else "was not created") in msg
    if existing:
        assert contents(dest) == {"keep.png": b"old"}
    else:
        assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([archive.name] + ["out"] * existing)


def test_refuses_zip_stream_longer_than_its_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """zipfile stops at the declared size itself; the byte count is the second guard, tested by a stream that lies."""
    archive = make_zip(tmp_path / "h.zip", [("liar.png", image(0, 1000))])
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, info, *a, **k: io.BytesIO(bytes(5000)))
    with pytest.raises(ArchiveError, match=r"'liar.png' decompresses to more than the 1008 bytes its header declares"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_tar_members_pass_the_data_filter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def refuse(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo:
        seen.append(member.name)
        raise tarfile.OutsideDestinationError(member, dest_path)

    monkeypatch.setattr(tarfile, "data_filter", refuse)
    archive = make_tar(tmp_path / "a.tar", [(tinfo("a.png"), image(0))])
    with pytest.raises(ArchiveError, match="'a.png' is refused by tarfile's data filter"):
        extract_archive(archive, tmp_path / "out")
    assert seen == ["a.png"] and not (tmp_path / "out").exists()


def test_refuses_a_file_that_is_not_an_archive(tmp_path: Path) -> None:
    archive = tmp_path / "images.zip"
    archive.write_bytes(image(0))
    with pytest.raises(ArchiveError, match="not a zip or tar archive"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
