"""The judge: a feature extractor trained on the real training images alone, without labels.

The domain classifier needs labels and Inception needs weights this machine may not have (and judges
off-ImageNet data poorly: Kynkäänniemi et al. 2023). The judge needs neither: a small CNN encoder trained
once per data version by contrastive self-supervision — SimCLR (Chen et al. 2020, "A Simple Framework for
Contrastive Learning of Visual Representations"): two random views of each image (crop, flip, colour
jitter), a projection head, and the NT-Xent loss that pulls the two views of an image together and pushes
the other 2N-2 images of the batch away. Its features are the encoder's output (before the projection head,
as in the paper), and the evaluation computes every metric on them like on the classifier's.

What the views vary is what the judge learns to ignore, so they are kept to geometry and mild colour changes:
no blur and no noise, which the judge must see in generated images.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from gan.core import atomic
from gan.core.config import JudgeConfig
from gan.core.errors import PipelineError
from gan.core.length import judge_steps
from gan.core.splits import UNLABELED, load_split, shape_text
from gan.core.tensors import epoch_permutation, from_uint8, resolve_device
from gan.evaluation import soundness
from gan.evaluation.classifier import check_same_shape, conv_blocks

log = logging.getLogger(__name__)
FEATURE_DIM = 128
PROJECTION_DIM = 64
WIDTHS = (32, 64, 128)  # conv channels of the 1st, 2nd and every further block
KNN_K = 20  # labelled data: k of the k-NN probe that says how much class information the judge found


# ---------------------------------------------------------------- network


class JudgeEncoder(nn.Module):
    """conv3×3-BN-ReLU-maxpool blocks (32, 64, then 128 channels) until the map is <= 8 px, then Linear -> 128."""

    def __init__(self, image_shape: tuple[int, int, int]):
        super().__init__()
        c, h, w = (int(s) for s in image_shape)
        if min(c, h, w) < 1:
            raise ValueError(f"image shape {image_shape!r} is not supported by the judge")
        self.image_shape = (c, h, w)
        layers: list[nn.Module] = []
        for i in range(conv_blocks(h, w)):
            width = WIDTHS[min(i, len(WIDTHS) - 1)]
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)]
            c, h, w = width, h // 2, w // 2
        self.body = nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * h * w, FEATURE_DIM))
        self.projection = nn.Sequential(nn.ReLU(), nn.Linear(FEATURE_DIM, FEATURE_DIM), nn.ReLU(),
                                        nn.Linear(FEATURE_DIM, PROJECTION_DIM))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: N×C×H×W in [-1, 1] -> N×128 features (what the metrics use)."""
        return self.body(x)


# ---------------------------------------------------------------- views and loss


def random_views(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One random view per image of x (float N×C×H×W in [-1, 1]), each with its own parameters:
    a resized crop of 50-100 % of the area (aspect 3/4..4/3), a horizontal flip half the time, brightness and
    contrast ±30 %, and for RGB saturation ±30 % and grey 20 % of the time. Parameters come from `g` (CPU)."""
    n, c = len(x), x.shape[1]

    def u(lo: float, hi: float) -> torch.Tensor:
        return (torch.rand(n, generator=g) * (hi - lo) + lo).to(x.device)

    area, ratio = u(0.5, 1.0), torch.exp(u(math.log(3 / 4), math.log(4 / 3)))
    sw, sh = torch.sqrt(area * ratio).clamp(max=1.0), torch.sqrt(area / ratio).clamp(max=1.0)
    tx, ty = (2 * u(0, 1) - 1) * (1 - sw), (2 * u(0, 1) - 1) * (1 - sh)
    flip = torch.where(u(0, 1) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sw * flip, tx, sh, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    v = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = v.mean(dim=(1, 2, 3), keepdim=True)
    v = (v - mean) * u(0.7, 1.3).view(n, 1, 1, 1) + mean + u(-0.3, 0.3).view(n, 1, 1, 1)
    if c == 3:
        grey = (0.299 * v[:, 0:1] + 0.587 * v[:, 1:2] + 0.114 * v[:, 2:3]).expand_as(v)
        sat = torch.where(u(0, 1) < 0.2, 0.0, u(0.7, 1.3)).view(n, 1, 1, 1)
        v = grey + (v - grey) * sat
    return v.clamp(-1, 1)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent: for each of the 2N projections, cross-entropy of picking its partner view among the
    other 2N-1 by cosine similarity / temperature; the mean over all 2N."""
    n = len(z1)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = (z @ z.T) / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, partner)


# ---------------------------------------------------------------- features


@torch.no_grad()
def embed(model: JudgeEncoder, images_u8: torch.Tensor, device: torch.device, batch_size: int = 500) -> np.ndarray:
    """uint8 N×C×H×W -> float32 N×128 features (eval mode)."""
    model.eval()
    out = [
        model(from_uint8(images_u8[i : i + batch_size].to(device))).float().cpu().numpy()
        for i in range(0, len(images_u8), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM), np.float32)


