"""GAN losses, computed from D's logits, by name (`train.loss`; names and properties: gan.core.architectures).

- `ns`: the non-saturating loss of Goodfellow et al. 2014. With D(x) = sigmoid(l): -log D(x) = softplus(-l) and
  -log(1 - D(x)) = softplus(l), which never overflow, unlike log(sigmoid(l)) for large |l|.
- `hinge`: the hinge loss of SNGAN (Miyato et al. 2018), L_D = E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))],
  L_G = -E[D(G(z))].
- `wgan-gp`: the Wasserstein loss of WGAN-GP (Gulrajani et al. 2017), L_D = E[D(G(z))] - E[D(x)], L_G = -E[D(G(z))];
  its gradient penalty is `gan.training.regularisers.gradient_penalty`, added by the training step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gan.core.architectures import LOSS_SPECS, LossSpec


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """L_D = -log D(x) - log(1 - D(G(z))), averaged over the batch."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating L_G = -log D(G(z)): fakes scored with the *real* label."""
    return F.softplus(-fake_logits).mean()


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """L_D = E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]."""
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def wasserstein_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """L_D = E[D(G(z))] - E[D(x)]: the critic's estimate of the Wasserstein-1 distance, negated."""
    return fake_logits.mean() - real_logits.mean()


def critic_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """L_G = -E[D(G(z))] (hinge and Wasserstein losses alike)."""
    return -fake_logits.mean()


@dataclass(frozen=True)
class GanLoss:
    """One named loss: D's and G's. Its properties (whether the step adds the WGAN gradient penalty, ...) are those
    of its torch-free spec, `gan.core.architectures.LOSS_SPECS[name]`, which the config reads too."""

    name: str
    d: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    g: Callable[[torch.Tensor], torch.Tensor]

    @property
    def spec(self) -> LossSpec:
        return LOSS_SPECS[self.name]

    @property
    def gradient_penalty(self) -> bool:
        return self.spec.gradient_penalty


LOSSES: dict[str, GanLoss] = {
    loss.name: loss
    for loss in (
        GanLoss("ns", d_loss, g_loss),
        GanLoss("hinge", hinge_d_loss, critic_g_loss),
        GanLoss("wgan-gp", wasserstein_d_loss, critic_g_loss),
    )
}
