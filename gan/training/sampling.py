"""Drawing images from a generator, in bounded-memory batches, reproducibly."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from gan.core.tensors import to_uint8


def requested_labels(n: int, num_classes: int) -> torch.Tensor:
    """The classes a conditional G is asked for: 0, 1, ..., K-1, 0, 1, ... (every class equally often)."""
    return torch.arange(n) % num_classes


@torch.no_grad()
def sample_batches(
    G: torch.nn.Module, n: int, seed: int, batch_size: int = 500, labels: torch.Tensor | None = None
) -> Iterator[torch.Tensor]:
    """Yield float batches (N×C×H×W, G's image shape, in [-1, 1], on G's device) totalling `n` images.

    A class-conditional G (`G.num_classes` > 0) makes image i of class `labels[i]` (default `requested_labels`);
    the noise is the same either way, so an unconditional G gives the images it always gave."""
    device = next(G.parameters()).device
    num_classes = getattr(G, "num_classes", 0)
    if num_classes and labels is None:
        labels = requested_labels(n, num_classes)
    gen = torch.Generator().manual_seed(seed)  # CPU noise: the same images on every device
    G.eval()
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        z = torch.randn(m, G.z_dim, generator=gen)
        if num_classes:
            yield G(z.to(device), labels[start : start + m].to(device)).clamp_(-1, 1)
        else:
            yield G(z.to(device)).clamp_(-1, 1)


def sample_uint8(
    G: torch.nn.Module, n: int, seed: int, batch_size: int = 500, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """`sample_batches`' images as one uint8 N×C×H×W tensor on the CPU (`gan.core.tensors.to_uint8`)."""
    return torch.cat([to_uint8(b).cpu() for b in sample_batches(G, n, seed, batch_size, labels)])
