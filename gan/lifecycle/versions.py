"""Every run recorded: a git commit of the pipeline's own files, a tag per champion, a `dvc push`.

After a flow run, `record_run` commits exactly the files the pipeline maintains (params.yaml, dvc.lock, the
`.dvc` files of the champion and the run history, the git-tracked metrics and DVC's `.gitignore`s) and tags
a new champion; `push` sends every output to the default DVC remote (in a clone of a workspace on this machine,
that workspace's remote, wherever the clone sits: `shared_remote`). Together they make any past model restorable on
another clone (`gan restore`).

A commit is refused, with the reason, when it would record something other than what the run made: a
merge conflict in those files, params.yaml edited during the run, the pipeline no longer current, or
uncommitted edits to the code and files the stages depend on (dvc.lock would name code the commit lacks).
Nothing is lost then: the outputs stay in place, and the next run commits them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml

from gan.core.errors import PipelineError
from gan.core.paths import Paths
from gan.lifecycle import dvcrun, gitrepo

PARAMS_FILE = "params.yaml"
LOCK_FILE = "dvc.lock"
CHAMPION_POINTER = f"{Paths(Path('.')).champion}.dvc"  # `dvc add`ed by the flow's gate


class CommitRefused(PipelineError):
    """The pipeline's files cannot be committed as they are; the message says why and what to do."""


class PushFailed(PipelineError):
    """`dvc push` failed; the message carries DVC's reason and a hint."""


# ---- which files are the pipeline's


def _dvc_yaml(root: Path) -> dict:
    return yaml.safe_load((root / "dvc.yaml").read_text())["stages"]


def _entries(stage: dict, kinds: tuple[str, ...]) -> list[tuple[str, dict]]:
    out = []
    for kind in kinds:
        for entry in stage.get(kind, []) or []:
            path, opts = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
            out.append((path, opts or {}))
    return out


def _ignored(root: Path, paths: list[str]) -> set[str]:
    """Those of `paths` git ignores, whether or not they exist yet (a folder pattern such as `/data/checkpoints/`
    matches a path git cannot see as a folder only when asked with the trailing slash)."""
    if not paths:
        return set()
    asked = [*paths, *(f"{p.rstrip('/')}/" for p in paths)]
    proc = gitrepo.git(["check-ignore", "--no-index", "--", *asked], root, check=False)
    return {p.rstrip("/") for p in proc.stdout.split()}


def pipeline_files(root: Path) -> list[str]:
    """The files a run writes that git tracks: params.yaml, dvc.lock, the `.dvc` files the flow maintains, the
    metrics DVC leaves to git (`cache: false`) and the `.gitignore`s DVC keeps beside its outputs."""
    paths = Paths(Path("."))
    added = [paths.champion, paths.history.parent]  # `dvc add`ed by the flow (CHAMPION_POINTER, history's)
    outs = [p for s in _dvc_yaml(root).values() for p in _entries(s, ("outs", "metrics", "plots"))]
    uncached = [path for path, opts in outs if opts.get("cache") is False]
    ignored = _ignored(root, uncached)
    uncached = [p for p in uncached if p not in ignored]  # checkpoints: local only
    gitignores = {str(Path(p).parent / ".gitignore") for p in [*(o for o, _ in outs), *map(str, added)]}
    files = {PARAMS_FILE, LOCK_FILE, *(f"{a}.dvc" for a in added), *uncached, *gitignores}
    return sorted(files)


def stage_inputs(root: Path) -> list[str]:
    """dvc.yaml and every stage dependency git tracks (code, configuration): what dvc.lock records the hash of."""
    stages = _dvc_yaml(root).values()
    outs = {p for s in stages for p, _ in _entries(s, ("outs", "metrics", "plots"))}
    deps = {p for s in stages for p, _ in _entries(s, ("deps",))}
    return sorted({"dvc.yaml", *(d for d in deps if d not in outs and not any(d.startswith(o + "/") for o in outs))})


def params_digest(root: Path) -> str:
    """What params.yaml holds now; the flow takes it when it reads the settings, `record_run` compares."""
    return hashlib.sha256((root / PARAMS_FILE).read_bytes()).hexdigest()


# ---- the commit and the tag


