"""`python -m gan sample`: new images from a saved generator file, as PNGs, one grid PNG or an NPZ.

The noise is `gan.training.sampling`'s (CPU, seeded), so `sample` with seed s makes the images `sample_batches(G, n, s)`
makes, on any device. A conditional G makes every image of one class (`--class`) or cycles the classes.
An interpolation strip walks the latent space between two seeded latents along the great circle (slerp).
Every file is written atomically (`gan.core.atomic`); a folder is replaced whole, and only when it holds nothing but
earlier samples.
"""

from __future__ import annotations

import pickle
import re
import secrets
import shutil
from pathlib import Path

import numpy as np
import torch

from gan.core import atomic
from gan.core.config import ConfigError
from gan.core.errors import PipelineError
from gan.core.pngs import PNG_CHANNELS, grid, write_png
from gan.core.tensors import resolve_device, to_uint8
from gan.training.models import load_generator
from gan.training.sampling import requested_labels, sample_uint8

SAMPLE_NAME = re.compile(r"\d{6}\.png")  # the files of a folder of samples: 000000.png, 000001.png, ...
PARALLEL_EPS = 1e-6  # slerp falls back to lerp where sin(angle between the latents) is below this


class SampleError(PipelineError, ValueError):
    """A request `gan sample` cannot honour; the message names the flag, what was wrong and what is allowed."""


# --- checks ---


def check_label(G: torch.nn.Module, label: int | None) -> None:
    """Refuse a class G cannot make: any class for an unconditional G, one outside 0..K-1 for a conditional one."""
    if label is None:
        return
    k = int(getattr(G, "num_classes", 0))
    if not k:
        raise SampleError("--class given but this generator is unconditional (trained without labels); leave it out")
    if not 0 <= label < k:
        raise SampleError(f"--class {label}: this generator has {k} classes (0-{k - 1})")


def check_count(n: int, flag: str = "--n", least: int = 1, hint: str = "") -> None:
    """Refuse fewer than `least` images."""
    if n < least:
        raise SampleError(f"{flag} {n}: must be at least {least}{hint}")


def out_format(out: str | Path) -> str:
    """'npz', 'png' (one grid) or 'dir' (a folder of PNGs), from `out`'s suffix."""
    suffix = Path(out).suffix.lower()
    return {".npz": "npz", ".png": "png"}.get(suffix, "dir")


def check_out(out: str | Path, channels: int | None = None) -> None:
    """Refuse an `out` that would overwrite something not ours, or a PNG output for images PNG cannot hold.

    A file output may replace a file of that name (not a folder); a folder output must not exist, be empty or hold
    only earlier samples (000000.png, ...)."""
    out = Path(out)
    fmt = out_format(out)
    if channels is not None and fmt != "npz" and channels not in PNG_CHANNELS:
        raise SampleError(f"--out {out}: PNGs hold 1 or 3 channels, this generator makes {channels}; use a .npz")
    if fmt != "dir":
        if out.is_dir():
            raise SampleError(f"--out {out}: is a folder; name a .{fmt} file or a folder of PNGs (no suffix)")
        return
    if out.exists() and not out.is_dir():
        raise SampleError(f"--out {out}: exists and is not a folder; name a new folder, a .png or a .npz")
    if out.is_dir():
        foreign = sorted(
            p.name for p in out.iterdir() if not (p.is_file() and not p.is_symlink() and SAMPLE_NAME.fullmatch(p.name))
        )
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise SampleError(
                f"--out {out}: folder holds other files than samples ({shown}); "
                "name a new or empty folder, or one holding only earlier samples (000000.png, ...)"
            )


# --- drawing ---


def draw(G: torch.nn.Module, n: int, seed: int, label: int | None = None, batch_size: int = 500) -> torch.Tensor:
    """n images as uint8 N×C×H×W on the CPU: exactly `sample_batches(G, n, seed, batch_size)`'s, with every image of
    class `label` when given (a conditional G only); else a conditional G cycles its classes 0, 1, ..., K-1."""
    check_count(n)
    check_label(G, label)
    labels = None if label is None else torch.full((n,), label, dtype=torch.long)
    return sample_uint8(G, n, seed, batch_size, labels)


