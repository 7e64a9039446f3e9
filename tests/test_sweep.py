"""Sweeps: the sweep file, the trial plan (`--dry-run`) and its refusals, and sweeps on real Dask clusters.

The cluster tests start a real Dask scheduler and two `dask worker` processes (no nanny, each with a temp folder
of its own standing in for a machine: a trial clones, pulls and pushes there), a bare git remote and the completed
flow's DVC remote, and report to the session's real Prefect server; the default path (`python -m flows.sweep FILE`,
no --address) starts its own local cluster. Every process a test starts is stopped in `finally`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml

from flows import sweep as flow_sweep
from gan.core.sweepfile import SweepError, load_sweep, plan
from gan.lifecycle import sweep as sw
from gan.outputs.sweep_report import TrialRow, curves_png, grids_picture, ranked, report_markdown, table_rows

from .conftest import (
    REPO,
    S3_CREDENTIALS,
    _start_prefect_server,
    copy_repo,
    free_port,
    history,
    prefect_server_ready,
    run,
    s3_server,
)

FAULTS = Path(__file__).parent / "sweep_faults"  # sitecustomize: the trial with train.seed 7 diverges
SWEEP_TIMEOUT_S = 900  # a sweep process that runs longer has hung: it is killed (its whole process group)


def write(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# ---- the sweep file and the plan


GRID = {
    "name": "lr-loss",
    "base": {"train.epochs": 1},
    "search": {"grid": {"train.lr_g": [0.0005, 0.002], "train.loss": ["ns", "hinge"]}},
    "budget": {"max_seconds": 120},
}


def test_a_grid_plans_every_combination_with_stable_names(tmp_path):
    trials = plan(load_sweep(write(tmp_path / "s.yaml", GRID)), REPO / "params.yaml")
    assert [t.own for t in trials] == [
        {"train.lr_g": 0.0005, "train.loss": "ns"},
        {"train.lr_g": 0.0005, "train.loss": "hinge"},
        {"train.lr_g": 0.002, "train.loss": "ns"},
        {"train.lr_g": 0.002, "train.loss": "hinge"},
    ]
    assert trials[0].name.startswith("lr-loss-lr-g-0.0005-loss-ns-") and len({t.name for t in trials}) == 4
    assert trials[0].overrides == {
        "train.epochs": 1,
        "train.max_seconds": 120,
        "train.lr_g": 0.0005,
        "train.loss": "ns",
    }
    # the same settings under another sweep layout and label: the same hash (a later sweep skips them)
    other = {**GRID, "search": {"trials": {"mine": {"train.lr_g": 0.0005, "train.loss": "ns"}}}}
    again = plan(load_sweep(write(tmp_path / "t.yaml", other)), REPO / "params.yaml")
    assert again[0].name == f"lr-loss-mine-{trials[0].key}"


def test_random_draws_are_seeded_and_within_their_ranges(tmp_path):
    spec = {**GRID, "search": {"random": {"n": 6, "seed": 3, "ranges": {"train.lr_d": {"low": 1e-4, "high": 1e-2,
            "log": True}}, "choices": {"train.loss": ["ns", "hinge"]}}}}  # fmt: skip
    first = plan(load_sweep(write(tmp_path / "s.yaml", spec)), REPO / "params.yaml")
    second = plan(load_sweep(write(tmp_path / "s.yaml", spec)), REPO / "params.yaml")
    assert [t.own for t in first] == [t.own for t in second] and len(first) == 6
    assert all(1e-4 <= t.own["train.lr_d"] <= 1e-2 and t.own["train.loss"] in ("ns", "hinge") for t in first)
    spec["search"]["random"]["seed"] = 4
    assert [t.own for t in plan(load_sweep(write(tmp_path / "s.yaml", spec)), REPO / "params.yaml")] != [
        t.own for t in first
    ]


def test_a_bad_sweep_file_is_refused_naming_each_key(tmp_path):
    bad = {"name": "Bad Name", "base": {"lr": 1}, "search": {"grid": {"train.lr_g": [1e-3]}, "trials": {"a": {}}},
           "budget": {"kimg": 3, "max_seconds": 4}, "paralel": 2, "metric": "fid_foo"}  # fmt: skip
    with pytest.raises(SweepError) as info:
        load_sweep(write(tmp_path / "s.yaml", bad))
    text = str(info.value)
    for needle in ("name = 'Bad Name'", "'lr' is not a params.yaml key", "exactly one of grid, random, trials",
                   "exactly one of max_seconds, kimg", "paralel: unknown key", "metric = 'fid_foo'"):  # fmt: skip
        assert needle in text, text
    # a value the params schema refuses: named with its trial, before anything runs
    wrong = {**GRID, "search": {"grid": {"train.loss": ["ns", "hinj"]}}}
    with pytest.raises(SweepError, match=r"(?s)trial 'loss-hinj'.*no trial was run.*train\.loss = 'hinj'"):
        plan(load_sweep(write(tmp_path / "s.yaml", wrong)), REPO / "params.yaml")
    with pytest.raises(SweepError, match="no such sweep file"):
        load_sweep(tmp_path / "missing.yaml")


def test_trials_rerun_train_and_what_follows_it_and_may_not_change_a_shared_stage(tmp_path):
    assert sw.trial_stages(REPO) == ["train", "evaluate", "export"]
    assert sw.shared_stages(REPO) == ["source", "download", "prepare", "classifier", "judge", "reference"]
    assert sw.trial_inputs(REPO) == ["prepare", "classifier", "judge", "reference"]
    shared = [("data.resolution", 32, "prepare"), ("classifier.lr", 0.002, "classifier"),
              ("train.device", "cpu", "classifier"), ("evaluate.n_samples", 100, "reference")]  # fmt: skip
    for key, value, stage in shared:
        spec = {**GRID, "search": {"grid": {key: [value]}}}
        trials = plan(load_sweep(write(tmp_path / "s.yaml", spec)), REPO / "params.yaml")
        with pytest.raises(SweepError, match=rf"{key} is read by the shared stage '{stage}'"):
            sw.check_trial_keys(REPO, trials)
    sw.check_trial_keys(REPO, plan(load_sweep(write(tmp_path / "s.yaml", GRID)), REPO / "params.yaml"))


def test_the_shared_stages_commit_names_only_the_files_that_changed(tmp_path):
    # a workspace that never ran the flow has no data/history.dvc: git must not be asked to commit it
    for f in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / f, tmp_path / f)
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t",
                "commit", "-qm", "start"]):  # fmt: skip
        run(cmd, tmp_path)
    assert sw.commit_shared_stages(tmp_path, "s") is None
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {prepare: {cmd: python -m gan prepare}}\n")
    (tmp_path / "data" / "metrics").mkdir(parents=True)
    (tmp_path / "data" / "metrics" / "judge.json").write_text("{}")
    commit, paths = sw.commit_shared_stages(tmp_path, "s")
    assert sorted(paths) == ["data/metrics/judge.json", "dvc.lock"]
    assert run(["git", "show", "--name-only", "--format=%s", commit], tmp_path).stdout.split() == [
        "gan-sweep", "s:", "the", "shared", "stages", "(source,", "download,", "prepare,", "classifier,", "judge,",
        "reference)", "data/metrics/judge.json", "dvc.lock"]  # fmt: skip


def test_a_finished_trial_is_found_by_its_settings_hash(tmp_path):
    trials = plan(load_sweep(write(tmp_path / "s.yaml", GRID)), REPO / "params.yaml")
    done = {f"older-label-{trials[1].key}": "c" * 40, "unrelated-00000000": "d" * 40}
    assert sw.done_trials(trials, done) == {trials[1].name: f"older-label-{trials[1].key}"}


def test_a_retried_trial_whose_experiment_was_pushed_is_finished_without_training(tmp_path):
    """The worker died after `dvc exp push`, before the task returned: the retry finds the experiment on the git
    remote and reports it finished; nothing is cloned (no clone folder) or trained."""
    ws = plan_workspace(tmp_path / "ws", [])
    trial = plan(load_sweep(write(tmp_path / "s.yaml", GRID)), ws / "params.yaml")[0]
    head = run(["git", "rev-parse", "HEAD"], ws).stdout.strip()
    base = sw.Baseline("s", str(ws), f"{sw.REF_PREFIX}s/{head}", head, str(tmp_path / "dvc-remote"), ())
    run(["git", "update-ref", base.exp_prefix() + trial.name, head], ws)  # what the killed attempt pushed
    lines: list[str] = []
    result = sw.run_trial(trial, base, tmp_path / "clones", {}, lines.append)
    assert result["name"] == trial.name and result["commit"] == head and result["reran"] is False
    assert not (tmp_path / "clones").exists() and "already on" in lines[0]


def test_a_retry_removes_the_clone_of_an_attempt_whose_worker_died_but_not_a_live_ones(tmp_path):
    import socket

    ws = plan_workspace(tmp_path / "ws", [])
    trial = plan(load_sweep(write(tmp_path / "s.yaml", GRID)), ws / "params.yaml")[0]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    root = tmp_path / "clones"
    owners = {f"{trial.name}-dead": f"{socket.gethostname()} {dead.pid}", f"{trial.name}-live":
              f"{socket.gethostname()} {os.getpid()}", "other-trial-dead": f"{socket.gethostname()} {dead.pid}",
              "other-host": f"another-host {dead.pid}"}  # fmt: skip
    for name, owner in owners.items():
        (root / name / "repo").mkdir(parents=True)
        (root / name / sw.OWNER).write_text(owner + "\n")
    (root / "being-made").mkdir()  # no owner yet
    assert sw.remove_stale_clones(root) == [root / f"{trial.name}-dead", root / "other-trial-dead"]
    assert {p.name for p in root.iterdir()} == {"being-made", "other-host", f"{trial.name}-live"}


def test_two_sweeps_of_one_name_from_different_commits_keep_their_own_baselines(tmp_path, monkeypatch):
    from types import SimpleNamespace

    ws = plan_workspace(tmp_path / "ws", [])
    remote = tmp_path / "remote.git"
    run(["git", "init", "-q", "--bare", str(remote)], tmp_path)
    monkeypatch.setattr(sw.versions, "push", lambda repo: SimpleNamespace(remote=SimpleNamespace(name="r", url="x")))
    monkeypatch.setattr(sw, "remote_options", lambda repo, name: ())
    first = sw.publish_baseline(ws, "lr", str(remote), [])
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "later"], ws)
    second = sw.publish_baseline(ws, "lr", str(remote), [])
    assert first.commit != second.commit and first.ref != second.ref
    refs = dict(line.split("\t")[::-1] for line in run(["git", "ls-remote", str(remote)], tmp_path).stdout.splitlines())
    assert refs[first.ref] == first.commit and refs[second.ref] == second.commit


def test_the_sweep_deployment_sizes_its_cluster_as_the_cli_does(tmp_path, monkeypatch):
    """prefect.yaml's sweep deployment runs gan_sweep on the Dask cluster the CLI would build from the sweep file
    (its `parallel`), not on gan_sweep's default cluster of one worker per core."""
    (dep,) = [d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"] if d["name"] == "sweep"]
    assert dep["entrypoint"] == "flows/sweep.py:sweep_deployment"
    entry = flow_sweep.sweep_deployment
    assert entry.name == "gan-sweep-deployment"
    sweep_file = write(tmp_path / "s.yaml", {**GRID, "parallel": 3, "threads": 1})
    got = {}

    def runs(task_runner):
        got["runner"] = task_runner
        return lambda path, **kw: {"path": path, **kw}

    monkeypatch.setattr(flow_sweep.gan_sweep, "with_options", runs)
    assert entry.fn(str(sweep_file))["path"] == str(sweep_file)
    assert got["runner"].cluster_kwargs["n_workers"] == 3 and got["runner"].cluster_kwargs["threads_per_worker"] == 1
    assert got["runner"].cluster_kwargs == flow_sweep.task_runner(load_sweep(sweep_file), None).cluster_kwargs
    assert flow_sweep.runner_for(sweep_file, "tcp://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"


def test_with_a_scheduler_elsewhere_what_only_this_machine_reaches_is_refused(tmp_path, monkeypatch, capsys):
    """--address on another machine: a git remote that is a path, a DVC remote that is a folder here or whose
    endpoint is on loopback, a Prefect API on loopback are each refused, saying what to use; a scheduler on
    loopback (its workers run here) accepts them all. The remote's settings, never its credentials, reach trials."""
    ws = plan_workspace(tmp_path / "ws", [])
    run([sys.executable, "-m", "dvc", "init", "-q"], ws)
    run([sys.executable, "-m", "dvc", "remote", "add", "-d", "store", str(tmp_path / "store")], ws)
    run(["git", "add", "-A"], ws)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "dvc"], ws)
    sweep_file = str(write(tmp_path / "s.yaml", GRID))
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")

    def refusal(*args: str) -> str:
        rc, out, err = dry_run(monkeypatch, capsys, ws, sweep_file, "--dry-run", *args)
        assert rc == 2 and out == "" and err.count("\n") == 1, (rc, out, err)
        return err

    err = refusal("--address", "tcp://10.0.0.7:8786")
    assert "--address tcp://10.0.0.7:8786: the trials run on other machines, so nothing was run" in err
    assert f"the git remote is {ws}, a path on this machine" in err and "--git-remote" in err
    assert f"the DVC remote 'store' is {tmp_path / 'store'}, a path on this machine" in err and "s3://" in err
    assert "PREFECT_API_URL is http://127.0.0.1:4200/api, on this machine's loopback" in err
    # reachable choices: a git server, S3 with an endpoint the workers reach, an API on the network
    run([sys.executable, "-m", "dvc", "remote", "add", "-d", "-f", "store", "s3://bucket/gan"], ws)
    run([sys.executable, "-m", "dvc", "remote", "modify", "store", "endpointurl", "http://127.0.0.1:9000"], ws)
    run([sys.executable, "-m", "dvc", "remote", "modify", "--local", "store", "secret_access_key", "s3cr3t"], ws)
    run(["git", "add", "-A"], ws)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "s3"], ws)
    git = ["--git-remote", "ssh://git@git.example/gan.git"]
    err = refusal("--address", "tcp://10.0.0.7:8786", *git)
    assert "endpointurl is http://127.0.0.1:9000, on this machine's loopback" in err and "git remote" not in err
    run([sys.executable, "-m", "dvc", "remote", "modify", "store", "endpointurl", "http://10.0.0.2:9000"], ws)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "endpoint"], ws)
    monkeypatch.setenv("PREFECT_API_URL", "http://10.0.0.2:4200/api")
    assert dry_run(monkeypatch, capsys, ws, sweep_file, "--dry-run", "--address", "tcp://10.0.0.7:8786", *git)[0] == 0
    # a scheduler on this machine: its workers reach every local path
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert dry_run(monkeypatch, capsys, ws, sweep_file, "--dry-run", "--address", "tcp://127.0.0.1:8786")[0] == 0
    # the trials get the remote's settings, not its credentials
    assert sw.remote_options(ws, "store") == (("endpointurl", "http://10.0.0.2:9000"),)