@dataclass
class Recorded:
    commit: str | None = None  # None: nothing committed (see `note`)
    tag: str | None = None
    files: list[str] = field(default_factory=list)
    left_uncommitted: list[str] = field(default_factory=list)  # other changes in the work tree, untouched
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def commit_message(run: dict, flow_run: str, later: bool = False) -> str:
    """`run`: a data/history/runs.csv row; `flow_run`: the run that commits.

    `later`: no stage ran in `flow_run`; it commits files left uncommitted (a refused commit, a manual `dvc repro`),
    and `run` is the last recorded flow run, named for context only."""
    promoted = str(run.get("promoted")).lower() == "true"
    champ = run.get("champion_value")
    champ = "none" if champ in (None, "") or champ != champ else f"{float(champ):.4g}"  # NaN: pandas' empty cell
    name = run.get("flow_run_name") if isinstance(run.get("flow_run_name"), str) else ""
    outcome = (f"{run['metric']} {float(run['value']):.4g} (champion {champ}), "
               f"{'promoted to champion' if promoted else 'not promoted'}")  # fmt: skip
    who = f"{name + ' ' if name else ''}({run.get('flow_run_id')})"
    if later:
        head = "gan-pipeline: record the pipeline's files left uncommitted"
        body = [f"Committed by flow run {flow_run}, which ran no stage.",
                f"Last recorded flow run: {who}: {outcome}, stages {run.get('stages_run')}"]  # fmt: skip
    else:
        head = f"gan-pipeline: {outcome}"
        body = [
            f"Flow run: {who}",
            f"Stages run: {run.get('stages_run')}",
            f"Dataset: {run.get('dataset')}, arch: {run.get('arch')}, epochs: {run.get('epochs')}",
            f"Gate: {'PROMOTED' if promoted else 'not promoted'}",
        ]
    return head + "\n\n" + "\n".join(body) + "\n"


def champion_tag_message(record: dict) -> str:
    metrics = record.get("metrics", {})
    dec = record.get("decision", {})
    metric = dec.get("metric")
    keep = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not k.startswith("per_class")}
    return (
        f"gan-pipeline champion: {metric} {dec.get('candidate_value')}\n\n{dec.get('reason', '')}\n"
        f"Flow run: {record.get('flow_run_id')}\nPromoted at: {record.get('promoted_at')}\n"
        f"Dataset: {record.get('dataset')}\nData version: {json.dumps(record.get('data_version'))}\n\n"
        f"Metrics:\n{json.dumps(keep, indent=1, sort_keys=True)}\n"
    )


def champion_tag_name(record: dict) -> str:
    when = datetime.fromisoformat(record["promoted_at"]) if record.get("promoted_at") else datetime.now(UTC)
    return gitrepo.CHAMPION_TAG_PREFIX + when.astimezone(UTC).strftime("%Y%m%d-%H%M%S")


def _refuse_if_inconsistent(
    root: Path, pending: list[gitrepo.Change], changed: list[gitrepo.Change], digest: str | None
) -> None:
    """The reasons a commit would record something other than what the run made (`changed`: the whole tree's)."""
    keep = "Nothing was committed and nothing is lost: the run's outputs are in place; the next run commits them."
    busy = gitrepo.operation_in_progress(root)
    if busy:
        raise CommitRefused(f"a git {busy} is in progress: finish or abort it, then rerun. {keep}")
    if gitrepo.branch(root) is None:
        raise CommitRefused(
            f"HEAD is detached (at {gitrepo.head(root)[:10]}): a commit here would be on no branch. Check out a "
            f"branch (`git switch -c nightly` or `git switch main`), or set promote.commit: false. {keep}"
        )
    unmerged = [c.path for c in pending if c.unmerged]
    if unmerged:
        raise CommitRefused(f"merge conflict in {', '.join(unmerged)}: resolve it (git status), then rerun. {keep}")
    if digest is not None and params_digest(root) != digest:
        raise CommitRefused(
            f"{PARAMS_FILE} was edited while the run was going: the run used other settings than the file now "
            f"holds, so committing it would record a half-edit. Finish the edit and rerun (the run trains on "
            f"it). {keep}"
        )
    inputs = stage_inputs(root)
    code = [c.path for c in changed if any(c.path == i or c.path.startswith(i + "/") for i in inputs)]
    if code:
        raise CommitRefused(
            f"uncommitted edits to files the stages depend on: {', '.join(code)}. dvc.lock records their "
            f"hashes, so a commit without them could not be reproduced. Commit (or stash) them, then rerun; "
            f"or set promote.commit: false. {keep}"
        )
    if not dvcrun.is_current(None, root):
        raise CommitRefused(
            f"the pipeline is not current any more (`dvc status` lists changes): something changed during the "
            f"run. Rerun it. {keep}"
        )


