"""The Prefect flow: one task per DVC stage, then the champion/challenger gate.

Wiring only. Each stage task asks DVC whether the stage is current; if not it
runs `dvc repro --single-item STAGE` (so dvc.lock records it exactly as
`dvc repro` would) and streams the stage's output to the run logs. Stage logic
is in `gan/`.

    python -m flows.pipeline                       # run on params.yaml; ends with a short summary
    python -m flows.pipeline train.epochs=3        # with overrides (validated, then saved to params.yaml)
    python -m flows.pipeline --json                # the run's result as JSON instead of the summary

Exit status: 0 done, 1 failed, 2 bad settings (like the `python -m gan` stage commands).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from filelock import FileLock, Timeout
from prefect import flow, get_run_logger, runtime, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.tasks import exponential_backoff

from flows.notify import DATASET_CHANGED, dataset_resource
from gan.core.config import AUTO_METRIC, ConfigError, Params, auto_metric, load_params, save_overrides
from gan.core.length import describe_trained
from gan.core.paths import PATHS, Paths
from gan.lifecycle import dvcrun, gitrepo, versions
from gan.lifecycle.champion import Decision, read_record, summary_lines
from gan.lifecycle.gate import history_row, run_gate
from gan.outputs.metric_table import summary_rows
from gan.outputs.report import report_markdown

REPO = Path(__file__).resolve().parents[1]
CHAMPION_DIR = PATHS.champion
HISTORY = PATHS.history
LOCK = ".gan-pipeline.lock"
ARTIFACT_KEYS = {
    "progress": "gan-training-progress",
    "metrics": "gan-metrics",
    "history": "gan-run-history",
    "report": "gan-report",
}
DIFF_LIMIT = 25  # metric rows of the diff against the previous champion in the report


class WorkspaceBusy(RuntimeError):
    """Another pipeline run holds this workspace."""


class RecordFailed(RuntimeError):
    """The run's commit was refused and its push failed; the message carries both reasons."""


def _run_stage(stage: str, repo: str, all_current: bool = False, watch: bool = False) -> dict:
    """`dvc repro --single-item STAGE`: DVC runs the stage unless it finds it up to date. `all_current`: DVC said so
    of the whole pipeline, it is not asked again. `watch`: a stage dvc.yaml marks always_changed (it always runs)."""
    logger = get_run_logger()
    if all_current and not watch:
        logger.info("stage %r is up to date according to DVC: skipped", stage)
        return {"stage": stage, "ran": False}
    before = dvcrun.out_hash(stage, repo)
    progress_id = None
    last = {"t": 0.0, "log": 0.0}

    def on_progress(n: int, total: int) -> None:
        nonlocal progress_id
        now = time.monotonic()
        if stage != "train":
            return
        if progress_id is None:
            progress_id = create_progress_artifact(
                0.0, key=ARTIFACT_KEYS["progress"], description="Training steps done (%)"
            )
        if now - last["t"] >= 2 or n == total:
            update_progress_artifact(progress_id, 100.0 * n / max(total, 1))
            last["t"] = now
        if now - last["log"] >= 30 or n == total:  # the share of the run: toward its planned length or time budget
            logger.info("train: %.0f%% of the run done", 100.0 * n / max(total, 1))
            last["log"] = now

    t0 = time.perf_counter()
    if not dvcrun.repro_stage(stage, repo, on_line=logger.info, on_progress=on_progress):
        logger.info("stage %r is up to date according to DVC: skipped", stage)
        return {"stage": stage, "ran": False}
    after = dvcrun.out_hash(stage, repo)
    logger.info("stage %r done in %.1f s", stage, time.perf_counter() - t0)
    return {
        "stage": stage,
        "ran": True,
        "seconds": round(time.perf_counter() - t0, 2),
        "changed_output": before != after,
        "previous_output": before,
    }