def test_a_float_setting_reaches_dvc_as_a_number():
    # YAML 1.1 (PyYAML) reads "1e-05" as a string: the value given to `dvc exp run -S` must read back as a float
    for value in (1e-05, 0.0005, 2.5e-10, 1e30, 3.0):
        assert yaml.safe_load(sw.yaml_value(value)) == value
    assert yaml.safe_load(sw.yaml_value("color,translation")) == "color,translation"
    assert yaml.safe_load(sw.yaml_value(True)) is True


# ---- the plan (--dry-run) and the refusals: checked before anything runs, one paragraph, exit 2


DOCUMENTED_FOR = {  # every sweep file in sweeps/ and the kind of workspace its header (and `workspace:`) names
    "ablation-fashion.yaml": "fashion-mnist-28",  # the default workspace: this repository as it is
    "ablation-emoji.yaml": "folder-32",  # bench/folders.py's emoji32
    "recipes.yaml": "folder-32",  # bench/folders.py's emoji32-1k, emoji32, fashion32
}


def plan_workspace(folder: Path, overrides: list[str]) -> Path:
    """What the plan reads of a workspace, and nothing else: params.yaml (this repository's, with `overrides`) and
    dvc.yaml, committed in a git repository (the trials' inputs must be committed)."""
    from gan.core.config import apply_overrides, load_params

    folder.mkdir(parents=True)
    raw = apply_overrides(yaml.safe_load((REPO / "params.yaml").read_text()), overrides)
    (folder / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    load_params(folder / "params.yaml")
    shutil.copy(REPO / "dvc.yaml", folder / "dvc.yaml")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t",
                "commit", "-qm", "workspace"]):  # fmt: skip
        run(cmd, folder)
    return folder


