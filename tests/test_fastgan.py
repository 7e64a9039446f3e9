"""FastGAN (gan/training/fastgan.py): its parts compute what the paper's do, D's self-supervised loss trains D's
decoders,
and a run trains deterministically and resumes bit-identically."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from gan.core.config import ConfigError, ModelConfig, TrainConfig, apply_overrides, validate
from gan.training.fastgan import SLE, FastGANDiscriminator, FastGANGenerator, _quadrant
from gan.training.losses import LOSSES
from gan.training.models import build_discriminator, build_generator
from gan.training.step import GanStep, StepParts, step_parts
from gan.training.train import TrainOutputs, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODEL = ModelConfig(arch="fastgan", channels=8, z_dim=16)


@pytest.mark.parametrize("res", [32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_spectral_norm_everywhere_and_batchnorm_kept(res, channels):
    shape = (channels, res, res)
    G, D = build_generator(MODEL, shape), build_discriminator(MODEL, shape)
    x = G(torch.randn(3, 16))
    assert x.shape == (3, *shape) and x.min() >= -1 and x.max() <= 1
    assert D(x).shape == (3,)
    logits, loss = D(x, quadrants=torch.tensor([0, 1, 3]))
    assert logits.shape == (3,) and loss.ndim == 0 and loss > 0
    for model in (G, D):  # the authors normalise every conv of G and D, and keep the BatchNorms
        convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        assert convs and all(parametrize.is_parametrized(m, "weight") for m in convs)
        assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize(
    "res,g_pairs,d_pairs",
    [(32, {"4-32"}, {"32-8"}), (64, {"4-64"}, {"64-8"}), (128, {"4-64", "8-128"}, {"64-8", "128-16"})],
)
def test_skip_layer_excitation_joins_the_papers_maps(res, g_pairs, d_pairs):
    """G: 4 -> 64 and 8 -> 128 (16× apart), D: each map to the one 8× smaller; at 32 px the one pair that fits."""
    G = FastGANGenerator(16, 8, (3, res, res))
    D = FastGANDiscriminator(8, (3, res, res))
    assert set(G.sle) == g_pairs and set(D.sle) == d_pairs


def test_sle_scales_each_channel_of_the_large_map_by_a_gate_of_the_small_one():
    torch.manual_seed(0)
    sle = SLE(6, 5)
    small, large = torch.randn(2, 6, 8, 8), torch.randn(2, 5, 32, 32)
    gate = sle.gate(small)
    assert gate.shape == (2, 5, 1, 1) and ((gate > 0) & (gate < 1)).all()
    assert torch.allclose(sle(small, large), large * gate)
    other = sle(small * 3 + 1, large)  # another small map: another scaling of the same large map
    assert not torch.allclose(other, sle(small, large))


def test_quadrant_picks_each_images_own_quadrant():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    q = _quadrant(x, torch.tensor([1, 2]))
    assert q[0, 0].tolist() == [[2, 3], [6, 7]]  # image 0, top-right
    assert q[1, 0].tolist() == [[24, 25], [28, 29]]  # image 1, bottom-left


def _step(reconstruct: bool, seed: int = 0) -> tuple[GanStep, nn.Module]:
    torch.manual_seed(seed)
    shape = (3, 32, 32)
    G, D = build_generator(MODEL, shape), build_discriminator(MODEL, shape)
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    parts = StepParts(loss=LOSSES["hinge"], reconstruct=reconstruct)
    return GanStep(G, D, opt_g, opt_d, parts, torch.Generator().manual_seed(seed)), D


def test_ds_update_trains_its_decoders_only_with_the_reconstruction_loss():
    x, z = torch.rand(1, 8, 3, 32, 32) * 2 - 1, torch.randn(1, 8, 16)
    for reconstruct in (True, False):
        step, D = _step(reconstruct)
        before = {k: v.clone() for k, v in D.state_dict().items() if k.startswith("decode")}
        stats = step(x, z)
        changed = [k for k, v in D.state_dict().items() if k.startswith("decode") and not torch.equal(v, before[k])]
        assert bool(changed) == reconstruct
        assert ("reconstruction" in step.stat_names) == reconstruct and len(stats) == len(step.stat_names)
    assert step_parts(MODEL, TrainConfig()).reconstruct and not step_parts(ModelConfig(), TrainConfig()).reconstruct


def test_d_learns_to_rebuild_real_images():
    """The self-supervised loss falls as D trains on the same real images (the decoders learn, not only D's head)."""
    step, D = _step(True)
    torch.manual_seed(1)
    x = (torch.rand(1, 8, 3, 32, 32) > 0.5).float().repeat_interleave(4, -1).repeat_interleave(4, -2)[..., :32, :32]
    x = x * 2 - 1
    losses = [float(step(x, torch.randn(1, 8, 16))[step.stat_names.index("reconstruction")]) for _ in range(40)]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["model.arch=fastgan", "model.conditional=true"], "model.arch = 'fastgan' with model.conditional = true"),
        (["model.arch=fastgan"], "model.arch = 'fastgan' is built for 32, 64, 128 px"),  # fashion-mnist: 28 px
    ],
)
def test_settings_fastgan_cannot_run_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(apply_overrides({}, overrides), source="params.yaml")


@pytest.fixture
def split32(tmp_path: Path) -> Path:
    """64 RGB 32×32 images: a coloured square at a class-dependent place on noise."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 64)
    images = rng.integers(0, 60, (64, 3, 32, 32)).astype(np.uint8)
    for i, k in enumerate(labels):
        images[i, k % 3, 4 + 6 * k : 12 + 6 * k, 8:24] = 230
    np.savez(tmp_path / "train.npz", images=images, labels=labels.astype(np.int64))
    return tmp_path / "train.npz"


def test_a_fastgan_run_is_deterministic_and_resumes_bit_identically(split32, tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=16, checkpoint_every=2, log_flush_every=1, device="cpu", loss="hinge",
                      augment="color,translation", ema_decay=0.9, eval_every=0, keep="last")  # fmt: skip

    def outputs(name: str) -> TrainOutputs:
        return TrainOutputs(tmp_path / name / "g.pt", tmp_path / name / "ckpt", tmp_path / name / "log")

    class Interrupt(Exception):
        pass

    def crash(stats):
        if stats["step"] == 6:
            raise Interrupt

    full = train(MODEL, cfg, split32, outputs("full"), progress_bar=False)
    assert full.steps == 8
    with pytest.raises(Interrupt):
        train(MODEL, cfg, split32, outputs("resumed"), on_progress=crash, progress_bar=False)
    resumed = train(MODEL, cfg, split32, outputs("resumed"), progress_bar=False)
    assert 0 < resumed.resumed_from_step < 6
    a, b = (torch.load(tmp_path / n / "g.pt", weights_only=True)["state_dict"] for n in ("full", "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = (tmp_path / "full" / "log" / "log.tsv").read_text()
    assert log == (tmp_path / "resumed" / "log" / "log.tsv").read_text()
    assert log.splitlines()[0].split("\t")[-1] == "reconstruction"
