"""Sweeps: the sweep file, the trial plan, and sweeps on a real Dask cluster.

The end-to-end tests start a real Dask scheduler and two `dask worker` processes (no nanny, each with a temp
folder of its own standing in for a machine: a trial clones, pulls and pushes there), a bare git remote and the
completed flow's DVC remote, and report to the session's real Prefect server.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from gan.core.sweepfile import SweepError, load_sweep, plan
from gan.lifecycle import sweep as sw
from gan.outputs.sweep_report import TrialRow, curves_png, grids_picture, report_markdown, table_rows

from .conftest import REPO, run

FAULTS = Path(__file__).parent / "sweep_faults"  # sitecustomize: the trial with train.seed 7 diverges


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


def test_a_float_setting_reaches_dvc_as_a_number():
    # YAML 1.1 (PyYAML) reads "1e-05" as a string: the value given to `dvc exp run -S` must read back as a float
    for value in (1e-05, 0.0005, 2.5e-10, 1e30, 3.0):
        assert yaml.safe_load(sw.yaml_value(value)) == value
    assert yaml.safe_load(sw.yaml_value("color,translation")) == "color,translation"
    assert yaml.safe_load(sw.yaml_value(True)) is True


# ---- the report


def _row(label: str, fid: float | None, reason: str = "") -> TrialRow:
    import io

    import numpy as np
    from PIL import Image

    if fid is None:
        return TrialRow(label, f"s-{label}-0", {"train.seed": 7}, reason=reason)
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), int(fid) % 255, np.uint8)).save(buf, format="PNG")
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


# ---- on a real Dask cluster


TINY_TRIALS = {  # cheap scoring for tiny trials (evaluate-only settings; the shared reference is the flow's)
    "train.epochs": 1,
    "evaluate.bootstrap": 5,
    "evaluate.kid_subsets": 10,
    "evaluate.kid_subset_size": 100,
    "evaluate.prdc_samples": 200,
    "evaluate.copy_cells": 5,
}


class Cluster:
    def __init__(self, folder: Path, env: dict):
        self.folder, self.env = folder, env
        folder.mkdir(parents=True, exist_ok=True)
        self.scheduler_file = folder / "scheduler.json"
        dask = str(Path(sys.executable).parent / "dask")
        self.scheduler = subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file",
             str(self.scheduler_file)], env=env, stdout=open(folder / "scheduler.log", "w"),
            stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 60
        while not self.scheduler_file.exists():
            assert time.monotonic() < deadline, (folder / "scheduler.log").read_text()
            time.sleep(0.2)
        time.sleep(0.3)
        self.address = json.loads(self.scheduler_file.read_text())["address"]
        self.workers: dict[str, subprocess.Popen] = {}
        for name in ("machine-a", "machine-b"):
            self.start_worker(name)

    def start_worker(self, name: str) -> None:
        machine = self.folder / name
        (machine / "tmp").mkdir(parents=True, exist_ok=True)
        env = {**self.env, "TMPDIR": str(machine / "tmp"), "PREFECT_HOME": str(machine / "prefect-home")}
        dask = str(Path(sys.executable).parent / "dask")
        self.workers[name] = subprocess.Popen(
            [dask, "worker", self.address, "--name", name, "--nthreads", "1", "--nworkers", "1", "--no-nanny",
             "--local-directory", str(machine / "dask")], env=env, cwd=machine,
            stdout=open(machine / "worker.log", "a"), stderr=subprocess.STDOUT)  # fmt: skip

    def trial_folders(self, name: str) -> list[Path]:
        return [p for p in (self.folder / name / "tmp" / "gan-sweep-trials").glob("*") if p.is_dir()]

    def stop(self) -> None:
        for proc in [*self.workers.values(), self.scheduler]:
            if proc.poll() is None:
                proc.terminate()
        for proc in [*self.workers.values(), self.scheduler]:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def sweep_cmd(repo: Path, sweep_file: Path, cluster: Cluster, *args: str, env: dict, wait: bool = True):
    cmd = [sys.executable, "-m", "flows.sweep", str(sweep_file), "--address", cluster.address, "--git-remote",
           "origin", "--json", *args]  # fmt: skip
    if wait:
        return run(cmd, repo, check=False, env=env)
    return subprocess.Popen(cmd, cwd=repo, env={**env, "DVC_NO_ANALYTICS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def result_of(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{\n") :])


@pytest.fixture(scope="module")
def swept(completed_flow, prefect_server, tmp_path_factory):
    """The completed flow's repo (a copy, with a bare git remote `origin`), a Dask cluster of two stand-in machines,
    and a 4-trial sweep run on it during which one machine's worker is killed (kill -9) mid-trial."""
    repo0, _, _ = completed_flow
    top = tmp_path_factory.mktemp("sweep")
    shutil.copytree(repo0.parent, top / "copy", symlinks=True)
    repo = top / "copy" / "repo"
    run(["git", "init", "-q", "--bare", str(top / "origin.git")], top)
    run(["git", "remote", "add", "origin", str(top / "origin.git")], repo)
    env = {**prefect_server.env, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PYTHONPATH": str(FAULTS), "GAN_TEST_DIVERGE_SEED": "7"}  # fmt: skip
    cluster = Cluster(top / "cluster", env)
    sweep_file = write(top / "lr-loss.yaml", {**GRID, "base": TINY_TRIALS})
    proc = sweep_cmd(repo, sweep_file, cluster, env=prefect_server.env, wait=False)
    # -- kill -9 the worker of the first machine that is midway through a trial (its shared outputs pulled)
    killed, deadline = None, time.monotonic() + 300
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        for name in cluster.workers:
            if any((f / "data" / "prepared").exists() for f in cluster.trial_folders(name)):
                time.sleep(2)
                cluster.workers[name].send_signal(signal.SIGKILL)
                cluster.workers[name].wait()
                killed = name
                cluster.start_worker(name)  # the machine comes back (a new worker process): two workers again
                break
        time.sleep(0.2)
    out, err = proc.communicate(timeout=900)
    yield {"repo": repo, "top": top, "cluster": cluster, "sweep_file": sweep_file, "killed": killed,
           "rc": proc.returncode, "stdout": out, "stderr": err, "server": prefect_server}  # fmt: skip
    cluster.stop()


def _flow_run_tasks(server, flow_run_id: str) -> list[dict]:
    r = httpx.post(f"{server.api_url}/task_runs/filter", json={"task_runs": {"flow_run_id": {"any_": [flow_run_id]}}})
    r.raise_for_status()
    return r.json()


@pytest.mark.slow
@pytest.mark.xdist_group("sweep-cluster")
def test_a_sweep_runs_each_trial_as_an_experiment_even_when_a_worker_is_killed(swept):
    assert swept["killed"], "no trial was seen midway on a worker"
    assert swept["rc"] == 0, swept["stdout"][-3000:] + swept["stderr"][-6000:]
    result, repo = result_of(swept["stdout"]), swept["repo"]
    assert len(result["ran"]) == 4 and not result["failed"] and not result["skipped"]
    # every trial is an experiment on the git remote (the killed attempt left none half-written) ...
    remote = run(["git", "ls-remote", str(swept["top"] / "origin.git"), "refs/exps/*"], repo).stdout.splitlines()
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
    # the workspace is untouched: no trial ran there
    assert run(["git", "status", "--porcelain", "--untracked-files=no"], repo).stdout == ""
    # the report: sorted by the metric, every trial's grid, the probe curves
    ranked = [float(r["fid_classifier"]) for r in result["trials"]]
    assert ranked == sorted(ranked)
    report = Path(result["report"]).read_text()
    assert report.count("data:image/png;base64,") == 2 and "4 trial(s) finished, 0 failed" in report


@pytest.mark.slow
@pytest.mark.xdist_group("sweep-cluster")
def test_the_sweep_shows_in_prefect_with_a_task_per_trial_and_its_report(swept):
    server = swept["server"]
    flows = httpx.post(f"{server.api_url}/flow_runs/filter", json={"flows": {"name": {"any_": ["gan-sweep"]}}}).json()
    assert flows, "no gan-sweep flow run on the server"
    run_id = max(flows, key=lambda f: f["created"])["id"]
    trials = [t for t in _flow_run_tasks(server, run_id) if t["name"].startswith("trial-")]
    completed = {t["name"].rsplit("-", 1)[0] for t in trials if t["state_type"] == "COMPLETED"}
    assert len(completed) == 4, [(t["name"], t["state_type"]) for t in trials]
    arts = httpx.post(
        f"{server.api_url}/artifacts/filter", json={"artifacts": {"key": {"any_": ["gan-sweep-lr-loss"]}}}
    )
    assert arts.json() and "fid_classifier" in arts.json()[0]["data"]
    progress = httpx.post(f"{server.api_url}/artifacts/filter",
                          json={"artifacts": {"key": {"any_": ["gan-sweep-lr-loss-progress"]}}}).json()  # fmt: skip
    assert progress and progress[0]["type"] == "progress" and progress[0]["data"] == 100.0, progress


@pytest.mark.slow
@pytest.mark.xdist_group("sweep-cluster")
def test_a_rerun_runs_nothing_and_promote_records_the_best_trial(swept):
    repo, cluster = swept["repo"], swept["cluster"]
    before = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    proc = sweep_cmd(repo, swept["sweep_file"], cluster, "--promote", env=swept["server"].env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    result = result_of(proc.stdout)
    assert result["ran"] == [] and len(result["skipped"]) == 4
    best = result["trials"][0]
    assert result["best"] == best["experiment"]
    # the best trial went through the gate and was recorded as a normal run is: params, history, a commit
    params = yaml.safe_load((repo / "params.yaml").read_text())["train"]
    assert f"train.lr_g={params['lr_g']}" in best["settings"] and f"train.loss={params['loss']}" in best["settings"]
    decision = result["promotion"]["decision"]
    assert decision["metric"] == "fid_classifier" and decision["candidate_value"] == pytest.approx(
        float(best["fid_classifier"]), rel=1e-3
    )
    log = run(["git", "log", "--format=%s", f"{before}..HEAD"], repo).stdout
    assert log.strip(), "the promotion was not committed"
    assert run(["git", "status", "--porcelain", "--untracked-files=no"], repo).stdout == ""


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
