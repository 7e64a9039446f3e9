"""gan.data.download against a real HTTP server on 127.0.0.1 (and file:// mirrors).

The `server` fixture runs a ThreadingHTTPServer whose behaviour is scripted per
path: `server.script(path, act1, act2, ...)` makes the n-th request to `path`
run act_n (the last act repeats); unscripted paths answer 404. Every request is
counted in `server.hits[path]`.
"""

from __future__ import annotations

import collections
import gzip
import hashlib
import http.server
import io
import json
import logging
import os
import socket
import tarfile
import threading
import time
import types
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import requests
import urllib3

import gan.data.download as download
from gan.core.datasets import Checksum, DatasetSpec
from gan.core.hashing import sha256_file
from gan.data import cifar
from gan.data.download import DownloadError, FetchSettings, download_dataset, fetch_file

FAST = FetchSettings(connect_timeout=1, read_timeout=1, retries=3, backoff=0.01, progress=False)
NAME = "x-idx3-ubyte.gz"
LOCAL = "x-idx3-ubyte"


def payload(n: int = 4096, seed: int = 0) -> bytes:
    return bytes(hashlib.sha256(f"{seed}:{i}".encode()).digest()[0] for i in range(n))


DATA = payload()
GZ = gzip.compress(DATA)
SHA = hashlib.sha256(DATA).hexdigest()


def fetch_from(mirrors: list[str], dest: Path, settings: FetchSettings = FAST, checksum=SHA) -> Path:
    """NAME from the first of `mirrors` (base URLs) whose copy verifies against `checksum` (default: SHA-256 of the
    stored bytes), as download_dataset fetches each file."""
    return fetch_file(NAME, [m.rstrip("/") + "/" + NAME for m in mirrors], checksum, dest, settings).path


# ---------------------------------------------------------------------------- scripted server

Action = Callable[[http.server.BaseHTTPRequestHandler], None]


