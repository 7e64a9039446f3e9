"""`python -m gan STAGE`: the stage commands `dvc.yaml` runs.

Each command validates params.yaml (plus any `--set KEY=VALUE`) first, so a
bad setting stops the run before any work; stage logic lives in the modules.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from gan.config import ConfigError, Params, load_params

DATA = Path("data")
RAW = DATA / "raw"
PREPARED = DATA / "prepared"
MODELS = DATA / "models"
METRICS = DATA / "metrics"
CHECKPOINTS = DATA / "checkpoints"
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


def stage_evaluate(p: Params) -> None:
    from gan.evaluate import evaluate

    evaluate(
        p.evaluate,
        MODELS / "generator.pt",
        MODELS / "classifier.pt",
        PREPARED / "train.npz",
        PREPARED / "test.npz",
        METRICS / "metrics.json",
        device=p.train.device,
    )


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
    "evaluate": stage_evaluate,
    "export": stage_export,
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        params = load_params(args.params, args.overrides)
        if args.stage != "check":
            STAGES[args.stage](params)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # known failure kinds get one clear line, not a traceback
        from gan.download import DownloadError
        from gan.idx import IDXError
        from gan.train import DivergenceError

        if isinstance(err, (DownloadError, IDXError, DivergenceError, OSError)):
            print(f"error in stage {args.stage}: {err}", file=sys.stderr)
            return 1
        raise
    return 0
