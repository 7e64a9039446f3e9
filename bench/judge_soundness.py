"""Is the judge sound? Its ranking of generators beside the labelled classifier's, and its scores of degraded images.

    python bench/judge_soundness.py [--epochs 1,2,3,5] [--limit-train N] [--n 10000] [--set KEY=VALUE ...]

Needs the workspace's prepared data (`dvc repro prepare`) and the domain classifier (data/models/classifier.pt,
`dvc repro classifier`), so labelled data. Uses data/models/judge.pt when it exists and was trained on the data's
image shape; otherwise trains a judge with params.yaml's `judge` settings on the (limited) training images, their
labels withheld, in a temporary folder (data/models belongs to DVC and is left alone).

Generators: the project's model and training settings (params.yaml and --set), trained once from scratch for
max(--epochs) epochs on the first --limit-train training images, keeping G at the end of each listed epoch. Each is
scored by both judges: the Fréchet distance (FD) of --n samples against --n real test images. Printed: the table,
Kendall's tau and Spearman's rho between the two rankings, then the soundness sweep for both judges: the
real-vs-real floor (train vs test), the same-split FD (train vs other train images: FD's own bias at this n), and
the FD of the same test images blurred, noised, or drawn without the first 1, 2 and 4 classes.
"""

from __future__ import annotations

import argparse
import itertools
import math
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from scipy.stats import kendalltau, rankdata, spearmanr
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gan.core.config import Params, load_params  # noqa: E402
from gan.core.paths import PATHS  # noqa: E402
from gan.core.splits import UNLABELED, Split, load_split, shape_text  # noqa: E402
from gan.core.tensors import resolve_device, to_uint8  # noqa: E402
from gan.evaluation.features import ClassifierExtractor  # noqa: E402
from gan.evaluation.judge import embed, load_judge, train_judge  # noqa: E402
from gan.evaluation.metrics import fid_from_features  # noqa: E402
from gan.training.models import build_generator, load_generator  # noqa: E402
from gan.training.sampling import sample_batches  # noqa: E402
from gan.training.train import TrainOutputs, load_checkpoint, train  # noqa: E402

Extract = Callable[[torch.Tensor], np.ndarray]  # uint8 N×C×H×W -> N×D features
BLUR_SIGMAS = (0.5, 1.0, 1.5, 2.0)
NOISE_STDS = (5.0, 10.0, 20.0, 40.0)
REMOVED = (1, 2, 4)


# ---------------------------------------------------------------- machine


