"""The domain classifier: a small CNN trained once per data version.

It is the feature extractor of the FID-style metric (its 128-d penultimate
layer) and the judge of class coverage, so its own test accuracy is reported:
a weak classifier makes weak metrics.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from gan import atomic
from gan.config import ClassifierConfig
from gan.prepare import load_split
from gan.tensors import epoch_permutation, from_uint8, resolve_device

log = logging.getLogger(__name__)
FEATURE_DIM = 128


class DomainClassifier(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 28 -> 14
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 14 -> 7
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, FEATURE_DIM),
            nn.ReLU(),
        )
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: N×1×28×28 in [-1, 1] -> N×128 features."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@torch.no_grad()
def predict(model: DomainClassifier, images: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """images: float N×1×28×28 in [-1, 1] (on the model's device). Returns (features, probabilities) on CPU."""
    model.eval()
    feats, probs = [], []
    for i in range(0, len(images), batch_size):
        f = model.features(images[i : i + batch_size])
        feats.append(f.float().cpu())
        probs.append(F.softmax(model.head(f), dim=1).float().cpu())
    return torch.cat(feats), torch.cat(probs)


def train_classifier(
    cfg: ClassifierConfig,
    train_split: str | Path,
    test_split: str | Path,
    out_model: str | Path,
    out_metrics: str | Path,
    num_classes: int = 10,
    device: str = "auto",
    progress_bar: bool = True,
) -> dict:
    dev = resolve_device(device)
    train, test = load_split(train_split), load_split(test_split)
    torch.manual_seed(cfg.seed)
    model = DomainClassifier(num_classes).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    x = torch.from_numpy(train.images).to(dev)
    y = torch.from_numpy(train.labels).to(dev)
    n, bs = len(x), min(cfg.batch_size, len(x))
    steps = -(-n // bs)
    t0 = time.perf_counter()
    model.train()
    with tqdm(
        total=steps * cfg.epochs, desc="classifier", unit="step", disable=not progress_bar, mininterval=0.5
    ) as bar:
        for epoch in range(cfg.epochs):
            perm = epoch_permutation(n, cfg.seed, epoch).to(dev)
            for b in range(steps):
                idx = perm[b * bs : (b + 1) * bs]
                loss = F.cross_entropy(model(from_uint8(x[idx])), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    _, probs = predict(model, from_uint8(torch.from_numpy(test.images).to(dev)))
    acc = (probs.argmax(1).numpy() == test.labels).mean().item() if len(test.labels) else float("nan")
    metrics = {
        "test_accuracy": round(acc, 5),
        "n_train": n,
        "n_test": len(test.labels),
        "epochs": cfg.epochs,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    log.info("domain classifier test accuracy %.4f", acc)
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    atomic.save_torch(out_model, {"state_dict": state, "num_classes": num_classes, "test_accuracy": acc})
    atomic.write_text(out_metrics, json.dumps(metrics, indent=2) + "\n")
    return metrics


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> tuple[DomainClassifier, float]:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = DomainClassifier(blob["num_classes"])
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval(), float(blob["test_accuracy"])
