"""Sweeps as DVC experiments: the shared stages once, then each trial in a clone of its own, pushed as an experiment.

A trial never runs in the user's workspace. Whatever machine runs it (a Dask worker here or elsewhere) clones the
repository at the sweep's baseline commit from a git remote, pulls the outputs of the stages every trial shares
from the DVC remote, runs `dvc exp run` on the trial's stages (train and what follows it) with the trial's
settings, then pushes the outputs (`dvc push`) and, last, the experiment's git ref (`dvc exp push`). A trial is
finished exactly when its ref is on the git remote: a trial killed at any point before leaves nothing there, and
a sweep started again runs only the trials whose ref is missing (`finished`).

The user's repository then sees every trial with `dvc exp show` (its refs are fetched, `fetch_experiments`), and
`read_trial` reads a trial's metrics, training summary, probe curve and sample grid at its commit.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from gan.core import atomic
from gan.core.config import AUTO_METRIC, load_params
from gan.core.errors import PipelineError
from gan.core.paths import PATHS
from gan.core.sweepfile import SweepError, SweepSpec, Trial, load_sweep, plan
from gan.lifecycle import dvcrun, gitrepo, versions

FIRST_TRIAL_STAGE = "train"  # a trial reruns this stage and every stage downstream of it
REF_PREFIX = "refs/gan-sweeps/"  # the baseline commit of each sweep, on the git remote the workers clone from
SWEEP_REMOTE = "sweep"  # the DVC remote a trial's clone pulls from and pushes to (.dvc/config.local)
INPUTS = ("params.yaml", "dvc.yaml", "dvc.lock", "gan", "flows")  # what must be committed for a trial to run it


class TrialFailed(PipelineError):
    """A trial's clone, run or push failed; the message says which step and ends with its last output lines."""


# ---- the stages: which every trial shares, which each trial reruns


def _outs(stage: dict) -> list[str]:
    return [next(iter(o)) if isinstance(o, dict) else o for o in (stage.get("outs") or []) + (stage.get("metrics")
            or [])]  # fmt: skip


def _produces(stage: dict, path: str) -> bool:
    return any(path == out or path.startswith(out.rstrip("/") + "/") for out in _outs(stage))


def trial_stages(repo: str | Path) -> list[str]:
    """`train` and every stage downstream of it, in dvc.yaml's order."""
    stages = dvcrun.stage_definitions(repo)
    chosen = [FIRST_TRIAL_STAGE]
    for name, stage in stages.items():
        if name not in chosen and any(_produces(stages[c], d) for c in chosen for d in stage.get("deps") or []):
            chosen.append(name)
    return [n for n in stages if n in chosen]


def shared_stages(repo: str | Path) -> list[str]:
    """The stages every trial shares (everything not downstream of train), run once, up front, in the workspace."""
    trial = set(trial_stages(repo))
    return [n for n in dvcrun.stage_definitions(repo) if n not in trial]


def trial_inputs(repo: str | Path) -> list[str]:
    """The shared stages whose outputs a trial reads: their outputs are what a trial's clone pulls."""
    stages = dvcrun.stage_definitions(repo)
    deps = [d for n in trial_stages(repo) for d in stages[n].get("deps") or []]
    return [n for n in shared_stages(repo) if any(_produces(stages[n], d) for d in deps)]


def check_trial_keys(repo: str | Path, trials: list[Trial], source: str | Path | None = None) -> None:
    """Refuse a setting that a shared stage reads (e.g. data.*, classifier.*, train.device): a trial changing it
    would not be comparable with the others (they share that stage's outputs). `source`: the sweep file, named."""
    stages = dvcrun.stage_definitions(repo)
    for name in shared_stages(repo):
        for param in stages[name].get("params") or []:
            param = param if isinstance(param, str) else next(iter(param))
            for t in trials:
                for key in t.overrides:
                    if key == param or key.startswith(param + "."):
                        where = f"trial {t.label!r}" if key in t.own else "base (every trial)"
                        raise SweepError(
                            f"{source or 'the sweep'}: {where}: {key} is read by the shared stage {name!r}, which "
                            f"runs once for every trial, so no trial was run; a sweep may vary only what the stages "
                            f"from {FIRST_TRIAL_STAGE!r} on read ({', '.join(trial_stages(repo))}). Set {key} in "
                            "params.yaml (and commit) to sweep with a different one."
                        )


