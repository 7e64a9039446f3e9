import math

import torch

from gan.training.losses import d_loss, g_loss


def test_d_loss_matches_hand_computation():
    # D(x) = sigmoid(l). For real logit 0: -log(0.5) = ln 2. For fake logit 2: -log(1 - sigmoid(2)) = log(1 + e^2).
    real = torch.tensor([0.0, 1.0])
    fake = torch.tensor([2.0, -1.0])
    expected = (math.log(2) + math.log(1 + math.exp(-1))) / 2 + (
        math.log(1 + math.exp(2)) + math.log(1 + math.exp(-1))
    ) / 2
    assert math.isclose(d_loss(real, fake).item(), expected, rel_tol=1e-6)


def test_g_loss_is_non_saturating_and_uses_real_label():
    fake = torch.tensor([-3.0, 0.0])
    # -log D(G(z)) = -log sigmoid(l) = log(1 + e^{-l})
    expected = (math.log(1 + math.exp(3)) + math.log(2)) / 2
    assert math.isclose(g_loss(fake).item(), expected, rel_tol=1e-6)
    # Non-saturating: when D confidently rejects fakes, G's gradient stays large (saturating loss would vanish).
    logit = torch.tensor([-10.0], requires_grad=True)
    g_loss(logit).backward()
    assert logit.grad.abs().item() > 0.99


def test_losses_equal_probability_form_and_never_overflow():
    l_real, l_fake = torch.randn(64), torch.randn(64)
    p_real, p_fake = torch.sigmoid(l_real), torch.sigmoid(l_fake)
    ref = -(torch.log(p_real).mean() + torch.log(1 - p_fake).mean())
    assert torch.allclose(d_loss(l_real, l_fake), ref, atol=1e-5)
    huge = torch.tensor([1e4, -1e4])
    assert torch.isfinite(d_loss(huge, huge)) and torch.isfinite(g_loss(huge))
    assert math.isclose(g_loss(torch.tensor([-1e4])).item(), 1e4, rel_tol=1e-6)


def test_hinge_loss_matches_hand_computation():
    from gan.training.losses import LOSSES

    real, fake = torch.tensor([0.5, 2.0, -1.0]), torch.tensor([-2.0, 0.0, 0.5])
    # D: mean(relu(1 - real)) = (0.5 + 0 + 2) / 3; mean(relu(1 + fake)) = (0 + 1 + 1.5) / 3
    assert math.isclose(LOSSES["hinge"].d(real, fake).item(), 2.5 / 3 + 2.5 / 3, rel_tol=1e-6)
    assert math.isclose(LOSSES["hinge"].g(fake).item(), 0.5, rel_tol=1e-6)  # -mean(fake) = -(-1.5)/3
    assert not LOSSES["hinge"].gradient_penalty


def test_wasserstein_loss_matches_hand_computation_and_asks_for_the_penalty():
    from gan.training.losses import LOSSES

    real, fake = torch.tensor([3.0, 1.0]), torch.tensor([-1.0, 0.0])
    assert math.isclose(LOSSES["wgan-gp"].d(real, fake).item(), -0.5 - 2.0, rel_tol=1e-6)  # mean(fake) - mean(real)
    assert math.isclose(LOSSES["wgan-gp"].g(fake).item(), 0.5, rel_tol=1e-6)
    assert LOSSES["wgan-gp"].gradient_penalty


def test_the_registry_holds_every_configurable_loss():
    from typing import get_args

    from gan.core.config import TrainConfig
    from gan.training.losses import LOSSES

    assert set(LOSSES) == set(get_args(TrainConfig.model_fields["loss"].annotation))
    assert LOSSES["ns"].d is d_loss and LOSSES["ns"].g is g_loss  # the textbook loss, unchanged


def test_each_loss_carries_the_properties_of_its_spec():
    from gan.core.architectures import LOSS_SPECS
    from gan.training.losses import LOSSES

    assert set(LOSSES) == set(LOSS_SPECS)
    for name, loss in LOSSES.items():
        assert loss.name == name and loss.spec is LOSS_SPECS[name]
        assert loss.gradient_penalty == LOSS_SPECS[name].gradient_penalty == LOSS_SPECS[name].double_backward
    assert [name for name, loss in LOSSES.items() if loss.gradient_penalty] == ["wgan-gp"]
