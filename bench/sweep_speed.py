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
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from folders import git_workspace, machine_name, sh  # noqa: E402

SETTINGS = {  # the workspace: a quarter of Fashion-MNIST, scored on 2,000 images
    "data": {"mirrors": ["file:///usr/share/datasets/fashion-mnist/"], "limit_train": 10000, "limit_test": 2000},
    "evaluate": {"n_samples": 2000},
    "promote": {"push": False},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", type=Path, default=REPO / "bench-output" / "sweep-speed-workspace")
    ap.add_argument("--kimg", type=float, default=20.0, help="each trial's length")
    ap.add_argument("--layouts", nargs="+", default=["1x2", "2x1"], help="WORKERSxTHREADS, the first the baseline")
    args = ap.parse_args()
    ws = git_workspace(args.workspace.resolve(), SETTINGS)
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
    machine = machine_name()
    print(f"\nmachine: {machine}; 4 trials of {args.kimg:g} kimg each (10,000 Fashion-MNIST images)\n")
    print("| layout (workers × threads) | wall time | vs first |\n|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} × {r['threads']} | {r['seconds']:.0f} s | {rows[0]['seconds'] / r['seconds']:.2f}× |")
    out = REPO / "bench-output" / "sweep-speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "kimg": args.kimg, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
