"""Can the ruler tell blobs from emoji? Two sets of extractors on one colour folder, and one generator's snapshots.

    python bench/ruler.py --tgz emoji-datasource-google-16.0.0.tgz [--folder emoji32] [--steps 150,300,...]

On a folder of bench/folders.py (default: the 3,390 emoji at 32 px), the classifier and the judge are trained twice:
with the defaults (`classifier.steps`/`judge.steps: auto`) and as briefly as their old epoch defaults made them on
this folder (--weak: 26 and 13 steps). Printed: each extractor's soundness record (gan/evaluation/soundness.py: the
real-vs-real
floor and its interval, a faint, a mild and a heavy blur, noise, the verdict), then one training run of the default
generator, snapshots kept at --steps, each scored by both sets as the evaluate stage scores (FD, its floor,
precision/recall), and a grid of each snapshot in bench-output/ruler/. A sound ruler ranks the early blob snapshots
clearly worse than the later ones; a coarse one calls them almost real.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from torchvision.utils import save_image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from folders import FASHION_IMAGES, FOLDERS, machine_name, workspace  # noqa: E402

from gan.core.config import load_params  # noqa: E402
from gan.core.paths import Paths  # noqa: E402
from gan.core.splits import load_split  # noqa: E402
from gan.core.tensors import to_uint8  # noqa: E402
from gan.evaluation.evaluate import score_images  # noqa: E402
from gan.evaluation.features import ExtractorFiles  # noqa: E402
from gan.training.models import build_generator  # noqa: E402
from gan.training.sampling import sample_batches  # noqa: E402
from gan.training.train import TrainOutputs, load_checkpoint, train  # noqa: E402

KEYS = ("fid_classifier", "fid_classifier_floor", "recall_classifier", "fid_judge", "fid_judge_floor",
        "precision_judge", "recall_judge")  # fmt: skip


def weak_workspace(ws: Path, steps: tuple[int, int]) -> Path:
    """`ws`'s prepared data with a classifier and a judge trained for `steps` only."""
    weak = ws.with_name(ws.name + "-weak")
    if (Paths(weak).reference / "meta.json").exists():
        return weak
    (weak / "data").mkdir(parents=True, exist_ok=True)
    shutil.copytree(Paths(ws).prepared, Paths(weak).prepared, dirs_exist_ok=True)
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params.setdefault("classifier", {})["steps"], params.setdefault("judge", {})["steps"] = steps
    (weak / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for stage in ("classifier", "judge", "reference"):
        subprocess.run([sys.executable, "-m", "gan", stage], cwd=weak, env=env, check=True, capture_output=True)
    return weak


def snapshots(ws: Path, steps: list[int], out: Path) -> dict[int, torch.nn.Module]:
    """One default training run, G kept at each of `steps` (the checkpoint of that step)."""
    p = load_params(ws / "params.yaml")
    split = load_split(Paths(ws).train_split)
    every = math.gcd(*steps)  # a checkpoint at each wanted step; when step s + 1 is reported, last.pt holds step s
    cfg = p.train.model_copy(update={"kimg": max(steps) * p.train.batch_size / 1000, "epochs": 0, "eval_every": 0,
                                     "keep": "last", "checkpoint_every": every, "log_flush_every": 1})  # fmt: skip
    tmp = out / "train"
    shutil.rmtree(tmp, ignore_errors=True)
    o = TrainOutputs(tmp / "g.pt", tmp / "ckpt", tmp / "log")
    kept: dict[int, torch.nn.Module] = {}

    def keep(stats: dict) -> None:
        step = stats["step"] - 1
        if step in steps and step not in kept:
            ckpt = load_checkpoint(o.checkpoint_dir / "last.pt")
            assert ckpt["step"] == step, f"last.pt holds step {ckpt['step']}, expected {step}"
            G = build_generator(p.model, split.shape)
            G.load_state_dict(ckpt["G"])
            kept[step] = G.eval()

    t0 = time.perf_counter()
    r = train(p.model, cfg, Paths(ws).train_split, o, on_progress=keep, progress_bar=False)
    G = build_generator(p.model, split.shape)
    G.load_state_dict(load_checkpoint(o.checkpoint_dir / "last.pt")["G"])
    kept[r.steps] = G.eval()
    print(f"generator: {r.steps} steps in {time.perf_counter() - t0:.0f} s", flush=True)
    return dict(sorted(kept.items()))


def score(G: torch.nn.Module, ws: Path) -> dict:
    p, paths = load_params(ws / "params.yaml"), Paths(ws)
    n = json.loads((paths.reference / "meta.json").read_text())["n"]
    fake = torch.cat([to_uint8(b).cpu() for b in sample_batches(G, n, p.evaluate.seed, 500)])
    return score_images(fake, p.evaluate, ExtractorFiles(paths.classifier, paths.judge), paths.reference, None, "cpu")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tgz", type=Path, default=None, help="emoji folders: the npm package's tarball")
    ap.add_argument("--folder", default="emoji32", choices=FOLDERS)
    ap.add_argument("--root", type=Path, default=REPO / "bench-output" / "folders")
    ap.add_argument("--weak", default="26,13", help="classifier,judge steps of the weak set")
    ap.add_argument("--steps", default="150,300,600,1000,1500,2000,3000,4000")
    ap.add_argument("--out", type=Path, default=REPO / "bench-output" / "ruler", help="grids and ruler.json")
    ap.add_argument("--fashion-images", type=int, default=FASHION_IMAGES)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting for the folder's workspace (both extractor sets and the generator)")  # fmt: skip
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine_name()}, torch {torch.__version__}", flush=True)
    ws = workspace(args.folder, args.root, args.tgz, "cpu", args.overrides, args.fashion_images)
    weak = weak_workspace(ws, tuple(int(s) for s in args.weak.split(",")))
    sets = {"default": ws, f"weak ({args.weak} steps)": weak}

    print("\n| extractors | extractor | steps | floor [95 % interval] | faint 0.5 | blurred 1.5 | blobs 4 | noise | "
          "separates |\n|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    for label, w in sets.items():
        for name in ("classifier", "judge"):
            m = json.loads((Paths(w).data / "metrics" / f"{name}.json").read_text())
            s = m["soundness"]
            print(f"| {label} | {name} | {m['steps']} | {s['floor']:.3g} [{s['floor_ci95'][0]:.3g}, "
                  f"{s['floor_ci95'][1]:.3g}] | {s['faint']:.3g} | {s['blurred']:.3g} | {s['blobs']:.3g} | "
                  f"{s['noise']:.3g} | {'yes' if s['separates'] else 'NO'} |")  # fmt: skip

    gens = snapshots(ws, [int(s) for s in args.steps.split(",")], out)
    rows = []
    for step, G in gens.items():
        with torch.no_grad():
            grid = G(torch.randn(64, G.z_dim, generator=torch.Generator().manual_seed(0)))
        save_image(grid, out / f"step_{step:05d}.png", nrow=8, normalize=True, value_range=(-1, 1))
        scores = {label: score(G, w) for label, w in sets.items()}
        rows.append({"step": step, **{label: {k: m.get(k) for k in KEYS} for label, m in scores.items()}})
        print(json.dumps(rows[-1]), flush=True)
    print("\n| G after | extractors | FID classifier / floor | recall (classifier) | FD judge / floor | precision / "
          "recall (judge) |\n|---|---|---|---|---|---|")  # fmt: skip
    for r in rows:
        for label in sets:
            m = r[label]
            print(f"| {r['step']} steps | {label} | {m['fid_classifier']:.4g} / {m['fid_classifier_floor']:.4g} "
                  f"({m['fid_classifier'] / m['fid_classifier_floor']:.2f}×) | {m['recall_classifier']:.2f} | "
                  f"{m['fid_judge']:.4g} / {m['fid_judge_floor']:.4g} ({m['fid_judge'] / m['fid_judge_floor']:.2f}×) "
                  f"| {m['precision_judge']:.2f} / {m['recall_judge']:.2f} |")  # fmt: skip
    (out / "ruler.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"\ngrids and figures: {out}")


if __name__ == "__main__":
    main()