# ---- everything checked before a sweep starts anything


@dataclass(frozen=True)
class SweepPlan:
    """A sweep file checked against a workspace: what `flows.sweep` runs (or `--dry-run` prints)."""

    source: str  # the sweep file
    repo: str  # the workspace
    spec: SweepSpec
    trials: list[Trial]
    git_url: str  # where the trials clone from
    head: str  # the workspace's commit
    shared: list[str]  # the stages run once, in the workspace
    per_trial: list[str]  # the stages each trial runs


def _check_workspace(repo: Path) -> None:
    """params.yaml and a dvc.yaml with a train stage, in a git repository with a commit."""
    for name in ("params.yaml", "dvc.yaml"):
        if not (repo / name).is_file():
            raise SweepError(f"{repo}: no {name} here, so nothing was run: a sweep runs in a workspace of this "
                             "project (the folder with params.yaml and dvc.yaml).")  # fmt: skip
    try:
        stages = dvcrun.stage_definitions(repo)
    except (yaml.YAMLError, KeyError, TypeError) as err:
        raise SweepError(f"{repo / 'dvc.yaml'}: not a DVC pipeline with stages ({type(err).__name__}: "
                         f"{' '.join(str(err).split())}), so nothing was run. Restore it: git checkout dvc.yaml.") \
            from None  # fmt: skip
    if not isinstance(stages, dict) or FIRST_TRIAL_STAGE not in stages:
        raise SweepError(f"{repo / 'dvc.yaml'}: no {FIRST_TRIAL_STAGE!r} stage, so nothing was run: a trial reruns "
                         f"{FIRST_TRIAL_STAGE!r} and what follows it. Restore it: git checkout dvc.yaml.")  # fmt: skip
    if not gitrepo.is_repo(repo):
        raise SweepError(f"{repo}: not a git repository, so nothing was run: every trial clones the workspace's "
                         "commit. `git init`, commit params.yaml, dvc.yaml, dvc.lock and the code, and start the "
                         "sweep again.")  # fmt: skip
    if not gitrepo.head(repo):
        raise SweepError(f"{repo}: no commit yet, so nothing was run: every trial clones the workspace's commit. "
                         "Commit params.yaml, dvc.yaml, dvc.lock and the code, and start the sweep again.")  # fmt: skip


def check_sweep(sweep_file: str | Path, repo: str | Path, remote: str | None = None, promote: bool = False,
                address: str | None = None) -> SweepPlan:  # fmt: skip
    """Everything refused before a sweep starts anything, in order: the sweep file, the workspace (params.yaml,
    dvc.yaml, a git commit), every trial's settings against params.yaml, a setting a shared stage reads, the git
    remote, uncommitted inputs, with `promote` a sweep metric other than the gate's, and with `address` (a scheduler
    on another machine) whatever its workers could not reach (`check_reach`). Raises SweepError (one
    paragraph: the file, the trial, the key, what to do); reads only (no git or DVC writes)."""
    repo = Path(repo).resolve()
    spec = load_sweep(sweep_file)
    _check_workspace(repo)
    trials = plan(spec, repo / "params.yaml", source=sweep_file)
    check_trial_keys(repo, trials, sweep_file)
    url = git_url(repo, remote)
    if dirty := uncommitted_inputs(repo):
        raise SweepError(f"{repo}: uncommitted changes to {', '.join(dirty)}, so nothing was run: every trial runs "
                         "the committed HEAD (on other machines too). Commit them (or stash) and start the sweep "
                         "again.")  # fmt: skip
    if address:
        check_reach(repo, url, address)
    gate = load_params(repo / "params.yaml").promote.metric
    if promote and AUTO_METRIC not in (spec.metric, gate) and spec.metric != gate:
        raise SweepError(f"{sweep_file}: metric: {spec.metric} ranks the trials, but the champion gate decides by "
                         f"promote.metric = {gate}, so nothing was run: with --promote the best trial must be the "
                         f"best by what the gate judges. Set `metric: {gate}` in the sweep file, or promote.metric: "
                         f"{spec.metric} in params.yaml (and commit).")  # fmt: skip
    return SweepPlan(str(sweep_file), str(repo), spec, trials, url, gitrepo.head(repo) or "", shared_stages(repo),
                     trial_stages(repo))  # fmt: skip