def workspaces(tmp_path: Path) -> dict[str, Path]:
    fashion = plan_workspace(tmp_path / "default", [])
    folder = plan_workspace(tmp_path / "emoji32", ["data.dataset=folder", f"data.source={tmp_path / 'emoji'}",
                                                    "data.resolution=32"])  # what bench/folders.py sets  # fmt: skip
    return {"fashion-mnist-28": fashion, "folder-32": folder}


def dry_run(monkeypatch, capsys, workspace: Path, *args: str) -> tuple[int, str, str]:
    """`python -m flows.sweep ARGS` in `workspace`, in this process (what the flow calls its repository)."""
    monkeypatch.setattr(flow_sweep, "REPO", workspace)
    rc = flow_sweep.main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def only_the_branch(repo: Path) -> bool:
    refs = run(["git", "for-each-ref", "--format=%(refname)"], repo).stdout.split()
    return len(refs) == 1 and refs[0].startswith("refs/heads/")


def untouched(repo: Path) -> None:
    """Nothing written by git or DVC: no change, no new file (ignored ones too), no ref but the branch."""
    assert run(["git", "status", "--porcelain", "--ignored"], repo).stdout == ""
    assert only_the_branch(repo)


def test_every_sweep_file_plans_on_the_workspace_it_is_written_for(tmp_path, monkeypatch, capsys):
    assert sorted(p.name for p in (REPO / "sweeps").glob("*.yaml")) == sorted(DOCUMENTED_FOR)
    spaces = workspaces(tmp_path)
    for name, kind in DOCUMENTED_FOR.items():
        ws, sweep_file = spaces[kind], REPO / "sweeps" / name
        rc, out, err = dry_run(monkeypatch, capsys, ws, str(sweep_file), "--dry-run")
        assert rc == 0 and err == "", f"{name} on {kind}: {err}"
        spec = load_sweep(sweep_file)
        trials = plan(spec, ws / "params.yaml")
        lines = out.splitlines()
        assert lines[0].startswith(f"sweep {spec.name} ({sweep_file}) in {ws}"), out
        assert f"{len(trials)} trial(s)" in lines[0]
        assert f"written for: {spec.workspace}" in lines and spec.workspace
        assert lines[-1] == "dry run: nothing was run"
        # one line per trial: its experiment name, its own settings, its budget
        rows = [ln for ln in lines if ln.startswith("  ")]
        assert [r.split()[0] for r in rows] == [t.name for t in trials], out
        budget = f"max_seconds={spec.budget.max_seconds:g}" if spec.budget.max_seconds else f"kimg={spec.budget.kimg:g}"
        for row, t in zip(rows, trials, strict=True):
            assert row.endswith(f"  budget: {t.budget}") and budget in t.budget, (row, t.budget)
            assert all(f" {key}=" in row for key in t.own) and (t.own or "(base settings)" in row), row
        untouched(ws)
    # the same plan as JSON
    rc, out, _ = dry_run(monkeypatch, capsys, spaces["folder-32"], str(REPO / "sweeps" / "recipes.yaml"), "--dry-run",
                         "--json")  # fmt: skip
    shown = json.loads(out)
    trials = plan(load_sweep(REPO / "sweeps" / "recipes.yaml"), spaces["folder-32"] / "params.yaml")
    assert rc == 0 and [t["name"] for t in shown["trials"]] == [t.name for t in trials]
    assert shown["trials"][-1]["settings"]["model.arch"] == "fastgan" and shown["shared_stages"][-1] == "reference"


def _refusals(ws: Path, top: Path) -> list[tuple[str, list[str], list[str]]]:
    """(what, flows.sweep's arguments, what the message must name) for every refusal before a sweep runs."""

    def sweep(name: str, spec: dict | str) -> str:
        path = top / f"{name}.yaml"
        path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec, sort_keys=False))
        return str(path)

    grid = {"name": "s", "budget": {"kimg": 1}, "search": {"grid": {"train.lr_g": [0.001, 0.002]}}}
    return [
        ("no such file", [str(top / "missing.yaml")], ["missing.yaml: no such sweep file", "sweeps/"]),
        ("not YAML", [sweep("broken", "name: [s\n")], ["broken.yaml: not valid YAML (line 2", "Fix the file"]),
        ("not a mapping", [sweep("list", "- 1\n")], ["list.yaml: expected a mapping", "docs/sweeps.md"]),
        ("bad sweep keys", [sweep("keys", {**grid, "paralel": 2, "budget": {"kimg": 1, "max_seconds": 3}})],
         ["keys.yaml: 2 invalid setting(s)", "paralel: unknown key", "exactly one of max_seconds, kimg"]),
        ("unknown setting", [sweep("unknown", {**grid, "search": {"trials": {"a": {"train.lr_gg": 0.1}}}})],
         ["unknown.yaml: trial 'a'", "train.lr_gg = 0.1: unknown key", "Change the trial's settings"]),
        ("bad value", [sweep("value", {**grid, "search": {"grid": {"train.loss": ["ns", "hinj"]}}})],
         ["value.yaml: trial 'loss-hinj'", "train.loss = 'hinj'"]),
        ("a trial refused on this workspace", [str(REPO / "sweeps" / "recipes.yaml")],
         ["recipes.yaml: trial 'fastgan'", "model.arch = 'fastgan' is built for 32, 64, 128 px",
          "written for the folder workspaces of bench/folders.py"]),
        ("a shared stage's key", [sweep("shared", {**grid, "search": {"grid": {"data.resolution": [32]}}})],
         ["shared.yaml: trial 'resolution-32': data.resolution is read by the shared stage 'prepare'",
          "Set data.resolution in params.yaml"]),
        ("a shared stage's key in base", [sweep("base", {**grid, "base": {"classifier.lr": 0.1}})],
         ["base.yaml: base (every trial): classifier.lr is read by the shared stage 'classifier'"]),
        ("an unknown git remote", [sweep("ok", grid), "--git-remote", "nowhere"],
         ["--git-remote 'nowhere'", "git remote -v"]),
    ]  # fmt: skip


