"""What each part of the training algorithm buys per minute: an ablation at fixed wall-clock budgets.

    python bench/ablation.py fashion [--minutes 2 5] [--variants default sn-hinge ema ...]
    python bench/ablation.py emoji --tgz emoji-datasource-google-16.0.0.tgz [--minutes 2 5]

Each variant is today's default plus `--set`-style overrides (VARIANTS). It trains from scratch for the largest
budget (`train.max_seconds`); a snapshot of G (the EMA G when on) is kept as each smaller budget passes: the
checkpoint written at or before that time (checkpoints every `--snapshot-every` steps, so a snapshot is at most that
many steps early; the table gives its exact steps). Every snapshot is then scored like the evaluate stage does
(classifier FID and precision/recall/coverage, with the judge also its FD on the colour folder) against the same
reference, beside the real-vs-real floor. A conditional G is asked for every class equally often, and the table
gives how often the classifier recognises the class asked for.

- `fashion`: the workspace's own prepared Fashion-MNIST, classifier and reference (run the pipeline first).
- `emoji`: a small colour folder, 32×32: the npm package emoji-datasource-google (examples/emoji_folder.py, one
  class per category) prepared in its own workspace (`--workspace`, built once: prepare, classifier, judge with
  4 epochs at batch 64 as a small folder needs, reference).

Prints a markdown table and writes every figure to bench-output/ablation-<dataset>.json. Training and scoring run
one after the other in this process; run it on an otherwise idle machine (the figures are wall-clock budgets).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gan.core.config import load_params  # noqa: E402
from gan.core.paths import Paths  # noqa: E402
from gan.core.splits import load_split, read_summary  # noqa: E402
from gan.core.tensors import to_uint8  # noqa: E402
from gan.evaluation.evaluate import score_images  # noqa: E402
from gan.evaluation.features import ExtractorFiles  # noqa: E402
from gan.training.models import build_generator  # noqa: E402
from gan.training.sampling import requested_labels, sample_batches  # noqa: E402
from gan.training.train import TrainOutputs, load_checkpoint, num_classes_of, train  # noqa: E402

VARIANTS: dict[str, list[str]] = {
    "default": [],
    "sn-hinge": ["model.spectral_norm=true", "train.loss=hinge"],
    "ema": ["train.ema_decay=0.999"],
    "diffaugment": ["train.augment=color,translation,cutout"],
    "conditional": ["model.conditional=true"],
    "sn-hinge-ema-conditional": [
        "model.spectral_norm=true",
        "train.loss=hinge",
        "train.ema_decay=0.999",
        "model.conditional=true",
    ],  # fmt: skip
    "sn-hinge-ema-diffaugment": [
        "model.spectral_norm=true",
        "train.loss=hinge",
        "train.ema_decay=0.999",
        "train.augment=color,translation,cutout",
    ],  # fmt: skip
    "ema-diffaugment": ["train.ema_decay=0.999", "train.augment=color,translation,cutout"],
    # after the first run: a shorter EMA horizon for ~2,000-step budgets, and SN + hinge with the learning rates
    # such a D usually needs (D faster than G, beta1 = 0: SAGAN's two time-scale setting, scaled up 5x)
    "ema-0.99": ["train.ema_decay=0.99"],
    "sn-hinge-ttur": [
        "model.spectral_norm=true",
        "train.loss=hinge",
        "train.lr_g=0.0005",
        "train.lr_d=0.002",
        "train.beta1=0.0",
        "train.beta2=0.9",
    ],  # fmt: skip
    "conditional-ema-0.99": ["model.conditional=true", "train.ema_decay=0.99"],
    "ema-0.99-diffaugment": ["train.ema_decay=0.99", "train.augment=color,translation,cutout"],
}
EMOJI_PARAMS = {
    "data": {"dataset": "folder", "resolution": 32},
    # the extractors the README's emoji ablation table was made with: 2 epochs of the classifier (too coarse a ruler
    # by gan/evaluation/soundness.py on this folder), 4 epochs of the judge at batch 64
    "classifier": {"steps": 54},
    "judge": {"steps": 208, "batch_size": 64},
}


def machine_name(device: str) -> str:
    """The CPU as `lscpu` names it (model name, family/model, AVX-512 or not), or the GPU when training on one."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        info = dict(
            line.split(":", 1) for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True)
            .stdout.splitlines() if ":" in line
        )  # fmt: skip
        avx = "AVX-512" if "avx512f" in info.get("Flags", "") else "AVX2" if "avx2" in info.get("Flags", "") else ""
        return (f"{info.get('Model name', '?').strip()} (family {info.get('CPU family', '?').strip()} model "
                f"{info.get('Model', '?').strip()}, {avx}), {os.cpu_count()} cores")  # fmt: skip
    except (OSError, subprocess.CalledProcessError, ValueError):
        return platform.processor() or "unknown CPU"