run_stage = task(_run_stage, name="stage", cache_policy=NO_CACHE)
# Mirrors flake out: the download stage retries with exponential backoff.
download_stage = task(
    _run_stage, name="download", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=exponential_backoff(10)
)


@task(name="champion-gate", cache_policy=NO_CACHE)
def champion_gate(repo: str, params: Params) -> dict:
    """Re-score the champion with today's evaluation setup, compare, promote only if better (`run_gate`)."""
    return run_gate(Path(repo), params, str(runtime.flow_run.id or ""), get_run_logger())


def _report(repo: Path, gate: dict, history_rows: list[dict], recorded: str = "", changes: str = "") -> None:
    """The run's artifacts: the metrics table, the run history, and the report (`report_markdown`)."""
    cand, champ = gate["candidate"], gate["champion"] or {}
    champ_rows = {r["metric"]: r["value"] for r in summary_rows(champ)}
    create_table_artifact(
        [{"metric": r["metric"], "this_run": r["value"], "champion": champ_rows.get(r["metric"], "—"),
          "real_vs_real_floor": r["floor"]} for r in summary_rows(cand)],
        key=ARTIFACT_KEYS["metrics"],
        description="This run beside the champion (re-scored on the same setup) and the real-vs-real floor",
    )  # fmt: skip
    create_table_artifact(
        history_rows[-50:], key=ARTIFACT_KEYS["history"], description=f"Past runs ({HISTORY}, pandas-readable CSV)"
    )
    create_markdown_artifact(report_markdown(repo, gate, recorded, changes), key=ARTIFACT_KEYS["report"],
                             description="Samples, decision, files")  # fmt: skip


def _flow_run_label() -> str:
    return f"{runtime.flow_run.name} ({runtime.flow_run.id})"


@task(name="git-commit", cache_policy=NO_CACHE)
def commit_task(repo: str, params_sha: str, run: dict | None) -> dict:
    """Commit the pipeline's own files and tag a new champion; refused, with the reason, when inconsistent."""
    logger = get_run_logger()
    rec = versions.record_run(Path(repo), _flow_run_label(), params_sha, run)
    logger.info("git: %s%s", rec.note, f" ({rec.commit[:10]})" if rec.commit else "")
    if rec.left_uncommitted:
        logger.warning("left uncommitted (not the pipeline's files): %s", ", ".join(rec.left_uncommitted))
    return rec.as_dict()


@task(name="dvc-push", cache_policy=NO_CACHE)
def push_task(repo: str) -> dict:
    """`dvc push` to the default remote; a failure fails this task with DVC's reason and a hint."""
    logger = get_run_logger()
    pushed = versions.push(Path(repo))
    remote = pushed.remote
    if remote.created:
        logger.warning("no DVC remote was configured: set up %r at %s (in .dvc/config.local); for S3/GCS/SSH see "
                       "docs/versions.md (DVC remote)", remote.name, remote.url)  # fmt: skip
    if remote.shared_from:
        logger.info("a clone of %s: pushing to its DVC remote %s (recorded in .dvc/config.local)", remote.shared_from,
                    remote.url)  # fmt: skip
    logger.info("dvc push to %r (%s): %s", remote.name, remote.url, pushed.message)
    return {"remote": remote.name, "url": remote.url, "created": remote.created, "shared_from": remote.shared_from,
            "message": pushed.message}  # fmt: skip


def _changes_since_champion(repo: str, metric: str, logger) -> str:
    """The report's diff against the newest champion tag (before this run tags its own); "" without one."""
    from gan.lifecycle.rundiff import diff_against, markdown

    tags = gitrepo.champion_tags(repo) if gitrepo.is_repo(repo) else []
    if not tags:
        return ""
    try:
        return markdown(diff_against(repo, tags[0]), first=metric, limit=DIFF_LIMIT)
    except (dvcrun.StageFailed, gitrepo.GitError) as err:  # the report goes on without it; say why
        logger.warning("could not compare with %s: %s", tags[0], err)
        return f"(could not compare with `{tags[0]}`: {err})\n"


