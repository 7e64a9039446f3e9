"""A sweep as one Prefect flow: the shared stages once, then every trial as a DVC experiment, on Dask.

Wiring only (the machinery is gan/lifecycle/sweep.py, the sweep file gan/core/sweepfile.py, the report and the plan
gan/outputs/sweep_report.py).

    python -m flows.sweep sweeps/ablation-fashion.yaml --dry-run     # check it and print the trial plan; run nothing
    python -m flows.sweep sweeps/ablation-fashion.yaml               # a local Dask cluster (the file's `parallel`)
    python -m flows.sweep sweeps/ablation-fashion.yaml --address tcp://scheduler:8786 --git-remote origin
    python -m flows.sweep sweeps/ablation-fashion.yaml --promote     # the best trial through the champion gate

Exit status: 0 every trial finished (--dry-run: the sweep would start), 1 a trial (or the sweep) failed, 2 the sweep
was refused before anything ran (the sweep file, a trial's setting, the workspace: one paragraph on stderr).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path

from filelock import FileLock
from prefect import flow, get_run_logger, runtime, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect_dask import DaskTaskRunner

from flows.pipeline import LOCK, REPO, acquire, conclude_run, run_stage
from gan.core.config import AUTO_METRIC, ConfigError, auto_metric, load_params, save_overrides
from gan.core.sweepfile import SweepSpec, Trial, load_sweep, one_paragraph
from gan.lifecycle import dvcrun, gitrepo, versions
from gan.lifecycle import sweep as sw
from gan.outputs.sweep_report import PlanView, TrialRow, plan_json, plan_lines, ranked, table_rows, write_report

REPORT_DIR = "sweep-reports"  # <repo>/sweep-reports/<sweep>/ (git-ignored)
ARTIFACT_KEY = "gan-sweep-{}"


def cluster_size(spec: SweepSpec) -> tuple[int, int, bool]:
    """(workers, torch threads per trial, one GPU per worker) of the local cluster: one worker per GPU where there
    are GPUs; else the sweep's `parallel` (0: one trial per core, each with one torch thread: on a 2-core CPU that
    beat one trial at a time with two threads, bench/sweep_speed.py)."""
    import torch

    gpus = torch.cuda.device_count()
    if gpus and not spec.parallel:
        return gpus, spec.threads, True
    cores = os.cpu_count() or 1
    workers = spec.parallel or cores
    return workers, spec.threads or max(1, cores // workers), False


def task_runner(spec: SweepSpec, address: str | None) -> DaskTaskRunner:
    if address:
        return DaskTaskRunner(address=address)
    workers, _, _ = cluster_size(spec)
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": None})  # fmt: skip


@task(name="trial", cache_policy=NO_CACHE)
def trial_task(trial: Trial, base: sw.Baseline, threads: int, one_gpu_each: bool, work_root: str | None) -> dict:
    """One trial on whichever Dask worker runs it: clone, pull, `dvc exp run`, push (`gan.lifecycle.sweep`)."""
    logger = get_run_logger()
    gpu = None
    if one_gpu_each:
        import torch
        from distributed import get_worker

        gpu = int(get_worker().name) % max(1, torch.cuda.device_count())
    logger.info("trial %s: %s", trial.name, trial.own or "(base settings)")
    result = sw.run_trial(trial, base, work_root, sw.trial_env(threads, gpu), logger.info)
    logger.info("trial %s finished in %.0f s: experiment %s", trial.label, result["seconds"], result["commit"][:10])
    return result


def _watch(futures: list, sweep: str, logger, every: float = 2.0) -> None:
    """Wait for every trial, keeping the flow run's progress artifact at the share of trials finished."""
    if not futures:
        return
    progress = create_progress_artifact(0.0, key=ARTIFACT_KEY.format(sweep) + "-progress",
                                        description=f"Sweep {sweep}: trials finished (%)")  # fmt: skip
    pending, finished = list(futures), 0
    while pending:
        now = [f for f in pending if f.wrapped_future.done()]  # the Dask future: done once a (re)run ended
        if now:
            pending = [f for f in pending if f not in now]
            finished += len(now)
            update_progress_artifact(progress, 100.0 * finished / len(futures))
            logger.info("%d of %d trial(s) finished", finished, len(futures))
        else:
            time.sleep(every)
    wait(futures)


