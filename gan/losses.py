"""The non-saturating GAN loss, computed from logits.

With D(x) = sigmoid(l):  -log D(x) = softplus(-l)  and  -log(1 - D(x)) = softplus(l),
which never overflow, unlike log(sigmoid(l)) for large |l|.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """L_D = -log D(x) - log(1 - D(G(z))), averaged over the batch."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating L_G = -log D(G(z)): fakes scored with the *real* label."""
    return F.softplus(-fake_logits).mean()