def emoji_workspace(ws: Path, tgz: Path) -> Path:
    """A workspace holding the emoji folder prepared at 32×32 with its classifier, judge and reference."""
    paths = Paths(ws)
    if (paths.reference / "meta.json").exists():
        return ws
    sys.path.insert(0, str(REPO / "examples"))
    import emoji_folder

    folder = ws / "emoji"
    if not folder.exists():
        emoji_folder.build(tgz, folder)
    import yaml

    params = json.loads(json.dumps(EMOJI_PARAMS))
    params["data"]["source"] = str(folder)
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for stage in ("source", "download", "prepare", "classifier", "judge", "reference"):
        print(f"emoji workspace: {stage}", flush=True)
        subprocess.run([sys.executable, "-m", "gan", stage], cwd=ws, env=env, check=True)
    return ws


def train_with_snapshots(p, split: Path, budgets: list[float], tmp: Path, snapshot_every: int) -> list[dict]:
    """Train for max(budgets) minutes; a snapshot (checkpoint copy) as each budget passes, the end for the last."""
    every = {"checkpoint_every": snapshot_every, "log_flush_every": snapshot_every}
    cfg = p.train.model_copy(update={"epochs": 10_000, "max_seconds": max(budgets) * 60, **every})
    out = TrainOutputs(tmp / "g.pt", tmp / "ckpt", tmp / "log")
    pending = sorted(budgets)[:-1]
    snaps: list[dict] = []
    t0 = time.perf_counter()

    def on_progress(stats: dict) -> None:
        if not (out.checkpoint_dir / "last.pt").exists():  # the first checkpoint is written after this flush
            return
        while pending and time.perf_counter() - t0 >= pending[0] * 60:
            minutes = pending.pop(0)
            path = tmp / f"snap-{minutes:g}.pt"
            shutil.copy(out.checkpoint_dir / "last.pt", path)
            snaps.append({"minutes": minutes, "path": path})

    r = train(p.model, cfg, split, out, on_progress=on_progress, progress_bar=False)
    snaps.append({"minutes": max(budgets), "path": out.checkpoint_dir / "last.pt", "seconds": r.seconds})
    return snaps


def snapshot_generator(path: Path, p, shape, num_classes: int) -> tuple[torch.nn.Module, int]:
    ckpt = load_checkpoint(path)
    G = build_generator(p.model, shape, num_classes)
    G.load_state_dict(ckpt["G_ema"]["module"] if "G_ema" in ckpt else ckpt["G"])
    return G.eval(), ckpt["step"]


def score(G: torch.nn.Module, p, paths: Paths, classes: list[str], device: str) -> dict:
    n = json.loads((paths.reference / "meta.json").read_text())["n"]
    requested = requested_labels(n, G.num_classes) if G.num_classes else None
    fake = torch.cat([to_uint8(b).cpu() for b in sample_batches(G, n, p.evaluate.seed, 500, requested)])
    files = ExtractorFiles(paths.classifier, paths.judge, p.evaluate.inception_weights)
    return score_images(fake, p.evaluate, files, paths.reference, classes, device, requested)


