"""How long scoring 10,000 vs 10,000 images takes with the domain classifier.

    python bench/eval_speed.py [--n 10000]

Uses the workspace's data/prepared, data/models/classifier.pt (run the pipeline
first) and builds a reference for n in a temporary folder, then scores n real
train images as if they were samples. Prints the time of each part.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gan.core.config import load_params
from gan.core.paths import PATHS
from gan.core.splits import load_split, read_summary
from gan.evaluation.evaluate import score_images
from gan.evaluation.features import ExtractorFiles
from gan.evaluation.reference import build_reference


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    args = ap.parse_args()
    p = load_params()
    cfg = p.evaluate.model_copy(update={"n_samples": args.n, "extractors": ["classifier"]})
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"cuda {torch.cuda.is_available()}")  # fmt: skip
    files = ExtractorFiles(PATHS.classifier, PATHS.judge)
    with tempfile.TemporaryDirectory() as ref:
        t0 = time.perf_counter()
        meta = build_reference(cfg, files, PATHS.train_split, PATHS.test_split,
                               ref, device="cpu")  # fmt: skip
        t_ref = time.perf_counter() - t0
        n = meta["n"]
        train = load_split(PATHS.train_split)
        samples = torch.from_numpy(train.images[np.random.default_rng(7).choice(len(train.images), n, replace=False)])
        t0 = time.perf_counter()
        classes = list(read_summary(PATHS.prepared_summary).classes)
        m = score_images(samples, cfg, files, Path(ref), classes, "cpu")
        t_score = time.perf_counter() - t0
    print(f"n = {n} vs {n}")
    print(f"reference features (real train + test, once per data version): {t_ref:6.1f} s")
    print(f"scoring n samples (features, FID + {cfg.bootstrap}-round bootstrap, KID, IS, PRDC on "
          f"{cfg.prdc_samples}, per-class FID, each with its floor): {t_score:6.1f} s")  # fmt: skip
    print(f"fid_classifier {m['fid_classifier']:.3f} (floor {m['fid_classifier_floor']:.3f})")


if __name__ == "__main__":
    main()