def _cluster(spec: SweepSpec, address: str | None) -> str:
    """Where the trials will run, for the plan."""
    if address:
        return f"the Dask cluster at {address} (torch threads per trial: {spec.threads or 'its default'})"
    workers, threads, one_gpu_each = cluster_size(spec)
    each = "one GPU each" if one_gpu_each else f"{threads} torch thread(s) each"
    return f"a local Dask cluster on this machine: {workers} trial(s) at once, {each}"


def _machine(address: str | None) -> str:
    """Where the trials ran, for the report: the remote cluster's address, or this machine's GPU or CPU."""
    if address:
        return f"the Dask cluster at {address}"
    import platform

    import torch

    if torch.cuda.is_available():
        return f"a local Dask cluster, one worker per GPU ({torch.cuda.get_device_name(0)})"
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    return f"a local Dask cluster on {cpu}, {os.cpu_count()} cores"


def _rows(repo: str, trials: list[Trial], done: dict[str, str], commits: dict[str, str],
          ran: set[str], failed: dict[str, str]) -> list[TrialRow]:  # fmt: skip
    rows = []
    for t in trials:
        if t.name in failed:
            rows.append(TrialRow(t.label, t.name, t.own, reason=failed[t.name]))
            continue
        exp = done[t.name]
        rec = sw.read_trial(repo, exp, commits[exp])
        rows.append(TrialRow(t.label, exp, t.own, rec.metrics, rec.train_summary, rec.quality, rec.grid_png,
                             ran_now=t.name in ran))  # fmt: skip
    return rows


@flow(name="gan-sweep", log_prints=True, task_runner=DaskTaskRunner())
def gan_sweep(
    sweep_file: str,
    repo: str | None = None,
    git_remote: str | None = None,
    promote: bool = False,
    threads: int | None = None,
    work_root: str | None = None,
    lock_timeout: float = 600.0,
    address: str | None = None,
) -> dict:
    """The shared stages, then the trials not yet finished from this commit (in parallel), the report, and with
    `promote` the best trial through the champion gate."""
    logger = get_run_logger()
    repo = str(Path(repo or REPO).resolve())
    # ---- the sweep file, the workspace and every trial's settings: refused here, before anything runs
    checked = sw.check_sweep(sweep_file, repo, git_remote, promote, address)
    spec, trials, url = checked.spec, checked.trials, checked.git_url
    logger.info("sweep %s: %d trial(s) of %s", spec.name, len(trials), ", ".join(t.label for t in trials))
    # ---- the shared stages, once, in the workspace; their dvc.lock committed, outputs pushed, HEAD published
    lock = FileLock(str(Path(repo) / LOCK))
    acquire(lock, Path(repo) / LOCK, lock_timeout, logger)
    try:
        watch = dvcrun.watch_stages(repo)
        shared = sw.shared_stages(repo)
        for stage in shared:
            run_stage.with_options(name=stage)(stage, repo, watch=stage in watch)
        if committed := sw.commit_shared_stages(repo, spec.name):
            logger.info("committed what the shared stages changed (%s): %s", ", ".join(committed[1]), committed[0][:10])
        base = sw.publish_baseline(repo, spec.name, url, sw.trial_inputs(repo))
    finally:
        lock.release()
    logger.info("baseline %s published to %s (%s); DVC remote %s", base.commit[:10], url, base.ref, base.dvc_url)
    # ---- the trials not yet finished from this baseline, in parallel
    done = sw.done_trials(trials, sw.finished(base))
    for t in trials:
        if t.name in done:
            logger.info("trial %s: already finished from this commit (experiment %s): not run again", t.label,
                        done[t.name])  # fmt: skip
    todo = [t for t in trials if t.name not in done]
    # a cluster of other machines: each trial uses torch's default there unless the sweep file sets threads
    _, default_threads, one_gpu_each = (0, spec.threads, False) if address else cluster_size(spec)
    futures = [trial_task.with_options(name=f"trial-{t.label}").submit(t, base, threads or default_threads,
               one_gpu_each, work_root) for t in todo]  # fmt: skip
    _watch(futures, spec.name, logger)
    failed: dict[str, str] = {}
    for t, fut in zip(todo, futures, strict=True):
        result = fut.state.result(raise_on_failure=False)
        if isinstance(result, BaseException):
            failed[t.name] = f"{type(result).__name__}: {result}"
            logger.error("trial %s failed: %s", t.label, result)
        else:
            done[t.name] = result["name"]
    # ---- the report: every trial read at its experiment's commit (fetched into this repository)
    sw.fetch_experiments(repo, base, sorted(set(done.values())))
    commits = sw.finished(base)
    rows = _rows(repo, trials, done, commits, {t.name for t in todo}, failed)
    ok = [r for r in rows if r.metrics is not None]
    metric = spec.metric if spec.metric != AUTO_METRIC else auto_metric(ok[0].metrics) if ok else "fid_classifier"
    best = ranked(rows, metric)[0] if ok else None
    refusal = _promotion_refusal(repo, base.commit, best, metric) if promote and best is not None else None
    result = {"sweep": spec.name, "flow_run_id": str(runtime.flow_run.id), "metric": metric, "baseline": base.commit,
              "trials": table_rows(rows, metric),
              "failed": sorted(failed), "ran": [t.name for t in todo if t.name not in failed],
              "skipped": [t.name for t in trials if t.name not in failed and t not in todo],
              "best": best.name if best else None}  # fmt: skip
    # ---- --promote: the best trial into the workspace, through the champion gate, recorded as a normal run is
    promoted = ""
    if refusal:
        logger.error("--promote refused: %s", refusal)
        result["promotion"] = {"refused": refusal}
        promoted = f"**--promote refused:** {refusal}"
    elif promote and best is not None:
        acquire(lock, Path(repo) / LOCK, lock_timeout, logger)
        try:
            if refusal := sw.promotion_refusal(repo, base.commit):  # again, under the lock: a run may have committed
                raise sw.SweepError(f"--promote refused: {refusal}")
            before = sw.snapshot_pipeline_files(repo)
            try:
                run = _retrain_and_gate(repo, best, logger)
            except BaseException:
                if gitrepo.head(repo) == base.commit:  # nothing recorded yet: every file the promotion touched back
                    sw.restore_workspace(repo, before)
                raise
        finally:
            lock.release()
        result["promotion"] = run
        promoted = f"**--promote:** best trial `{best.label}` through the champion gate: {run['decision']['reason']}"
    report = write_report(Path(repo) / REPORT_DIR / spec.name, spec.name, rows, metric, _machine(address), promoted)
    create_markdown_artifact(report.read_text(), key=ARTIFACT_KEY.format(spec.name),
                             description=f"Sweep {spec.name}: trials ranked by {metric}")  # fmt: skip
    create_table_artifact(result["trials"], key=ARTIFACT_KEY.format(spec.name) + "-table",
                          description=f"Sweep {spec.name}: every trial")  # fmt: skip
    result["report"] = str(report)
    result["summary"] = [f"sweep {spec.name}: {len(ok)} finished ({len(result['ran'])} ran now), {len(failed)} "
                         f"failed; best {best.label if best else '—'}", f"report: {report}",
                         *(f"failed: {name}" for name in sorted(failed))]  # fmt: skip
    if promoted:
        result["summary"].append(promoted.replace("**", "").replace("`", ""))
    return result


