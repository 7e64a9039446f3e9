"""Download stage: fetch a dataset's files from mirrors, verified by SHA-256.

Each file is streamed (and gunzipped on the fly when it is gzip) into a
temporary file beside its destination, hashed as it arrives, and renamed into
place only when the hash of the decompressed bytes matches. Transient network
errors (5xx/429, timeouts, a connection broken mid-file, truncated or corrupt
gzip) are retried with exponential backoff; a mirror that cannot help (404,
wrong checksum, unknown host, connection refused) is left for the next one at
once. When every mirror fails, the error lists each mirror and why. Any other
exception is a bug, not a network problem: it propagates as itself, unretried.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import socket
import tempfile
import time
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests
import urllib3
from tqdm import tqdm

from gan.datasets import DatasetSpec
from gan.errors import PipelineError
from gan.hashing import sha256_file

log = logging.getLogger(__name__)
CHUNK = 1 << 16
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


def _fetch_once(url: str, sha256: str, dest: Path, settings: FetchSettings, label: str) -> None:
    chunks, size = _open_stream(url, settings)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    h = hashlib.sha256()
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
                h.update(data)
                out.write(data)
                bar.update(len(chunk))
            if inflater is not None:
                tail = inflater.flush()
                h.update(tail)
                out.write(tail)
                if not inflater.eof:
                    raise _Transient("gzip stream ended early (truncated download)")
            out.flush()
            os.fsync(out.fileno())
        if first:
            raise _Transient("empty response")
        got = h.hexdigest()
        if got != sha256:
            raise _MirrorFailed(f"checksum mismatch: got sha256 {got[:16]}..., expected {sha256[:16]}...")
        os.replace(tmp, dest)
    except zlib.error as err:
        raise _Transient(f"corrupt gzip data: {err}") from err
    finally:
        tmp.unlink(missing_ok=True)


def fetch_verified(
    remote_name: str, sha256: str, mirrors: Sequence[str], dest: str | Path, settings: FetchSettings = FetchSettings()
) -> Path:
    """Fetch `remote_name` from the first mirror that yields bytes hashing to `sha256`."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file() and sha256_file(dest) == sha256:
        log.info("%s: already present and verified", dest)
        return dest
    failures: list[str] = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + remote_name
        for attempt in range(1, max(1, settings.retries) + 1):
            try:
                _fetch_once(url, sha256, dest, settings, label=remote_name)
                log.info("%s: verified from %s", dest.name, url)
                return dest
            except _MirrorFailed as err:
                failures.append(f"{url}: {err}")
                log.warning("%s failed: %s; trying next mirror", url, err)
                break
            except _Transient as err:
                if attempt >= settings.retries:
                    failures.append(f"{url}: {err} (after {attempt} attempts)")
                    log.warning("%s failed %d times: %s; trying next mirror", url, attempt, err)
                    break
                delay = settings.backoff * 2 ** (attempt - 1)
                log.warning("%s attempt %d failed: %s; retrying in %.1fs", url, attempt, err, delay)
                time.sleep(delay)
    raise DownloadError(
        f"could not get a verified copy of {remote_name} from any mirror:\n"
        + "\n".join(f"  - {f}" for f in failures)
        + "\nCheck the network, or add a mirror that has the file to data.mirrors in params.yaml"
        + " (for fashion-mnist offline: apt-get install dataset-fashion-mnist)."
    )


def download_dataset(
    spec: DatasetSpec,
    dest_dir: str | Path,
    extra_mirrors: Sequence[str] = (),
    settings: FetchSettings = FetchSettings(),
) -> dict[str, str]:
    """Download every file of `spec` into `dest_dir` (decompressed). Returns name -> sha256."""
    dest_dir = Path(dest_dir)
    mirrors = [*extra_mirrors, *spec.mirrors]
    out = {}
    for remote, sha in spec.files.items():
        local = spec.local_name(remote)
        fetch_verified(remote, sha, mirrors, dest_dir / local, settings)
        out[local] = sha
    return out
