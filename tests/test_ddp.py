"""DistributedDataParallel: 2 processes, gloo, on the CPU (torchrun, or ranks spawned by the test); NCCL on 2+ GPUs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

import gan.training.train
from gan.core.config import ModelConfig, TrainConfig
from gan.training.losses import LOSSES
from gan.training.models import build_discriminator, build_generator
from gan.training.step import GanStep, StepParts
from gan.training.train import TrainOutputs, load_checkpoint, train

from .conftest import free_port, run
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


def test_global_batch_must_split_evenly(tmp_path):
    ws = workspace(tmp_path / "odd", [*DDP, "train.batch_size=63"])
    proc = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "gan", "train"], ws, check=False)  # fmt: skip
    assert proc.returncode != 0
    assert "train.batch_size = 63 must be divisible by the number of processes (2)" in proc.stdout + proc.stderr


# --- One DDP step is one step on the whole batch ---------------------------------------------------------------
# MLP models: no BatchNorm, whose batch statistics are per rank under DDP and would make the two differ for real.

ONE_STEP_MODEL = ModelConfig(arch="mlp", z_dim=16, hidden=32)
ONE_STEP_BATCH = 32  # global; 16 per rank


def _one_step_setup(ulps: int = 0):
    """G, D, their Adam optimisers (the trainer's settings) and a fixed batch of images and noise; `ulps` = ±1
    moves every input one ulp up or down, to measure how far float rounding alone moves the result."""
    torch.manual_seed(0)
    G, D = build_generator(ONE_STEP_MODEL, (1, 28, 28)), build_discriminator(ONE_STEP_MODEL, (1, 28, 28))
    cfg = TrainConfig()
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(ONE_STEP_BATCH, 1, 28, 28, generator=gen) * 2 - 1
    z = torch.randn(ONE_STEP_BATCH, ONE_STEP_MODEL.z_dim, generator=gen)
    if ulps:
        x, z = (torch.nextafter(t, torch.full_like(t, ulps * float("inf"))) for t in (x, z))
    return G, D, opt_g, opt_d, x, z


ONE_STEP_PARTS = {  # the default step, and one with R1 (a double backward through DDP's gradient reducer)
    "ns": StepParts(LOSSES["ns"]),
    "ns+r1": StepParts(LOSSES["ns"], r1_gamma=1.0, r1_every=1),
}


def _one_step(G, D, opt_g, opt_d, x, z, step_G=None, step_D=None, parts: str = "ns") -> dict[str, torch.Tensor]:
    """One default step (through `step_G`/`step_D`, e.g. DDP wrappers, when given): every parameter's update and
    the gradient it was stepped with (D's from D's step, G's from G's), each concatenated over G and D."""
    params = [*G.parameters(), *D.parameters()]
    before = [p.detach().clone() for p in params]
    step = GanStep(step_G or G, step_D or D, opt_g, opt_d, ONE_STEP_PARTS[parts], torch.Generator())
    step(x[None], z[None], regularise=True)
    return {
        "update": torch.cat([(p.detach() - p0).flatten() for p, p0 in zip(params, before, strict=True)]),
        "gradient": torch.cat([p.grad.flatten() for p in params]),
    }


def _relative_difference(a: dict, b: dict) -> dict[str, float]:
    return {k: ((a[k] - b[k]).norm() / b[k].norm()).item() for k in b}


def _ddp_one_step_rank(rank: int, port: int, out: Path, parts: str) -> None:
    """One rank: DDP-wrapped G and D, one default step on this rank's half of the batch."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        G, D, opt_g, opt_d, x, z = _one_step_setup()
        half = slice(rank * ONE_STEP_BATCH // 2, (rank + 1) * ONE_STEP_BATCH // 2)
        result = _one_step(G, D, opt_g, opt_d, x[half], z[half], DistributedDataParallel(G), DistributedDataParallel(D),
                           parts)  # fmt: skip
        torch.save(result, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("parts", list(ONE_STEP_PARTS))
def test_ddp_step_on_two_halves_is_one_step_on_the_whole_batch(parts, tmp_path):
    """2 gloo ranks, each on one half of a fixed batch (images and noise): DDP averages the gradients, so G and D
    get the gradients and updates of one process stepping on the whole batch, up to float rounding. The rounding
    allowed is measured, not assumed: 10x the larger drift of one process whose inputs moved one ulp up or down
    (over 40 other seeds the DDP difference stayed within 0.75x that drift; one half alone is ~10^4x off)."""
    mp.spawn(_ddp_one_step_rank, args=(free_port(), tmp_path, parts), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])  # the ranks agree exactly

    whole = _one_step(*_one_step_setup(), parts=parts)
    nudged = [_relative_difference(_one_step(*_one_step_setup(ulps), parts=parts), whole) for ulps in (1, -1)]
    G, D, opt_g, opt_d, x, z = _one_step_setup()
    one_half = _relative_difference(_one_step(G, D, opt_g, opt_d, x[:16], z[:16], parts=parts), whole)
    ddp = _relative_difference(ranks[0], whole)
    for k in whole:
        drift = max(n[k] for n in nudged)
        assert 0 < drift < 1e-4, (k, drift)  # rounding-sized
        assert ddp[k] <= 10 * drift, (k, ddp[k], drift)
        assert one_half[k] > 1000 * drift, (k, one_half[k], drift)  # the allowance tells the two apart


# --- Resume in the middle of training, with a rank that reaches the checkpoint late -----------------------------

RESUME_MODEL = ModelConfig(arch="dcgan", channels=8, z_dim=16)
RESUME_CFG = TrainConfig(epochs=2, batch_size=32, checkpoint_every=5, log_flush_every=1, device="cpu")  # 8 steps/epoch
# ADA, moving p fast (0.2 every 4 steps): its state is part of what must match across ranks and resume exactly
RESUME_ADA = RESUME_CFG.model_copy(update={"augment": "translation,cutout", "ada_target": 0.6, "ada_kimg": 0.64})


class _Interrupt(Exception):
    pass


def _as_rank(rank: int, port: int) -> None:
    """The environment torchrun gives rank `rank` of 2."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip


def _train_until_interrupted(cfg: TrainConfig, split: Path, out: TrainOutputs, on_progress, **patches) -> None:
    """train() with some gan.training.train functions replaced for the call; an _Interrupt from `on_progress` ends
    it."""
    originals = {name: getattr(gan.training.train, name) for name in patches}
    for name, value in patches.items():
        setattr(gan.training.train, name, value)
    try:
        train(RESUME_MODEL, cfg, split, out, on_progress=on_progress, progress_bar=False)
    except _Interrupt:
        pass
    finally:
        for name, value in originals.items():
            setattr(gan.training.train, name, value)


def _train_rank(rank: int, port: int, cfg: TrainConfig, split: Path, out: TrainOutputs, interrupt_at: int,
                late_rank_seconds: float):  # fmt: skip
    """One rank of a 2-rank train(), as torchrun would start it; `interrupt_at`: stop both ranks after that step."""
    _as_rank(rank, port)

    def crash(stats: dict) -> None:
        if stats["step"] == interrupt_at:
            raise _Interrupt

    load = gan.training.train.load_checkpoint

    def late_load(path):  # rank 1 reads the checkpoint well after rank 0 has opened the log
        time.sleep(late_rank_seconds)
        return load(path)

    late = {"load_checkpoint": late_load} if rank == 1 and late_rank_seconds else {}
    _train_until_interrupted(cfg, split, out, crash, **late)


def _train_phases(rank: int, cfg: TrainConfig, split: Path, phases: list[tuple[int, TrainOutputs, int, float]]) -> None:
    """mp.spawn target: the phases in order, each a fresh 2-rank train() on its own port."""
    torch.set_num_threads(1)  # as torchrun sets OMP_NUM_THREADS=1
    for port, out, interrupt_at, late_rank_seconds in phases:
        _train_rank(rank, port, cfg, split, out, interrupt_at, late_rank_seconds)


@pytest.mark.parametrize("cfg", [RESUME_CFG, RESUME_ADA], ids=["default", "ada"])
def test_mid_training_resume_with_a_late_rank_is_bit_identical_and_logs_every_step_once(cfg, tiny_split, tmp_path):
    """Interrupted at step 12 (last checkpoint: step 10, mid-epoch 2, mid ADA interval), resumed with rank 1 reading
    the checkpoint 2 s after rank 0: the weights are those of the uninterrupted 2-rank run, and log.tsv has each step
    1..16 once. (Rank 1 rewriting the log on resume used to replace the file under rank 0, whose rows after the
    checkpoint then went to an unlinked file.) With ADA, p moved, and the ranks ended with the same p and signal."""
    full, resumed = (TrainOutputs(tmp_path / d / "generator.pt", tmp_path / d / "ckpt", tmp_path / d / "log")
                     for d in ("full", "resumed"))  # fmt: skip
    phases = [(free_port(), full, 0, 0.0), (free_port(), resumed, 12, 0.0), (free_port(), resumed, 0, 2.0)]
    mp.spawn(_train_phases, args=(cfg, tiny_split, phases), nprocs=2)

    summary = json.loads((resumed.log_dir / "summary.json").read_text())
    assert (summary["resumed_from_step"], summary["steps"]) == (10, 16)
    assert summary["final"]["ranks_in_sync"] is True
    a = torch.load(full.generator, weights_only=True)["state_dict"]
    b = torch.load(resumed.generator, weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = (resumed.log_dir / "log.tsv").read_text().splitlines()
    assert [int(r.split("\t")[0]) for r in rows[1:]] == list(range(1, 17))
    assert (full.log_dir / "log.tsv").read_text() == (resumed.log_dir / "log.tsv").read_text()
    if cfg.ada_target:  # ranks_in_sync above covers ADA's state; p moved, and the checkpoint holds it
        from gan.outputs.pictures import read_tsv_columns

        p = read_tsv_columns(resumed.log_dir / "log.tsv")["augment_p"]
        state = load_checkpoint(resumed.checkpoint_dir / "last.pt")["step_state"]
        assert p.max() > 0 and float(state["augment_p"]) == pytest.approx(p[-1])
        # p moves by the global batch's images: 4 steps × 32 (2 ranks × 16) / 640 = 0.2 (one rank's would be 0.1)
        assert set(np.round(p, 6)) <= {0.0, 0.2, 0.4, 0.6, 0.8, 1.0}, p


# --- NCCL on GPUs ------------------------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL DDP needs 2 GPUs (one per rank)")
def test_two_nccl_processes_train_checkpoint_and_resume(tmp_path):
    """The documented `torchrun --nproc_per_node=N` on GPUs: each rank on its own GPU; the mid-epoch checkpoints'
    all_gather_object and barriers must not hang (a timeout fails the test) and the ranks end in sync."""
    ws = workspace(tmp_path / "nccl", [*DDP, "train.device=cuda", "train.checkpoint_every=10"])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "gan", "train"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for _ in range(2):  # train, then the same command again: both ranks resume from the final checkpoint
        proc = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((ws / "data/train/summary.json").read_text())
    assert summary["resumed_from_step"] == summary["steps"] == 2 * (2000 // 64)
    assert summary["final"]["processes"] == 2 and summary["final"]["ranks_in_sync"] is True
    ckpt = load_checkpoint(ws / "data/checkpoints/last.pt")
    assert len(ckpt["noise_rng"]) == 2 and not torch.equal(ckpt["noise_rng"][0], ckpt["noise_rng"][1])
    rows = (ws / "data/train/log.tsv").read_text().splitlines()
    assert [int(r.split("\t")[0]) for r in rows[1:]] == list(range(1, summary["steps"] + 1))


# --- Each rank trains on its own slice of the global batch ---------------------------------------------------------


def _first_batch_rank(rank: int, port: int, split: Path, out: TrainOutputs, record: Path) -> None:
    """One rank of a 2-rank train(): save the uint8 images the trainer hands this rank at step 1, then stop."""
    torch.set_num_threads(1)
    _as_rank(rank, port)
    seen: list[torch.Tensor] = []
    to_float = gan.training.train.from_uint8

    def recording(images: torch.Tensor) -> torch.Tensor:
        seen.append(images.clone())
        return to_float(images)

    def stop(stats: dict) -> None:
        raise _Interrupt

    _train_until_interrupted(RESUME_CFG, split, out, stop, from_uint8=recording)
    torch.save(seen[0], record / f"rank{rank}.pt")


def test_each_rank_takes_its_own_half_of_the_global_batch(tiny_split, tmp_path):
    """Step 1 of a 2-rank run: rank r gets images perm[r*16:(r+1)*16] of the epoch's permutation, so together
    the ranks see exactly the global batch of 32, with nothing seen twice (the one-step test above shows that
    DDP then averages their gradients into the whole batch's)."""
    from gan.core.tensors import epoch_permutation

    out = TrainOutputs(tmp_path / "generator.pt", tmp_path / "ckpt", tmp_path / "log")
    mp.spawn(_first_batch_rank, args=(free_port(), tiny_split, out, tmp_path), nprocs=2)
    with np.load(tiny_split) as z:
        images = torch.from_numpy(z["images"])
    perm = epoch_permutation(len(images), RESUME_CFG.seed, 0)
    per_rank = RESUME_CFG.batch_size // 2
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert torch.equal(got, images[perm[rank * per_rank : (rank + 1) * per_rank]]), f"rank {rank}'s batch"
