import hashlib
import importlib.util
import math
import platform
from pathlib import Path
from typing import get_args

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from gan.core.architectures import ARCHITECTURES
from gan.core.config import ModelConfig
from gan.training.models import (
    ARCH_BUILDERS,
    ConditionalBatchNorm2d,
    DBlock,
    DCGANDiscriminator,
    GBlock,
    MLPDiscriminator,
    MLPGenerator,
    OptimizedDBlock,
    ResNetDiscriminator,
    build_discriminator,
    build_generator,
    load_generator,
    register,
    save_generator,
)

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the machine is shared


@pytest.mark.parametrize("arch", ["mlp", "dcgan", "resnet"])
def test_shapes_and_range(arch):
    cfg = ModelConfig(arch=arch, channels=16)
    G, D = build_generator(cfg, (1, 28, 28)), build_discriminator(cfg, (1, 28, 28))
    x = G(torch.randn(5, cfg.z_dim))
    assert x.shape == (5, 1, 28, 28)
    assert x.min() >= -1 and x.max() <= 1
    assert D(x).shape == (5,)


def test_mlp_is_the_textbook_size():
    G = MLPGenerator(100, 128, (1, 28, 28))
    sizes = [(m.in_features, m.out_features) for m in G.modules() if isinstance(m, torch.nn.Linear)]
    assert sizes == [(100, 128), (128, 784)]
    D = build_discriminator(ModelConfig(arch="mlp"), (1, 28, 28))
    assert [(m.in_features, m.out_features) for m in D.modules() if isinstance(m, torch.nn.Linear)] == [
        (784, 128),
        (128, 1),
    ]


def test_dcgan_init_is_normal_0_002_with_batchnorm():
    torch.manual_seed(0)
    G = build_generator(ModelConfig(arch="dcgan", channels=64), (1, 28, 28))
    convs = [m.weight for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    w = torch.cat([c.flatten() for c in convs])
    assert abs(w.mean().item()) < 1e-3 and abs(w.std().item() - 0.02) < 1e-3
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in G.modules())


SHAPES = (
    [("mlp", (1, 28, 28)), ("mlp", (3, 32, 32))]
    + [("dcgan", (c, r, r)) for r in (28, 32, 64, 128) for c in (1, 3)]
    + [("resnet", (c, r, r)) for r in (28, 32, 64) for c in (1, 3)]
    + [("fastgan", (c, r, r)) for r in (32, 64, 128) for c in (1, 3)]
)


@pytest.mark.parametrize("arch,shape", SHAPES, ids=[f"{a}-{'x'.join(map(str, s))}" for a, s in SHAPES])
def test_shapes_follow_the_image_shape(arch, shape):
    cfg = ModelConfig(arch=arch, channels=4 if arch == "resnet" else 8, hidden=32)
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
        ("resnet", (1, 48, 48)),
        ("resnet", (3, 128, 128)),
        ("resnet", (3, 16, 16)),
        ("resnet", (2, 32, 32)),
        ("resnet", (3, 32, 28)),
        ("fastgan", (3, 28, 28)),
        ("fastgan", (3, 256, 256)),
        ("fastgan", (2, 32, 32)),
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


# --- the registry: one spec (gan.core.architectures) and one registration per architecture ---


def test_every_configurable_architecture_is_registered_and_built_at_every_size_it_supports():
    configurable = set(get_args(ModelConfig.model_fields["arch"].annotation))
    assert configurable == set(ARCHITECTURES) == set(ARCH_BUILDERS)
    assert all(ARCH_BUILDERS[name].spec is ARCHITECTURES[name] for name in ARCHITECTURES)
    for name, spec in ARCHITECTURES.items():  # test_shapes_follow_the_image_shape covers every supported shape
        tested = {shape for arch, shape in SHAPES if arch == name}
        assert tested, f"{name}: add its shapes to SHAPES"
        if spec.resolutions is not None:
            assert tested == {(c, r, r) for r in spec.resolutions for c in spec.channels}, name