def record_run(root: Path, flow_run: str, params_sha: str | None = None, run: dict | None = None) -> Recorded:
    """Commit the pipeline's files if they changed (tag a new champion); report other changes, never commit them.

    `params_sha`: `params_digest` when the run read its settings; `run`: this run's history row (None when no
    stage ran: files an earlier run left uncommitted are committed with that run's row, the last one).
    """
    root = Path(root)
    if not gitrepo.is_repo(root):
        return Recorded(note=f"{root} is not a git repository: nothing committed (git init, or promote.commit: false)")
    files = set(pipeline_files(root))
    changed = gitrepo.changes(root)
    pending = [c for c in changed if c.path in files]
    others = sorted(c.path for c in changed if c.path not in files)
    if not pending:
        tag = tag_champion(root)  # one an earlier run could not make
        note = "the pipeline's files are as committed: nothing to commit" + (f"; tagged {tag}" if tag else "")
        return Recorded(tag=tag, left_uncommitted=others, note=note)
    _refuse_if_inconsistent(root, pending, changed, params_sha)

    paths = Paths(root)
    later = run is None
    if later:
        from gan.lifecycle.history import read_runs

        runs = read_runs(paths.history)
        run = runs[-1] if runs else {"metric": "none", "value": "nan", "flow_run_id": flow_run}
    paths_changed = [c.path for c in pending]
    message = commit_message(run, flow_run, later)
    record = _champion_record(root) if CHAMPION_POINTER in paths_changed else None
    if record is not None and record.get("flow_run_id") != run.get("flow_run_id"):
        message += f"Carries the champion promoted by flow run {record.get('flow_run_id')}, not recorded before.\n"
    commit = gitrepo.commit_paths(root, paths_changed, message)
    tag = tag_champion(root)
    note = f"committed {len(paths_changed)} file(s)" + (f", tagged {tag}" if tag else "")
    return Recorded(commit, tag, paths_changed, others, note)


def _champion_record(root: Path) -> dict | None:
    from gan.lifecycle.champion import read_record

    return read_record(Paths(root).champion)


def tag_champion(root: Path) -> str | None:
    """Tag the commit that last changed the champion's pointer, unless a champion tag is on it already; returns
    the new tag (None: nothing to tag). Run after every commit, so a tag that failed once is made by the next run."""
    pointer = CHAMPION_POINTER
    if gitrepo.changes(root, [pointer]):
        return None  # the champion in the work tree is not committed yet
    commit = gitrepo.git(["log", "-1", "--format=%H", "--", pointer], root).stdout.strip()
    record = _champion_record(root)
    if not commit or record is None or gitrepo.champion_tags(root, points_at=commit):
        return None
    try:
        return gitrepo.tag(root, champion_tag_name(record), champion_tag_message(record), commit)
    except gitrepo.GitError as err:
        raise gitrepo.GitError(f"committed {commit[:10]}, but tagging its champion failed: {err}. The next run "
                               "tries again.") from err  # fmt: skip


# ---- the DVC remote


@dataclass(frozen=True)
class Remote:
    name: str
    url: str
    created: bool = False  # configured by `ensure_remote` just now
    shared_from: str | None = None  # the repository on this machine whose remote a clone takes (`shared_remote`)


def _config(root: Path) -> dict[str, tuple[str, str]]:
    """{key: (the config file that sets it, value)}, from one `dvc config --list --show-origin` (every level, the
    later one winning; `dvc remote list` wraps long URLs)."""
    values: dict[str, tuple[str, str]] = {}
    for line in dvcrun.dvc(["config", "--list", "--show-origin"], root).stdout.splitlines():
        origin, _, setting = line.partition("\t")
        key, _, value = setting.partition("=")
        values[key.strip()] = (origin.strip(), value.strip())
    return values


def remote_settings(root: Path, name: str | None = None) -> tuple[str, dict[str, str]] | None:
    """A remote as DVC sees it here now (the work tree's config, every level): its name and settings, the URL
    resolved. `name` None: the default remote (None when there is none)."""
    values = _config(root)
    if name is None:
        default = _default(root, values)
        if default is None:
            return None
        name = default.name
    prefix = f"remote.{name}."
    settings = {k.removeprefix(prefix): v for k, (_, v) in values.items() if k.startswith(prefix)}
    url = settings.get("url", "")
    if url and "://" not in url and not Path(url).is_absolute():
        url = os.path.normpath((Path(root) / values[f"{prefix}url"][0]).resolve().parent / url)
    return name, {**settings, "url": url}


def _default(root: Path, values: dict[str, tuple[str, str]]) -> Remote | None:
    name = values.get("core.remote", ("", ""))[1]
    if not name:
        return None
    origin, url = values.get(f"remote.{name}.url", ("", ""))
    if url and "://" not in url and not Path(url).is_absolute():  # DVC resolves them itself; kept for safety
        url = os.path.normpath((Path(root) / origin).resolve().parent / url)
    return Remote(name, url)


