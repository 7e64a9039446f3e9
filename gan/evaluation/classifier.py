"""The domain classifier: a small CNN trained once per data version.

It is the feature extractor of the FID-style metric (its 128-d penultimate
layer) and the judge of class coverage, so its own test accuracy is reported:
a weak classifier makes weak metrics. It is built for the prepared data's image
shape (grey or RGB, any size); an unlabeled source gets no classifier, only a
marker file that says why (`load_classifier` then stops with that reason).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from gan.core import atomic
from gan.core.config import ClassifierConfig
from gan.core.errors import PipelineError
from gan.core.length import classifier_steps
from gan.core.splits import LEGACY_IMAGE_SHAPE, UNLABELED, Split, load_split, shape_text
from gan.core.tensors import ImageShapeError, epoch_permutation, from_uint8, resolve_device
from gan.evaluation import soundness

log = logging.getLogger(__name__)
FEATURE_DIM = 128
MAX_FEATURE_MAP = 8  # conv-pool blocks halve the map until its side is at most this
WIDTHS = (32, 64, 128)  # conv channels of the 1st, 2nd and every further block
# The shape of classifier files written before shapes were recorded (they were all Fashion-MNIST-like).
NO_LABELS = (
    "the source has no labels, so there is no domain classifier and no class metrics; the judge (evaluate.extractors "
    "'judge', trained on your images without labels) scores the samples instead. Add labels (dataset.json or class "
    "subfolders) for the classifier's metrics"
)


class NoClassifier(PipelineError):
    """The data has no labels, so the classifier stage wrote a marker instead of a model."""


def conv_blocks(height: int, width: int) -> int:
    """How many 2×2-pooled conv blocks bring an H×W map to at most MAX_FEATURE_MAP px a side (2 at 28 and 32)."""
    blocks = 0
    while max(height, width) > MAX_FEATURE_MAP and min(height, width) >= 2:
        height, width, blocks = height // 2, width // 2, blocks + 1
    return blocks


class DomainClassifier(nn.Module):
    """conv3×3-ReLU-maxpool blocks (32, 64, then 128 channels) until the map is <= 8 px, then Linear -> 128 -> classes.

    At 1×28×28 this is the original network, layer for layer and in the same initialisation order:
    1×28×28 -> 32×14×14 -> 64×7×7 -> 128 -> classes.
    """

    def __init__(self, num_classes: int, image_shape: tuple[int, int, int]):
        super().__init__()
        c, h, w = (int(s) for s in image_shape)
        if min(c, h, w) < 1:
            raise ValueError(f"image shape {image_shape!r} is not supported by the domain classifier")
        self.image_shape = (c, h, w)
        layers: list[nn.Module] = []
        for i in range(conv_blocks(h, w)):
            width = WIDTHS[min(i, len(WIDTHS) - 1)]
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c, h, w = width, h // 2, w // 2
        self.body = nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * h * w, FEATURE_DIM), nn.ReLU())
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: N×C×H×W (the model's image shape) in [-1, 1] -> N×128 features."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@torch.no_grad()
def predict(model: DomainClassifier, images: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """images: float N×C×H×W in [-1, 1] (on the model's device). Returns (features, probabilities) on CPU."""
    model.eval()
    feats, probs = [], []
    for i in range(0, len(images), batch_size):
        f = model.features(images[i : i + batch_size])
        feats.append(f.float().cpu())
        probs.append(F.softmax(model.head(f), dim=1).float().cpu())
    return torch.cat(feats), torch.cat(probs)


def check_same_shape(train: Split, test: Split, train_path: str | Path, test_path: str | Path) -> None:
    if train.shape != test.shape:
        raise ImageShapeError(
            f"{test_path} holds {shape_text(test.shape)} images but {train_path} {shape_text(train.shape)}: "
            "the splits must share one shape (re-run `prepare`)"
        )


def _check_labels(labels: np.ndarray, num_classes: int, path: str | Path) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        what = "unlabeled images" if (labels == UNLABELED).any() else f"labels outside 0..{num_classes - 1}"
        raise PipelineError(f"{path}: {what}, but the data summary lists {num_classes} classes; re-run `prepare`")


def _write_marker(out_model: str | Path, out_metrics: str | Path, image_shape: tuple[int, ...]) -> dict:
    """No labels: classifier.pt says so (and why) instead of holding a model; classifier.json likewise."""
    log.warning("domain classifier: %s", NO_LABELS)
    atomic.save_torch(out_model, {"num_classes": 0, "image_shape": list(image_shape), "reason": NO_LABELS})
    metrics = {"available": False, "reason": NO_LABELS}
    atomic.write_text(out_metrics, json.dumps(metrics, indent=2) + "\n")
    return metrics


def train_classifier(
    cfg: ClassifierConfig,
    train_split: str | Path,
    test_split: str | Path,
    out_model: str | Path,
    out_metrics: str | Path,
    num_classes: int,
    device: str = "auto",
    progress_bar: bool = True,
) -> dict:
    """Train the classifier for the splits' image shape; with num_classes == 0 (unlabeled) write the marker."""
    train, test = load_split(train_split), load_split(test_split)
    check_same_shape(train, test, train_split, test_split)
    if num_classes == 0:
        return _write_marker(out_model, out_metrics, train.shape)
    _check_labels(train.labels, num_classes, train_split)
    _check_labels(test.labels, num_classes, test_split)
    dev = resolve_device(device)
    torch.manual_seed(cfg.seed)
    model = DomainClassifier(num_classes, train.shape).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    x = torch.from_numpy(train.images).to(dev)
    y = torch.from_numpy(train.labels).to(dev)
    n, bs = len(x), min(cfg.batch_size, len(x))
    per_epoch = -(-n // bs)  # the last batch of an epoch may be short
    total = classifier_steps(cfg.steps, n, bs)
    t0 = time.perf_counter()
    model.train()
    with tqdm(total=total, desc="classifier", unit="step", disable=not progress_bar, mininterval=0.5) as bar:
        perm = None
        for step in range(total):
            epoch, b = divmod(step, per_epoch)
            if b == 0:
                perm = epoch_permutation(n, cfg.seed, epoch).to(dev)
            idx = perm[b * bs : (b + 1) * bs]
            loss = F.cross_entropy(model(from_uint8(x[idx])), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update(1)
            if b == per_epoch - 1 or step == total - 1:
                bar.set_postfix(loss=f"{loss.item():.3f}")
    seconds = time.perf_counter() - t0
    _, probs = predict(model, from_uint8(torch.from_numpy(test.images).to(dev)))
    acc = (probs.argmax(1).numpy() == test.labels).mean().item() if len(test.labels) else float("nan")
    sound = soundness.check(lambda u8: predict(model, from_uint8(u8.to(dev)))[0].numpy(), train.images,
                            test.images, cfg.seed)  # fmt: skip
    metrics = {
        "test_accuracy": round(acc, 5),
        "n_train": n,
        "n_test": len(test.labels),
        "steps": total,
        "epochs": round(total / per_epoch, 2),
        "seconds": round(seconds, 2),
        "soundness": sound,
    }
    log.info("domain classifier (%s) test accuracy %.4f after %d steps; soundness: %s", shape_text(train.shape),
             acc, total, sound["reason"])  # fmt: skip
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    atomic.save_torch(
        out_model,
        {"state_dict": state, "num_classes": num_classes, "image_shape": list(train.shape), "test_accuracy": acc,
         "soundness": json.dumps(sound)},
    )  # fmt: skip
    atomic.write_text(out_metrics, json.dumps(metrics, indent=2) + "\n")
    return metrics


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> tuple[DomainClassifier, float]:
    """The trained classifier, in eval mode; NoClassifier (with the reason and what to do) for the unlabeled marker.
    Files from before the image shape was recorded are LEGACY_IMAGE_SHAPE."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob["num_classes"] == 0:
        raise NoClassifier(f"{path}: {blob.get('reason', NO_LABELS)}")
    model = DomainClassifier(blob["num_classes"], tuple(blob.get("image_shape", LEGACY_IMAGE_SHAPE)))
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval(), float(blob["test_accuracy"])
