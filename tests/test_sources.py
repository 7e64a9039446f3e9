"""gan.data.sources against real folders, zip and tar.gz archives, file:// URLs and an HTTP server on 127.0.0.1."""

from __future__ import annotations

import collections
import hashlib
import http.server
import io
import json
import os
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

import gan.data.sources as sources
from gan.data.archives import ArchiveError
from gan.data.download import DownloadError, FetchSettings
from gan.data.sources import SourceError, fetch_source, source_manifest

FAST = FetchSettings(connect_timeout=1, read_timeout=2, retries=2, backoff=0.01, progress=False)
OLD_NS = 1_600_000_000 * 10**9  # an mtime well in the past: hashes of such files are cached


# ---------------------------------------------------------------------------- helpers


def make_tree(root: Path, files: dict[str, bytes], old: bool = True) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if old:
            os.utime(path, ns=(OLD_NS, OLD_NS))
    return root


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root (hidden ones included), by relative posix path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def tgz_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def dumped(manifest: dict) -> str:
    return json.dumps(manifest, sort_keys=True)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


IMAGES = {"cats/a.png": b"cat-a", "cats/b.png": b"cat-b", "dogs/c.jpg": b"dog-c"}
HIDDEN = {".DS_Store": b"mac", "cats/.thumb.png": b"hidden", ".git/config": b"[core]", "dogs/.cache/x.jpg": b"x"}


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def hashed(monkeypatch) -> collections.Counter[str]:
    """Counts the files gan.data.sources reads to hash, by name."""
    counter: collections.Counter[str] = collections.Counter()
    real = sources.sha256_file

    def counting(path):
        counter[Path(path).name] += 1
        return real(path)

    monkeypatch.setattr(sources, "sha256_file", counting)
    return counter


# ---------------------------------------------------------------------------- HTTP server with HEAD


