"""Training throughput: the project's trainer vs the standard PyTorch DCGAN example loop.

    python bench/train_throughput.py [--steps 20] [--warmup 3] [--models dcgan64,default] [--compile [MODE]]
                                     [--cuda-graph] [--ablation]

In one process, for each model, the same number of steps two ways:

- baseline, written the way pytorch/examples/dcgan does it: a torchvision
  dataset with per-sample PIL transforms (28 -> 64 resize for the 64×64 model),
  a DataLoader with 2 workers, Sigmoid + BCELoss, five `.item()` host syncs and a
  print every step, fp32;
- project: `gan.training.step.GanStep` (the default parts) on the prepared uint8 split held as one tensor on
  the device (batches indexed there, resized there), logits + softplus losses,
  statistics left on the device, channels_last, no D weight gradients in G's
  step (the example computes and discards them); on CUDA also bf16 autocast.

Prints images/s of each, the ratio, peak memory, model FLOPs per image of each
(one training step: G forward/backward, D on real + fake, D on fake for G) and
the achieved FLOP/s, against a large matmul's FLOP/s measured in the same process.
`--ablation` also times the baseline's arithmetic without its loop, then with
channels_last: which change buys what. Needs data/raw/fashion-mnist and data/prepared (run the pipeline).
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gan.core.config import ModelConfig  # noqa: E402
from gan.core.paths import PATHS  # noqa: E402
from gan.core.splits import load_split  # noqa: E402
from gan.core.tensors import from_uint8  # noqa: E402
from gan.training.losses import (  # noqa: E402
    LOSSES,  # noqa: E402
    d_loss,
    g_loss,
)
from gan.training.models import build_discriminator, build_generator, dcgan_init  # noqa: E402
from gan.training.step import CudaGraphStep, GanStep, StepParts  # noqa: E402

NZ = 100


# The 64×64 DCGAN of Radford et al. as in pytorch/examples (ngf = ndf = 64), one channel.
def dcgan64_generator(ngf: int = 64) -> nn.Module:
    return nn.Sequential(
        nn.ConvTranspose2d(NZ, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
        nn.ConvTranspose2d(ngf, 1, 4, 2, 1, bias=False), nn.Tanh(),
    )  # fmt: skip


def dcgan64_discriminator(ndf: int = 64, sigmoid: bool = True) -> nn.Module:
    layers = [
        nn.Conv2d(1, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
    ]  # fmt: skip
    return nn.Sequential(*layers, nn.Sigmoid()) if sigmoid else nn.Sequential(*layers, nn.Flatten(0))


class _Noise(nn.Module):
    """pytorch/examples feeds G noise of shape N×nz×1×1; our 28×28 G takes N×nz too."""

    def __init__(self, g: nn.Module):
        super().__init__()
        self.g = g

    def forward(self, z):
        return self.g(z.view(z.shape[0], -1, 1, 1))


MODELS = ("dcgan64", "default")


def models(name: str, baseline: bool) -> tuple[nn.Module, nn.Module, int]:
    torch.manual_seed(0)
    if name == "dcgan64":
        G, D = _Noise(dcgan64_generator()), dcgan64_discriminator(sigmoid=baseline)
        G.apply(dcgan_init)
        D.apply(dcgan_init)
        return G, D, 64
    cfg = ModelConfig()  # the project's default model
    D = build_discriminator(cfg, (1, 28, 28))
    if baseline:
        D = nn.Sequential(D, nn.Sigmoid())
    return build_generator(cfg, (1, 28, 28)), D, 28


def torchvision_root(tmp: Path) -> Path:
    """torchvision.datasets.FashionMNIST reads <root>/FashionMNIST/raw/<idx files>: link ours there."""
    raw = tmp / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in PATHS.raw_dataset("fashion-mnist").iterdir():
        (raw / f.name).symlink_to(f.resolve())
    return tmp


def baseline_steps(name: str, batch: int, device: torch.device, root: Path) -> Iterator[nn.Module]:
    """The pytorch/examples/dcgan loop, epoch after epoch; yields G after each step."""
    import torchvision.datasets as dset
    import torchvision.transforms as transforms

    G, D, size = models(name, baseline=True)
    G, D = G.to(device), D.to(device)
    tf = [transforms.Resize(size)] if size != 28 else []
    dataset = dset.FashionMNIST(root=str(root), download=False,
                                transform=transforms.Compose([*tf, transforms.ToTensor(),
                                                              transforms.Normalize((0.5,), (0.5,))]))  # fmt: skip
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=2, drop_last=True)
    criterion = nn.BCELoss()
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    sink = io.StringIO()  # the example prints every step; print it somewhere cheap but real
    i = 0
    while True:
        for real, _ in loader:
            real = real.to(device)
            b = real.size(0)
            D.zero_grad()
            label = torch.full((b,), 1.0, device=device)
            output = D(real).view(-1)
            err_d_real = criterion(output, label)
            err_d_real.backward()
            d_x = output.mean().item()
            noise = torch.randn(b, NZ, device=device)
            fake = G(noise)
            label.fill_(0.0)
            output = D(fake.detach()).view(-1)
            err_d_fake = criterion(output, label)
            err_d_fake.backward()
            d_g_z1 = output.mean().item()
            err_d = err_d_real + err_d_fake
            opt_d.step()
            G.zero_grad()
            label.fill_(1.0)
            output = D(fake).view(-1)
            err_g = criterion(output, label)
            err_g.backward()
            d_g_z2 = output.mean().item()
            opt_g.step()
            print(f"[{i}] Loss_D: {err_d.item():.4f} Loss_G: {err_g.item():.4f} D(x): {d_x:.4f} "
                  f"D(G(z)): {d_g_z1:.4f} / {d_g_z2:.4f}", file=sink)  # fmt: skip
            sink.seek(0)
            sink.truncate()
            i += 1
            yield G


def run_baseline(name: str, steps: int, warmup: int, batch: int, device: torch.device, root: Path) -> float:
    t0 = time.perf_counter()
    for i, _ in enumerate(baseline_steps(name, batch, device, root)):
        if i + 1 == warmup:
            _sync(device)
            t0 = time.perf_counter()
        if i + 1 == warmup + steps:
            break
    _sync(device)
    return steps * batch / (time.perf_counter() - t0)


def project_steps(
    name: str, batch: int, device: torch.device, compile_: str | None = None, graph: bool = False,
    capturable: bool = False, seed: int = 0, textbook: bool = False, channels_last: bool = True,
) -> Iterator[tuple[nn.Module, torch.Tensor]]:  # fmt: skip
    """The project's step as gan/training/train.py runs it, on batches drawn on the device; yields (G, stats).

    channels_last everywhere, bf16 autocast on CUDA (no weight cache, as the trainer);
    `graph`: through gan.training.step.CudaGraphStep (`train.cuda_graph`, capturable Adam).
    `textbook` / `channels_last=False`: the ablation arms (the baseline's arithmetic, NCHW).
    """
    G, D, size = models(name, baseline=False)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    G, D = G.to(device, memory_format=fmt), D.to(device, memory_format=fmt)
    capturable = capturable or graph
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999), capturable=capturable)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999), capturable=capturable)
    data = torch.from_numpy(load_split(PATHS.train_split).images).to(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    amp = device.type == "cuda"
    if graph:
        graphed = CudaGraphStep(GanStep(G, D, opt_g, opt_d, StepParts(LOSSES["ns"]), gen, amp))
        step = lambda x, z: graphed(x[None], z[None])  # noqa: E731
    else:
        G_step, D_step = (torch.compile(G, mode=compile_), torch.compile(D, mode=compile_)) if compile_ else (G, D)
        if textbook:
            step = functools.partial(_autocast_step, _textbook_step, G_step, D_step, opt_g, opt_d, amp=amp)
        else:
            eager = GanStep(G_step, D_step, opt_g, opt_d, StepParts(LOSSES["ns"]), gen, amp)
            step = lambda x, z: eager(x[None], z[None])  # noqa: E731

    while True:
        idx = torch.randint(0, len(data), (batch,), device=device, generator=gen)
        x = from_uint8(data[idx])
        if size != 28:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        x = x.contiguous(memory_format=fmt)
        z = torch.randn(batch, NZ, device=device, generator=gen)
        yield G, step(x, z)


def run_project(loop: Iterator, steps: int, warmup: int, batch: int, device: torch.device) -> float:
    """images/s of `steps` steps of a project_steps loop after `warmup`; one host sync at the end."""
    stats = []
    t0 = time.perf_counter()
    for i, (_, out) in enumerate(loop):  # a step has run when the loop yields it
        if i + 1 == warmup:
            _sync(device)
            t0 = time.perf_counter()
        stats.append(out)
        if i + 1 == warmup + steps:
            break
    torch.stack(stats).cpu()  # the one host sync, like the trainer's log flush
    _sync(device)
    return steps * batch / (time.perf_counter() - t0)


def graph_matches_eager(name: str, batch: int, device: torch.device, checks=(5, 50)) -> str:
    """How far graphed training drifts from eager training, against eager-vs-eager run-to-run noise.

    Per weight tensor: |w_a - w_b| / |w_b - w_init| (the difference relative to how far training
    moved it), the largest over G's conv weights, after each number of steps in `checks`.
    """

    def snapshots(loop) -> dict[int, dict]:
        out = {}
        for i, (G, _) in enumerate(loop):
            if i == 0 or i + 1 in checks:
                out[0 if i == 0 else i + 1] = {k: v.detach().float().clone() for k, v in G.state_dict().items()
                                               if k.endswith("weight") and v.dim() == 4}  # fmt: skip
            if i + 1 == max(checks):
                return out

    graphed = snapshots(project_steps(name, batch, device, graph=True))
    eager = [snapshots(project_steps(name, batch, device)) for _ in range(2)]
    capt = snapshots(project_steps(name, batch, device, capturable=True))

    def drift(a: dict, b: dict, init: dict) -> float:
        return max(((a[k] - b[k]).norm() / (b[k] - init[k]).norm().clamp_min(1e-12)).item() for k in a)

    init = {k: v for k, v in eager[0][0].items()}
    return "; ".join(
        f"after {n} steps graph vs eager {drift(graphed[n], eager[0][n], init):.1e}, "
        f"eager vs eager {drift(eager[1][n], eager[0][n], init):.1e}, "
        f"eager capturable-Adam vs eager {drift(capt[n], eager[0][n], init):.1e}"
        for n in checks
    )


def _textbook_step(G, D, opt_g, opt_d, x, z) -> torch.Tensor:
    """The baseline's arithmetic: as the project's step, but G's backward also computes D's weight gradients."""
    fake = G(z)
    loss_d = d_loss(D(x), D(fake.detach()))
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    opt_g.zero_grad()
    loss_g = g_loss(D(fake))
    loss_g.backward()
    opt_g.step()
    return torch.stack([loss_d.detach().float(), loss_g.detach().float()])


def _autocast_step(step, G, D, opt_g, opt_d, x, z, amp: bool) -> torch.Tensor:
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp, cache_enabled=False):
        return step(G, D, opt_g, opt_d, x, z)


def gemm_peak(device: torch.device, reps: int = 10) -> float:
    """FLOP/s of a large square matmul in the step's precision: the practical peak to compare against."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (2048, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def _project_step(G, D, opt_g, opt_d, x, z) -> torch.Tensor:
    return GanStep(G, D, opt_g, opt_d, StepParts(LOSSES["ns"]), torch.Generator(x.device))(x[None], z[None])


def flops_per_image(name: str, batch: int, device: torch.device, step=_project_step) -> float:
    """Model FLOPs of one training step per image (FlopCounterMode: convolutions and matmuls)."""
    G, D, size = models(name, baseline=False)
    G, D = G.to(device), D.to(device)
    opt_d, opt_g = torch.optim.Adam(D.parameters()), torch.optim.Adam(G.parameters())
    x = torch.zeros(batch, 1, size, size, device=device)
    z = torch.randn(batch, NZ, device=device)
    with FlopCounterMode(display=False) as counter:
        step(G, D, opt_g, opt_d, x, z)
    return counter.get_total_flops() / batch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_mb(device: torch.device) -> str:
    if device.type == "cuda":
        mb = torch.cuda.max_memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
        return f"{mb:.0f} MB GPU"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB RSS (process so far)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--models", default="dcgan64,default")
    ap.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        metavar="MODE",
        help="torch.compile G and D in the project's trainer (mode: default, reduce-overhead, ...)",
    )
    ap.add_argument("--cuda-graph", action="store_true", help="on CUDA, also time the step captured as a CUDA graph")
    ap.add_argument("--ablation", action="store_true", help="also time the baseline's arithmetic without its loop, "
                    "then with channels_last: which change buys what")  # fmt: skip
    args = ap.parse_args()
    unknown = sorted(set(args.models.split(",")) - set(MODELS))
    if unknown:
        ap.error(f"--models: unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(f"device: {name}; torch {torch.__version__}; threads {torch.get_num_threads()}; batch {args.batch}; "
          f"{args.steps} timed steps after {args.warmup} warm-up")  # fmt: skip
    peak = gemm_peak(device)
    print(f"matmul peak measured here ({'bf16' if device.type == 'cuda' else 'fp32'}): {peak / 1e9:.0f} GFLOP/s")
    with tempfile.TemporaryDirectory() as tmp:
        root = torchvision_root(Path(tmp))
        timing = (args.steps, args.warmup, args.batch, device)
        for model in args.models.split(","):
            fl = flops_per_image(model, args.batch, device)
            fl_base = flops_per_image(model, args.batch, device, _textbook_step)
            base = run_baseline(model, args.steps, args.warmup, args.batch, device, root)
            base_mem = peak_mb(device)
            ours = run_project(project_steps(model, args.batch, device, args.compile), *timing)
            ours_mem = peak_mb(device)
            print(f"\n{model}: GFLOP per training image: baseline {fl_base / 1e9:.2f}, project {fl / 1e9:.2f} "
                  "(no D weight gradients in G's step)")  # fmt: skip
            print(f"  baseline (pytorch/examples style): {base:8.1f} images/s  {base * fl_base / 1e9:7.1f} GFLOP/s  "
                  f"peak {base_mem}")  # fmt: skip
            print(f"  project trainer                  : {ours:8.1f} images/s  {ours * fl / 1e9:7.1f} GFLOP/s  "
                  f"peak {ours_mem}")  # fmt: skip
            print(f"  ratio project / baseline: {ours / base:.2f}x")
            if args.ablation:
                # Where the gain comes from: the baseline's arithmetic without its loop, then one change at a time.
                tb = run_project(project_steps(model, args.batch, device, textbook=True, channels_last=False), *timing)
                tb_cl = run_project(project_steps(model, args.batch, device, textbook=True), *timing)
                print("  ablation, images/s (ratio to baseline):")
                for label, r in [("baseline arithmetic, batches on the device, no host syncs, NCHW", tb),
                                 ("+ channels_last", tb_cl),
                                 ("+ no D weight gradients in G's step = project trainer", ours)]:  # fmt: skip
                    print(f"    {label:62}: {r:8.1f} ({r / base:.2f}x)")
            print(f"  project at {ours * fl / peak:.0%} of the measured matmul peak; "
                  f"at 100 % it would be {peak / fl:.0f} images/s = {peak / fl / base:.2f}x the baseline")  # fmt: skip
            if device.type == "cuda" and args.cuda_graph:
                diff = graph_matches_eager(model, args.batch, device)
                graphed = run_project(project_steps(model, args.batch, device, graph=True), *timing)
                print(f"  project, train.cuda_graph: {graphed:8.1f} images/s  "
                      f"{graphed * fl / 1e9:7.1f} GFLOP/s  peak {peak_mb(device)}; "
                      f"ratio to baseline {graphed / base:.2f}x\n  weight drift (|a-b| / |b-init|, worst conv of G): "
                      f"{diff}")  # fmt: skip


if __name__ == "__main__":
    main()
