"""Train stage: the GAN training loop, resumable and deterministic on CPU.

The loop reads top to bottom in titled sections (where and on what; models and noise; resume; the step; the loop;
finalisation). The algorithm is passed in: `gan.training.step.GanStep` takes the loss, augmentation, regularisers and
`train.d_steps` built by name from the config; by default it is the textbook step (`gan.training.step`'s docstring).
`train.ema_decay` keeps an EMA of G (`gan.training.ema`), which is then the G sampled, saved and evaluated.

G and D are built for the training split's image shape (C×H×W, grey or RGB, any supported size) and, with
`model.conditional`, its classes.

Determinism: model init uses the global seed; batch order is a permutation drawn from (seed, epoch); noise,
fake labels, augmentation and the gradient penalty's interpolation come from one dedicated generator whose
state is checkpointed. So resuming from a checkpoint replays exactly the same numbers.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from gan.core import atomic
from gan.core.config import ConfigError, ModelConfig, TrainConfig, check_processes, section_hash
from gan.core.errors import PipelineError
from gan.core.length import Plan as Length
from gan.core.length import plan
from gan.core.pngs import write_grid
from gan.core.splits import Split, load_split
from gan.core.tensors import epoch_permutation, from_uint8, resolve_device, to_uint8
from gan.training.ema import EmaGenerator
from gan.training.models import build_discriminator, build_generator, save_generator
from gan.training.overfitting import log_columns, overfitting_note
from gan.training.step import CudaGraphStep, GanStep, step_parts

log = logging.getLogger(__name__)
WARMUP_STEPS = 20  # steps timed for the estimate of the run's duration logged before it goes on
MIN_STEPS_BETWEEN_GRIDS = 200  # a small folder's epochs are short: its sample grids every few epochs


class DivergenceError(PipelineError):
    """A loss or a weight became NaN/inf; training stopped, last good checkpoint kept."""


@dataclass(frozen=True)
class TrainOutputs:
    generator: Path  # data/models/generator.pt
    checkpoint_dir: Path  # data/checkpoints (persists across DVC runs, for resume)
    log_dir: Path  # data/train: log.tsv, samples/epoch_NNN.png, summary.json


@dataclass
class QualityTracker:
    """Scores of G during training (`train.eval_every`): data/train/quality.tsv (step, fd), the best snapshot so far,
    and the patience count (scores in a row without a relative improvement of `min_delta` over the best), held in
    memory and in every checkpoint, so a resumed run keeps the best of the steps before it and stops where the
    uninterrupted run would."""

    probe: Callable[[torch.nn.Module], float] | None
    path: Path
    leader: bool
    patience: int = 0
    min_delta: float = 0.0
    best_step: int = -1
    best_value: float = math.inf
    best_state: dict | None = None
    last_step: int = -1
    last_value: float = math.nan
    improved_step: int = -1  # the last score that improved on the best by min_delta (patience counts from it)
    improved_value: float = math.inf
    since: int = 0  # scores since then
    seconds: float = 0.0  # time spent scoring in this process (the probe's cost)

    def start(self, resume_step: int, saved: dict | None) -> None:
        if saved:
            self.best_step, self.best_value, self.best_state = saved["step"], saved["value"], saved["state"]
            self.improved_step = saved.get("improved_step", self.best_step)
            self.improved_value = saved.get("improved_value", self.best_value)
            self.since = saved.get("since", 0)
            self.last_step, self.last_value = saved.get("last_step", -1), saved.get("last_value", math.nan)
        if not self.leader:
            return
        if resume_step == 0 or not self.path.exists():
            atomic.write_text(self.path, "step\tfd\n")
        else:
            _truncate_log(self.path, resume_step)

    def record(self, step: int, G: torch.nn.Module) -> None:
        """Score G at `step` (rank 0 only: no collective runs inside) and keep it if it is the best so far."""
        self.last_step = step
        if self.probe is None or not self.leader:
            return
        t0 = time.perf_counter()
        value = float(self.probe(G))
        self.seconds += time.perf_counter() - t0
        self.last_value = value
        with open(self.path, "a") as f:
            f.write(f"{step}\t{value:.6f}\n")
        if value < self.best_value:
            self.best_step, self.best_value = step, value
            self.best_state = {k: v.detach().cpu().clone() for k, v in G.state_dict().items()}
        if value < self.improved_value * (1 - self.min_delta):
            self.improved_step, self.improved_value, self.since = step, value, 0
        else:
            self.since += 1
        log.info("step %d: quality FD %.3f (best %.3f at step %d)", step, value, self.best_value, self.best_step)

    @property
    def exhausted(self) -> bool:
        """train.patience scores in a row brought no improvement of train.min_delta."""
        return bool(self.patience) and self.since >= self.patience

    def state_dict(self) -> dict | None:
        if self.best_state is None:
            return None
        return {"step": self.best_step, "value": self.best_value, "state": self.best_state,
                "improved_step": self.improved_step, "improved_value": self.improved_value, "since": self.since,
                "last_step": self.last_step, "last_value": self.last_value}  # fmt: skip


STOP_REASONS = {
    "length": "stopped: length reached",
    "time": "stopped: time budget (train.max_seconds)",
    "patience": "stopped: no improvement since step {step}",
}


@dataclass
class TrainResult:
    steps: int
    epochs: float  # epochs trained (fractional when training stopped mid-epoch)
    epochs_planned: float  # the planned length in epochs
    stopped_by_time_budget: bool  # train.max_seconds ended training before the planned length
    resumed_from_step: int
    seconds: float
    images_per_second: float
    steps_planned: int = 0
    kimg: float = 0.0  # thousands of real images shown to D
    length: str = ""  # how the planned length was decided (gan.core.length)
    stop: str = ""  # why training ended: one of STOP_REASONS' texts
    probe: str = ""  # the extractor that scored G during training, or why none did
    probe_seconds: float = 0.0  # of `seconds`, the time the probe took (this process)
    final: dict = field(default_factory=dict)
    kept: dict = field(default_factory=dict)  # which G the stage kept: last, or the best snapshot (step, fd)
    overfitting: str = ""  # whether and when D overfitted, and what ADA did (gan.training.overfitting)


def run_fingerprint(model_cfg: ModelConfig, train_cfg: TrainConfig, images: np.ndarray, code_sha256: str = "") -> str:
    """What a checkpoint must match to be resumed: settings that change the result, the data and the code.

    `code_sha256` is the digest of every package file the train stage runs, given by its caller (the CLI:
    `gan.core.codedeps.stage_code_sha256("train")`, the same list dvc.yaml's train deps must hold, checked by
    tests/test_stage_deps.py); "" for a library call outside the stage, whose checkpoints then match on settings
    and data alone.
    """
    relevant = train_cfg.model_copy(update={"checkpoint_every": 0, "log_flush_every": 1})
    data = hashlib.sha256(repr(tuple(images.shape)).encode())  # the shape too: the same bytes can be 1×… or 3×…
    data.update(images.tobytes())
    data_hash = data.hexdigest()[:16]
    return f"{section_hash(model_cfg, relevant)}-{data_hash}-{code_sha256[:16] or 'code-not-given'}"


def load_checkpoint(path: Path) -> dict:
    # weights_only: a checkpoint is data, never code.
    return torch.load(path, map_location="cpu", weights_only=True)


def _check_finite(module: torch.nn.Module, what: str, step: int) -> None:
    for name, p in module.state_dict().items():
        if p.is_floating_point() and not torch.isfinite(p).all():
            raise DivergenceError(f"training diverged at step {step}: {what} weight {name!r} is NaN/inf")


def _truncate_log(path: Path, upto_step: int) -> None:
    """On resume, drop log rows written after the checkpoint (they will be replayed)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    kept = [lines[0]] + [ln for ln in lines[1:] if ln and int(ln.split("\t", 1)[0]) <= upto_step] if lines else []
    atomic.write_text(path, "\n".join(kept) + "\n" if kept else "")


