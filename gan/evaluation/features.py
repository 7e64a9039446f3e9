"""Feature extractors for the evaluation metrics.

- `classifier`: the domain classifier's 128-d penultimate layer (offline; labelled data only).
- `judge`: the self-supervised judge's 128-d features (offline, trained on the real training images without
  labels: gan/evaluation/judge.py); it has no classes, so no class probabilities.
- `inception`: the TF-ported FID Inception-v3 of torch-fidelity (2048-d pool features,
  `logits_unbiased` for the Inception Score), with its TensorFlow-compatible bilinear
  resize to 299×299 and grey images repeated to 3 channels (RGB taken as is): the same numbers as
  torch-fidelity / pytorch-fid / the original TF FID. (torchmetrics >= 1.8 resizes with
  antialiasing by default, which does not match published numbers; we call
  torch-fidelity's extractor directly.)

Every extractor takes uint8 images N×C×H×W (the prepared data's shape) and returns (features, class
probabilities or None); `input_shape` is the C×H×W its network itself sees. `build_extractors` builds them by
name from the registry below; an extractor that does not apply to the data (the classifier of an unlabeled
source) is returned as not applicable, with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gan.core.config import ConfigError
from gan.core.hashing import sha256_file
from gan.core.splits import shape_text
from gan.core.tensors import ImageShapeError, check_image_shape, from_uint8
from gan.evaluation import soundness
from gan.evaluation.classifier import NoClassifier, load_classifier, predict
from gan.evaluation.judge import embed, load_judge

log = logging.getLogger(__name__)

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
INCEPTION_SHA256_PREFIX = "6726825d"


class MissingWeights(ConfigError):
    """The Inception weights are not on this machine and could not be downloaded."""


class NoExtractor(ConfigError):
    """None of evaluate.extractors applies to the data (e.g. only the classifier, and no labels)."""


class ClassifierExtractor:
    name = "classifier"

    def __init__(self, classifier_path: str | Path, device: torch.device, batch_size: int = 500):
        self.model, self.test_accuracy = load_classifier(classifier_path, device)
        self.device, self.batch_size = device, batch_size
        self.weights_sha256 = sha256_file(classifier_path)
        self.dim = self.model.head.in_features
        self.num_classes = self.model.head.out_features
        self.input_shape = self.model.image_shape  # the prepared data's shape when it was trained
        self.soundness = soundness.recorded(classifier_path)  # can it tell worse images from real ones here?

    def __call__(self, images_u8: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        check_image_shape(images_u8, self.input_shape, "the domain classifier was trained on this shape")
        feats, probs = [], []
        for i in range(0, len(images_u8), self.batch_size):
            f, p = predict(self.model, from_uint8(images_u8[i : i + self.batch_size].to(self.device)), self.batch_size)
            feats.append(f.numpy())
            probs.append(p.numpy())
        return np.concatenate(feats), np.concatenate(probs)


class JudgeExtractor:
    name = "judge"

    def __init__(self, judge_path: str | Path, device: torch.device, batch_size: int = 500):
        self.model = load_judge(judge_path, device)
        self.device, self.batch_size = device, batch_size
        self.weights_sha256 = sha256_file(judge_path)
        self.dim = self.model.body[-1].out_features
        self.input_shape = self.model.image_shape
        self.soundness = soundness.recorded(judge_path)

    def __call__(self, images_u8: torch.Tensor) -> tuple[np.ndarray, None]:
        check_image_shape(images_u8, self.input_shape, "the judge was trained on this shape")
        return embed(self.model, images_u8, self.device, self.batch_size), None


def inception_weights(configured: str) -> Path:
    """The local Inception weights file: the configured path, or the torch hub cache (downloaded if online)."""
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise MissingWeights(
                f"evaluate.inception_weights = {configured!r}: no such file. It must be {INCEPTION_FILE} "
                f"(from {INCEPTION_URL}); fix the path or set it to '' to use the torch hub cache."
            )
        return path
    path = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        log.info("downloading %s to %s", INCEPTION_URL, path)
        torch.hub.download_url_to_file(INCEPTION_URL, str(path), hash_prefix=INCEPTION_SHA256_PREFIX, progress=False)
    except Exception as err:  # offline, proxy, checksum: all mean "not available here"
        raise MissingWeights(
            f"Inception FID (evaluate.extractors contains 'inception') needs {INCEPTION_FILE} "
            f"(91 MB, sha256 {INCEPTION_SHA256_PREFIX}...) and it could not be downloaded here "
            f"({type(err).__name__}: {err}). Download {INCEPTION_URL} on a machine with internet and put it at "
            f"{path}, or set evaluate.inception_weights to its path. No other extractor is substituted."
        ) from None
    return path


class InceptionExtractor:
    name = "inception"
    dim = 2048
    input_shape = (3, 299, 299)  # any H×W is resized to this; grey is repeated to 3 channels

    def __init__(self, weights: Path, device: torch.device, batch_size: int = 100, verify_hash: bool = True):
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.weights_sha256 = sha256_file(weights)
        if verify_hash and not self.weights_sha256.startswith(INCEPTION_SHA256_PREFIX):
            raise MissingWeights(
                f"{weights}: sha256 {self.weights_sha256[:16]}... is not the FID Inception's "
                f"({INCEPTION_SHA256_PREFIX}...); refusing to report it as standard FID"
            )
        torch.load(weights, map_location="cpu", weights_only=True)  # refuse a pickle that would run code
        self.model = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(weights)
        ).to(device)
        self.model.eval()
        self.device, self.batch_size = device, batch_size

    @torch.no_grad()
    def __call__(self, images_u8: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        if images_u8.ndim != 4 or images_u8.shape[1] not in (1, 3):
            raise ImageShapeError(
                f"the Inception extractor takes grey or RGB images N×C×H×W (C = 1 or 3), "
                f"got {shape_text(images_u8.shape)}"
            )
        feats, probs = [], []
        for i in range(0, len(images_u8), self.batch_size):
            x = images_u8[i : i + self.batch_size].to(self.device)
            f, logits = self.model(x if x.shape[1] == 3 else x.expand(-1, 3, -1, -1))  # grey -> RGB by repetition
            feats.append(f.float().cpu().numpy())
            probs.append(F.softmax(logits.double(), dim=1).cpu().numpy())
        return np.concatenate(feats), np.concatenate(probs)


Extractor = ClassifierExtractor | JudgeExtractor | InceptionExtractor


def embed_all(extractor: Extractor, images_u8: np.ndarray, batch_size: int) -> np.ndarray:
    """Features of a large uint8 array (N×C×H×W, e.g. every training image), a chunk at a time."""
    step = max(batch_size, 1) * 20
    return np.concatenate([extractor(torch.from_numpy(np.ascontiguousarray(images_u8[i : i + step])))[0]
                           for i in range(0, len(images_u8), step)])  # fmt: skip


@dataclass(frozen=True)
class ExtractorFiles:
    """The trained extractors' files (the classifier and judge stages' outputs) and the Inception weights."""

    classifier: Path
    judge: Path
    inception_weights: str = ""  # evaluate.inception_weights ('' = torch hub cache)


BUILDERS: dict[str, Callable[[ExtractorFiles, torch.device, int], Extractor]] = {
    "classifier": lambda files, dev, bs: ClassifierExtractor(files.classifier, dev, bs),
    "judge": lambda files, dev, bs: JudgeExtractor(files.judge, dev, bs),
    "inception": lambda files, dev, bs: InceptionExtractor(
        inception_weights(files.inception_weights), dev, min(bs, 100)
    ),  # fmt: skip
}


def build_extractors(names: list[str], files: ExtractorFiles, device: torch.device, batch_size: int
                     ) -> tuple[dict[str, Extractor], dict[str, str]]:  # fmt: skip
    """The configured extractors by name, and {name: reason} for those that do not apply to this data (the
    classifier of an unlabeled source); NoExtractor when none applies. Missing Inception weights are an error, never a
    silent substitute."""
    built: dict[str, Extractor] = {}
    not_applicable: dict[str, str] = {}
    for name in names:
        try:
            built[name] = BUILDERS[name](files, device, batch_size)
        except NoClassifier as err:
            not_applicable[name] = str(err)
    if not built:
        reasons = "; ".join(f"{k}: {v}" for k, v in not_applicable.items())
        raise NoExtractor(
            f"evaluate.extractors = {names}: none applies to this data ({reasons}). Add 'judge' (trained on your "
            "images, no labels needed) to evaluate.extractors"
        )
    return built, not_applicable
