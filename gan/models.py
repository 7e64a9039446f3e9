"""Generators and discriminators for images N×C×H×W in [-1, 1] of any supported shape; D returns logits.

The shape comes from the prepared data (`gan.splits`) and is recorded in the generator file.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from gan import atomic
from gan.config import DCGAN_RESOLUTIONS, ModelConfig
from gan.splits import LEGACY_IMAGE_SHAPE

# The shape every model had before shapes were recorded: the shape of generator files that do not record one,
# and the default of the builders for callers that pass none.

DCGAN_CHANNELS = (1, 3)


def check_shape(shape: tuple[int, int, int], arch: str = "mlp") -> tuple[int, int, int]:
    """`shape` as a (C, H, W) tuple of ints if `arch` supports it, else a ValueError naming what is supported."""
    try:
        c, h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"image shape {shape!r} is not supported: expected (channels, height, width)") from None
    if min(c, h, w) < 1 or h != w:
        raise ValueError(f"image shape {shape!r} is not supported: only square images (height == width, sizes >= 1)")
    if arch == "dcgan" and (h not in DCGAN_RESOLUTIONS or c not in DCGAN_CHANNELS):
        raise ValueError(
            f"image shape {shape!r} is not supported: dcgan supports resolutions "
            f"{', '.join(map(str, DCGAN_RESOLUTIONS))} and {' or '.join(map(str, DCGAN_CHANNELS))} channels"
        )
    return c, h, w


class MLPGenerator(nn.Module):
    """The textbook GAN generator: z(100) -> 128 -> C·H·W (784 at 1×28×28)."""

    def __init__(self, z_dim: int = 100, hidden: int = 128, image_shape: tuple[int, int, int] = LEGACY_IMAGE_SHAPE):
        super().__init__()
        self.z_dim = z_dim
        self.image_shape = check_shape(image_shape, "mlp")
        size = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, size), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.image_shape)


class MLPDiscriminator(nn.Module):
    """The textbook GAN discriminator: C·H·W (784 at 1×28×28) -> 128 -> 1 (a logit)."""

    def __init__(self, hidden: int = 128, image_shape: tuple[int, int, int] = LEGACY_IMAGE_SHAPE):
        super().__init__()
        self.image_shape = check_shape(image_shape, "mlp")
        size = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(size, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


def _doublings(resolution: int) -> int:
    """k with 4·2^k == resolution: the classic DCGAN's number of stride-2 layers (3 at 32, 4 at 64, 5 at 128)."""
    return (resolution // 4).bit_length() - 1


class DCGANGenerator(nn.Module):
    """DCGAN. At 28×28: z -> c·2×7×7 -> c×14×14 -> C×28×28. At 32/64/128 the classic DCGAN of
    Radford et al. exactly as in pytorch/examples (no conv has a bias): z -> c·2^(k-1)×4×4, k-1 doublings
    halving the channels, -> C×res×res."""

    def __init__(self, z_dim: int = 100, channels: int = 64, image_shape: tuple[int, int, int] = LEGACY_IMAGE_SHAPE):
        super().__init__()
        self.z_dim = z_dim
        self.image_shape = check_shape(image_shape, "dcgan")
        out, res, _ = self.image_shape
        c = channels
        if res == 28:
            self.net = nn.Sequential(
                nn.ConvTranspose2d(z_dim, c * 2, 7, 1, 0, bias=False),  # 1×1 -> 7×7
                nn.BatchNorm2d(c * 2),
                nn.ReLU(True),
                nn.ConvTranspose2d(c * 2, c, 4, 2, 1, bias=False),  # 7 -> 14
                nn.BatchNorm2d(c),
                nn.ReLU(True),
                nn.ConvTranspose2d(c, out, 4, 2, 1),  # 14 -> 28
                nn.Tanh(),
            )
            return
        k = _doublings(res)
        ch = c * 2 ** (k - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim, ch, 4, 1, 0, bias=False),  # 1×1 -> 4×4
            nn.BatchNorm2d(ch),
            nn.ReLU(True),
        ]
        for _ in range(k - 1):  # 4 -> 8 -> ... -> res/2
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, out, 4, 2, 1, bias=False), nn.Tanh()]  # res/2 -> res
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], -1, 1, 1))


