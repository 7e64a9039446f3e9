"""A cheap quality check of G during training, for best-checkpoint selection (`train.eval_every`, `train.keep`).

GAN quality often peaks and then degrades, so the trainer can score G every `train.eval_every` steps and keep the
best snapshot. The score is the Fréchet distance, in the domain's own features (the classifier's where the data has
labels, else the judge's; only one that passed its soundness test, `gan.evaluation.soundness`), between
`train.eval_samples` generated images and as many real *training* images (a seeded draw from the train split, the
same draw at every probe), as StyleGAN scores its snapshots. The test images are left to the evaluate stage, which
reports the kept snapshot against them: a snapshot chosen as the best of twenty noisy scores on the very images it is
then reported on would get a number biased low. The score is the same kind of number as the evaluate stage's FID, on
fewer images; it ranks snapshots of one run, the evaluate stage reports the model.
A class-conditional G is asked for every class equally often. The probe draws its own noise from a fixed seed: every
call scores G on the same z, and training's random stream is untouched, so probing never changes what training does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gan.core import metric_keys as keys
from gan.core.errors import PipelineError
from gan.core.splits import load_split
from gan.evaluation.features import ExtractorFiles, NoExtractor, build_extractors
from gan.evaluation.metrics import feature_stats, frechet_distance
from gan.training.sampling import requested_labels, sample_uint8

PROBE_SEED = 20_240_601  # the probe's own noise: the same z at every probe


@dataclass
class QualityProbe:
    """`probe(G)` -> FD of G's samples to the real training images drawn by `build_probe`, in one extractor's
    features (lower is better)."""

    extractor_name: str
    extractor: object
    real_mu: np.ndarray
    real_sigma: np.ndarray
    n: int
    batch_size: int = 500

    @torch.no_grad()
    def __call__(self, G: torch.nn.Module) -> float:
        was_training = G.training
        labels = requested_labels(self.n, G.num_classes) if getattr(G, "num_classes", 0) else None
        fake = sample_uint8(G, self.n, PROBE_SEED, self.batch_size, labels)
        G.train(was_training)
        features, _ = self.extractor(fake)
        return frechet_distance(*feature_stats(features), self.real_mu, self.real_sigma)


class NoSoundExtractor(ValueError):
    """No extractor that applies to this data passed its soundness test: G cannot be scored during training."""


def build_probe(files: ExtractorFiles, train_split: str | Path, n: int, device: torch.device) -> QualityProbe:
    """The probe in the domain's features: the classifier where it applies (labelled data) and passed its soundness
    test (`gan.evaluation.soundness`), else the judge if it passed; NoSoundExtractor (with each one's reason) when
    neither."""
    refused = []
    for name in keys.DOMAIN_EXTRACTORS:
        try:
            extractors, _ = build_extractors([name], files, device, 500)
        except NoExtractor:  # an unlabeled folder: the classifier is only a marker that says so
            continue
        except (FileNotFoundError, PipelineError):  # not trained in this workspace (e.g. only Inception is used)
            refused.append(f"the {name} is not trained ({getattr(files, name)} missing)")
            continue
        record = extractors[name].soundness
        if record is not None and not record["separates"]:
            refused.append(f"the {name} cannot separate degraded images from real ones ({record['reason']})")
            continue
        break
    else:
        raise NoSoundExtractor("; ".join(refused) or "no extractor applies to this data")
    real = load_split(train_split).images
    if len(real) < 2:
        raise ValueError(f"{train_split}: train.eval_every needs real images to compare with; it has {len(real)}")
    pick = np.sort(np.random.default_rng(PROBE_SEED).choice(len(real), min(n, len(real)), replace=False))
    real_features, _ = extractors[name](torch.from_numpy(real[pick]))
    mu, sigma = feature_stats(real_features)
    return QualityProbe(name, extractors[name], mu, sigma, n)
