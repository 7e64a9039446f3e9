"""Generators and discriminators for images N×C×H×W in [-1, 1] of any supported shape; D returns logits.

Architectures (`model.arch`): mlp (the textbook GAN), dcgan (Radford et al. 2016), resnet (the ResNet G and D
of SNGAN, Miyato et al. 2018) and fastgan (Liu et al. 2021, `gan.training.fastgan`: for small folders). Options:
`model.spectral_norm` normalises every weight of D and drops its BatchNorm (SNGAN); `model.conditional` makes G(z, y)
and D(x, y) class-conditional: conditional BatchNorm in G (de Vries et al. 2017; Dumoulin et al. 2017) and the
projection discriminator (Miyato & Koyama 2018).

Every G has `z_dim`, `image_shape` and `num_classes` (0 = unconditional) and is called `G(z)` or `G(z, y)`; every D
is called `D(x)` or `D(x, y)`. A conditional model needs y (a ValueError otherwise); an unconditional one ignores it.
The shape comes from the prepared data (`gan.core.splits`) and is always passed (no model has a default shape); it is
recorded in the generator file, as is `num_classes`.

Each architecture is one registration (`register(name, build_g, build_d)`, under "builders") of a name whose
torch-free spec -- resolutions, channels, conditional support, a reconstructing D -- is in `gan.core.architectures`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from gan.core import atomic
from gan.core.architectures import ARCHITECTURES, ArchSpec
from gan.core.config import ModelConfig
from gan.core.splits import LEGACY_IMAGE_SHAPE
from gan.training.fastgan import FastGANDiscriminator, FastGANGenerator

# LEGACY_IMAGE_SHAPE: the shape every model had before shapes were recorded, that of generator files that record none.

MLP_LABEL_DIM = 16  # conditional mlp G: size of the learned class embedding concatenated to z


def check_shape(shape: tuple[int, int, int], arch: str = "mlp") -> tuple[int, int, int]:
    """`shape` as a (C, H, W) tuple of ints if `arch` supports it, else a ValueError naming what is supported."""
    try:
        c, h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"image shape {shape!r} is not supported: expected (channels, height, width)") from None
    if min(c, h, w) < 1 or h != w:
        raise ValueError(f"image shape {shape!r} is not supported: only square images (height == width, sizes >= 1)")
    spec = ARCHITECTURES[arch]
    sizes, channels = spec.resolutions, spec.channels
    if (sizes is not None and h not in sizes) or (channels is not None and c not in channels):
        raise ValueError(
            f"image shape {shape!r} is not supported: {arch} supports resolutions "
            f"{', '.join(map(str, sizes or ()))} and {' or '.join(map(str, channels or ()))} channels"
        )
    return c, h, w


def _labels(model: nn.Module, y: torch.Tensor | None, batch: int) -> torch.Tensor | None:
    """y for a conditional `model` (checked to be one label per sample), None for an unconditional one."""
    if not model.num_classes:
        return None
    if y is None:
        raise ValueError(
            f"{type(model).__name__} is class-conditional ({model.num_classes} classes): call it with labels, "
            "model(input, y) with y a LongTensor of shape (batch,)"
        )
    if tuple(y.shape) != (batch,):
        raise ValueError(f"labels of shape {tuple(y.shape)} for a batch of {batch}: expected shape ({batch},)")
    return y


class ConditionalBatchNorm2d(nn.Module):
    """Conditional BatchNorm (de Vries et al. 2017, Dumoulin et al. 2017) as in SNGAN's projection code
    (pfnet-research/sngan_projection, CategoricalConditionalBatchNormalization): BatchNorm without its own
    affine, then a per-class scale gamma[y] (initialised to 1) and shift beta[y] (initialised to 0)."""

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.num_features = num_features
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.gamma = nn.Embedding(num_classes, num_features)
        self.beta = nn.Embedding(num_classes, num_features)
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.gamma(y)[:, :, None, None] * self.bn(x) + self.beta(y)[:, :, None, None]


def _batchnorm(num_features: int, num_classes: int) -> nn.Module:
    """G's BatchNorm: plain when unconditional, else `ConditionalBatchNorm2d`."""
    return ConditionalBatchNorm2d(num_features, num_classes) if num_classes else nn.BatchNorm2d(num_features)