def test_registering_a_name_without_a_spec_is_refused():
    with pytest.raises(ValueError, match="'stylegan' has no spec in gan.core.architectures"):
        register("stylegan", build_generator, build_discriminator)
    assert "stylegan" not in ARCH_BUILDERS


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_the_specs_properties_hold_for_the_built_models(arch):
    spec = ARCHITECTURES[arch]
    side = spec.resolutions[0] if spec.resolutions else 28
    shape = (3, side, side)
    cfg = ModelConfig(arch=arch, channels=4 if arch == "resnet" else 8, hidden=16, z_dim=8, conditional=True)
    if spec.conditional:
        assert build_generator(cfg, shape, 3).num_classes == build_discriminator(cfg, shape, 3).num_classes == 3
    else:
        for build in (build_generator, build_discriminator):
            with pytest.raises(ValueError, match="is unconditional"):
                build(cfg, shape, 3)
    D = build_discriminator(cfg.model_copy(update={"conditional": False}), shape)
    x = torch.zeros(2, *shape)
    if spec.reconstructing_d:
        logits, loss = D(x, quadrants=torch.tensor([0, 3]))
        assert logits.shape == (2,) and loss.dim() == 0
    else:
        with pytest.raises(TypeError):
            D(x, quadrants=torch.tensor([0, 3]))


def test_a_model_needs_its_image_shape():
    """No silent 1×28×28 default: a forgotten shape is an error, not a textbook-sized model."""
    cfg = ModelConfig(arch="mlp", hidden=8, z_dim=4)
    for build in (build_generator, build_discriminator):
        with pytest.raises(TypeError, match="shape"):
            build(cfg)
    for model, args in ((MLPGenerator, (4, 8)), (MLPDiscriminator, (8,)), (DCGANDiscriminator, (8,))):
        with pytest.raises(TypeError, match="image_shape"):
            model(*args)


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
def test_28x28x1_is_bit_identical_to_the_pre_shape_models(arch, channels, seed):
    cfg = ModelConfig(arch=arch, channels=channels)
    args = ((1, 28, 28),)
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
    G = build_generator(cfg, (1, 28, 28))
    save_generator(tmp_path / "g.pt", G, cfg, {})
    blob = torch.load(tmp_path / "g.pt", weights_only=True)
    del blob["image_shape"]  # as written before the shape was recorded
    torch.save(blob, tmp_path / "old.pt")
    G2, _ = load_generator(tmp_path / "old.pt")
    assert G2.image_shape == (1, 28, 28)
    assert G2(torch.randn(2, cfg.z_dim)).shape == (2, 1, 28, 28)


# --- the default models, pinned: built from the code as it was before arch/spectral_norm/conditional ---