# ---- with --address: every place a trial reaches must be reachable from another machine


def _host(url: str) -> str | None:
    """The host a URL names (scheme://[user@]host[:port]/..., or git's user@host:path); None for a local path."""
    if url.startswith("file://"):
        return None
    if "://" in url:
        return urlsplit(url).hostname or ""
    head = url.split("/", 1)[0]
    return head.rsplit("@", 1)[-1].split(":", 1)[0] if ":" in head else None


def _loopback(host: str | None) -> bool:
    return host is not None and (host in ("localhost", "::1", "0.0.0.0") or host.startswith("127."))


def _unreachable(what: str, url: str, instead: str) -> str | None:
    host = _host(url)
    if host is None:
        return f"{what} is {url}, a path on this machine, which a worker on another machine cannot reach; {instead}"
    if _loopback(host):
        return f"{what} is {url}, on this machine's loopback ({host}), which another machine cannot reach; {instead}"
    return None


def check_reach(repo: str | Path, git: str, address: str) -> None:
    """With a scheduler on another machine (`address` not on loopback), refuse what only this machine reaches: a git
    remote that is a path or on loopback, a DVC remote that is a folder here (or none: the pipeline would make one
    here) or whose endpoint is on loopback, a Prefect API on loopback (or none: the ephemeral one of this process).
    A scheduler on this machine's loopback runs its workers here: everything local is reachable then."""
    if _loopback(_host(address) if "://" in address else address.split(":", 1)[0]):
        return
    problems = []
    if why := _unreachable("the git remote", git, "push the repository to a git server and pass --git-remote NAME "
                           "(ssh://, https://, git://)"):  # fmt: skip
        problems.append(why)
    remote = versions.default_remote(Path(repo))
    if remote is None:
        problems.append("no DVC remote is configured (the pipeline would make a folder beside the workspace); add "
                        "one the workers reach: dvc remote add -d NAME s3://BUCKET/PATH (or ssh://)")  # fmt: skip
    else:
        instead = "use a remote the workers reach: dvc remote add -d NAME s3://BUCKET/PATH (or ssh://)"
        if why := _unreachable(f"the DVC remote {remote.name!r}", remote.url, instead):
            problems.append(why)
        endpoint = dict(remote_options(repo, remote.name)).get("endpointurl")
        if endpoint and _loopback(_host(endpoint)):
            problems.append(f"the DVC remote {remote.name!r}'s endpointurl is {endpoint}, on this machine's "
                            "loopback; give the address the workers reach it at (dvc remote modify NAME endpointurl "
                            "http://HOST:PORT)")  # fmt: skip
    api = os.environ.get("PREFECT_API_URL", "")
    if not api:
        problems.append("PREFECT_API_URL is not set, so this process would start a Prefect server of its own, which "
                        "the workers cannot report to; start one (prefect server start --host 0.0.0.0) and set "
                        "PREFECT_API_URL=http://HOST:4200/api")  # fmt: skip
    elif _loopback(_host(api)):
        problems.append(f"PREFECT_API_URL is {api}, on this machine's loopback, which the workers cannot report to; "
                        "set it to the address they reach (http://HOST:4200/api, the server started with --host "
                        "0.0.0.0)")  # fmt: skip
    if problems:
        raise SweepError(f"--address {address}: the trials run on other machines, so nothing was run: "
                         + "; ".join(problems) + ".")  # fmt: skip


# ---- the baseline every trial starts from


@dataclass(frozen=True)
class Baseline:
    sweep: str
    git_url: str  # where a trial's clone comes from and its experiment goes to
    ref: str  # REF_PREFIX + sweep/commit: the baseline commit on that remote
    commit: str
    dvc_url: str  # the DVC remote shared outputs are pulled from and trial outputs pushed to
    shared: tuple[str, ...]  # the stages whose outputs a trial pulls
    dvc_options: tuple[tuple[str, str], ...] = ()  # the remote's other settings (endpointurl, region, ...), no secrets

    def exp_prefix(self) -> str:
        """Where DVC keeps the experiments of this baseline: refs/exps/<2 hex>/<38 hex>/."""
        return f"refs/exps/{self.commit[:2]}/{self.commit[2:]}/"


