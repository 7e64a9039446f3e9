"""`python -m gan STAGE`: the stage commands `dvc.yaml` runs; `restore` and `sample` for recorded models.

Each stage command validates params.yaml (plus any `--set KEY=VALUE`) first, so a
bad setting stops the run before any work; stage logic lives in the modules.

    python -m gan restore REV [--to DIR]      # a recorded version's generator, metrics, samples, model card
    python -m gan sample [--rev REV] --out F  # new images from the champion (or REV, or --generator FILE)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from gan.core import atomic
from gan.core.config import ConfigError, Params, load_params
from gan.core.errors import PipelineError
from gan.core.paths import PATHS


def _fetch_settings(p: Params):
    from gan.data.download import FetchSettings

    d = p.data
    return FetchSettings(
        connect_timeout=d.connect_timeout, read_timeout=d.read_timeout, retries=d.retries, progress=sys.stderr.isatty()
    )


def stage_source(p: Params) -> None:
    """What the configured source holds now; runs on every `dvc repro`, and the download stage depends on it."""
    d = p.data
    if d.dataset == "folder":
        from gan.data.sources import source_manifest

        manifest = source_manifest(d.source, d.source_sha256, PATHS.cache, _fetch_settings(p))
    else:
        from gan.core.datasets import get_dataset

        spec = get_dataset(d.dataset)  # fixed published files: their checksums are the version
        manifest = {"files": {name: c.hexdigest for name, c in spec.checksums.items()}}
    atomic.write_text(PATHS.source_manifest, json.dumps({"dataset": d.dataset, **manifest}, indent=1, sort_keys=True))


def stage_download(p: Params) -> None:
    d = p.data
    if d.dataset == "folder":
        from gan.data.sources import fetch_source

        fetch_source(d.source, d.source_sha256, PATHS.raw_dataset(d.dataset), PATHS.cache, _fetch_settings(p))
    else:
        from gan.core.datasets import get_dataset
        from gan.data.download import download_dataset

        download_dataset(get_dataset(d.dataset), PATHS.raw_dataset(d.dataset), d.mirrors, _fetch_settings(p))


def stage_prepare(p: Params) -> None:
    from gan.data.prepare import prepare

    prepare(p.data, PATHS.raw_dataset(p.data.dataset), PATHS.prepared, PATHS.cache / "prepare")


def _classes() -> list[str]:
    """Class names of the prepared data ([] for an unlabeled folder)."""
    from gan.core.splits import read_summary

    return list(read_summary(PATHS.prepared_summary).classes)


def stage_classifier(p: Params) -> None:
    from gan.evaluation.classifier import train_classifier

    train_classifier(p.classifier, PATHS.train_split, PATHS.test_split, PATHS.classifier, PATHS.classifier_metrics,
                     num_classes=len(_classes()), device=p.train.device)  # fmt: skip


def stage_judge(p: Params) -> None:
    from gan.evaluation.judge import train_judge

    train_judge(p.judge, PATHS.train_split, PATHS.test_split, PATHS.judge, PATHS.judge_metrics, device=p.train.device)


def _extractor_files(p: Params):
    from gan.evaluation.features import ExtractorFiles

    return ExtractorFiles(PATHS.classifier, PATHS.judge, p.evaluate.inception_weights)


def stage_train(p: Params) -> None:
    from gan.training.train import TrainOutputs, train

    probe, note = None, ""
    if p.train.eval_every != 0:  # best-checkpoint tracking: G scored in the domain's features during training
        from gan.core.tensors import resolve_device
        from gan.evaluation.probe import NoSoundExtractor, build_probe

        try:
            from gan.evaluation.features import ExtractorFiles

            files = ExtractorFiles(PATHS.classifier, PATHS.judge)  # the probe uses these two, never Inception
            probe = build_probe(files, PATHS.train_split, p.train.eval_samples,
                                resolve_device(p.train.device))  # fmt: skip
            note = f"FD in the {probe.extractor_name}'s features, which passed its soundness test"
        except NoSoundExtractor as err:  # train without it: the last G is kept, no early stop
            note = str(err)
            logging.getLogger("gan.training.train").warning("no quality probe: %s", err)
    from gan.core.codedeps import stage_code_sha256

    train(p.model, p.train, PATHS.train_split, TrainOutputs(PATHS.generator, PATHS.checkpoints, PATHS.train_log),
          probe=probe, probe_note=note, code_sha256=stage_code_sha256("train"))  # fmt: skip


def stage_reference(p: Params) -> None:
    from gan.evaluation.reference import build_reference

    build_reference(p.evaluate, _extractor_files(p), PATHS.train_split, PATHS.test_split, PATHS.reference,
                    device=p.train.device)  # fmt: skip


def stage_evaluate(p: Params) -> None:
    from gan.evaluation.evaluate import evaluate

    evaluate(p.evaluate, PATHS.generator, _extractor_files(p), PATHS.reference, PATHS.metrics, classes=_classes(),
             device=p.train.device, train_split=PATHS.train_split, out_pairs=PATHS.closest_pairs)  # fmt: skip


def evaluate_samples(p: Params, samples: str, out: str | None) -> None:
    """`gan evaluate --samples PATH`: score external samples on the same scale as ours."""
    from gan.core.splits import read_summary
    from gan.data.imagefiles import load_samples
    from gan.evaluation.evaluate import score_images

    data = read_summary(PATHS.prepared_summary)
    metrics = score_images(load_samples(samples, data.shape), p.evaluate, _extractor_files(p), PATHS.reference,
                           list(data.classes), p.train.device)  # fmt: skip
    metrics["samples"] = str(samples)
    text = json.dumps(metrics, indent=2) + "\n"
    if out:
        atomic.write_text(out, text)
    print(text, end="")


def stage_export(p: Params) -> None:
    from gan.lifecycle.gitrepo import describe_head
    from gan.outputs.export import export

    export(p.export, p, PATHS.generator, PATHS.metrics, PATHS.prepared_summary, PATHS.train_summary, PATHS.samples,
           classifier_path=PATHS.classifier, pairs_path=PATHS.closest_pairs, train_log_dir=PATHS.train_log,
           code=describe_head("."))  # fmt: skip


STAGES = {
    "source": stage_source,
    "download": stage_download,
    "prepare": stage_prepare,
    "classifier": stage_classifier,
    "judge": stage_judge,
    "train": stage_train,
    "reference": stage_reference,
    "evaluate": stage_evaluate,
    "export": stage_export,
}

# What each stage writes: its dvc.yaml outs and metrics (tests/test_reliability.py checks that the two agree).
OUTPUTS = {
    "source": (PATHS.source_manifest,),
    "download": (PATHS.raw,),
    "prepare": (PATHS.prepared,),
    "classifier": (PATHS.classifier, PATHS.classifier_metrics),
    "judge": (PATHS.judge, PATHS.judge_metrics),
    "train": (PATHS.generator, PATHS.train_log, PATHS.checkpoints),
    "reference": (PATHS.reference,),
    "evaluate": (PATHS.metrics, PATHS.closest_pairs),
    "export": (PATHS.samples,),
}


def command_restore(argv: list[str]) -> int:
    """`python -m gan restore REV [--to DIR]`."""
    from gan.lifecycle.restore import restore

    what = ("Bring a recorded version's generator, metrics, samples, model card and params.yaml into a folder, "
            "from the DVC cache or remote; the work tree is untouched.")  # fmt: skip
    ap = argparse.ArgumentParser(prog="python -m gan restore", description=what)
    ap.add_argument("rev", help="a tag, a commit, a branch, or 'champion' (the newest champion-* tag)")
    ap.add_argument("--to", metavar="DIR", help="a new or empty folder (default: restored/REV, git-ignored)")
    ap.add_argument("--remote", help="the DVC remote to read from (default: the one configured at REV)")
    ap.add_argument("--repo", default=".", help="the repository (default: the current folder)")
    args = ap.parse_args(argv)
    try:
        done = restore(args.repo, args.rev, args.to, args.remote)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    what = "the champion's files" if done.champion else "the run's files"
    print(f"restored {done.rev} (commit {done.commit[:10]}; {what}) to {done.to}: {', '.join(done.files)}")
    return 0


def command_sample(argv: list[str]) -> int:
    """`python -m gan sample ...`."""
    import tempfile

    from gan.lifecycle import champion
    from gan.lifecycle.restore import fetch_generator
    from gan.outputs.generate import sample

    ap = argparse.ArgumentParser(prog="python -m gan sample",
                                 description="Draw new images from a generator: the champion by default.")  # fmt: skip
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--rev", help="a recorded version: a tag, a commit, or 'champion' (the newest champion tag)")
    src.add_argument("--generator", metavar="FILE", help="a generator file (default: the workspace's champion)")
    ap.add_argument("--out", required=True, help="a .png (one grid), a .npz (key 'images'), or a folder of PNGs")
    ap.add_argument("--n", type=int, default=64, help="how many images (default 64)")
    ap.add_argument("--seed", type=int, default=0, help="noise seed: the same seed gives the same images")
    ap.add_argument("--class", dest="label", type=int, help="a conditional generator: the class to draw")
    ap.add_argument("--interpolate", type=int, default=0, metavar="K",
                    help="instead: a strip of K images along a path between two latents")  # fmt: skip
    ap.add_argument("--device", default="cpu", help="cpu (default: the same bytes on every machine type), cuda")
    ap.add_argument("--repo", default=".", help="the repository, for --rev and the champion (default: here)")
    args = ap.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="gan-sample-") as tmp:
            if args.rev:
                generator = Path(tmp) / "generator.pt"
                source = f"{args.rev} (commit {fetch_generator(args.repo, args.rev, generator)[:10]})"
            elif args.generator:
                generator = source = Path(args.generator)
            else:
                generator = source = champion.current(Path(args.repo) / PATHS.champion) / "generator.pt"
                if not generator.exists():
                    print(f"error: no champion in this workspace ({generator}): run the pipeline, `dvc pull` it, or "
                          "name a recorded one (--rev champion)", file=sys.stderr)  # fmt: skip
                    return 1
            done = sample(generator, args.out, n=args.n, seed=args.seed, label=args.label,
                          interpolate=args.interpolate, device=args.device)  # fmt: skip
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({**done, "generator": str(source)}, default=str))
    return 0


TOOLS = {"restore": command_restore, "sample": command_sample}  # commands that are not stages

COMMANDS = {  # `gan --help`: every command, one line each
    "source": "what the data source holds now (a folder's file list; every dvc repro runs it)",
    "download": "fetch the dataset (mirrors, checksums) or the folder source into data/raw",
    "prepare": "decode and resize to one shape, split train/test, list skipped files",
    "classifier": "train the domain classifier (labelled data), with its soundness test",
    "judge": "train the self-supervised judge (any data), with its soundness test",
    "train": "train the GAN: data/models/generator.pt, the log, checkpoints (resumes after a crash)",
    "reference": "the real test images' features for every extractor",
    "evaluate": "score the generator: FID/KID/precision/recall/memorisation beside their floors",
    "export": "sample grid, PNGs, NPZ, TorchScript, model card",
    "check": "only validate params.yaml (and --set) and exit",
    "restore": "a recorded version's generator, metrics and samples back (python -m gan restore -h)",
    "sample": "new images from the champion, a version or a file (python -m gan sample -h)",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in TOOLS:
        return TOOLS[argv[0]](argv[1:])
    listing = "\n".join(f"  {name:<11} {what}" for name, what in COMMANDS.items())
    parser = argparse.ArgumentParser(prog="gan", description=f"{__doc__.splitlines()[0]}\n\ncommands:\n{listing}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("stage", metavar="COMMAND", choices=list(COMMANDS), help="one of the commands above")
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
        help="with 'evaluate': score these samples (.npz key 'images', .npy, or a folder of PNGs, at the prepared "
        "data's shape) instead of the generator, against the same reference; needs the classifier and reference "
        "stages done",
    )
    parser.add_argument("--out", metavar="FILE", help="with --samples: also write the metrics JSON here")
    args = parser.parse_args(argv)
    if args.stage in TOOLS:
        parser.error(f"{args.stage} takes its own options: python -m gan {args.stage} -h")
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
