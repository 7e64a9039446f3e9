"""What a training budget buys: the default model trained for fixed wall-clock budgets, then scored.

    python bench/time_to_quality.py [--minutes 5 10] [--set train.lr_g=0.001 ...]

Uses the workspace's prepared data, classifier and reference features (run the
pipeline first); trains from scratch for each budget (`train.max_seconds`) in a
temporary folder and prints the headline metrics beside the real-vs-real floor.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch

from gan.config import load_params
from gan.datasets import get_dataset
from gan.evaluate import evaluate
from gan.prepare import load_split
from gan.train import TrainOutputs, train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, nargs="+", default=[5, 10])
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    p = load_params(overrides=args.overrides)
    print(f"machine: {os.cpu_count()} CPUs, cuda {torch.cuda.is_available()}; model {p.model.arch} "
          f"channels {p.model.channels}, batch {p.train.batch_size}, lr {p.train.lr_g}/{p.train.lr_d}")  # fmt: skip
    classes = list(get_dataset(p.data.dataset).classes)
    n_train = len(load_split("data/prepared/train.npz").labels)
    print("| budget | steps | epochs | FID (classifier) | floor | classes | precision | recall | coverage |")
    print("|---|---|---|---|---|---|---|---|---|")
    for minutes in args.minutes:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = p.train.model_copy(update={"epochs": 1000, "max_seconds": minutes * 60})
            out = TrainOutputs(Path(tmp) / "g.pt", Path(tmp) / "ckpt", Path(tmp) / "log")
            r = train(p.model, cfg, "data/prepared/train.npz", out, progress_bar=False)
            m = evaluate(p.evaluate, out.generator, "data/models/classifier.pt", "data/reference", Path(tmp) / "m.json",
                         classes=classes)  # fmt: skip
        epochs = r.steps / (n_train // p.train.batch_size)
        fid, floor = m["fid_classifier"], m["fid_classifier_floor"]
        print(f"| {minutes:g} min | {r.steps} | {epochs:.1f} | {fid:.2f} | {floor:.2f} "
              f"| {m['classes_covered']}/{m['num_classes']} | {m['precision_classifier']:.3f} | "
              f"{m['recall_classifier']:.3f} | {m['coverage_classifier']:.3f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
