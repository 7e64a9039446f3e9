"""The cron deployment from prefect.yaml on a real local server, executed by a process worker: a scheduled-style
run and an event-triggered run, each recorded as a git commit and pushed to the DVC remote."""

from __future__ import annotations

import json
import sys
import time
from fnmatch import fnmatch

import pytest
import yaml
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.sorting import FlowRunSort

from flows.notify import DATASET_AVAILABLE, DATASET_CHANGED, dataset_resource
from gan.lifecycle import dvcrun

from .conftest import REPO, run
from .test_flow import RECORD, STAGES, task_runs

pytestmark = pytest.mark.slow


def prefect(repo, server, *args, timeout_check=True):
    return run([sys.executable, "-m", "prefect", *args], repo, env=server.env, check=timeout_check)


def deployment_runs(server, deployment_id) -> list:
    with server.client() as c:
        return c.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            limit=50,
        )


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def assert_recorded(repo, flow_run_id: str, promoted: bool | None) -> None:
    """The run left a commit naming it (a champion tag if promoted), a clean tree and a remote holding everything."""
    message = run(["git", "log", "-1", "--format=%B"], repo).stdout
    assert f"({flow_run_id})" in message, message
    assert run(["git", "status", "--porcelain"], repo).stdout == ""
    tags = run(["git", "tag", "--points-at", "HEAD"], repo).stdout.split()
    if promoted is not None:
        assert bool(tags) == promoted and ("promoted to champion" in message) == promoted
    missing = json.loads(run([sys.executable, "-m", "dvc", "status", "--cloud", "--json"], repo).stdout or "{}")
    assert missing == {}, missing


def set_n_png(repo, delta: int) -> None:
    """A change of export.n_png in params.yaml: it reruns only the export stage (cheap)."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["export"]["n_png"] += delta
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_trigger_expects_the_event_notify_emits():
    """prefect.yaml cannot import the constants: check that it names the same event and resource."""
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    (nightly,) = [d for d in deployments if d["name"] == "nightly"]
    (trigger,) = nightly["triggers"]
    assert trigger["expect"] == [DATASET_AVAILABLE]
    # Not the flow's own event: the run that emits it already retrains on the new data; it would queue an idle run.
    assert DATASET_CHANGED not in trigger["expect"]
    for dataset in ("fashion-mnist", "mnist"):
        assert fnmatch(dataset_resource(dataset)["prefect.resource.id"], trigger["match"]["prefect.resource.id"])


def test_nightly_deployment_schedules_runs_and_a_worker_executes_one(completed_run, prefect_server):
    repo = completed_run[0]  # a copy of a completed flow: the worker's runs retrain only what a change affects
    prefect(repo, prefect_server, "work-pool", "create", "gan-process", "--type", "process")
    prefect(repo, prefect_server, "--no-prompt", "deploy", "--all")

    with prefect_server.client() as c:
        dep = c.read_deployment_by_name("gan-pipeline/nightly")
        sweep = c.read_deployment_by_name(
            "gan-sweep-deployment/sweep"
        )  # the sweep flow, on demand (tests/test_sweep.py)
    assert [s.schedule.cron for s in dep.schedules] == ["0 2 * * *"]
    assert sweep.parameters == {"sweep_file": "sweeps/ablation-fashion.yaml"} and not sweep.schedules
    assert dep.work_pool_name == "gan-process"
    assert dep.pull_steps[0]["prefect.deployments.steps.set_working_directory"]["directory"] == str(repo)

    # The server's scheduler turns the cron into future runs at 02:00 UTC.
    scheduled = wait_for(
        lambda: [r for r in deployment_runs(prefect_server, dep.id) if r.state.is_scheduled()], 90, "scheduled runs"
    )
    assert all(r.expected_start_time.hour == 2 and r.expected_start_time.minute == 0 for r in scheduled)

    # Run one now, through a process worker, after a change of setting (the deployment has no parameters: the run
    # reads params.yaml from its working directory).
    set_n_png(repo, +1)
    with prefect_server.client() as c:
        now = c.create_flow_run_from_deployment(dep.id)
    worker = run(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "gan-process", "--run-once"],
        repo,
        env=prefect_server.env,
    )
    with prefect_server.client() as c:
        done = c.read_flow_run(now.id)
    assert done.state.is_completed(), f"{done.state}\n{worker.stdout[-3000:]}\n{worker.stderr[-3000:]}"
    assert set(task_runs(prefect_server, str(now.id))) == {*STAGES, *RECORD}
    assert "params.yaml" in run(["git", "show", "--name-only", "--format=", "HEAD"], repo).stdout.split()
    assert dvcrun.is_current(None, repo)  # all but the `source` watcher, which always runs
    assert_recorded(repo, str(now.id), promoted=False)  # the same generator: not better than the champion

    # A user changes a setting, then new data is announced: the documented command emits the event the
    # deployment's trigger waits for; the worker executes the run it creates, which retrains and records it.
    set_n_png(repo, +1)
    before = {r.id for r in deployment_runs(prefect_server, dep.id)}
    run([sys.executable, "-m", "flows.notify", "--note", "test"], repo, env=prefect_server.env)
    triggered = wait_for(
        lambda: [r for r in deployment_runs(prefect_server, dep.id) if r.id not in before], 60, "a triggered run"
    )
    assert triggered[0].created_by is not None and triggered[0].created_by.type == "AUTOMATION"
    worker = run(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "gan-process", "--run-once"],
        repo,
        env=prefect_server.env,
    )
    with prefect_server.client() as c:
        done = c.read_flow_run(triggered[0].id)
    assert done.state.is_completed(), f"{done.state}\n{worker.stdout[-3000:]}\n{worker.stderr[-3000:]}"
    assert_recorded(repo, str(triggered[0].id), promoted=None)
    assert "params.yaml" in run(["git", "show", "--name-only", "--format=", "HEAD"], repo).stdout.split()
