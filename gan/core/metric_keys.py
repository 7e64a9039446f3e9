"""The keys of metrics.json, built in one place (like torch-fidelity's KEY_METRIC_FID).

A metric measured in an extractor's features is keyed `<metric>_<extractor>` (`fid_classifier`,
`kid_judge`); its real-vs-real twin adds `_floor`, its spread `_std`, its bootstrap interval `_ci95`.
Readers (the config's promote.metric, the gate, the run history, the report) use these functions rather than
rebuilding the strings. Torch-free and in the core layer, so the config can name them too.
"""

from __future__ import annotations

FID, KID, IS = "fid", "kid", "is"
PRDC = ("precision", "recall", "density", "coverage")

CLASSES_COVERED = "classes_covered"
NUM_CLASSES = "num_classes"
CLASS_KL = "class_kl"
CONDITIONAL_ACCURACY = "conditional_accuracy"
MEMORISATION_EXTRACTOR = "judge"  # the data-copying test runs in the judge's features
EXTRACTORS = ("classifier", "judge", "inception")  # every feature extractor evaluate knows
# The domain's own extractors in the order they are preferred (promote.metric auto, the quality probe): the
# classifier where the data has labels and it passed its soundness test, else the judge.
DOMAIN_EXTRACTORS = ("classifier", "judge")


def metric(kind: str, extractor: str) -> str:
    """`kind` measured in `extractor`'s features: metric("precision", "judge") -> "precision_judge"."""
    return f"{kind}_{extractor}"


def fid(extractor: str) -> str:
    return metric(FID, extractor)


def kid(extractor: str) -> str:
    return metric(KID, extractor)


def inception_score(extractor: str) -> str:
    """The Inception Score (the classifier score for the domain classifier)."""
    return metric(IS, extractor)


def floor(key: str) -> str:
    """The same metric with real images in place of the generated ones: "fid_judge" -> "fid_judge_floor"."""
    return f"{key}_floor"


def std(key: str) -> str:
    return f"{key}_std"


def ci95(key: str) -> str:
    return f"{key}_ci95"


def copy_ct(extractor: str) -> str:
    """The data-copying statistic C_T (strongly negative: copying)."""
    return metric("copy_ct", extractor)


def copy_fraction(extractor: str) -> str:
    return metric("copy_fraction", extractor)


def copying(extractor: str) -> str:
    return metric("copying", extractor)


def copy_threshold(extractor: str) -> str:
    return metric("copy_threshold", extractor)


def copy_cells(extractor: str) -> str:
    return metric("copy_cells", extractor)


def separates(extractor: str) -> str:
    """Whether the extractor passed its soundness test on this data."""
    return metric("separates", extractor)


def soundness(extractor: str) -> str:
    return metric("soundness", extractor)


def extractor_of(key: str) -> str:
    """The extractor a distance key (fid_/kid_) names: "fid_classifier" -> "classifier"."""
    return key.split("_", 1)[1]