def knn_accuracy(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, y_test: np.ndarray, k: int) -> float:
    """Share of test images whose k nearest train features (cosine) vote for their true label: how much class
    information the judge found without ever seeing a label (reported, never used to train it)."""
    a = torch.nn.functional.normalize(torch.from_numpy(f_train), dim=1)
    b = torch.nn.functional.normalize(torch.from_numpy(f_test), dim=1)
    labels = torch.from_numpy(y_train)
    k = min(k, len(a))
    votes = [torch.mode(labels[(b[i : i + 1000] @ a.T).topk(k, dim=1).indices], dim=1).values
             for i in range(0, len(b), 1000)]  # fmt: skip
    return float((torch.cat(votes).numpy() == y_test).mean())


def positive_retrieval(model: JudgeEncoder, images_u8: torch.Tensor, seed: int, device: torch.device) -> float:
    """Label-free check on held-out images: the share whose second view's nearest feature (cosine) among all
    first views is its own first view. Chance is 1/N."""
    g = torch.Generator().manual_seed(seed)
    x = from_uint8(images_u8.to(device))
    with torch.no_grad():
        model.eval()
        f1 = F.normalize(model(random_views(x, g)), dim=1)
        f2 = F.normalize(model(random_views(x, g)), dim=1)
    return float(((f2 @ f1.T).argmax(1).cpu() == torch.arange(len(x))).float().mean())


# ---------------------------------------------------------------- the stage


def train_judge(
    cfg: JudgeConfig, train_split: str | Path, test_split: str | Path, out_model: str | Path,
    out_metrics: str | Path, device: str = "auto", progress_bar: bool = True,
) -> dict:  # fmt: skip
    """Train the judge on the train split's images (labels unused), then measure it on the test split."""
    # --- data
    train, test = load_split(train_split), load_split(test_split)
    check_same_shape(train, test, train_split, test_split)
    n = len(train.images)
    if n < 2:
        raise PipelineError(f"{train_split}: the judge needs at least 2 training images, found {n}")
    dev = resolve_device(device)
    x = torch.from_numpy(train.images)
    bs = min(cfg.batch_size, n)
    steps_per_epoch = n // bs  # full batches only: NT-Xent's negatives are the rest of the batch
    total = judge_steps(cfg.steps, n, bs)

    # --- model
    torch.manual_seed(cfg.seed)
    model = JudgeEncoder(train.shape).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed + 1)

    # --- training: `total` steps, a new permutation of the images each epoch
    t0 = time.perf_counter()
    losses: list[float] = []
    model.train()
    with tqdm(total=total, desc="judge", unit="step", disable=not progress_bar, mininterval=0.5) as bar:
        running, count, perm = 0.0, 0, None
        for step in range(total):
            epoch, b = divmod(step, steps_per_epoch)
            if b == 0:
                perm = epoch_permutation(n, cfg.seed, epoch)
            batch = from_uint8(x[perm[b * bs : (b + 1) * bs]].to(dev))
            z1 = model.projection(model(random_views(batch, g)))
            z2 = model.projection(model(random_views(batch, g)))
            loss = nt_xent(z1, z2, cfg.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running, count = running + loss.item(), count + 1
            bar.update(1)
            if b == steps_per_epoch - 1 or step == total - 1:  # the mean loss of each (last partial) epoch
                losses.append(running / count)
                running, count = 0.0, 0
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
    seconds = time.perf_counter() - t0

    # --- how good is it (held-out images; labels only where they exist, and only to report)
    probe = torch.from_numpy(test.images[:1000])
    metrics = {
        "n_train": n, "steps": total, "epochs": round(total / steps_per_epoch, 2), "loss_per_epoch": losses,
        "positive_retrieval_test": positive_retrieval(model, probe, cfg.seed, dev),
        "positive_retrieval_chance": 1 / max(len(probe), 1), "seconds": round(seconds, 2),
    }  # fmt: skip
    labeled = (train.labels != UNLABELED).all() and (test.labels != UNLABELED).all() and len(test.labels)
    if labeled:
        k_train = np.random.default_rng(cfg.seed).choice(n, min(n, 10_000), replace=False)
        f_tr = embed(model, torch.from_numpy(train.images[np.sort(k_train)]), dev)
        f_te = embed(model, torch.from_numpy(test.images), dev)
        metrics["knn_accuracy_test"] = knn_accuracy(f_tr, train.labels[np.sort(k_train)], f_te, test.labels, KNN_K)
    metrics["soundness"] = soundness.check(lambda u8: embed(model, u8, dev), train.images, test.images, cfg.seed)
    log.info("judge (%s) after %d steps: %s; soundness: %s", shape_text(train.shape), total,
             ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k.startswith(("positive", "knn"))),
             metrics["soundness"]["reason"])  # fmt: skip

    # --- save
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    atomic.save_torch(out_model, {"state_dict": state, "image_shape": list(train.shape), "feature_dim": FEATURE_DIM,
                                  "method": "simclr", "soundness": json.dumps(metrics["soundness"])})  # fmt: skip
    metrics = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in metrics.items()}
    metrics["loss_per_epoch"] = [round(v, 5) for v in losses]
    atomic.write_text(out_metrics, json.dumps(metrics, indent=2) + "\n")
    return metrics


def load_judge(path: str | Path, device: str | torch.device = "cpu") -> JudgeEncoder:
    """The trained judge, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path} missing: train the judge first (`dvc repro judge`)")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = JudgeEncoder(tuple(blob["image_shape"]))
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval()
