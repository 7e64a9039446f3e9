"""How far apart do runs that differ only in `train.seed` land? The default run's spread, so a reader knows what a
difference of a few FID means.

    python bench/seed_spread.py --seeds 0 1 2            # in this workspace, after ./run.sh (or dvc repro)

The shared stages (data, classifier, judge, reference) are the workspace's own: they do not depend on the
training seed. For each seed, a copy of the workspace (`--work`, git-ignored files included) runs `dvc repro
evaluate` with `train.seed` set, so train and evaluate run as a user's run would (length, probe, keep-best, early
stop). Printed: per seed the trained steps, the kept step, the training time and every distance of the gate beside
its floor; then the mean, the standard deviation and the range over the seeds, and the machine. The workspace's own
files are not touched; its current run is used for its own seed when the settings match.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import yaml  # noqa: E402
from folders import machine_name  # noqa: E402

from gan.core.config import apply_overrides, load_params  # noqa: E402

KEYS = ("fid_classifier", "kid_classifier", "fid_judge", "precision_classifier", "recall_classifier")


def run_seed(ws: Path, work: Path, seed: int) -> dict:
    """train + evaluate with train.seed = `seed` in a copy of `ws`; its metrics and training summary."""
    dest = work / f"seed-{seed}"
    if not (dest / "done.json").exists():
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(ws, dest, symlinks=True, ignore=shutil.ignore_patterns(".venv", "bench-output", "site"))
        shutil.rmtree(dest / "data" / "checkpoints", ignore_errors=True)  # no resume from the workspace's run
        params = dest / "params.yaml"
        raw = apply_overrides(yaml.safe_load(params.read_text()), [f"train.seed={seed}"])
        params.write_text(yaml.safe_dump(raw, sort_keys=False))
        load_params(params)  # the schema's check, as every stage makes it
        t0 = time.perf_counter()
        subprocess.run(["dvc", "repro", "-q", "evaluate"], cwd=dest, check=True)
        summary = json.loads((dest / "data" / "train" / "summary.json").read_text())
        metrics = json.loads((dest / "data" / "metrics" / "metrics.json").read_text())
        done = {"seed": seed, "seconds": round(time.perf_counter() - t0), "steps": summary.get("steps"),
                "kept_step": (summary.get("kept") or {}).get("step"), "metrics": metrics}  # fmt: skip
        (dest / "done.json").write_text(json.dumps(done, indent=1) + "\n")
    return json.loads((dest / "done.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--workspace", type=Path, default=REPO)
    ap.add_argument("--work", type=Path, default=REPO / "bench-output" / "seed-spread")
    args = ap.parse_args()
    print(f"machine: {machine_name()}", flush=True)
    args.work.mkdir(parents=True, exist_ok=True)
    runs = [run_seed(args.workspace.resolve(), args.work, s) for s in args.seeds]
    print("\n| train.seed | steps (kept) | train + evaluate | " + " | ".join(KEYS) + " |")
    print("|---|---|---|" + "---|" * len(KEYS))
    for r in runs:
        m = r["metrics"]
        cells = []
        for k in KEYS:
            ci = m.get(f"{k}_ci95")
            cells.append(f"{m[k]:.4g}" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else "") if k in m else "—")
        print(f"| {r['seed']} | {r['steps']} ({r['kept_step']}) | {r['seconds']} s | " + " | ".join(cells) + " |")
    for k in KEYS:
        values = [r["metrics"][k] for r in runs if k in r["metrics"]]
        if len(values) > 1:
            print(f"{k}: mean {statistics.mean(values):.4g}, sd {statistics.stdev(values):.3g}, "
                  f"range {min(values):.4g} to {max(values):.4g} over {len(values)} seeds")  # fmt: skip
    floor = runs[0]["metrics"].get("fid_classifier_floor")
    print(f"fid_classifier_floor {floor} (the same real images in every run)")


if __name__ == "__main__":
    main()
