"""Evaluate stage: scoring generated (or external) samples against the reference features.

`evaluate` stage: n generated images, quantised to uint8 exactly like real
images, scored against the reference: FID (with a bootstrap interval), KID, IS,
precision/recall/density/coverage, class coverage and per-class FID, and in the
judge's features the memorisation check (gan/evaluation/memorisation.py). Every metric has its
`_floor` twin: the same metric with real images in place of the generated ones (n real
*train* images scored against the same real test images where it compares two sets;
unseen test images for memorisation). Images are uint8 N×C×H×W of the prepared data's
shape (the reference records it); class metrics come only with labelled data, and what
does not apply is listed under `not_applicable` with the reason. `gan evaluate
--samples PATH` scores any external samples the same way.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from gan.core import atomic
from gan.core import metric_keys as keys
from gan.core.config import ConfigError, EvaluateConfig
from gan.core.splits import LEGACY_IMAGE_SHAPE, load_split, shape_text
from gan.core.tensors import ImageShapeError, check_image_shape, resolve_device, to_uint8
from gan.evaluation.features import Extractor, ExtractorFiles, build_extractors
from gan.evaluation.memorisation import TooFewPoints, memorisation
from gan.evaluation.metrics import (
    bootstrap_fid,
    class_histogram,
    classes_covered,
    fid_from_features,
    inception_score,
    kid,
    kl_divergence,
    prdc,
)
from gan.training.models import load_generator
from gan.training.sampling import requested_labels, sample_batches

log = logging.getLogger(__name__)
MIN_PER_CLASS = 50  # fewer samples of a class than this: no per-class FID (covariance too noisy)


NO_JUDGE = "the memorisation check runs in the judge's features: add 'judge' to evaluate.extractors"


def _extractor_metrics(name: str, cfg: EvaluateConfig, ref: dict, f_fake: np.ndarray, p_fake: np.ndarray | None
                       ) -> dict:  # fmt: skip
    f_test, f_train = ref["test_features"], ref["train_features"]
    m: dict = {}
    fid, kid_, is_ = keys.fid(name), keys.kid(name), keys.inception_score(name)
    m[fid] = fid_from_features(f_fake, f_test)
    m[keys.floor(fid)] = fid_from_features(f_train, f_test)
    if cfg.bootstrap:
        m[keys.ci95(fid)] = list(bootstrap_fid(f_fake, f_test, cfg.bootstrap, cfg.seed))
        m[keys.ci95(keys.floor(fid))] = list(bootstrap_fid(f_train, f_test, cfg.bootstrap, cfg.seed))
    raw = name == "inception"  # Inception's KID as published (torch-fidelity's scale); the domain's standardised
    kid_args = (cfg.kid_subsets, cfg.kid_subset_size, cfg.seed, not raw)
    m[kid_], m[keys.std(kid_)] = kid(f_test, f_fake, *kid_args)
    m[keys.floor(kid_)], m[keys.std(keys.floor(kid_))] = kid(f_test, f_train, *kid_args)
    if p_fake is not None:  # the judge has no classes, so no score of class confidence
        m[is_], m[keys.std(is_)] = inception_score(p_fake)
        m[keys.floor(is_)], m[keys.std(keys.floor(is_))] = inception_score(ref["train_probs"])
    k = min(cfg.prdc_samples, len(f_fake), len(f_test))
    rng = np.random.default_rng(cfg.seed)
    real_k = f_test[rng.choice(len(f_test), k, replace=False)]
    side = rng.choice(len(f_fake), k, replace=False)  # the same draw for the generated and the floor's train side
    for key, v in prdc(real_k, f_fake[side], cfg.prdc_k).items():
        m[keys.metric(key, name)] = v
    for key, v in prdc(real_k, f_train[side], cfg.prdc_k).items():
        m[keys.floor(keys.metric(key, name))] = v
    return m


def _class_metrics(ref: dict, p_fake: np.ndarray, f_fake: np.ndarray, classes: list[str]) -> dict:
    """Class coverage and per-class FID from the domain classifier (labelled datasets)."""
    k = p_fake.shape[1]
    # Every side is grouped by the classifier's prediction, real test images too: a classifier's own bias (a
    # weak one calling most images its largest class) then cancels out instead of counting as missing classes.
    pred = p_fake.argmax(1)
    pred_real = ref["test_probs"].argmax(1)
    h_real = class_histogram(pred_real, k)
    h_fake = class_histogram(pred, k)
    pred_floor = ref["train_probs"].argmax(1)
    h_floor = class_histogram(pred_floor, k)
    per_class, per_class_floor = {}, {}
    for c in range(k):
        real_c = ref["test_features"][pred_real == c]
        fake_c = f_fake[pred == c]
        train_c = ref["train_features"][pred_floor == c]
        label = classes[c] if c < len(classes) else str(c)
        per_class[label] = round(fid_from_features(fake_c, real_c), 4) if len(fake_c) >= MIN_PER_CLASS else None
        per_class_floor[label] = round(fid_from_features(train_c, real_c), 4) if len(train_c) >= MIN_PER_CLASS else None
    covered = classes_covered(h_fake, h_real)
    return {
        keys.NUM_CLASSES: k,
        keys.CLASSES_COVERED: covered,
        keys.floor(keys.CLASSES_COVERED): classes_covered(h_floor, h_real),
        "mode_collapse": covered < int((h_real > 0).sum()),
        keys.CLASS_KL: kl_divergence(h_fake, h_real),
        keys.floor(keys.CLASS_KL): kl_divergence(h_floor, h_real),
        "class_histogram": [round(float(v), 5) for v in h_fake],
        "mean_confidence": float(p_fake.max(1).mean()),
        "mean_confidence_floor": float(ref["train_probs"].max(1).mean()),
        "per_class_fid_classifier": per_class,
        "per_class_fid_classifier_floor": per_class_floor,
    }


def _conditional_metrics(p_fake: np.ndarray, requested: np.ndarray, classes: list[str]) -> dict:
    """How often the classifier agrees with the class a conditional G was asked for: overall and per class."""
    pred = p_fake.argmax(1)
    per_class = {}
    for c in range(p_fake.shape[1]):
        asked = requested == c
        label = classes[c] if c < len(classes) else str(c)
        per_class[label] = round(float((pred[asked] == c).mean()), 4) if asked.any() else None
    return {keys.CONDITIONAL_ACCURACY: float((pred == requested).mean()),
            f"{keys.CONDITIONAL_ACCURACY}_per_class": per_class}  # fmt: skip


def _memorisation_metrics(name: str, cfg: EvaluateConfig, ref: dict, f_fake: np.ndarray) -> tuple[dict, list]:
    """The data-copying test in this extractor's features; also returns the closest generated/training pairs."""
    r = memorisation(ref["train_all_features"], ref["test_features"], f_fake, cells=cfg.copy_cells,
                     copy_quantile=cfg.copy_quantile, seed=cfg.seed, n_pairs=cfg.copy_pairs)  # fmt: skip
    ct, fraction = keys.copy_ct(name), keys.copy_fraction(name)
    m = {ct: r["ct"], keys.floor(ct): r["ct_floor"], keys.copying(name): r["copying"],
         fraction: r["copy_fraction"], keys.floor(fraction): r["copy_fraction_floor"],
         keys.copy_threshold(name): r["copy_threshold"], keys.copy_cells(name): r["cells"]}  # fmt: skip
    return m, r["closest_pairs"]


