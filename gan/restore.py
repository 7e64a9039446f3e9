"""Bring back any recorded version: its generator, metrics, samples, model card and settings.

`restore(root, "champion")` (or a tag, a branch, a commit) reads that revision through DVC's file system:
git-tracked files from git's objects, DVC outputs from the local cache or, where absent, the DVC remote.
The work tree, the index and HEAD are not touched; the files land in a new folder.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gan import gitrepo
from gan.errors import PipelineError
from gan.paths import Paths

_P = Paths(Path("."))
# What a version is, as the repository holds it -> where it goes in the restored folder.
FILES = {
    str(_P.generator): "generator.pt",
    str(_P.metrics): "metrics.json",
    "params.yaml": "params.yaml",
    str(_P.samples): "samples",  # grid, model card, TorchScript generator, samples.npz, PNGs
}
OPTIONAL = {f"{_P.champion}/record.json": "champion_record.json"}  # at a champion's commit: how it was chosen
MANIFEST = "RESTORED.json"


class RestoreError(PipelineError):
    """The revision is unknown, its files are not in the cache nor the remote, or the target is in use."""


@dataclass(frozen=True)
class Restored:
    rev: str
    commit: str
    to: Path
    files: list[str]


def default_target(root: Path, rev: str) -> Path:
    """`restored/REV` in the repository (git-ignored)."""
    return Path(root) / "restored" / rev.replace("/", "-")


def _get(fs, rev: str, commit: str, src: str, dest: Path) -> None:
    try:
        fs.get(src, str(dest), recursive=fs.isdir(src))
    except Exception as err:  # DVC's own error types vary by cause (missing in git, cache, remote)
        raise RestoreError(
            f"{rev} ({commit[:10]}): could not fetch {src}: {type(err).__name__}: {err}. It is neither in the local "
            f"DVC cache nor in the remote: was that run pushed (promote.push, or `dvc push` where it ran)? "
            f"`dvc remote list` shows where this clone looks."
        ) from err


def _open(root: Path, commit: str, remote: str | None):
    from dvc.api import DVCFileSystem

    return DVCFileSystem(str(root), rev=commit, **({"remote": remote} if remote else {}))


def fetch_generator(root: str | Path, rev: str, dest: str | Path, remote: str | None = None) -> str:
    """Only the generator file of version `rev`, to `dest`; returns the commit."""
    commit = gitrepo.resolve(Path(root), rev)
    _get(_open(Path(root), commit, remote), rev, commit, str(_P.generator), Path(dest))
    return commit


def restore(root: str | Path, rev: str, to: str | Path | None = None, remote: str | None = None) -> Restored:
    """Copy the version `rev` names into `to` (a new or empty folder); `remote`: a DVC remote other than the
    default to read from."""
    root = Path(root)
    commit = gitrepo.resolve(root, rev)
    to = Path(to) if to is not None else default_target(root, rev)
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise RestoreError(f"--to {to}: exists and is not an empty folder; name a new one (nothing was changed)")
    to.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{to.name}.", dir=to.parent))
    try:
        fs = _open(root, commit, remote)
        copied = []
        for src, dest in {**FILES, **OPTIONAL}.items():
            if src in OPTIONAL and not fs.exists(src):
                continue
            _get(fs, rev, commit, src, tmp / dest)
            copied.append(dest)
        tags = gitrepo.git(["tag", "--points-at", commit], root).stdout.split()
        manifest = {"rev": rev, "commit": commit, "tags": tags, "files": copied,
                    "restored_at": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if to.exists():
            to.rmdir()  # empty (checked above)
        tmp.rename(to)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Restored(rev, commit, to, [*copied, MANIFEST])