def draw_labels(G: torch.nn.Module, n: int, label: int | None = None) -> torch.Tensor | None:
    """The classes of `draw`'s n images (None for an unconditional G)."""
    if not getattr(G, "num_classes", 0):
        return None
    return requested_labels(n, G.num_classes) if label is None else torch.full((n,), label, dtype=torch.long)


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of vectors z0 and z1 at each of `t` (in [0, 1]): len(t)×dim, in z0's dtype.

    Along the great circle (the norm goes from |z0| to |z1| without the dip of a straight line, where Gaussian
    latents never lie); a straight line (lerp) where the two are (anti)parallel and the angle is ill-defined."""
    a, b, t = z0.double(), z1.double(), t.double()[:, None]
    cos = torch.dot(a / a.norm(), b / b.norm()).clamp(-1, 1)
    omega = torch.arccos(cos)
    if torch.sin(omega) < PARALLEL_EPS:
        z = (1 - t) * a + t * b
    else:
        z = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
    return z.to(z0.dtype)


def interpolation_latents(z_dim: int, steps: int, seed: int) -> torch.Tensor:
    """steps×z_dim latents from z0 to z1 (slerp, evenly spaced), the two drawn from a CPU generator seeded `seed`;
    the first and last rows are z0 and z1 exactly."""
    check_count(steps, "--interpolate", 2, " (0: no strip)")
    z = torch.randn(2, z_dim, generator=torch.Generator().manual_seed(seed))
    zs = slerp(z[0], z[1], torch.linspace(0, 1, steps))
    zs[0], zs[-1] = z[0], z[1]
    return zs


@torch.no_grad()
def interpolation_strip(G: torch.nn.Module, steps: int, seed: int, label: int | None = None) -> torch.Tensor:
    """uint8 steps×C×H×W on the CPU: G along `interpolation_latents`; a conditional G makes the whole strip of one
    class (`label`, else class 0). The ends are G(z0) and G(z1) (= `draw(G, 2, seed, label)` when G is
    unconditional or `label` given)."""
    check_label(G, label)
    zs = interpolation_latents(G.z_dim, steps, seed)
    device = next(G.parameters()).device
    G.eval()
    if getattr(G, "num_classes", 0):
        y = torch.full((steps,), 0 if label is None else label, dtype=torch.long, device=device)
        x = G(zs.to(device), y)
    else:
        x = G(zs.to(device))
    return to_uint8(x.clamp_(-1, 1)).cpu()


# --- writing ---


def _write_folder(images: torch.Tensor, out: Path) -> list[Path]:
    """000000.png, ... in a new folder beside `out`, then renamed onto it (an old `out` is replaced whole)."""
    tmp = out.parent / f".{out.name}.{secrets.token_hex(4)}.tmp"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.mkdir()
    try:
        for i, image in enumerate(images):
            write_png(image, tmp / f"{i:06d}.png")
        atomic.replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out / f"{i:06d}.png" for i in range(len(images))]


def write_images(
    images: torch.Tensor, out: str | Path, labels: torch.Tensor | None = None, nrow: int | None = None
) -> list[Path]:
    """Write uint8 N×C×H×W `images` in the format `out` names; return the files written.

    - `*.npz`: key `images` (uint8 N×H×W×C, the layout of export's samples.npz and of external FID tools) and,
      when given, `labels` (int64 N);
    - `*.png`: one grid (see `grid`; `nrow` images a row);
    - anything else: a folder of PNGs 000000.png, 000001.png, ... (grey or RGB as the images), refused by
      `check_out` when it exists and holds anything but earlier samples."""
    out = Path(out)
    check_out(out, images.shape[1])
    images = images.cpu()
    fmt = out_format(out)
    if fmt == "npz":
        arrays = {"images": images.permute(0, 2, 3, 1).numpy()}  # NHWC
        if labels is not None:
            arrays["labels"] = labels.cpu().to(torch.int64).numpy()
        with atomic.atomic_path(out) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        return [out]
    if fmt == "png":
        write_png(grid(images, nrow), out)
        return [out]
    return _write_folder(images, out)


# --- the command ---


def _load(generator_path: str | Path, device: str) -> torch.nn.Module:
    """G from `generator_path` on `device`, or a PipelineError naming the file or the device."""
    path = Path(generator_path)
    if not path.is_file():
        raise PipelineError(f"{path}: no such generator file (train writes one, e.g. models/generator.pt)")
    try:
        dev = resolve_device(device)
    except (ConfigError, RuntimeError) as err:
        raise SampleError(f"--device {device}: {err}") from None
    try:
        G, _ = load_generator(path, dev)
    except (OSError, RuntimeError, KeyError, ValueError, pickle.UnpicklingError) as err:
        raise PipelineError(f"{path}: cannot read as a generator file ({err})") from None
    return G


def sample(
    generator_path: str | Path,
    out: str | Path,
    n: int = 64,
    seed: int = 0,
    label: int | None = None,
    interpolate: int = 0,
    device: str = "cpu",
) -> dict:
    """Load the generator, draw n images (or, with `interpolate` = K > 0, an interpolation strip of K images: one
    row when `out` is a .png) and write them to `out` (see `write_images`); return what was written."""
    if interpolate:
        check_count(interpolate, "--interpolate", 2, " (0: no strip)")
    else:
        check_count(n)
    check_out(out)
    G = _load(generator_path, device)
    check_label(G, label)
    if interpolate:
        images = interpolation_strip(G, interpolate, seed, label)
        labels = draw_labels(G, interpolate, 0 if label is None else label)
        files = write_images(images, out, labels, nrow=interpolate)
    else:
        images = draw(G, n, seed, label)
        files = write_images(images, out, draw_labels(G, n, label))
    return {
        "files": [str(p) for p in files],
        "n": len(images),
        "seed": seed,
        "label": label,
        "interpolate": interpolate,
        "shape": list(images.shape[1:]),
        "generator": str(generator_path),
    }