def test_every_refusal_is_one_paragraph_with_exit_2_before_anything_runs(tmp_path, monkeypatch, capsys):
    ws = workspaces(tmp_path)["fashion-mnist-28"]

    def refused(args: list[str], needles: list[str], workspace: Path = ws) -> None:
        rc, out, err = dry_run(monkeypatch, capsys, workspace, *args, "--dry-run")
        assert rc == 2 and out == "", (args, out, err)
        assert err.startswith("python -m flows.sweep: ") and err.count("\n") == 1 and err.endswith("\n"), err
        assert "Traceback" not in err and "nothing was run" in err.replace("no trial was run", "nothing was run")
        for needle in needles:
            assert needle in err, (needle, err)

    for _, args, needles in _refusals(ws, tmp_path):
        refused(args, needles)
    # --promote with a sweep ranked by another metric than the gate's (promote.metric set, not auto)
    gated = plan_workspace(tmp_path / "gated", ["promote.metric=fid_classifier"])
    judge = tmp_path / "judge.yaml"
    judge.write_text(yaml.safe_dump({"name": "s", "budget": {"kimg": 1}, "metric": "fid_judge",
                                     "search": {"grid": {"train.lr_g": [0.001, 0.002]}}}))  # fmt: skip
    refused([str(judge), "--promote"], ["judge.yaml: metric: fid_judge ranks the trials, but the champion gate "
                                        "decides by promote.metric = fid_classifier", "Set `metric: fid_classifier`"],
            gated)  # fmt: skip
    assert dry_run(monkeypatch, capsys, gated, str(judge), "--dry-run")[0] == 0  # without --promote: any metric
    ok = str(tmp_path / "ok.yaml")
    # the workspace: its own settings, uncommitted inputs, no dvc.yaml, no git, no commit
    params = (ws / "params.yaml").read_text()
    (ws / "params.yaml").write_text(params.replace("loss: ns", "loss: nope"))
    refused([ok], [f"{ws / 'params.yaml'}", "train.loss = 'nope'", "own settings", "python -m gan check"])
    (ws / "params.yaml").write_text(params + "# a comment\n")
    refused([ok], [f"{ws}: uncommitted changes to params.yaml", "Commit them"])
    (ws / "params.yaml").write_text(params)
    untouched(ws)
    bare = tmp_path / "bare"
    bare.mkdir()
    refused([ok], [f"{bare}: no params.yaml here"], bare)
    shutil.copy(ws / "params.yaml", bare / "params.yaml")
    shutil.copy(ws / "dvc.yaml", bare / "dvc.yaml")
    refused([ok], [f"{bare}: not a git repository", "git init"], bare)
    run(["git", "init", "-q"], bare)
    refused([ok], [f"{bare}: no commit yet"], bare)
    (bare / "dvc.yaml").write_text("stages: {prepare: {cmd: x}}\n")
    refused([ok], [f"{bare / 'dvc.yaml'}: no 'train' stage"], bare)


@pytest.mark.slow
def test_the_readme_sweep_commands_plan_or_refuse_in_the_default_workspace(tmp_path):
    """As a user types them, in a copy of this repository: no traceback, no Prefect server, nothing written."""
    ws = copy_repo(tmp_path / "ws", [])
    sweep = [sys.executable, "-m", "flows.sweep"]
    proc = run([*sweep, "sweeps/recipes.yaml"], ws, check=False)  # (its --dry-run: the same check, tested above)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout + proc.stderr
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "temporary server" not in err, err
    for needle in ("sweeps/recipes.yaml: trial 'fastgan'", "is refused on this workspace", "data.resolution = 0 "
                   "(native 28)", "written for the folder workspaces of bench/folders.py at 32 px"):  # fmt: skip
        assert needle in err, (needle, err)
    proc = run([*sweep, "sweeps/ablation-fashion.yaml", "--dry-run"], ws, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len([ln for ln in proc.stdout.splitlines() if ln.startswith("  ablation-fashion-")]) == 7
    assert proc.stdout.splitlines()[-1] == "dry run: nothing was run"
    assert run(["git", "status", "--porcelain"], ws).stdout == ""
    assert not (ws / ".dvc" / "tmp").exists() and not (ws / flow_sweep.REPORT_DIR).exists() and only_the_branch(ws)


# ---- the report


def _row(label: str, fid: float | None, reason: str = "") -> TrialRow:
    import io

    import numpy as np
    from PIL import Image

    if fid is None:
        return TrialRow(label, f"s-{label}-0", {"train.seed": 7}, reason=reason)
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), int(fid) % 255 if fid == fid else 0, np.uint8)).save(buf, format="PNG")
    metrics = {"fid_classifier": fid, "fid_classifier_floor": 2.0, "fid_classifier_ci95": [fid - 1, fid + 1],
               "precision_classifier": 0.5, "recall_classifier": 0.25}  # fmt: skip
    quality = f"step\tfd\n10\t{fid * 2}\n20\t{fid}\n"
    return TrialRow(label, f"s-{label}-0", {"train.lr_g": fid / 1000}, metrics, {"steps": 20, "seconds": 3.0},
                    quality, buf.getvalue())  # fmt: skip


def test_the_report_ranks_trials_and_puts_failed_ones_last_with_their_reason():
    rows = [_row("b", 30.0), _row("boom", None, "TrialFailed: training diverged at step 5"), _row("a", 10.0)]
    table = table_rows(rows, "fid_classifier")
    assert [r["trial"] for r in table] == ["a", "b", "boom"]
    assert table[0]["rank"] == 1 and table[0]["floor"] == "2" and table[0]["95% interval"] == "9–11"
    assert table[2]["status"].startswith("failed: TrialFailed: training diverged at step 5")
    md = report_markdown("s", rows, "fid_classifier", "test machine")
    assert "2 trial(s) finished, 1 failed" in md and md.count("data:image/png;base64,") == 2
    import io

    from PIL import Image

    assert Image.open(io.BytesIO(grids_picture(rows, "fid_classifier"))).size[0] > 0
    assert Image.open(io.BytesIO(curves_png(rows))).size[0] > 0
    assert curves_png([_row("boom", None)]) is None


def test_a_nan_metric_ranks_after_every_number_and_is_never_promoted(tmp_path):
    import math

    rows = [_row("nan", math.nan), _row("b", 30.0), _row("boom", None, "TrialFailed: x"), _row("a", 10.0)]
    assert [r["trial"] for r in table_rows(rows, "fid_classifier")] == ["a", "b", "nan", "boom"]
    ws = plan_workspace(tmp_path / "ws", [])
    head = run(["git", "rev-parse", "HEAD"], ws).stdout.strip()
    only_nan = ranked([_row("nan", math.nan)], "fid_classifier")[0]
    refusal = flow_sweep._promotion_refusal(str(ws), head, only_nan, "fid_classifier")
    assert refusal and "no trial has a finite fid_classifier" in refusal
    assert flow_sweep._promotion_refusal(str(ws), head, ranked(rows, "fid_classifier")[0], "fid_classifier") is None
    # ranked by another metric than the gate's (promote.metric: auto is fid_classifier on labelled data)
    refusal = flow_sweep._promotion_refusal(str(ws), head, ranked(rows, "fid_classifier")[0], "fid_judge")
    assert refusal and "decides by fid_classifier (promote.metric)" in refusal and "metric: fid_classifier" in refusal