def cpu_model() -> str:
    """lscpu's 'Model name' (platform.processor() where lscpu is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name:")]
    return names[0] if names else "unknown"


# ---------------------------------------------------------------- judges


def judge_for(split_path: Path, test_path: Path, shape: tuple, p: Params, tmp: Path, judge_path: Path) -> Path:
    """data/models/judge.pt when it fits the data, else a judge trained here on the split without its labels."""
    if judge_path.is_file():
        model = load_judge(judge_path)
        if model.image_shape == shape:
            print(f"judge: {judge_path}")
            return judge_path
        print(f"judge: {judge_path} was trained on {shape_text(model.image_shape)} images, the data is "
              f"{shape_text(shape)}: training one here")  # fmt: skip
    else:
        print(f"judge: {judge_path} missing: training one here")
    split = load_split(split_path)
    unlabeled = tmp / "judge-train.npz"
    np.savez(unlabeled, images=split.images, labels=np.full(len(split.images), UNLABELED, np.int64))
    t0 = time.perf_counter()
    m = train_judge(p.judge, unlabeled, test_path, tmp / "judge.pt", tmp / "judge.json", device=p.train.device,
                    progress_bar=False)  # fmt: skip
    print(f"judge: trained on {m['n_train']} images without labels, {m['epochs']:g} epoch(s), {m['steps']} steps, "
          f"{time.perf_counter() - t0:.1f} s; positive retrieval {m['positive_retrieval_test']:.3f} "
          f"(chance {m['positive_retrieval_chance']:.4f})")  # fmt: skip
    return tmp / "judge.pt"


def extractors(classifier_path: Path, judge_path: Path, device: torch.device) -> dict[str, Extract]:
    clf = ClassifierExtractor(classifier_path, device)
    print(f"classifier: {classifier_path} (test accuracy {clf.test_accuracy:.4f})")
    judge = load_judge(judge_path, device)
    return {"classifier": lambda x: clf(x)[0], "judge": lambda x: embed(judge, x, device)}


# ---------------------------------------------------------------- generators


def train_generators(
    p: Params, split_path: Path, epochs: list[int], tmp: Path
) -> dict[int, tuple[int, torch.nn.Module]]:
    """One training run for max(epochs) epochs; G after each listed epoch as {epoch: (steps, G)}.

    The trainer checkpoints at every epoch end; when step s + 1 is reported, last.pt holds step s."""
    split = load_split(split_path)
    steps_per_epoch = len(split.images) // min(p.train.batch_size, len(split.images))
    wanted = {e * steps_per_epoch: e for e in epochs}
    cfg = p.train.model_copy(update={"epochs": max(epochs), "max_seconds": 0, "checkpoint_every": 0,
                                     "log_flush_every": 1})  # fmt: skip
    out = TrainOutputs(tmp / "generator.pt", tmp / "checkpoints", tmp / "train")
    kept: dict[int, tuple[int, torch.nn.Module]] = {}

    def keep(stats: dict) -> None:
        step = stats["step"] - 1
        if step in wanted and wanted[step] not in kept:
            ckpt = load_checkpoint(out.checkpoint_dir / "last.pt")
            assert ckpt["step"] == step, f"last.pt holds step {ckpt['step']}, expected {step}"
            G = build_generator(p.model, split.shape)
            G.load_state_dict(ckpt["G"])
            kept[wanted[step]] = (step, G.eval())

    t0 = time.perf_counter()
    r = train(p.model, cfg, split_path, out, on_progress=keep, progress_bar=False)
    kept[max(epochs)] = (r.steps, load_generator(out.generator)[0])
    print(f"generators: {p.model.arch} trained {max(epochs)} epoch(s) on {len(split.images)} images, {r.steps} steps, "
          f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
    return dict(sorted(kept.items()))


def samples(G: torch.nn.Module, n: int, seed: int, device: torch.device) -> torch.Tensor:
    return torch.cat([to_uint8(b).cpu() for b in sample_batches(G.to(device), n, seed)])


def rank_table(gens: dict, ex: dict[str, Extract], real: torch.Tensor, seed: int, device: torch.device) -> None:
    reference = {name: f(real) for name, f in ex.items()}
    rows = []
    for epoch, (steps, G) in gens.items():
        fake = samples(G, len(real), seed, device)
        rows.append((epoch, steps, *(fid_from_features(reference[name], f(fake)) for name, f in ex.items())))
    fid_c, fd_j = [r[2] for r in rows], [r[3] for r in rows]
    rank_c, rank_j = rankdata(fid_c), rankdata(fd_j)
    print(f"\n## Generators ({len(real)} samples each vs {len(real)} real test images; rank 1 = best)")
    print("| generator | steps | FID classifier | FD judge | rank classifier | rank judge |")
    print("|---|---|---|---|---|---|")
    for (epoch, steps, c, j), rc, rj in zip(rows, rank_c, rank_j, strict=True):
        print(f"| epoch {epoch} | {steps} | {c:.3f} | {j:.3f} | {rc:g} | {rj:g} |")
    if len(rows) > 1:
        tau, rho = kendalltau(fid_c, fd_j), spearmanr(fid_c, fd_j)
        print(f"Kendall tau {tau.statistic:.3f} (p {tau.pvalue:.3f}), Spearman rho {rho.statistic:.3f} "
              f"(p {rho.pvalue:.3f}) over {len(rows)} generators")  # fmt: skip
    else:
        print("Kendall tau n/a, Spearman rho n/a: one generator")


# ---------------------------------------------------------------- soundness sweep


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    k = 2 * math.ceil(3 * sigma) + 1
    return TF.gaussian_blur(images.float(), [k, k], [sigma, sigma]).round().clamp(0, 255).to(torch.uint8)


def add_noise(images: torch.Tensor, std: float, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (images.float() + std * torch.randn(images.shape, generator=g)).round().clamp(0, 255).to(torch.uint8)


def sweep_sides(train: Split, test: Split, n: int, seed: int) -> tuple[dict[str, np.ndarray], int]:
    """Index sets: reference and other train images, the measured test images, and per k the first n test images
    (in one random order) outside classes 0..k-1. n shrinks to what 4 removed classes leave."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(test.images))
    kept = {k: order[~np.isin(test.labels[order], np.arange(k))] for k in REMOVED}
    n = min(n, len(train.images) // 2, *(len(v) for v in kept.values()))
    perm = rng.permutation(len(train.images))
    sides = {"reference": perm[:n], "other train": perm[n : 2 * n], "test": order[:n]}
    sides.update({f"removed {k}": v[:n] for k, v in kept.items()})
    return sides, n


def soundness(train: Split, test: Split, ex: dict[str, Extract], n: int, seed: int) -> None:
    sides, n = sweep_sides(train, test, n, seed)
    x_test = torch.from_numpy(test.images[sides["test"]])
    probes: list[tuple[str, str, Callable[[], torch.Tensor]]] = [
        ("floor: train vs test", "-", lambda: x_test),
        ("same split: train vs train", "-", lambda: torch.from_numpy(train.images[sides["other train"]])),
        *(("blur sigma (px)", f"{s:g}", lambda s=s: blur(x_test, s)) for s in BLUR_SIGMAS),
        *(("noise std (0-255)", f"{s:g}", lambda s=s: add_noise(x_test, s)) for s in NOISE_STDS),
        *(("classes removed", str(k), lambda k=k: torch.from_numpy(test.images[sides[f"removed {k}"]]))
          for k in REMOVED),
    ]  # fmt: skip
    reference = {name: f(torch.from_numpy(train.images[sides["reference"]])) for name, f in ex.items()}
    values = []
    for _, _, images in probes:
        x = images()
        values.append({name: fid_from_features(reference[name], f(x)) for name, f in ex.items()})
    print(f"\n## Soundness ({n} images per side, one random draw; reference: {n} real train images)")
    print("| probe | level | FD classifier | FD judge |")
    print("|---|---|---|---|")
    for (probe, level, _), v in zip(probes, values, strict=True):
        print(f"| {probe} | {level} | {v['classifier']:.3f} | {v['judge']:.3f} |")
    for name in ex:
        floor = values[0][name]
        series = {kind: [floor] + [v[name] for (p, _, _), v in zip(probes, values, strict=True) if p.startswith(kind)]
                  for kind in ("blur", "noise", "classes")}  # fmt: skip
        verdict = ", ".join(
            f"{k} {'yes' if all(b > a for a, b in itertools.pairwise(s)) else 'NO'}" for k, s in series.items()
        )
        print(f"monotonic ({name}): {verdict}; floor / blur 0.5: {floor / series['blur'][1]:.4f}, "
              f"floor / same split: {floor / values[1][name]:.3f}")  # fmt: skip


# ---------------------------------------------------------------- main


def parse_epochs(text: str) -> list[int]:
    try:
        epochs = sorted({int(e) for e in text.split(",") if e.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--epochs {text!r}: expected a comma-separated list of integers") from None
    if not epochs or epochs[0] < 1:
        raise argparse.ArgumentTypeError(f"--epochs {text!r}: expected epochs >= 1")
    return epochs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=parse_epochs, default=[1, 2, 3, 5], help="keep G after these epochs (1,2,3,5)")
    ap.add_argument("--limit-train", type=int, default=0, help="train on the first N training images (0 = all)")
    ap.add_argument("--n", type=int, default=10_000, help="samples per generator and real images per side")
    ap.add_argument("--threads", type=int, default=0, help="torch and BLAS threads (0 = their defaults)")
    ap.add_argument("--classifier", type=Path, default=PATHS.classifier)
    ap.add_argument("--judge", type=Path, default=PATHS.judge)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        threadpool_limits(limits=args.threads)  # numpy's BLAS too (the Fréchet distances)
    print(f"cpu: {cpu_model()}")
    print(f"torch: {torch.__version__} ({torch.get_num_threads()} threads), cuda {torch.cuda.is_available()}")
    p = load_params(overrides=args.overrides)
    device = resolve_device(p.train.device)
    if not args.classifier.is_file():
        raise SystemExit(f"{args.classifier} missing: run `dvc repro classifier` (the bench compares the judge "
                         "with the labelled domain classifier, so it needs labelled data)")  # fmt: skip
    train_all, test = load_split(PATHS.train_split), load_split(PATHS.test_split)
    limit = args.limit_train or len(train_all.images)
    train_split = Split(train_all.images[:limit], train_all.labels[:limit])
    print(f"data: {PATHS.train_split} {len(train_split.images)} of {len(train_all.images)} images "
          f"{shape_text(train_split.shape)}, {PATHS.test_split} {len(test.images)}")  # fmt: skip
    n = min(args.n, len(test.images))
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        split_path = tmp / "train.npz"
        np.savez(split_path, images=train_split.images, labels=train_split.labels)
        judge_path = judge_for(split_path, PATHS.test_split, train_split.shape, p, tmp, args.judge)
        ex = extractors(args.classifier, judge_path, device)
        gens = train_generators(p, split_path, args.epochs, tmp)
        rank_table(gens, ex, torch.from_numpy(test.images[:n]), p.evaluate.seed, device)
        soundness(train_split, test, ex, n, p.evaluate.seed)


if __name__ == "__main__":
    main()
