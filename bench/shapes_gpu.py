"""Every stage at several image shapes on one device: train (eager, and as one CUDA graph), classifier,
reference, evaluate, export. Prints training images/s per shape and the graph/eager ratio.

    python bench/shapes_gpu.py --device cuda      # the check run on a lent GPU
    python bench/shapes_gpu.py --device cpu --n 512 --steps 4

Synthetic prepared data (coloured discs and stripes, two classes), so it needs no download.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gan.core.config import ClassifierConfig, EvaluateConfig, ExportConfig, ModelConfig, Params, TrainConfig  # noqa: E402
from gan.core.splits import shape_text  # noqa: E402
from gan.evaluation.classifier import train_classifier  # noqa: E402
from gan.evaluation.evaluate import evaluate  # noqa: E402
from gan.evaluation.features import ExtractorFiles  # noqa: E402
from gan.evaluation.reference import build_reference  # noqa: E402
from gan.outputs.export import export  # noqa: E402
from gan.training.train import TrainOutputs, train  # noqa: E402


def synthetic(n: int, shape: tuple[int, int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    c, h, w = shape
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n).astype(np.int64)
    yy, xx = np.mgrid[0:h, 0:w]
    images = np.empty((n, c, h, w), np.uint8)
    for i, k in enumerate(labels):
        colour = rng.integers(80, 256, c)[:, None, None]
        mask = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (h / 3) ** 2) if k == 0 else (xx // max(2, w // 8)) % 2 == 0
        images[i] = np.where(mask[None], colour, rng.integers(0, 40))
    return images, labels


def run_shape(shape: tuple[int, int, int], args, root: Path) -> dict:
    root.mkdir(parents=True)
    for split, n, seed in (("train", args.n, 0), ("test", args.n // 4, 1)):
        images, labels = synthetic(n, shape, seed)
        np.savez(root / f"{split}.npz", images=images, labels=labels)
    (root / "summary.json").write_text(json.dumps({"dataset": "synthetic", "shape": list(shape),
                                                   "classes": ["disc", "bars"], "splits": {}}))  # fmt: skip
    model = ModelConfig(arch="dcgan", channels=64)
    row: dict = {"shape": shape_text(shape)}
    for graph in (False, True):
        cfg = TrainConfig(epochs=1, batch_size=args.batch, device=args.device, cuda_graph=graph)
        out = TrainOutputs(root / f"G{int(graph)}.pt", root / f"ckpt{int(graph)}", root / f"log{int(graph)}")
        t0 = time.perf_counter()
        r = train(model, cfg, root / "train.npz", out, progress_bar=False)
        row["graph" if graph else "eager"] = round(r.images_per_second, 1)
        row["train_s" + ("_graph" if graph else "")] = round(time.perf_counter() - t0, 1)
    # unrounded rates: a tiny run on a slow CPU can make fewer than one image a second
    row["graph/eager"] = round(row["graph"] / row["eager"], 2) if row["eager"] > 0 else None
    two_epochs = ClassifierConfig(steps=2 * -(-args.n // 128))  # what this bench always trained
    clf = train_classifier(two_epochs, root / "train.npz", root / "test.npz", root / "clf.pt",
                           root / "clf.json", num_classes=2, device=args.device, progress_bar=False)  # fmt: skip
    row["classifier_acc"] = round(clf["test_accuracy"], 3)
    ev = EvaluateConfig(
        n_samples=min(500, args.n // 4), bootstrap=5, kid_subset_size=100, prdc_samples=200, extractors=["classifier"]
    )
    files = ExtractorFiles(root / "clf.pt", root / "judge.pt")
    build_reference(ev, files, root / "train.npz", root / "test.npz", root / "ref", device=args.device)
    m = evaluate(ev, root / "G1.pt", files, root / "ref", root / "metrics.json", ["disc", "bars"],
                 device=args.device)  # fmt: skip
    row["fid_classifier"] = round(m["fid_classifier"], 3)
    (root / "train_summary.json").write_text(json.dumps({"epochs": 1}))
    export(ExportConfig(n_png=4, n_npz=64), Params(), root / "G1.pt", root / "metrics.json", root / "summary.json",
           root / "train_summary.json", root / "samples")  # fmt: skip
    with np.load(root / "samples" / "samples.npz") as z:
        row["npz"] = shape_text(z["images"].shape)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--n", type=int, default=4096, help="training images per shape")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--shapes", default="1x28x28,3x32x32,3x64x64,3x128x128")
    args = ap.parse_args()
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"device: {dev}; torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        for i, s in enumerate(args.shapes.split(",")):
            shape = tuple(int(v) for v in s.split("x"))
            print(json.dumps(run_shape(shape, args, Path(tmp) / str(i))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