def serve(body: bytes, status: int = 200) -> Action:
    """A normal response; Content-Length is len(body)."""

    def act(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    return act


def status(code: int) -> Action:
    return serve(f"error {code}\n".encode(), status=code)


def drop_midway(body: bytes) -> Action:
    """Promise the full Content-Length, send half the body, then cut the connection."""

    def act(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body[: len(body) // 2])
        h.wfile.flush()
        h.close_connection = True
        h.connection.shutdown(socket.SHUT_RDWR)

    return act


class ScriptedServer:
    def __init__(self) -> None:
        self.scripts: dict[str, list[Action]] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                with outer.lock:
                    outer.hits[self.path] += 1
                    acts = outer.scripts.get(self.path)
                    act = (acts.pop(0) if len(acts) > 1 else acts[0]) if acts else status(404)
                act(self)

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:  # dropped sockets are intended
                pass

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def hang(self, seconds: float = 10.0) -> Action:
        """Read the request, never answer (until teardown or `seconds`)."""

        def act(h: http.server.BaseHTTPRequestHandler) -> None:
            self.stop.wait(seconds)
            h.close_connection = True

        return act

    def script(self, path: str, *acts: Action) -> None:
        with self.lock:
            self.scripts[path] = list(acts)

    def mirror(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}/"


@pytest.fixture
def server():
    s = ScriptedServer()
    s.thread.start()
    try:
        yield s
    finally:
        s.stop.set()
        s.httpd.shutdown()
        s.httpd.server_close()
        s.thread.join(timeout=5)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """requests honours *_proxy variables; 127.0.0.1 must be reached directly."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def refused_port():
    """A port that is bound but not listening: connecting to it is refused (and nobody can take it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.fixture
def attempts(monkeypatch) -> collections.Counter[str]:
    """Counts fetch attempts per URL (calls of download._fetch_once), whatever the scheme or the outcome."""
    counter: collections.Counter[str] = collections.Counter()
    real = download._fetch_once

    def counting(url: str, *args, **kwargs) -> None:
        counter[url] += 1
        return real(url, *args, **kwargs)

    monkeypatch.setattr(download, "_fetch_once", counting)
    return counter


def listing(d: Path) -> set[str]:
    """Everything in d, hidden files (`.x.part`) included."""
    return set(os.listdir(d))


PRECIOUS = b"an older, still useful copy that must survive a failed fetch\n"


@pytest.fixture
def dest_dir(tmp_path: Path) -> Path:
    d = tmp_path / "raw"
    d.mkdir()
    return d


def assert_failed_cleanly(d: Path, dest: Path) -> None:
    """After a failed fetch: the pre-existing dest is intact and nothing else was left behind."""
    assert dest.read_bytes() == PRECIOUS
    assert listing(d) == {dest.name}, f"stray files: {listing(d) - {dest.name}}"


# ---------------------------------------------------------------------------- 1. happy path


def test_gz_over_http_is_decompressed_and_verified(server, dest_dir):
    server.script(f"/m/{NAME}", serve(GZ))
    out = fetch_from([server.mirror("m")], dest_dir / LOCAL)
    assert out == dest_dir / LOCAL
    assert out.read_bytes() == DATA
    assert sha256_file(out) == SHA
    assert server.hits == {f"/m/{NAME}": 1}
    assert listing(dest_dir) == {LOCAL}


def test_dest_parent_is_created(server, tmp_path):
    server.script(f"/m/{NAME}", serve(GZ))
    dest = tmp_path / "a" / "b" / LOCAL
    assert fetch_from([server.mirror("m")], dest).read_bytes() == DATA


# ---------------------------------------------------------------------------- 2. 5xx is retried


def test_http_500_then_success_retries_same_mirror(server, dest_dir):
    server.script(f"/m/{NAME}", status(500), serve(GZ))
    out = fetch_from([server.mirror("m")], dest_dir / LOCAL)
    assert out.read_bytes() == DATA
    assert server.hits == {f"/m/{NAME}": 2}
    assert listing(dest_dir) == {LOCAL}


def record_sleeps(monkeypatch, sleeps: list[float], then_sleep: bool = False) -> None:
    """`time.sleep` calls of this thread (the download's backoff) appended to `sleeps` (and slept when `then_sleep`).
    `download.time` is the process's one `time` module: other threads of this test worker (the completed flow built
    in the background) keep their real sleep and are not recorded."""
    real_sleep, me = time.sleep, threading.get_ident()

    def sleep(seconds: float) -> None:
        if threading.get_ident() != me:
            return real_sleep(seconds)
        sleeps.append(seconds)
        if then_sleep:
            real_sleep(seconds)

    monkeypatch.setattr(download.time, "sleep", sleep)


def test_persistent_5xx_exhausts_retries_with_backoff_then_next_mirror(server, dest_dir, monkeypatch):
    sleeps: list[float] = []
    record_sleeps(monkeypatch, sleeps, then_sleep=True)
    server.script(f"/busy/{NAME}", status(503))
    server.script(f"/ok/{NAME}", serve(GZ))
    out = fetch_from([server.mirror("busy"), server.mirror("ok")], dest_dir / LOCAL)
    assert out.read_bytes() == DATA
    assert server.hits == {f"/busy/{NAME}": 3, f"/ok/{NAME}": 1}
    assert sleeps == pytest.approx([0.01, 0.02])  # backoff doubles; no sleep after the last attempt


def test_http_429_is_transient(server, dest_dir):
    server.script(f"/m/{NAME}", status(429), status(429), serve(GZ))
    assert fetch_from([server.mirror("m")], dest_dir / LOCAL).read_bytes() == DATA
    assert server.hits[f"/m/{NAME}"] == 3


def test_persistent_5xx_everywhere_reports_attempts(server, dest_dir):
    dest = dest_dir / LOCAL
    dest.write_bytes(PRECIOUS)
    server.script(f"/m/{NAME}", status(500))
    with pytest.raises(DownloadError) as ei:
        fetch_from([server.mirror("m")], dest)
    msg = str(ei.value)
    assert f"{server.mirror('m')}{NAME}: HTTP 500 (after 3 attempts)" in msg
    assert server.hits == {f"/m/{NAME}": 3}
    assert_failed_cleanly(dest_dir, dest)


# ---------------------------------------------------------------------------- 3. dropped connection


@pytest.mark.parametrize("body", [GZ, DATA], ids=["gz", "raw"])
def test_connection_dropped_midfile_is_retried(server, dest_dir, body):
    dest = dest_dir / LOCAL
    dest.write_bytes(PRECIOUS)
    server.script(f"/m/{NAME}", drop_midway(body), serve(body))
    out = fetch_from([server.mirror("m")], dest)
    assert out.read_bytes() == DATA
    assert server.hits == {f"/m/{NAME}": 2}  # same mirror, not "checksum mismatch -> next mirror"
    assert listing(dest_dir) == {LOCAL}


def test_connection_always_dropped_fails_cleanly(server, dest_dir):
    dest = dest_dir / LOCAL
    dest.write_bytes(PRECIOUS)
    server.script(f"/m/{NAME}", drop_midway(DATA))
    with pytest.raises(DownloadError) as ei:
        fetch_from([server.mirror("m")], dest)
    assert "connection broken mid-file" in str(ei.value)
    assert "(after 3 attempts)" in str(ei.value)
    assert server.hits == {f"/m/{NAME}": 3}
    assert_failed_cleanly(dest_dir, dest)


# ---------------------------------------------------------------------------- 4. wrong content


def test_checksum_mismatch_is_not_retried_and_falls_through(server, dest_dir):
    dest = dest_dir / LOCAL
    dest.write_bytes(PRECIOUS)
    server.script(f"/bad/{NAME}", serve(gzip.compress(payload(seed=1))))
    server.script(f"/good/{NAME}", serve(GZ))
    out = fetch_from([server.mirror("bad"), server.mirror("good")], dest)
    assert out.read_bytes() == DATA
    assert server.hits == {f"/bad/{NAME}": 1, f"/good/{NAME}": 1}
    assert listing(dest_dir) == {LOCAL}


def test_all_mirrors_bad_checksum_lists_every_mirror(server, dest_dir):
    dest = dest_dir / LOCAL
    dest.write_bytes(PRECIOUS)
    server.script(f"/bad1/{NAME}", serve(gzip.compress(payload(seed=1))))
    server.script(f"/bad2/{NAME}", serve(payload(seed=2)))  # raw, also wrong
    mirrors = [server.mirror("bad1"), server.mirror("bad2")]
    with pytest.raises(DownloadError) as ei:
        fetch_from(mirrors, dest)
    msg = str(ei.value)
    assert NAME in msg.splitlines()[0]
    for m in mirrors:
        assert f"{m}{NAME}: checksum mismatch" in msg
    assert msg.count("checksum mismatch") == 2
    assert SHA[:16] in msg
    assert server.hits == {f"/bad1/{NAME}": 1, f"/bad2/{NAME}": 1}
    assert_failed_cleanly(dest_dir, dest)


def test_html_error_page_with_200_is_refused(server, dest_dir):
    server.script(f"/portal/{NAME}", serve(b"<html>please log in</html>"))
    with pytest.raises(DownloadError, match="checksum mismatch"):
        fetch_from([server.mirror("portal")], dest_dir / LOCAL)
    assert server.hits == {f"/portal/{NAME}": 1}
    assert listing(dest_dir) == set()


# ---------------------------------------------------------------------------- 5. truncated gzip


def test_truncated_gzip_is_retried(server, dest_dir):
    short = GZ[: len(GZ) // 2]  # Content-Length matches: only the gzip stream is short
    server.script(f"/m/{NAME}", serve(short), serve(GZ))
    out = fetch_from([server.mirror("m")], dest_dir / LOCAL)
    assert out.read_bytes() == DATA
    assert server.hits == {f"/m/{NAME}": 2}
    assert listing(dest_dir) == {LOCAL}


@pytest.mark.parametrize("cut", [len(GZ) // 2, len(GZ) - 4], ids=["half", "in-trailer"])
def test_truncated_gzip_forever_reports_truncation(server, dest_dir, cut):
    dest = dest_dir / LOCAL
    dest.write_bytes(PRECIOUS)
    server.script(f"/m/{NAME}", serve(GZ[:cut]))
    with pytest.raises(DownloadError) as ei:
        fetch_from([server.mirror("m")], dest)
    msg = str(ei.value)
    assert "truncated" in msg and "(after 3 attempts)" in msg
    assert server.hits == {f"/m/{NAME}": 3}
    assert_failed_cleanly(dest_dir, dest)


def test_corrupt_gzip_data_is_transient(server, dest_dir):
    bad = bytearray(GZ)
    bad[len(bad) // 2] ^= 0xFF  # deflate/CRC error, not a short stream
    server.script(f"/m/{NAME}", serve(bytes(bad)), serve(GZ))
    assert fetch_from([server.mirror("m")], dest_dir / LOCAL).read_bytes() == DATA
    assert server.hits == {f"/m/{NAME}": 2}
    assert listing(dest_dir) == {LOCAL}


# ---------------------------------------------------------------------------- 6. hanging server


def test_hanging_server_times_out_then_file_mirror(server, dest_dir, tmp_path):
    local = tmp_path / "mirror"
    local.mkdir()
    (local / NAME).write_bytes(GZ)
    dest = dest_dir / LOCAL
    dest.write_bytes(PRECIOUS)
    server.script(f"/slow/{NAME}", server.hang())
    t0 = time.monotonic()
    out = fetch_from([server.mirror("slow"), local.as_uri() + "/"], dest)
    elapsed = time.monotonic() - t0
    assert out.read_bytes() == DATA
    assert server.hits == {f"/slow/{NAME}": 3}
    assert 2.5 < elapsed < 8, elapsed  # 3 x read_timeout (1 s) + tiny backoff
    assert listing(dest_dir) == {LOCAL}


def test_server_stalling_midbody_times_out(server, dest_dir):
    def stall(h):
        h.send_response(200)
        h.send_header("Content-Length", str(len(GZ)))
        h.end_headers()
        h.wfile.write(GZ[:100])
        h.wfile.flush()
        server.stop.wait(10)

    dest = dest_dir / LOCAL
    dest.write_bytes(PRECIOUS)
    server.script(f"/m/{NAME}", stall)
    fast1 = FetchSettings(connect_timeout=1, read_timeout=0.5, retries=1, backoff=0.01, progress=False)
    with pytest.raises(DownloadError, match="connection broken mid-file"):
        fetch_from([server.mirror("m")], dest, fast1)
    assert server.hits == {f"/m/{NAME}": 1}
    assert_failed_cleanly(dest_dir, dest)


# ---------------------------------------------------------------------------- 7. file:// mirrors


@pytest.mark.parametrize("stored", [GZ, DATA], ids=["gz", "raw"])
def test_file_mirror(dest_dir, tmp_path, stored):
    local = tmp_path / "mirror"
    local.mkdir()
    (local / NAME).write_bytes(stored)
    out = fetch_from([local.as_uri()], dest_dir / LOCAL)  # no trailing slash either
    assert out.read_bytes() == DATA
    assert listing(dest_dir) == {LOCAL}
    assert (local / NAME).read_bytes() == stored  # the mirror is only read


def test_missing_file_mirror_is_reported_and_skipped(dest_dir, tmp_path):
    missing = tmp_path / "nowhere"
    present = tmp_path / "mirror"
    present.mkdir()
    (present / NAME).write_bytes(GZ)
    out = fetch_from([missing.as_uri() + "/", present.as_uri() + "/"], dest_dir / LOCAL)
    assert out.read_bytes() == DATA

    dest = dest_dir / "other"
    dest.write_bytes(PRECIOUS)
    with pytest.raises(DownloadError) as ei:
        fetch_from([missing.as_uri() + "/"], dest)
    msg = str(ei.value)
    assert "no such file" in msg and str(missing / NAME) in msg
    assert f"{missing.as_uri()}/{NAME}" in msg
    assert "attempts" not in msg  # not retried
    assert dest.read_bytes() == PRECIOUS
    assert listing(dest_dir) == {LOCAL, "other"}


def test_unsupported_scheme(dest_dir):
    with pytest.raises(DownloadError, match="unsupported URL scheme 'ftp'"):
        fetch_from(["ftp://example.invalid/"], dest_dir / LOCAL)
    assert listing(dest_dir) == set()


# ---------------------------------------------------------------------------- 8. 404


def test_404_moves_on_without_retry(server, dest_dir):
    server.script(f"/good/{NAME}", serve(GZ))
    out = fetch_from([server.mirror("gone"), server.mirror("good")], dest_dir / LOCAL)
    assert out.read_bytes() == DATA
    assert server.hits == {f"/gone/{NAME}": 1, f"/good/{NAME}": 1}


def test_all_404_lists_mirrors(server, dest_dir):
    dest = dest_dir / LOCAL
    dest.write_bytes(PRECIOUS)
    mirrors = [server.mirror("a"), server.mirror("b")]
    with pytest.raises(DownloadError) as ei:
        fetch_from(mirrors, dest)
    for m in mirrors:
        assert f"{m}{NAME}: HTTP 404" in str(ei.value)
    assert "params.yaml" in str(ei.value)  # tells the user what to do
    assert server.hits == {f"/a/{NAME}": 1, f"/b/{NAME}": 1}
    assert_failed_cleanly(dest_dir, dest)


# ---------------------------------------------------------------------------- 9. refused + download_dataset


def _moves_on_at_once(server, dest_dir, attempts, mirror: str, reason: str) -> None:
    """`mirror` fails with `reason` after one attempt (no retries), loses nothing, and the next mirror is used."""
    dest = dest_dir / LOCAL
    dest.write_bytes(PRECIOUS)
    with pytest.raises(DownloadError) as ei:
        fetch_from([mirror], dest)
    msg = str(ei.value)
    assert f"{mirror}{NAME}: {reason}" in msg
    assert "attempts" not in msg
    assert attempts == {mirror + NAME: 1}
    assert_failed_cleanly(dest_dir, dest)

    attempts.clear()
    server.script(f"/ok/{NAME}", serve(GZ))
    assert fetch_from([mirror, server.mirror("ok")], dest).read_bytes() == DATA
    assert attempts == {mirror + NAME: 1, server.mirror("ok") + NAME: 1}


def test_connection_refused_moves_to_next_mirror_at_once(server, refused_port, dest_dir, attempts):
    """Nothing listens on that port: retrying in a second will not change that, so no retries."""
    _moves_on_at_once(server, dest_dir, attempts, f"http://127.0.0.1:{refused_port}/m/", "connection refused")


def test_download_dataset_over_http(server, refused_port, dest_dir):
    images, labels, extra = payload(3000, seed=10), payload(500, seed=11), payload(100, seed=12)
    files = {
        "x-idx3-ubyte.gz": hashlib.sha256(images).hexdigest(),
        "y-idx1-ubyte.gz": hashlib.sha256(labels).hexdigest(),
        "notes.bin": hashlib.sha256(extra).hexdigest(),  # not .gz: kept under its own name
    }
    server.script("/ds/x-idx3-ubyte.gz", serve(gzip.compress(images)))
    server.script("/ds/y-idx1-ubyte.gz", status(502), serve(gzip.compress(labels)))
    server.script("/ds/notes.bin", serve(extra))
    spec = DatasetSpec(name="tiny", mirrors=(server.mirror("ds"),), files=files, classes=("a", "b"))

    out = download_dataset(spec, dest_dir / "tiny", extra_mirrors=[f"http://127.0.0.1:{refused_port}/"], settings=FAST)

    assert out == {
        "x-idx3-ubyte": files["x-idx3-ubyte.gz"],
        "y-idx1-ubyte": files["y-idx1-ubyte.gz"],
        "notes.bin": files["notes.bin"],
    }
    d = dest_dir / "tiny"
    assert listing(d) == {"x-idx3-ubyte", "y-idx1-ubyte", "notes.bin"}
    assert (d / "x-idx3-ubyte").read_bytes() == images
    assert (d / "y-idx1-ubyte").read_bytes() == labels
    assert (d / "notes.bin").read_bytes() == extra
    assert server.hits == {"/ds/x-idx3-ubyte.gz": 1, "/ds/y-idx1-ubyte.gz": 2, "/ds/notes.bin": 1}

    # second run: everything present and verified -> no request at all
    server.hits.clear()
    assert download_dataset(spec, d, settings=FAST) == out
    assert server.hits == {}


def test_download_dataset_extra_mirrors_come_first(server, dest_dir):
    server.script(f"/extra/{NAME}", serve(GZ))
    server.script(f"/spec/{NAME}", serve(GZ))
    spec = DatasetSpec(name="tiny", mirrors=(server.mirror("spec"),), files={NAME: SHA}, classes=("a",))
    assert download_dataset(spec, dest_dir, extra_mirrors=[server.mirror("extra")], settings=FAST) == {LOCAL: SHA}
    assert server.hits == {f"/extra/{NAME}": 1}


def test_download_dataset_failure_names_the_file(server, dest_dir):
    spec = DatasetSpec(name="tiny", mirrors=(server.mirror("spec"),), files={NAME: SHA}, classes=("a",))
    with pytest.raises(DownloadError, match=f"verified copy of {NAME}"):
        download_dataset(spec, dest_dir, settings=FAST)
    assert listing(dest_dir) == set()


# ---------------------------------------------------------------------------- 10. already present


def test_verified_file_is_not_downloaded_again(server, refused_port, dest_dir):
    dest = dest_dir / LOCAL
    dest.write_bytes(DATA)
    mtime = dest.stat().st_mtime_ns
    server.script(f"/m/{NAME}", serve(GZ))
    out = fetch_from([f"http://127.0.0.1:{refused_port}/", server.mirror("m")], dest)
    assert out == dest
    assert server.hits == {}
    assert dest.read_bytes() == DATA and dest.stat().st_mtime_ns == mtime
    assert listing(dest_dir) == {LOCAL}


def test_stale_file_is_replaced(server, dest_dir):
    dest = dest_dir / LOCAL
    dest.write_bytes(PRECIOUS)
    server.script(f"/m/{NAME}", serve(GZ))
    assert fetch_from([server.mirror("m")], dest).read_bytes() == DATA
    assert server.hits == {f"/m/{NAME}": 1}
    assert listing(dest_dir) == {LOCAL}


# ---------------------------------------------------------------------------- 11. unknown host

UNKNOWN_HOST = "nonexistent.invalid"  # RFC 6761: .invalid never resolves, so this needs no internet


def request_error(url: str) -> requests.RequestException:
    """The real exception requests raises for `url`."""
    with pytest.raises(requests.RequestException) as ei:
        requests.get(url, timeout=(1, 1))
    return ei.value


def test_is_dns_failure_on_real_requests_errors(refused_port):
    dns = request_error(f"http://{UNKNOWN_HOST}/")
    refused = request_error(f"http://127.0.0.1:{refused_port}/")
    assert download._is_dns_failure(dns)
    assert not download._is_dns_failure(refused)
    assert download._is_dns_failure(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    assert not download._is_dns_failure(ValueError("x"))


def test_is_connection_refused_on_real_requests_errors(refused_port):
    assert download._is_connection_refused(request_error(f"http://127.0.0.1:{refused_port}/"))
    assert not download._is_connection_refused(request_error(f"http://{UNKNOWN_HOST}/"))
    assert not download._is_connection_refused(ValueError("x"))


def test_unknown_host_moves_to_next_mirror_at_once(server, dest_dir, attempts):
    _moves_on_at_once(server, dest_dir, attempts, f"http://{UNKNOWN_HOST}/m/", f"unknown host {UNKNOWN_HOST}")


# ---------------------------------------------------------------------------- 12. a bug is not a network error


def broken_reader(self, *args, **kwargs):
    """Stands in for urllib3's body reader: the first bytes arrive, then a bug (not a network error)."""
    yield GZ[:100]
    raise TypeError("bug in the reader")


class BrokenHasher:
    def update(self, data: bytes) -> None:
        raise TypeError("bug in the hasher")


class BrokenInflater:
    eof = False

    def decompress(self, data: bytes) -> bytes:
        raise AttributeError("bug in the gunzip step")


def break_reader(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(urllib3.response.HTTPResponse, "stream", broken_reader)


def break_hasher(mp: pytest.MonkeyPatch) -> None:  # gan.data.download's view of hashlib only
    mp.setattr(download, "hashlib", types.SimpleNamespace(sha256=BrokenHasher))


def break_gunzip(mp: pytest.MonkeyPatch) -> None:  # gan.data.download's view of zlib only
    fake = types.SimpleNamespace(decompressobj=lambda **_: BrokenInflater(), MAX_WBITS=zlib.MAX_WBITS, error=zlib.error)
    mp.setattr(download, "zlib", fake)


@pytest.mark.parametrize(
    "where, exc, patch",
    [
        ("reader", TypeError, break_reader),  # inside the network read: this one used to be relabelled and retried
        ("hasher", TypeError, break_hasher),
        ("gunzip", AttributeError, break_gunzip),
    ],
    ids=["reader", "hasher", "gunzip"],
)
def test_bug_during_transfer_surfaces_as_itself_at_once(server, dest_dir, attempts, monkeypatch, where, exc, patch):
    sleeps: list[float] = []
    record_sleeps(monkeypatch, sleeps)
    server.script(f"/m/{NAME}", serve(GZ))
    server.script(f"/other/{NAME}", serve(GZ))
    patch(monkeypatch)
    with pytest.raises(exc, match=f"bug in the {where}"):
        fetch_from([server.mirror("m"), server.mirror("other")], dest_dir / LOCAL)
    assert attempts == {server.mirror("m") + NAME: 1}  # no retry, no next mirror
    assert server.hits == {f"/m/{NAME}": 1}
    assert sleeps == []
    assert listing(dest_dir) == set()  # the .part file is gone


# ---------------------------------------------------------------------------- known bug


def test_multimember_gzip(server, dest_dir):
    half = len(DATA) // 2
    server.script(f"/m/{NAME}", serve(gzip.compress(DATA[:half]) + gzip.compress(DATA[half:])))
    assert gzip.decompress(gzip.compress(DATA[:half]) + gzip.compress(DATA[half:])) == DATA  # what gunzip does
    out = fetch_from([server.mirror("m")], dest_dir / LOCAL)
    assert out.read_bytes() == DATA


# ---------------------------------------------------------------------------- 13. checksum kinds and the sidecar


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def regzip(data: bytes, mtime: int) -> bytes:
    """Same content, different gzip bytes (the header holds an mtime): the .gz's MD5 changes, the content's does not."""
    return gzip.compress(data, mtime=mtime)


def sidecar(d: Path) -> dict:
    return json.loads((d / download.SIDECAR).read_text())


def md5_spec(server, images: bytes, labels: bytes) -> DatasetSpec:
    gz = regzip(images, mtime=1)
    server.script("/ds/x-idx3-ubyte.gz", serve(gz))
    server.script("/ds/notes.bin", serve(labels))
    files = {
        "x-idx3-ubyte.gz": Checksum(md5(gz), "md5", "download"),
        "notes.bin": Checksum(md5(labels), "md5", "download"),
    }
    return DatasetSpec(name="tiny", mirrors=(server.mirror("ds"),), files=files, classes=("a",))


def test_md5_of_download_is_verified_recorded_and_not_fetched_again(server, dest_dir, caplog):
    images, labels = payload(3000, seed=20), payload(200, seed=21)
    spec = md5_spec(server, images, labels)
    with caplog.at_level(logging.INFO, logger="gan.data.download"):
        out = download_dataset(spec, dest_dir, settings=FAST)
    sha = {"x-idx3-ubyte": hashlib.sha256(images).hexdigest(), "notes.bin": hashlib.sha256(labels).hexdigest()}
    assert out == sha  # the SHA-256 of the stored bytes, to pin
    assert all(s in caplog.text for s in sha.values())
    assert (dest_dir / "x-idx3-ubyte").read_bytes() == images  # stored decompressed
    assert listing(dest_dir) == {"x-idx3-ubyte", "notes.bin", download.SIDECAR}
    assert {k: v["sha256"] for k, v in sidecar(dest_dir)["files"].items()} == sha

    # rerun: verified by the sidecar, no request
    server.hits.clear()
    assert download_dataset(spec, dest_dir, settings=FAST) == out
    assert server.hits == {}

    # a stored file that no longer matches its record is downloaded again (and only that one)
    (dest_dir / "x-idx3-ubyte").write_bytes(PRECIOUS)
    assert download_dataset(spec, dest_dir, settings=FAST) == out
    assert server.hits == {"/ds/x-idx3-ubyte.gz": 1}
    assert (dest_dir / "x-idx3-ubyte").read_bytes() == images


def test_sidecar_for_another_checksum_does_not_count(server, dest_dir):
    images, labels = payload(3000, seed=20), payload(200, seed=21)
    spec = md5_spec(server, images, labels)
    download_dataset(spec, dest_dir, settings=FAST)
    data = sidecar(dest_dir)
    data["files"]["notes.bin"]["verified"] = "md5 0123 of the bytes as downloaded"  # verified as something else
    (dest_dir / download.SIDECAR).write_text(json.dumps(data))
    server.hits.clear()
    download_dataset(spec, dest_dir, settings=FAST)
    assert server.hits == {"/ds/notes.bin": 1}

    (dest_dir / download.SIDECAR).write_text("{not json")  # unreadable: everything is verified by downloading
    server.hits.clear()
    download_dataset(spec, dest_dir, settings=FAST)
    assert server.hits == {"/ds/x-idx3-ubyte.gz": 1, "/ds/notes.bin": 1}
    assert set(sidecar(dest_dir)["files"]) == {"x-idx3-ubyte", "notes.bin"}


def test_md5_of_download_rejects_other_gzip_bytes_of_the_same_content(server, dest_dir):
    good, other = regzip(DATA, mtime=1), regzip(DATA, mtime=2)
    assert gzip.decompress(other) == DATA and md5(other) != md5(good)
    dest = dest_dir / LOCAL
    dest.write_bytes(PRECIOUS)
    server.script(f"/m/{NAME}", serve(other))
    with pytest.raises(DownloadError) as ei:
        fetch_from([server.mirror("m")], dest, checksum=Checksum(md5(good), "md5", "download"))
    msg = str(ei.value)
    assert f"checksum mismatch: got md5 {md5(other)} of the bytes as downloaded, expected {md5(good)}" in msg
    assert_failed_cleanly(dest_dir, dest)  # no sidecar either

    server.script(f"/m/{NAME}", serve(good))
    assert fetch_from([server.mirror("m")], dest, checksum=Checksum(md5(good), "md5", "download"))
    assert dest.read_bytes() == DATA


def test_sha256_of_download(server, dest_dir):
    server.script(f"/m/{NAME}", serve(GZ))
    good = Checksum(hashlib.sha256(GZ).hexdigest(), "sha256", "download")
    assert fetch_from([server.mirror("m")], dest_dir / LOCAL, checksum=good).read_bytes() == DATA
    with pytest.raises(DownloadError, match="checksum mismatch: got sha256"):
        fetch_from([server.mirror("m")], dest_dir / "other", checksum=Checksum(SHA, "sha256", "download"))


def test_md5_of_decompressed_verifies_the_stored_file_itself(server, dest_dir):
    server.script(f"/m/{NAME}", serve(GZ))
    checksum = Checksum(md5(DATA), "md5", "decompressed")
    assert fetch_from([server.mirror("m")], dest_dir / LOCAL, checksum=checksum).read_bytes() == DATA
    assert listing(dest_dir) == {LOCAL}  # the stored file shows its own checksum: no sidecar needed
    assert fetch_from([server.mirror("m")], dest_dir / LOCAL, checksum=checksum)
    assert server.hits == {f"/m/{NAME}": 1}
    with pytest.raises(DownloadError, match=f"got md5 {md5(DATA)} of the decompressed bytes"):
        fetch_from([server.mirror("m")], dest_dir / "o", checksum=Checksum(md5(b"x"), "md5", "decompressed"))


def test_no_checksum_just_downloads_every_time(server, dest_dir):
    dest = dest_dir / LOCAL
    server.script(f"/m/{NAME}", status(503), serve(GZ), serve(payload(seed=5)))
    assert fetch_from([server.mirror("m")], dest, checksum=None).read_bytes() == DATA  # retried
    assert fetch_from([server.mirror("m")], dest, checksum=None).read_bytes() == payload(seed=5)
    assert server.hits == {f"/m/{NAME}": 3}
    assert listing(dest_dir) == {LOCAL}


# ---------------------------------------------------------------------------- 14. cifar10-binary


def cifar_batch(records: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    recs = rng.integers(0, 256, (records, cifar.RECORD_BYTES), dtype=np.uint8)
    recs[:, 0] = rng.integers(0, 10, records)
    return recs.tobytes()


def cifar_tgz(meta: str = "\n".join(cifar.CIFAR10_CLASSES) + "\n", skip: str = "") -> bytes:
    """A cifar-10-binary.tar.gz with the real layout (2 records per batch)."""
    members = {f"data_batch_{i}.bin": cifar_batch(2, i) for i in range(1, 6)}
    members |= {"test_batch.bin": cifar_batch(2, 9), "batches.meta.txt": meta.encode(), "readme.html": b"<p>hi</p>"}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        folder = tarfile.TarInfo(cifar.BATCHES_DIR_NAME)
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        for name, data in members.items():
            if name != skip:
                info = tarfile.TarInfo(f"{cifar.BATCHES_DIR_NAME}/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def cifar_spec(server, tgz: bytes) -> DatasetSpec:
    server.script("/c/cifar-10-binary.tar.gz", serve(tgz))
    files = {"cifar-10-binary.tar.gz": Checksum(md5(tgz), "md5", "download")}
    return DatasetSpec(
        name="cifar10",
        mirrors=(server.mirror("c"),),
        files=files,
        classes=cifar.CIFAR10_CLASSES,
        shape=(3, 32, 32),
        format="cifar10-binary",
    )


@pytest.fixture
def extractions(monkeypatch) -> list[Path]:
    calls: list[Path] = []
    real = download.extract_archive

    def counting(archive, dest, *args, **kwargs):
        calls.append(Path(archive))
        return real(archive, dest, *args, **kwargs)

    monkeypatch.setattr(download, "extract_archive", counting)
    return calls


def test_cifar10_archive_is_verified_extracted_and_readable(server, dest_dir, extractions):
    tgz = cifar_tgz()
    spec = cifar_spec(server, tgz)
    out = download_dataset(spec, dest_dir, settings=FAST)
    assert out == {"cifar-10-binary.tar": hashlib.sha256(gzip.decompress(tgz)).hexdigest()}
    assert listing(dest_dir) == {"cifar-10-binary.tar", cifar.BATCHES_DIR_NAME, download.SIDECAR}
    images, labels = cifar.read_cifar10_split(dest_dir / cifar.BATCHES_DIR_NAME, "train")
    assert images.shape == (10, 3, 32, 32) and labels.shape == (10,)
    expected = np.frombuffer(cifar_batch(2, 1), np.uint8).reshape(2, -1)
    assert (labels[:2] == expected[:, 0]).all() and (images[:2].reshape(2, -1) == expected[:, 1:]).all()
    assert cifar.read_cifar10_split(dest_dir / cifar.BATCHES_DIR_NAME, "test")[0].shape == (2, 3, 32, 32)
    assert len(extractions) == 1

    # rerun: archive verified by the sidecar, folder complete -> no request, no extraction
    server.hits.clear()
    download_dataset(spec, dest_dir, settings=FAST)
    assert server.hits == {} and len(extractions) == 1

    # an incomplete folder is extracted again (from the stored archive: no request)
    (dest_dir / cifar.BATCHES_DIR_NAME / "test_batch.bin").unlink()
    download_dataset(spec, dest_dir, settings=FAST)
    assert server.hits == {} and len(extractions) == 2
    assert (dest_dir / cifar.BATCHES_DIR_NAME / "test_batch.bin").read_bytes() == cifar_batch(2, 9)

    # a re-downloaded archive is extracted again, even though the folder looks complete
    with open(dest_dir / "cifar-10-binary.tar", "ab") as f:
        f.write(b"tampered")
    download_dataset(spec, dest_dir, settings=FAST)
    assert server.hits == {"/c/cifar-10-binary.tar.gz": 1} and len(extractions) == 3
    assert listing(dest_dir) == {"cifar-10-binary.tar", cifar.BATCHES_DIR_NAME, download.SIDECAR}


@pytest.mark.parametrize(
    "tgz, match",
    [
        (cifar_tgz(skip="test_batch.bin"), "holds no cifar-10-batches-bin/test_batch.bin"),
        (cifar_tgz(meta="apple\naquarium_fish\n"), "batches.meta.txt: class names"),
    ],
    ids=["missing-batch", "not-cifar10-meta"],
)
def test_cifar10_archive_of_the_wrong_thing_is_refused(server, dest_dir, tgz, match):
    with pytest.raises(cifar.CifarError, match=match) as ei:
        download_dataset(cifar_spec(server, tgz), dest_dir, settings=FAST)
    assert "cifar-10-binary.tar" in str(ei.value)  # names the archive
    assert cifar.BATCHES_DIR_NAME not in listing(dest_dir)  # nothing half-extracted
    assert not [n for n in listing(dest_dir) if n.endswith(".tmp")]
