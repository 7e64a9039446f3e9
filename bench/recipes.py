"""Which training recipe gives the best model per minute on *several* folders: the data behind the folder defaults.

    python bench/recipes.py --tgz emoji-datasource-google-16.0.0.tgz \\
        --folders emoji32 emoji32-flat emoji32-1k fashion28 --candidates default ema-0.99 diffaugment --minutes 5 10

Folders (each built once under --root, then prepared, with its classifier, judge and reference made by the pipeline's
own stage commands and default settings):

- `emoji32`, `emoji64`: the npm package emoji-datasource-google (examples/emoji_folder.py: one class per category)
  at 32 and 64 px;
- `emoji32-flat`: the same images flattened into one folder (unlabeled: the judge alone scores it);
- `emoji32-1k`: a seeded 1,000-image subset of emoji32;
- `fashion28`: 12,000 Fashion-MNIST training images from the Debian package, written as a folder of PNGs in class
  subfolders (the folder path, not the built-in reader).

Each candidate is the default settings plus `KEY=VALUE` overrides (CANDIDATES), trained from scratch for the largest
budget (`train.max_seconds`, no quality probe, the last G) with a snapshot as each smaller budget passes, then
scored as the evaluate stage scores: the judge's Fréchet distance beside its real-vs-real floor (and the ratio),
precision and recall in the judge's features, and where the folder has labels the classifier's FID. The judge's
soundness verdict on each folder (gan/evaluation/soundness.py) is printed with it: a ratio from a judge that cannot
separate
blurred images from real ones is not evidence. One process, one run after another; run it on an otherwise idle
machine (the budgets are wall-clock). Writes every figure to bench-output/recipes.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "examples"))
sys.path.insert(0, str(REPO / "bench"))

from ablation import VARIANTS, machine_name  # noqa: E402

from gan.core.config import ConfigError, apply_overrides, load_params  # noqa: E402
from gan.core.paths import Paths  # noqa: E402
from gan.core.splits import load_split  # noqa: E402
from gan.core.tensors import to_uint8  # noqa: E402
from gan.evaluation.evaluate import score_images  # noqa: E402
from gan.evaluation.features import ExtractorFiles  # noqa: E402
from gan.training.models import build_generator  # noqa: E402
from gan.training.sampling import sample_batches  # noqa: E402
from gan.training.train import TrainOutputs, load_checkpoint, train  # noqa: E402

CANDIDATES: dict[str, list[str]] = {  # the ablation bench's variants where they are the same
    "default": VARIANTS["default"],
    "ttur-d-fast": ["train.lr_g=0.0002", "train.lr_d=0.0008"],  # two time-scales the other way: D 4x faster
    "ema-0.99": VARIANTS["ema-0.99"],
    "r1": ["train.r1_gamma=0.1"],
    "diffaugment": VARIANTS["diffaugment"],
    "ada": [*VARIANTS["diffaugment"], "train.ada_target=0.6"],  # augment only as D overfits
    "sn-hinge-ttur": VARIANTS["sn-hinge-ttur"],
    # FastGAN (gan/training/fastgan.py) with the authors' training recipe (train.py: hinge, DiffAugment
    # color,translation,
    # lr 2e-4 for both, EMA 0.999); half our default width, which puts its step at 1.7x the default's on the CPU
    "fastgan": [
        "model.arch=fastgan",
        "model.channels=32",
        "train.loss=hinge",
        "train.augment=color,translation",
        "train.lr_g=0.0002",
        "train.lr_d=0.0002",
        "train.ema_decay=0.999",
    ],  # fmt: skip
}
FOLDERS = ("emoji32", "emoji64", "emoji32-flat", "emoji32-1k", "fashion28")
FASHION_IDX = Path("/usr/share/datasets/fashion-mnist")
FASHION_IMAGES = 12_000


# ---------------------------------------------------------------- folders


def _emoji(root: Path, tgz: Path) -> Path:
    import emoji_folder

    src = root / "sources" / "emoji"
    if not src.exists():
        emoji_folder.build(tgz, src)
    return src


def _flat(src: Path, dest: Path) -> Path:
    if not dest.exists():
        dest.mkdir(parents=True)
        for f in sorted(src.rglob("*.png")):
            shutil.copy(f, dest / f"{f.parent.name}-{f.name}")
    return dest


def _subset(src: Path, dest: Path, n: int, seed: int = 0) -> Path:
    if not dest.exists():
        files = sorted(src.rglob("*.png"))
        for i in np.sort(np.random.default_rng(seed).choice(len(files), n, replace=False)):
            f = files[i]
            (dest / f.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dest / f.parent.name / f.name)
    return dest


def _fashion(dest: Path, n: int) -> Path:
    """The first n Fashion-MNIST training images as PNGs in one subfolder per class."""
    if dest.exists():
        return dest
    with gzip.open(FASHION_IDX / "train-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION_IDX / "train-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for i in range(n):
        (tmp / f"class-{labels[i]}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(tmp / f"class-{labels[i]}" / f"{i:05d}.png")
    tmp.rename(dest)
    return dest


def folder_source(name: str, root: Path, tgz: Path | None, fashion_images: int = FASHION_IMAGES) -> tuple[Path, int]:
    """(the folder, the resolution to prepare it at)."""
    if name == "fashion28":
        return _fashion(root / "sources" / f"fashion28-{fashion_images}", fashion_images), 28
    if tgz is None:
        raise SystemExit(f"{name}: needs --tgz (an `npm pack emoji-datasource-google@16.0.0` file)")
    emoji = _emoji(root, tgz)
    if name == "emoji32-flat":
        return _flat(emoji, root / "sources" / "emoji-flat"), 32
    if name == "emoji32-1k":
        return _subset(emoji, root / "sources" / "emoji-1k", 1000), 32
    return emoji, int(name.removeprefix("emoji"))


def workspace(name: str, root: Path, tgz: Path | None, device: str, overrides: list[str] = (),
              fashion_images: int = FASHION_IMAGES) -> Path:  # fmt: skip
    """A workspace with the folder prepared and its classifier, judge and reference, by the stage commands (the
    default settings, and `overrides`)."""
    ws = root / name
    paths = Paths(ws)
    if (paths.reference / "meta.json").exists():
        return ws
    src, resolution = folder_source(name, root, tgz, fashion_images)
    ws.mkdir(parents=True, exist_ok=True)
    params = {"data": {"dataset": "folder", "source": str(src), "resolution": resolution},
              "train": {"device": device}}  # fmt: skip
    params = apply_overrides(params, list(overrides))
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for stage in ("source", "download", "prepare", "classifier", "judge", "reference"):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "gan", stage], cwd=ws, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"{name}: stage {stage} failed:\n{proc.stderr[-3000:]}")
        print(f"{name}: {stage} {time.perf_counter() - t0:.1f} s", flush=True)
    return ws


def judge_verdict(ws: Path) -> dict:
    metrics = Paths(ws).data / "metrics" / "judge.json"
    return json.loads(metrics.read_text()).get("soundness", {})


# ---------------------------------------------------------------- training and scoring


def train_with_snapshots(p, split: Path, budgets: list[float], tmp: Path, snapshot_every: int) -> list[dict]:
    """Train for max(budgets) minutes; a snapshot (checkpoint copy) as each budget passes, the end for the last."""
    every = {"checkpoint_every": snapshot_every, "log_flush_every": snapshot_every}
    cfg = p.train.model_copy(update={"kimg": 1e6, "epochs": 0, "max_seconds": max(budgets) * 60, "eval_every": 0,
                                     "keep": "last", "patience": 0, **every})  # fmt: skip
    out = TrainOutputs(tmp / "g.pt", tmp / "ckpt", tmp / "log")
    pending = sorted(budgets)[:-1]
    snaps: list[dict] = []
    t0 = time.perf_counter()

    def on_progress(stats: dict) -> None:
        if not (out.checkpoint_dir / "last.pt").exists():
            return
        while pending and time.perf_counter() - t0 >= pending[0] * 60:
            minutes = pending.pop(0)
            path = tmp / f"snap-{minutes:g}.pt"
            shutil.copy(out.checkpoint_dir / "last.pt", path)
            snaps.append({"minutes": minutes, "path": path})

    train(p.model, cfg, split, out, on_progress=on_progress, progress_bar=False)
    snaps.append({"minutes": max(budgets), "path": out.checkpoint_dir / "last.pt"})
    return snaps


def score(path: Path, p, paths: Paths, shape, device: str) -> tuple[dict, int]:
    ckpt = load_checkpoint(path)
    G = build_generator(p.model, shape)
    G.load_state_dict(ckpt["G_ema"]["module"] if "G_ema" in ckpt else ckpt["G"])
    G = G.eval().to(device)
    n = json.loads((paths.reference / "meta.json").read_text())["n"]
    fake = torch.cat([to_uint8(b).cpu() for b in sample_batches(G, n, p.evaluate.seed, 500)])
    files = ExtractorFiles(paths.classifier, paths.judge, p.evaluate.inception_weights)
    return score_images(fake, p.evaluate, files, paths.reference, None, device), ckpt["step"]


def fmt(v, spec: str = ".3g") -> str:
    return format(v, spec) if isinstance(v, int | float) else "—"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folders", nargs="+", default=["emoji32", "emoji32-flat", "emoji32-1k", "fashion28"],
                    choices=FOLDERS)  # fmt: skip
    ap.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    ap.add_argument("--minutes", type=float, nargs="+", default=[5, 10])
    ap.add_argument("--tgz", type=Path, default=None, help="emoji folders: the npm package's tarball")
    ap.add_argument("--root", type=Path, default=REPO / "bench-output" / "recipes")
    ap.add_argument("--snapshot-every", type=int, default=25)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=REPO / "bench-output" / "recipes.json")
    ap.add_argument("--fashion-images", type=int, default=FASHION_IMAGES)
    ap.add_argument("--table", action="store_true", help="only print the table of the rows in --out; train nothing")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting for every folder's workspace (its classifier, judge, evaluation)")  # fmt: skip
    args = ap.parse_args()
    machine = f"{machine_name(args.device)}, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    print(f"machine: {machine}", flush=True)

    results, verdicts = [], {}
    if args.out.exists():
        kept = json.loads(args.out.read_text())
        if kept.get("machine") != machine:
            raise SystemExit(f"{args.out}: its rows come from another machine ({kept.get('machine')}); "
                             "name another --out or delete it")  # fmt: skip
        results, verdicts = kept["results"], kept["verdicts"]
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        args.out.write_text(json.dumps({"machine": machine, "verdicts": verdicts, "results": results}, indent=1) + "\n")

    for folder in [] if args.table else args.folders:
        ws = workspace(folder, args.root, args.tgz, args.device, args.overrides, args.fashion_images)
        paths = Paths(ws)
        split = load_split(paths.train_split)
        verdicts[folder] = judge_verdict(ws)
        print(f"{folder}: {len(split.images)} training images {split.shape}; judge soundness: "
              f"{verdicts[folder].get('reason')}", flush=True)  # fmt: skip
        for name in args.candidates:
            if any((r["folder"], r["candidate"]) == (folder, name) for r in results):
                print(f"{folder} {name}: in {args.out} already", flush=True)
                continue
            try:
                p = load_params(ws / "params.yaml", [f"train.device={args.device}", *CANDIDATES[name]])
            except ConfigError as err:  # e.g. an architecture not built for this folder's resolution
                print(f"{folder} {name}: not run: {str(err).splitlines()[-1].strip()}", flush=True)
                continue
            with tempfile.TemporaryDirectory() as tmp:
                for snap in train_with_snapshots(p, paths.train_split, args.minutes, Path(tmp), args.snapshot_every):
                    m, steps = score(snap["path"], p, paths, split.shape, args.device)
                    row = {"folder": folder, "candidate": name, "minutes": snap["minutes"], "steps": steps,
                           "fd_judge": m["fid_judge"], "fd_judge_floor": m["fid_judge_floor"],
                           "ratio": m["fid_judge"] / max(m["fid_judge_floor"], 1e-9),
                           "precision_judge": m["precision_judge"], "recall_judge": m["recall_judge"],
                           "fid_classifier": m.get("fid_classifier"), "metrics": m}  # fmt: skip
                    results.append(row)
                    print(json.dumps({k: v for k, v in row.items() if k != "metrics"}), flush=True)
            save()
    save()

    # --- the table: one row per candidate and budget, the folders side by side ---
    print(f"\nmachine: {machine}\n\njudge FD / its real-vs-real floor (recall in the judge's features); lower is "
          "better, 1 = indistinguishable from real\n")  # fmt: skip
    print("| candidate | budget | " + " | ".join(args.folders) + " |")
    print("|---|---|" + "---|" * len(args.folders))
    for name in args.candidates:
        for minutes in sorted(args.minutes):
            cells = []
            for folder in args.folders:
                r = next((r for r in results if (r["folder"], r["candidate"], r["minutes"]) == (folder, name, minutes)),
                         None)  # fmt: skip
                cells.append(f"{fmt(r['ratio'])}× ({fmt(r['recall_judge'], '.2f')}), {r['steps']} steps" if r else "—")
            print(f"| {name} | {minutes:g} min | " + " | ".join(cells) + " |")
    print("\njudge soundness per folder: " + "; ".join(f"{k}: {v.get('separates')}" for k, v in verdicts.items()))
    print("\n" + "\n".join(verdict_lines(results, args.folders, args.candidates, max(args.minutes))))
    print(f"written: {args.out}")


def beats(a: dict, b: dict) -> bool:
    """a's judge FD clearly below b's: a's 95 % bootstrap interval entirely below b's (the metric's sampling noise;
    a second training seed would add its own). Without intervals (evaluate.bootstrap = 0) never clearly."""
    ci_a, ci_b = a["metrics"].get("fid_judge_ci95"), b["metrics"].get("fid_judge_ci95")
    return bool(ci_a and ci_b) and ci_a[1] < ci_b[0]


def verdict_lines(results: list[dict], folders: list[str], candidates: list[str], minutes: float) -> list[str]:
    """At the largest budget: each folder's best candidate, and per candidate the folders where it clearly beats
    the default and where the default clearly beats it -- a default must win on most folders, not on one."""
    at = {(r["folder"], r["candidate"]): r for r in results if r["minutes"] == minutes}
    lines = [f"at {minutes:g} min:"]
    for folder in folders:
        rows = sorted((r for (f, _), r in at.items() if f == folder), key=lambda r: r["ratio"])
        if rows:
            lines.append(f"- {folder}: best {rows[0]['candidate']} ({fmt(rows[0]['ratio'])}× its floor), then "
                         + ", ".join(f"{r['candidate']} {fmt(r['ratio'])}×" for r in rows[1:]))  # fmt: skip
    for name in candidates:
        if name == "default":
            continue
        pairs = [(f, at.get((f, name)), at.get((f, "default"))) for f in folders]
        pairs = [(f, c, d) for f, c, d in pairs if c and d]
        better = [f for f, c, d in pairs if beats(c, d)]
        worse = [f for f, c, d in pairs if beats(d, c)]
        mark = "wins on most folders" if len(better) > len(pairs) / 2 else "does not win on most folders"
        lines.append(f"- {name} vs default: clearly better on {len(better)} of {len(pairs)} folders "
                     f"({', '.join(better) or 'none'}), clearly worse on {len(worse)} ({', '.join(worse) or 'none'}): "
                     f"{mark}")  # fmt: skip
    return lines


if __name__ == "__main__":
    main()
