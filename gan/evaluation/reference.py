"""Reference stage: real-image features, computed once per data version and classifier.

Features of n real *test* images (the reference set) and of n random real
*train* images (the floor: what a perfect generator would score), per
extractor, cached in `data/reference/` as a DVC output that `evaluate` reads.
`meta.json` records the images' shape (C×H×W), whether they carry labels, and
per extractor the shape its network sees: `evaluate` checks samples against them.
For the judge it also keeps the features of *every* training image (`train_all_features`):
the memorisation check looks for each generated image's nearest training image among all of them.
An extractor that does not apply to the data (the classifier without labels) is listed in
`not_applicable` with the reason.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from gan.core import atomic
from gan.core.config import ConfigError, EvaluateConfig
from gan.core.splits import UNLABELED, Split, load_split
from gan.core.tensors import resolve_device
from gan.evaluation.classifier import check_same_shape
from gan.evaluation.features import ExtractorFiles, build_extractors, embed_all

log = logging.getLogger(__name__)


def _reference_n(cfg: EvaluateConfig, train: Split, test: Split) -> int:
    n = min(cfg.n_samples, len(test.labels), len(train.labels))
    if n < 2:
        raise ConfigError(f"evaluate.n_samples: need at least 2 real images per split, have {n}")
    if n < cfg.n_samples:
        log.warning("evaluate.n_samples=%d but only %d real images per split: using n=%d", cfg.n_samples, n, n)
    return n


def build_reference(
    cfg: EvaluateConfig, files: ExtractorFiles, train_split: str | Path, test_split: str | Path,
    out_dir: str | Path, device: str = "auto",
) -> dict:  # fmt: skip
    """Compute and cache real-image features for every configured extractor."""
    out_dir = Path(out_dir)
    dev = resolve_device(device)
    train, test = load_split(train_split), load_split(test_split)
    check_same_shape(train, test, train_split, test_split)
    n = _reference_n(cfg, train, test)
    train_idx = np.sort(np.random.default_rng(cfg.seed).choice(len(train.labels), size=n, replace=False))
    real_test, real_train = torch.from_numpy(test.images[:n]), torch.from_numpy(train.images[train_idx])
    labeled = bool((test.labels != UNLABELED).all() and (train.labels != UNLABELED).all())
    meta = {"n": n, "reference_split": "test (first n)", "floor_split": f"train (random n, seed {cfg.seed})",
            "image_shape": list(test.shape), "labeled": labeled, "extractors": {}}  # fmt: skip
    extractors, meta["not_applicable"] = build_extractors(cfg.extractors, files, dev, cfg.batch_size)
    for name, ex in extractors.items():
        t0 = time.perf_counter()
        f_test, p_test = ex(real_test)
        f_train, p_train = ex(real_train)
        arrays = {"test_features": f_test, "train_features": f_train, "test_labels": test.labels[:n],
                  "train_labels": train.labels[train_idx]}  # fmt: skip
        if p_test is not None:
            arrays |= {"test_probs": p_test, "train_probs": p_train}
        if name == "judge":  # the memorisation check's training set: every training image
            arrays["train_all_features"] = embed_all(ex, train.images, cfg.batch_size)
        with atomic.atomic_path(out_dir / f"{name}.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        meta["extractors"][name] = {"weights_sha256": ex.weights_sha256, "feature_dim": int(f_test.shape[1]),
                                    "input_shape": list(ex.input_shape),
                                    "seconds": round(time.perf_counter() - t0, 2)}  # fmt: skip
    atomic.write_text(out_dir / "meta.json", json.dumps(meta, indent=2) + "\n")
    return meta