def test_promote_refuses_a_workspace_that_moved_on_and_a_failed_promotion_restores_every_file(tmp_path):
    """HEAD no longer the sweep's baseline, or tracked files changed: refused, saying why (untracked files are no
    reason). The rollback of a promotion puts HEAD's pipeline files back, and says so when it cannot."""
    from gan.core.errors import PipelineError

    ws = plan_workspace(tmp_path / "ws", [])
    base = run(["git", "rev-parse", "HEAD"], ws).stdout.strip()
    assert sw.promotion_refusal(ws, base) is None
    (ws / "notes.txt").write_text("untracked\n")
    assert sw.promotion_refusal(ws, base) is None
    params = (ws / "params.yaml").read_text()
    (ws / "params.yaml").write_text(params + "# edited\n")
    refusal = sw.promotion_refusal(ws, base)
    assert refusal and refusal.startswith("uncommitted changes to params.yaml") and "Commit or stash" in refusal
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "a later commit"], ws)
    refusal = sw.promotion_refusal(ws, base)
    assert refusal and f"not the sweep's baseline {base[:10]}" in refusal and "revert" in refusal
    # the rollback: what a half-done promotion wrote to the pipeline's files goes back to HEAD's
    (ws / "dvc.yaml").write_text("stages:\n  train:\n    cmd: 'true'\n    params: [train]\n")  # nothing to check out
    run([sys.executable, "-m", "dvc", "init", "-q"], ws)
    run(["git", "add", "-A", ".dvc", "dvc.yaml"], ws)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "dvc"], ws)
    committed = (ws / "params.yaml").read_text()
    before = sw.snapshot_pipeline_files(ws)
    assert before["params.yaml"] == committed.encode() and before["dvc.lock"] is None
    (ws / "params.yaml").write_text(committed.replace("loss: ns", "loss: hinge"))
    (ws / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    sw.restore_workspace(ws, before)
    assert (ws / "params.yaml").read_text() == committed and not (ws / "dvc.lock").exists()
    assert run(["git", "status", "--porcelain"], ws).stdout == "?? notes.txt\n"
    shutil.rmtree(ws / ".dvc")  # DVC's checkout cannot run: the error says so, with what to do
    with pytest.raises(PipelineError, match="could not be put back as it was before the promotion .*dvc checkout"):
        sw.restore_workspace(ws, before)


# ---- on real Dask clusters


TINY_TRIALS = {  # cheap scoring for tiny trials (evaluate-only settings; the shared reference is the flow's)
    "train.epochs": 1,
    "evaluate.bootstrap": 5,
    "evaluate.kid_subsets": 10,
    "evaluate.kid_subset_size": 100,
    "evaluate.prdc_samples": 200,
    "evaluate.copy_cells": 5,
}
CLUSTER_GRID = {  # 2 trials (the cluster tests' grid: CI time)
    **GRID,
    "base": TINY_TRIALS,
    "search": {"grid": {"train.lr_g": [0.0005, 0.002], "train.loss": ["hinge"]}},
}


def stop_group(proc: subprocess.Popen, grace: float = 20) -> None:
    """Stop `proc` and every process it started (its own session: start_new_session=True): SIGTERM to the group,
    then SIGKILL to whatever is left of it after `grace` seconds."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        proc.wait()
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class Cluster:
    """A Dask scheduler on `host` and two `dask worker` processes standing in for two machines: each with a home and
    temp folder of its own under `machines`, run as the unix user `user` (uid, gid) where given; `stop` ends every
    process it ever started (and what those started)."""

    def __init__(self, folder: Path, env: dict, host: str = "127.0.0.1", machines: Path | None = None,
                 user: tuple[int, int] | None = None, python: Path | None = None):  # fmt: skip
        self.folder, self.env, self.host, self.user = folder, env, host, user
        self.python = python or Path(sys.executable)  # the workers' (their trials run their stages with it)
        self.machines = machines or folder
        folder.mkdir(parents=True, exist_ok=True)
        self.scheduler_file = folder / "scheduler.json"
        self.started: list[subprocess.Popen] = []
        self.workers: dict[str, subprocess.Popen] = {}
        self.address = ""

    def _start(self, cmd: list[str], log: Path, **kw) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, stdout=open(log, "a"), stderr=subprocess.STDOUT, start_new_session=True, **kw)
        self.started.append(proc)
        return proc

    def start(self) -> None:
        dask = str(Path(sys.executable).parent / "dask")
        self._start([dask, "scheduler", "--host", self.host, "--port", "0", "--no-dashboard", "--scheduler-file",
                     str(self.scheduler_file)], self.folder / "scheduler.log", env=self.env)  # fmt: skip
        deadline = time.monotonic() + 60
        while not self.scheduler_file.exists():
            assert time.monotonic() < deadline, (self.folder / "scheduler.log").read_text()
            time.sleep(0.2)
        time.sleep(0.3)
        self.address = json.loads(self.scheduler_file.read_text())["address"]
        for name in ("machine-a", "machine-b"):
            self.start_worker(name)

    def start_worker(self, name: str) -> None:
        machine = self.machines / name
        for sub in ("home", "tmp"):
            (machine / sub).mkdir(parents=True, exist_ok=True)
        as_user = {}
        if self.user:
            for path in (machine, *machine.rglob("*")):
                os.chown(path, *self.user, follow_symlinks=False)
            as_user = {"user": self.user[0], "group": self.user[1], "extra_groups": []}
        env = {**self.env, "HOME": str(machine / "home"), "TMPDIR": str(machine / "tmp"),
               "PREFECT_HOME": str(machine / "prefect-home"),
               "PATH": f"{self.python.parent}:{self.env['PATH']}"}  # fmt: skip
        self.workers[name] = self._start(
            [str(self.python), "-m", "dask", "worker", self.address, "--name", name, "--nthreads", "1",
             "--nworkers", "1", "--no-nanny",
             "--host", self.host, "--local-directory", str(machine / "dask")], self.folder / f"{name}.log", env=env,
            cwd=machine, **as_user)  # fmt: skip

    def trials_root(self, name: str) -> Path:
        return self.machines / name / "tmp" / "gan-sweep-trials"

    def trial_folders(self, name: str) -> list[Path]:
        return [p for p in self.trials_root(name).glob("*/repo") if p.is_dir()]

    def stop(self) -> None:
        for proc in reversed(self.started):  # the workers first, then the scheduler
            stop_group(proc)


def sweep_env(env: dict) -> dict:
    return {**env, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def start_sweep(repo: Path, sweep_file: Path, cluster: Cluster | None, *args: str, env: dict) -> subprocess.Popen:
    """`python -m flows.sweep FILE --json ARGS` in its own session (`stop_group` ends it and all it started), its
    output in files beside the sweep file (so that waiting for it is not waiting for whatever it left running): on
    `cluster` (--address, trials cloning from the bare remote `origin`), or with None the default path: a local
    cluster of its own, the trials cloning from the workspace itself."""
    where = ["--address", cluster.address, "--git-remote", "origin"] if cluster else []
    cmd = [sys.executable, "-m", "flows.sweep", str(sweep_file), *where, "--json", *args]
    logs = sweep_file.parent / "sweep-logs"
    logs.mkdir(exist_ok=True)
    n = len(list(logs.glob("*.out")))
    out, err = logs / f"{sweep_file.stem}-{n}.out", logs / f"{sweep_file.stem}-{n}.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(cmd, cwd=repo, env=sweep_env(env), stdout=stdout, stderr=stderr,
                                start_new_session=True)  # fmt: skip
    proc.output_files = (out, err)
    return proc


def finish(proc: subprocess.Popen) -> tuple[str, str]:
    """Wait for the sweep process (SWEEP_TIMEOUT_S at most); its stdout and stderr."""
    proc.wait(timeout=SWEEP_TIMEOUT_S)
    return proc.output_files[0].read_text(), proc.output_files[1].read_text()


def sweep_cmd(repo: Path, sweep_file: Path, cluster: Cluster | None, *args: str, env: dict):
    """The sweep to its end; whatever it leaves running is stopped."""
    proc = start_sweep(repo, sweep_file, cluster, *args, env=env)
    try:
        out, err = finish(proc)
    finally:
        stop_group(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def result_of(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{\n") :])


OTHER_USER = (65534, 65534)  # nobody:nogroup, on every Debian machine


def host_address() -> str:
    """This machine's address on its network (the first IPv4 address `hostname -I` lists that is not loopback): where
    other machines reach the servers it runs. 127.0.0.1 on a machine with no network."""
    listed = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    return next((a for a in listed if "." in a and not a.startswith("127.")), "127.0.0.1")


def other_machine(machines: Path) -> tuple[tuple[int, int], Path] | None:
    """Where this test run may act as another user (it runs as root): that user (nobody:nogroup) and a Python it can
    run with this checkout's packages: this one where that user reaches it, else the system's python3 made into a
    venv under `machines` that adds this checkout's site-packages (standing in for the other machine's own install of
    the same packages; this one may sit in root's home). None where the tests do not run as root, or no Python the
    other user can run imports the pipeline."""
    if os.geteuid() != 0:
        return None

    def runs(python: Path) -> bool:
        with contextlib.suppress(OSError):
            env = {"PATH": os.environ["PATH"], "HOME": "/nonexistent", "MPLCONFIGDIR": "/tmp"}
            as_other = {"user": OTHER_USER[0], "group": OTHER_USER[1], "extra_groups": []}
            probe = subprocess.run([str(python), "-c", "import distributed, gan.lifecycle.sweep"], cwd="/", env=env,
                                   capture_output=True, **as_other)  # fmt: skip
            return probe.returncode == 0
        return False

    if runs(Path(sys.executable)):
        return OTHER_USER, Path(sys.executable)
    system = shutil.which("python3", path="/usr/bin:/bin")
    if system is None:
        return None
    venv = machines / "python"
    subprocess.run([system, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
    (site,) = venv.glob("lib/python3*/site-packages")
    ours = next(p for p in map(Path, sys.path) if p.name == "site-packages" and p.is_relative_to(sys.prefix))
    (site / "checkout-packages.pth").write_text(f"import site; site.addsitedir({str(ours)!r})\n")
    return (OTHER_USER, venv / "bin" / "python") if runs(venv / "bin" / "python") else None


def processes_in(root: Path, command: bytes = b"") -> list[int]:
    """The processes whose working folder is under `root` (a machine's trial clones) and whose command line holds
    `command` (NUL-separated words, e.g. b"-m\\0gan\\0train"; empty: any)."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if command in (proc / "cmdline").read_bytes() and Path(os.readlink(proc / "cwd")).is_relative_to(root):
                pids.append(int(proc.name))
    return pids


def git_daemon(folder: Path, host: str, log: Path) -> tuple[subprocess.Popen, str]:
    """A git server (`git daemon`, pushes allowed) on `host` serving the bare repositories in `folder`, in its own
    session; the process and its base URL (git://HOST:PORT), once it answers."""
    port = free_port()
    proc = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", "--enable=receive-pack",
                             f"--base-path={folder}", f"--listen={host}", f"--port={port}", str(folder)],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    url, deadline = f"git://{host}:{port}", time.monotonic() + 30
    while subprocess.run(["git", "ls-remote", f"{url}/{next(folder.iterdir()).name}"], capture_output=True).returncode:
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    return proc, url


def s3_objects(endpoint: str) -> set[str]:
    """Every key in the bucket `gan` of the S3 server at `endpoint`."""
    import boto3

    pages = boto3.client("s3", endpoint_url=endpoint).get_paginator("list_objects_v2").paginate(Bucket="gan")
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


@pytest.fixture(scope="module")
def swept(completed_flow, tmp_path_factory):
    """Machines that share only the network. This one, the team's server: the workspace (a copy of the completed
    flow's repo), a git server (`git daemon`) holding it as `origin`, its default DVC remote on S3 (moto's server), a
    Prefect server and the Dask scheduler, each on this machine's network address. Two Dask workers stand in for two
    machines: each with a home and temp folder of its own, run as another unix user (nobody, where the tests run as
    root) that cannot read the workspace, with the S3 credentials in their environment. A 2-trial sweep runs on them
    with --address, and one machine's worker is killed (kill -9) while its trial trains. Every process is stopped
    and the machines' folders removed at the end, also when building this fails midway."""
    repo0, _, _ = completed_flow
    top = tmp_path_factory.mktemp("sweep")
    shutil.copytree(repo0.parent, top / "copy", symlinks=True)
    repo = top / "copy" / "repo"
    machines = Path(tempfile.mkdtemp(prefix="gan-test-machines-"))  # outside the test run's folders (this user's)
    machines.chmod(0o755)
    host, (user, python) = host_address(), other_machine(machines) or (None, None)
    servers, cluster, proc, patch = [], None, None, pytest.MonkeyPatch()
    try:
        with contextlib.ExitStack() as stack:
            # -- the Prefect server (it starts while the rest is set up)
            (top / "prefect").mkdir()
            prefect = _start_prefect_server(top / "prefect", host)
            servers.append(prefect["pid"])
            # -- the git server, the workspace's `origin`
            (top / "git").mkdir()
            run(["git", "init", "-q", "--bare", str(top / "git" / "gan.git")], top)
            daemon, git_url = git_daemon(top / "git", host, top / "git-daemon.log")
            servers.append(daemon.pid)
            run(["git", "remote", "add", "origin", f"{git_url}/gan.git"], repo)
            # -- the DVC remote on S3 (credentials from the environment, as on AWS; none in the repository)
            for key, value in S3_CREDENTIALS.items():
                patch.setenv(key, value)
            endpoint = stack.enter_context(s3_server(host))
            run([sys.executable, "-m", "dvc", "remote", "add", "-d", "s3", "s3://gan/pipeline"], repo)
            run([sys.executable, "-m", "dvc", "remote", "modify", "s3", "endpointurl", endpoint], repo)
            run(["git", "add", ".dvc/config"], repo)
            run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "DVC remote on S3"], repo)
            server = prefect_server_ready(top / "prefect", prefect, tmp_path_factory.mktemp("prefect-client-home"))
            # -- the scheduler and the two machines' workers
            env = {**server.env, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                   "PYTHONPATH": str(FAULTS), "GAN_TEST_DIVERGE_SEED": "7"}  # fmt: skip
            cluster = Cluster(top / "cluster", env, host, machines, user, python)
            cluster.start()
            sweep_file = write(top / "lr-loss.yaml", CLUSTER_GRID)
            proc = start_sweep(repo, sweep_file, cluster, env=server.env)
            # -- kill -9 the worker of the first machine whose trial is training
            killed, deadline = None, time.monotonic() + 600
            while killed is None and proc.poll() is None and time.monotonic() < deadline:
                for name in cluster.workers:
                    if processes_in(cluster.trials_root(name), b"-m\0gan\0train"):
                        time.sleep(1)
                        cluster.workers[name].send_signal(signal.SIGKILL)
                        cluster.workers[name].wait()
                        killed = name
                        cluster.start_worker(name)  # the machine comes back (a new worker process): two workers again
                        break
                time.sleep(0.1)
            out, err = finish(proc)
            yield {"repo": repo, "top": top, "cluster": cluster, "sweep_file": sweep_file, "killed": killed,
                   "rc": proc.returncode, "stdout": out, "stderr": err, "server": server, "git_url": git_url,
                   "s3": endpoint, "host": host, "user": user, "s3_objects": lambda: s3_objects(endpoint)}  # fmt: skip
    finally:
        if proc is not None:
            stop_group(proc)
        if cluster is not None:
            cluster.stop()
        for pid in servers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        patch.undo()
        shutil.rmtree(machines, ignore_errors=True)