def _write_pairs(path: Path, pairs: list, fake_u8: torch.Tensor, train_split: Path) -> None:
    """The closest pairs as images: generated[i] beside its nearest training image, for the picture."""
    train = load_split(train_split)
    gen_idx = np.array([p["generated"] for p in pairs], dtype=np.int64)
    train_idx = np.array([p["train"] for p in pairs], dtype=np.int64)
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, generated=fake_u8[gen_idx].numpy(), train=train.images[train_idx], generated_index=gen_idx,
                 train_index=train_idx, distance=np.array([p["distance"] for p in pairs]))  # fmt: skip


def _round(v):
    if isinstance(v, float):
        return round(v, 6)
    if isinstance(v, list):
        return [_round(x) for x in v]
    return v


def load_reference_meta(reference_dir: str | Path) -> dict:
    """The reference's meta.json (n, image shape, labels, extractors); a clear error when it was not built."""
    meta_path = Path(reference_dir) / "meta.json"
    if not meta_path.exists():
        raise ConfigError(f"{meta_path} missing: build the reference first (`dvc repro reference`)")
    return json.loads(meta_path.read_text())


def reference_shape(meta: dict) -> tuple[int, int, int]:
    """The C×H×W of the real images the reference holds (references built before it was recorded: legacy)."""
    return tuple(meta.get("image_shape", LEGACY_IMAGE_SHAPE))


def _check_shape(images: torch.Tensor, meta: dict, reference_dir: str | Path) -> None:
    check_image_shape(images, reference_shape(meta), f"the prepared data's shape, as {reference_dir} records it")


