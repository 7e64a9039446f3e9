"""DistributedDataParallel through torchrun: 2 processes, gloo, on the CPU."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from gan.train import load_checkpoint

from .conftest import run
from .test_reliability import workspace

pytestmark = pytest.mark.slow

DDP = ["model.channels=8", "train.epochs=2", "train.batch_size=64", "train.device=cpu", "train.log_flush_every=1"]


def torchrun(ws, nproc: int = 2):
    return run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                "-m", "gan", "train"], ws)  # fmt: skip


def test_two_gloo_processes_train_in_sync_and_resume(tmp_path):
    ws = workspace(tmp_path / "ddp", DDP)
    torchrun(ws)
    summary = json.loads((ws / "data/train/summary.json").read_text())
    assert summary["steps"] == 2 * (2000 // 64)  # global batch 64 = 2 ranks × 32
    assert summary["final"]["processes"] == 2 and summary["final"]["ranks_in_sync"] is True
    rows = (ws / "data/train/log.tsv").read_text().splitlines()
    assert len(rows) == 1 + summary["steps"]  # one writer (rank 0), no duplicated rows
    ckpt = load_checkpoint(ws / "data/checkpoints/last.pt")
    assert isinstance(ckpt["noise_rng"], list) and len(ckpt["noise_rng"]) == 2
    assert not torch.equal(ckpt["noise_rng"][0], ckpt["noise_rng"][1])  # each rank draws its own noise
    blob = torch.load(ws / "data/models/generator.pt", weights_only=True)
    assert all(torch.equal(blob["state_dict"][k], v) for k, v in ckpt["G"].items())
    assert blob["meta"]["processes"] == 2

    # Same command again: both ranks resume from the checkpoint; nothing is retrained.
    torchrun(ws)
    again = json.loads((ws / "data/train/summary.json").read_text())
    assert again["resumed_from_step"] == summary["steps"]

    # A single process on the same data learns something different: the ranks really split the batch.
    single = workspace(tmp_path / "single", DDP)
    run([sys.executable, "-m", "gan", "train"], single)
    one = torch.load(single / "data/models/generator.pt", weights_only=True)["state_dict"]
    assert any(not torch.equal(one[k], blob["state_dict"][k]) for k in one if one[k].is_floating_point())


def test_global_batch_must_split_evenly(tmp_path):
    ws = workspace(tmp_path / "odd", [*DDP, "train.batch_size=63"])
    proc = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "gan", "train"], ws, check=False)  # fmt: skip
    assert proc.returncode != 0
    assert "train.batch_size = 63 must be divisible by the number of processes (2)" in proc.stdout + proc.stderr