def _flow_run_tasks(server, flow_run_id: str) -> list[dict]:
    r = httpx.post(f"{server.api_url}/task_runs/filter", json={"task_runs": {"flow_run_id": {"any_": [flow_run_id]}}})
    r.raise_for_status()
    return r.json()


def _completed_trials(server, flow_run_id: str) -> set[str]:
    """The trial tasks of that flow run that completed, by name (trial-LABEL)."""
    tasks = _flow_run_tasks(server, flow_run_id)
    return {t["name"].rsplit("-", 1)[0] for t in tasks if t["name"].startswith("trial-") and t["state_type"] ==
            "COMPLETED"}  # fmt: skip


@pytest.mark.slow
@pytest.mark.xdist_group("sweep-cluster")
def test_a_sweep_runs_each_trial_as_an_experiment_even_when_a_worker_is_killed(swept):
    assert swept["killed"], "no trial was seen midway on a worker"
    assert swept["rc"] == 0, swept["stdout"][-3000:] + swept["stderr"][-6000:]
    # nothing of the killed attempt runs on (its dvc exp run and training died with the worker: the lifeline)
    trials_root = swept["cluster"].trials_root(swept["killed"])
    left = processes_in(trials_root)
    assert not left, f"processes of the killed worker's trial still run: {left}"
    result, repo = result_of(swept["stdout"]), swept["repo"]
    assert len(result["ran"]) == 2 and not result["failed"] and not result["skipped"]
    # every trial is an experiment on the git remote (the killed attempt left none half-written) ...
    remote = run(["git", "ls-remote", f"{swept['git_url']}/gan.git", "refs/exps/*"], repo).stdout.splitlines()
    assert sorted(line.rsplit("/", 1)[1] for line in remote) == sorted(result["ran"])
    # ... and in the user's repo: `dvc exp show` lists them with their params and metrics
    shown = json.loads(run([sys.executable, "-m", "dvc", "exp", "show", "--json"], repo).stdout)
    exps = {e["name"]: e["revs"][0] for baseline in shown for e in baseline.get("experiments") or []}
    assert sorted(exps) == sorted(result["ran"])
    for row in result["trials"]:
        data = exps[row["experiment"]]["data"]
        params = data["params"]["params.yaml"]["data"]["train"]
        assert f"train.lr_g={params['lr_g']}" in row["settings"] and f"train.loss={params['loss']}" in row["settings"]
        assert data["metrics"]["data/metrics/metrics.json"]["data"]["fid_classifier"] == pytest.approx(
            float(row["fid_classifier"]), rel=1e-3
        )
    # ... with every output of its stages on the S3 remote (where the workers pushed them)
    on_s3 = swept["s3_objects"]()
    for line in remote:
        sha, _, ref = line.partition("\t")
        for key in s3_keys_of(repo, sha, sw.trial_stages(repo)):
            assert key in on_s3, f"{ref}: {key} is not on S3"
    # the workspace is untouched: no trial ran there
    assert run(["git", "status", "--porcelain", "--untracked-files=no"], repo).stdout == ""
    # the report: sorted by the metric, every trial's grid, the probe curves
    ranked = [float(r["fid_classifier"]) for r in result["trials"]]
    assert ranked == sorted(ranked)
    report = Path(result["report"]).read_text()
    assert report.count("data:image/png;base64,") == 2 and "2 trial(s) finished, 0 failed" in report
    assert f"the Dask cluster at tcp://{swept['host']}:" in report