def _run(layers: nn.Sequential, h: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """`layers(h)`, passing the labels to each conditional BatchNorm."""
    for layer in layers:
        h = layer(h, y) if isinstance(layer, ConditionalBatchNorm2d) else layer(h)
    return h


def _projection(num_classes: int, features: int) -> nn.Embedding | None:
    """The class embedding of the projection discriminator (Miyato & Koyama 2018), xavier-uniform initialised as
    in sngan_projection (SNEmbedID, GlorotUniform) and Mimicry (l_y); None when unconditional."""
    if not num_classes:
        return None
    embed = nn.Embedding(num_classes, features)
    nn.init.xavier_uniform_(embed.weight, 1.0)
    return embed


def _project(embed: nn.Embedding, phi: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The projection term <embed(y), phi(x)> of each sample."""
    return (embed(y) * phi).sum(1)


# --- mlp ---


class MLPGenerator(nn.Module):
    """The textbook GAN generator: z(100) -> 128 -> C·H·W (784 at 1×28×28). Conditional: a learned class
    embedding of MLP_LABEL_DIM (16) numbers is concatenated to z (as the one-hot y of Mirza & Osindero 2014)."""

    def __init__(
        self,
        z_dim: int,
        hidden: int,
        image_shape: tuple[int, int, int],
        num_classes: int = 0,
    ):
        super().__init__()
        self.z_dim = z_dim
        self.image_shape = check_shape(image_shape, "mlp")
        self.num_classes = num_classes
        size = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
        extra = MLP_LABEL_DIM if num_classes else 0
        self.net = nn.Sequential(nn.Linear(z_dim + extra, hidden), nn.ReLU(), nn.Linear(hidden, size), nn.Tanh())
        self.embed = nn.Embedding(num_classes, MLP_LABEL_DIM) if num_classes else None

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        y = _labels(self, y, z.shape[0])
        if y is not None:
            z = torch.cat([z.view(z.shape[0], -1), self.embed(y)], 1)
        return self.net(z).view(-1, *self.image_shape)


class MLPDiscriminator(nn.Module):
    """The textbook GAN discriminator: C·H·W (784 at 1×28×28) -> 128 -> 1 (a logit). Conditional: a projection
    discriminator whose phi(x) is the hidden layer."""

    def __init__(self, hidden: int, image_shape: tuple[int, int, int], num_classes: int = 0):
        super().__init__()
        self.image_shape = check_shape(image_shape, "mlp")
        self.num_classes = num_classes
        size = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(size, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))
        self.embed = _projection(num_classes, hidden)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        y = _labels(self, y, x.shape[0])
        if y is None:
            return self.net(x).squeeze(1)
        phi = self.net[:-1](x)
        return self.net[-1](phi).squeeze(1) + _project(self.embed, phi, y)


# --- dcgan ---


def _doublings(resolution: int) -> int:
    """k with 4·2^k == resolution: the classic DCGAN's number of stride-2 layers (3 at 32, 4 at 64, 5 at 128)."""
    return (resolution // 4).bit_length() - 1


class DCGANGenerator(nn.Module):
    """DCGAN. At 28×28: z -> c·2×7×7 -> c×14×14 -> C×28×28. At 32/64/128 the classic DCGAN of
    Radford et al. exactly as in pytorch/examples (no conv has a bias): z -> c·2^(k-1)×4×4, k-1 doublings
    halving the channels, -> C×res×res. Conditional: every BatchNorm is a `ConditionalBatchNorm2d`."""

    def __init__(
        self,
        z_dim: int,
        channels: int,
        image_shape: tuple[int, int, int],
        num_classes: int = 0,
    ):
        super().__init__()
        self.z_dim = z_dim
        self.image_shape = check_shape(image_shape, "dcgan")
        self.num_classes = num_classes
        out, res, _ = self.image_shape
        c, n = channels, num_classes
        if res == 28:
            self.net = nn.Sequential(
                nn.ConvTranspose2d(z_dim, c * 2, 7, 1, 0, bias=False),  # 1×1 -> 7×7
                _batchnorm(c * 2, n),
                nn.ReLU(True),
                nn.ConvTranspose2d(c * 2, c, 4, 2, 1, bias=False),  # 7 -> 14
                _batchnorm(c, n),
                nn.ReLU(True),
                nn.ConvTranspose2d(c, out, 4, 2, 1),  # 14 -> 28
                nn.Tanh(),
            )
            return
        k = _doublings(res)
        ch = c * 2 ** (k - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim, ch, 4, 1, 0, bias=False),  # 1×1 -> 4×4
            _batchnorm(ch, n),
            nn.ReLU(True),
        ]
        for _ in range(k - 1):  # 4 -> 8 -> ... -> res/2
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), _batchnorm(ch // 2, n), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, out, 4, 2, 1, bias=False), nn.Tanh()]  # res/2 -> res
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        y = _labels(self, y, z.shape[0])
        z = z.view(z.shape[0], -1, 1, 1)
        return self.net(z) if y is None else _run(self.net, z, y)


class DCGANDiscriminator(nn.Module):
    """DCGAN, G's mirror. At 28×28: C×28×28 -> c×14×14 -> c·2×7×7 -> logit. At 32/64/128:
    C×res×res -> c×res/2 -> ... doubling the channels ... -> c·2^(k-1)×4×4 -> logit.

    `batchnorm=False` (with spectral norm, as SNGAN's D) drops the BatchNorms; the convs they followed then have a
    bias. Conditional: a projection discriminator (Miyato & Koyama 2018) whose phi(x) is the last feature map
    (7×7 or 4×4) sum-pooled over space; the unconditional term psi stays the final conv."""

    def __init__(
        self,
        channels: int,
        image_shape: tuple[int, int, int],
        num_classes: int = 0,
        batchnorm: bool = True,
    ):
        super().__init__()
        self.image_shape = check_shape(image_shape, "dcgan")
        self.num_classes = num_classes
        inp, res, _ = self.image_shape
        c = channels

        def down(cin: int, cout: int) -> list[nn.Module]:
            if not batchnorm:
                return [nn.Conv2d(cin, cout, 4, 2, 1), nn.LeakyReLU(0.2, True)]
            return [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, True)]

        if res == 28:
            self.net = nn.Sequential(
                nn.Conv2d(inp, c, 4, 2, 1),  # 28 -> 14 (no BatchNorm on D's input layer, as in DCGAN)
                nn.LeakyReLU(0.2, True),
                *down(c, c * 2),  # 14 -> 7
                nn.Conv2d(c * 2, 1, 7, 1, 0),  # 7 -> 1
            )
            self.embed = _projection(num_classes, c * 2)
            return
        k = _doublings(res)
        ch = c
        layers: list[nn.Module] = [nn.Conv2d(inp, ch, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]  # no BatchNorm
        for _ in range(k - 1):  # res/2 -> ... -> 4
            layers += down(ch, ch * 2)
            ch *= 2
        layers.append(nn.Conv2d(ch, 1, 4, 1, 0, bias=False))  # 4 -> 1
        self.net = nn.Sequential(*layers)
        self.embed = _projection(num_classes, ch)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        y = _labels(self, y, x.shape[0])
        if y is None:
            return self.net(x).flatten()
        h = self.net[:-1](x)
        return self.net[-1](h).flatten() + _project(self.embed, h.sum(dim=(2, 3)), y)


def dcgan_init(module: nn.Module) -> None:
    """DCGAN paper init: conv weights N(0, 0.02); BatchNorm scale N(1, 0.02), shift 0 (conditional BatchNorm keeps
    its own init: gamma 1, beta 0)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d) and module.affine:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


# --- resnet (SNGAN) ---


def _xavier(layer: nn.Conv2d | nn.Linear, gain: float) -> None:
    """SNGAN's init (Chainer GlorotUniform; Mimicry's xavier_uniform_): weights xavier-uniform, biases 0."""
    nn.init.xavier_uniform_(layer.weight, gain)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


class GBlock(nn.Module):
    """SNGAN's up-sampling residual block of G: BN, ReLU, nearest ×2, conv3×3, BN, ReLU, conv3×3; shortcut
    nearest ×2 + conv1×1. Convs xavier-uniform with gain √2 (residual) and 1 (shortcut). Conditional: the BNs are
    `ConditionalBatchNorm2d`."""

    def __init__(self, in_channels: int, out_channels: int, num_classes: int = 0):
        super().__init__()
        self.b1 = _batchnorm(in_channels, num_classes)
        self.c1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.b2 = _batchnorm(out_channels, num_classes)
        self.c2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.c_sc = nn.Conv2d(in_channels, out_channels, 1, 1, 0)
        _xavier(self.c1, math.sqrt(2))
        _xavier(self.c2, math.sqrt(2))
        _xavier(self.c_sc, 1.0)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = F.relu(self.b1(x) if y is None else self.b1(x, y))
        h = self.c1(F.interpolate(h, scale_factor=2, mode="nearest"))
        h = F.relu(self.b2(h) if y is None else self.b2(h, y))
        return self.c2(h) + self.c_sc(F.interpolate(x, scale_factor=2, mode="nearest"))


class OptimizedDBlock(nn.Module):
    """SNGAN's first block of D: conv3×3, ReLU, conv3×3, avgpool 2; shortcut avgpool 2 + conv1×1."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.c1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.c2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.c_sc = nn.Conv2d(in_channels, out_channels, 1, 1, 0)
        _xavier(self.c1, math.sqrt(2))
        _xavier(self.c2, math.sqrt(2))
        _xavier(self.c_sc, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.avg_pool2d(self.c2(F.relu(self.c1(x))), 2)
        return h + self.c_sc(F.avg_pool2d(x, 2))


class DBlock(nn.Module):
    """SNGAN's residual block of D: ReLU, conv3×3, ReLU, conv3×3 (, avgpool 2); shortcut conv1×1 (+ avgpool 2)
    where the channels change or it down-samples, else the identity."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool):
        super().__init__()
        self.downsample = downsample
        self.c1 = nn.Conv2d(in_channels, in_channels, 3, 1, 1)
        self.c2 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        _xavier(self.c1, math.sqrt(2))
        _xavier(self.c2, math.sqrt(2))
        self.c_sc = nn.Conv2d(in_channels, out_channels, 1, 1, 0) if downsample or in_channels != out_channels else None
        if self.c_sc is not None:
            _xavier(self.c_sc, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c2(F.relu(self.c1(F.relu(x))))  # not in place: x is also the shortcut's input
        sc = x if self.c_sc is None else self.c_sc(x)
        if self.downsample:
            h, sc = F.avg_pool2d(h, 2), F.avg_pool2d(sc, 2)
        return h + sc


def resnet_widths(resolution: int, channels: int) -> tuple[int, list[int], list[tuple[int, bool]]]:
    """(s0, G widths, D blocks) of the SNGAN ResNets with base width c = `channels` (64 by default).

    G: a Linear to widths[0]×s0×s0, then one up-sampling block per later width. D: the optimised block to
    blocks[0][0] channels (halving the size), then (channels, downsample) per further block.

    - 32 px, SNGAN's CIFAR-10 nets (sngan_projection resnet_32 / snresnet_32, Mimicry sngan_32): G 4c wide
      (256 at c = 64), 4 -> 8 -> 16 -> 32; D 2c wide (128): 32 -> 16 (optimised) -> 8, then 2 blocks at 8×8.
    - 28 px: the same with s0 = 7: G 7 -> 14 -> 28; D 28 -> 14 -> 7, then 2 blocks at 7×7.
    - 64 px, the 64 px nets of sngan_projection (resnet_64 / snresnet_64, ch = c; Mimicry sngan_64): G 16c -> 8c
      -> 4c -> 2c -> c (1024 ... 64), 4 -> ... -> 64; D c -> 2c -> 4c -> 8c -> 16c, 64 -> 32 -> ... -> 2.
    At c = 64, per image (multiply-adds; parameters): G 1.2 G; 4.1 M (28 px), 1.7 G; 4.3 M (32 px), 2.0 G; 12.2 M
    (64 px); D 0.2 G; 1.1 M, 0.3 G; 1.1 M, 0.6 G; 10.1 M. A training step of G and D on one CPU thread takes about
    0.1 s (28/32 px) to 0.2 s (64 px) per image; `model.channels` scales every width, and the cost quadratically.
    """
    c = channels
    if resolution == 64:
        return (
            4,
            [16 * c, 8 * c, 4 * c, 2 * c, c],
            [(c, True), (2 * c, True), (4 * c, True), (8 * c, True), (16 * c, True)],
        )
    s0 = 7 if resolution == 28 else 4
    ups = (resolution // s0).bit_length() - 1
    return s0, [4 * c] * (ups + 1), [(2 * c, True), (2 * c, True), (2 * c, False), (2 * c, False)]


class ResNetGenerator(nn.Module):
    """The ResNet generator of SNGAN (Miyato et al. 2018), following pfnet-research/sngan_projection
    (gen_models/resnet_32.py, resnet_64.py, resblocks.py) and kwotsin/mimicry (sngan_32.py, sngan_64.py,
    resblocks.py): z -> Linear to widths[0]×s0×s0 (s0 = 7 at 28 px, else 4) -> `GBlock`s doubling the size ->
    BN, ReLU, conv3×3 to C channels, tanh. Widths: `resnet_widths`. Linear and last conv xavier-uniform (gain 1).
    Conditional: the blocks' BNs are conditional, the last BN is not (as in both references).

    Where the references differ, this follows sngan_projection (the authors' code): nearest-neighbour up-sampling
    (Mimicry: bilinear), biases initialised to 0 (Mimicry: PyTorch's default), conditional BN gamma 1 and beta 0
    (Mimicry: gamma N(1, 0.02)). BatchNorm keeps PyTorch's momentum and eps (Chainer: decay 0.9, eps 2e-5)."""

    def __init__(
        self,
        z_dim: int,
        channels: int,
        image_shape: tuple[int, int, int],
        num_classes: int = 0,
    ):
        super().__init__()
        self.z_dim = z_dim
        self.image_shape = check_shape(image_shape, "resnet")
        self.num_classes = num_classes
        out, res, _ = self.image_shape
        self.s0, widths, _ = resnet_widths(res, channels)
        self.linear = nn.Linear(z_dim, widths[0] * self.s0 * self.s0)
        self.blocks = nn.ModuleList(GBlock(a, b, num_classes) for a, b in pairwise(widths))
        self.bn = nn.BatchNorm2d(widths[-1])
        self.conv = nn.Conv2d(widths[-1], out, 3, 1, 1)
        _xavier(self.linear, 1.0)
        _xavier(self.conv, 1.0)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        y = _labels(self, y, z.shape[0])
        h = self.linear(z.view(z.shape[0], -1)).view(z.shape[0], -1, self.s0, self.s0)
        for block in self.blocks:
            h = block(h, y)
        return torch.tanh(self.conv(F.relu(self.bn(h))))


class ResNetDiscriminator(nn.Module):
    """The ResNet discriminator of SNGAN (Miyato et al. 2018), following pfnet-research/sngan_projection
    (dis_models/snresnet_32.py, snresnet_64.py, resblocks.py) and kwotsin/mimicry: `OptimizedDBlock`, `DBlock`s
    (widths: `resnet_widths`), ReLU, global sum pooling -> phi(x), Linear (xavier-uniform, gain 1) -> logit.
    No BatchNorm. Conditional: the projection discriminator (Miyato & Koyama 2018), logit + <embed(y), phi(x)>.
    The final Linear has a bias (Mimicry, snresnet_64; snresnet_32 has none); ReLUs are not in place (Mimicry's
    in-place ReLU at the start of DBlock also changes the shortcut's input)."""

    def __init__(self, channels: int, image_shape: tuple[int, int, int], num_classes: int = 0):
        super().__init__()
        self.image_shape = check_shape(image_shape, "resnet")
        self.num_classes = num_classes
        inp, res, _ = self.image_shape
        _, _, spec = resnet_widths(res, channels)
        layers: list[nn.Module] = [OptimizedDBlock(inp, spec[0][0])]
        for (cin, _), (cout, down) in pairwise(spec):
            layers.append(DBlock(cin, cout, down))
        self.blocks = nn.Sequential(*layers)
        self.linear = nn.Linear(spec[-1][0], 1)
        _xavier(self.linear, 1.0)
        self.embed = _projection(num_classes, spec[-1][0])

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        y = _labels(self, y, x.shape[0])
        phi = F.relu(self.blocks(x)).sum(dim=(2, 3))
        out = self.linear(phi).squeeze(1)
        return out if y is None else out + _project(self.embed, phi, y)


# --- builders ---


def _num_classes(cfg: ModelConfig, num_classes: int) -> int:
    """The classes a model of `cfg` is built for: 0 unless cfg.conditional, which needs at least 2."""
    if not cfg.conditional:
        return 0
    if num_classes < 2:
        raise ValueError(
            "model.conditional needs labelled data with at least 2 classes; "
            f"got {num_classes} (set model.conditional = false for unlabelled data)"
        )
    return int(num_classes)


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) on the weight of every Conv2d, Linear and Embedding in `module`
    (torch.nn.utils.parametrizations.spectral_norm: one power iteration per training-mode forward; a transposed
    conv is normalised over its output dimension, as that function does by default)."""
    layers = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding))]
    for layer in layers:
        _spectral_norm(layer)
    return module


def _sn(cfg: ModelConfig, d: nn.Module) -> nn.Module:
    """D spectrally normalised when cfg.spectral_norm."""
    return apply_spectral_norm(d) if cfg.spectral_norm else d


def _dcgan_g(cfg: ModelConfig, shape: tuple[int, int, int], n: int) -> nn.Module:
    g = DCGANGenerator(cfg.z_dim, cfg.channels, shape, n)
    g.apply(dcgan_init)
    return g


def _dcgan_d(cfg: ModelConfig, shape: tuple[int, int, int], n: int) -> nn.Module:
    d = DCGANDiscriminator(cfg.channels, shape, n, batchnorm=not cfg.spectral_norm)
    d.apply(dcgan_init)
    return _sn(cfg, d)


def _fastgan_g(cfg: ModelConfig, shape: tuple[int, int, int], n: int) -> nn.Module:
    g = FastGANGenerator(cfg.z_dim, cfg.channels, check_shape(shape, "fastgan"), n)
    g.apply(dcgan_init)  # the authors' weights_init: N(0, 0.02) convs, N(1, 0.02) BatchNorm scales
    return apply_spectral_norm(g)  # the authors normalise G's convs too


def _fastgan_d(cfg: ModelConfig, shape: tuple[int, int, int], n: int) -> nn.Module:
    d = FastGANDiscriminator(cfg.channels, check_shape(shape, "fastgan"), n)
    d.apply(dcgan_init)
    return apply_spectral_norm(d)  # always, with its BatchNorms (the authors' D)


Builder = Callable[[ModelConfig, tuple[int, int, int], int], nn.Module]


@dataclass(frozen=True)
class Architecture:
    """A `model.arch`: its torch-free spec (gan.core.architectures) and the builders of G and D, each called
    (cfg, shape, num_classes) with num_classes already checked (0 when unconditional)."""

    spec: ArchSpec
    generator: Builder
    discriminator: Builder


ARCH_BUILDERS: dict[str, Architecture] = {}


def register(name: str, generator: Builder, discriminator: Builder) -> None:
    """Make `name` (an `ArchSpec` in gan.core.architectures) buildable."""
    if name not in ARCHITECTURES:
        raise ValueError(f"architecture {name!r} has no spec in gan.core.architectures.ARCHITECTURES")
    ARCH_BUILDERS[name] = Architecture(ARCHITECTURES[name], generator, discriminator)


register(
    "mlp",
    lambda cfg, shape, n: MLPGenerator(cfg.z_dim, cfg.hidden, shape, n),
    lambda cfg, shape, n: _sn(cfg, MLPDiscriminator(cfg.hidden, shape, n)),
)
register("dcgan", _dcgan_g, _dcgan_d)
register(
    "resnet",
    lambda cfg, shape, n: ResNetGenerator(cfg.z_dim, cfg.channels, shape, n),
    lambda cfg, shape, n: _sn(cfg, ResNetDiscriminator(cfg.channels, shape, n)),
)
register("fastgan", _fastgan_g, _fastgan_d)


def build_generator(cfg: ModelConfig, shape: tuple[int, int, int], num_classes: int = 0) -> nn.Module:
    """G for images of `shape` = (channels, height, width); square only, at the resolutions and channels of the
    arch's `ArchSpec`. `num_classes`: the classes of the labelled data, used (and needed, >= 2) when cfg.conditional,
    else ignored."""
    return ARCH_BUILDERS[cfg.arch].generator(cfg, shape, _num_classes(cfg, num_classes))


def build_discriminator(cfg: ModelConfig, shape: tuple[int, int, int], num_classes: int = 0) -> nn.Module:
    """D for images of `shape`, as `build_generator`; with cfg.spectral_norm every weight is spectrally normalised
    and D has no BatchNorm (fastgan: always normalised, with its BatchNorms)."""
    return ARCH_BUILDERS[cfg.arch].discriminator(cfg, shape, _num_classes(cfg, num_classes))


# --- files ---


def save_generator(path: str | Path, G: nn.Module, model_cfg: ModelConfig, meta: dict) -> None:
    """Weights plus the model config, image shape and number of classes needed to rebuild G (no pickled code)."""
    state = {k: v.detach().cpu() for k, v in G.state_dict().items()}
    blob = {
        "model_config": model_cfg.model_dump(),
        "image_shape": list(G.image_shape),
        "num_classes": int(G.num_classes),
        "state_dict": state,
    }
    atomic.save_torch(path, {**blob, "meta": meta})


def _saved_shape(blob: dict) -> tuple[int, int, int]:
    return tuple(int(s) for s in blob.get("image_shape", LEGACY_IMAGE_SHAPE))  # type: ignore[return-value]


def generator_shape(path: str | Path) -> tuple[int, int, int]:
    """The image shape the generator saved at `path` makes (LEGACY_IMAGE_SHAPE for files from before shapes)."""
    return _saved_shape(torch.load(path, map_location="cpu", weights_only=True))


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelConfig]:
    """G rebuilt from `save_generator`'s file, in eval mode; loaded with weights_only (a model file is data).
    Files from before the image shape was recorded are LEGACY_IMAGE_SHAPE; from before classes, unconditional."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    cfg = ModelConfig.model_validate(blob["model_config"])
    G = build_generator(cfg, _saved_shape(blob), int(blob.get("num_classes", 0)))
    G.load_state_dict(blob["state_dict"])
    return G.to(device).eval(), cfg
