"""The Prefect flow against a real local Prefect server, on tiny real data."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest
import yaml
from filelock import FileLock
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId

from flows.notify import DATASET_CHANGED
from flows.pipeline import ARTIFACT_KEYS, LOCK
from gan.lifecycle import dvcrun

from .conftest import (
    ARTIFACTS_DIR,
    DEBIAN_FMNIST,
    FLOW_TINY,
    copy_repo,
    flow,
    flow_result,
    history,
    require_debian_fashion_mnist,
    run,
)

pytestmark = pytest.mark.slow

STAGES = ["source", "download", "prepare", "classifier", "judge", "train", "reference", "evaluate", "export"]
RECORD = ["champion-gate", "git-commit", "dvc-push"]  # the tasks after the stages


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


def flow_run_id(proc) -> str:
    """The id of the flow run whose output `proc` holds (Prefect logs where to view it)."""
    ids = set(re.findall(r"runs/flow-run/([0-9a-f-]{36})", proc.stdout + proc.stderr))
    assert len(ids) == 1, proc.stdout + proc.stderr
    return ids.pop()


def git(repo: Path, *args: str) -> str:
    return run(["git", *args], repo).stdout.strip()


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_flow_runs_every_stage_with_artifacts(completed_run, prefect_server):
    repo, run_id, proc = completed_run
    assert flow_run_id(proc) == run_id  # the run these tests read on the shared server: this flow's own
    # `source` ran but found what the copied dvc.lock records (the same published files): not a change.
    assert flow_result(proc)["ran"] == [s for s in STAGES if s != "source"]
    with prefect_server.client() as c:
        fr = c.read_flow_run(UUID(run_id))
    assert fr.state.is_completed()
    assert task_runs(prefect_server, run_id) == {**{s: "COMPLETED" for s in STAGES}, **{t: "COMPLETED" for t in RECORD}}

    arts = artifacts(prefect_server, run_id)
    assert set(ARTIFACT_KEYS.values()) <= set(arts), arts.keys()
    assert arts["gan-training-progress"].type == "progress" and float(arts["gan-training-progress"].data) == 100.0
    assert arts["gan-metrics"].type == "table"
    metric_rows = json.loads(arts["gan-metrics"].data)
    assert {r["metric"] for r in metric_rows} >= {"FID (classifier)", "KID (classifier)", "classes covered",
                                                  "FID (judge)", "likely copies (judge)"}  # fmt: skip
    assert "data:image/png;base64," in arts["gan-report"].data and "PROMOTED" in arts["gan-report"].data

    # The flow recorded its stages exactly as dvc repro would.
    assert dvcrun.is_current(None, repo)  # all but the `source` watcher, which always runs
    repro = run(["dvc", "repro"], repo).stdout
    assert [line for line in repro.splitlines() if line.startswith("Running stage")] == ["Running stage 'source':"]
    record = json.loads((repo / "data/models/champion/record.json").read_text())
    assert record["flow_run_id"] == run_id and record["dataset"] == "fashion-mnist"

    # Recorded: one commit of the pipeline's files naming the run, a champion tag on it, every output pushed.
    result = flow_result(proc)
    assert git(repo, "log", "-1", "--format=%H") == result["recorded"]["commit"]
    message = git(repo, "log", "-1", "--format=%B")
    assert message.startswith("gan-pipeline: fid_classifier ") and "promoted to champion" in message
    assert f"({run_id})" in message and "Stages run: download prepare classifier judge train" in message
    assert git(repo, "tag", "--points-at", "HEAD") == result["recorded"]["tag"]
    assert result["recorded"]["tag"].startswith("champion-")
    assert git(repo, "status", "--porcelain") == ""  # nothing else was changed, all of it committed
    assert json.loads(run(["dvc", "status", "--cloud", "--json"], repo).stdout) == {}
    assert "## Changes since the previous champion" not in arts["gan-report"].data  # none before
    assert f"commit `{result['recorded']['commit'][:10]}`" in arts["gan-report"].data


def test_stage_logs_reach_prefect(completed_flow, prefect_server):
    _, run_id, _ = completed_flow
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
    assert "domain classifier (1×28×28) test accuracy" in text  # the stage's logging
    assert "champion gate:" in text


def test_a_worse_model_is_not_promoted_then_a_manual_repro_is_recorded(completed_run, prefect_server):
    """(A run with nothing to do: test_a_failed_push_or_a_refused_commit_fails_the_run_and_loses_nothing, and the
    folder flow's test.)"""
    repo, first_id, _ = completed_run
    champion = repo / "data/models/champion/generator.pt"
    before = md5(champion)

    worse = flow(repo, prefect_server, "model.arch=mlp", "train.epochs=1", "train.lr_g=0.0001")
    result = flow_result(worse)
    assert result["ran"] == ["train", "evaluate", "export"]  # not download, prepare, classifier
    dec = result["decision"]
    assert result["promoted"] is False and dec["metric"] == "fid_classifier" and dec["champion_value"] is not None
    assert dec["candidate_value"] > dec["champion_value"]
    assert md5(champion) == before, "a worse model replaced the champion"
    # Recorded without a tag; the report shows what changed since the champion.
    assert "not promoted" in git(repo, "log", "-1", "--format=%s") and not git(repo, "tag", "--points-at", "HEAD")
    assert history(repo)[-1]["flow_run_id"] == flow_run_id(worse)
    report = artifacts(prefect_server, flow_run_id(worse))["gan-report"].data
    assert "## Changes since the previous champion" in report and "| model.arch | dcgan | mlp |" in report
    assert json.loads((repo / "data/models/champion/record.json").read_text())["flow_run_id"] == first_id
    # Overrides were validated and saved, so dvc agrees with what the flow ran.
    assert yaml.safe_load((repo / "params.yaml").read_text())["model"]["arch"] == "mlp"
    assert dvcrun.is_current(None, repo)  # all but the `source` watcher, which always runs
    rows = history(repo)
    assert [r["promoted"] for r in rows[-2:]] == ["True", "False"]

    # dvc repro after a manual param change; then the flow finds nothing to do.
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["evaluate"]["seed"] = 7
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "Running stage 'evaluate'" in run(["dvc", "repro"], repo).stdout
    after = flow(repo, prefect_server, as_json=False)  # what ./run.sh prints: a short summary, not a table
    champion_fd = json.loads((repo / "data/models/champion/record.json").read_text())["metrics"]["fid_classifier"]
    lines = after.stdout.splitlines()
    assert lines[:4] == [
        "nothing changed: every stage is up to date",
        f"champion fid_classifier: {champion_fd:.4g}",
        f"samples: {repo / 'data/samples/grid.png'}; model card: {repo / 'data/samples/MODEL_CARD.md'}",
        f"champion: {repo / 'data/models/champion'}/; run history: {repo / 'data/history/runs.csv'}",
    ]
    # The manual `dvc repro` left params.yaml, dvc.lock and metrics changed: this run commits and pushes them.
    head = git(repo, "log", "-1", "--format=%H")
    assert lines[4] == f"commit {head[:10]}; then dvc push (task dvc-push)"
    assert re.fullmatch(r"dvc push: \d+ files? pushed \(.*gan-pipeline-dvc-remote\)", lines[5]), lines[5]
    assert git(repo, "log", "-1", "--format=%s") == "gan-pipeline: record the pipeline's files left uncommitted"
    assert set(git(repo, "show", "--name-only", "--format=", "HEAD").split()) == {
        "params.yaml", "dvc.lock", "data/metrics/metrics.json"}  # fmt: skip
    assert git(repo, "status", "--porcelain") == ""


def test_bad_settings_exit_2_before_any_task(tmp_path, prefect_server):
    """Exit 2 like the `python -m gan` stage commands: a bad value, and a promote.metric with no extractor."""
    repo = copy_repo(tmp_path / "repo", FLOW_TINY)
    original = (repo / "params.yaml").read_text()
    proc = flow(repo, prefect_server, "train.epochs=-1", check=False)
    assert proc.returncode == 2
    assert "train.epochs = -1" in proc.stdout + proc.stderr
    proc = flow(repo, prefect_server, "evaluate.extractors=[inception]", check=False)
    assert proc.returncode == 2
    assert "promote.metric = 'auto' needs the 'classifier' or 'judge' extractor" in proc.stderr
    assert (repo / "params.yaml").read_text() == original
    assert not (repo / "data").exists()


def dataset_changed_events(server, dataset: str, flow_run: str) -> list:
    """The dataset-changed events of `dataset` that flow run `flow_run` emitted (the server is shared by every test)."""
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventOccurredFilter,
        EventRelatedFilter,
        EventResourceFilter,
    )

    since = datetime.now(UTC) - timedelta(days=1)  # the server is this session's
    with server.client() as c:
        page = c.read_events(
            EventFilter(
                occurred=EventOccurredFilter(since=since),
                event=EventNameFilter(name=[DATASET_CHANGED]),
                resource=EventResourceFilter(id=[f"gan.dataset.{dataset}"]),
                related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run}"]),
            ),
            limit=50,  # the client's default (100) is over the server's maximum
        )
    return page.events