@dataclass(frozen=True)
class Rank:
    """Where this process trains: its device, the number of processes and its rank (0 alone)."""

    device: torch.device
    world: int
    rank: int

    @property
    def leader(self) -> bool:
        return self.rank == 0


class Checkpoints:
    """`last.pt`: everything a bit-identical resume needs, written atomically by rank 0 (every rank's noise state
    gathered first); checked for NaN/inf weights before each write."""

    def __init__(self, path: Path, fingerprint: str, model_cfg: ModelConfig, where: Rank):
        self.path, self.fingerprint, self.model_cfg, self.where = path, fingerprint, model_cfg, where

    def load(self) -> dict | None:
        """The checkpoint if it was made by this very run (settings, data, code), else None."""
        if not self.path.exists():
            return None
        ckpt = load_checkpoint(self.path)
        if ckpt.get("fingerprint") != self.fingerprint:
            log.info("ignoring %s: it was made with other settings or data", self.path)
            return None
        return ckpt

    def save(self, models: Models, noise: torch.Generator, step: int, epoch: int, batch: int,
             best: dict | None = None, step_state: dict | None = None) -> None:  # fmt: skip
        _check_finite(models.G, "generator", step)
        _check_finite(models.D, "discriminator", step)
        noise_state = noise.get_state()
        world = self.where.world
        if world > 1:  # every rank's noise state, so each rank resumes its own stream
            states: list = [None] * world
            torch.distributed.all_gather_object(states, noise_state.cpu())
            noise_state = states
        if not self.where.leader:
            torch.distributed.barrier()
            return
        atomic.save_torch(
            self.path,
            {
                "fingerprint": self.fingerprint,
                "step": step,
                "epoch": epoch,
                "batch": batch,
                **models.state_dict(),
                **({"best": best} if best is not None else {}),
                **({"step_state": step_state} if step_state else {}),
                "noise_rng": noise_state,
                "model_config": json.dumps(self.model_cfg.model_dump()),
            },
        )
        if world > 1:
            torch.distributed.barrier()


