"""Adaptive discriminator augmentation (StyleGAN2-ADA; Karras et al. 2020, "Training Generative Adversarial Networks
with Limited Data"; their training_loop.py and loss.py): the probability p with which each image D sees is augmented,
moved toward keeping D's overfitting signal r_t = E[sign(D(real))] at a target.

As in their code: the signal is the mean sign of D's logits over every real image D judged since the last adjustment
(every D update of every step counts: with `train.d_steps` > 1 each D batch, not only the last), summed over all
ranks under DDP (their `training_stats` collector all-reduces it); every `interval` steps p moves by
sign(r_t - target) × (real images D judged in the interval, all ranks) / (`ada_kimg` × 1000), so it can go from 0 to 1
in `ada_kimg` thousand images. Differences, kept on purpose: p is clamped to [0, 1] (theirs only at 0; above 1 the
probability is 1 anyway, and a p above 1 would take longer to come down); the sums are all-reduced on every step, not
only at an adjustment, so that every rank holds the same partial sums and rank 0's checkpoint resumes all of them
exactly.

The state lives on the device (no host sync in the step loop); `state_dict` is what a checkpoint needs.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

INTERVAL = 4  # steps between adjustments of p (StyleGAN2-ADA's ada_interval)


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class AdaptiveP:
    """p, and D's signs on real images since the last adjustment (summed over every rank)."""

    def __init__(self, target: float, kimg: float, device: torch.device, interval: int = INTERVAL):
        self.target, self.kimg, self.interval = target, kimg, interval
        self.p = torch.zeros((), device=device)
        self.signs = torch.zeros((), device=device)  # sum of sign(D(real)) over the interval, all ranks
        self.count = torch.zeros((), device=device)  # real images D judged over the interval, all ranks
        self.steps = 0
        self._step_signs: list[torch.Tensor] = []

    def observe(self, real_logits: torch.Tensor) -> None:
        """One D update's logits on its real batch (after augmentation, as D saw it)."""
        self._step_signs.append(torch.sign(real_logits.detach().float()).flatten())

    def end_step(self) -> torch.Tensor:
        """After a step's D updates: add their signs (all ranks) and, every `interval` steps, move p. Returns this
        step's r_t (its real images, all ranks) for the log."""
        signs = torch.cat(self._step_signs)
        self._step_signs = []
        step = torch.stack([signs.sum(), torch.tensor(float(len(signs)), device=signs.device)])
        if _world() > 1:
            dist.all_reduce(step)
        self.signs, self.count = self.signs + step[0], self.count + step[1]
        self.steps += 1
        if self.steps % self.interval == 0:
            signal = self.signs / self.count
            rate = self.count / (self.kimg * 1000)
            self.p = (self.p + torch.sign(signal - self.target) * rate).clamp(0, 1)
            self.signs, self.count = torch.zeros_like(self.signs), torch.zeros_like(self.count)
        return step[0] / step[1]

    def state_dict(self) -> dict:
        return {"augment_p": self.p.cpu(), "sign_sum": self.signs.cpu(), "sign_count": self.count.cpu(),
                "ada_steps": self.steps}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self.p = state["augment_p"].to(self.p.device)
        self.steps = state["ada_steps"]
        if "sign_count" in state:
            self.signs = state["sign_sum"].to(self.signs.device)
            self.count = state["sign_count"].to(self.count.device)
        # else: a checkpoint of the earlier format (a sum of per-step means): the partial interval's signal is dropped
