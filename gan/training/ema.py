"""An exponential moving average of G's weights (`train.ema_decay`).

After every G step each EMA parameter moves towards G's: ema <- ema + (1 - beta)·(g - ema), one lerp per
parameter as in stylegan2-ada-pytorch's training loop; buffers (BatchNorm statistics) are copied. beta warms up as
min(decay, (1 + t)/(10 + t)) over the first updates (the num_updates rule of TensorFlow's ExponentialMovingAverage),
so the average does not start out dominated by G's random initial weights.

The averaged G usually gives better samples than the raw one (Yazıcı et al. 2019, "The unusual effectiveness of
averaging in GAN training"); it is the G that is evaluated, exported and promoted when EMA is on.
"""

from __future__ import annotations

import copy

import torch


def ema_beta(decay: float, updates: int) -> float:
    """The averaging weight of the `updates`-th update (0-based): min(decay, (1 + t)/(10 + t))."""
    return min(decay, (1 + updates) / (10 + updates))


class EmaGenerator:
    """A frozen copy of G, averaged after each G step; `state_dict`/`load_state_dict` for checkpoints."""

    def __init__(self, G: torch.nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(G).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, G: torch.nn.Module) -> None:
        beta = ema_beta(self.decay, self.updates)
        for p_ema, p in zip(self.module.parameters(), G.parameters(), strict=True):
            p_ema.lerp_(p.detach(), 1.0 - beta)
        for b_ema, b in zip(self.module.buffers(), G.buffers(), strict=True):
            b_ema.copy_(b)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
