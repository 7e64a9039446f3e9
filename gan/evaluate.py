"""Evaluate stage: FID-style scores of the generator with the domain classifier.

Generated images are quantised to uint8 first, exactly like real images, so
the two sides of every distance went through the same pipeline. Beside the
generated-vs-test distance we report the real-train-vs-test distance with the
same n: the floor a perfect generator would reach.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from gan import atomic
from gan.classifier import load_classifier, predict
from gan.config import ConfigError, EvaluateConfig
from gan.metrics import class_histogram, classes_covered, fid_from_features, kl_divergence
from gan.prepare import load_split
from gan.sampling import sample_batches
from gan.tensors import from_uint8, resolve_device, to_uint8
from gan.train import load_generator

log = logging.getLogger(__name__)


def _scores(model, images_u8: torch.Tensor, batch_size: int, device) -> tuple[np.ndarray, np.ndarray]:
    feats, probs = [], []
    for i in range(0, len(images_u8), batch_size):
        f, p = predict(model, from_uint8(images_u8[i : i + batch_size].to(device)), batch_size)
        feats.append(f.numpy())
        probs.append(p.numpy())
    return np.concatenate(feats), np.concatenate(probs)


def evaluate(
    cfg: EvaluateConfig,
    generator_path: str | Path,
    classifier_path: str | Path,
    train_split: str | Path,
    test_split: str | Path,
    out_metrics: str | Path,
    device: str = "auto",
) -> dict:
    t0 = time.perf_counter()
    dev = resolve_device(device)
    G, _ = load_generator(generator_path, dev)
    clf, clf_acc = load_classifier(classifier_path, dev)
    train, test = load_split(train_split), load_split(test_split)
    n = min(cfg.n_samples, len(test.labels), len(train.labels))
    if n < 2:
        raise ConfigError(f"evaluate.n_samples: need at least 2 real images per split, have {n}")
    if n < cfg.n_samples:
        log.warning("evaluate.n_samples=%d but only %d real images available: using n=%d", cfg.n_samples, n, n)
    num_classes = clf.head.out_features

    rng = np.random.default_rng(cfg.seed)
    train_idx = np.sort(rng.choice(len(train.labels), size=n, replace=False))
    real_test = torch.from_numpy(test.images[:n])
    real_train = torch.from_numpy(train.images[train_idx])
    fake = torch.cat([to_uint8(b).cpu() for b in sample_batches(G, n, cfg.seed, cfg.batch_size)])

    f_test, p_test = _scores(clf, real_test, cfg.batch_size, dev)
    f_train, p_train = _scores(clf, real_train, cfg.batch_size, dev)
    f_fake, p_fake = _scores(clf, fake, cfg.batch_size, dev)

    h_real = class_histogram(test.labels[:n], num_classes)
    h_fake = class_histogram(p_fake.argmax(1), num_classes)
    h_train = class_histogram(p_train.argmax(1), num_classes)
    metrics = {
        "fd_classifier": round(fid_from_features(f_fake, f_test), 4),
        "fd_classifier_floor": round(fid_from_features(f_train, f_test), 4),
        "classes_covered": classes_covered(h_fake, h_real),
        "classes_covered_floor": classes_covered(h_train, h_real),
        "num_classes": num_classes,
        "class_kl": round(kl_divergence(h_fake, h_real), 5),
        "class_kl_floor": round(kl_divergence(h_train, h_real), 5),
        "mean_confidence": round(float(p_fake.max(1).mean()), 5),
        "mean_confidence_floor": round(float(p_test.max(1).mean()), 5),
        "classifier_test_accuracy": round(clf_acc, 5),
        "n": n,
        "extractor": "domain-classifier",
        "reference_split": "test",
        "floor": "real train (random n) vs real test (first n)",
        "seconds": round(time.perf_counter() - t0, 2),
    }
    atomic.write_text(out_metrics, json.dumps(metrics, indent=2) + "\n")
    log.info("evaluate: %s", metrics)
    return metrics
