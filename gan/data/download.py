"""Download stage: fetch a dataset's files from mirrors, verified by their checksums.

Each file is streamed (and gunzipped on the fly when it is gzip) into a temporary file beside its
destination, hashed as it arrives, both as downloaded and decompressed, and renamed into place only when
its checksum matches. A checksum (`gan.core.datasets.Checksum`) is SHA-256 or MD5, of the decompressed (stored)
bytes or of the bytes as served; `None` (a user's URL without `data.source_sha256`) means "just download".
The SHA-256 of every stored file is logged and returned, so a file verified only by an MD5 can be pinned.

A file already present is not downloaded again when it verifies: by its own checksum when that is of the
stored bytes; otherwise by the SHA-256 that `.verified.json` beside it recorded after its verified download
(a stored file that no longer matches that record is downloaded again). A file without a checksum is always
downloaded again. Partial downloads are not resumed (no HTTP Range): a retry starts the file over.

Transient network errors (5xx/429, timeouts, a connection broken mid-file, truncated or corrupt gzip) are
retried with exponential backoff; a mirror that cannot help (404, wrong checksum, unknown host, connection
refused) is left for the next one at once. When every mirror fails, the error lists each mirror and why.
Any other exception is a bug, not a network problem: it propagates as itself, unretried.

For `format: cifar10-binary` the verified archive is then extracted (safely, by `gan.data.archives`) so that
`<dest_dir>/cifar-10-batches-bin/` holds the batch files; that is skipped when the folder is already there,
complete and extracted from the same archive.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import shutil
import socket
import tempfile
import time
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import requests
import urllib3
from tqdm import tqdm

from gan.core import atomic
from gan.core.datasets import Checksum, DatasetSpec
from gan.core.errors import PipelineError
from gan.core.hashing import file_digests, sha256_file
from gan.data.archives import extract_archive
from gan.data.cifar import BATCHES_DIR_NAME, SPLIT_FILES, CifarError, check_meta

log = logging.getLogger(__name__)
CHUNK = 1 << 16
SIDECAR = ".verified.json"  # beside the stored files: what each was verified as, and its SHA-256
# What reading a response body raises when the network (not our code) fails: urllib3 wraps
# socket errors and short reads as ProtocolError / ReadTimeoutError; the rest is for safety.
_BODY_NETWORK_ERRORS = (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)


class DownloadError(PipelineError):
    """No mirror produced a verified copy of a file."""


class _Transient(Exception):
    """Worth retrying on the same mirror (5xx, reset, timeout, truncation)."""


class _MirrorFailed(Exception):
    """Not worth retrying on this mirror (404, bad checksum, unknown host, connection refused)."""


@dataclass(frozen=True)
class FetchSettings:
    connect_timeout: float = 3.0
    read_timeout: float = 30.0
    retries: int = 3  # attempts per mirror for transient errors
    backoff: float = 0.5  # seconds before the 2nd attempt; doubles each time
    progress: bool = True


def _caused_by(err: BaseException | None, match: Callable[[BaseException], bool]) -> bool:
    """Whether `err` or an exception it wraps (cause, context, or requests' args[0]) satisfies `match`."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if match(err):
            return True
        err = (
            err.__cause__
            or err.__context__
            or (err.args[0] if err.args and isinstance(err.args[0], BaseException) else None)
        )
    return False


def _is_dns_failure(err: BaseException) -> bool:
    return _caused_by(err, lambda e: isinstance(e, socket.gaierror) or "NameResolution" in type(e).__name__)


def _is_connection_refused(err: BaseException) -> bool:
    return _caused_by(err, lambda e: isinstance(e, ConnectionRefusedError))


def _open_stream(url: str, settings: FetchSettings) -> tuple[Iterator[bytes], int | None]:
    """Return (chunks, compressed size if known). Raises _Transient / _MirrorFailed."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme == "file":
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
        if not path.is_file():
            raise _MirrorFailed(f"no such file {path}")
        f = open(path, "rb")

        def chunks() -> Iterator[bytes]:
            with f:
                yield from iter(lambda: f.read(CHUNK), b"")

        return chunks(), path.stat().st_size
    if scheme not in ("http", "https"):
        raise _MirrorFailed(f"unsupported URL scheme {scheme!r} (use https://, http:// or file://)")
    try:
        resp = requests.get(url, stream=True, timeout=(settings.connect_timeout, settings.read_timeout))
    except requests.RequestException as err:
        # Both are answers, not hiccups: retrying within seconds would not change them, so try the next mirror.
        if _is_dns_failure(err):
            host = urllib.parse.urlsplit(url).hostname
            raise _MirrorFailed(f"unknown host {host} (DNS lookup failed; check the mirror URL)") from err
        if _is_connection_refused(err):
            msg = "connection refused (nothing listens at that host and port; check the mirror URL)"
            raise _MirrorFailed(msg) from err
        raise _Transient(f"{type(err).__name__}: {err}") from err
    if resp.status_code >= 500 or resp.status_code == 429:
        resp.close()
        raise _Transient(f"HTTP {resp.status_code}")
    if resp.status_code != 200:
        resp.close()
        raise _MirrorFailed(f"HTTP {resp.status_code}")
    size = resp.headers.get("Content-Length")

    def chunks() -> Iterator[bytes]:
        with resp:
            try:
                # decode_content=False: we gunzip ourselves, by content, not by header.
                yield from resp.raw.stream(CHUNK, decode_content=False)
            except _BODY_NETWORK_ERRORS as err:  # urllib3 ProtocolError, ReadTimeout, reset...; a bug passes through
                raise _Transient(f"connection broken mid-file: {type(err).__name__}: {err}") from err

    return chunks(), int(size) if size and size.isdigit() else None


@dataclass(frozen=True)
class Fetched:
    """A stored, verified file."""

    path: Path
    sha256: str  # of the stored (decompressed) bytes: what to pin
    download_sha256: str | None  # of the bytes as served; None when the stored copy was already verified
    fresh: bool  # downloaded by this call (False: already present and verified)


def _as_checksum(checksum: Checksum | str | None) -> Checksum | None:
    return Checksum(checksum) if isinstance(checksum, str) else checksum


def _describe(checksum: Checksum) -> str:
    what = "decompressed bytes" if checksum.of == "decompressed" else "bytes as downloaded"
    return f"{checksum.algorithm} {checksum.hexdigest.lower()} of the {what}"


def _fetch_once(
    url: str, checksum: Checksum | None, dest: Path, settings: FetchSettings, label: str
) -> tuple[str, str]:
    """Stream `url` into `dest` (gunzipped), verified by `checksum`. Returns (sha256 stored, sha256 downloaded)."""
    chunks, size = _open_stream(url, settings)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    stored_h, raw_h = hashlib.sha256(), hashlib.sha256()
    # The checksum's own hasher, unless it is one of the two SHA-256s computed anyway.
    check_h = None if checksum is None or checksum.algorithm == "sha256" else getattr(hashlib, checksum.algorithm)()
    check_raw = checksum is not None and checksum.of == "download"
    inflater: zlib._Decompress | None = None
    first = True
    try:
        with (
            os.fdopen(fd, "wb") as out,
            tqdm(total=size, unit="B", unit_scale=True, desc=label, disable=not settings.progress, leave=False) as bar,
        ):
            for chunk in chunks:
                if first:
                    first = False
                    if chunk[:2] == b"\x1f\x8b":
                        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                raw_h.update(chunk)
                if inflater is None:
                    data = chunk
                else:  # a gzip file may be several concatenated members (`cat a.gz b.gz`): inflate them all
                    parts, rest = [], chunk
                    while rest:
                        if inflater.eof:
                            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                        parts.append(inflater.decompress(rest))
                        rest = inflater.unused_data
                    data = b"".join(parts)
                stored_h.update(data)
                if check_h is not None:
                    check_h.update(chunk if check_raw else data)
                out.write(data)
                bar.update(len(chunk))
            if inflater is not None:
                tail = inflater.flush()
                stored_h.update(tail)
                if check_h is not None and not check_raw:
                    check_h.update(tail)
                out.write(tail)
                if not inflater.eof:
                    raise _Transient("gzip stream ended early (truncated download)")
            out.flush()
            os.fsync(out.fileno())
        if first:
            raise _Transient("empty response")
        if checksum is not None:
            got = (check_h or (raw_h if check_raw else stored_h)).hexdigest()
            if got != checksum.hexdigest.lower():
                what = "bytes as downloaded" if check_raw else "decompressed bytes"
                raise _MirrorFailed(
                    f"checksum mismatch: got {checksum.algorithm} {got} of the {what}, expected {checksum.hexdigest}"
                )
        os.replace(tmp, dest)
    except zlib.error as err:
        raise _Transient(f"corrupt gzip data: {err}") from err
    finally:
        tmp.unlink(missing_ok=True)
    return stored_h.hexdigest(), raw_h.hexdigest()


T = TypeVar("T")
MIRROR_ADVICE = (
    "Check the network, or add a mirror that has the file to data.mirrors in params.yaml"
    " (for fashion-mnist offline: apt-get install dataset-fashion-mnist)."
)


def _with_retries(
    label: str, urls: Sequence[str], settings: FetchSettings, advice: str, attempt: Callable[[str], T]
) -> T:
    """`attempt(url)` on each URL in turn until one succeeds: transient errors retried with backoff."""
    failures: list[str] = []
    for url in urls:
        for n in range(1, max(1, settings.retries) + 1):
            try:
                return attempt(url)
            except _MirrorFailed as err:
                failures.append(f"{url}: {err}")
                log.warning("%s failed: %s; trying next mirror", url, err)
                break
            except _Transient as err:
                if n >= settings.retries:
                    failures.append(f"{url}: {err} (after {n} attempts)")
                    log.warning("%s failed %d times: %s; trying next mirror", url, n, err)
                    break
                delay = settings.backoff * 2 ** (n - 1)
                log.warning("%s attempt %d failed: %s; retrying in %.1fs", url, n, err, delay)
                time.sleep(delay)
    raise DownloadError(
        f"could not get a verified copy of {label} from any mirror:\n"
        + "\n".join(f"  - {f}" for f in failures)
        + f"\n{advice}"
    )


# ---- the record of verified downloads (for checksums of the bytes as served, which a stored file cannot show)


def _read_sidecar(folder: Path) -> dict:
    path = folder / SIDECAR
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        log.warning("%s is unreadable (%s): ignored, its files will be verified again by downloading them", path, err)
        return {}
    return data if isinstance(data, dict) else {}


def _update_sidecar(folder: Path, section: str, name: str, entry: dict) -> None:
    data = _read_sidecar(folder)
    data.setdefault(section, {})[name] = entry
    atomic.write_text(folder / SIDECAR, json.dumps(data, indent=1, sort_keys=True) + "\n")


def _stored_sha256_if_verified(dest: Path, checksum: Checksum) -> str | None:
    """The SHA-256 of `dest` if it (still) verifies against `checksum`, else None."""
    if checksum.of == "decompressed":
        sums = file_digests(dest, {"sha256", checksum.algorithm})
        return sums["sha256"] if sums[checksum.algorithm] == checksum.hexdigest.lower() else None
    entry = _read_sidecar(dest.parent).get("files", {}).get(dest.name)
    if not isinstance(entry, dict) or entry.get("verified") != _describe(checksum):
        return None
    sha = sha256_file(dest)
    if sha != entry.get("sha256"):
        log.warning(
            "%s changed since it was verified (sha256 %s, recorded %s): downloading it again",
            dest,
            sha,
            entry.get("sha256"),
        )
        return None
    return sha


def fetch_file(
    label: str,
    urls: Sequence[str],
    checksum: Checksum | str | None,
    dest: str | Path,
    settings: FetchSettings = FetchSettings(),
    advice: str = MIRROR_ADVICE,
) -> Fetched:
    """Store at `dest` the (gunzipped) content of the first of `urls` that verifies against `checksum`.

    `checksum` None: no verification (and no "already present" shortcut). `advice` ends the error raised when
    every URL fails: what the user can do about it.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    checksum = _as_checksum(checksum)
    if checksum is not None and dest.is_file():
        sha = _stored_sha256_if_verified(dest, checksum)
        if sha is not None:
            log.info("%s: already present and verified", dest)
            return Fetched(dest, sha, None, fresh=False)

    def attempt(url: str) -> Fetched:
        sha, raw_sha = _fetch_once(url, checksum, dest, settings, label=label)
        return Fetched(dest, sha, raw_sha, fresh=True)

    got = _with_retries(label, urls, settings, advice, attempt)
    how = f"verified ({_describe(checksum)})" if checksum is not None else "not verified (no checksum given)"
    log.info("%s: downloaded, %s; sha256 of the stored bytes %s", dest, how, got.sha256)
    if checksum is not None and checksum.of == "download":  # the stored file cannot show it: record that it did
        _update_sidecar(dest.parent, "files", dest.name, {"sha256": got.sha256, "verified": _describe(checksum)})
    return got


def _mirror_urls(mirrors: Sequence[str], remote_name: str) -> list[str]:
    return [base.rstrip("/") + "/" + remote_name for base in mirrors]


def url_sha256(url: str, settings: FetchSettings = FetchSettings()) -> str:
    """SHA-256 of the bytes `url` serves (not decompressed), with the same retries; nothing is stored."""

    def attempt(u: str) -> str:
        chunks, _ = _open_stream(u, settings)
        h = hashlib.sha256()
        for chunk in chunks:
            h.update(chunk)
        return h.hexdigest()

    return _with_retries(url, [url], settings, "Check the network and the URL.", attempt)


# ---- CIFAR-10: the verified archive is extracted to cifar-10-batches-bin/


def _tree_sizes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def _extract_cifar10(archive: Fetched, dest_dir: Path) -> Path:
    """Extract `archive` so that dest_dir/cifar-10-batches-bin holds the batches; skipped if already done."""
    batches = dest_dir / BATCHES_DIR_NAME
    done = _read_sidecar(dest_dir).get("extracted", {}).get(BATCHES_DIR_NAME)
    if (
        not archive.fresh
        and isinstance(done, dict)
        and done.get("archive_sha256") == archive.sha256
        and batches.is_dir()
        and _tree_sizes(batches) == done.get("files")
    ):
        log.info("%s: already extracted from %s", batches, archive.path.name)
        check_meta(batches)
        return batches
    required = [name for names in SPLIT_FILES.values() for name in names]
    work = Path(tempfile.mkdtemp(prefix=f".{BATCHES_DIR_NAME}.", suffix=".tmp", dir=dest_dir))
    try:
        extract_archive(archive.path, work / "x")
        got = work / "x" / BATCHES_DIR_NAME
        missing = [name for name in required if not (got / name).is_file()]
        if missing:
            raise CifarError(
                f"{archive.path}: verified, but it holds no {BATCHES_DIR_NAME}/{', '.join(missing)}; "
                "it is not the binary version of CIFAR-10 (cifar-10-binary.tar.gz): check data.mirrors"
            )
        try:
            check_meta(got)
        except CifarError as err:  # name the archive, not the temp folder it was extracted to
            raise CifarError(f"{archive.path}: {str(err).replace(str(got), BATCHES_DIR_NAME)}") from err
        sizes = _tree_sizes(got)
        atomic.replace_dir(got, batches)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _update_sidecar(dest_dir, "extracted", BATCHES_DIR_NAME, {"archive_sha256": archive.sha256, "files": sizes})
    log.info("%s: extracted from %s", batches, archive.path.name)
    return batches


def download_dataset(
    spec: DatasetSpec,
    dest_dir: str | Path,
    extra_mirrors: Sequence[str] = (),
    settings: FetchSettings = FetchSettings(),
) -> dict[str, str]:
    """Download every file of `spec` into `dest_dir` (decompressed). Returns local name -> sha256 of its bytes.

    A `cifar10-binary` dataset's archive is then extracted to dest_dir/cifar-10-batches-bin.
    """
    dest_dir = Path(dest_dir)
    mirrors = [*extra_mirrors, *spec.mirrors]
    fetched = {}
    for remote, checksum in spec.checksums.items():
        local = spec.local_name(remote)
        fetched[local] = fetch_file(remote, _mirror_urls(mirrors, remote), checksum, dest_dir / local, settings)
    if spec.format == "cifar10-binary":
        archives = [f for name, f in fetched.items() if name.endswith(".tar")]
        if len(archives) != 1:
            raise DownloadError(f"dataset {spec.name}: a cifar10-binary dataset has exactly one .tar(.gz) file")
        _extract_cifar10(archives[0], dest_dir)
    return {name: f.sha256 for name, f in fetched.items()}
