"""The sweep report: every trial in one table sorted by the ranking metric, their sample grids side by side, the
probe curves of all trials in one plot. Markdown with the pictures inlined (the Prefect artifact), also written
as files (`write_report`). Before a sweep runs: its plan (`plan_lines`, what `--dry-run` prints).
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from gan.core import metric_keys as keys
from gan.core.atomic import write_bytes, write_text
from gan.core.sweepfile import Trial
from gan.outputs.pictures import QUALITY_PANEL, curves_figure, tsv_columns


@dataclass(frozen=True)
class TrialRow:
    """One trial as the report shows it: finished (metrics, summary, curve, grid) or failed (reason)."""

    label: str
    name: str  # the DVC experiment
    settings: dict
    metrics: dict | None = None
    train_summary: dict | None = None
    quality: str = ""  # quality.tsv text
    grid_png: bytes = b""
    reason: str = ""  # why it failed
    ran_now: bool = True  # False: finished in an earlier sweep run (skipped)


def _settings(settings: dict) -> str:
    """KEY=VALUE, ... as params.yaml writes the values (true, not True)."""
    return ", ".join(f"{k}={json.dumps(v) if isinstance(v, bool) or v is None else v}" for k, v in settings.items())


@dataclass(frozen=True)
class PlanView:
    """What a sweep's plan shows: the sweep, where it runs, its trials (each: name, own settings, budget)."""

    sweep: str
    source: str  # the sweep file
    repo: str  # the workspace
    head: str  # its commit
    workspace: str  # what the sweep file says it is written for ("" = not said)
    metric: str
    base: dict  # what every trial sets
    shared: list[str]  # the stages run once, in the workspace
    per_trial: list[str]  # the stages each trial runs
    cluster: str  # where the trials would run
    trials: list[Trial]


def plan_lines(view: PlanView) -> list[str]:
    """The plan as `python -m flows.sweep FILE --dry-run` prints it: a header, then one line per trial (its
    experiment name, its own settings, its budget), then "dry run: nothing was run"."""
    lines = [
        f"sweep {view.sweep} ({view.source}) in {view.repo} at {view.head[:10]}: {len(view.trials)} trial(s), ranked "
        f"by {view.metric}",
        *([f"written for: {view.workspace}"] if view.workspace else []),
        f"every trial sets: {_settings(view.base) or '(nothing beyond its own settings)'}",
        f"shared stages (once, in the workspace): {', '.join(view.shared)}; each trial runs "
        f"{', '.join(view.per_trial)} in a clone of its own",
        f"trials run on: {view.cluster}",
    ]
    names = max(len(t.name) for t in view.trials)
    own = max(len(_settings(t.own) or "(base settings)") for t in view.trials)
    for t in view.trials:
        lines.append(f"  {t.name:<{names}}  {_settings(t.own) or '(base settings)':<{own}}  budget: {t.budget}")
    lines.append("dry run: nothing was run")
    return lines


def plan_json(view: PlanView) -> dict:
    """The plan as `--dry-run --json` prints it."""
    return {"sweep": view.sweep, "file": view.source, "repo": view.repo, "head": view.head,
            "workspace": view.workspace, "metric": view.metric, "base": view.base, "shared_stages": view.shared,
            "trial_stages": view.per_trial, "cluster": view.cluster,
            "trials": [{"name": t.name, "label": t.label, "settings": t.own, "budget": t.budget,
                        "overrides": t.overrides} for t in view.trials]}  # fmt: skip


def _num(value, spec: str = ".4g") -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def ranked(rows: list[TrialRow], metric: str) -> list[TrialRow]:
    """Finished trials by the metric (lower is better; a NaN or missing value after every number), then the failed
    ones."""

    def value(r: TrialRow) -> tuple[bool, float]:
        v = r.metrics.get(metric)
        v = float(v) if isinstance(v, int | float) else math.nan
        return (math.isnan(v), v if not math.isnan(v) else 0.0)

    ok = sorted((r for r in rows if r.metrics is not None), key=value)
    return ok + [r for r in rows if r.metrics is None]


def table_rows(rows: list[TrialRow], metric: str) -> list[dict]:
    """The table: rank, trial, metric, its floor and 95 % interval, precision/recall in the metric's features,
    steps, training seconds, what the trial sets, and its status."""
    extractor = keys.extractor_of(metric)
    out = []
    for rank, r in enumerate(ranked(rows, metric), 1):
        m, s = r.metrics or {}, r.train_summary or {}
        ci = m.get(keys.ci95(metric))
        out.append({
            "rank": rank if r.metrics is not None else "—",
            "trial": r.label,
            metric: _num(m.get(metric)),
            "floor": _num(m.get(keys.floor(metric))),
            "95% interval": f"{ci[0]:.4g}–{ci[1]:.4g}" if isinstance(ci, list) and len(ci) == 2 else "—",
            "precision": _num(m.get(f"precision_{extractor}"), ".3f"),
            "recall": _num(m.get(f"recall_{extractor}"), ".3f"),
            "steps": s.get("steps", "—"),
            "train s": _num(s.get("seconds"), ".0f"),
            "settings": _settings(r.settings) or "(base)",
            "status": ("failed: " + r.reason.splitlines()[0][:160]) if r.metrics is None else
                      ("ran" if r.ran_now else "finished earlier"),
            "experiment": r.name,
        })  # fmt: skip
    return out


