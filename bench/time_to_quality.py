"""What a training budget buys: the default model trained for fixed wall-clock budgets, then scored.

    python bench/time_to_quality.py [--minutes 5 10] [--baseline-minutes 10] [--set train.lr_g=0.001 ...]

Uses the workspace's prepared data, classifier and reference features (run the
pipeline first); trains from scratch for each budget (`train.max_seconds`) in a
temporary folder and prints the headline metrics beside the real-vs-real floor.

`--baseline-minutes M` also trains the standard pytorch/examples DCGAN loop
(64×64, Fashion-MNIST resized 28→64, lr 2e-4, batch 64; bench/train_throughput.py)
for M minutes and scores its samples on the same scale, resized back to 28×28
(antialiased bilinear). The example draws its samples with G in training mode,
so both modes are scored.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gan.core.config import load_params  # noqa: E402
from gan.core.paths import PATHS  # noqa: E402
from gan.core.splits import load_split, read_summary  # noqa: E402
from gan.core.tensors import to_uint8  # noqa: E402
from gan.evaluation.evaluate import evaluate, score_images  # noqa: E402
from gan.evaluation.features import ExtractorFiles  # noqa: E402
from gan.training.train import TrainOutputs, train  # noqa: E402

HEADER = (
    "| run | budget | steps | epochs | FID (classifier) | floor | classes | precision | recall | coverage |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def row(run: str, minutes: float, steps: int, epochs: float, m: dict) -> str:
    return (f"| {run} | {minutes:g} min | {steps} | {epochs:.2f} | {m['fid_classifier']:.2f} | "
            f"{m['fid_classifier_floor']:.2f} | {m['classes_covered']}/{m['num_classes']} | "
            f"{m['precision_classifier']:.3f} | {m['recall_classifier']:.3f} | "
            f"{m['coverage_classifier']:.3f} |")  # fmt: skip


@torch.no_grad()
def baseline_samples(G: torch.nn.Module, n: int, seed: int, train_mode: bool) -> torch.Tensor:
    """n samples of the 64×64 baseline G as uint8 N×1×28×28."""
    G.train(train_mode)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, n, 500):
        z = torch.randn(min(500, n - i), 100, generator=gen).to(next(G.parameters()).device)
        x = F.interpolate(G(z), size=(28, 28), mode="bilinear", antialias=True, align_corners=False)
        out.append(to_uint8(x.clamp(-1, 1)).cpu())
    return torch.cat(out)


def run_baseline(minutes: float, p, classes: list[str], n_train: int, device: str) -> None:
    from train_throughput import baseline_steps, torchvision_root

    with tempfile.TemporaryDirectory() as tmp:
        root = torchvision_root(Path(tmp))
        loop = baseline_steps("dcgan64", 64, torch.device(device), root)
        t0 = time.perf_counter()
        steps = 0
        while steps == 0 or time.perf_counter() - t0 < minutes * 60:
            G = next(loop)
            steps += 1
        loop.close()  # stops the DataLoader workers
    n = 10_000
    for train_mode in (True, False):
        fake = baseline_samples(G, n, p.evaluate.seed, train_mode)
        m = score_images(fake, p.evaluate, _files(p), PATHS.reference, classes, device)
        label = f"pytorch/examples 64×64 (G.{'train' if train_mode else 'eval'}())"
        print(row(label, minutes, steps, steps / (n_train // 64), m), flush=True)


def _files(p) -> ExtractorFiles:
    return ExtractorFiles(PATHS.classifier, PATHS.judge, p.evaluate.inception_weights)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, nargs="*", default=[5, 10])
    ap.add_argument("--baseline-minutes", type=float, nargs="*", default=[])
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    p = load_params(overrides=args.overrides)
    if "classifier" not in p.evaluate.extractors:  # the table is the classifier's metrics (fid_classifier, classes)
        raise SystemExit(
            "time_to_quality scores with the domain classifier: add 'classifier' to "
            f"evaluate.extractors (now {p.evaluate.extractors})"
        )
    print(f"machine: {os.cpu_count()} CPUs, cuda {torch.cuda.is_available()}; model {p.model.arch} "
          f"channels {p.model.channels}, batch {p.train.batch_size}, lr {p.train.lr_g}/{p.train.lr_d}")  # fmt: skip
    classes = list(read_summary(PATHS.prepared_summary).classes)
    n_train = len(load_split(PATHS.train_split).labels)
    print(HEADER)
    for minutes in args.minutes:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = p.train.model_copy(update={"epochs": 1000, "max_seconds": minutes * 60})
            out = TrainOutputs(Path(tmp) / "g.pt", Path(tmp) / "ckpt", Path(tmp) / "log")
            r = train(p.model, cfg, PATHS.train_split, out, progress_bar=False)
            m = evaluate(p.evaluate, out.generator, _files(p), PATHS.reference, Path(tmp) / "m.json",
                         classes=classes)  # fmt: skip
        print(row("project default", minutes, r.steps, r.steps / (n_train // p.train.batch_size), m), flush=True)
    for minutes in args.baseline_minutes:
        run_baseline(minutes, p, classes, n_train, "cuda" if torch.cuda.is_available() else "cpu")


if __name__ == "__main__":
    main()
