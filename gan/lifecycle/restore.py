"""Bring back any recorded version: its generator, metrics, samples, model card and settings; or a champion.

`restore(root, "champion")` (or a tag, a branch, a commit) reads that revision through DVC's file system:
git-tracked files from git's objects, DVC outputs from the local cache or, where absent, the DVC remote (in a
clone of a workspace on this machine, that workspace's remote, wherever the clone sits: `versions.shared_remote`,
recorded in the clone's `.dvc/config.local` so that `dvc pull` there reads it too). The work tree, the index and
HEAD are not touched; the files land in a new folder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from gan.core.errors import PipelineError
from gan.core.paths import Paths
from gan.lifecycle import gitrepo, versions

_P = Paths(Path("."))
# A run's outputs, as the repository holds them -> where they go in the restored folder.
RUN_FILES = {
    str(_P.generator): "generator.pt",
    str(_P.metrics): "metrics.json",
    "params.yaml": "params.yaml",
    str(_P.samples): "samples",  # grid, model card, TorchScript generator, samples.npz, PNGs
}
CHAMPION = str(_P.champion)  # generator, TorchScript, metrics, model card, grid, record.json
MANIFEST = "RESTORED.json"


class RestoreError(PipelineError):
    """The revision is unknown, its files are not in the cache nor the remote, or the target is in use."""


@dataclass(frozen=True)
class Restored:
    rev: str
    commit: str
    to: Path
    files: list[str]
    champion: bool  # the champion's files (a champion revision) rather than the run's


def champion_tag(root: Path, rev: str) -> str | None:
    """The champion tag `rev` names (`champion`: the newest), None when `rev` is no champion tag."""
    tags = gitrepo.champion_tags(root)
    if rev == "champion":
        return tags[0] if tags else None
    return rev if rev in tags else None


def _get(fs, rev: str, commit: str, src: str, dest: Path) -> None:
    try:
        fs.get(src, str(dest), recursive=fs.isdir(src))
    except Exception as err:  # DVC's own error types vary by cause (missing in git, cache, remote)
        raise RestoreError(
            f"{rev} ({commit[:10]}): could not fetch {src}: {type(err).__name__}: {err}. If that revision's files "
            f"are neither in this clone's DVC cache nor in its remote: was that run pushed (promote.push, or `dvc "
            f"push` where it ran)? `dvc remote list` shows where this clone looks; `--remote NAME` reads another."
        ) from err


def _views(root: Path, commit: str, remote: str | None) -> list:
    """The DVC views to read the revision's outputs through, in order. `remote` named: that remote only. Else the
    remote this clone uses today (its work tree's config: a workspace moved to S3 keeps its history there), then
    the one the revision's own config names (outputs pushed before a move)."""
    from dvc.api import DVCFileSystem

    if remote is not None:
        return [DVCFileSystem(str(root), rev=commit, remote=remote)]
    versions.adopt_shared_remote(root)
    views = []
    if (today := versions.remote_settings(root)) is not None:
        views.append(DVCFileSystem(str(root), rev=commit, remote=today[0], remote_config=today[1]))
    return [*views, DVCFileSystem(str(root), rev=commit)]


def _first(views: list, read: Callable[[object], object], tmp: Path | None = None):
    """`read(view)` through the first view that has every file; the last one's error when none has."""
    for k, view in enumerate(views):
        try:
            return read(view)
        except RestoreError:
            if k == len(views) - 1:
                raise
            if tmp is not None:  # a partial copy from this view goes
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()


def _locked_md5(fs, path: str) -> str | None:
    """The md5 the revision's dvc.lock records for `path` (None if it records none)."""
    if not fs.exists("dvc.lock"):
        return None
    lock = yaml.safe_load(fs.read_text("dvc.lock")) or {}
    outs = [o for st in lock.get("stages", {}).values() for o in st.get("outs", []) if o.get("path") == path]
    return outs[0].get("md5") if outs else None


def _fetch(fs, rev: str, commit: str, tmp: Path, champion: bool) -> list[str]:
    """Copy the revision's files into `tmp`; returns their names there."""
    if champion:  # the champion's own files; the run's samples and settings where that run made it
        _get(fs, rev, commit, CHAMPION, tmp / "champion")
        for f in (tmp / "champion").iterdir():
            f.rename(tmp / f.name)
        (tmp / "champion").rmdir()
        copied = sorted(f.name for f in tmp.iterdir())
        if _locked_md5(fs, str(_P.generator)) == hashlib.md5((tmp / "generator.pt").read_bytes()).hexdigest():
            for src in ("params.yaml", str(_P.samples)):
                _get(fs, rev, commit, src, tmp / RUN_FILES[src])
                copied.append(RUN_FILES[src])
        return copied
    copied = []
    for src, dest in RUN_FILES.items():
        _get(fs, rev, commit, src, tmp / dest)
        copied.append(dest)
    if fs.exists(CHAMPION):  # the champion at that revision, beside the run's own files
        _get(fs, rev, commit, CHAMPION, tmp / "champion")
        copied.append("champion")
    return copied


def fetch_generator(root: str | Path, rev: str, dest: str | Path, remote: str | None = None) -> str:
    """The generator of version `rev` to `dest` (a champion revision: the champion's); returns the commit."""
    root = Path(root)
    tag = champion_tag(root, rev)
    commit = gitrepo.resolve(root, tag or rev)
    src = f"{CHAMPION}/generator.pt" if tag else str(_P.generator)
    _first(_views(root, commit, remote), lambda fs: _get(fs, rev, commit, src, Path(dest)))
    return commit


def restore(root: str | Path, rev: str, to: str | Path | None = None, remote: str | None = None) -> Restored:
    """Copy the version `rev` names into `to` (a new or empty folder).

    A champion revision (`champion`, a `champion-*` tag) brings the champion's files (generator, TorchScript,
    metrics, model card, grid, record.json; plus the run's samples and params.yaml where that commit's run
    made it); any other revision the run's generator, metrics, params.yaml and samples, and the champion of
    that time in `champion/`. `remote`: a DVC remote other than the default (which is this clone's remote of
    today, then the revision's own)."""
    root = Path(root)
    tag = champion_tag(root, rev)
    commit = gitrepo.resolve(root, tag or rev)  # `champion` with no champion tag: resolve says so
    champion = tag is not None
    to = Path(to) if to is not None else root / "restored" / (tag or rev).replace("/", "-")  # git-ignored
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise RestoreError(f"--to {to}: exists and is not an empty folder; name a new one (nothing was changed)")
    try:
        to.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{to.name}.", dir=to.parent))
    except OSError as err:
        raise RestoreError(f"--to {to}: cannot create it: {err}") from err
    try:
        copied = _first(_views(root, commit, remote), lambda fs: _fetch(fs, rev, commit, tmp, champion), tmp)
        tags = gitrepo.git(["tag", "--points-at", commit], root).stdout.split()
        manifest = {"rev": rev, "commit": commit, "tags": tags, "champion": champion, "files": copied,
                    "restored_at": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if to.exists():
            to.rmdir()  # empty (checked above)
        tmp.rename(to)
    except OSError as err:
        raise RestoreError(f"--to {to}: cannot write it: {err} (nothing was changed there)") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Restored(rev, commit, to, [*copied, MANIFEST], champion)