def _state_sha(module: nn.Module) -> str:
    """SHA-256 of every state_dict entry: key, dtype, shape and bytes, in order."""
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(str(v.dtype).encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


# (arch, channels, hidden, shape, seed): SHA-256 of G's and D's state right after building, SHA-256 of the global RNG
# state after building both (computed with gan/training/models.py as it was before these options), then for z =
# randn(4, 16)
# drawn after them: sum and |sum| of G(z) (train mode) and D(G(z)).
PINNED = {
    ("mlp", 64, 32, (1, 28, 28), 0): (
        "6ea027fb45f6638733573d68d8f4efeaa0e8b2e2e5af5172b8ec998845d5eeab",
        "7ac4ab695e3fc82c8c49e06b6dafb1070b6666649cb5f59477c6dc8c2e2f927a",
        "d4c07fe56f088eddad33550552134fde62f6795248b0dd419833731e8861048a",
        (29.46641614998225, 645.1626425607828),
        [-0.167473, -0.147776, -0.178892, -0.144938],
    ),
    ("mlp", 64, 16, (3, 32, 32), 1): (
        "aeb7816c894f18d836d50b772e9145d62994a455bd01dc6b4fcf5230d178e744",
        "1f658fabcfd5b3833c84ba49f57cba6545caf448bac8122e9cb00d1845140fae",
        "56e280b57cca0584386fc5f369958e10e0f781274aa056c2b088b942050696e6",
        (33.80989891444915, 3526.9130816740508),
        [0.079033, 0.149968, 0.159522, 0.091905],
    ),
    ("dcgan", 16, 128, (1, 28, 28), 0): (
        "242097714cbdd86869cf443d200fad810c6550eaaa86acb4d7261481c04e53cb",
        "5b9c449a34b6568f1adf09da04b9c8cece57526d30761560059c939aaaec6468",
        "d8598529b85deb08fc0d39c3be2fdf8ec9df05fd1c0101a18592489c2f3d9f27",
        (-20.197261235989572, 268.6287549724002),
        [0.193266, -0.493046, -0.057324, -0.344465],
    ),
    ("dcgan", 8, 128, (3, 32, 32), 2): (
        "d989ddd23ca856f37bd32a4b984d3f81d9a28888d9cf9eff028bcae53d1531a4",
        "3bd826b578b61658b290ed1313d0c4500474a753d5f6fb4189a0bc84204a0ad6",
        "9d1b1080b36bd20a45ab4a290d7805affd884795f7125aed76eb96076c379bd7",
        (28.09556504428292, 723.3759914691127),
        [0.086143, 0.197811, -0.044589, 0.017098],
    ),
    ("dcgan", 8, 128, (1, 64, 64), 3): (
        "951e7b9a8dd779790c8ae10330d347e56a6ee2908e72bdd545f34d91f872df33",
        "757114a722ab623c224e59b91a06d5dadcdb0103ff7d6b3974e5367bae97fcd7",
        "62cba7aa99ad9230082acbe8bf6a7544e619e154f224bfc0eae90117c74d01ee",
        (93.21627985340456, 769.7935186932809),
        [-0.010246, -0.553766, 0.208655, -0.753422],
    ),
}


@pytest.mark.parametrize("key", list(PINNED), ids=[f"{k[0]}-{'x'.join(map(str, k[3]))}" for k in PINNED])
@pytest.mark.parametrize("num_classes", [0, 10])
def test_default_models_are_pinned_to_the_pre_conditional_code(key, num_classes):
    """arch mlp/dcgan, no spectral norm, unconditional: the same RNG draws, weights, state_dict keys (old generator
    files load) and outputs as before; num_classes is ignored when model.conditional is off."""
    arch, channels, hidden, shape, seed = key
    g_sha, d_sha, rng_sha, (x_sum, x_abs), d_out = PINNED[key]
    cfg = ModelConfig(arch=arch, channels=channels, hidden=hidden, z_dim=16)
    torch.manual_seed(seed)
    G, D = build_generator(cfg, shape, num_classes), build_discriminator(cfg, shape, num_classes)
    assert G.num_classes == 0 and D.num_classes == 0
    assert hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest() == rng_sha
    # torch's normal_ (dcgan's init) has a vectorised x86 path; elsewhere its last bits may differ
    if arch == "mlp" or platform.machine().lower() in ("x86_64", "amd64"):
        assert (_state_sha(G), _state_sha(D)) == (g_sha, d_sha)
    z = torch.randn(4, cfg.z_dim)
    with torch.no_grad():
        x = G(z)
        d = D(x)
    # outputs to a tolerance: float kernels differ in their last bits between CPUs (the exact match with the
    # verbatim old classes is test_default_28x28x1_is_bit_identical_to_the_pre_shape_models)
    assert x.double().sum().item() == pytest.approx(x_sum, abs=1e-3)
    assert x.double().abs().sum().item() == pytest.approx(x_abs, abs=1e-3)
    assert d.tolist() == pytest.approx(d_out, abs=1e-5)


# --- builders, labels ---

ARCH_SHAPES = [("mlp", (1, 28, 28)), ("dcgan", (1, 28, 28)), ("dcgan", (3, 32, 32)), ("resnet", (3, 32, 32))]
ARCH_IDS = [f"{a}-{'x'.join(map(str, s))}" for a, s in ARCH_SHAPES]


def _cfg(arch: str, **kw) -> ModelConfig:
    return ModelConfig(arch=arch, channels=4 if arch == "resnet" else 8, hidden=32, z_dim=16, **kw)


@pytest.mark.parametrize("arch", ["mlp", "dcgan", "resnet"])
def test_conditional_models_need_at_least_two_classes(arch):
    cfg = _cfg(arch, conditional=True)
    for n in (0, 1):
        for build in (build_generator, build_discriminator):
            with pytest.raises(ValueError, match="model.conditional needs labelled data with at least 2 classes; "):
                build(cfg, (1, 28, 28), n)
    G, D = build_generator(cfg, (1, 28, 28), 2), build_discriminator(cfg, (1, 28, 28), 2)
    assert G.num_classes == D.num_classes == 2
    assert G.z_dim == 16 and G.image_shape == (1, 28, 28)


@pytest.mark.parametrize("arch,shape", ARCH_SHAPES, ids=ARCH_IDS)
def test_labels_are_required_by_conditional_models_and_ignored_by_the_others(arch, shape):
    z, y = torch.randn(3, 16), torch.tensor([0, 1, 2])
    x = torch.rand(3, *shape) * 2 - 1
    torch.manual_seed(0)
    G, D = build_generator(_cfg(arch), shape, 5), build_discriminator(_cfg(arch), shape, 5)
    assert G.num_classes == D.num_classes == 0 and G.z_dim == 16 and G.image_shape == shape
    G.eval()
    D.eval()
    with torch.no_grad():
        assert torch.equal(G(z, y), G(z)) and torch.equal(D(x, y), D(x)) and torch.equal(D(x, None), D(x))
    cG, cD = (
        build_generator(_cfg(arch, conditional=True), shape, 5),
        build_discriminator(_cfg(arch, conditional=True), shape, 5),
    )
    for model, inp in ((cG, z), (cD, x)):
        with pytest.raises(ValueError, match=r"is class-conditional \(5 classes\): call it with labels"):
            model(inp)
        with pytest.raises(ValueError, match=r"labels of shape \(2,\) for a batch of 3"):
            model(inp, y[:2])


@pytest.mark.parametrize(
    "arch,shape", ARCH_SHAPES + [("dcgan", (1, 64, 64)), ("resnet", (1, 28, 28)), ("resnet", (3, 64, 64))]
)
def test_conditional_shapes_and_every_class(arch, shape):
    cfg = _cfg(arch, conditional=True)
    G, D = build_generator(cfg, shape, 4), build_discriminator(cfg, shape, 4)
    z = torch.randn(2, cfg.z_dim)
    for k in range(4):
        y = torch.full((2,), k)
        x = G(z, y)
        assert x.shape == (2, *shape) and x.min() >= -1 and x.max() <= 1
        assert D(x, y).shape == (2,)


# --- spectral normalisation ---

SN_LAYERS = (nn.Conv2d, nn.Linear, nn.Embedding)


@pytest.mark.parametrize("conditional", [False, True], ids=["uncond", "cond"])
@pytest.mark.parametrize("arch,shape", ARCH_SHAPES + [("resnet", (1, 28, 28))], ids=ARCH_IDS + ["resnet-1x28x28"])
def test_spectral_norm_normalises_every_weight_of_d_which_has_no_batchnorm(arch, shape, conditional):
    torch.manual_seed(0)
    cfg = _cfg(arch, spectral_norm=True, conditional=conditional)
    D = build_discriminator(cfg, shape, 3)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())
    layers = [m for m in D.modules() if isinstance(m, SN_LAYERS)]
    assert layers and all(parametrize.is_parametrized(m, "weight") for m in layers)
    assert any(isinstance(m, nn.Embedding) for m in layers) == conditional  # the projection's embedding too
    D.train()
    for _ in range(20):  # power iteration: one step per training-mode forward (15 more when it was added)
        D(torch.randn(4, *shape), torch.randint(0, 3, (4,)))
    with torch.no_grad():
        for m in layers:
            w = m.weight
            sigma = torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2).item()
            assert sigma == pytest.approx(1.0, abs=0.02), m
            raw = m.parametrizations.weight.original
            assert torch.allclose(w, raw / torch.linalg.matrix_norm(raw.reshape(raw.shape[0], -1), ord=2), atol=0.05)