def _promotion_refusal(repo: str, baseline: str, best: TrialRow, metric: str) -> str | None:
    """Why the best trial may not go through the gate (checked before the lock, and the workspace again under it):
    the workspace moved on (`gan.lifecycle.sweep.promotion_refusal`), the sweep ranked by another metric than the
    gate decides by, or the best trial has no finite value of it."""
    if refusal := sw.promotion_refusal(repo, baseline):
        return refusal
    gate = load_params(Path(repo) / "params.yaml").promote.metric
    gate = auto_metric(best.metrics) if gate == AUTO_METRIC else gate
    if gate != metric:
        return (f"the sweep ranked its trials by {metric}, the champion gate decides by {gate} (promote.metric): the "
                f"best by one need not be the best by the other. Set `metric: {gate}` in the sweep file (its finished "
                "trials are not rerun) and run it again with --promote.")  # fmt: skip
    value = best.metrics.get(metric)
    if not isinstance(value, int | float) or not math.isfinite(value):
        return f"no trial has a finite {metric} (the best has {value}): nothing to promote."
    return None


def _retrain_and_gate(repo: str, best: TrialRow, logger) -> dict:
    """--promote: the best trial's own settings into params.yaml (not the sweep's budget or base keys: the nightly
    run must reproduce what is promoted), its stages run at the pipeline's own length, and that model through the
    champion gate, recorded as a pipeline run is (`conclude_run`)."""
    save_overrides(Path(repo) / "params.yaml", best.settings)
    shown = ", ".join(f"{k}={v}" for k, v in best.settings.items()) or "the base settings"
    logger.info("--promote: %s (%s) into params.yaml, trained at the pipeline's own length", best.label, shown)
    results = [run_stage.with_options(name=s)(s, repo) for s in sw.trial_stages(repo)]
    params = load_params(Path(repo) / "params.yaml")
    return conclude_run(repo, params, versions.params_digest(Path(repo)), [r["stage"] for r in results if r["ran"]])