def _markdown_table(rows: list[dict]) -> str:
    if not rows:
        return "(no trials)\n"
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[h]).replace("|", "/") for h in head) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def grids_picture(rows: list[TrialRow], metric: str, per_row: int = 4) -> bytes:
    """Each finished trial's sample grid, side by side in rank order, titled with its rank, label and metric."""
    done = [r for r in ranked(rows, metric) if r.grid_png]
    cols = max(1, min(per_row, len(done)))
    lines = max(1, math.ceil(len(done) / cols))
    fig = Figure(figsize=(3.2 * cols, 3.5 * lines), dpi=100, layout="constrained")
    axes = np.atleast_1d(fig.subplots(lines, cols, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    for k, (ax, r) in enumerate(zip(axes, done, strict=False), 1):
        ax.imshow(np.asarray(Image.open(io.BytesIO(r.grid_png)).convert("RGB")))
        ax.set_title(f"{k}. {r.label}\n{metric} {_num(r.metrics.get(metric))}", fontsize=8)
    return _png(fig)


def curves_png(rows: list[TrialRow]) -> bytes | None:
    """The probe's score during training (quality.tsv) of every trial that has one, in one plot; None if none."""
    series = {}
    for r in rows:
        cols = tsv_columns(r.quality)
        if len(cols.get("step", ())) and "fd" in cols:
            series[r.label] = (cols["step"], cols["fd"])
    if not series:
        return None
    return _png(curves_figure([(QUALITY_PANEL, series)], ylabels={QUALITY_PANEL: "FD"}))


def _inline(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def report_markdown(sweep: str, rows: list[TrialRow], metric: str, machine: str, promoted: str = "") -> str:
    """The report page; `promoted`: a line on the best trial's gate decision (with --promote)."""
    ok = [r for r in rows if r.metrics is not None]
    failed = [r for r in rows if r.metrics is None]
    parts = [
        f"# Sweep `{sweep}`",
        f"{len(ok)} trial(s) finished, {len(failed)} failed; ranked by **{metric}** (lower is better) beside its "
        f"real-vs-real floor. Trials ran on: {machine}.",
        promoted,
        "## Trials",
        _markdown_table(table_rows(rows, metric)),
    ]
    for r in failed:
        parts.append(f"**{r.label} failed:**\n\n```\n{r.reason[-2000:]}\n```")
    if ok:
        parts += ["## Samples (rank order)", _inline(grids_picture(rows, metric), "sample grids")]
    curves = curves_png(rows)
    if curves:
        parts += ["## Quality during training (every trial's probe)", _inline(curves, "probe curves")]
    parts.append("Every trial is a DVC experiment: `dvc exp show`; bring one into the workspace with "
                 "`dvc exp apply NAME && dvc pull` (its outputs are on the DVC remote), or "
                 "`dvc exp branch NAME BRANCH`.")  # fmt: skip
    return "\n\n".join(p for p in parts if p) + "\n"


def write_report(folder: Path, sweep: str, rows: list[TrialRow], metric: str, machine: str, promoted: str = ""
                 ) -> Path:  # fmt: skip
    """report.md (pictures inlined), grids.png, curves.png and trials.json (each trial's settings, metrics and
    training summary, for tables across sweeps: bench/sweep_table.py) in `folder`; returns report.md's path."""
    folder.mkdir(parents=True, exist_ok=True)
    trials = [
        {
            "label": r.label,
            "experiment": r.name,
            "settings": r.settings,
            "metrics": r.metrics,
            "train_summary": r.train_summary,
            "failed": r.reason or None,
        }
        for r in ranked(rows, metric)
    ]
    write_text(folder / "trials.json", json.dumps({"sweep": sweep, "metric": metric, "machine": machine,
                                                   "trials": trials}, indent=1) + "\n")  # fmt: skip
    if any(r.grid_png for r in rows):
        write_bytes(folder / "grids.png", grids_picture(rows, metric))
    curves = curves_png(rows)
    if curves:
        write_bytes(folder / "curves.png", curves)
    path = folder / "report.md"
    write_text(path, report_markdown(sweep, rows, metric, machine, promoted))
    return path