def git_url(repo: str | Path, remote: str | None) -> str:
    """A git remote's URL (a configured remote's name, or a URL or path as is); None: the repository itself."""
    if not remote:
        return str(Path(gitrepo.toplevel(repo) or repo).resolve())
    proc = gitrepo.git(["remote", "get-url", remote], repo, check=False)
    if proc.returncode == 0:
        url = proc.stdout.strip()
        return url if "://" in url or ":" in url.split("/", 1)[0] else str((Path(repo) / url).resolve())
    if "://" in remote or ":" in remote.split("/", 1)[0] or Path(remote).exists():
        return remote if "://" in remote or not Path(remote).exists() else str(Path(remote).resolve())
    raise SweepError(f"--git-remote {remote!r}: neither a remote of this repository (`git remote -v` lists them) nor "
                     "a URL or an existing path, so nothing was run. Name a remote, or give its URL.")  # fmt: skip


def uncommitted_inputs(repo: str | Path) -> list[str]:
    """The trial's inputs (params.yaml, dvc.yaml, dvc.lock, code) that differ from HEAD: trials run HEAD."""
    return [c.path for c in gitrepo.changes(repo, [p for p in INPUTS if (Path(repo) / p).exists()])]


def commit_shared_stages(repo: str | Path, sweep: str) -> tuple[str, list[str]] | None:
    """Commit what running the shared stages changed among the pipeline's own files (dvc.lock, their metrics, the
    .gitignores DVC keeps): the trials' baseline must record those outputs. (commit, paths), or None if nothing
    changed. Files the workspace does not have (a run's history before any run) are not named to git."""
    changed = [c.path for c in gitrepo.changes(repo, versions.pipeline_files(Path(repo)))]
    if not changed:
        return None
    stages = ", ".join(shared_stages(repo))
    return gitrepo.commit_paths(repo, changed, f"gan-sweep {sweep}: the shared stages ({stages})"), changed


def publish_baseline(repo: str | Path, sweep: str, url: str, shared: list[str]) -> Baseline:
    """Push HEAD to `refs/gan-sweeps/<sweep>/<commit>` on the git remote (where every trial's clone fetches it; one ref
    per name and commit, so two sweeps of one name from different commits never move each other's baseline) and the
    workspace's outputs to its default DVC remote (set up as the pipeline sets one up where none is)."""
    repo = Path(repo)
    commit = gitrepo.head(repo)
    if not commit:
        raise SweepError(f"{repo}: no commit yet, so no trial was run. Commit params.yaml, dvc.yaml, dvc.lock and "
                         "the code, and start the sweep again.")  # fmt: skip
    ref = f"{REF_PREFIX}{sweep}/{commit}"
    gitrepo.git(["push", "-q", "--force", url, f"{commit}:{ref}"], repo)  # --force: only ever the same commit
    remote = versions.push(repo).remote
    return Baseline(sweep, url, ref, commit, remote.url, tuple(shared), remote_options(repo, remote.name))


SECRET_OPTIONS = ("access_key_id", "secret_access_key", "session_token", "password", "key", "keyfile", "credentialpath",
                  "gdrive_client_secret", "sas_token", "connection_string", "account_key")  # fmt: skip


def remote_options(repo: str | Path, name: str) -> tuple[tuple[str, str], ...]:
    """The DVC remote's settings a trial's clone needs besides its URL (an S3 `endpointurl`, `region`, `profile`; an
    SSH `user`, `port`), as the workspace's DVC config has them at every level. Credentials are left out: each
    worker takes its own from its environment (AWS_ACCESS_KEY_ID, ~/.aws, an SSH agent), never from the sweep."""
    _, settings = versions.remote_settings(Path(repo), name)
    return tuple(sorted((k, v) for k, v in settings.items() if k != "url" and k not in SECRET_OPTIONS))