def runner_for(sweep_file: str | Path, address: str | None = None) -> DaskTaskRunner:
    """The Dask cluster a sweep runs on, sized as `python -m flows.sweep` sizes it (`cluster_size`: the sweep file's
    `parallel`, its threads per trial, one GPU per trial where there are GPUs), or the scheduler at `address`."""
    return task_runner(load_sweep(sweep_file), address)


@flow(name="gan-sweep-deployment", log_prints=True)
def sweep_deployment(sweep_file: str, git_remote: str | None = None, promote: bool = False,
                     work_root: str | None = None, address: str | None = None) -> dict:  # fmt: skip
    """prefect.yaml's sweep deployment: `gan_sweep` (a subflow) on the cluster the CLI would give it, not on
    `gan_sweep`'s default Dask cluster of one worker per core. `sweep_file`: relative to the working directory
    (the deployment's: the workspace)."""
    path = str(Path(sweep_file).resolve())
    return gan_sweep.with_options(task_runner=runner_for(path, address))(
        path, git_remote=git_remote, promote=promote, work_root=work_root, address=address)  # fmt: skip


def _one_api_for_all_workers() -> None:
    """With no PREFECT_API_URL, start Prefect's temporary API here and give its URL to the Dask workers (they
    inherit the environment): else each worker process would start a temporary API of its own on the same
    database, its trials would not show in the flow run, and the databases would lock each other."""
    if os.environ.get("PREFECT_API_URL"):
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start(timeout=int(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")))
    os.environ["PREFECT_API_URL"] = server.api_url


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m flows.sweep", description="Run a sweep as DVC experiments on Dask.")
    ap.add_argument("sweep_file", help="the sweep file (YAML; docs/sweeps.md)")
    ap.add_argument("--address", help="an existing Dask scheduler (tcp://HOST:8786); default: a local cluster")
    ap.add_argument("--git-remote", help="the git remote trials clone from and push to (a remote's name or a URL); "
                    "default: this repository itself (one machine)")  # fmt: skip
    ap.add_argument("--promote", action="store_true", help="the best trial through the champion gate")
    ap.add_argument("--work-root", help="where each worker makes its trial clones (default: its temp folder)")
    ap.add_argument("--json", action="store_true", help="print the result (or with --dry-run the plan) as JSON")
    ap.add_argument("--dry-run", action="store_true", help="check the sweep file and every trial against this "
                    "workspace, print the trial plan, run nothing (exit 0: it would start; 2: refused)")  # fmt: skip
    args = ap.parse_args(argv)
    if args.dry_run:
        os.environ["GIT_OPTIONAL_LOCKS"] = "0"  # `git status` must not even refresh the index
    # ---- everything refused before anything starts (no Dask, no Prefect API): one paragraph, exit 2
    try:
        checked = sw.check_sweep(args.sweep_file, REPO, args.git_remote, args.promote, args.address)
    except ConfigError as err:  # SweepError, or a params.yaml error on its way
        print(f"python -m flows.sweep: {one_paragraph(str(err))}", file=sys.stderr)
        return 2
    spec = checked.spec
    if args.dry_run:
        view = PlanView(spec.name, args.sweep_file, checked.repo, checked.head, spec.workspace, spec.metric, spec.base,
                        checked.shared, checked.per_trial, _cluster(spec, args.address), checked.trials)  # fmt: skip
        print(json.dumps(plan_json(view), indent=2) if args.json else "\n".join(plan_lines(view)))
        return 0
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    _one_api_for_all_workers()
    runner = task_runner(spec, args.address)
    state = gan_sweep.with_options(task_runner=runner)(
        str(Path(args.sweep_file).resolve()), git_remote=args.git_remote, promote=args.promote,
        work_root=args.work_root, address=args.address, return_state=True)  # fmt: skip
    if not state.is_completed():
        print(f"flow run {state.name}: {state.message}", file=sys.stderr)
        return 2 if isinstance(state.result(raise_on_failure=False), ConfigError) else 1
    result = state.result()
    print(json.dumps(result, indent=2, default=str) if args.json else "\n".join(result["summary"]))
    return 1 if result["failed"] or "refused" in (result.get("promotion") or {}) else 0


if __name__ == "__main__":
    raise SystemExit(main())
