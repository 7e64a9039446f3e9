"""Where every stage reads and writes: the one list of paths the CLI, the flow, the benches and the tests use.

`dvc.yaml` names the same paths (tests/test_reliability.py and tests/test_stage_deps.py check that it agrees).
All paths are relative to the repository root; `Paths(root)` gives them under another root (the flow, tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    root: Path = Path(".")

    @property
    def data(self) -> Path:
        return self.root / "data"

    # ---- source and download
    @property
    def source_manifest(self) -> Path:
        """What the configured source holds now (written by the `source` stage; the download stage depends on it)."""
        return self.data / "source.json"

    @property
    def raw(self) -> Path:
        return self.data / "raw"

    def raw_dataset(self, dataset: str) -> Path:
        return self.raw / dataset

    @property
    def cache(self) -> Path:
        """Local only (git- and DVC-ignored): the prepare decode cache, downloaded source archives."""
        return self.data / "cache"

    # ---- prepare
    @property
    def prepared(self) -> Path:
        return self.data / "prepared"

    @property
    def train_split(self) -> Path:
        return self.prepared / "train.npz"

    @property
    def test_split(self) -> Path:
        return self.prepared / "test.npz"

    @property
    def prepared_summary(self) -> Path:
        return self.prepared / "summary.json"

    @property
    def skipped(self) -> Path:
        return self.prepared / "skipped.csv"

    # ---- models and training
    @property
    def models(self) -> Path:
        return self.data / "models"

    @property
    def classifier(self) -> Path:
        return self.models / "classifier.pt"

    @property
    def judge(self) -> Path:
        return self.models / "judge.pt"

    @property
    def generator(self) -> Path:
        return self.models / "generator.pt"

    @property
    def checkpoints(self) -> Path:
        return self.data / "checkpoints"

    @property
    def train_log(self) -> Path:
        return self.data / "train"

    @property
    def train_summary(self) -> Path:
        return self.train_log / "summary.json"

    @property
    def train_steps(self) -> Path:
        """The per-step log: one column per statistic of the training step."""
        return self.train_log / "log.tsv"

    @property
    def train_quality(self) -> Path:
        """train.eval_every's scores during training (step, fd); a header only when off."""
        return self.train_log / "quality.tsv"

    # ---- evaluation
    @property
    def reference(self) -> Path:
        return self.data / "reference"

    @property
    def metrics_dir(self) -> Path:
        return self.data / "metrics"

    @property
    def metrics(self) -> Path:
        return self.metrics_dir / "metrics.json"

    @property
    def classifier_metrics(self) -> Path:
        return self.metrics_dir / "classifier.json"

    @property
    def judge_metrics(self) -> Path:
        return self.metrics_dir / "judge.json"

    @property
    def closest_pairs(self) -> Path:
        """The generated images nearest to a training image, beside it (evaluate writes it, export draws it)."""
        return self.metrics_dir / "closest_pairs.npz"

    # ---- export, champion, history
    @property
    def samples(self) -> Path:
        return self.data / "samples"

    @property
    def grid(self) -> Path:
        return self.samples / "grid.png"

    @property
    def closest_pairs_picture(self) -> Path:
        return self.samples / "closest_pairs.png"

    @property
    def class_grid(self) -> Path:
        return self.samples / "class_grid.png"

    @property
    def training_curves(self) -> Path:
        return self.samples / "training_curves.png"

    @property
    def champion(self) -> Path:
        return self.models / "champion"

    @property
    def history(self) -> Path:
        return self.data / "history" / "runs.csv"


PATHS = Paths()