def test_download_with_new_bytes_emits_dataset_changed(completed_run, prefect_server, tmp_path):
    """New bytes upstream (a label changed, its checksum updated in gan/core/datasets.py): the flow emits the event."""
    repo, _, _ = completed_run
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for f in DEBIAN_FMNIST.glob("*.gz"):
        (mirror / f.name).write_bytes(f.read_bytes())
    labels = bytearray(gzip.decompress((DEBIAN_FMNIST / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    old_sha = hashlib.sha256(labels).hexdigest()
    labels[-1] = (labels[-1] + 1) % 10  # the last test label (past limit_test: the tiny run never reads it)
    (mirror / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(labels)))
    datasets = repo / "gan/core/datasets.py"
    datasets.write_text(datasets.read_text().replace(old_sha, hashlib.sha256(labels).hexdigest()))
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "new checksum")  # code is committed
    before = dvcrun.out_hash("download", repo)

    # gan/core/datasets.py is code every stage imports (through the config): everything reruns, so with a cheap model.
    proc = flow(repo, prefect_server, f"data.mirrors=['file://{mirror}/']", "model.arch=mlp", "train.epochs=1")
    assert flow_result(proc)["ran"][:3] == ["source", "download", "prepare"]
    after = dvcrun.out_hash("download", repo)
    assert after != before
    assert f"dataset fashion-mnist changed: emitted {DATASET_CHANGED}" in proc.stderr
    run_id = flow_run_id(proc)
    assert history(repo)[-1]["flow_run_id"] == run_id

    deadline = time.monotonic() + 60  # the server stores events asynchronously
    while not (events := dataset_changed_events(prefect_server, "fashion-mnist", run_id)):
        if time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(events) == 1, events  # this run's, exactly one
    ev = events[0]
    assert ev.resource.id == "gan.dataset.fashion-mnist"
    assert ev.payload == {"dataset": "fashion-mnist", "md5": after, "previous_md5": before}
    assert f"prefect.flow-run.{run_id}" in {r.id for r in ev.related}


def test_a_run_that_waited_for_the_lock_reads_params_after_it(completed_run, prefect_server):
    """params.yaml changed while a run waited for the lock: the run uses the new values, not the ones it saw first."""
    repo, _, _ = completed_run
    params_path = repo / "params.yaml"
    env = {**prefect_server.env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    with FileLock(str(repo / LOCK)):
        proc = subprocess.Popen([sys.executable, "-m", "flows.pipeline", "--json"], cwd=repo, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        err: list[str] = []
        waiting = threading.Event()

        def read_stderr():
            for line in proc.stderr:
                err.append(line)
                if "waiting up to" in line:
                    waiting.set()

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        assert waiting.wait(timeout=120), "".join(err)  # it has read (and checked) params.yaml, and waits
        params = yaml.safe_load(params_path.read_text())
        params["promote"]["margin"] = 0.5  # read by the flow itself (the gate), not by a DVC stage
        params["export"]["n_png"] += 1  # a stage to run, so that the gate runs
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    out = proc.stdout.read()
    assert proc.wait(timeout=600) == 0, "".join(err)
    reader.join(timeout=10)
    result = json.loads(out[out.index("{") :])
    assert result["ran"] == ["export"]
    # The gate decided with the margin read after the wait (the old one is 0.02). The champion and the candidate
    # are the same model here, so the paired gate keeps the champion whatever the margin: its reason cannot say it.
    assert result["decision"]["margin"] == 0.5
    assert result["decision"]["reason"].startswith("no significant difference: champion kept")


def test_run_on_the_ephemeral_api_logs_no_error(completed_run, tmp_path):
    """No PREFECT_API_URL (what ./run.sh does by default), offline: no telemetry ERROR from Prefect's server.

    Prefect's ephemeral server logs an ERROR where its telemetry host cannot be reached. The run is made offline
    for that host whatever the network (HTTPS through a proxy that refuses every connection; the ephemeral API
    itself is plain HTTP on localhost), so the test fails wherever the flow lets the server send telemetry."""
    repo, _, _ = completed_run
    drop = ("PREFECT_API", "PREFECT_SERVER_ANALYTICS", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env |= {"HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "localhost,127.0.0.1", "no_proxy": "localhost,127.0.0.1"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    proc = run([sys.executable, "-m", "flows.pipeline"], repo, env=env)
    assert "ERROR" not in proc.stdout + proc.stderr, proc.stderr
    assert "nothing changed" in proc.stdout


def test_failing_stage_fails_the_flow(tmp_path, prefect_server):
    require_debian_fashion_mnist()
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA to make the train stage fail")
    repo = copy_repo(tmp_path / "repo", [*FLOW_TINY, "train.device=cuda"])
    proc = flow(repo, prefect_server, check=False)
    assert proc.returncode == 1
    run_id = flow_run_id(proc)
    with prefect_server.client() as c:
        assert c.read_flow_run(UUID(run_id)).state.is_failed(), "the flow run is not marked Failed"
    states = task_runs(prefect_server, run_id)
    # train.device is also the classifier's device: the classifier stage is the first to fail.
    assert states == {"source": "COMPLETED", "download": "COMPLETED", "prepare": "COMPLETED", "classifier": "FAILED"}
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


def test_prefect_ui_shows_the_run_in_a_real_browser(completed_flow, prefect_server):
    """Headless Debian Chromium on the real server's UI: stages, progress, metrics table, and the report's pictures
    (sample grid, closest generated/training pairs, samples by class)."""
    if not Path(CHROMIUM).exists():
        msg = "Debian chromium missing: apt-get install -y chromium"
        pytest.fail(msg) if os.environ.get("GAN_REQUIRE_REAL_DATA") == "1" else pytest.skip(msg)
    from playwright.sync_api import expect, sync_playwright

    _, run_id, _ = completed_flow
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
        # ... then the memorisation check's closest pairs, one row per class and the training curves, each decoded
        # (rendered offline)
        expect(page.locator("img[src^='data:image/png;base64,']")).to_have_count(4)
        for alt in ("closest generated/training pairs", "samples by class", "training curves"):
            picture = page.locator(f"img[alt='{alt}']").first
            picture.scroll_into_view_if_needed()
            expect(picture).to_be_visible(timeout=30_000)
            assert picture.evaluate("img => img.naturalWidth") > 0, alt
        expect(page.get_by_text("Closest to a training image (memorisation check)").first).to_be_visible()
        expect(page.get_by_text("PROMOTED to champion").first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS_DIR / "prefect-report.png"), full_page=True)
        browser.close()


def test_two_runs_at_once_do_not_corrupt_the_workspace(completed_run, prefect_server):
    repo, _, _ = completed_run
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["export"]["n_png"] += 1  # a stage to run
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    runs = len(history(repo))
    env = {**prefect_server.env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "flows.pipeline", "--json"]
    procs = [subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    ran = sorted(tuple(json.loads(out[out.index("{") :])["ran"]) for out, _ in outs)
    # One did the work; the other waited, then found it all current.
    assert ran == [(), ("export",)]
    assert dvcrun.is_current(None, repo)  # all but the `source` watcher, which always runs
    assert len(history(repo)) == runs + 1
    assert git(repo, "status", "--porcelain") == ""


def test_a_failed_push_or_a_refused_commit_fails_the_run_and_loses_nothing(completed_run, prefect_server, tmp_path):
    repo, _, _ = completed_run
    n_png = yaml.safe_load((repo / "params.yaml").read_text())["export"]["n_png"]

    # ---- the remote is broken (for this clone only: .dvc/config.local): the run commits, then its push fails
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the remote's folder should be")
    run(["dvc", "remote", "modify", "--local", "local", "url", str(blocker / "remote")], repo)
    proc = flow(repo, prefect_server, f"export.n_png={n_png + 1}", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "dvc push to remote 'local'" in out and "Not a directory" in out
    assert "the next run pushes what is missing" in out
    run_id = flow_run_id(proc)
    states = task_runs(prefect_server, run_id)
    assert (states["export"], states["git-commit"], states["dvc-push"]) == ("COMPLETED", "COMPLETED", "FAILED")
    assert f"({run_id})" in git(repo, "log", "-1", "--format=%B") and git(repo, "status", "--porcelain") == ""

    # ---- fixed: the next run has nothing to retrain, and pushes what is missing
    (repo / ".dvc/config.local").unlink()
    assert json.loads(run(["dvc", "status", "--cloud", "--json"], repo).stdout)  # the new samples are not there
    again = flow_result(flow(repo, prefect_server))
    assert again["ran"] == [] and re.fullmatch(r"\d+ files? pushed", again["pushed"]["message"])
    assert json.loads(run(["dvc", "status", "--cloud", "--json"], repo).stdout) == {}

    # ---- switched off: nothing committed, nothing pushed
    head = git(repo, "rev-parse", "HEAD")
    off = flow_result(flow(repo, prefect_server, "promote.commit=false", "promote.push=false",
                           f"export.n_png={n_png + 2}"))  # fmt: skip
    assert off["ran"] == ["export"] and off["recorded"] is None and "pushed" not in off
    assert "not committed (promote.commit: false); not pushed (promote.push: false)" in off["summary"]
    assert git(repo, "rev-parse", "HEAD") == head
    assert "M params.yaml" in git(repo, "status", "--porcelain")  # left for a later commit

    # ---- uncommitted stage code: the commit is refused, the push still runs, the run fails
    export = repo / "gan/outputs/export.py"
    export.write_text(export.read_text() + "\n# a local tweak\n")
    proc = flow(repo, prefect_server, "promote.commit=true", "promote.push=true", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "uncommitted edits to files the stages depend on: gan/outputs/export.py" in out
    run_id = flow_run_id(proc)
    states = task_runs(prefect_server, run_id)
    assert (states["export"], states["git-commit"], states["dvc-push"]) == ("COMPLETED", "FAILED", "COMPLETED")
    assert "**Recorded:** NOT committed: uncommitted edits" in artifacts(prefect_server, run_id)["gan-report"].data
    assert git(repo, "rev-parse", "HEAD") == head
