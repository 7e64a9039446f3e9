"""The training step with its parts passed in: the textbook default, d_steps, every D input augmented, R1 and
the gradient penalty inside D's update, labels routed to G and D."""

import copy

import pytest
import torch

import gan.training.step as step_module
from gan.core.config import ModelConfig, TrainConfig
from gan.training.losses import LOSSES, d_loss, g_loss
from gan.training.models import build_discriminator, build_generator
from gan.training.regularisers import r1_penalty
from gan.training.step import BASE_STATS, GanStep, StepParts, step_parts

MODEL = ModelConfig(arch="dcgan", channels=8, z_dim=16)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the machine is shared


def models(cfg: ModelConfig = MODEL, num_classes: int = 0, seed: int = 0):
    torch.manual_seed(seed)
    G, D = build_generator(cfg, (1, 28, 28), num_classes), build_discriminator(cfg, (1, 28, 28), num_classes)
    return G, D, torch.optim.Adam(G.parameters(), 1e-3, betas=(0.5, 0.999)), torch.optim.Adam(D.parameters(), 5e-4)


def batch(d_steps: int = 1, n: int = 8, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(d_steps, n, 1, 28, 28, generator=gen) * 2 - 1, torch.randn(d_steps, n, 16, generator=gen)


def weights(*modules) -> list[torch.Tensor]:
    return [p.detach().clone() for m in modules for p in m.parameters()]


def test_the_default_parts_are_the_textbook_loss_and_nothing_else():
    parts = step_parts(MODEL, TrainConfig())
    assert parts == StepParts(loss=LOSSES["ns"]) and parts.stat_names == BASE_STATS


def test_d_steps_update_d_on_each_batch_then_g_on_the_last_fakes():
    x, z = batch(d_steps=3)
    G, D, opt_g, opt_d = models()
    GanStep(G, D, opt_g, opt_d, StepParts(LOSSES["ns"], d_steps=3), torch.Generator())(x, z)
    G2, D2, opt_g2, opt_d2 = models()
    for k in range(3):  # by hand
        fake = G2(z[k])
        loss = d_loss(D2(x[k]), D2(fake.detach()))
        opt_d2.zero_grad()
        loss.backward()
        opt_d2.step()
    opt_g2.zero_grad()
    g_loss(D2(fake)).backward()
    opt_g2.step()
    for a, b in zip(weights(G, D), weights(G2, D2), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_every_image_d_sees_is_augmented_with_the_same_policies(monkeypatch):
    augmented, seen = [], []
    real_augment = step_module.diff_augment

    def recording_augment(images, policies, generator):
        out = real_augment(images, policies, generator)
        augmented.append((out, policies))
        return out

    monkeypatch.setattr(step_module, "diff_augment", recording_augment)
    G, D, opt_g, opt_d = models()
    D.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    x, z = batch()
    policies = ("color", "translation", "cutout")
    GanStep(G, D, opt_g, opt_d, StepParts(LOSSES["hinge"], augment=policies), torch.Generator().manual_seed(0))(x, z)
    assert len(seen) == 3  # D's update: real and fake; G's update: fake
    assert all(any(s is out for out, _ in augmented) for s in seen), "D saw an image that was not augmented"
    assert [p for _, p in augmented] == [policies] * 3
    assert not torch.equal(seen[0], x[0])  # the real batch itself was changed


def test_r1_is_added_to_ds_loss_with_the_lazy_scale_only_when_asked():
    x, z = batch()
    parts = StepParts(LOSSES["ns"], r1_gamma=2.0, r1_every=4)
    G, D, opt_g, opt_d = models()
    D_before = copy.deepcopy(D)
    stats = GanStep(G, D, opt_g, opt_d, parts, torch.Generator())(x, z, regularise=True)
    G2, D2, opt_g2, opt_d2 = models()  # by hand: loss_d + gamma/2 · every · R1
    fake = G2(z[0])
    real = x[0].clone().requires_grad_(True)
    real_logits = D2(real)
    r1 = r1_penalty(real_logits, real)
    opt_d2.zero_grad()
    (d_loss(real_logits, D2(fake.detach())) + 2.0 / 2 * 4 * r1).backward()
    opt_d2.step()
    for a, b in zip(weights(D), weights(D2), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert stats.shape == (5,) and stats[4].item() == pytest.approx(r1.item(), rel=1e-5)
    # Without `regularise` the same step leaves R1 out: D then matches the plain update.
    G3, D3, opt_g3, opt_d3 = models()
    GanStep(G3, D3, opt_g3, opt_d3, parts, torch.Generator())(x, z, regularise=False)
    G4, D4, opt_g4, opt_d4 = models()
    GanStep(G4, D4, opt_g4, opt_d4, StepParts(LOSSES["ns"]), torch.Generator())(x, z)
    assert all(torch.equal(a, b) for a, b in zip(weights(D3), weights(D4), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(weights(D), weights(D_before), strict=True))


def test_wgan_gp_adds_the_penalty_and_logs_it():
    x, z = batch()
    G, D, opt_g, opt_d = models(MODEL.model_copy(update={"spectral_norm": True}))
    parts = step_parts(MODEL, TrainConfig(loss="wgan-gp", gp_weight=10.0))
    assert parts.stat_names == (*BASE_STATS, "gp") and parts.gp_weight == 10.0
    G2, D2, opt_g2, opt_d2 = copy.deepcopy((G, D, opt_g, opt_d))
    stats = GanStep(G, D, opt_g, opt_d, parts, torch.Generator().manual_seed(0))(x, z)
    assert stats.shape == (5,) and stats[4].item() > 0 and torch.isfinite(stats).all()
    # D's update is the Wasserstein loss plus gp_weight times the penalty, by hand with the same interpolation draw
    from gan.training.regularisers import gradient_penalty

    fake = G2(z[0])
    loss = LOSSES["wgan-gp"].d(D2(x[0]), D2(fake.detach()))
    gp = gradient_penalty(D2, x[0], fake, torch.Generator().manual_seed(0))
    assert stats[4].item() == pytest.approx(gp.item(), rel=1e-5)
    opt_d2.zero_grad(set_to_none=True)
    (loss + 10.0 * gp).backward()
    opt_d2.step()
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(weights(D), weights(D2), strict=True))


def test_labels_reach_g_and_d_in_every_call():
    cfg = MODEL.model_copy(update={"conditional": True})
    G, D, opt_g, opt_d = models(cfg, num_classes=10)
    g_calls, d_calls = [], []
    G.register_forward_pre_hook(lambda _, args: g_calls.append(args[1]))
    D.register_forward_pre_hook(lambda _, args: d_calls.append(args[1]))
    x, z = batch()
    y_real, y_fake = torch.arange(8).view(1, 8), (torch.arange(8) + 1).view(1, 8) % 10
    GanStep(G, D, opt_g, opt_d, step_parts(cfg, TrainConfig()), torch.Generator())(x, z, y_real, y_fake)
    assert [c.tolist() for c in g_calls] == [y_fake[0].tolist()]
    assert [c.tolist() for c in d_calls] == [y_real[0].tolist(), y_fake[0].tolist(), y_fake[0].tolist()]


def test_gs_update_scores_with_ds_own_module_under_ddp_and_a_compiled_ddp_is_refused(tmp_path):
    """D's own module for G's update, unwrapped once; torch.compile over DDP is refused (its own module is eager)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    G, D, opt_g, opt_d = models()
    compiled = torch.compile(D)  # one process: G's update uses the compiled D itself
    assert GanStep(G, compiled, opt_g, opt_d, StepParts(LOSSES["ns"]), torch.Generator()).D_for_g is compiled
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = DistributedDataParallel(D)
        assert GanStep(G, ddp, opt_g, opt_d, StepParts(LOSSES["ns"]), torch.Generator()).D_for_g is D
        with pytest.raises(ValueError, match="a compiled DistributedDataParallel D: G's update would run"):
            GanStep(G, torch.compile(ddp), opt_g, opt_d, StepParts(LOSSES["ns"]), torch.Generator())
    finally:
        dist.destroy_process_group()


def test_the_reconstruction_loss_follows_the_architectures_property(monkeypatch):
    from gan.core.architectures import ARCHITECTURES, ArchSpec

    assert [name for name in ARCHITECTURES if step_parts(ModelConfig(arch=name), TrainConfig()).reconstruct] == [
        "fastgan"
    ]
    monkeypatch.setitem(ARCHITECTURES, "dcgan", ArchSpec("dcgan", "dcgan", reconstructing_d=True))
    assert step_parts(MODEL, TrainConfig()).reconstruct
