"""FastGAN (`model.arch: fastgan`): a G and D made for a few hundred to a few thousand images (Liu et al. 2021,
"Towards Faster and Stabilized GAN Training for High-fidelity Few-shot Image Synthesis"), scaled to 32-128 px.

What it keeps from the authors' code (FastGAN-pytorch, models.py and train.py):
- G: z -> 4×4 by a transposed conv, then up-blocks (nearest upsampling, 3×3 conv to twice the width, BatchNorm,
  GLU), every other one doubled ("UpBlockComp"); skip-layer excitation (SLE): a low-resolution feature map, pooled
  to 4×4 and squeezed through 4×4 conv, Swish, 1×1 conv and a sigmoid, scales every channel of a map 16× larger
  (4 -> 64, 8 -> 128 as in the paper); the image by a 3×3 conv and tanh.
- D: a 3×3 stem at full resolution, down-blocks that average a strided 4×4 conv path with an average-pooled 1×1
  path, SLE from each map to the one 8× smaller, down to 8×8.
- D is also an auto-encoder on real images (the self-supervised loss): one decoder rebuilds the whole image from
  the 8×8 features, another one quadrant of it from that quadrant of the 16×16 features.
- Spectral normalisation on every conv of G and D, with their BatchNorms.

What differs, and why:
- The reconstruction is compared by mean squared error, not LPIPS: LPIPS needs pretrained VGG weights this project
  cannot assume (lucidrains' lightweight-gan, a FastGAN reimplementation, also uses MSE). Targets are the real
  images D saw (after any augmentation), average-pooled to the decoder's size (half the image side).
- D gives one logit per image: the mean of its 5×5 patch logits (the authors' loss sees the patches one by one);
  the step's losses, R1 and ADA all take one logit per image. The authors' second 128 px branch of D is left out
  (our images are no larger than it).
- No noise injection in G: its draws would come from the global RNG, outside what a checkpoint replays.
- At 32 px, where no map is 16× (G) or 8× (D) another, the one SLE joins the smallest map to the largest.
- Widths follow `model.channels` (c): G is c/2 wide at the image's size and doubles toward 4×4 up to 8c; D mirrors
  it. The quadrant rebuilt is drawn per image by the step (its checkpointed RNG), not once per batch.

D(x) -> logits (N,); D(x, quadrants=q) -> (logits, reconstruction loss), q: one quadrant index 0..3 per image.
The training step calls the second on real images (`StepParts.reconstruct`, gan.training.step) and adds the loss to D's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

G_SLE_RATIO = 16  # G: SLE from a map to the one this many times larger (paper: 4 -> 64, 8 -> 128)
D_SLE_RATIO = 8  # D: SLE from a map to the one this many times smaller (authors' se_2_16, se_4_32, se_8_64)


def _width(c: int, resolution: int, r: int) -> int:
    """Channels at an r×r map of a model for resolution×resolution images: c/2 at full size, doubling as the map
    halves, at most 8c."""
    return max(4, min(8 * c, c * resolution // (2 * r)))


def _sizes(lo: int, hi: int) -> list[int]:
    out, r = [], lo
    while r <= hi:
        out.append(r)
        r *= 2
    return out


def _sle_pairs(sizes: list[int], ratio: int) -> list[tuple[int, int]]:
    """(small, large) map sizes joined by SLE: every pair `ratio` apart, else the smallest and the largest."""
    pairs = [(r, r * ratio) for r in sizes if r * ratio in sizes]
    return pairs or [(min(sizes), max(sizes))]


class GLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.glu(x, dim=1)


class Swish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class SLE(nn.Module):
    """Skip-layer excitation: `large` scaled channel-wise by a gate computed from `small`."""

    def __init__(self, small_channels: int, large_channels: int):
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(4),
            nn.Conv2d(small_channels, large_channels, 4, 1, 0, bias=False),
            Swish(),
            nn.Conv2d(large_channels, large_channels, 1, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, small: torch.Tensor, large: torch.Tensor) -> torch.Tensor:
        return large * self.gate(small)


def _up(cin: int, cout: int, double: bool) -> nn.Sequential:
    """Nearest 2× upsampling, 3×3 conv, BatchNorm, GLU; `double`: a second conv-BN-GLU (the authors' UpBlockComp)."""
    layers: list[nn.Module] = [
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(cin, cout * 2, 3, 1, 1, bias=False),
        nn.BatchNorm2d(cout * 2),
        GLU(),
    ]
    if double:
        layers += [nn.Conv2d(cout, cout * 2, 3, 1, 1, bias=False), nn.BatchNorm2d(cout * 2), GLU()]
    return nn.Sequential(*layers)


class FastGANGenerator(nn.Module):
    def __init__(self, z_dim: int, channels: int, image_shape: tuple[int, int, int], num_classes: int = 0):
        super().__init__()
        if num_classes:
            raise ValueError("model.arch = 'fastgan' is unconditional: set model.conditional = false")
        self.z_dim, self.image_shape, self.num_classes = z_dim, image_shape, 0
        out, res, _ = image_shape
        width = {r: _width(channels, res, r) for r in _sizes(4, res)}
        self.init = nn.Sequential(nn.ConvTranspose2d(z_dim, width[4] * 2, 4, 1, 0, bias=False),
                                  nn.BatchNorm2d(width[4] * 2), GLU())  # fmt: skip
        self.up = nn.ModuleDict(
            {str(r): _up(width[r // 2], width[r], double=i % 2 == 0) for i, r in enumerate(_sizes(8, res))}
        )
        pairs = _sle_pairs(_sizes(4, res), G_SLE_RATIO)
        self.sle = nn.ModuleDict({f"{s}-{b}": SLE(width[s], width[b]) for s, b in pairs})
        self.to_image = nn.Sequential(nn.Conv2d(width[res], out, 3, 1, 1, bias=False), nn.Tanh())

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        feats = {4: self.init(z.view(z.shape[0], -1, 1, 1))}
        h = feats[4]
        for key, block in self.up.items():
            r = int(key)
            h = block(h)
            for pair, sle in self.sle.items():
                small, large = map(int, pair.split("-"))
                if large == r:
                    h = sle(feats[small], h)
            feats[r] = h
        return self.to_image(h)


class _Down(nn.Module):
    """Halve the map: (strided 4×4 conv, BN, LeakyReLU, 3×3 conv, BN, LeakyReLU) averaged with (2× average
    pooling, 1×1 conv, BN, LeakyReLU): the authors' DownBlockComp."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, True),
        )  # fmt: skip
        self.direct = nn.Sequential(
            nn.AvgPool2d(2), nn.Conv2d(cin, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.main(x) + self.direct(x)) / 2


def _decoder(cin: int, channels: int, out_channels: int, doublings: int) -> nn.Sequential:
    """8×8 features -> an image 8·2^doublings px: up-blocks halving the width from `channels`, 3×3 conv, tanh."""
    layers: list[nn.Module] = []
    width = cin
    for i in range(doublings):
        nxt = max(16, channels // 2**i)
        layers.append(_up(width, nxt, double=False))
        width = nxt
    return nn.Sequential(*layers, nn.Conv2d(width, out_channels, 3, 1, 1, bias=False), nn.Tanh())


def _quadrant(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per image i, quadrant q[i] of x (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right)."""
    n, c, h, w = x.shape
    quads = x.view(n, c, 2, h // 2, 2, w // 2).permute(0, 2, 4, 1, 3, 5).reshape(n, 4, c, h // 2, w // 2)
    return quads[torch.arange(n, device=x.device), q]


class FastGANDiscriminator(nn.Module):
    def __init__(self, channels: int, image_shape: tuple[int, int, int], num_classes: int = 0):
        super().__init__()
        if num_classes:
            raise ValueError("model.arch = 'fastgan' is unconditional: set model.conditional = false")
        self.image_shape, self.num_classes = image_shape, 0
        inp, res, _ = image_shape
        sizes = _sizes(8, res)
        width = {r: _width(channels, res, r) for r in sizes}
        self.stem = nn.Sequential(nn.Conv2d(inp, width[res], 3, 1, 1, bias=False), nn.LeakyReLU(0.2, True))
        self.down = nn.ModuleDict({str(r): _Down(width[r * 2], width[r]) for r in reversed(sizes[:-1])})
        self.sle = nn.ModuleDict(
            {f"{b}-{s}": SLE(width[b], width[s]) for s, b in _sle_pairs(sizes, D_SLE_RATIO)}
        )  # large map -> the small map it gates
        self.head = nn.Sequential(
            nn.Conv2d(width[8], width[8] // 2, 1, 1, 0, bias=False), nn.BatchNorm2d(width[8] // 2),
            nn.LeakyReLU(0.2, True), nn.Conv2d(width[8] // 2, 1, 4, 1, 0, bias=False),
        )  # fmt: skip
        doublings = (res // 2 // 8).bit_length() - 1  # decoders rebuild at half the image side
        self.decode_whole = _decoder(width[8], channels, inp, doublings)
        self.decode_part = _decoder(width[16], channels, inp, doublings)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, quadrants: torch.Tensor | None = None):
        res = x.shape[-1]
        feats = {res: self.stem(x)}
        h = feats[res]
        for key, block in self.down.items():
            r = int(key)
            h = block(h)
            for pair, sle in self.sle.items():
                large, small = map(int, pair.split("-"))
                if small == r:
                    h = sle(feats[large], h)
            feats[r] = h
        logits = self.head(h).mean(dim=(1, 2, 3))
        if quadrants is None:
            return logits
        # --- the self-supervised loss: rebuild the whole image and one quadrant from D's own features ---
        whole = self.decode_whole(feats[8])
        part = self.decode_part(_quadrant(feats[16], quadrants))
        target = x.detach()
        loss = F.mse_loss(whole, F.adaptive_avg_pool2d(target, whole.shape[-1])) + F.mse_loss(
            part, F.adaptive_avg_pool2d(_quadrant(target, quadrants), part.shape[-1])
        )
        return logits, loss