@pytest.mark.parametrize("arch,shape", ARCH_SHAPES, ids=ARCH_IDS)
def test_spectral_norm_leaves_g_alone(arch, shape):
    torch.manual_seed(0)
    G = build_generator(_cfg(arch), shape)
    torch.manual_seed(0)
    sG = build_generator(_cfg(arch, spectral_norm=True), shape)
    assert _state_sha(G) == _state_sha(sG)
    assert not any(parametrize.is_parametrized(m) for m in sG.modules())


def test_dcgan_d_with_spectral_norm_trades_batchnorm_for_biases():
    D = build_discriminator(_cfg("dcgan", spectral_norm=True), (3, 32, 32))
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert [c.bias is not None for c in convs] == [False, True, True, False]  # the input and last conv: as DCGAN


# --- resnet (SNGAN) ---


def test_resnet_at_32_is_sngans_cifar_architecture():
    cfg = ModelConfig(arch="resnet", channels=64, z_dim=128)
    G, D = build_generator(cfg, (3, 32, 32)), build_discriminator(cfg, (3, 32, 32))
    assert (G.linear.in_features, G.linear.out_features) == (128, 4 * 4 * 256)
    assert [(b.c1.in_channels, b.c2.out_channels) for b in G.blocks] == [(256, 256)] * 3
    assert (G.bn.num_features, G.conv.in_channels, G.conv.out_channels, G.conv.kernel_size) == (256, 256, 3, (3, 3))
    assert isinstance(D.blocks[0], OptimizedDBlock) and (D.blocks[0].c1.in_channels, D.blocks[0].c1.out_channels) == (
        3,
        128,
    )
    assert [(b.c2.out_channels, b.downsample) for b in D.blocks[1:]] == [(128, True), (128, False), (128, False)]
    assert [b.c_sc is None for b in D.blocks[1:]] == [False, True, True]
    assert (D.linear.in_features, D.linear.out_features) == (128, 1)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())
    assert sum(p.numel() for p in G.parameters()) == 4_276_739  # SNGAN's CIFAR-10 G: 4.3 M parameters