def finished(base: Baseline) -> dict[str, str]:
    """{experiment name: commit} of the experiments on the git remote that start from the baseline."""
    out = gitrepo.git(["ls-remote", base.git_url, base.exp_prefix() + "*"], ".").stdout
    return {ref.rsplit("/", 1)[1]: sha for sha, _, ref in (line.partition("\t") for line in out.splitlines()) if ref}


def done_trials(trials: list[Trial], done: dict[str, str]) -> dict[str, str]:
    """{trial name: experiment name} of the trials whose settings already ran from this baseline (the hash at
    the end of a name: the same settings under another label, in an earlier sweep, count too)."""
    by_key = {name.rsplit("-", 1)[-1]: name for name in done}
    return {t.name: by_key[t.key] for t in trials if t.key in by_key}


# ---- one trial, in a clone of its own


def trial_env(threads: int, gpu: int | None) -> dict[str, str]:
    """The trial's stage processes: `threads` torch threads (0: torch's default), the one GPU `gpu` (None: all)."""
    env = {}
    if threads:
        env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    return env


def yaml_value(value) -> str:
    """A setting as `dvc exp run -S KEY=VALUE` reads it back (as YAML): a float always with a dot in its mantissa
    (PyYAML, like YAML 1.1, reads 1e-05 as a string)."""
    if isinstance(value, float):
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text
    return json.dumps(value)


def _step(what: str, args: list[str], folder: Path, on_line: Callable[[str], None], env: dict | None = None) -> None:
    """`dvc ARGS` in the trial's clone, as a process group that dies with this worker (`gan.lifecycle.lifeline`)."""
    rc, tail = dvcrun.stream(args, folder, on_line, env=env, lifeline=True)
    if rc != 0:
        raise TrialFailed(f"{what} failed (exit {rc}); last output:\n" + "\n".join(tail))


OWNER = ".gan-trial-owner"  # in a trial's clone: "HOST PID" of the worker process that made it


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_clones(work_root: Path) -> list[Path]:
    """Remove the trial clones left in `work_root` by attempts whose worker process is gone (killed: its process
    group went with it, `gan.lifecycle.lifeline`); a clone of a live worker is left alone, and so is one of another
    host (a shared work root). Run by every trial before it clones. Returns those removed."""
    removed = []
    for folder in sorted(work_root.iterdir()):
        try:
            host, pid = (folder / OWNER).read_text().split()
        except (OSError, ValueError):
            continue  # not one of ours, or being made right now
        if host == socket.gethostname() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def run_trial(
    trial: Trial, base: Baseline, work_root: str | Path | None, env: dict[str, str], on_line: Callable[[str], None]
) -> dict:
    """Clone, pull the shared outputs, `dvc exp run` the trial's stages with its settings, push outputs then the
    experiment. Returns {name, commit, seconds}; raises TrialFailed with the failing step and its output. A trial
    whose experiment is already on the git remote (an earlier attempt pushed it, then its worker died before the
    task returned) is finished: nothing is cloned or trained."""
    t0 = time.perf_counter()
    if (commit := finished(base).get(trial.name)) is not None:  # a retry of an attempt killed after its push
        on_line(f"trial {trial.label}: its experiment {trial.name} is already on {base.git_url}: finished, not rerun")
        return {"name": trial.name, "commit": commit, "seconds": round(time.perf_counter() - t0, 1), "reran": False}
    work_root = Path(work_root or work_root_default())
    work_root.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_clones(work_root):
        on_line(f"trial {trial.label}: removed {stale}, the clone of an attempt whose worker died")
    home = Path(tempfile.mkdtemp(prefix=f"{trial.name}-", dir=work_root))  # the attempt's: its owner, its clone
    folder = home / "repo"
    try:
        (home / OWNER).write_text(f"{socket.gethostname()} {os.getpid()}\n")
        # -- the baseline, from the git remote
        try:
            gitrepo.git(["clone", "-q", "--no-checkout", base.git_url, str(folder)], ".")
            gitrepo.git(["fetch", "-q", "origin", base.ref], folder)
            gitrepo.git(["checkout", "-q", "--detach", base.commit], folder)
            name, email = gitrepo.FALLBACK_IDENTITY
            for key, value in (("user.name", name), ("user.email", email)):
                if not gitrepo.git(["config", key], folder, check=False).stdout.strip():
                    gitrepo.git(["config", key, value], folder)
        except gitrepo.GitError as err:
            raise TrialFailed(f"clone of {base.git_url} at {base.commit[:10]} failed: {err}") from None
        # -- the shared stages' outputs, from the DVC remote
        dvcrun.dvc(["remote", "add", "--local", "--default", "--force", SWEEP_REMOTE, base.dvc_url], folder)
        for option, value in base.dvc_options:  # the workspace remote's settings (no credentials)
            dvcrun.dvc(["remote", "modify", "--local", SWEEP_REMOTE, option, value], folder)
        _step(f"dvc pull of the shared outputs from {base.dvc_url}", ["pull", *base.shared], folder, on_line)
        # -- the trial: its stages, as a DVC experiment
        sets = [a for k, v in trial.overrides.items() for a in ("-S", f"params.yaml:{k}={yaml_value(v)}")]
        run = ["exp", "run", "-n", trial.name, "--downstream", FIRST_TRIAL_STAGE, *sets]
        _step(f"trial {trial.label}", run, folder, on_line, env)
        # -- outputs first, then the ref: the ref on the remote means the trial is complete
        _step(f"dvc push to {base.dvc_url}", ["push"], folder, on_line)
        _step(f"dvc exp push to {base.git_url}", ["exp", "push", "--no-cache", base.git_url, trial.name], folder,
              on_line)  # fmt: skip
        commit = gitrepo.git(["rev-parse", base.exp_prefix() + trial.name], folder).stdout.strip()
        return {"name": trial.name, "commit": commit, "seconds": round(time.perf_counter() - t0, 1)}
    finally:
        shutil.rmtree(home, ignore_errors=True)


