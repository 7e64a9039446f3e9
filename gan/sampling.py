"""Drawing images from a generator, in bounded-memory batches, reproducibly."""

from __future__ import annotations

from collections.abc import Iterator

import torch


@torch.no_grad()
def sample_batches(G: torch.nn.Module, n: int, seed: int, batch_size: int = 500) -> Iterator[torch.Tensor]:
    """Yield float batches (N×C×H×W, G's image shape, in [-1, 1], on G's device) totalling `n` images."""
    device = next(G.parameters()).device
    gen = torch.Generator().manual_seed(seed)  # CPU noise: the same images on every device
    G.eval()
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        z = torch.randn(m, G.z_dim, generator=gen)
        yield G(z.to(device)).clamp_(-1, 1)
