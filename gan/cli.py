"""`python -m gan STAGE`: the stage commands `dvc.yaml` runs.

Each command validates params.yaml (plus any `--set KEY=VALUE`) first, so a
bad setting stops the run before any work; stage logic lives in the modules.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from gan import atomic
from gan.config import ConfigError, Params, load_params
from gan.errors import PipelineError

DATA = Path("data")
RAW = DATA / "raw"
PREPARED = DATA / "prepared"
MODELS = DATA / "models"
METRICS = DATA / "metrics"
CHECKPOINTS = DATA / "checkpoints"
REFERENCE = DATA / "reference"
TRAIN_LOG = DATA / "train"
SAMPLES = DATA / "samples"


def stage_download(p: Params) -> None:
    from gan.datasets import get_dataset
    from gan.download import FetchSettings, download_dataset

    d = p.data
    settings = FetchSettings(
        connect_timeout=d.connect_timeout, read_timeout=d.read_timeout, retries=d.retries, progress=sys.stderr.isatty()
    )
    download_dataset(get_dataset(d.dataset), RAW / d.dataset, d.mirrors, settings)


def stage_prepare(p: Params) -> None:
    from gan.datasets import get_dataset
    from gan.prepare import prepare

    prepare(get_dataset(p.data.dataset), RAW / p.data.dataset, PREPARED, p.data.limit_train, p.data.limit_test)


def stage_classifier(p: Params) -> None:
    from gan.classifier import train_classifier
    from gan.datasets import get_dataset

    train_classifier(
        p.classifier,
        PREPARED / "train.npz",
        PREPARED / "test.npz",
        MODELS / "classifier.pt",
        METRICS / "classifier.json",
        num_classes=len(get_dataset(p.data.dataset).classes),
        device=p.train.device,
    )


def stage_train(p: Params) -> None:
    from gan.train import TrainOutputs, train

    train(p.model, p.train, PREPARED / "train.npz", TrainOutputs(MODELS / "generator.pt", CHECKPOINTS, TRAIN_LOG))


def stage_reference(p: Params) -> None:
    from gan.reference import build_reference

    build_reference(p.evaluate, MODELS / "classifier.pt", PREPARED / "train.npz", PREPARED / "test.npz", REFERENCE,
                    device=p.train.device)  # fmt: skip


def stage_evaluate(p: Params) -> None:
    from gan.datasets import get_dataset
    from gan.evaluate import evaluate

    evaluate(p.evaluate, MODELS / "generator.pt", MODELS / "classifier.pt", REFERENCE, METRICS / "metrics.json",
             classes=list(get_dataset(p.data.dataset).classes), device=p.train.device)  # fmt: skip


def evaluate_samples(p: Params, samples: str, out: str | None) -> None:
    """`gan evaluate --samples PATH`: score external samples on the same scale as ours."""
    import json

    from gan.datasets import get_dataset
    from gan.evaluate import score_images
    from gan.imagefiles import load_samples

    metrics = score_images(load_samples(samples), p.evaluate, MODELS / "classifier.pt", REFERENCE,
                           list(get_dataset(p.data.dataset).classes), p.train.device)  # fmt: skip
    metrics["samples"] = str(samples)
    text = json.dumps(metrics, indent=2) + "\n"
    if out:
        atomic.write_text(out, text)
    print(text, end="")


def stage_export(p: Params) -> None:
    from gan.export import export

    export(
        p.export,
        p,
        MODELS / "generator.pt",
        METRICS / "metrics.json",
        PREPARED / "summary.json",
        TRAIN_LOG / "summary.json",
        SAMPLES,
    )


STAGES = {
    "download": stage_download,
    "prepare": stage_prepare,
    "classifier": stage_classifier,
    "train": stage_train,
    "reference": stage_reference,
    "evaluate": stage_evaluate,
    "export": stage_export,
}

# What each stage writes: its dvc.yaml outs and metrics (tests/test_reliability.py checks that the two agree).
OUTPUTS = {
    "download": (RAW,),
    "prepare": (PREPARED,),
    "classifier": (MODELS / "classifier.pt", METRICS / "classifier.json"),
    "train": (MODELS / "generator.pt", TRAIN_LOG, CHECKPOINTS),
    "reference": (REFERENCE,),
    "evaluate": (METRICS / "metrics.json",),
    "export": (SAMPLES,),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gan", description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=[*STAGES, "check"], help="stage to run ('check' only validates params)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set train.epochs=5 (repeatable)",
    )
    parser.add_argument(
        "--samples",
        metavar="PATH",
        help="with 'evaluate': score these samples (.npz key 'images', .npy, or a folder of 28×28 PNGs) instead "
        "of the generator, against the same reference; needs the classifier and reference stages done",
    )
    parser.add_argument("--out", metavar="FILE", help="with --samples: also write the metrics JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        params = load_params(args.params, args.overrides)
        if args.samples:
            if args.stage != "evaluate":
                parser.error("--samples goes with the 'evaluate' command")
            evaluate_samples(params, args.samples, args.out)
        elif args.stage != "check":
            # Temps a killed run left (persist outputs such as data/train would be cached with them). Under
            # torchrun every rank does this before the process group forms, so before any rank writes.
            atomic.remove_stale_temps(OUTPUTS[args.stage])
            STAGES[args.stage](params)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (PipelineError, OSError) as err:  # known failure kinds get one clear line, not a traceback
        print(f"error in stage {args.stage}: {err}", file=sys.stderr)
        return 1
    return 0
