import pytest
import torch

from gan.config import ModelConfig
from gan.models import MLPGenerator, build_discriminator, build_generator


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
def test_shapes_and_range(arch):
    cfg = ModelConfig(arch=arch, channels=16)
    G, D = build_generator(cfg), build_discriminator(cfg)
    x = G(torch.randn(5, cfg.z_dim))
    assert x.shape == (5, 1, 28, 28)
    assert x.min() >= -1 and x.max() <= 1
    assert D(x).shape == (5,)


def test_mlp_is_the_textbook_size():
    G = MLPGenerator()
    sizes = [(m.in_features, m.out_features) for m in G.modules() if isinstance(m, torch.nn.Linear)]
    assert sizes == [(100, 128), (128, 784)]
    D = build_discriminator(ModelConfig(arch="mlp"))
    assert [(m.in_features, m.out_features) for m in D.modules() if isinstance(m, torch.nn.Linear)] == [
        (784, 128),
        (128, 1),
    ]


def test_dcgan_init_is_normal_0_002_with_batchnorm():
    torch.manual_seed(0)
    G = build_generator(ModelConfig(arch="dcgan", channels=64))
    convs = [m.weight for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    w = torch.cat([c.flatten() for c in convs])
    assert abs(w.mean().item()) < 1e-3 and abs(w.std().item() - 0.02) < 1e-3
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in G.modules())