@pytest.mark.parametrize("res,s0,feature", [(28, 7, 7), (32, 4, 8), (64, 4, 2)])
def test_resnet_sizes_at_each_resolution(res, s0, feature):
    cfg = ModelConfig(arch="resnet", channels=4, z_dim=8)
    G, D = build_generator(cfg, (1, res, res)), build_discriminator(cfg, (1, res, res))
    sizes: list[int] = []
    G.blocks[0].register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[-1]))
    D.blocks.register_forward_hook(lambda m, args, out: sizes.append(out.shape[-1]))
    D(G(torch.randn(2, 8)))
    assert sizes == [s0, feature]  # G starts at s0×s0; D's last blocks work at feature×feature
    assert len(G.blocks) == {28: 2, 32: 3, 64: 4}[res]
    if res == 64:  # sngan_projection's 64 px nets: channels c·16 -> c and c -> c·16
        assert [b.c2.out_channels for b in G.blocks] == [32, 16, 8, 4] and G.linear.out_features == 16 * 64
        assert [b.c2.out_channels for b in D.blocks] == [4, 8, 16, 32, 64]


def test_unsupported_resnet_shapes_name_the_supported_ones():
    cfg = ModelConfig(arch="resnet", channels=4)
    for shape in [(3, 128, 128), (1, 48, 48), (4, 32, 32)]:
        for build in (build_generator, build_discriminator):
            with pytest.raises(ValueError) as err:
                build(cfg, shape)
            sizes = ", ".join(map(str, ARCHITECTURES["resnet"].resolutions))
            assert str(err.value).endswith(f"resnet supports resolutions {sizes} and 1 or 3 channels")


def _xavier_bound(w: torch.Tensor, gain: float) -> float:
    fan_in, fan_out = w.shape[1] * w[0, 0].numel(), w.shape[0] * w[0, 0].numel()
    return gain * math.sqrt(6 / (fan_in + fan_out))


