"""Gradient regularisers of D, added to its loss by the training step.

- `r1_penalty`: R1 of Mescheder et al. 2018 ("Which training methods for GANs do actually converge?"),
  E[||grad_x D(x)||^2] on real images; the step adds gamma/2 times it, every `train.r1_every` steps scaled by that
  interval (lazy regularisation, StyleGAN2).
- `gradient_penalty`: WGAN-GP's E[(||grad D(x_hat)||_2 - 1)^2] at random points x_hat between real and fake images
  (Gulrajani et al. 2017).

Both take the gradient with respect to the images D is called on *before* any augmentation, as
stylegan2-ada-pytorch's `loss.py` does, so an augmentation is part of D here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _input_gradient(logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """d sum(logits) / d images, kept in the graph (the penalty is itself trained through)."""
    (grad,) = torch.autograd.grad(logits.float().sum(), images, create_graph=True)
    return grad.float()


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """E_x ||grad_x D(x)||^2, with `real_logits` = D(real_images) and real_images.requires_grad."""
    return _input_gradient(real_logits, real_images).square().flatten(1).sum(1).mean()


def gradient_penalty(
    run_d: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """E[(||grad D(x_hat)||_2 - 1)^2], x_hat = a·real + (1 - a)·fake, a ~ U(0, 1) per image (from `generator`)."""
    a = torch.rand(real.shape[0], 1, 1, 1, generator=generator, device=real.device, dtype=real.dtype)
    x_hat = (a * real.detach() + (1 - a) * fake.detach()).requires_grad_(True)
    grad = _input_gradient(run_d(x_hat), x_hat)
    return (grad.flatten(1).norm(2, dim=1) - 1).square().mean()
