"""DiffAugment: differentiable augmentation applied to every image D sees, real and fake.

Zhao, Liu, Lin, Zhu and Han, "Differentiable Augmentation for Data-Efficient GAN Training", NeurIPS 2020
(https://arxiv.org/abs/2006.10738). Ported from the authors' reference code, mit-han-lab/data-efficient-gans,
file DiffAugment_pytorch.py at commit 0b6339510be1e3859d360cbf464d0a425514a6b4 (last changed in 3a5ba9f;
BSD-2-Clause, Copyright (c) 2020 the authors above).

Same arithmetic and the same random draws, in the same order, shapes and dtypes, as the reference, so that a
``torch.Generator`` seeded with s reproduces the reference run after ``torch.manual_seed(s)`` (tests/test_augment.py
checks this). Differences, none of which changes a value:

* every draw takes an explicit ``generator=`` (the reference uses the global RNG), so training is deterministic and
  resumable from the generator's checkpointed state; the global RNG is never touched;
* the gather/scatter index grids broadcast (N,1,1)/(1,H,1)/(1,1,W) aranges instead of materialising ``meshgrid``s;
* the output keeps the input's memory format (channels_last in, channels_last out; the reference always returns
  NCHW-contiguous) and dtype (also under autocast).

Images are N×C×H×W in [-1, 1]; like the reference, nothing is clamped, and translation's padding and cutout's hole
are value 0 (mid-grey in [-1, 1]). On a 1-channel image ``rand_saturation`` is a no-op (the channel mean is the
image itself) but it still draws its number, so the random stream is the same for grey and RGB.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

__all__ = ["AUGMENT_FUNCTIONS", "diff_augment"]

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _uniform(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One U[0, 1) number per sample, shaped N×1×1×1, in x's dtype and on x's device (the reference's torch.rand)."""
    return torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device, generator=generator)


def _randint(low: int, high: int, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One integer in [low, high) per sample, shaped N×1×1 (the reference's torch.randint)."""
    return torch.randint(low, high, (x.size(0), 1, 1), device=x.device, generator=generator)


def rand_brightness(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Add U[-0.5, 0.5) to each sample."""
    return x + (_uniform(x, generator) - 0.5)


def rand_saturation(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Scale each pixel's distance from its channel mean by U[0, 2); a no-op (but one draw) when C == 1."""
    x_mean = x.mean(dim=1, keepdim=True)
    return (x - x_mean) * (_uniform(x, generator) * 2) + x_mean


def rand_contrast(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Scale each sample's distance from its own mean (over C, H, W) by U[0.5, 1.5)."""
    x_mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - x_mean) * (_uniform(x, generator) + 0.5) + x_mean


def rand_translation(x: torch.Tensor, generator: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Shift each sample by whole pixels, up to round(ratio·side) per axis; the uncovered border becomes 0."""
    n, _, h, w = x.shape
    shift_x, shift_y = int(h * ratio + 0.5), int(w * ratio + 0.5)
    translation_x = _randint(-shift_x, shift_x + 1, x, generator)
    translation_y = _randint(-shift_y, shift_y + 1, x, generator)
    grid_batch = torch.arange(n, device=x.device).view(n, 1, 1)
    grid_x = torch.clamp(torch.arange(h, device=x.device).view(1, h, 1) + translation_x + 1, 0, h + 1)
    grid_y = torch.clamp(torch.arange(w, device=x.device).view(1, 1, w) + translation_y + 1, 0, w + 1)
    x_pad = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])  # one ring of zeros; clamped indices past the edge read it
    # Gather N×H×W×C from the channels-last copy (differentiable in x), then view it back as NCHW.
    return x_pad.permute(0, 2, 3, 1).contiguous()[grid_batch, grid_x, grid_y].permute(0, 3, 1, 2)


def rand_cutout(x: torch.Tensor, generator: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of round(ratio·side) pixels per sample, centred anywhere (clipped at the border)."""
    n, _, h, w = x.shape
    cutout_size = int(h * ratio + 0.5), int(w * ratio + 0.5)
    offset_x = _randint(0, h + (1 - cutout_size[0] % 2), x, generator)
    offset_y = _randint(0, w + (1 - cutout_size[1] % 2), x, generator)
    grid_batch = torch.arange(n, device=x.device).view(n, 1, 1)
    grid_x = torch.clamp(
        torch.arange(cutout_size[0], device=x.device).view(1, -1, 1) + offset_x - cutout_size[0] // 2, 0, h - 1
    )
    grid_y = torch.clamp(
        torch.arange(cutout_size[1], device=x.device).view(1, 1, -1) + offset_y - cutout_size[1] // 2, 0, w - 1
    )
    mask = torch.ones(n, h, w, dtype=x.dtype, device=x.device)
    mask[grid_batch, grid_x, grid_y] = 0
    return x * mask.unsqueeze(1)


# The policies by name; the names are gan.core.config.AUGMENTS, the config's one list (a test checks they agree).
AUGMENT_FUNCTIONS: dict[str, list[Augmentation]] = {
    "color": [rand_brightness, rand_saturation, rand_contrast],
    "translation": [rand_translation],
    "cutout": [rand_cutout],
}


def _parse(policies: Iterable[str]) -> tuple[str, ...]:
    """A tuple of policy names; a comma-separated string (the config's form) is split."""
    names = policies.split(",") if isinstance(policies, str) else policies
    return tuple(p.strip() for p in names if p.strip())


def diff_augment(x: torch.Tensor, policies: Iterable[str], generator: torch.Generator) -> torch.Tensor:
    """Apply the named policies to the batch x (N×C×H×W), in the order given, drawing only from ``generator``.

    ``generator`` must live on x's device. Empty policies return x itself. The result is differentiable in x and
    has x's shape, dtype and memory format. Give real and fake batches the same policies (the paper's rule).
    """
    policies = _parse(policies)
    if not policies:
        return x
    unknown = [p for p in policies if p not in AUGMENT_FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown DiffAugment policy {unknown}: known {', '.join(AUGMENT_FUNCTIONS)}")
    if x.dim() != 4:
        raise ValueError(f"DiffAugment expects an N×C×H×W batch, got shape {tuple(x.shape)}")
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    out = x
    for policy in policies:
        for fn in AUGMENT_FUNCTIONS[policy]:
            out = fn(out, generator)
    out = out.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return out.to(x.dtype)
