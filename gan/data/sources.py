"""Own-image sources (`data.dataset: folder`): what `data.source` holds, and bringing it to `data/raw/folder`.

`data.source` is a local folder, a local `.zip` / `.tar` / `.tar.gz` / `.tgz` archive (told apart by content,
not by suffix), a `file://` URL of either, or an `http(s)://` URL of an archive. `data.source_sha256`, when
set, is the SHA-256 the archive must have (as served, for a URL); it does not apply to a folder.

- `source_manifest` describes what the source holds *now*, as JSON that changes exactly when its content
  does (and is byte-identical when dumped with sort_keys when nothing changed). It runs on every
  `dvc repro`, so for a folder each file's SHA-256 is kept in a hash cache under `cache_dir`, keyed by
  (relative path, size, mtime_ns, ctime_ns, inode): an unchanged file is not read again.
- `fetch_source` makes `dest` hold exactly the source's files, replacing an older `dest` all at once (built
  in a temp folder beside it, then swapped in; on any failure the old `dest` is untouched).

What counts as the source's files, in both: every regular file, skipping hidden files and folders (names
starting with "."); symlinked files are followed, symlinked folders are not entered. Empty folders are not
reproduced. When every file sits under one top-level folder (`photos.zip` holding `photos/cats/...`), that
folder is stripped, once: `dest` then holds `cats/...`, the class subfolders.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import time
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import requests

from gan.core import atomic
from gan.core.datasets import Checksum
from gan.core.errors import PipelineError
from gan.core.hashing import sha256_file
from gan.data.archives import ArchiveError, extract_archive
from gan.data.download import DownloadError, FetchSettings, fetch_file, url_sha256

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1  # bump when the manifest's layout changes, so every source is seen as changed once
ACCEPTED = "a local folder, a .zip, .tar, .tar.gz or .tgz archive, or an http(s):// or file:// URL of such an archive"
# A file modified this recently may be modified again within the same mtime tick (git's "racy" files):
# its hash is not cached, so a same-size rewrite within the tick cannot hide behind a cached hash.
RACY_NS = 2 * 10**9
_URL_HEADERS = (("etag", "ETag"), ("last_modified", "Last-Modified"), ("content_length", "Content-Length"))

Kind = Literal["folder", "archive", "url"]


class SourceError(PipelineError):
    """`data.source` is missing, unsupported, unreachable or does not match `data.source_sha256`."""


# ---- what the source is


def _locate(source: str) -> tuple[Kind, Path | str]:
    """(kind, local path or URL) of `source`; SourceError when it is none of the accepted kinds."""
    if not source.strip():
        raise SourceError(f"data.source is empty; with data.dataset = folder set it to {ACCEPTED}")
    parts = urllib.parse.urlsplit(source)
    if parts.scheme in ("http", "https"):
        return "url", source
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise SourceError(f"data.source = {source!r}: a file:// URL must name a local path (file:///path/to/x)")
        path = Path(urllib.request.url2pathname(parts.path))
    elif "://" in source:
        raise SourceError(f"data.source = {source!r}: unsupported URL scheme {parts.scheme!r}; use {ACCEPTED}")
    else:
        path = Path(source).expanduser()
    if path.is_dir():
        return "folder", path
    if not path.exists():
        raise SourceError(f"data.source = {source!r}: {path} does not exist; set data.source to {ACCEPTED}")
    if path.is_file() and (zipfile.is_zipfile(path) or tarfile.is_tarfile(path)):
        return "archive", path
    raise SourceError(
        f"data.source = {source!r}: {path} is neither a folder nor a readable zip or tar archive (if it is one, it is "
        f"corrupt or truncated: fetch or re-create it); use {ACCEPTED}"
    )


def _scan(root: Path) -> list[tuple[str, Path, os.stat_result]]:
    """(relative posix path, path, stat) of every visible regular file under `root`, sorted by relative path."""
    found = []
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    rel = prefix + entry.name
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((Path(entry.path), rel + "/"))
                        continue
                    try:
                        st = entry.stat()  # follows a symlink to its file
                    except FileNotFoundError:
                        log.warning("%s: a broken symbolic link, skipped", entry.path)
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        log.info("%s: a symbolic link to a folder, not entered", entry.path)
                    elif stat.S_ISREG(st.st_mode):
                        found.append((rel, Path(entry.path), st))
        except OSError as err:
            raise SourceError(
                f"cannot read {folder}: {err.strerror or err}; check that it exists and is readable"
            ) from err
    return sorted(found, key=lambda f: f[0])


class _HashCache:
    """SHA-256 of files under one root, remembered by (relative path, size, mtime_ns, ctime_ns, inode).

    ctime, which no tool can set back, also catches a same-size rewrite whose mtime was restored (cp -p).
    """

    def __init__(self, cache_dir: Path, root: Path) -> None:
        key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
        self.path = cache_dir / "source-hashes" / f"{key}.json"
        self.now_ns = time.time_ns()
        try:
            old = json.loads(self.path.read_text())
        except (OSError, ValueError):
            old = {}
        self.old: dict[str, list] = old.get("files", {}) if isinstance(old, dict) else {}
        self.new: dict[str, list] = {}

    def sha256(self, rel: str, path: Path, st: os.stat_result) -> str:
        key = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        hit = self.old.get(rel)
        if isinstance(hit, list) and len(hit) == 5 and hit[:4] == key:
            sha = hit[4]
        else:
            try:
                sha = sha256_file(path)
            except OSError as err:
                raise SourceError(f"cannot read {path}: {err.strerror or err}; check its permissions") from err
        if st.st_mtime_ns < self.now_ns - RACY_NS:
            self.new[rel] = [*key, sha]
        return sha

    def save(self) -> None:
        if self.new != self.old:
            atomic.write_text(self.path, json.dumps({"files": self.new}, separators=(",", ":"), sort_keys=True))


def _hash_files(files: list[tuple[str, Path, os.stat_result]], root: Path, cache_dir: Path) -> list[str]:
    cache = _HashCache(cache_dir, root)
    shas = [cache.sha256(rel, path, st) for rel, path, st in files]
    cache.save()
    return shas


def _archive_sha256(path: Path, cache_dir: Path) -> str:
    (sha,) = _hash_files([(path.name, path, path.stat())], path.parent, cache_dir)
    return sha


def _url_manifest(url: str, settings: FetchSettings) -> dict:
    """The server's ETag / Last-Modified / Content-Length, or (when it gives neither of the first two) a hash."""
    headers = _head(url, settings)
    found = {key: headers[name] for key, name in _URL_HEADERS if headers.get(name)}
    if "etag" in found or "last_modified" in found:
        return found
    log.info("%s: the server gives no ETag or Last-Modified; hashing the whole file to see whether it changed", url)
    try:
        return {"sha256": url_sha256(url, settings)}
    except DownloadError as err:
        raise SourceError(f"data.source = {url!r}: {err}") from err


