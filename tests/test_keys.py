"""metrics.json keys come from gan/core/metric_keys.py and stay exactly what they were (readers depend on them)."""

from __future__ import annotations

import numpy as np

from gan.core import metric_keys as keys
from gan.core.config import EvaluateConfig
from gan.evaluation.evaluate import _extractor_metrics
from gan.outputs.metric_table import summary_rows


def test_keys_are_the_names_metrics_json_has_always_used():
    assert (keys.fid("classifier"), keys.kid("judge"), keys.inception_score("inception")) == (
        "fid_classifier", "kid_judge", "is_inception")  # fmt: skip
    assert keys.floor(keys.kid("judge")) == "kid_judge_floor" and keys.std(keys.floor("kid_judge")) == (
        "kid_judge_floor_std")  # fmt: skip
    assert keys.ci95(keys.floor(keys.fid("judge"))) == "fid_judge_floor_ci95"
    assert (keys.copy_ct("judge"), keys.copy_fraction("judge"), keys.copying("judge")) == (
        "copy_ct_judge", "copy_fraction_judge", "copying_judge")  # fmt: skip
    assert (keys.separates("judge"), keys.soundness("judge")) == ("separates_judge", "soundness_judge")
    assert keys.extractor_of("kid_inception") == "inception" and keys.metric("coverage", "judge") == "coverage_judge"


def test_the_evaluate_stage_writes_exactly_these_keys_per_extractor():
    rng = np.random.default_rng(0)
    ref = {"test_features": rng.normal(size=(40, 6)), "train_features": rng.normal(size=(40, 6)),
           "train_probs": rng.dirichlet(np.ones(4), 40)}  # fmt: skip
    cfg = EvaluateConfig(bootstrap=3, kid_subsets=2, kid_subset_size=10, prdc_samples=20, prdc_k=3)
    m = _extractor_metrics("classifier", cfg, ref, rng.normal(size=(40, 6)), rng.dirichlet(np.ones(4), 40))
    base = ["fid", "kid", "is", "precision", "recall", "density", "coverage"]
    expected = {f"{b}_classifier{f}" for b in base for f in ("", "_floor")}
    expected |= {"fid_classifier_ci95", "fid_classifier_floor_ci95"}
    expected |= {"kid_classifier_std", "kid_classifier_floor_std", "is_classifier_std", "is_classifier_floor_std"}
    assert set(m) == expected
    rows = {r["metric"]: r for r in summary_rows(m)}
    assert set(rows) == {"FID (classifier)", "KID (classifier)", "classifier score (classifier)",
                         "precision (classifier)", "recall (classifier)", "density (classifier)",
                         "coverage (classifier)"}  # fmt: skip
    assert " ± " in rows["KID (classifier)"]["floor"] and "[" in rows["FID (classifier)"]["value"]