def _recorded_line(rec: dict | BaseException | None, pushed: bool) -> str:
    if rec is None:
        text = "not committed (promote.commit: false)"
    elif isinstance(rec, BaseException):
        text = f"NOT committed: {rec}"
    elif rec["commit"]:
        text = f"commit `{rec['commit'][:10]}`" + (f", tag `{rec['tag']}`" if rec["tag"] else "")
    else:
        text = rec["note"]
    return text + ("; then `dvc push` (task dvc-push)" if pushed else "; not pushed (promote.push: false)")


def _emit_dataset_changed(dataset: str, previous_md5: str, repo: str, logger) -> None:
    payload = {"dataset": dataset, "md5": dvcrun.out_hash("download", repo), "previous_md5": previous_md5}
    emit_event(DATASET_CHANGED, resource=dataset_resource(dataset), payload=payload)
    logger.info("dataset %s changed: emitted %s", dataset, DATASET_CHANGED)


def _unchanged_summary(repo: Path, metric: str) -> list[str]:
    champion_metrics = (read_record(repo / CHAMPION_DIR) or {}).get("metrics") or {}
    metric = auto_metric(champion_metrics) if metric == AUTO_METRIC else metric
    value = champion_metrics.get(metric)
    champion = "none yet" if value is None else f"{value:.4g}"
    return ["nothing changed: every stage is up to date", f"champion {metric}: {champion}", *_files_lines(repo)]


def _files_lines(repo: Path) -> list[str]:
    return [
        f"samples: {Paths(repo).grid}; model card: {Paths(repo).samples / 'MODEL_CARD.md'}",
        f"champion: {repo / CHAMPION_DIR}/; run history: {repo / HISTORY}",
    ]


def acquire(lock: FileLock, path: Path, timeout: float, logger) -> None:
    try:
        lock.acquire(timeout=0)
        return
    except Timeout:
        logger.info("another gan-pipeline run holds %s: waiting up to %.0f s for it", path, timeout)
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise WorkspaceBusy(
            f"another gan-pipeline run holds {path}; waited {timeout:.0f} s. "
            "Wait for it to finish (or raise lock_timeout)."
        ) from None


def conclude_run(repo: str, params: Params, params_sha: str, ran: list[str]) -> dict:
    """After the stages: the gate (when any stage ran), the history row, the git commit (a tag for a new
    champion), the report artifacts and `dvc push`. Also the end of a sweep's --promote (its best trial applied)."""
    logger = get_run_logger()
    p = params.promote
    if not ran:
        logger.info("nothing changed: every stage is up to date, champion unchanged")
        result = {"ran": [], "promoted": False, "summary": _unchanged_summary(Path(repo), p.metric)}
        row = None
    else:
        from gan.lifecycle.history import append_run  # pandas: only when a stage ran

        gate = champion_gate(repo, params)
        train_summary = json.loads(Paths(Path(repo)).train_summary.read_text())
        row = history_row(gate, params, ran, train_summary)
        row["flow_run_name"] = str(runtime.flow_run.name or "")
        history = append_run(Path(repo) / HISTORY, row)
        dvcrun.dvc(["add", str(HISTORY.parent)], repo)
        changes = _changes_since_champion(repo, gate["decision"]["metric"], logger)
        summary = [f"training: {describe_trained(train_summary)}", *summary_lines(Decision(**gate["decision"]),
                   gate["candidate"]), *_files_lines(Path(repo))]  # fmt: skip
        result = {"ran": ran, "promoted": gate["decision"]["promote"], "decision": gate["decision"],
                  "summary": summary}  # fmt: skip
    # ---- record: a git commit of the pipeline's files (a tag for a new champion), then `dvc push`
    rec_state = commit_task(repo, params_sha, row, return_state=True) if p.commit else None
    rec = None if rec_state is None else rec_state.result(raise_on_failure=False)
    if ran:
        _report(Path(repo), gate, history.to_dict("records"), _recorded_line(rec, p.push), changes)
    result["recorded"] = None if isinstance(rec, BaseException) else rec
    result["summary"].append(_recorded_line(rec, p.push).replace("`", ""))
    pushed = push_task(repo, return_state=True).result(raise_on_failure=False) if p.push else None
    if isinstance(pushed, dict):
        result["pushed"] = pushed
        result["summary"].append(f"dvc push: {pushed['message']} ({pushed['url']})")
    # A refused commit or a failed push fails the run (the refusal first: the push often fails for its reason).
    failures = [e for e in (rec, pushed) if isinstance(e, BaseException)]
    if failures:
        raise failures[0] if len(failures) == 1 else RecordFailed(" | ".join(map(str, failures)))
    return result