def test_resnet_init_is_sngans_xavier_uniform():
    torch.manual_seed(0)
    cfg = ModelConfig(arch="resnet", channels=16, conditional=True)
    G, D = build_generator(cfg, (3, 32, 32), 3), build_discriminator(cfg, (3, 32, 32), 3)
    checked = 0
    for block in [*G.blocks, *D.blocks]:
        for name, gain in (("c1", math.sqrt(2)), ("c2", math.sqrt(2)), ("c_sc", 1.0)):
            conv = getattr(block, name)
            if conv is None:
                continue
            bound = _xavier_bound(conv.weight, gain)
            assert 0.9 * bound < conv.weight.abs().max().item() <= bound, (block, name)
            assert not conv.bias.any()
            checked += 1
    for layer in (G.linear, G.conv, D.linear):
        bound = _xavier_bound(layer.weight.reshape(*layer.weight.shape[:2], -1), 1.0)
        assert 0.8 * bound < layer.weight.abs().max().item() <= bound and not layer.bias.any()
    assert checked == 3 * 3 + 3 + 3 + 2 * 2  # G's 3 blocks; D's optimised, down-sampling and 2 plain blocks
    e = D.embed.weight
    assert 0.8 * math.sqrt(6 / sum(e.shape)) < e.abs().max().item() <= math.sqrt(6 / sum(e.shape))


def _up(x: torch.Tensor) -> torch.Tensor:
    return x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # nearest-neighbour ×2


def test_resnet_blocks_compute_sngans_blocks():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 8, 8)
    g = GBlock(6, 4).eval()
    g.b1.running_mean.uniform_(-1, 1)  # eval mode with statistics that are not the identity
    g.b2.running_var.uniform_(0.5, 2)
    with torch.no_grad():
        want = g.c2(F.relu(g.b2(g.c1(_up(F.relu(g.b1(x))))))) + g.c_sc(_up(x))
        assert torch.allclose(g(x), want, atol=1e-6)
    opt, down, same = OptimizedDBlock(6, 4), DBlock(6, 4, True), DBlock(6, 6, False)
    with torch.no_grad():
        x0 = x.clone()
        assert torch.allclose(
            opt(x), F.avg_pool2d(opt.c2(F.relu(opt.c1(x))), 2) + opt.c_sc(F.avg_pool2d(x, 2)), atol=1e-6
        )
        want = F.avg_pool2d(down.c2(F.relu(down.c1(F.relu(x)))), 2) + F.avg_pool2d(down.c_sc(x), 2)
        assert torch.allclose(down(x), want, atol=1e-6)
        assert torch.allclose(same(x), same.c2(F.relu(same.c1(F.relu(x)))) + x, atol=1e-6)
        assert torch.equal(x, x0)  # no block changes its input in place


# --- class-conditional: conditional BatchNorm in G, projection D ---