def _score(
    fake_u8: torch.Tensor, cfg: EvaluateConfig, reference_dir: Path, meta: dict, extractors: dict[str, Extractor],
    not_applicable: dict[str, str], classes: list[str] | None, requested: torch.Tensor | None = None,
    features: dict[str, np.ndarray] | None = None,
) -> tuple[dict, list]:  # fmt: skip
    """All metrics of `fake_u8` against the reference; also the memorisation check's closest pairs ([] without).
    `requested`: the class a conditional G was asked for, per image (None for an unconditional G); `features`, when
    given, receives each extractor's features of the images (by extractor name)."""
    n = meta["n"]
    fake_u8 = fake_u8[:n]
    metrics: dict = {"n": n, "reference_split": meta["reference_split"], "floor_split": meta["floor_split"]}
    not_applicable = dict(not_applicable)
    pairs: list = []
    for name, ex in extractors.items():
        info = meta["extractors"].get(name)
        if info is None or info["weights_sha256"] != ex.weights_sha256:
            raise ConfigError(
                f"{reference_dir}: no reference features for extractor {name!r} with these weights; "
                "rebuild them (`dvc repro reference`)"
            )
        with np.load(reference_dir / f"{name}.npz") as z:
            ref = {k: z[k] for k in z.files}
        f_fake, p_fake = ex(fake_u8)
        if features is not None:
            features[name] = f_fake
        metrics[f"extractor_{name}_sha256"] = ex.weights_sha256
        metrics[f"feature_dim_{name}"] = info["feature_dim"]
        record = getattr(ex, "soundness", None)  # its soundness test on this data (gan.evaluation.soundness)
        if record is not None:
            metrics[keys.separates(name)] = record["separates"]
            metrics[keys.soundness(name)] = record
        metrics.update(_extractor_metrics(name, cfg, ref, f_fake, p_fake))
        if name == "classifier":
            metrics["classifier_test_accuracy"] = ex.test_accuracy
            if meta.get("labeled", True):  # class metrics only where the real images have labels
                metrics.update(_class_metrics(ref, p_fake, f_fake, classes or []))
            if requested is not None:
                metrics.update(_conditional_metrics(p_fake, requested[:n].numpy(), classes or []))
        if "train_all_features" in ref:
            try:
                found, pairs = _memorisation_metrics(name, cfg, ref, f_fake)
                metrics.update(found)
            except TooFewPoints as err:  # a tiny folder: say so rather than report a number without meaning
                not_applicable["memorisation"] = f"too few images for the data-copying test ({err})"
    if "classifier" in not_applicable:
        not_applicable["class_metrics"] = not_applicable["classifier"]
    if requested is not None and "classifier" not in extractors:
        not_applicable["conditional_accuracy"] = not_applicable.get(
            "classifier", "needs the domain classifier: add 'classifier' to evaluate.extractors"
        )
    if "judge" not in extractors:
        not_applicable["memorisation"] = NO_JUDGE
    if not_applicable:
        metrics["not_applicable"] = not_applicable
    return metrics, pairs


def _finish(metrics: dict, t0: float) -> dict:
    metrics["seconds"] = round(time.perf_counter() - t0, 2)
    return {k: _round(v) if not isinstance(v, dict) else {c: _round(x) for c, x in v.items()}
            for k, v in metrics.items()}  # fmt: skip


def score_images(
    fake_u8: torch.Tensor, cfg: EvaluateConfig, files: ExtractorFiles, reference_dir: str | Path,
    classes: list[str] | None = None, device: str = "auto", requested: torch.Tensor | None = None,
    features: dict[str, np.ndarray] | None = None,
) -> dict:  # fmt: skip
    """Score uint8 images N×C×H×W (the prepared data's shape, as the reference records it) against the cached
    reference features. `classes`: the class names (data/prepared/summary.json), for the per-class metrics;
    `requested`: for a conditional G's images, the class each was asked for (reports `conditional_accuracy`);
    `features`, when given, receives the images' features per extractor (for a paired comparison)."""
    t0 = time.perf_counter()
    reference_dir = Path(reference_dir)
    meta = load_reference_meta(reference_dir)
    _check_shape(fake_u8, meta, reference_dir)
    n = meta["n"]
    if len(fake_u8) < n:
        raise ConfigError(f"need at least n={n} samples (evaluate.n_samples / the reference size), got {len(fake_u8)}")
    extractors, not_applicable = build_extractors(cfg.extractors, files, resolve_device(device), cfg.batch_size)
    scored = _score(fake_u8, cfg, reference_dir, meta, extractors, not_applicable, classes, requested, features)
    return _finish(scored[0], t0)