def default_remote(root: Path) -> Remote | None:
    """The default remote and its URL, as DVC sees it here. A relative path is resolved from its config file's
    folder."""
    return _default(root, _config(root))


def origin_repository(root: Path) -> Path | None:
    """The DVC project on this machine that `root` was cloned from: git remote `origin` when it is a folder (a path
    or a file:// URL) with a DVC project at the same subfolder; None for a server (https, ssh), a bare repository,
    or no origin."""
    proc = gitrepo.git(["remote", "get-url", "origin"], root, check=False)
    url = proc.stdout.strip()
    if proc.returncode != 0 or not url:
        return None
    if url.startswith("file://"):
        url = url[len("file://") :]
    elif "://" in url or ":" in url.split("/", 1)[0]:
        return None
    top = Path(gitrepo.toplevel(root) or root)
    prefix = gitrepo.git(["rev-parse", "--show-prefix"], root).stdout.strip()  # a DVC project in a subfolder
    origin = (top / url / prefix).resolve()
    return origin if (origin / ".dvc").is_dir() and origin != Path(root).resolve() else None


def shared_remote(root: Path, _seen: tuple[Path, ...] = ()) -> Remote | None:
    """The remote this repository's outputs go to and come from: DVC's default remote, except in a clone of a
    project on this machine (`origin_repository`) whose own `.dvc/config.local` names none. There it is the remote
    that project uses, where that is a folder (`shared_from` names the project): every clone of a workspace, at
    whatever depth it sits, shares the workspace's remote; the tracked `.dvc/config`'s relative URL would name a
    folder beside each clone instead."""
    root = Path(root).resolve()
    values = _config(root)
    own = _default(root, values)
    keys = ["core.remote", *([f"remote.{own.name}.url"] if own else [])]
    if any(values.get(k, ("", ""))[0].endswith("config.local") for k in keys):
        return own  # this clone chose its remote
    origin = origin_repository(root)
    if origin is None or origin in _seen or len(_seen) >= 8:
        return own
    theirs = shared_remote(origin, (*_seen, root))
    if theirs is None or "://" in theirs.url or (own is not None and (own.name, own.url) == (theirs.name, theirs.url)):
        return own
    return Remote(theirs.name, theirs.url, shared_from=theirs.shared_from or str(origin))


def adopt_shared_remote(root: Path) -> Remote | None:
    """`shared_remote`, recorded in this clone's `.dvc/config.local` where it differs from DVC's default remote, so
    that every DVC command here (`dvc pull`, `dvc push`) uses it too. None: no remote configured anywhere."""
    remote = shared_remote(root)
    if remote is not None and remote.shared_from:
        dvcrun.dvc(["remote", "add", "--local", "--default", "--force", remote.name, remote.url], root)
    return remote


def ensure_remote(root: Path) -> Remote:
    """The remote outputs are pushed to (`adopt_shared_remote`: in a clone of a workspace on this machine, that
    workspace's); where none is configured, a local one beside the work tree (in .dvc/config.local, so the tracked
    config is untouched): `<repo>-dvc-remote` next to the git repository's folder."""
    remote = adopt_shared_remote(root)
    if remote is not None:
        return remote
    top = Path(gitrepo.toplevel(root) or root.resolve())  # outside the git work tree, also for a subfolder repo
    url = str(top.parent / f"{top.name}-dvc-remote")
    dvcrun.dvc(["remote", "add", "--local", "--default", "--force", "local", url], root)
    return Remote("local", url, created=True)


@dataclass(frozen=True)
class Pushed:
    remote: Remote
    message: str  # DVC's summary: "N files pushed" or "Everything is up to date."


def push(root: Path) -> Pushed:
    """`dvc push` of every output to the default remote (set up first if there is none)."""
    root = Path(root)
    remote = ensure_remote(root)
    proc = dvcrun.dvc(["push"], root, check=False)
    if proc.returncode != 0:
        reason = " ".join(line.strip() for line in (proc.stderr + proc.stdout).splitlines()
                          if line.strip() and "dvc.org/support" not in line)  # fmt: skip
        raise PushFailed(
            f"dvc push to remote {remote.name!r} ({remote.url}) failed: {reason or f'exit {proc.returncode}'}. "
            f"Check that the remote is reachable and writable (`dvc remote list`; `dvc push` by hand shows the "
            f"same error), or point it elsewhere (`dvc remote modify {remote.name} url ...`). Nothing is lost: "
            f"the local DVC cache holds every file, and the next run pushes what is missing."
        )
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    return Pushed(remote, lines[-1] if lines else "pushed")