def _head(url: str, settings: FetchSettings) -> Mapping[str, str]:
    """Response headers of a HEAD request (retried like downloads); {} when the server does not do HEAD."""
    for attempt in range(1, max(1, settings.retries) + 1):
        try:
            resp = requests.head(url, allow_redirects=True, timeout=(settings.connect_timeout, settings.read_timeout))
        except requests.RequestException as err:
            problem = f"{type(err).__name__}: {err}"
        else:
            # HEAD not supported, or not signed for (S3 pre-signed URLs answer 403): fall back to hashing a GET
            if resp.status_code in (403, 405, 501):
                return {}
            if resp.status_code == 200:
                return resp.headers  # case-insensitive: a server may send "etag" as well as "ETag"
            problem = f"HTTP {resp.status_code}"
            if resp.status_code < 500 and resp.status_code != 429:
                break
        if attempt < settings.retries:
            time.sleep(settings.backoff * 2 ** (attempt - 1))
    raise SourceError(
        f"data.source = {url!r}: cannot check what the server holds ({problem}); check the URL and the network, "
        "or set data.source_sha256 to the archive's SHA-256 so that no request is needed to know it is unchanged"
    )


def source_manifest(source: str, source_sha256: str, cache_dir: Path, settings: FetchSettings) -> dict:
    """What `source` holds now, as JSON-able data that changes exactly when its content changes.

    folder: {"files": [[relpath, size, sha256], ...]}; archive (local or file://): {"size", "sha256"};
    http(s) URL: {"sha256": source_sha256} when given, else the server's {"etag", "last_modified",
    "content_length"} (a HEAD request), or {"sha256"} of the body when the server gives no ETag or Last-Modified.
    Each also has "version", "kind" and "source".
    """
    kind, where = _locate(source)
    out: dict = {"version": MANIFEST_VERSION, "kind": kind, "source": source}
    if kind == "url":
        return {**out, **({"sha256": source_sha256} if source_sha256 else _url_manifest(source, settings))}
    assert isinstance(where, Path)
    if kind == "archive":
        return {**out, "size": where.stat().st_size, "sha256": _archive_sha256(where, cache_dir)}
    files = _scan(where)
    shas = _hash_files(files, where, cache_dir)
    return {**out, "files": [[rel, st.st_size, sha] for (rel, _, st), sha in zip(files, shas, strict=True)]}