# ---- the user's repository: see the trials, read them, bring one in


def fetch_experiments(repo: str | Path, base: Baseline, names: list[str]) -> None:
    """Fetch the experiments' refs into the repository (`dvc exp show` lists them; `dvc exp apply NAME`)."""
    if names and Path(base.git_url).resolve() != Path(gitrepo.toplevel(repo) or repo).resolve():
        specs = [f"+{base.exp_prefix()}{n}:{base.exp_prefix()}{n}" for n in names]
        gitrepo.git(["fetch", "-q", base.git_url, *specs], repo)


@dataclass
class TrialRecord:
    """What the sweep report shows of a finished trial, read at its experiment's commit."""

    name: str
    commit: str
    metrics: dict
    train_summary: dict
    quality: str  # data/train/quality.tsv ("" without a probe)
    grid_png: bytes


def read_trial(repo: str | Path, name: str, commit: str) -> TrialRecord:
    """A finished trial's files at its commit: git-tracked ones from git, DVC outputs through the DVC API (the
    local cache, else the default remote the trial pushed them to)."""
    import dvc.api

    paths = PATHS

    def dvc_read(path: Path, mode: str = "r"):
        return dvc.api.read(path.as_posix(), repo=str(repo), rev=commit, mode=mode)

    metrics = json.loads(gitrepo.git(["show", f"{commit}:{paths.metrics.as_posix()}"], repo).stdout)
    try:
        quality = dvc_read(paths.train_quality)
    except FileNotFoundError:
        quality = ""
    return TrialRecord(name, commit, metrics, json.loads(dvc_read(paths.train_summary)), quality,
                       dvc_read(paths.grid, "rb"))  # fmt: skip


def _local_only_outs(repo: str | Path) -> dict[str, list[str]]:
    """{stage: its outputs DVC neither caches nor git tracks (train's checkpoints)}: they stay where a trial ran."""
    found: dict[str, list[str]] = {}
    for name, stage in dvcrun.stage_definitions(repo).items():
        for out in stage.get("outs") or []:
            if isinstance(out, dict) and next(iter(out.values())).get("cache") is False:
                found.setdefault(name, []).append(next(iter(out)))
    return found