class DCGANDiscriminator(nn.Module):
    """DCGAN, G's mirror. At 28×28: C×28×28 -> c×14×14 -> c·2×7×7 -> logit. At 32/64/128:
    C×res×res -> c×res/2 -> ... doubling the channels ... -> c·2^(k-1)×4×4 -> logit."""

    def __init__(self, channels: int = 64, image_shape: tuple[int, int, int] = LEGACY_IMAGE_SHAPE):
        super().__init__()
        self.image_shape = check_shape(image_shape, "dcgan")
        inp, res, _ = self.image_shape
        c = channels
        if res == 28:
            self.net = nn.Sequential(
                nn.Conv2d(inp, c, 4, 2, 1),  # 28 -> 14 (no BatchNorm on D's input layer, as in DCGAN)
                nn.LeakyReLU(0.2, True),
                nn.Conv2d(c, c * 2, 4, 2, 1, bias=False),  # 14 -> 7
                nn.BatchNorm2d(c * 2),
                nn.LeakyReLU(0.2, True),
                nn.Conv2d(c * 2, 1, 7, 1, 0),  # 7 -> 1
            )
            return
        k = _doublings(res)
        ch = c
        layers: list[nn.Module] = [nn.Conv2d(inp, ch, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]  # no BatchNorm
        for _ in range(k - 1):  # res/2 -> ... -> 4
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 2), nn.LeakyReLU(0.2, True)]
            ch *= 2
        layers.append(nn.Conv2d(ch, 1, 4, 1, 0, bias=False))  # 4 -> 1
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


def dcgan_init(module: nn.Module) -> None:
    """DCGAN paper init: conv weights N(0, 0.02); BatchNorm scale N(1, 0.02), shift 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def build_generator(cfg: ModelConfig, shape: tuple[int, int, int] = LEGACY_IMAGE_SHAPE) -> nn.Module:
    """G for images of `shape` = (channels, height, width); square only (dcgan: 28/32/64/128, 1 or 3 channels)."""
    if cfg.arch == "mlp":
        return MLPGenerator(cfg.z_dim, cfg.hidden, shape)
    g = DCGANGenerator(cfg.z_dim, cfg.channels, shape)
    g.apply(dcgan_init)
    return g


def build_discriminator(cfg: ModelConfig, shape: tuple[int, int, int] = LEGACY_IMAGE_SHAPE) -> nn.Module:
    """D for images of `shape`, as `build_generator`."""
    if cfg.arch == "mlp":
        return MLPDiscriminator(cfg.hidden, shape)
    d = DCGANDiscriminator(cfg.channels, shape)
    d.apply(dcgan_init)
    return d


def save_generator(path: str | Path, G: nn.Module, model_cfg: ModelConfig, meta: dict) -> None:
    """Weights plus the model config and image shape needed to rebuild G (no pickled code)."""
    state = {k: v.detach().cpu() for k, v in G.state_dict().items()}
    blob = {"model_config": model_cfg.model_dump(), "image_shape": list(G.image_shape), "state_dict": state}
    atomic.save_torch(path, {**blob, "meta": meta})


def _saved_shape(blob: dict) -> tuple[int, int, int]:
    return tuple(int(s) for s in blob.get("image_shape", LEGACY_IMAGE_SHAPE))  # type: ignore[return-value]


def generator_shape(path: str | Path) -> tuple[int, int, int]:
    """The image shape the generator saved at `path` makes (LEGACY_IMAGE_SHAPE for files from before shapes)."""
    return _saved_shape(torch.load(path, map_location="cpu", weights_only=True))


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelConfig]:
    """G rebuilt from `save_generator`'s file, in eval mode; loaded with weights_only (a model file is data).
    Files from before the image shape was recorded are LEGACY_IMAGE_SHAPE."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    cfg = ModelConfig.model_validate(blob["model_config"])
    G = build_generator(cfg, _saved_shape(blob))
    G.load_state_dict(blob["state_dict"])
    return G.to(device).eval(), cfg
