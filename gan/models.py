"""Generators and discriminators. Images are N×1×28×28 in [-1, 1]; D returns logits."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from gan import atomic
from gan.config import ModelConfig

IMAGE_SHAPE = (1, 28, 28)
IMAGE_SIZE = 28 * 28


class MLPGenerator(nn.Module):
    """The textbook GAN generator: z(100) -> 128 -> 784."""

    def __init__(self, z_dim: int = 100, hidden: int = 128):
        super().__init__()
        self.z_dim = z_dim
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, IMAGE_SIZE), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *IMAGE_SHAPE)


class MLPDiscriminator(nn.Module):
    """The textbook GAN discriminator: 784 -> 128 -> 1 (a logit)."""

    def __init__(self, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(IMAGE_SIZE, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


class DCGANGenerator(nn.Module):
    """DCGAN sized for 28×28: z -> c·2×7×7 -> c×14×14 -> 1×28×28."""

    def __init__(self, z_dim: int = 100, channels: int = 64):
        super().__init__()
        self.z_dim = z_dim
        c = channels
        self.net = nn.Sequential(
            nn.ConvTranspose2d(z_dim, c * 2, 7, 1, 0, bias=False),  # 1×1 -> 7×7
            nn.BatchNorm2d(c * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(c * 2, c, 4, 2, 1, bias=False),  # 7 -> 14
            nn.BatchNorm2d(c),
            nn.ReLU(True),
            nn.ConvTranspose2d(c, 1, 4, 2, 1),  # 14 -> 28
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], -1, 1, 1))


class DCGANDiscriminator(nn.Module):
    """DCGAN sized for 28×28: 1×28×28 -> c×14×14 -> c·2×7×7 -> logit."""

    def __init__(self, channels: int = 64):
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(1, c, 4, 2, 1),  # 28 -> 14 (no BatchNorm on D's input layer, as in DCGAN)
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(c, c * 2, 4, 2, 1, bias=False),  # 14 -> 7
            nn.BatchNorm2d(c * 2),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(c * 2, 1, 7, 1, 0),  # 7 -> 1
        )

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


def build_generator(cfg: ModelConfig) -> nn.Module:
    if cfg.arch == "mlp":
        return MLPGenerator(cfg.z_dim, cfg.hidden)
    g = DCGANGenerator(cfg.z_dim, cfg.channels)
    g.apply(dcgan_init)
    return g


def build_discriminator(cfg: ModelConfig) -> nn.Module:
    if cfg.arch == "mlp":
        return MLPDiscriminator(cfg.hidden)
    d = DCGANDiscriminator(cfg.channels)
    d.apply(dcgan_init)
    return d


def save_generator(path: str | Path, G: nn.Module, model_cfg: ModelConfig, meta: dict) -> None:
    """Weights plus the model config needed to rebuild G (no pickled code)."""
    state = {k: v.detach().cpu() for k, v in G.state_dict().items()}
    atomic.save_torch(path, {"model_config": model_cfg.model_dump(), "state_dict": state, "meta": meta})


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelConfig]:
    """G rebuilt from `save_generator`'s file, in eval mode; loaded with weights_only (a model file is data)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    cfg = ModelConfig.model_validate(blob["model_config"])
    G = build_generator(cfg)
    G.load_state_dict(blob["state_dict"])
    return G.to(device).eval(), cfg