def generated_images(generator_path: str | Path, cfg: EvaluateConfig, n: int, device: str = "auto"
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """The n uint8 images the evaluate stage scores for this generator (drawn with evaluate.seed), and the class each
    was asked for (None for an unconditional G): the same images on every call, on one machine type."""
    G, _ = load_generator(generator_path, resolve_device(device))
    requested = requested_labels(n, G.num_classes) if G.num_classes else None
    fake = torch.cat([to_uint8(b).cpu() for b in sample_batches(G, n, cfg.seed, cfg.batch_size, requested)])
    return fake, requested


def reference_features(reference_dir: str | Path, extractor: str) -> np.ndarray:
    """The real images every generated set is compared with (the reference's test features) in one extractor."""
    with np.load(Path(reference_dir) / f"{extractor}.npz") as z:
        return z["test_features"]


def distance_on_features(metric: str, cfg: EvaluateConfig) -> Callable[[np.ndarray, np.ndarray], float]:
    """distance(real_features, generated_features) as evaluate computes `metric` (fid_E or kid_E) on them."""
    kind, extractor = metric.split("_", 1)
    if kind == keys.FID:
        return fid_from_features
    if kind == keys.KID:
        args = (cfg.kid_subsets, cfg.kid_subset_size, cfg.seed, extractor != "inception")
        return lambda real, fake: kid(real, fake, *args)[0]
    raise ConfigError(f"{metric!r} is not a distance evaluate computes (fid_E or kid_E)")


def evaluate(
    cfg: EvaluateConfig, generator_path: str | Path, files: ExtractorFiles, reference_dir: str | Path,
    out_metrics: str | Path, classes: list[str] | None = None, device: str = "auto",
    train_split: str | Path | None = None, out_pairs: str | Path | None = None,
) -> dict:  # fmt: skip
    """The evaluate stage: n samples from the generator, scored, written to metrics.json; with `out_pairs` (and
    the `train_split` the judge's reference was built on) also the memorisation check's closest pairs as images.

    The generator must make images of the reference's shape, and at least one extractor must apply to the data:
    both are checked before any image is drawn.
    """
    t0 = time.perf_counter()
    reference_dir = Path(reference_dir)
    meta = load_reference_meta(reference_dir)
    dev = resolve_device(device)
    G, _ = load_generator(generator_path, dev)
    if tuple(G.image_shape) != reference_shape(meta):
        raise ImageShapeError(
            f"{generator_path} makes {shape_text(G.image_shape)} images, but {reference_dir} holds "
            f"{shape_text(reference_shape(meta))} (the prepared data's shape): re-run `train` on the prepared data"
        )
    extractors, not_applicable = build_extractors(cfg.extractors, files, dev, cfg.batch_size)
    fake, requested = generated_images(generator_path, cfg, meta["n"], device)
    metrics, pairs = _score(fake, cfg, reference_dir, meta, extractors, not_applicable, classes, requested)
    metrics = _finish(metrics, t0)
    if out_pairs is not None:
        if pairs and train_split is not None:
            _write_pairs(Path(out_pairs), pairs, fake, Path(train_split))
        else:  # no judge: no pairs; an empty file keeps the stage's output defined
            with atomic.atomic_path(out_pairs) as tmp, open(tmp, "wb") as f:
                np.savez(f, generated=np.zeros((0, *reference_shape(meta)), np.uint8))
    atomic.write_text(out_metrics, json.dumps(metrics, indent=2) + "\n")
    found = [f"{keys.fid(e)} {metrics[keys.fid(e)]:.4f} (floor {metrics[keys.floor(keys.fid(e))]:.4f})"
             for e in extractors]  # fmt: skip
    ct, judge = keys.copy_ct(keys.MEMORISATION_EXTRACTOR), keys.MEMORISATION_EXTRACTOR
    if ct in metrics:
        found.append(f"data-copying C_T {metrics[ct]:.2f} (floor {metrics[keys.floor(ct)]:.2f}), "
                     f"likely copies {metrics[keys.copy_fraction(judge)]:.2%}")  # fmt: skip
    if "classes_covered" in metrics:
        found.append(f"classes {metrics['classes_covered']}/{metrics['num_classes']}")
    if "conditional_accuracy" in metrics:
        found.append(f"requested class recognised {metrics['conditional_accuracy']:.1%}")
    log.info("evaluate: %s", ", ".join(found))
    return metrics
