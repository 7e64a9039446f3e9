"""The Prefect flow against a real local Prefect server, on tiny real data."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from uuid import UUID

import pytest
import yaml
from filelock import FileLock
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId

from flows.pipeline import ARTIFACT_KEYS, LOCK
from gan import dvcrun

from .conftest import ARTIFACTS_DIR, TINY, copy_repo, require_debian_fashion_mnist, run

pytestmark = pytest.mark.slow

STAGES = ["download", "prepare", "classifier", "train", "reference", "evaluate", "export"]
# Tiny runs rarely cover all 10 classes; the class requirement has its own unit test.
FLOW_TINY = [*TINY, "promote.require_all_classes=false", "train.lr_g=0.001", "train.lr_d=0.0005", "train.epochs=3"]


def flow(repo: Path, server, *args: str, check: bool = True):
    return run([sys.executable, "-m", "flows.pipeline", *args], repo, check=check, env=server.env)


def history(repo: Path) -> list[dict]:
    with open(repo / "data/history/runs.csv") as f:
        return list(csv.DictReader(f))


def task_runs(server, flow_run_id: str) -> dict[str, str]:
    with server.client() as c:
        runs = c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)])))
    return {r.name.rsplit("-", 1)[0]: r.state.type.value for r in runs}


def artifacts(server, flow_run_id: str) -> dict:
    with server.client() as c:
        arts = c.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)]))
        )
    return {a.key: a for a in arts}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def completed_run(prefect_server, tmp_path_factory):
    """One full flow run on a tiny config (shared with the browser test)."""
    require_debian_fashion_mnist()
    repo = copy_repo(tmp_path_factory.mktemp("flow") / "repo", FLOW_TINY)
    proc = flow(repo, prefect_server)
    return repo, history(repo)[-1]["flow_run_id"], proc


def test_flow_runs_every_stage_with_artifacts(completed_run, prefect_server):
    repo, run_id, proc = completed_run
    assert json.loads(proc.stdout[proc.stdout.index("{") :])["ran"] == STAGES
    with prefect_server.client() as c:
        fr = c.read_flow_run(UUID(run_id))
    assert fr.state.is_completed()
    assert task_runs(prefect_server, run_id) == {**{s: "COMPLETED" for s in STAGES}, "champion-gate": "COMPLETED"}

    arts = artifacts(prefect_server, run_id)
    assert set(ARTIFACT_KEYS.values()) <= set(arts), arts.keys()
    assert arts["gan-training-progress"].type == "progress" and float(arts["gan-training-progress"].data) == 100.0
    assert arts["gan-metrics"].type == "table"
    metric_rows = json.loads(arts["gan-metrics"].data)
    assert {r["metric"] for r in metric_rows} >= {"FID (classifier)", "KID (classifier)", "classes covered"}
    assert "data:image/png;base64," in arts["gan-report"].data and "PROMOTED" in arts["gan-report"].data

    # The flow recorded its stages exactly as dvc repro would.
    assert "up to date" in run(["dvc", "status"], repo).stdout
    assert "Running stage" not in run(["dvc", "repro"], repo).stdout
    record = json.loads((repo / "data/models/champion/record.json").read_text())
    assert record["flow_run_id"] == run_id and record["dataset"] == "fashion-mnist"


def test_stage_logs_reach_prefect(completed_run, prefect_server):
    _, run_id, _ = completed_run
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    logs: list = []
    with prefect_server.client() as c:
        while True:
            page = c.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(run_id)])), limit=200, offset=len(logs)
            )
            logs += page
            if len(page) < 200:
                break
    text = "\n".join(entry.message for entry in logs)
    assert "Running stage 'train'" in text  # DVC's own line
    assert "> python -m gan train" in text
    assert "domain classifier test accuracy" in text  # the stage's logging
    assert "champion gate:" in text


def test_nothing_changed_runs_nothing_then_worse_model_is_not_promoted(completed_run, prefect_server):
    repo, first_id, _ = completed_run
    champion = repo / "data/models/champion/generator.pt"
    before = md5(champion)

    again = flow(repo, prefect_server)
    assert json.loads(again.stdout[again.stdout.index("{") :])["ran"] == []
    assert "every stage is up to date" in again.stdout + again.stderr

    worse = flow(repo, prefect_server, "model.arch=mlp", "train.epochs=1", "train.lr_g=0.0001")
    result = json.loads(worse.stdout[worse.stdout.index("{") :])
    assert result["ran"] == ["train", "evaluate", "export"]  # not download, prepare, classifier
    assert result["promoted"] is False and result["decision"]["champion_fd"] is not None
    assert result["decision"]["candidate_fd"] > result["decision"]["champion_fd"]
    assert md5(champion) == before, "a worse model replaced the champion"
    assert json.loads((repo / "data/models/champion/record.json").read_text())["flow_run_id"] == first_id
    # Overrides were validated and saved, so dvc agrees with what the flow ran.
    assert yaml.safe_load((repo / "params.yaml").read_text())["model"]["arch"] == "mlp"
    assert "up to date" in run(["dvc", "status"], repo).stdout
    rows = history(repo)
    assert [r["promoted"] for r in rows[-2:]] == ["True", "False"]

    # dvc repro after a manual param change; then the flow finds nothing to do.
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["evaluate"]["seed"] = 7
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "Running stage 'evaluate'" in run(["dvc", "repro"], repo).stdout
    after = flow(repo, prefect_server)
    assert json.loads(after.stdout[after.stdout.index("{") :])["ran"] == []


def test_bad_override_fails_before_any_task(tmp_path, prefect_server):
    repo = copy_repo(tmp_path / "repo", FLOW_TINY)
    original = (repo / "params.yaml").read_text()
    proc = flow(repo, prefect_server, "train.epochs=-1", check=False)
    assert proc.returncode == 1
    assert "train.epochs = -1" in proc.stdout + proc.stderr
    assert (repo / "params.yaml").read_text() == original
    assert not (repo / "data").exists()


def test_failing_stage_fails_the_flow(tmp_path, prefect_server):
    require_debian_fashion_mnist()
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA to make the train stage fail")
    repo = copy_repo(tmp_path / "repo", [*FLOW_TINY, "train.device=cuda"])
    proc = flow(repo, prefect_server, check=False)
    assert proc.returncode == 1
    with prefect_server.client() as c:
        runs = c.read_flow_runs(flow_run_filter=FlowRunFilter(), limit=50)
    failed = [r for r in runs if r.state and r.state.is_failed()]
    assert failed, "the flow run is not marked Failed"
    states = task_runs(prefect_server, str(max(failed, key=lambda r: r.created).id))
    # train.device is also the classifier's device: the classifier stage is the first to fail.
    assert states == {"download": "COMPLETED", "prepare": "COMPLETED", "classifier": "FAILED"}
    assert not dvcrun.is_current("classifier", repo)  # the failure was not recorded as done
    assert "CUDA is not available" in proc.stdout + proc.stderr


def test_second_run_waits_or_fails_clearly(tmp_path, prefect_server):
    repo = copy_repo(tmp_path / "repo", FLOW_TINY)
    with FileLock(str(repo / LOCK)):
        proc = flow(repo, prefect_server, "--lock-timeout", "1", check=False)
    assert proc.returncode == 1
    assert "another gan-pipeline run holds" in proc.stdout + proc.stderr
    assert not (repo / "data").exists()


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip


def test_prefect_ui_shows_the_run_in_a_real_browser(completed_run, prefect_server):
    """Headless Debian Chromium on the real server's UI: stages, progress, metrics table, sample grid."""
    if not Path(CHROMIUM).exists():
        msg = "Debian chromium missing: apt-get install -y chromium"
        pytest.fail(msg) if os.environ.get("GAN_REQUIRE_REAL_DATA") == "1" else pytest.skip(msg)
    from playwright.sync_api import expect, sync_playwright

    _, run_id, _ = completed_run
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{prefect_server.url}/runs/flow-run/{run_id}")
        expect(page.get_by_text("Completed").first).to_be_visible(timeout=60_000)
        page.get_by_text("Task Runs", exact=True).first.click()
        for stage in [*STAGES, "champion-gate"]:
            expect(page.get_by_text(re.compile(rf"^{stage}-\w+$")).first).to_be_visible(timeout=30_000)
        page.get_by_text("Artifacts", exact=True).first.click()
        for key in ARTIFACT_KEYS.values():
            expect(page.get_by_text(key, exact=True).first).to_be_visible(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS_DIR / "prefect-flow-run.png"), full_page=True)

        page.get_by_text("gan-metrics", exact=True).first.click()
        expect(page.get_by_text("FID (classifier)", exact=True).first).to_be_visible(timeout=30_000)
        page.go_back()
        page.get_by_text("Artifacts", exact=True).first.click()
        page.get_by_text("gan-report", exact=True).first.click()
        grid = page.locator("img[src^='data:image/png;base64,']").first
        expect(grid).to_be_visible(timeout=30_000)
        assert grid.evaluate("img => img.naturalWidth") == 8 * 28 + 9 * 2  # the decoded 8×8 sample grid
        expect(page.get_by_text("PROMOTED to champion").first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS_DIR / "prefect-report.png"), full_page=True)
        browser.close()


def test_two_runs_at_once_do_not_corrupt_the_workspace(tmp_path, prefect_server):
    require_debian_fashion_mnist()
    import subprocess

    repo = copy_repo(tmp_path / "repo", FLOW_TINY)
    env = {**prefect_server.env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "flows.pipeline"]
    procs = [subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    ran = sorted(tuple(json.loads(out[out.index("{") :])["ran"]) for out, _ in outs)
    assert ran == [(), tuple(STAGES)]  # one did the work; the other waited, then found everything current
    assert "up to date" in run(["dvc", "status"], repo).stdout
    assert len(history(repo)) == 1