class FileServer:
    """Serves `files[path] = (body, headers)`; `head_status` answers HEAD with that status instead."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, dict[str, str]]] = {}
        self.hits: collections.Counter[tuple[str, str]] = collections.Counter()
        self.head_status: int | None = None
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def answer(self, with_body: bool) -> None:
                outer.hits[(self.command, self.path)] += 1
                if not with_body and outer.head_status is not None:
                    self.send_response(outer.head_status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path not in outer.files:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body, headers = outer.files[self.path]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def do_GET(self) -> None:
                self.answer(True)

            def do_HEAD(self) -> None:
                self.answer(False)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def web(monkeypatch):
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    s = FileServer()
    s.thread.start()
    try:
        yield s
    finally:
        s.httpd.shutdown()
        s.httpd.server_close()
        s.thread.join(timeout=5)


# ---------------------------------------------------------------------------- manifest: folders


def test_folder_manifest_lists_visible_files_with_hashes(tmp_path, cache):
    src = make_tree(tmp_path / "src", IMAGES | HIDDEN)
    m = source_manifest(str(src), "", cache, FAST)
    assert m == {
        "version": sources.MANIFEST_VERSION,
        "kind": "folder",
        "source": str(src),
        "files": [[rel, len(data), sha(data)] for rel, data in sorted(IMAGES.items())],
    }
    json.dumps(m)  # JSON-able


def test_folder_manifest_is_identical_when_nothing_changed_and_changes_with_the_content(tmp_path, cache):
    src = make_tree(tmp_path / "src", IMAGES | HIDDEN)
    first = dumped(source_manifest(str(src), "", cache, FAST))
    os.utime(src / "cats/a.png", ns=(OLD_NS + 5, OLD_NS + 5))  # touched, same content
    (src / ".DS_Store").write_bytes(b"changed hidden file")
    (src / "dogs/.cache/new.jpg").write_bytes(b"new hidden file")
    assert dumped(source_manifest(str(src), "", cache, FAST)) == first

    def after(edit) -> str:
        edit()
        return dumped(source_manifest(str(src), "", cache, FAST))

    added = after(lambda: make_tree(src, {"birds/d.png": b"bird"}))
    assert added != first
    assert after(lambda: (src / "birds/d.png").unlink()) == first  # removed again: back to the same bytes
    assert after(lambda: (src / "dogs/c.jpg").unlink()) != first
    make_tree(src, {"dogs/c.jpg": IMAGES["dogs/c.jpg"]})
    assert after(lambda: make_tree(src, {"cats/a.png": b"cat-A"})) != first  # same size, same mtime, other bytes


def test_folder_manifest_follows_symlinked_files_not_folders(tmp_path, cache):
    outside = make_tree(tmp_path / "outside", {"e.png": b"elsewhere", "sub/f.png": b"f"})
    src = make_tree(tmp_path / "src", IMAGES)
    (src / "cats/link.png").symlink_to(outside / "e.png")
    (src / "linked-folder").symlink_to(outside / "sub", target_is_directory=True)
    (src / "cats/broken.png").symlink_to(tmp_path / "nowhere.png")
    rels = [f[0] for f in source_manifest(str(src), "", cache, FAST)["files"]]
    assert rels == ["cats/a.png", "cats/b.png", "cats/link.png", "dogs/c.jpg"]


def test_hash_cache_avoids_reading_unchanged_files(tmp_path, cache, hashed):
    files = {f"c{i % 3}/img{i}.png": f"image {i}".encode() for i in range(20)}
    src = make_tree(tmp_path / "src", files)
    first = source_manifest(str(src), "", cache, FAST)
    assert sum(hashed.values()) == 20
    hashed.clear()
    assert source_manifest(str(src), "", cache, FAST) == first
    assert hashed == {}  # nothing read again

    make_tree(src, {"c0/img0.png": b"IMAGE 0", "c9/new.png": b"new"})  # one changed (same size, mtime), one added
    source_manifest(str(src), "", cache, FAST)
    assert hashed == {"img0.png": 1, "new.png": 1}


def test_hash_cache_does_not_trust_files_modified_just_now(tmp_path, cache, hashed):
    """A file written within the mtime tick could be rewritten unseen (same size, same mtime): it is read again."""
    src = make_tree(tmp_path / "src", {"a/x.png": b"x"}, old=False)
    source_manifest(str(src), "", cache, FAST)
    source_manifest(str(src), "", cache, FAST)
    assert hashed == {"x.png": 2}


def test_hash_cache_is_keyed_by_inode(tmp_path, cache, hashed):
    src = make_tree(tmp_path / "src", {"a/x.png": b"one"})
    source_manifest(str(src), "", cache, FAST)
    replacement = make_tree(tmp_path / "elsewhere", {"x.png": b"two"})  # same size and mtime, other inode
    os.replace(replacement / "x.png", src / "a/x.png")
    assert source_manifest(str(src), "", cache, FAST)["files"] == [["a/x.png", 3, sha(b"two")]]
    assert hashed == {"x.png": 2}


# ---------------------------------------------------------------------------- manifest: archives and URLs


@pytest.mark.parametrize("make", [zip_bytes, tgz_bytes], ids=["zip", "tar.gz"])
def test_archive_manifest_local_and_file_url(tmp_path, cache, make, hashed):
    data = make(IMAGES)
    archive = tmp_path / "photos.bin"  # told apart by content, not by suffix
    archive.write_bytes(data)
    os.utime(archive, ns=(OLD_NS, OLD_NS))
    m = source_manifest(str(archive), "", cache, FAST)
    assert (m["kind"], m["size"], m["sha256"]) == ("archive", len(data), sha(data))
    assert source_manifest(archive.as_uri(), "", cache, FAST) == {**m, "source": archive.as_uri()}
    assert hashed == {"photos.bin": 1}  # the second look came from the hash cache

    archive.write_bytes(make(IMAGES | {"birds/d.png": b"d"}))
    assert source_manifest(str(archive), "", cache, FAST)["sha256"] != m["sha256"]


def test_url_manifest_with_sha_needs_no_request(web, cache):
    url = web.url("/photos.zip")
    m = source_manifest(url, "ab" * 32, cache, FAST)
    assert m == {"version": sources.MANIFEST_VERSION, "kind": "url", "source": url, "sha256": "ab" * 32}
    assert web.hits == {}


def test_url_manifest_uses_the_servers_etag(web, cache):
    url = web.url("/photos.zip")
    web.files["/photos.zip"] = (b"zip-1", {"ETag": '"v1"', "Last-Modified": "Tue, 01 Oct 2024 10:00:00 GMT"})
    m1 = source_manifest(url, "", cache, FAST)
    assert (m1["etag"], m1["last_modified"], m1["content_length"]) == ('"v1"', "Tue, 01 Oct 2024 10:00:00 GMT", "5")
    assert dumped(source_manifest(url, "", cache, FAST)) == dumped(m1)
    assert web.hits == {("HEAD", "/photos.zip"): 2}  # never downloaded
    web.files["/photos.zip"] = (b"zip-1", {"ETag": '"v2"', "Last-Modified": "Tue, 01 Oct 2024 10:00:00 GMT"})
    assert source_manifest(url, "", cache, FAST) != m1


def test_url_manifest_reads_validators_whatever_their_case(web, cache):
    url = web.url("/photos.zip")  # header names are case-insensitive; many servers and proxies send lowercase
    web.files["/photos.zip"] = (b"zip-1", {"etag": '"v1"', "last-modified": "Tue, 01 Oct 2024 10:00:00 GMT"})
    m = source_manifest(url, "", cache, FAST)
    assert (m["etag"], m["last_modified"]) == ('"v1"', "Tue, 01 Oct 2024 10:00:00 GMT") and "sha256" not in m
    assert web.hits == {("HEAD", "/photos.zip"): 1}  # not downloaded to hash it


@pytest.mark.parametrize("head_status", [None, 403, 405], ids=["no-validators", "head-forbidden", "head-refused"])
def test_url_manifest_falls_back_to_hashing_the_body(web, cache, head_status):
    url = web.url("/photos.zip")
    web.head_status = head_status
    web.files["/photos.zip"] = (b"zip-1", {})
    m = source_manifest(url, "", cache, FAST)
    assert m["sha256"] == sha(b"zip-1") and "etag" not in m
    assert web.hits[("GET", "/photos.zip")] == 1
    web.files["/photos.zip"] = (b"zip-2", {})
    assert source_manifest(url, "", cache, FAST)["sha256"] == sha(b"zip-2")


def test_url_manifest_unreachable_says_what_to_do(web, cache):
    with pytest.raises(SourceError, match=r"data.source = .*HTTP 404.*data.source_sha256"):
        source_manifest(web.url("/missing.zip"), "", cache, FAST)


# ---------------------------------------------------------------------------- unsupported or missing sources


@pytest.mark.parametrize("fn", ["manifest", "fetch"])
def test_missing_and_unsupported_sources_are_named(tmp_path, cache, fn):
    def run(source: str) -> None:
        if fn == "manifest":
            source_manifest(source, "", cache, FAST)
        else:
            fetch_source(source, "", tmp_path / "dest", cache, FAST)

    text = tmp_path / "notes.txt"
    text.write_text("not an archive")
    fake_zip = tmp_path / "fake.zip"
    fake_zip.write_bytes(b"PK but not really a zip")
    cases = {
        str(tmp_path / "nowhere"): "does not exist",
        (tmp_path / "nowhere.zip").as_uri(): "does not exist",
        str(text): "is neither a folder nor a readable zip or tar archive",
        str(fake_zip): "is neither a folder nor a readable zip or tar archive",
        "ftp://example.invalid/x.zip": "unsupported URL scheme 'ftp'",
        "": "data.source is empty",
    }
    for source, what in cases.items():
        with pytest.raises(SourceError) as ei:
            run(source)
        msg = str(ei.value)
        assert what in msg and "data.source" in msg
        assert source == "" or repr(source) in msg
        assert sources.ACCEPTED in msg
    assert not (tmp_path / "dest").exists()


# ---------------------------------------------------------------------------- fetch_source: folders


def test_fetch_folder_copies_visible_files_and_replaces_the_old_dest(tmp_path, cache):
    src = make_tree(tmp_path / "src", IMAGES | HIDDEN)
    dest = make_tree(tmp_path / "raw" / "folder", {"stale/old.png": b"old"})
    summary = fetch_source(str(src), "", dest, cache, FAST)
    assert tree(dest) == IMAGES  # exactly the source's visible files: the old ones and hidden ones are gone
    assert summary == {"kind": "folder", "files": 3, "bytes": 15, "sha256": None, "stripped": None}
    assert (dest / "cats/a.png").stat().st_mtime_ns == OLD_NS  # copy2 keeps times
    assert os.listdir(tmp_path / "raw") == ["folder"]  # no temp left beside it
    assert tree(src) == IMAGES | HIDDEN  # the source is only read


def test_fetch_folder_with_one_top_folder_strips_it(tmp_path, cache):
    src = make_tree(tmp_path / "src", {f"photos/{k}": v for k, v in IMAGES.items()} | {".DS_Store": b"x"})
    summary = fetch_source(str(src), "", tmp_path / "dest", cache, FAST)
    assert tree(tmp_path / "dest") == IMAGES
    assert summary["stripped"] == "photos"


def test_fetch_folder_refuses_a_checksum_and_an_empty_folder(tmp_path, cache):
    src = make_tree(tmp_path / "src", IMAGES)
    with pytest.raises(SourceError, match="data.source_sha256 is set but .* is a folder"):
        fetch_source(str(src), "ab" * 32, tmp_path / "dest", cache, FAST)
    empty = make_tree(tmp_path / "empty", {".hidden": b"x"})
    with pytest.raises(SourceError, match="holds no files"):
        fetch_source(str(empty), "", tmp_path / "dest", cache, FAST)
    assert not (tmp_path / "dest").exists()


# ---------------------------------------------------------------------------- fetch_source: archives


MAC_ZIP = {f"photos/{k}": v for k, v in IMAGES.items()} | {"__MACOSX/photos/cats/._a.png": b"rsrc"}


@pytest.mark.parametrize("make", [zip_bytes, tgz_bytes], ids=["zip", "tar.gz"])
def test_fetch_archive_strips_the_single_top_folder(tmp_path, cache, make):
    archive = tmp_path / "photos.archive"
    archive.write_bytes(make(MAC_ZIP))
    summary = fetch_source(str(archive), sha(archive.read_bytes()), tmp_path / "dest", cache, FAST)
    assert tree(tmp_path / "dest") == IMAGES  # photos/ stripped; __MACOSX holds only hidden files
    assert summary == {
        "kind": "archive",
        "files": 3,
        "bytes": 15,
        "sha256": sha(archive.read_bytes()),
        "stripped": "photos",
    }


def test_fetch_archive_without_a_single_top_folder_keeps_the_layout(tmp_path, cache):
    archive = tmp_path / "photos.zip"
    archive.write_bytes(zip_bytes(IMAGES))
    assert fetch_source(archive.as_uri(), "", tmp_path / "dest", cache, FAST)["stripped"] is None
    assert tree(tmp_path / "dest") == IMAGES


def test_fetch_local_archive_with_the_wrong_sha(tmp_path, cache):
    archive = tmp_path / "photos.zip"
    archive.write_bytes(zip_bytes(IMAGES))
    with pytest.raises(SourceError) as ei:
        fetch_source(str(archive), "ab" * 32, tmp_path / "dest", cache, FAST)
    assert sha(archive.read_bytes()) in str(ei.value) and "ab" * 32 in str(ei.value)
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize(
    "data, match",
    [
        (zip_bytes({"ok/a.png": b"a", "../evil.png": b"x"}), "'..' component"),
        (tgz_bytes({f"c/{i}.png": os.urandom(4096) for i in range(8)})[:20000], "corrupt or truncated"),
    ],
    ids=["hostile", "truncated"],
)
def test_failed_extraction_leaves_the_old_dest_intact(tmp_path, cache, data, match):
    dest = make_tree(tmp_path / "raw" / "folder", {"cats/old.png": b"old"})
    archive = tmp_path / "photos.bin"
    archive.write_bytes(data)
    with pytest.raises(SourceError, match=match) as ei:
        fetch_source(str(archive), "", dest, cache, FAST)
    assert isinstance(ei.value.__cause__, ArchiveError)
    assert "data.source" in str(ei.value)
    assert tree(dest) == {"cats/old.png": b"old"}
    assert os.listdir(tmp_path / "raw") == ["folder"]


def test_failure_while_copying_leaves_the_old_dest_intact(tmp_path, cache, monkeypatch):
    src = make_tree(tmp_path / "src", IMAGES)
    dest = make_tree(tmp_path / "raw" / "folder", {"cats/old.png": b"old"})
    calls = []

    def copy_then_fail(a, b):
        calls.append(a)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return __import__("shutil").copy2(a, b)

    monkeypatch.setattr(sources.shutil, "copy2", copy_then_fail)
    with pytest.raises(OSError, match="No space"):
        fetch_source(str(src), "", dest, cache, FAST)
    assert tree(dest) == {"cats/old.png": b"old"}
    assert os.listdir(tmp_path / "raw") == ["folder"]


# ---------------------------------------------------------------------------- fetch_source: URLs


def test_fetch_url_verified_against_source_sha256(web, tmp_path, cache):
    data = tgz_bytes(MAC_ZIP)
    web.files["/photos.tar.gz"] = (data, {})
    url = web.url("/photos.tar.gz")
    summary = fetch_source(url, sha(data), tmp_path / "dest", cache, FAST)
    assert tree(tmp_path / "dest") == IMAGES
    assert summary == {"kind": "url", "files": 3, "bytes": 15, "sha256": sha(data), "stripped": "photos"}
    assert web.hits == {("GET", "/photos.tar.gz"): 1}
    assert len(list((cache / "downloads").glob("*photos.tar"))) == 1  # kept, gunzipped, for the next run

    # next run: the verified download is reused
    fetch_source(url, sha(data), tmp_path / "dest", cache, FAST)
    assert web.hits == {("GET", "/photos.tar.gz"): 1}
    assert tree(tmp_path / "dest") == IMAGES


def test_fetch_url_with_the_wrong_sha_says_both_and_keeps_the_old_dest(web, tmp_path, cache):
    data = zip_bytes(IMAGES)
    web.files["/photos.zip"] = (data, {})
    dest = make_tree(tmp_path / "raw" / "folder", {"cats/old.png": b"old"})
    with pytest.raises(DownloadError) as ei:
        fetch_source(web.url("/photos.zip"), "ab" * 32, dest, cache, FAST)
    msg = str(ei.value)
    assert sha(data) in msg and "ab" * 32 in msg and "data.source_sha256" in msg
    assert web.url("/photos.zip") in msg
    assert tree(dest) == {"cats/old.png": b"old"}


def test_fetch_url_without_sha_downloads_every_time(web, tmp_path, cache):
    web.files["/photos.zip"] = (zip_bytes(IMAGES), {})
    url = web.url("/photos.zip")
    assert fetch_source(url, "", tmp_path / "dest", cache, FAST)["sha256"] == sha(zip_bytes(IMAGES))
    changed = IMAGES | {"birds/d.png": b"d"}
    web.files["/photos.zip"] = (zip_bytes(changed), {})
    fetch_source(url, "", tmp_path / "dest", cache, FAST)
    assert tree(tmp_path / "dest") == changed
    assert web.hits == {("GET", "/photos.zip"): 2}


def test_fetch_url_of_something_else_is_refused(web, tmp_path, cache):
    web.files["/page.html"] = (b"<html>log in</html>", {})
    with pytest.raises(SourceError, match="not a zip or tar archive"):
        fetch_source(web.url("/page.html"), "", tmp_path / "dest", cache, FAST)
    assert not (tmp_path / "dest").exists()
