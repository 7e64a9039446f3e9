"""Train stage: the GAN training loop, resumable and deterministic on CPU.

One step: G makes a batch of fakes; D takes an Adam step on
L_D = -log D(x) - log(1 - D(G(z))) (fakes detached); then G takes an Adam step
on L_G = -log D(G(z)) using *the same fakes* -- produced by the current G,
which has not changed since -- scored by the updated D with the "real" label.

G and D are built for the training split's image shape (C×H×W, grey or RGB, any supported size).

Determinism: model init uses the global seed; batch order is a permutation
drawn from (seed, epoch); noise comes from a dedicated generator whose state is
checkpointed. So resuming from a checkpoint replays exactly the same numbers.
"""

from __future__ import annotations

import functools
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
from torchvision.utils import save_image
from tqdm import tqdm

from gan import atomic
from gan.codedeps import stage_code_files
from gan.config import ConfigError, ModelConfig, TrainConfig, section_hash
from gan.errors import PipelineError
from gan.losses import d_loss, g_loss
from gan.models import build_discriminator, build_generator, save_generator
from gan.splits import load_split
from gan.tensors import epoch_permutation, from_uint8, resolve_device

log = logging.getLogger(__name__)
LOG_COLUMNS = ("step", "epoch", "loss_d", "loss_g", "d_real", "d_fake")


class DivergenceError(PipelineError):
    """A loss or a weight became NaN/inf; training stopped, last good checkpoint kept."""


@dataclass(frozen=True)
class TrainOutputs:
    generator: Path  # data/models/generator.pt
    checkpoint_dir: Path  # data/checkpoints (persists across DVC runs, for resume)
    log_dir: Path  # data/train: log.tsv, samples/epoch_NNN.png, summary.json


@dataclass
class TrainResult:
    steps: int
    epochs: float  # epochs trained (fractional when train.max_seconds stopped training mid-epoch)
    epochs_planned: int  # train.epochs
    stopped_by_time_budget: bool  # train.max_seconds ended training before train.epochs
    resumed_from_step: int
    seconds: float
    images_per_second: float
    final: dict = field(default_factory=dict)


def gan_step(
    G: torch.nn.Module, D: torch.nn.Module, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
    x: torch.Tensor, z: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """One GAN step; returns [loss_d, loss_g, mean D(x), mean D(G(z))] on the device (no host sync)."""
    fake = G(z)
    real_logits = D(x)
    fake_logits = D(fake.detach())
    loss_d = d_loss(real_logits, fake_logits)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    # Same fakes, current G, updated D, label "real". D's own module: no DDP reducer waits for D gradients here.
    loss_g = g_loss(getattr(D, "module", D)(fake))
    opt_g.zero_grad(set_to_none=True)
    # Only G's gradients: autograd then skips D's weight gradients, which the textbook loop computes and throws
    # away (bench/train_throughput.py: about 9% of a 64x64 DCGAN step on the CPU).
    loss_g.backward(inputs=[p for group in opt_g.param_groups for p in group["params"]])
    opt_g.step()
    with torch.no_grad():
        d_real, d_fake = torch.sigmoid(real_logits.float()).mean(), torch.sigmoid(fake_logits.float()).mean()
        return torch.stack([loss_d.detach().float(), loss_g.detach().float(), d_real, d_fake])


def amp_gan_step(G, D, opt_g, opt_d, x: torch.Tensor, z: torch.Tensor, amp: bool) -> torch.Tensor:
    """gan_step, under bf16 autocast when `amp` (CUDA).

    No autocast weight cache: gan_step updates D in place mid-step, and a cached bf16 copy of
    D's weights would give G's step the pre-update D (seen on an H200).
    """
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp, cache_enabled=False):
        return gan_step(G, D, opt_g, opt_d, x, z)


