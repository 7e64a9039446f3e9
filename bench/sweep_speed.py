"""The same sweep one trial at a time vs several at once on the local Dask cluster: wall time and ratio.

    python bench/sweep_speed.py [--workspace DIR] [--kimg 20] [--layouts 1x2 2x1]

Builds (once) a workspace: this repository's files in a fresh git repo, Fashion-MNIST from the Debian package
limited to 10,000 training and 2,000 test images, its shared stages run (`dvc repro reference`) and committed.
Then runs the same 4-trial sweep (learning rate × loss, a fixed length in kimg, so every layout does the same
work) with `python -m flows.sweep` once per layout WORKERSxTHREADS: 1x2 is one trial at a time with both
threads (sequential), 2x1 two trials at once with one thread each. Each layout starts from no finished trial (the
experiments of the previous one are removed). Prints each wall time and its ratio to the first layout, and the
machine (lscpu's model name); writes bench-output/sweep-speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {  # the workspace: a quarter of Fashion-MNIST, scored on 2,000 images
    "data": {"mirrors": ["file:///usr/share/datasets/fashion-mnist/"], "limit_train": 10000, "limit_test": 2000},
    "evaluate": {"n_samples": 2000},
    "promote": {"push": False},
}


def cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        return f"{info['Model name'].strip()}, {os.cpu_count()} cores"
    except (OSError, subprocess.CalledProcessError, KeyError):
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def sh(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def workspace(ws: Path) -> Path:
    if (ws / "dvc.lock").exists():
        return ws
    ws.mkdir(parents=True, exist_ok=True)
    files = sh(["git", "ls-files", "-co", "--exclude-standard"], REPO).split()
    for f in files:
        if not f.startswith("data/") and (REPO / f).is_file():
            (ws / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, ws / f)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in SETTINGS.items():
        params[section].update(values)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.name=b", "-c", "user.email=b@b",
                "commit", "-qm", "bench workspace"], [sys.executable, "-m", "dvc", "repro", "reference"],
                ["git", "add", "-A"], ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm",
                "shared stages"]):  # fmt: skip
        print("workspace:", " ".join(cmd[-3:]), flush=True)
        sh(cmd, ws)
    return ws


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", type=Path, default=REPO / "bench-output" / "sweep-speed-workspace")
    ap.add_argument("--kimg", type=float, default=20.0, help="each trial's length")
    ap.add_argument("--layouts", nargs="+", default=["1x2", "2x1"], help="WORKERSxTHREADS, the first the baseline")
    args = ap.parse_args()
    ws = workspace(args.workspace.resolve())
    rows = []
    for layout in args.layouts:
        workers, threads = map(int, layout.split("x"))
        spec = {"name": "speed", "search": {"grid": {"train.lr_g": [0.0005, 0.001], "train.loss": ["ns", "hinge"]}},
                "budget": {"kimg": args.kimg}, "parallel": workers, "threads": threads}  # fmt: skip
        sweep_file = ws.parent / f"sweep-speed-{layout}.yaml"
        sweep_file.write_text(yaml.safe_dump(spec))
        sh([sys.executable, "-m", "dvc", "exp", "remove", "--all-commits"], ws)  # every layout runs all 4 trials
        t0 = time.perf_counter()
        out = sh([sys.executable, "-m", "flows.sweep", str(sweep_file), "--json"], ws)
        seconds = time.perf_counter() - t0
        result = json.loads(out[out.index("{\n") :])
        assert len(result["ran"]) == 4 and not result["failed"], result["summary"]
        rows.append({"layout": layout, "workers": workers, "threads": threads, "seconds": round(seconds, 1),
                     "train_seconds": [t["train s"] for t in result["trials"]]})  # fmt: skip
        print(f"{layout}: {seconds:.0f} s", flush=True)
    machine = cpu()
    print(f"\nmachine: {machine}; 4 trials of {args.kimg:g} kimg each (10,000 Fashion-MNIST images)\n")
    print("| layout (workers × threads) | wall time | vs first |\n|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} × {r['threads']} | {r['seconds']:.0f} s | {rows[0]['seconds'] / r['seconds']:.2f}× |")
    out = REPO / "bench-output" / "sweep-speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "kimg": args.kimg, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