@dataclass
class Models:
    """G, D, their optimisers and the optional EMA of G: what a checkpoint holds."""

    G: torch.nn.Module
    D: torch.nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    ema: EmaGenerator | None

    @property
    def G_out(self) -> torch.nn.Module:
        """The G that is sampled, evaluated and exported: the EMA when train.ema_decay > 0."""
        return self.ema.module if self.ema is not None else self.G

    def state_dict(self) -> dict:
        state = {"G": self.G.state_dict(), "D": self.D.state_dict()}
        state |= {"opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict()}
        return state | ({"G_ema": self.ema.state_dict()} if self.ema is not None else {})

    def load_state_dict(self, ckpt: dict, capturable: bool, device: torch.device) -> None:
        self.G.load_state_dict(ckpt["G"])
        self.D.load_state_dict(ckpt["D"])
        self.opt_g.load_state_dict(ckpt["opt_g"])
        self.opt_d.load_state_dict(ckpt["opt_d"])
        if self.ema is not None:
            self.ema.load_state_dict(ckpt["G_ema"])
        for opt in (self.opt_g, self.opt_d):  # the saved groups carry their own flag; graphed steps count on the GPU
            for group in opt.param_groups:
                group["capturable"] = capturable
            if capturable:
                for state in opt.state.values():
                    state["step"] = state["step"].to(device, torch.float32)


def build_models(
    model_cfg: ModelConfig, train_cfg: TrainConfig, shape: tuple[int, int, int], num_classes: int,
    device: torch.device, capturable: bool, source: str,
) -> Models:  # fmt: skip
    """G and D for the data's shape (and classes), on `device`, with Adam and the EMA copy of G."""
    torch.manual_seed(train_cfg.seed)
    try:  # config validation refuses most mismatches before any stage runs
        G = build_generator(model_cfg, shape, num_classes)
        D = build_discriminator(model_cfg, shape, num_classes)
    except ValueError as err:
        raise ConfigError(
            f"{source}: {err}; prepare the data at a supported size or change the model section"
        ) from None
    # channels_last: measured 1.13x faster on a 2-core CPU for the default DCGAN (bench/train_throughput.py).
    G = G.to(device, memory_format=torch.channels_last)
    D = D.to(device, memory_format=torch.channels_last)
    betas = (train_cfg.beta1, train_cfg.beta2)
    opt_g = torch.optim.Adam(G.parameters(), lr=train_cfg.lr_g, betas=betas, capturable=capturable)
    opt_d = torch.optim.Adam(D.parameters(), lr=train_cfg.lr_d, betas=betas, capturable=capturable)
    ema = EmaGenerator(G, train_cfg.ema_decay) if train_cfg.ema_decay else None
    return Models(G, D, opt_g, opt_d, ema)


def num_classes_of(labels: np.ndarray) -> int:
    """K for labels 0..K-1; 0 when the split is unlabeled (any label < 0) or empty."""
    return int(labels.max()) + 1 if len(labels) and labels.min() >= 0 else 0


class StepLog:
    """The per-step log (data/train/log.tsv): statistics stay on the device until a flush, which writes them,
    checks every loss is finite (DivergenceError otherwise), and reports progress: the share of the run done,
    counted toward whichever limit ends it first (the planned steps, or train.max_seconds), with the step and the
    quality probe's latest and best scores."""

    def __init__(self, path: Path, columns: tuple[str, ...], ckpt_path: Path, where: Rank, resume_step: int,
                 total_steps: int, budget: TimeBudget, on_progress: Callable[[dict], None] | None,
                 progress_bar: bool):  # fmt: skip
        self.columns, self.ckpt_path, self.total_steps, self.on_progress = columns, ckpt_path, total_steps, on_progress
        self.budget = budget
        self.pending: list[torch.Tensor] = []
        self.last: dict = {}
        self.quality = ""  # the probe's latest and best, shown beside the bar
        if where.leader:  # the only rank that writes: another rank's late rewrite would orphan the log
            if resume_step == 0:
                path.unlink(missing_ok=True)
            else:
                _truncate_log(path, resume_step)
            path.parent.mkdir(parents=True, exist_ok=True)
            new = not path.exists() or path.stat().st_size == 0
            self.file = open(path, "a")
            if new:
                self.file.write("\t".join(columns) + "\n")
        else:
            self.file = open(os.devnull, "w")
        bar = "{desc}: {percentage:3.0f}%|{bar}| {n}/{total} [{elapsed}<{remaining}{postfix}]"
        self.bar = tqdm(total=100, initial=int(100 * self.done(resume_step)), desc="train", unit="%",
                        disable=not progress_bar or not where.leader, mininterval=0.5, bar_format=bar)  # fmt: skip

    def done(self, step: int) -> float:
        """The share of the run done: steps toward the plan, or time toward train.max_seconds, whichever is ahead."""
        by_steps = step / max(self.total_steps, 1)
        return min(1.0, max(by_steps, self.budget.fraction()))

    def add(self, stats: torch.Tensor) -> None:
        self.pending.append(stats)

    def flush(self, step: int, epoch: int) -> None:
        if not self.pending:
            return
        rows = torch.stack(self.pending).cpu().tolist()
        self.pending.clear()
        first_step = step - len(rows) + 1
        for k, row in enumerate(rows):
            loss_d, loss_g = row[0], row[1]
            if not (math.isfinite(loss_d) and math.isfinite(loss_g)):
                self.file.flush()
                raise DivergenceError(
                    f"training diverged at step {first_step + k}: loss_d={loss_d}, loss_g={loss_g}; "
                    f"the last good checkpoint {self.ckpt_path} is kept (lower the learning rates?)"
                )
            self.file.write("\t".join([str(first_step + k), str(epoch), *(f"{v:.6f}" for v in row)]) + "\n")
        self.file.flush()
        self.last = dict(zip(self.columns, [step, epoch, *rows[-1]], strict=True))
        self.show(step)
        if self.on_progress is not None:
            self.on_progress({**self.last, "total_steps": self.total_steps, "progress": self.done(step)})

    def show(self, step: int) -> None:
        self.bar.n = int(100 * self.done(step))
        # the losses, and with ADA D's overfitting signal r_t and the augmentation probability p
        shown = {"loss_d": "loss_d", "loss_g": "loss_g", "real_sign": "r_t", "augment_p": "p"}
        losses = ", ".join(f"{shown[k]} {v:.3f}" for k, v in self.last.items() if k in shown)
        self.bar.set_postfix_str(f"step {step}/{self.total_steps}, {losses}{self.quality}")

    def close(self) -> None:
        self.bar.close()
        self.file.close()


class TimeBudget:
    """train.max_seconds: rank 0's clock decides, so every rank stops at the same step."""

    def __init__(self, max_seconds: float, where: Rank):
        self.max_seconds, self.where, self.t0 = max_seconds, where, time.perf_counter()

    def spent(self) -> bool:
        return _out_of_time(self.max_seconds, self.t0, self.where.world, self.where.device)

    def fraction(self) -> float:
        """The share of the budget used (0 without one)."""
        return (time.perf_counter() - self.t0) / self.max_seconds if self.max_seconds else 0.0


def save_epoch_grid(G: torch.nn.Module, fixed_z: torch.Tensor, fixed_y: torch.Tensor | None, path: Path) -> None:
    """The fixed-noise sample grid of an epoch (8 per row; one class per column cycle when conditional)."""
    was_training = G.training
    G.eval()
    with torch.no_grad():
        grid = (G(fixed_z) if fixed_y is None else G(fixed_z, fixed_y)).cpu()
    G.train(was_training)
    write_grid(to_uint8(grid.clamp(-1, 1)), path, nrow=8, rgb=True)  # RGB as torchvision writes it


@dataclass(frozen=True)
class RunPlan:
    """The run's sizes, decided before anything is built: every check of the settings against the data is here."""

    n: int  # training images
    batch: int  # the global batch (train.batch_size, at most n)
    per_rank: int  # each process's share of it
    steps_per_epoch: int  # G updates an epoch (each takes train.d_steps batches)
    length: Length  # the planned length (gan.core.length): its steps, epochs, kimg and why
    eval_every: int  # steps between quality scores; 0: not scored
    num_classes: int  # for a conditional G; 0 otherwise


def plan_run(model_cfg: ModelConfig, train_cfg: TrainConfig, split: Split, split_name: str, where: Rank,
             has_probe: bool, probe_note: str) -> RunPlan:  # fmt: skip
    """The sizes of the run on `split`, or a ConfigError naming the setting that does not fit the data."""
    n = len(split.images)
    if n == 0:
        raise ValueError(f"{split_name}: the training split is empty")
    bs = min(train_cfg.batch_size, n)
    if bs % where.world:
        raise ConfigError(f"train.batch_size = {bs} must be divisible by the number of processes ({where.world})")
    check_processes(train_cfg, where.world)
    d_steps = train_cfg.d_steps
    steps_per_epoch = n // (bs * d_steps)  # a step is one G update; each of its D updates takes its own batch
    if steps_per_epoch == 0:
        raise ConfigError(
            f"train.d_steps = {d_steps} × train.batch_size = {bs} needs {d_steps * bs} images per step, but "
            f"{split_name} has {n}: lower one of them"
        )
    length = plan(train_cfg, n, split.shape, bs)
    eval_every = length.eval_every if has_probe else 0
    num_classes = num_classes_of(split.labels) if model_cfg.conditional else 0
    if isinstance(train_cfg.eval_every, int) and train_cfg.eval_every and not has_probe and not probe_note:
        raise ConfigError(
            "train.eval_every > 0 needs a quality probe (gan.evaluation.probe.build_probe) to score G with"
        )
    if where.leader:
        log.info("training %d steps (%.1f kimg, %.2f epochs of %d images): %s; %s", length.steps, length.kimg,
                 length.epochs, n, length.why,
                 f"scored every {eval_every} steps ({probe_note or 'quality probe'})" if eval_every
                 else f"not scored during training ({probe_note or 'train.eval_every = 0'})")  # fmt: skip
    if model_cfg.conditional and num_classes < 2:
        raise ConfigError(
            f"model.conditional = true, but {split_name} has no class labels (an unlabeled folder?): "
            "set model.conditional = false, or give the images labels (class subfolders or dataset.json)"
        )
    return RunPlan(n, bs, bs // where.world, steps_per_epoch, length, eval_every, num_classes)


@dataclass
class Batches:
    """Each step's inputs for this rank: its slice of each of the step's d_steps real batches (the epoch's
    permutation), their noise and, for a conditional G, the real and the fake labels (from `noise`, which the
    checkpoint keeps)."""

    data: torch.Tensor  # the whole split, uint8 N×C×H×W, on the device
    labels: torch.Tensor | None  # None: unconditional
    run: RunPlan
    d_steps: int
    z_dim: int
    rank: int
    noise: torch.Generator

    def __call__(self, b: int, perm: torch.Tensor) -> tuple:
        """Step b's real images (d_steps×B×C×H×W), noise and labels for this rank."""
        bs, per_rank, d_steps = self.run.batch, self.run.per_rank, self.d_steps
        starts = [(b * d_steps + k) * bs + self.rank * per_rank for k in range(d_steps)]  # this rank's slice of each
        idx = torch.cat([perm[s : s + per_rank] for s in starts])
        x = from_uint8(self.data[idx]).view(d_steps, per_rank, *self.data.shape[1:])
        z = torch.randn(d_steps, per_rank, self.z_dim, generator=self.noise, device=self.data.device)
        if self.labels is None:
            return x, z, None, None
        y_fake = torch.randint(self.run.num_classes, (d_steps, per_rank), generator=self.noise,
                               device=self.data.device)  # fmt: skip
        return x, z, self.labels[idx].view(d_steps, per_rank), y_fake


def train(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    train_split: str | Path,
    out: TrainOutputs,
    on_progress: Callable[[dict], None] | None = None,
    progress_bar: bool = True,
    probe: Callable[[torch.nn.Module], float] | None = None,
    probe_note: str = "",
    code_sha256: str = "",
) -> TrainResult:
    """Train G and D on the prepared split; resume from `out.checkpoint_dir` if it matches.

    `probe(G)` -> a distance (lower is better; `gan.evaluation.probe.QualityProbe`) scores the G that is kept (the EMA
    one
    when on) every `train.eval_every` steps and at the end; with `train.keep = best` the best-scoring snapshot is
    the stage's generator, and `train.patience` scores without improvement end the run. Without a probe,
    `probe_note` says why (e.g. no extractor passed its soundness test): the run then goes on unscored.
    `code_sha256` is the stage's code in the resume fingerprint (`run_fingerprint`).

    Under `torchrun` (WORLD_SIZE > 1) this is DistributedDataParallel training: NCCL on
    GPUs, gloo on CPUs; `train.batch_size` is the global batch, each rank takes its own
    slice of every batch, gradients are averaged, and only rank 0 writes the log,
    samples, checkpoints and the generator.
    """
    # --- where and on what: processes, data, batches ---
    device, world, rank, owns_group = _init_distributed(resolve_device(train_cfg.device))
    where = Rank(device, world, rank)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    split = load_split(train_split)
    run = plan_run(model_cfg, train_cfg, split, str(train_split), where, probe is not None, probe_note)
    n, bs, num_classes, eval_every = run.n, run.batch, run.num_classes, run.eval_every
    steps_per_epoch, length, total_steps, d_steps = run.steps_per_epoch, run.length, run.length.steps, train_cfg.d_steps
    fingerprint = run_fingerprint(model_cfg, train_cfg, split.images, code_sha256)

    # --- models, the algorithm's parts, the noise ---
    graphed = train_cfg.cuda_graph and device.type == "cuda" and world == 1 and not train_cfg.compile
    if train_cfg.cuda_graph and not graphed:
        log.info("train.cuda_graph applies to single-process CUDA training without train.compile: running eagerly")
    models = build_models(model_cfg, train_cfg, split.shape, num_classes, device, graphed, str(train_split))
    noise = torch.Generator(device=device).manual_seed(train_cfg.seed + 1 + 1000 * rank)
    fixed_z = torch.randn(64, model_cfg.z_dim, generator=torch.Generator().manual_seed(train_cfg.seed + 2)).to(device)
    fixed_y = torch.arange(64, device=device) % num_classes if num_classes else None
    data = torch.from_numpy(split.images).to(device)  # whole split in memory, uint8
    labels = torch.from_numpy(split.labels).to(device) if num_classes else None
    amp = train_cfg.bf16 and device.type == "cuda"

    # --- resume ---
    checkpoints = Checkpoints(out.checkpoint_dir / "last.pt", fingerprint, model_cfg, where)
    step = epoch = batch = resumed_from = 0
    quality = QualityTracker(probe if eval_every else None, out.log_dir / "quality.tsv", rank == 0,
                             train_cfg.patience, train_cfg.min_delta)  # fmt: skip
    ckpt = checkpoints.load()
    if ckpt is not None:
        models.load_state_dict(ckpt, graphed, device)
        states = ckpt["noise_rng"]
        noise.set_state(states[rank] if isinstance(states, list) else states)
        step, epoch, batch = ckpt["step"], ckpt["epoch"], ckpt["batch"]
        resumed_from = step
        log.info("resuming from %s at step %d (epoch %d, batch %d)", checkpoints.path, step, epoch, batch)
    out.log_dir.mkdir(parents=True, exist_ok=True)
    quality.start(step, ckpt.get("best") if ckpt is not None else None)
    sample_dir = out.log_dir / "samples"
    if rank == 0:
        if step == 0:
            for stale in sample_dir.glob("epoch_*.png"):
                stale.unlink()
        sample_dir.mkdir(parents=True, exist_ok=True)

    # --- the step: DDP/compile wrappers, then the algorithm, eager or as a CUDA graph ---
    G_step, D_step = models.G, models.D
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        G_step, D_step = DDP(models.G, device_ids=ids), DDP(models.D, device_ids=ids)
    if train_cfg.compile:  # G and D keep their own (uncompiled) modules for sampling and checkpoints
        G_step, D_step = torch.compile(G_step), torch.compile(D_step)
    parts = step_parts(model_cfg, train_cfg)
    gan_step = GanStep(G_step, D_step, models.opt_g, models.opt_d, parts, noise, amp)
    if ckpt is not None:
        gan_step.load_state_dict(ckpt.get("step_state", {}))
    step_fn = CudaGraphStep(gan_step) if graphed else gan_step
    budget = TimeBudget(train_cfg.max_seconds, where)
    step_log = StepLog(out.log_dir / "log.tsv", ("step", "epoch", *parts.stat_names), checkpoints.path, where,
                       step, total_steps, budget, on_progress, progress_bar)  # fmt: skip
    grid_epochs = max(1, math.ceil(MIN_STEPS_BETWEEN_GRIDS / steps_per_epoch))
    every = train_cfg.checkpoint_every

    batches = Batches(data, labels, run, d_steps, model_cfg.z_dim, rank, noise)

    # --- the loop: epochs of steps until the plan, the time budget or the patience ends it ---
    stop = _why_stop(step, total_steps, True, eval_every, quality, budget, where)  # a resumed run may have stopped
    try:
        models.G.train()
        models.D.train()
        while not stop:
            perm = epoch_permutation(n, train_cfg.seed, epoch).to(device)
            for b in range(batch, steps_per_epoch):
                step_log.add(step_fn(*batches(b, perm), regularise=parts.r1_due(step)))
                if models.ema is not None:
                    models.ema.update(models.G)
                step += 1
                if step == resumed_from + WARMUP_STEPS and rank == 0:
                    _log_estimate(budget, step - resumed_from, total_steps - resumed_from, train_cfg.max_seconds)
                scored = bool(eval_every) and step % eval_every == 0
                if scored:
                    _score(quality, step_log, models.G_out, step, where)
                if len(step_log.pending) >= train_cfg.log_flush_every:
                    step_log.flush(step, epoch)
                stop = _why_stop(step, total_steps, scored, eval_every, quality, budget, where)
                if stop:
                    break
                if every and step % every == 0 and b + 1 < steps_per_epoch:
                    step_log.flush(step, epoch)
                    checkpoints.save(models, noise, step, epoch, b + 1, quality.state_dict(), gan_step.state_dict())
            step_log.flush(step, epoch)
            epoch, batch = (epoch + 1, 0) if b + 1 == steps_per_epoch else (epoch, b + 1)
            if stop:
                if eval_every and quality.last_step != step:  # the last G is a candidate too
                    _score(quality, step_log, models.G_out, step, where)
                if rank == 0:
                    shown = epoch if batch == 0 else epoch + 1  # a stop mid-epoch: the grid of that epoch
                    save_epoch_grid(models.G_out, fixed_z, fixed_y, sample_dir / f"epoch_{shown:03d}.png")
                checkpoints.save(models, noise, step, epoch, batch, quality.state_dict(), gan_step.state_dict())
            else:  # an epoch's end: a checkpoint (benches and tests take snapshots from it), a grid every few
                if rank == 0 and epoch % grid_epochs == 0:
                    save_epoch_grid(models.G_out, fixed_z, fixed_y, sample_dir / f"epoch_{epoch:03d}.png")
                checkpoints.save(models, noise, step, epoch, 0, quality.state_dict(), gan_step.state_dict())
                if epoch % grid_epochs == 0:
                    log.info("epoch %d done at step %d of %d", epoch, step, total_steps)
        step_log.show(step)
        in_sync = _ranks_in_sync(models.G, models.D, gan_step.state_dict()) if world > 1 else None
    finally:
        step_log.close()
        if owns_group:
            torch.distributed.destroy_process_group()

    # --- finalisation: the result, the generator (the EMA one when on; the raw one beside it) ---
    seconds = time.perf_counter() - budget.t0
    trained = step - resumed_from
    stop_text = STOP_REASONS[stop].format(step=quality.improved_step)
    result = TrainResult(
        steps=step,
        epochs=math.floor(100 * step / steps_per_epoch) / 100,  # trained, never rounded up to a full epoch
        epochs_planned=round(length.epochs, 2),
        stopped_by_time_budget=stop == "time",
        resumed_from_step=resumed_from,
        seconds=round(seconds, 3),
        images_per_second=round(trained * bs * d_steps / seconds, 1) if seconds > 0 else 0.0,
        steps_planned=total_steps,
        kimg=round(step * length.images_per_step / 1000, 1),
        length=length.why,
        stop=stop_text,
        probe=(
            f"{getattr(probe, 'extractor_name', 'probe')} every {eval_every} steps"
            if eval_every
            else "off (train.eval_every = 0)"
            if train_cfg.eval_every == 0
            else f"off ({probe_note or 'no quality probe'})"
        ),  # fmt: skip
        probe_seconds=round(quality.seconds, 2),
        final=step_log.last,
    )
    if rank == 0:
        log.info("%s after %d steps (%.1f kimg, %.2f epochs) in %.0f s (scoring %.0f s of it)", stop_text, step,
                 result.kimg, result.epochs, seconds, quality.seconds)  # fmt: skip
        result.overfitting = overfitting_note(log_columns(out.log_dir / "log.tsv"), train_cfg.ada_target)
        log.info("D's overfitting: %s", result.overfitting)
        meta = {"steps": step, "fingerprint": fingerprint, "device": str(device), "processes": world}
        result.final["processes"] = world
        result.final["ranks_in_sync"] = in_sync
        raw_path = out.log_dir / "generator_raw.pt"
        kept = models.G_out
        result.kept = {"generator": "last", "step": step}
        if train_cfg.keep == "best" and quality.best_state is not None:
            kept = copy.deepcopy(models.G_out)
            kept.load_state_dict(quality.best_state)
            result.kept = {"generator": "best", "step": quality.best_step, "fd": round(quality.best_value, 4),
                           "extractor": getattr(probe, "extractor_name", None)}  # fmt: skip
        meta["kept"] = result.kept
        if models.ema is not None:
            save_generator(out.generator, kept, model_cfg, {**meta, "ema_decay": train_cfg.ema_decay})
            save_generator(raw_path, models.G, model_cfg, {**meta, "ema_decay": 0.0, "kept": {"generator": "last"}})
        else:
            save_generator(out.generator, kept, model_cfg, meta)
            raw_path.unlink(missing_ok=True)
        atomic.write_text(out.log_dir / "summary.json", json.dumps(result.__dict__, indent=2) + "\n")
    return result


def _score(quality: QualityTracker, step_log: StepLog, G: torch.nn.Module, at: int, where: Rank) -> None:
    """Score G at step `at` (rank 0) and show it beside the progress bar."""
    quality.record(at, G)
    if quality.probe is not None and where.leader:
        step_log.quality = (f", FD {quality.last_value:.3g} (best {quality.best_value:.3g} at step "
                            f"{quality.best_step})")  # fmt: skip


def _why_stop(step: int, total_steps: int, scored: bool, eval_every: int, quality: QualityTracker,
              budget: TimeBudget, where: Rank) -> str:  # fmt: skip
    """'' to go on, else a key of STOP_REASONS. The same answer on every rank: the step count is shared, the
    budget is rank 0's clock (broadcast), and the patience, which only a score changes, is rank 0's (broadcast
    after a score)."""
    out_of_time = budget.spent()  # on every rank: under DDP it is itself a collective
    if step >= total_steps:
        return "length"
    if scored and _agree(eval_every > 0 and quality.exhausted, where):
        return "patience"
    return "time" if out_of_time else ""


def _log_estimate(budget: TimeBudget, done: int, planned: int, max_seconds: float) -> None:
    """After the first steps (the warm-up), how long the planned steps will take on this machine."""
    per_step = (time.perf_counter() - budget.t0) / done
    need = per_step * planned
    limit = (f"; train.max_seconds = {max_seconds:g} s will stop it at about step {int(max_seconds / per_step)}"
             if max_seconds and need > max_seconds else "")  # fmt: skip
    log.info("timed over the first %d steps: %.3f s/step, so about %.0f min for the %d steps planned (early "
             "stopping may end it sooner)%s", done, per_step, need / 60, planned, limit)  # fmt: skip


def _agree(flag: bool, where: Rank) -> bool:
    """Rank 0's flag on every rank (one broadcast under DDP; nothing to do alone)."""
    if where.world == 1:
        return flag
    value = torch.tensor([float(flag) if where.leader else 0.0], device=where.device)
    torch.distributed.broadcast(value, src=0)
    return bool(value.item())


def _out_of_time(max_seconds: float, t0: float, world: int, device: torch.device) -> bool:
    """The time budget is spent (rank 0's clock decides, so every rank stops at the same step)."""
    if not max_seconds:
        return False
    if world == 1:  # a host-side check: no device tensor, no host sync inside the step loop
        return time.perf_counter() - t0 >= max_seconds
    spent = torch.tensor([float(time.perf_counter() - t0 >= max_seconds)], device=device)
    torch.distributed.broadcast(spent, src=0)
    return bool(spent.item())


def _ranks_in_sync(G: torch.nn.Module, D: torch.nn.Module, step_state: dict) -> bool:
    """All ranks must end with identical weights (DDP averages gradients) and the same step state (ADA's p and
    signal, which rank 0's checkpoint holds for every rank); checked, not assumed.

    Parameters only: BatchNorm running statistics are per rank between DDP's broadcasts
    from rank 0 (whose buffers are the ones saved).
    """
    h = hashlib.sha256()
    for module in (G, D):
        for v in module.parameters():
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    for k, v in sorted(step_state.items()):
        h.update(f"{k}={v.tolist() if isinstance(v, torch.Tensor) else v}".encode())
    digests: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(digests, h.hexdigest())
    if len(set(digests)) != 1:
        raise RuntimeError(f"DDP ranks ended with different weights or ADA state: {digests}")
    return True


def _init_distributed(device: torch.device) -> tuple[torch.device, int, int, bool]:
    """(this rank's device, world size, rank, whether we created the process group) from torchrun's environment.

    A CUDA rank trains on the GPU that LOCAL_RANK names (whatever index train.device gives) and makes
    it the current device *before* the process group exists: NCCL runs object collectives (the
    checkpoint's all_gather_object) and barriers on the current device, cuda:0 on every rank otherwise.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return device, 1, 0, False
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if dist.is_initialized():
        return device, dist.get_world_size(), dist.get_rank(), False
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device, dist.get_world_size(), dist.get_rank(), True