def _by_hand(D: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """psi(phi(x)) + embed[y]·phi(x), from D's modules."""
    if isinstance(D, MLPDiscriminator):  # phi = the hidden layer, psi = the last Linear
        phi = F.leaky_relu(D.net[1](x.flatten(1)), 0.2)
        psi = D.net[3](phi)[:, 0]
    elif isinstance(D, DCGANDiscriminator):  # phi = the last feature map sum-pooled, psi = the final conv of that map
        h = x
        for m in list(D.net)[:-1]:
            h = m(h)
        phi, psi = h.sum(dim=(2, 3)), D.net[-1](h).flatten()
    else:  # resnet: phi = ReLU and global sum pooling, psi = the Linear
        assert isinstance(D, ResNetDiscriminator)
        phi = F.relu(D.blocks(x)).sum(dim=(2, 3))
        psi = D.linear(phi)[:, 0]
    return psi + (D.embed.weight[y] * phi).sum(1)


@pytest.mark.parametrize("sn", [False, True], ids=["plain", "sn"])
@pytest.mark.parametrize("arch,shape", ARCH_SHAPES + [("resnet", (1, 28, 28))], ids=ARCH_IDS + ["resnet-1x28x28"])
def test_projection_discriminator_by_hand(arch, shape, sn):
    torch.manual_seed(0)
    D = build_discriminator(_cfg(arch, conditional=True, spectral_norm=sn), shape, 4)
    D(torch.randn(8, *shape), torch.randint(0, 4, (8,)))  # BatchNorm statistics, a power-iteration step
    D.eval()
    x, y = torch.randn(5, *shape), torch.tensor([0, 1, 2, 3, 1])
    with torch.no_grad():
        out = D(x, y)
        assert torch.allclose(out, _by_hand(D, x, y), atol=1e-4)
        for k in range(4):  # the class changes D's output
            other = (y + 1 + k % 3) % 4
            assert not torch.allclose(out, D(x, other), atol=1e-4)


@pytest.mark.parametrize("arch,shape", ARCH_SHAPES + [("dcgan", (1, 64, 64))])
def test_conditional_g_depends_on_the_class(arch, shape):
    torch.manual_seed(0)
    G = build_generator(_cfg(arch, conditional=True), shape, 3)
    z = torch.randn(4, 16)
    y0, y1 = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    cbn = [m for m in G.modules() if isinstance(m, ConditionalBatchNorm2d)]
    if arch == "mlp":
        assert not cbn and G.net[0].in_features == 16 + 16  # z and the 16-number class embedding
    else:  # gamma 1, beta 0 for every class at first: the class does not matter yet
        assert all(torch.equal(m.gamma.weight, torch.ones_like(m.gamma.weight)) for m in cbn)
        assert all(torch.equal(m.beta.weight, torch.zeros_like(m.beta.weight)) for m in cbn)
        assert all(not m.bn.affine for m in cbn)
        with torch.no_grad():
            assert torch.equal(G(z, y0), G(z, y1))
            cbn[0].beta.weight[1].normal_()
    with torch.no_grad():
        assert not torch.allclose(G(z, y0), G(z, y1), atol=1e-4)


def test_conditional_batchnorm_replaces_gs_batchnorms():
    plain = [type(m) for m in build_generator(_cfg("dcgan"), (3, 64, 64)).modules() if isinstance(m, nn.BatchNorm2d)]
    G = build_generator(_cfg("dcgan", conditional=True), (3, 64, 64), 10)
    assert sum(isinstance(m, ConditionalBatchNorm2d) for m in G.modules()) == len(plain) == 4
    assert all(not m.affine for m in G.modules() if isinstance(m, nn.BatchNorm2d))  # only those inside the CBNs
    R = build_generator(_cfg("resnet", conditional=True), (3, 32, 32), 10)
    assert all(isinstance(b.b1, ConditionalBatchNorm2d) and isinstance(b.b2, ConditionalBatchNorm2d) for b in R.blocks)
    assert type(R.bn) is nn.BatchNorm2d and R.bn.affine  # the last BN stays unconditional, as in SNGAN's code
    assert R.blocks[0].b1.gamma.weight.shape == (10, 16)


# --- save/load of conditional generators ---


def test_save_load_round_trip_of_a_conditional_resnet(tmp_path):
    cfg = ModelConfig(arch="resnet", channels=4, z_dim=16, conditional=True, spectral_norm=True)
    torch.manual_seed(2)
    G = build_generator(cfg, (3, 32, 32), 7)
    G(torch.randn(8, 16), torch.randint(0, 7, (8,)))  # move BatchNorm's running stats
    with torch.no_grad():
        for m in G.modules():
            if isinstance(m, ConditionalBatchNorm2d):
                m.gamma.weight.normal_(1, 0.3)
                m.beta.weight.normal_(0, 0.3)
    G.eval()
    save_generator(tmp_path / "g.pt", G, cfg, {"steps": 1})
    assert torch.load(tmp_path / "g.pt", weights_only=True)["num_classes"] == 7
    G2, cfg2 = load_generator(tmp_path / "g.pt")
    assert cfg2 == cfg and G2.num_classes == 7 and G2.image_shape == (3, 32, 32) and not G2.training
    z, y = torch.randn(7, 16), torch.arange(7)
    with torch.no_grad():
        assert torch.equal(G(z, y), G2(z, y))
        assert not torch.equal(G2(z, y), G2(z, y.flip(0)))


def test_files_without_num_classes_load_unconditional(tmp_path):
    cfg = ModelConfig(arch="mlp", hidden=8, z_dim=4)
    save_generator(tmp_path / "g.pt", build_generator(cfg, (1, 28, 28), 10), cfg, {})
    blob = torch.load(tmp_path / "g.pt", weights_only=True)
    assert blob["num_classes"] == 0
    del blob["num_classes"]  # as written before classes were recorded
    torch.save(blob, tmp_path / "old.pt")
    G2, _ = load_generator(tmp_path / "old.pt")
    assert G2.num_classes == 0 and G2(torch.randn(2, 4)).shape == (2, 1, 28, 28)
