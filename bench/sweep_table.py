"""One sweep's reports from several workspaces, side by side: which trial wins on most folders, not on one.

    python bench/sweep_table.py recipes bench-output/folders/emoji32-1k bench-output/folders/emoji32 \\
        bench-output/folders/fashion32 [--metric fid_judge]

Reads WORKSPACE/sweep-reports/SWEEP/trials.json (written by `python -m flows.sweep`) of each workspace and prints one
row per trial, one column per workspace: the metric over its real-vs-real floor (1 = indistinguishable from real
images), recall in the same features in brackets, and the steps trained. Then, per trial, the folders where it is
clearly better than the `default` trial and where clearly worse: its 95 % bootstrap interval entirely below (above)
the default's (the metric's sampling noise; a second training seed would add its own).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def fmt(v, spec: str = ".3g") -> str:
    return format(v, spec) if isinstance(v, int | float) else "—"


def load(ws: Path, sweep: str) -> dict:
    path = ws / "sweep-reports" / sweep / "trials.json"
    if not path.exists():
        raise SystemExit(f"{path}: missing; run `python -m flows.sweep sweeps/{sweep}.yaml` in {ws} first")
    return json.loads(path.read_text())


def beats(a: dict, b: dict, metric: str) -> bool:
    ci_a, ci_b = a["metrics"].get(f"{metric}_ci95"), b["metrics"].get(f"{metric}_ci95")
    return bool(ci_a and ci_b) and ci_a[1] < ci_b[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", help="the sweep's name (its file's `name:`)")
    ap.add_argument("workspaces", nargs="+", type=Path)
    ap.add_argument("--metric", default="fid_judge", help="the metrics.json distance (default: the judge's FD)")
    ap.add_argument("--baseline", default="default", help="the trial the others are compared with")
    args = ap.parse_args()
    reports = {ws.name: load(ws, args.sweep) for ws in args.workspaces}
    labels = list(dict.fromkeys(t["label"] for r in reports.values() for t in r["trials"]))
    at = {(ws, t["label"]): t for ws, r in reports.items() for t in r["trials"] if t["metrics"]}
    m = args.metric
    print(f"machines: {'; '.join(sorted({r['machine'] for r in reports.values()}))}\n")
    print(f"{m} / its real-vs-real floor (recall in the same features), steps; lower is better, 1 = real\n")
    print("| trial | " + " | ".join(reports) + " |\n|---|" + "---|" * len(reports))
    for label in labels:
        cells = []
        for ws in reports:
            t = at.get((ws, label))
            if t is None:
                cells.append("failed" if any(x["label"] == label for x in reports[ws]["trials"]) else "—")
                continue
            tm, floor = t["metrics"], t["metrics"].get(f"{m}_floor") or float("nan")
            recall = tm.get(f"recall_{m.split('_', 1)[1]}")
            cells.append(f"{fmt(tm[m] / floor)}× ({fmt(recall, '.2f')}), {t['train_summary']['steps']} steps")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print()
    for label in labels:
        if label == args.baseline:
            continue
        pairs = [(ws, at.get((ws, label)), at.get((ws, args.baseline))) for ws in reports]
        pairs = [(ws, c, d) for ws, c, d in pairs if c and d]
        better = [ws for ws, c, d in pairs if beats(c, d, m)]
        worse = [ws for ws, c, d in pairs if beats(d, c, m)]
        verdict = "wins on most folders" if len(better) > len(pairs) / 2 else "does not win on most folders"
        print(f"- {label} vs {args.baseline}: clearly better on {len(better)} of {len(pairs)} "
              f"({', '.join(better) or 'none'}), clearly worse on {len(worse)} ({', '.join(worse) or 'none'}): "
              f"{verdict}")  # fmt: skip


if __name__ == "__main__":
    main()