def promotion_refusal(repo: str | Path, baseline: str) -> str | None:
    """Why `--promote` must not bring a trial into the workspace now, or None: HEAD is no longer the sweep's
    baseline (the trial's params.yaml and dvc.lock would silently revert what was committed since), or tracked
    files have uncommitted changes (they would be overwritten, or committed with the promotion)."""
    now = gitrepo.head(repo) or ""
    if now != baseline:
        return (
            f"HEAD is {now[:10]}, not the sweep's baseline {baseline[:10]}: a commit was made since the sweep "
            "started, and applying its best trial would revert it in the work tree. Run the sweep again from "
            "this HEAD with --promote, or bring the trial in by hand (dvc exp apply NAME) and review the diff."
        )
    if dirty := [c.path for c in gitrepo.changes(repo) if c.code != "??"]:
        return (
            f"uncommitted changes to {', '.join(sorted(dirty)[:8])}{' …' if len(dirty) > 8 else ''}: applying "
            "the best trial would overwrite them or commit them with it. Commit or stash them, then run the "
            "sweep again with --promote (its finished trials are not rerun)."
        )
    return None


def snapshot_pipeline_files(repo: str | Path) -> dict[str, bytes | None]:
    """The pipeline's own files (params.yaml, dvc.lock, metrics, .dvc files, .gitignores: `versions.pipeline_files`)
    as they are now, None for one that does not exist: what `restore_workspace` puts back."""
    repo = Path(repo)
    return {p: (repo / p).read_bytes() if (repo / p).is_file() else None for p in versions.pipeline_files(repo)
            if not (repo / p).is_dir()}  # fmt: skip


def restore_workspace(repo: str | Path, snapshot: dict[str, bytes | None]) -> None:
    """Put the pipeline's files back as `snapshot` has them (a file it did not have is removed) and the DVC outputs
    as that dvc.lock has them, after a failed promotion; raises PipelineError naming what could not be restored,
    instead of leaving it unsaid."""
    repo = Path(repo)
    problems = []
    for path, data in snapshot.items():
        try:
            if data is None:
                (repo / path).unlink(missing_ok=True)
            else:
                atomic.write_bytes(repo / path, data)
        except OSError as err:
            problems.append(f"{path}: {err}")
    proc = dvcrun.dvc(["checkout", "--force"], repo, check=False)
    if proc.returncode != 0:
        problems.append(f"dvc checkout --force: {' '.join((proc.stderr or proc.stdout).split())}")
    if problems:
        raise PipelineError(f"{repo}: the workspace could not be put back as it was before the promotion ("
                            + "; ".join(problems) + "). Restore it by hand: git checkout HEAD -- params.yaml dvc.lock "
                            "data/metrics; dvc checkout --force.")  # fmt: skip


def apply_experiment(repo: str | Path, name: str) -> None:
    """Bring a fetched trial into the workspace: `dvc exp apply` (params.yaml, dvc.lock, metrics), `dvc pull` of its
    outputs from the default remote. Its checkpoints stayed on the worker (never cached): the workspace's are
    another run's, so they are emptied and recorded as such (`dvc commit`), and `dvc status` is clean. On a failure
    the workspace is put back as it was (HEAD's files and outputs, `restore_workspace`) and the error raised."""
    repo = Path(repo)
    before = snapshot_pipeline_files(repo)
    try:
        proc = dvcrun.dvc(["exp", "apply", name], repo, check=False)
        if proc.returncode != 0 and "Checkout failed" not in proc.stdout + proc.stderr:  # outputs come next
            raise TrialFailed(f"dvc exp apply {name} failed: {(proc.stderr or proc.stdout).strip()}")
        dvcrun.dvc(["pull"], repo)
        for stage, outs in _local_only_outs(repo).items():
            for out in outs:
                shutil.rmtree(repo / out, ignore_errors=True)
                (repo / out).mkdir(parents=True)
            dvcrun.dvc(["commit", "-f", stage], repo)
    except (TrialFailed, dvcrun.StageFailed):
        restore_workspace(repo, before)
        raise


def work_root_default() -> str:
    """Where a worker makes its trial clones by default: its machine's temporary folder."""
    return os.path.join(tempfile.gettempdir(), "gan-sweep-trials")
