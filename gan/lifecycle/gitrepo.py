"""The few git operations the pipeline needs: status, commit of named paths only, annotated tags, revisions.

Thin wrappers over the `git` command (the one every user has), each failing with the command and git's
own message. Commits and tags use the repository's configured identity, or `gan-pipeline` where none is set
(a fresh CI machine, a worker's service account).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from gan.core.errors import PipelineError

FALLBACK_IDENTITY = ("gan-pipeline", "gan-pipeline@localhost")
CHAMPION_TAG_PREFIX = "champion-"


class GitError(PipelineError):
    """A git command failed, or a revision does not exist."""


def git(args: list[str], repo: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if check and proc.returncode != 0:
        shown = " ".join(a if len(a) <= 60 and "\n" not in a else "…" for a in args)  # not a whole message
        raise GitError(f"git {shown} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}")
    return proc


def is_repo(repo: str | Path) -> bool:
    return git(["rev-parse", "--is-inside-work-tree"], repo, check=False).stdout.strip() == "true"


def toplevel(repo: str | Path) -> str | None:
    proc = git(["rev-parse", "--show-toplevel"], repo, check=False)
    return proc.stdout.strip() or None


def branch(repo: str | Path) -> str | None:
    """The checked-out branch (None: detached HEAD)."""
    proc = git(["symbolic-ref", "-q", "--short", "HEAD"], repo, check=False)
    return proc.stdout.strip() or None


def operation_in_progress(repo: str | Path) -> str | None:
    """ "merge", "rebase", "cherry-pick", "revert" or "bisect" when one is under way (None otherwise)."""
    markers = {"MERGE_HEAD": "merge", "rebase-merge": "rebase", "rebase-apply": "rebase",
               "CHERRY_PICK_HEAD": "cherry-pick", "REVERT_HEAD": "revert", "BISECT_LOG": "bisect"}  # fmt: skip
    for marker, name in markers.items():
        path = git(["rev-parse", "--git-path", marker], repo).stdout.strip()
        if (Path(repo) / path).exists():
            return name
    return None


def head(repo: str | Path) -> str | None:
    """The commit HEAD names (None in a repository with no commit yet)."""
    proc = git(["rev-parse", "--verify", "-q", "HEAD"], repo, check=False)
    return proc.stdout.strip() or None


def describe_head(repo: str | Path, paths: tuple[str, ...] = ("gan", "flows", "dvc.yaml")) -> str:
    """HEAD's commit, "(with uncommitted changes)" where `paths` differ from it: the code a stage ran (the model
    card records it); "unknown (not a git checkout)" outside git."""
    commit = head(repo) if is_repo(repo) else None
    if commit is None:
        return "unknown (not a git checkout)"
    dirty = git(["diff", "--quiet", "HEAD", "--", *paths], repo, check=False).returncode != 0
    return commit + (" (with uncommitted changes)" if dirty else "")


def _identity(repo: str | Path) -> list[str]:
    """`-c user.name=... -c user.email=...` where the repository has no identity, else nothing."""
    has = all(git(["config", key], repo, check=False).stdout.strip() for key in ("user.name", "user.email"))
    name, email = FALLBACK_IDENTITY
    return [] if has else ["-c", f"user.name={name}", "-c", f"user.email={email}"]


# ---- status


@dataclass(frozen=True)
class Change:
    path: str
    code: str  # git's two-letter porcelain code: index, work tree ("??" untracked, "UU" etc. unmerged)

    @property
    def unmerged(self) -> bool:
        return "U" in self.code or self.code in ("AA", "DD")


def changes(repo: str | Path, paths: list[str] | None = None) -> list[Change]:
    """What differs from HEAD (staged or not, and untracked files), optionally only under `paths`.

    Paths are relative to `repo`, also where it is a subfolder of the git repository (a monorepo,
    `dvc init --subdir`); changes outside it are named relative to it too (`../...`)."""
    args = ["status", "--porcelain=v1", "-z", "--untracked-files=all"]
    out = git([*args, *(["--", *paths] if paths else [])], repo).stdout
    prefix = git(["rev-parse", "--show-prefix"], repo).stdout.strip()  # porcelain paths are the top level's
    result, entries = [], iter(out.split("\0"))
    for entry in entries:
        if not entry:
            continue
        code, path = entry[:2], entry[3:]
        if code[0] in "RC":  # a rename's old path follows as its own entry
            next(entries, None)
        if prefix:
            path = path[len(prefix) :] if path.startswith(prefix) else os.path.relpath("/" + path, "/" + prefix)
        result.append(Change(path, code))
    return result


# ---- commit and tag


def commit_paths(repo: str | Path, paths: list[str], message: str) -> str:
    """Commit exactly `paths` (as they are in the work tree, deletions included); returns the new commit.

    Whatever else is staged stays staged and uncommitted (`git commit --only`).
    """
    new = [c.path for c in changes(repo, paths) if c.code == "??"]
    if new:  # `--only` takes tracked paths from the work tree; new ones must be known to git first
        git(["add", "--", *new], repo)
    git([*_identity(repo), "commit", "-q", "--only", "-m", message, "--", *paths], repo)
    return head(repo) or ""


def tag(repo: str | Path, name: str, message: str, commit: str = "HEAD") -> str:
    """An annotated tag `name` (or `name-2`, `name-3`, ... if taken) on `commit`; returns the name used."""
    final, n = name, 1
    while git(["rev-parse", "-q", "--verify", f"refs/tags/{final}"], repo, check=False).returncode == 0:
        n += 1
        final = f"{name}-{n}"
    git([*_identity(repo), "tag", "-a", final, "-m", message, commit], repo)
    return final


def champion_tags(repo: str | Path, points_at: str | None = None) -> list[str]:
    """The champion tags (only those on commit `points_at`, if given), newest first (by creation time, then
    name: the names carry a UTC time)."""
    at = [f"--points-at={points_at}"] if points_at else []
    out = git(["for-each-ref", "--sort=-refname", "--sort=-creatordate", "--format=%(refname:short)", *at,
               f"refs/tags/{CHAMPION_TAG_PREFIX}*"], repo).stdout  # fmt: skip
    return out.split()


def resolve(repo: str | Path, rev: str) -> str:
    """The commit a tag, branch or commit id names; `champion` is the newest champion tag."""
    if rev == "champion":
        tags = champion_tags(repo)
        if not tags:
            raise GitError(
                "no champion tag yet (champion-*): a flow run that promotes a champion with promote.commit on "
                "creates one; or name a commit or tag"
            )
        rev = tags[0]
    proc = git(["rev-parse", "-q", "--verify", f"{rev}^{{commit}}"], repo, check=False)
    if proc.returncode != 0:
        known = ", ".join(champion_tags(repo)[:5]) or "none"
        raise GitError(f"{rev!r} names no commit in {repo} (a tag, branch or commit id; champion tags: {known})")
    return proc.stdout.strip()
