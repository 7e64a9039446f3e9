"""The champion/challenger gate of a pipeline run, and the run's row of the history.

`run_gate` re-scores the champion with today's evaluation setup (`rescore_champion`: nothing written), compares
the candidate with it on the same real images (`compare_with_champion`: a paired bootstrap of their difference),
decides with `champion.decide`, and promotes the candidate only when it is better beyond the noise;
`history_row` turns the gate's result into one row of data/history/runs.csv. The Prefect flow (flows/pipeline.py)
calls both.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from gan.core import metric_keys as keys
from gan.core.config import AUTO_METRIC, EvaluateConfig, Params, PromoteConfig, auto_metric
from gan.core.paths import PATHS, Paths
from gan.core.splits import read_summary, shape_text
from gan.evaluation.metrics import PairedDifference, paired_bootstrap
from gan.lifecycle import dvcrun
from gan.lifecycle.champion import FILES as CHAMPION_FILES
from gan.lifecycle.champion import decide, metric_value, promote, read_record, summary_lines

Logger = logging.Logger | logging.LoggerAdapter


def rescore_champion(
    cfg: EvaluateConfig, generator_path: Path, paths: Paths, classes: list[str], device: str = "auto",
    features: dict | None = None,
) -> dict:  # fmt: skip
    """The champion's metrics on today's evaluation setup (extractors, reference, n): the evaluate stage's
    numbers for its generator, returned, not written. `features`, when given, receives its images' features per
    extractor."""
    from gan.evaluation.evaluate import generated_images, load_reference_meta, score_images
    from gan.evaluation.features import ExtractorFiles

    n = load_reference_meta(paths.reference)["n"]
    fake, requested = generated_images(generator_path, cfg, n, device)
    files = ExtractorFiles(paths.classifier, paths.judge, cfg.inception_weights)
    return score_images(fake, cfg, files, paths.reference, classes=classes, device=device, requested=requested,
                        features=features)  # fmt: skip


PAIRED_SAMPLES = 5000  # images of each generator in the paired comparison, in a domain extractor's features
PAIRED_REFERENCE = 10000  # training images, at most, both generators are compared with there


def compare_with_champion(
    metric: str, cfg: EvaluateConfig, promote: PromoteConfig, paths: Paths, champion_generator: Path,
    device: str = "auto",
) -> PairedDifference:  # fmt: skip
    """The candidate (this run's generator) minus the champion in `metric`'s distance, on the same real images, with
    its paired bootstrap interval.

    In a domain extractor's features (classifier, judge) the two are compared as the small-folder ruler resolves
    them (docs/measurements/metrics.md): `PAIRED_SAMPLES` images of each (drawn with evaluate.seed) against the
    training images (at most `PAIRED_REFERENCE`, a seeded draw), not the n test images the evaluate stage scores
    with: on 3,390 emoji at 32 px that told two whole models apart (an interval of +24 to +46 FD) where n = 377
    could not (-43 to +89). The training images are no floor here, only the common reference both generators are
    measured against, so that the extractors having seen them does not matter. With Inception (2048-d, slow on a
    CPU) it is the evaluate stage's n images against its test features."""
    import torch

    from gan.core.splits import load_split
    from gan.core.tensors import resolve_device
    from gan.evaluation.evaluate import distance_on_features, generated_images, load_reference_meta, reference_features
    from gan.evaluation.features import ExtractorFiles, build_extractors

    extractor = keys.extractor_of(metric)
    files = ExtractorFiles(paths.classifier, paths.judge, cfg.inception_weights)
    built, _ = build_extractors([extractor], files, resolve_device(device), cfg.batch_size)
    embed = built[extractor]
    if extractor == "inception":
        k, real = load_reference_meta(paths.reference)["n"], reference_features(paths.reference, extractor)
    else:
        train = load_split(paths.train_split).images
        rng = np.random.default_rng(cfg.seed)
        chosen = np.sort(rng.choice(len(train), min(len(train), PAIRED_REFERENCE), replace=False))
        k, real = PAIRED_SAMPLES, embed(torch.from_numpy(train[chosen]))[0]

    def features(generator: Path) -> np.ndarray:
        return embed(generated_images(generator, cfg, k, device)[0])[0]

    return paired_bootstrap(distance_on_features(metric, cfg), real, features(champion_generator),
                            features(paths.generator), promote.bootstrap, cfg.seed, promote.confidence)  # fmt: skip


def run_gate(root: Path, params: Params, flow_run_id: str, logger: Logger) -> dict:
    """Re-score the champion, compare it with this run's metrics.json, promote the candidate only if better.

    Returns {decision, candidate, champion (re-scored metrics or None), previous_record, flow_run_id}.
    """
    from gan.training.models import generator_shape

    paths = Paths(root)
    candidate = json.loads(paths.metrics.read_text())
    metric = auto_metric(candidate) if params.promote.metric == AUTO_METRIC else params.promote.metric
    metric_value(candidate, metric)  # absent: say so before spending time on re-scoring the champion
    champ_dir = root / PATHS.champion
    record = read_record(champ_dir)  # also recovers a promotion a crash interrupted
    pointer = root / f"{PATHS.champion}.dvc"
    if record is not None and (not pointer.exists() or not dvcrun.is_current(str(pointer.relative_to(root)), root)):
        dvcrun.dvc(["add", str(PATHS.champion)], root)  # a crash after promote() but before its `dvc add`
        logger.info("%s did not match the champion's files: re-added it", pointer)
    champion_now = None
    data = read_summary(paths.prepared_summary)
    champion_shape = generator_shape(champ_dir / "generator.pt") if record is not None else None
    if champion_shape is not None and champion_shape != data.shape:
        # Not comparable on today's data: a champion of another image shape cannot be scored on it.
        logger.info("the champion makes %s images, the data is now %s: it cannot be re-scored; the candidate "
                    "is judged alone", shape_text(champion_shape), shape_text(data.shape))  # fmt: skip
        record = None
    p = params.promote
    paired = None
    if record is not None:
        features: dict = {}
        champion_now = rescore_champion(params.evaluate, champ_dir / "generator.pt", paths, list(data.classes),
                                        device=params.train.device, features=features)  # fmt: skip
        if keys.extractor_of(metric) in features:
            paired = compare_with_champion(metric, params.evaluate, p, paths, champ_dir / "generator.pt",
                                           device=params.train.device)  # fmt: skip
    decision = decide(candidate, champion_now, p.margin, p.require_all_classes, metric=metric,
                      require_sound=p.require_sound, paired=paired)  # fmt: skip
    logger.info("champion gate: %s", " | ".join(summary_lines(decision, candidate)))
    if decision.promote:
        summary = data.raw
        sources = {
            "generator.pt": paths.generator,
            "generator.torchscript.pt": paths.samples / "generator.torchscript.pt",
            "metrics.json": paths.metrics,
            "MODEL_CARD.md": paths.samples / "MODEL_CARD.md",
            "grid.png": paths.grid,
        }
        assert set(sources) == set(CHAMPION_FILES)
        promote(
            sources,
            champ_dir,
            {
                "flow_run_id": flow_run_id,
                "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "data_version": {s: v["sha256_images"] for s, v in summary["splits"].items()},
                "dataset": summary["dataset"],
                "generator_md5": dvcrun.out_hash("train", root, PATHS.generator),
                "metrics": candidate,
                "decision": decision.as_dict(),
            },
        )
        dvcrun.dvc(["add", str(PATHS.champion)], root)
        logger.info("promoted: %s is the new champion", PATHS.champion)
    return {
        "decision": decision.as_dict(),
        "candidate": candidate,
        "champion": champion_now,
        "previous_record": record,
        "flow_run_id": flow_run_id,
    }


def history_row(gate: dict, params: Params, ran: list[str], train_summary: dict) -> dict:
    """One row of data/history/runs.csv: the run, its primary metric beside the champion's, the decision.

    `gate`: what `run_gate` returned; `train_summary`: data/train/summary.json, for the epochs actually trained
    (a time budget can stop early).
    """
    cand, dec = gate["candidate"], gate["decision"]
    metric = dec["metric"]
    return {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "flow_run_id": gate["flow_run_id"],
        "dataset": params.data.dataset,
        "arch": params.model.arch,
        "epochs": train_summary.get("epochs"),
        "steps": train_summary.get("steps"),
        "kimg": train_summary.get("kimg"),
        "stop": train_summary.get("stop"),
        "kept_step": (train_summary.get("kept") or {}).get("step"),
        "stopped_by_time_budget": train_summary.get("stopped_by_time_budget"),
        "stages_run": " ".join(ran),
        "metric": metric,
        "value": dec["candidate_value"],
        "floor": cand.get(keys.floor(metric)),
        "champion_value": dec["champion_value"],
        "difference": dec.get("difference"),  # candidate minus champion, paired, with its interval
        "difference_low": (dec.get("difference_ci") or (None, None))[0],
        "difference_high": (dec.get("difference_ci") or (None, None))[1],
        "classes_covered": cand.get(keys.CLASSES_COVERED),  # none without the classifier extractor
        "class_kl": cand.get(keys.CLASS_KL),
        "promoted": dec["promote"],
    }