def fmt(m: dict, key: str, spec: str = ".2f") -> str:
    return format(m[key], spec) if m.get(key) is not None else "—"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset", choices=["fashion", "emoji"])
    ap.add_argument("--minutes", type=float, nargs="+", default=[2, 5])
    ap.add_argument("--variants", nargs="+", default=None, help=f"of {', '.join(VARIANTS)}")
    ap.add_argument("--workspace", type=Path, default=None,
                    help="fashion: a workspace whose pipeline has run (default: this repository); emoji: where its "
                    "workspace is built or reused")  # fmt: skip
    ap.add_argument("--tgz", type=Path, default=None, help="emoji: the npm package's tarball (else `npm pack`)")
    ap.add_argument("--snapshot-every", type=int, default=25)
    ap.add_argument("--extractors", nargs="+", default=None, help="default: classifier (fashion), classifier judge")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (training and scoring)")
    ap.add_argument("--out", type=Path, default=None, help="the JSON (default bench-output/ablation-DATASET.json)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    # --- the workspace: its data, classifier and reference ---
    if args.dataset == "fashion":  # the workspace's own pipeline (or --workspace's)
        ws, variants = args.workspace or REPO, args.variants or list(VARIANTS)
        extractors = args.extractors or ["classifier"]
    else:
        ws = args.workspace or REPO / "bench-output" / "emoji-workspace"
        ws.mkdir(parents=True, exist_ok=True)
        tgz = args.tgz
        if tgz is None:
            sys.path.insert(0, str(REPO / "examples"))
            import emoji_folder

            tgz = emoji_folder.npm_pack(ws)
        emoji_workspace(ws, tgz)
        variants = args.variants or ["default", "diffaugment", "ema", "ema-diffaugment"]
        extractors = args.extractors or ["classifier", "judge"]
    paths = Paths(ws)
    classes = list(read_summary(paths.prepared_summary).classes)
    split = load_split(paths.train_split)
    machine = f"{machine_name(args.device)}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    print(f"machine: {machine}; data: {args.dataset} {split.shape}, {len(split.images)} training images", flush=True)

    # --- every variant: train for the budgets, then score each snapshot ---
    results = []
    for name in variants:
        fixed = [f"evaluate.extractors={json.dumps(extractors)}", f"train.device={args.device}"]
        p = load_params(ws / "params.yaml", [*fixed, *VARIANTS[name]])
        num_classes = num_classes_of(split.labels) if p.model.conditional else 0
        with tempfile.TemporaryDirectory() as tmp:
            snaps = train_with_snapshots(p, paths.train_split, args.minutes, Path(tmp), args.snapshot_every)
            for snap in snaps:
                G, steps = snapshot_generator(snap["path"], p, split.shape, num_classes)
                m = score(G.to(args.device), p, paths, classes, args.device)
                row = {"variant": name, "overrides": VARIANTS[name], "minutes": snap["minutes"], "steps": steps,
                       "metrics": m}  # fmt: skip
                results.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "metrics"}
                                 | {k: m.get(k) for k in ("fid_classifier", "fid_judge", "conditional_accuracy")}),
                      flush=True)  # fmt: skip

    # --- the table ---
    print(f"\nmachine: {machine}\n")
    print("| variant | budget | steps | FID (classifier) | floor | FD (judge) | precision | recall | coverage | "
          "classes | requested class |\n|---|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    for r in results:
        m = r["metrics"]
        classes_txt = f"{m['classes_covered']}/{m['num_classes']}" if "classes_covered" in m else "—"
        print(f"| {r['variant']} | {r['minutes']:g} min | {r['steps']} | {fmt(m, 'fid_classifier')} | "
              f"{fmt(m, 'fid_classifier_floor')} | {fmt(m, 'fid_judge')} | {fmt(m, 'precision_classifier', '.3f')} | "
              f"{fmt(m, 'recall_classifier', '.3f')} | {fmt(m, 'coverage_classifier', '.3f')} | {classes_txt} | "
              f"{fmt(m, 'conditional_accuracy', '.1%')} |")  # fmt: skip
    suffix = "" if args.device == "cpu" else "-" + args.device.split(":")[0]
    out = args.out or REPO / "bench-output" / f"ablation-{args.dataset}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "dataset": args.dataset, "results": results}, indent=1) + "\n")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
