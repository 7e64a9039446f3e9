import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from gan.config import ModelConfig
from gan.models import MLPGenerator, build_discriminator, build_generator, load_generator, save_generator

REPO = Path(__file__).resolve().parents[1]


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


SHAPES = [("mlp", (1, 28, 28)), ("mlp", (3, 32, 32))] + [
    ("dcgan", (c, r, r)) for r in (28, 32, 64, 128) for c in (1, 3)
]


@pytest.mark.parametrize("arch,shape", SHAPES, ids=[f"{a}-{'x'.join(map(str, s))}" for a, s in SHAPES])
def test_shapes_follow_the_image_shape(arch, shape):
    cfg = ModelConfig(arch=arch, channels=8, hidden=32)
    G, D = build_generator(cfg, shape), build_discriminator(cfg, shape)
    x = G(torch.randn(3, cfg.z_dim))
    assert x.shape == (3, *shape)
    assert x.min() >= -1 and x.max() <= 1
    assert D(x).shape == (3,)
    assert D(torch.zeros(2, *shape)).shape == (2,)


@pytest.mark.parametrize(
    "arch,shape",
    [
        ("mlp", (1, 28, 32)),
        ("dcgan", (1, 32, 28)),
        ("dcgan", (1, 48, 48)),
        ("dcgan", (1, 256, 256)),
        ("dcgan", (2, 32, 32)),
        ("mlp", (0, 28, 28)),
        ("mlp", (28, 28)),
    ],
)
def test_unsupported_shapes_are_refused(arch, shape):
    cfg = ModelConfig(arch=arch, channels=8)
    for build in (build_generator, build_discriminator):
        with pytest.raises(ValueError, match="is not supported") as err:
            build(cfg, shape)
        assert str(err.value).startswith(f"image shape {shape!r} is not supported: ")


# --- today's (pre-shape) models, verbatim: the 1×28×28 default must stay bit-identical to them ---


class _RefMLPGenerator(nn.Module):
    def __init__(self, z_dim: int = 100, hidden: int = 128):
        super().__init__()
        self.z_dim = z_dim
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, 784), nn.Tanh())

    def forward(self, z):
        return self.net(z).view(-1, 1, 28, 28)


class _RefMLPDiscriminator(nn.Module):
    def __init__(self, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, x):
        return self.net(x).squeeze(1)