def s3_keys_of(repo: Path, commit: str, stages: list[str]) -> list[str]:
    """The S3 keys (DVC 3's layout under the remote's prefix `pipeline/`) of the cached outputs of `stages` as the
    dvc.lock of `commit` records them (an output with `cache: false` in dvc.yaml is never pushed)."""
    lock = yaml.safe_load(run(["git", "show", f"{commit}:dvc.lock"], repo).stdout)
    spec = yaml.safe_load(run(["git", "show", f"{commit}:dvc.yaml"], repo).stdout)
    uncached = {next(iter(o)) for st in stages for kind in ("outs", "metrics", "plots")
                for o in spec["stages"][st].get(kind, [])
                if isinstance(o, dict) and (next(iter(o.values())) or {}).get("cache") is False}  # fmt: skip
    md5s = [o["md5"] for st in stages for o in lock["stages"][st].get("outs", []) if o["path"] not in uncached]
    assert md5s, f"{commit}: no cached outputs of {stages} in its dvc.lock"
    return [f"pipeline/files/md5/{m[:2]}/{m[2:]}" for m in md5s]


@pytest.mark.slow
@pytest.mark.xdist_group("sweep-cluster")
def test_the_trials_ran_on_machines_that_share_only_the_network(swept):
    """Every server the workers used was on this machine's network address, not loopback (the sweep's --address
    checks refused nothing: the reach rules hold), and the workers ran as another user who cannot read the
    workspace: what a trial needed came from the git server and S3."""
    if swept["host"] == "127.0.0.1":
        pytest.skip("this machine has no network address besides loopback")
    assert swept["cluster"].address.startswith(f"tcp://{swept['host']}:")
    assert swept["git_url"].startswith(f"git://{swept['host']}:") and swept["s3"].startswith(f"http://{swept['host']}")
    if swept["user"] is None:
        pytest.skip("the workers ran as this user: acting as another one needs root (CI runs as root)")
    uid, gid = swept["user"]
    as_other = {"user": uid, "group": gid, "extra_groups": [], "capture_output": True}
    assert subprocess.run(["cat", str(swept["repo"] / "params.yaml")], **as_other).returncode != 0
    assert subprocess.run(["ls", str(swept["repo"])], **as_other).returncode != 0
    # the trials' clones were made by that user, in its machine's own temp folder
    roots = [r for r in map(swept["cluster"].trials_root, swept["cluster"].workers) if r.exists()]
    assert roots and all(r.stat().st_uid == uid for r in roots), [(r, r.stat().st_uid) for r in roots]


@pytest.mark.slow
@pytest.mark.xdist_group("sweep-cluster")
def test_the_sweep_shows_in_prefect_with_a_task_per_trial_and_its_report(swept):
    server, result = swept["server"], result_of(swept["stdout"])
    run_id = result["flow_run_id"]  # this test's flow run: the server is shared with every other test
    flows = httpx.post(f"{server.api_url}/flow_runs/filter", json={"flow_runs": {"id": {"any_": [run_id]}}}).json()
    assert [f["flow_id"] for f in flows] and flows[0]["state_type"] == "COMPLETED", flows
    trials = {f"trial-{row['trial']}" for row in result["trials"]}
    assert _completed_trials(server, run_id) == trials, _flow_run_tasks(server, run_id)
    arts = httpx.post(f"{server.api_url}/artifacts/filter", json={"artifacts": {"key": {"any_": ["gan-sweep-lr-loss"]},
                      "flow_run_id": {"any_": [run_id]}}}).json()  # fmt: skip
    assert arts and "fid_classifier" in arts[0]["data"]
    progress = httpx.post(f"{server.api_url}/artifacts/filter", json={"artifacts": {"key": {"any_": [
        "gan-sweep-lr-loss-progress"]}, "flow_run_id": {"any_": [run_id]}}}).json()  # fmt: skip
    assert progress and progress[0]["type"] == "progress" and progress[0]["data"] == 100.0, progress


