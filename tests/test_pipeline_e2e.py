"""End to end: `dvc repro` on a tiny config, real Fashion-MNIST from the Debian package,
in a temporary copy of the repo (a real git + DVC repo)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from gan.config import apply_overrides, load_params

from .conftest import REPO, require_debian_fashion_mnist

pytestmark = pytest.mark.slow

TINY = [
    "data.mirrors=['file:///usr/share/datasets/fashion-mnist/']",
    "data.limit_train=3000",
    "data.limit_test=1000",
    "model.channels=16",
    "train.epochs=1",
    "train.batch_size=64",
    "classifier.epochs=1",
    "evaluate.n_samples=600",
    "export.n_png=10",
    "export.n_npz=200",
]


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def copy_repo(dest: Path, overrides: list[str]) -> Path:
    """Copy the project's files (as git sees them) into a fresh git repo with tiny params."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for f in files:
        if f.startswith("data/") or not (REPO / f).is_file():
            continue
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, dest / f)
    raw = apply_overrides(yaml.safe_load((REPO / "params.yaml").read_text()), overrides)
    (dest / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    load_params(dest / "params.yaml")
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny"],
    ):
        run(cmd, dest)
    return dest


def ran_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


def test_dvc_repro_end_to_end(tmp_path):
    require_debian_fashion_mnist()
    repo = copy_repo(tmp_path / "repo", TINY)
    first = run(["dvc", "repro"], repo)
    assert ran_stages(first.stdout) == ["download", "prepare", "classifier", "train", "evaluate", "export"]

    raw = repo / "data/raw/fashion-mnist"
    assert sorted(p.name for p in raw.iterdir()) == [
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
    ]
    summary = json.loads((repo / "data/prepared/summary.json").read_text())
    assert summary["splits"]["train"]["n"] == 3000 and summary["splits"]["test"]["n"] == 1000
    with np.load(repo / "data/prepared/train.npz") as z:
        assert z["images"].shape == (3000, 1, 28, 28) and z["images"].dtype == np.uint8

    metrics = json.loads((repo / "data/metrics/metrics.json").read_text())
    for key in ("fd_classifier", "fd_classifier_floor", "classes_covered", "class_kl", "mean_confidence"):
        assert np.isfinite(metrics[key]), key
    assert metrics["n"] == 600 and metrics["fd_classifier_floor"] < metrics["fd_classifier"]
    assert json.loads((repo / "data/metrics/classifier.json").read_text())["test_accuracy"] > 0.5

    samples = repo / "data/samples"
    assert Image.open(samples / "grid.png").size == (8 * 28 + 9 * 2, 8 * 28 + 9 * 2)
    assert len(list((samples / "png").glob("*.png"))) == 10
    with np.load(samples / "samples.npz") as z:
        assert z["images"].shape == (200, 28, 28, 1) and z["images"].dtype == np.uint8
    card = (samples / "MODEL_CARD.md").read_text()
    assert "fashion-mnist" in card and str(metrics["fd_classifier"]) in card
    # TorchScript loads where this project cannot be imported.
    probe = (
        "import sys; sys.modules['gan'] = None; import torch; "
        f"G = torch.jit.load({str(samples / 'generator.torchscript.pt')!r}); print(tuple(G(torch.randn(2, 100)).shape))"
    )
    assert run([sys.executable, "-c", probe], tmp_path).stdout.strip() == "(2, 1, 28, 28)"
    log_rows = (repo / "data/train/log.tsv").read_text().splitlines()
    assert len(log_rows) == 1 + 3000 // 64

    second = run(["dvc", "repro"], repo)
    assert ran_stages(second.stdout) == []
    assert "up to date" in run(["dvc", "status"], repo).stdout

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["lr_g"] = 0.0003
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = run(["dvc", "repro"], repo)
    assert ran_stages(third.stdout) == ["train", "evaluate", "export"]

    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-f", "-d", "local", str(remote)], repo)
    run(["dvc", "push"], repo)
    assert any(remote.rglob("*")), "dvc push stored nothing"


def test_bad_params_stop_dvc_before_any_stage(tmp_path):
    repo = copy_repo(tmp_path / "repo", TINY)
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["train"]["epochs"] = -3
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    proc = run(["dvc", "repro"], repo, check=False)
    assert proc.returncode != 0
    assert "train.epochs = -3" in proc.stderr + proc.stdout
    assert not (repo / "data/raw").exists()