class _RefDCGANGenerator(nn.Module):
    def __init__(self, z_dim: int = 100, channels: int = 64):
        super().__init__()
        self.z_dim = z_dim
        c = channels
        self.net = nn.Sequential(
            nn.ConvTranspose2d(z_dim, c * 2, 7, 1, 0, bias=False),
            nn.BatchNorm2d(c * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(c * 2, c, 4, 2, 1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(True),
            nn.ConvTranspose2d(c, 1, 4, 2, 1),
            nn.Tanh(),
        )

    def forward(self, z):
        return self.net(z.view(z.shape[0], -1, 1, 1))


class _RefDCGANDiscriminator(nn.Module):
    def __init__(self, channels: int = 64):
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(1, c, 4, 2, 1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(c, c * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(c * 2),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(c * 2, 1, 7, 1, 0),
        )

    def forward(self, x):
        return self.net(x).flatten()


def _ref_dcgan_init(module):
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def _ref_build(cfg, which):
    if cfg.arch == "mlp":
        return _RefMLPGenerator(cfg.z_dim, cfg.hidden) if which == "G" else _RefMLPDiscriminator(cfg.hidden)
    m = _RefDCGANGenerator(cfg.z_dim, cfg.channels) if which == "G" else _RefDCGANDiscriminator(cfg.channels)
    m.apply(_ref_dcgan_init)
    return m


def _assert_same_modules(a, b):
    assert [type(m) for m in a.modules()][1:] == [type(m) for m in b.modules()][1:]
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("arch,channels,seed", [("dcgan", 64, 0), ("dcgan", 16, 7), ("mlp", 64, 0), ("mlp", 64, 3)])
@pytest.mark.parametrize("explicit_shape", [False, True])
def test_default_28x28x1_is_bit_identical_to_the_pre_shape_models(arch, channels, seed, explicit_shape):
    cfg = ModelConfig(arch=arch, channels=channels)
    args = ((1, 28, 28),) if explicit_shape else ()
    for which, build in (("G", build_generator), ("D", build_discriminator)):
        torch.manual_seed(seed)
        new = build(cfg, *args)
        after_new = torch.rand(3)  # the generator state after building must match too
        torch.manual_seed(seed)
        ref = _ref_build(cfg, which)
        assert torch.equal(after_new, torch.rand(3))
        _assert_same_modules(new, ref)
    torch.manual_seed(seed)
    G, D = build_generator(cfg, *args), build_discriminator(cfg, *args)
    torch.manual_seed(seed)
    rG, rD = _ref_build(cfg, "G"), _ref_build(cfg, "D")
    z = torch.randn(4, cfg.z_dim)
    assert torch.equal(G(z), rG(z)) and torch.equal(D(G(z)), rD(rG(z)))


# --- 64×64: the classic DCGAN as in pytorch/examples (bench/train_throughput.py's reference copy) ---


def _bench():
    spec = importlib.util.spec_from_file_location("_train_throughput", REPO / "bench" / "train_throughput.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # defines functions only; main() runs under __name__ == "__main__"
    return mod


def _layers(seq):
    out = []
    for m in seq:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            out.append((type(m).__name__, m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding))
        elif isinstance(m, nn.BatchNorm2d):
            out.append(("BatchNorm2d", m.num_features))
        elif isinstance(m, nn.LeakyReLU):
            out.append(("LeakyReLU", m.negative_slope))
        else:
            out.append((type(m).__name__,))
    return out


def test_64x64_is_the_pytorch_examples_dcgan():
    bench = _bench()
    cfg = ModelConfig(arch="dcgan", z_dim=bench.NZ, channels=64)
    G, D = build_generator(cfg, (1, 64, 64)), build_discriminator(cfg, (1, 64, 64))
    ref_d = list(bench.dcgan64_discriminator(64, sigmoid=False))
    assert isinstance(ref_d[-1], nn.Flatten)  # ours flattens in forward; neither ends in a Sigmoid (logits)
    assert _layers(G.net) == _layers(bench.dcgan64_generator(64))
    assert _layers(D.net) == _layers(ref_d[:-1])
    convs = lambda m: [x for x in m.modules() if isinstance(x, (nn.Conv2d, nn.ConvTranspose2d))]  # noqa: E731
    assert [c.out_channels for c in convs(G)] == [512, 256, 128, 64, 1]
    assert [c.out_channels for c in convs(D)] == [64, 128, 256, 512, 1]
    # no conv has a bias, as in pytorch/examples (the parameters are exactly the reference's)
    ref_g = bench.dcgan64_generator(64)
    assert [tuple(p.shape) for p in G.parameters()] == [tuple(p.shape) for p in ref_g.parameters()]
    assert [tuple(p.shape) for p in D.parameters()] == [
        tuple(p.shape) for p in bench.dcgan64_discriminator(64).parameters()
    ]


@pytest.mark.parametrize("res,first,last", [(32, 256, 32), (64, 512, 64), (128, 1024, 128)])
def test_classic_dcgan_widths_at_each_resolution(res, first, last):
    cfg = ModelConfig(arch="dcgan", channels=64)
    G, D = build_generator(cfg, (3, res, res)), build_discriminator(cfg, (3, res, res))
    g = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    d = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert g[0].in_channels == 100 and g[0].out_channels == first and g[-2].out_channels == 64
    assert g[-1].out_channels == 3 and g[0].kernel_size == (4, 4) and g[0].stride == (1, 1)
    assert d[0].in_channels == 3 and d[0].out_channels == 64 and d[-1].in_channels == first
    assert d[-1].out_channels == 1 and d[-1].kernel_size == (4, 4) and d[-1].padding == (0, 0)
    assert len(g) == len(d) == {32: 4, 64: 5, 128: 6}[res]
    assert last == res


# --- save/load ---


@pytest.mark.parametrize("arch", ["dcgan", "mlp"])
def test_save_load_round_trip_keeps_the_image_shape(tmp_path, arch):
    cfg = ModelConfig(arch=arch, channels=8, hidden=32)
    torch.manual_seed(1)
    G = build_generator(cfg, (3, 32, 32))
    G(torch.randn(8, cfg.z_dim))  # move BatchNorm's running stats off their initial values
    G.eval()
    save_generator(tmp_path / "g.pt", G, cfg, {"steps": 1})
    assert torch.load(tmp_path / "g.pt", weights_only=True)["image_shape"] == [3, 32, 32]
    G2, cfg2 = load_generator(tmp_path / "g.pt")
    assert cfg2 == cfg and G2.image_shape == (3, 32, 32) and not G2.training
    z = torch.randn(4, cfg.z_dim)
    with torch.no_grad():
        assert torch.equal(G(z), G2(z))


def test_files_without_an_image_shape_load_as_28x28x1(tmp_path):
    cfg = ModelConfig(arch="dcgan", channels=8)
    G = build_generator(cfg)
    save_generator(tmp_path / "g.pt", G, cfg, {})
    blob = torch.load(tmp_path / "g.pt", weights_only=True)
    del blob["image_shape"]  # as written before the shape was recorded
    torch.save(blob, tmp_path / "old.pt")
    G2, _ = load_generator(tmp_path / "old.pt")
    assert G2.image_shape == (1, 28, 28)
    assert G2(torch.randn(2, cfg.z_dim)).shape == (2, 1, 28, 28)