def _dvc_status_clean(repo: Path) -> None:
    """`dvc status`: every stage up to date (the source watcher is "always changed"), every output on the remote."""
    local = json.loads(run([sys.executable, "-m", "dvc", "status", "--json"], repo).stdout or "{}")
    assert all(v == ["always changed"] for v in local.values()), local
    cloud = json.loads(run([sys.executable, "-m", "dvc", "status", "--cloud", "--json"], repo).stdout or "{}")
    assert cloud == {}, cloud


@pytest.mark.slow
@pytest.mark.xdist_group("sweep-cluster")
def test_a_rerun_runs_nothing_and_promote_records_the_best_trial(swept):
    repo, cluster = swept["repo"], swept["cluster"]
    before, runs_before = run(["git", "rev-parse", "HEAD"], repo).stdout.strip(), len(history(repo))
    params_before = yaml.safe_load((repo / "params.yaml").read_text())
    proc = sweep_cmd(repo, swept["sweep_file"], cluster, "--promote", env=swept["server"].env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    result = result_of(proc.stdout)
    assert result["ran"] == [] and len(result["skipped"]) == 2
    best = result["trials"][0]
    assert result["best"] == best["experiment"]
    # the best trial's own settings, and only those, went into params.yaml (not the sweep's budget or base keys)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert f"train.lr_g={params['train']['lr_g']}" in best["settings"]
    assert f"train.loss={params['train']['loss']}" in best["settings"]
    for section, key in (("train", "max_seconds"), ("train", "epochs"), ("evaluate", "bootstrap")):
        assert params[section][key] == params_before[section][key], (section, key)
    # the model trained with exactly those settings (at the pipeline's own length) went through the gate
    decision = result["promotion"]["decision"]
    metrics = json.loads((repo / "data/metrics/metrics.json").read_text())
    assert decision["metric"] == "fid_classifier"
    assert decision["candidate_value"] == pytest.approx(metrics["fid_classifier"], rel=1e-3)
    assert decision["reason"] and decision["reason"] in Path(result["report"]).read_text()
    # the history: one row more, this run's, with the gate's decision, metric and value
    rows = history(repo)
    assert len(rows) == runs_before + 1, rows[-2:]
    last = rows[-1]
    assert last["flow_run_id"] == result["flow_run_id"] and last["promoted"] == str(decision["promote"]), last
    assert last["metric"] == decision["metric"] and float(last["value"]) == pytest.approx(decision["candidate_value"])
    # the commit (and a champion tag exactly when promoted), a clean workspace, `dvc status` clean
    log = run(["git", "log", "--format=%s", f"{before}..HEAD"], repo).stdout
    assert log.strip(), "the promotion was not committed"
    tags = run(["git", "tag", "--points-at", "HEAD"], repo).stdout.split()
    if decision["promote"]:
        assert tags == [result["promotion"]["recorded"]["tag"]] and tags[0].startswith("champion-"), tags
    else:
        assert not tags and "not promoted" in log.splitlines()[0], (tags, log)
    assert run(["git", "status", "--porcelain", "--untracked-files=no"], repo).stdout == ""
    _dvc_status_clean(repo)


@pytest.mark.slow
@pytest.mark.xdist_group("sweep-cluster")
def test_a_diverging_trial_fails_with_its_reason_and_the_others_finish(swept):
    repo, cluster = swept["repo"], swept["cluster"]
    spec = {"name": "faults", "base": TINY_TRIALS, "budget": {"max_seconds": 120},
            "search": {"trials": {"diverges": {"train.seed": 7}, "fine": {"train.seed": 3}}}}  # fmt: skip
    proc = sweep_cmd(repo, write(swept["top"] / "faults.yaml", spec), cluster, env=swept["server"].env)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-6000:]
    result = result_of(proc.stdout)
    assert [n.split("-")[1] for n in result["failed"]] == ["diverges"] and len(result["ran"]) == 1
    failed = next(r for r in result["trials"] if r["trial"] == "diverges")
    assert "training diverged at step 5" in failed["status"] or "diverged" in Path(result["report"]).read_text()
    assert "training diverged at step 5: loss_d=nan" in Path(result["report"]).read_text()


LOCAL = {"name": "local", "base": TINY_TRIALS, "budget": {"kimg": 1}, "parallel": 1,
         "search": {"grid": {"train.lr_g": [0.0005, 0.002]}}}  # fmt: skip


def experiments(repo: Path) -> list[str]:
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps/"], repo).stdout.split()
    return sorted(ref.rsplit("/", 1)[1] for ref in refs)


def ended(pgid: int, within: float) -> bool:
    """Whether every process of the group `pgid` ended within `within` seconds."""
    deadline = time.monotonic() + within
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.5)
    return not group_alive(pgid)


@pytest.mark.slow
def test_the_default_path_runs_a_sweep_on_a_local_cluster_of_its_own_and_resumes_after_a_kill(
    completed_run, prefect_server, tmp_path
):
    """`python -m flows.sweep FILE` as the README gives it: no --address (a local Dask cluster of its own, sized by
    the file's `parallel`: one trial at a time here), no --git-remote (the trials clone the workspace and push their
    experiments back to it). The sweep's own process is killed (kill -9) once its first trial finished: everything
    it started ends with it; started again, the sweep runs only the unfinished trial."""
    repo, _, _ = completed_run
    sweep_file = write(tmp_path / "local.yaml", LOCAL)
    proc = start_sweep(repo, sweep_file, None, env=prefect_server.env)
    try:
        deadline = time.monotonic() + SWEEP_TIMEOUT_S
        while not experiments(repo) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, "the sweep ended before it could be killed midway:\n" + finish(proc)[1][-3000:]
        first = experiments(repo)
        proc.kill()  # the flow process alone, as the OOM killer or a crash would
        proc.wait()
        # its local scheduler, workers and the running trial's processes went with it
        assert ended(proc.pid, 60), "the killed sweep left processes running"
    finally:
        stop_group(proc)
    proc = start_sweep(repo, sweep_file, None, env=prefect_server.env)
    try:
        out, err = finish(proc)
        assert ended(proc.pid, 30), "the sweep left processes running"
    finally:
        stop_group(proc)
    assert proc.returncode == 0, out[-3000:] + err[-6000:]
    result = result_of(out)
    assert result["skipped"] == first and len(result["ran"]) == 1 and not result["failed"], result
    # the experiments are in the workspace itself (its own git remote), each with its metric
    assert experiments(repo) == sorted(result["ran"] + result["skipped"])
    assert all(float(row["fid_classifier"]) > 0 for row in result["trials"])
    report = Path(result["report"]).read_text()
    assert "2 trial(s) finished, 0 failed" in report and "a local Dask cluster on" in report
    # on the session's server: this flow run, a completed task for the trial it ran
    trials = {f"trial-{row['trial']}" for row in result["trials"] if row["experiment"] in result["ran"]}
    assert _completed_trials(prefect_server, result["flow_run_id"]) == trials
    assert run(["git", "status", "--porcelain", "--untracked-files=no"], repo).stdout == ""
