"""What changed between a recorded run and the work tree: `dvc params diff` and `dvc metrics diff`, as tables.

The flow puts the difference against the previous champion's tag into its Prefect report; on the command
line the same comes from `dvc params diff TAG` / `dvc metrics diff TAG` (README: Comparing runs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from gan.lifecycle import dvcrun


@dataclass
class RunDiff:
    rev: str
    params: list[tuple[str, object, object]] = field(default_factory=list)  # (key, old, new)
    metrics: list[tuple[str, object, object, object]] = field(default_factory=list)  # (key, old, new, new - old)


def _flat(tree: dict) -> dict:
    """DVC's {file: {key: change}} -> {key: change} (key prefixed by the file where several files report)."""
    many = len(tree) > 1
    return {(f"{f}:{k}" if many else k): v for f, keys in tree.items() for k, v in keys.items()}


def diff_against(root: str | Path, rev: str) -> RunDiff:
    """Settings and metrics of the work tree against those recorded at `rev`."""
    params = json.loads(dvcrun.dvc(["params", "diff", rev, "--json"], root).stdout or "{}")
    metrics = json.loads(dvcrun.dvc(["metrics", "diff", rev, "--json"], root).stdout or "{}")
    return RunDiff(
        rev,
        [(k, v.get("old"), v.get("new")) for k, v in sorted(_flat(params).items())],
        [(k, v.get("old"), v.get("new"), v.get("diff")) for k, v in sorted(_flat(metrics).items())],
    )


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else ("—" if v is None else str(v))


def markdown(diff: RunDiff, first: str = "", limit: int = 25) -> str:
    """Two tables (settings, metrics); `first`: a metric to list first (the gate's); at most `limit` metric rows."""
    lines = [f"Against `{diff.rev}` (`dvc params diff {diff.rev}`, `dvc metrics diff {diff.rev}`).", ""]
    if diff.params:
        lines += ["| setting | then | now |", "|---|---|---|"]
        lines += [f"| {k} | {_fmt(old)} | {_fmt(new)} |" for k, old, new in diff.params]
    else:
        lines.append("Settings: unchanged.")
    lines.append("")
    rows = sorted(diff.metrics, key=lambda r: (not r[0].endswith(first) if first else True, r[0]))
    if rows:
        lines += ["| metric | then | now | change |", "|---|---|---|---|"]
        lines += [f"| {k} | {_fmt(o)} | {_fmt(n)} | {_fmt(d)} |" for k, o, n, d in rows[:limit]]
        if len(rows) > limit:
            lines.append(f"\n… and {len(rows) - limit} more (`dvc metrics diff {diff.rev}`).")
    else:
        lines.append("Metrics: unchanged.")
    return "\n".join(lines) + "\n"