class CudaGraphStep:
    """`gan_step` captured once as a CUDA graph, then replayed (`train.cuda_graph`).

    At small batches every kernel is tiny, so an eager step is bound by the host launching a
    few hundred of them; one replay launches them all (bench/train_throughput.py --cuda-graph
    on an H200, 64x64 DCGAN at batch 64: 4.6-5.1x the pytorch/examples loop, eager 1.2-1.3x).
    Needs one process, fixed batch shapes and Adam built with capturable=True. The first
    `warmup` calls run eagerly on a side stream, as the CUDA-graphs docs prescribe before a
    capture; they are real training steps, so the sequence of updates is the eager one.
    """

    def __init__(self, G, D, opt_g, opt_d, amp: bool, warmup: int = 3):
        self.G, self.D, self.opt_g, self.opt_d, self.amp, self.warmup = G, D, opt_g, opt_d, amp, warmup
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None

    def _step(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return amp_gan_step(self.G, self.D, self.opt_g, self.opt_d, x, z, self.amp)

    def __call__(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if self.calls < self.warmup:
            self.calls += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self._step(x, z)
            torch.cuda.current_stream().wait_stream(side)
            return out
        if self.graph is None:
            self.x, self.z = x.clone(), z.clone()  # the graph's static inputs
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = self._step(self.x, self.z)
        else:
            self.x.copy_(x)
            self.z.copy_(z)
        self.graph.replay()
        return self.out.clone()


def run_fingerprint(model_cfg: ModelConfig, train_cfg: TrainConfig, images: np.ndarray) -> str:
    """What a checkpoint must match to be resumed: settings that change the result, the data and the code.

    The code is every package file the train stage runs, the same list dvc.yaml's train deps must
    hold (`gan.codedeps`, checked by tests/test_stage_deps.py).
    """
    relevant = train_cfg.model_copy(update={"checkpoint_every": 0, "log_flush_every": 1})
    data = hashlib.sha256(repr(tuple(images.shape)).encode())  # the shape too: the same bytes can be 1×… or 3×…
    data.update(images.tobytes())
    data_hash = data.hexdigest()[:16]
    code = b"".join(p.read_bytes() for p in stage_code_files("train"))
    return f"{section_hash(model_cfg, relevant)}-{data_hash}-{hashlib.sha256(code).hexdigest()[:16]}"


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


def train(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    train_split: str | Path,
    out: TrainOutputs,
    on_progress: Callable[[dict], None] | None = None,
    progress_bar: bool = True,
) -> TrainResult:
    """Train G and D on the prepared split; resume from `out.checkpoint_dir` if it matches.

    Under `torchrun` (WORLD_SIZE > 1) this is DistributedDataParallel training: NCCL on
    GPUs, gloo on CPUs; `train.batch_size` is the global batch, each rank takes its own
    slice of every batch, gradients are averaged, and only rank 0 writes the log,
    samples, checkpoints and the generator.
    """
    device, world, rank, owns_group = _init_distributed(resolve_device(train_cfg.device))
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    split = load_split(train_split)
    n = len(split.images)
    if n == 0:
        raise ValueError(f"{train_split}: the training split is empty")
    bs = min(train_cfg.batch_size, n)
    if bs % world:
        raise ConfigError(f"train.batch_size = {bs} must be divisible by the number of processes ({world})")
    per_rank = bs // world
    steps_per_epoch = n // bs
    total_steps = steps_per_epoch * train_cfg.epochs
    fingerprint = run_fingerprint(model_cfg, train_cfg, split.images)

    torch.manual_seed(train_cfg.seed)
    try:  # G and D for the data's shape; config validation refuses most mismatches before any stage runs
        G, D = build_generator(model_cfg, split.shape), build_discriminator(model_cfg, split.shape)
    except ValueError as err:
        raise ConfigError(f"{train_split}: {err}; prepare the data at a supported size or set model.arch") from None
    # channels_last: measured 1.13x faster on a 2-core CPU for the default DCGAN (bench/train_throughput.py).
    G = G.to(device, memory_format=torch.channels_last)
    D = D.to(device, memory_format=torch.channels_last)
    betas = (train_cfg.beta1, train_cfg.beta2)
    graphed = train_cfg.cuda_graph and device.type == "cuda" and world == 1 and not train_cfg.compile
    if train_cfg.cuda_graph and not graphed:
        log.info("train.cuda_graph applies to single-process CUDA training without train.compile: running eagerly")
    opt_g = torch.optim.Adam(G.parameters(), lr=train_cfg.lr_g, betas=betas, capturable=graphed)
    opt_d = torch.optim.Adam(D.parameters(), lr=train_cfg.lr_d, betas=betas, capturable=graphed)
    noise = torch.Generator(device=device).manual_seed(train_cfg.seed + 1 + 1000 * rank)
    fixed_z = torch.randn(64, model_cfg.z_dim, generator=torch.Generator().manual_seed(train_cfg.seed + 2)).to(device)

    data = torch.from_numpy(split.images).to(device)  # whole split in memory, uint8
    amp = train_cfg.bf16 and device.type == "cuda"
    ckpt_path = out.checkpoint_dir / "last.pt"
    log_path = out.log_dir / "log.tsv"
    sample_dir = out.log_dir / "samples"
    step = epoch = batch = 0
    resumed_from = 0
    if ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        if ckpt.get("fingerprint") == fingerprint:
            G.load_state_dict(ckpt["G"])
            D.load_state_dict(ckpt["D"])
            opt_g.load_state_dict(ckpt["opt_g"])
            opt_d.load_state_dict(ckpt["opt_d"])
            for opt in (opt_g, opt_d):  # the saved groups carry their own flag; the step counts must be on the GPU
                for group in opt.param_groups:
                    group["capturable"] = graphed
                if graphed:
                    for state in opt.state.values():
                        state["step"] = state["step"].to(device, torch.float32)
            states = ckpt["noise_rng"]
            noise.set_state(states[rank] if isinstance(states, list) else states)
            step, epoch, batch = ckpt["step"], ckpt["epoch"], ckpt["batch"]
            resumed_from = step
            log.info("resuming from %s at step %d (epoch %d, batch %d)", ckpt_path, step, epoch, batch)
        else:
            log.info("ignoring %s: it was made with other settings or data", ckpt_path)
    if rank == 0:  # the only rank that touches the log and samples: another rank's late rewrite would orphan them
        if step == 0:
            for stale in (log_path, *sample_dir.glob("epoch_*.png")):
                stale.unlink(missing_ok=True)
        else:
            _truncate_log(log_path, step)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        sample_dir.mkdir(parents=True, exist_ok=True)
        new_log = not log_path.exists() or log_path.stat().st_size == 0
        log_file = open(log_path, "a")
        if new_log:
            log_file.write("\t".join(LOG_COLUMNS) + "\n")
    else:
        log_file = open(os.devnull, "w")
    G_step, D_step = G, D
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        G_step, D_step = DDP(G, device_ids=ids), DDP(D, device_ids=ids)
    if train_cfg.compile:  # G and D keep their own (uncompiled) modules for sampling and checkpoints
        G_step, D_step = torch.compile(G_step), torch.compile(D_step)
    if graphed:
        step_fn = CudaGraphStep(G, D, opt_g, opt_d, amp)
    else:
        step_fn = functools.partial(amp_gan_step, G_step, D_step, opt_g, opt_d, amp=amp)

    def checkpoint(epoch_: int, batch_: int) -> None:
        _check_finite(G, "generator", step)
        _check_finite(D, "discriminator", step)
        noise_state = noise.get_state()
        if world > 1:  # every rank's noise state, so each rank resumes its own stream
            states: list = [None] * world
            torch.distributed.all_gather_object(states, noise_state.cpu())
            noise_state = states
        if rank != 0:
            torch.distributed.barrier()
            return
        atomic.save_torch(
            ckpt_path,
            {
                "fingerprint": fingerprint,
                "step": step,
                "epoch": epoch_,
                "batch": batch_,
                "G": G.state_dict(),
                "D": D.state_dict(),
                "opt_g": opt_g.state_dict(),
                "opt_d": opt_d.state_dict(),
                "noise_rng": noise_state,
                "model_config": json.dumps(model_cfg.model_dump()),
            },
        )
        if world > 1:
            torch.distributed.barrier()

    pending: list[torch.Tensor] = []  # per-step stats kept on the device until a flush: no per-step host sync
    last: dict = {}

    def flush(epoch_: int) -> None:
        nonlocal last
        if not pending:
            return
        rows = torch.stack(pending).cpu().tolist()
        first_step = step - len(rows) + 1
        pending.clear()
        for k, (ld, lg, dr, df) in enumerate(rows):
            if not all(math.isfinite(v) for v in (ld, lg)):
                log_file.flush()
                raise DivergenceError(
                    f"training diverged at step {first_step + k}: loss_d={ld}, loss_g={lg}; "
                    f"the last good checkpoint {ckpt_path} is kept (lower the learning rates?)"
                )
            log_file.write(f"{first_step + k}\t{epoch_}\t{ld:.6f}\t{lg:.6f}\t{dr:.6f}\t{df:.6f}\n")
        log_file.flush()
        last = dict(zip(LOG_COLUMNS, [step, epoch_, *rows[-1]], strict=True))
        if bar is not None:
            bar.set_postfix(
                loss_d=f"{last['loss_d']:.3f}",
                loss_g=f"{last['loss_g']:.3f}",
                d_real=f"{last['d_real']:.2f}",
                d_fake=f"{last['d_fake']:.2f}",
            )
        if on_progress is not None:
            on_progress({**last, "total_steps": total_steps})

    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", disable=not progress_bar or rank != 0,
               mininterval=0.5)  # fmt: skip
    t0 = time.perf_counter()
    try:
        G.train()
        D.train()
        while epoch < train_cfg.epochs and not (epoch > 0 and _out_of_time(train_cfg.max_seconds, t0, world, device)):
            perm = epoch_permutation(n, train_cfg.seed, epoch).to(device)
            for b in range(batch, steps_per_epoch):
                start = b * bs + rank * per_rank  # this rank's slice of the global batch
                x = from_uint8(data[perm[start : start + per_rank]])
                z = torch.randn(per_rank, model_cfg.z_dim, generator=noise, device=device)
                pending.append(step_fn(x, z))
                step += 1
                bar.update(1)
                if len(pending) >= train_cfg.log_flush_every:
                    flush(epoch)
                if train_cfg.checkpoint_every and step % train_cfg.checkpoint_every == 0 and b + 1 < steps_per_epoch:
                    flush(epoch)
                    checkpoint(epoch, b + 1)
                if _out_of_time(train_cfg.max_seconds, t0, world, device):
                    break
            flush(epoch)
            if _out_of_time(train_cfg.max_seconds, t0, world, device) and b + 1 < steps_per_epoch:
                log.info("train.max_seconds = %s reached at step %d: stopping", train_cfg.max_seconds, step)
                checkpoint(epoch, b + 1)
                break
            epoch += 1
            batch = 0
            if rank == 0:
                G.eval()
                with torch.no_grad():
                    grid = G(fixed_z).cpu()
                G.train()
                with atomic.atomic_path(sample_dir / f"epoch_{epoch:03d}.png") as tmp:
                    save_image(grid, tmp, nrow=8, normalize=True, value_range=(-1, 1), format="png")
            checkpoint(epoch, 0)
            log.info("epoch %d/%d done at step %d", epoch, train_cfg.epochs, step)
        in_sync = _ranks_in_sync(G, D) if world > 1 else None
    finally:
        bar.close()
        log_file.close()
        if owns_group:
            torch.distributed.destroy_process_group()
    seconds = time.perf_counter() - t0
    trained = step - resumed_from
    result = TrainResult(
        steps=step,
        epochs=math.floor(100 * step / steps_per_epoch) / 100,  # trained, never rounded up to a full epoch
        epochs_planned=train_cfg.epochs,
        stopped_by_time_budget=epoch < train_cfg.epochs,  # only train.max_seconds ends the loop early
        resumed_from_step=resumed_from,
        seconds=round(seconds, 3),
        images_per_second=round(trained * bs / seconds, 1) if seconds > 0 else 0.0,
        final=last,
    )
    if rank == 0:
        meta = {"steps": step, "fingerprint": fingerprint, "device": str(device), "processes": world}
        result.final["processes"] = world
        result.final["ranks_in_sync"] = in_sync
        save_generator(out.generator, G, model_cfg, meta)
        atomic.write_text(out.log_dir / "summary.json", json.dumps(result.__dict__, indent=2) + "\n")
    return result


def _out_of_time(max_seconds: float, t0: float, world: int, device: torch.device) -> bool:
    """The time budget is spent (rank 0's clock decides, so every rank stops at the same step)."""
    if not max_seconds:
        return False
    if world == 1:  # a host-side check: no device tensor, no host sync inside the step loop
        return time.perf_counter() - t0 >= max_seconds
    spent = torch.tensor([float(time.perf_counter() - t0 >= max_seconds)], device=device)
    torch.distributed.broadcast(spent, src=0)
    return bool(spent.item())


def _ranks_in_sync(G: torch.nn.Module, D: torch.nn.Module) -> bool:
    """All ranks must end with identical weights (DDP averages gradients); checked, not assumed.

    Parameters only: BatchNorm running statistics are per rank between DDP's broadcasts
    from rank 0 (whose buffers are the ones saved).
    """
    h = hashlib.sha256()
    for module in (G, D):
        for v in module.parameters():
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    digests: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(digests, h.hexdigest())
    if len(set(digests)) != 1:
        raise RuntimeError(f"DDP ranks ended with different weights: {digests}")
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