# ---- bringing it to dest


def _single_top(rels: list[str]) -> str | None:
    """The one top-level folder every file sits under, if there is one."""
    tops = {rel.split("/", 1)[0] for rel in rels}
    if len(tops) == 1 and all("/" in rel for rel in rels):
        return tops.pop()
    return None


def _install(source: str, files: list[tuple[str, Path]], work: Path, dest: Path, move: bool) -> dict:
    """Put `files` (relative path, path) into work/tree, stripping a single top folder, then swap it onto dest."""
    if not files:
        raise SourceError(
            f"data.source = {source!r} holds no files (hidden files and folders are skipped); "
            "put the images in it, in one subfolder per class"
        )
    top = _single_top([rel for rel, _ in files])
    tree = work / "tree"
    total = 0
    for rel, src in files:
        target = tree / (rel[len(top) + 1 :] if top else rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        if move:
            os.replace(src, target)
        else:
            shutil.copy2(src, target)
        total += target.stat().st_size
    tree.mkdir(exist_ok=True)
    atomic.replace_dir(tree, dest)
    if top:
        log.info("%s: every file was under %s/, which was stripped", source, top)
    return {"files": len(files), "bytes": total, "stripped": top}


def fetch_source(source: str, source_sha256: str, dest: Path, cache_dir: Path, settings: FetchSettings) -> dict:
    """Make `dest` hold exactly the files of `source` (see the module docstring); return a summary.

    Summary: {"kind": folder|archive|url, "files", "bytes", "sha256" (of the archive as stored or served, None
    for a folder), "stripped" (the top-level folder removed, or None)}.
    """
    kind, where = _locate(source)
    dest = Path(dest)
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise SourceError(f"{dest} exists and is not a folder; remove it, it is where data.source is copied to")
    archive_sha = None
    if kind == "url":
        assert isinstance(where, str)
        checksum = Checksum(source_sha256, "sha256", "download") if source_sha256 else None
        name = Path(urllib.parse.urlsplit(where).path).name or "source"
        name = name[:-3] if name.endswith(".gz") else name  # stored gunzipped: x.tar.gz -> x.tar
        local = cache_dir / "downloads" / f"{hashlib.sha256(where.encode()).hexdigest()[:16]}-{name}"
        advice = (
            "Check the network and data.source; if the server's file changed on purpose, update data.source_sha256."
        )
        got = fetch_file(where, [where], checksum, local, settings, advice=advice)
        archive, archive_sha = got.path, got.download_sha256 or source_sha256
    else:
        assert isinstance(where, Path)
        archive = where
        if kind == "folder" and source_sha256:
            raise SourceError(
                f"data.source_sha256 is set but data.source = {source!r} is a folder; a checksum only applies to an "
                "archive: clear data.source_sha256"
            )
        if kind == "archive":
            archive_sha = _archive_sha256(where, cache_dir)
            if source_sha256 and archive_sha != source_sha256:
                raise SourceError(
                    f"data.source = {source!r}: sha256 {archive_sha}, but data.source_sha256 is {source_sha256}; "
                    "if the archive changed on purpose, update data.source_sha256"
                )

    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        if kind == "folder":
            files = [(rel, path) for rel, path, _ in _scan(archive)]
            summary = _install(source, files, work, dest, move=False)
        else:
            try:
                extract_archive(archive, work / "x")
            except ArchiveError as err:
                raise SourceError(f"data.source = {source!r}: {err}") from err
            files = [(rel, path) for rel, path, _ in _scan(work / "x")]
            summary = _install(source, files, work, dest, move=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {"kind": kind, **summary, "sha256": archive_sha}
    log.info("%s: %d files (%d bytes) from %s", dest, summary["files"], summary["bytes"], source)
    return summary
