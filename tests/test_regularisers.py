"""R1 and the WGAN gradient penalty against autograd on a tiny model, and against closed forms."""

import torch

from gan.training.regularisers import gradient_penalty, r1_penalty


def test_r1_on_a_linear_d_is_the_squared_weight_norm():
    # D(x) = <w, x> + b: grad_x D = w for every x, so E||grad||^2 = ||w||^2.
    torch.manual_seed(0)
    lin = torch.nn.Linear(12, 1)
    x = torch.randn(5, 3, 2, 2, requires_grad=True)
    logits = lin(x.flatten(1)).squeeze(1)
    assert torch.allclose(r1_penalty(logits, x), lin.weight.square().sum(), rtol=1e-6)


def test_r1_matches_per_image_autograd_on_a_nonlinear_d_and_trains_d():
    torch.manual_seed(0)
    D = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 6), torch.nn.Tanh(), torch.nn.Linear(6, 1))
    x = torch.randn(4, 2, 2, 2)
    expected = []
    for i in range(4):  # one image at a time: d D(x_i) / d x_i by autograd
        xi = x[i : i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(D(xi).sum(), xi)
        expected.append(g.square().sum())
    xr = x.clone().requires_grad_(True)
    penalty = r1_penalty(D(xr).squeeze(1), xr)
    assert torch.allclose(penalty, torch.stack(expected).mean(), rtol=1e-5)
    penalty.backward()  # the penalty is differentiable in D's weights (create_graph)
    *shaped, last_bias = D.parameters()  # the input gradient does not depend on the last bias
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in shaped) and last_bias.grad is None


def test_gradient_penalty_matches_a_hand_interpolation():
    torch.manual_seed(0)
    D = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 5), torch.nn.Softplus(), torch.nn.Linear(5, 1))
    real, fake = torch.randn(3, 2, 2, 2), torch.randn(3, 2, 2, 2)
    gp = gradient_penalty(lambda im: D(im).squeeze(1), real, fake, torch.Generator().manual_seed(7))
    a = torch.rand(3, 1, 1, 1, generator=torch.Generator().manual_seed(7))  # the same draw, by hand
    norms = []
    for i in range(3):
        xi = (a[i] * real[i] + (1 - a[i]) * fake[i]).unsqueeze(0).requires_grad_(True)
        (g,) = torch.autograd.grad(D(xi).sum(), xi)
        norms.append((g.norm() - 1) ** 2)
    assert torch.allclose(gp, torch.stack(norms).mean(), rtol=1e-5)


def test_gradient_penalty_of_a_1_lipschitz_linear_critic_is_zero():
    w = torch.tensor([[0.6, 0.8, 0.0, 0.0]])  # ||w|| = 1: the optimal critic's gradient norm
    gp = gradient_penalty(lambda im: (im.flatten(1) @ w.T).squeeze(1), torch.randn(6, 1, 2, 2),
                          torch.randn(6, 1, 2, 2), torch.Generator().manual_seed(0))  # fmt: skip
    assert gp.abs().item() < 1e-10