@flow(name="gan-pipeline", log_prints=True)
def gan_pipeline(overrides: list[str] | None = None, repo: str | None = None, lock_timeout: float = 600.0) -> dict:
    """Bring the DVC pipeline up to date, stage by stage, then gate the champion."""
    logger = get_run_logger()
    repo = str(Path(repo or REPO).resolve())
    params_path = Path(repo) / "params.yaml"
    load_params(params_path, overrides)  # a bad setting fails here, before waiting or any task
    lock = FileLock(str(Path(repo) / LOCK))
    acquire(lock, Path(repo) / LOCK, lock_timeout, logger)
    try:
        # Read params (again) under the lock: a run that waited uses params.yaml as the previous run left it.
        if overrides:
            params = save_overrides(params_path, overrides)
            logger.info("saved overrides to params.yaml: %s", overrides)
        else:
            params = load_params(params_path)
        params_sha = versions.params_digest(Path(repo))  # the commit is refused if the file changes during the run
        stages = dvcrun.stage_names(repo)
        # First look at the source (a folder may have gained images), then one `dvc status` for the common
        # nothing-changed case.
        watch = dvcrun.watch_stages(repo)  # count as a change only when their output differs
        results = [run_stage.with_options(name=s)(s, repo, watch=True) for s in stages if s in watch]
        all_current = dvcrun.is_current(None, repo)
        for stage in (s for s in stages if s not in watch):
            runner = download_stage if stage == "download" else run_stage.with_options(name=stage)
            res = runner(stage, repo, all_current)
            results.append(res)
            if stage == "download" and res["ran"] and res["changed_output"] and res["previous_output"]:
                _emit_dataset_changed(params.data.dataset, res["previous_output"], repo, logger)
        ran = [r["stage"] for r in results if r["ran"] and (r["stage"] not in watch or r["changed_output"])]
        return conclude_run(repo, params, params_sha, ran)
    finally:
        lock.release()


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m flows.pipeline", description="Run the GAN pipeline as a Prefect flow.")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="params.yaml overrides, e.g. train.epochs=3")
    ap.add_argument("--lock-timeout", type=float, default=600.0, help="seconds to wait for another run (default 600)")
    ap.add_argument("--json", action="store_true", help="print the run's result as JSON instead of a summary")
    args = ap.parse_args(argv)
    # Prefect's ephemeral API (no PREFECT_API_URL) would send usage telemetry, and log an ERROR when offline.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    state = gan_pipeline(overrides=args.overrides or None, lock_timeout=args.lock_timeout, return_state=True)
    if not state.is_completed():
        print(f"flow run {state.name}: {state.message}", file=sys.stderr)
        # A bad setting exits 2, like the `python -m gan` stage commands; any other failure 1.
        return 2 if isinstance(state.result(raise_on_failure=False), ConfigError) else 1
    result = state.result()
    print(json.dumps(result, indent=2, default=str) if args.json else "\n".join(result["summary"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
