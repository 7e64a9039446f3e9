"""One training step of the GAN: `train.d_steps` D updates, then one G update, with the algorithm passed in.

The parts arrive from outside, built by name from the config (as stylegan2-ada-pytorch's training loop receives
its loss and augmentation pipe): the loss (`gan.training.losses.LOSSES`), an augmentation applied to *every* image D
sees,
real and fake, in D's and in G's update (DiffAugment, `gan.training.augment`), R1 on real images every `train.r1_every`
steps, the WGAN gradient penalty when the loss asks for it, and the self-supervised reconstruction loss of a D that
is also an auto-encoder (FastGAN, `gan.training.fastgan`: D(real, quadrants=q) returns its logits and that loss; q, the
quadrant each image rebuilds, drawn from the step's RNG).

With `train.ada_target` > 0 the augmentation is adaptive, as in StyleGAN2-ADA (`gan.training.ada`): each image D
sees is augmented with probability p, moved every few steps toward keeping D's overfitting signal E[sign(D(real))]
(over every real batch of every D update, all ranks) at the target. p starts at 0, so a run that does not overfit is
never augmented; p, and the signal gathered since the last adjustment, are in every checkpoint
(`GanStep.state_dict`).

Each D update takes its own real batch and noise; G's update then reuses the fakes of the last D update -- made by
the current G, which has not changed since -- scored by the updated D. With one D step and no penalty or
augmentation this is the textbook update exactly, op for op (the default's results are bit-identical to the loop
before the algorithm became parts).

The step returns its statistics as one tensor on the device (no host sync), named by `GanStep.stat_names`; the
trainer's log columns are those names (`r1` is NaN on the steps between lazy R1 steps, where it is not computed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn.parallel import DistributedDataParallel

from gan.core.architectures import ARCHITECTURES
from gan.core.config import ModelConfig, TrainConfig
from gan.training.ada import AdaptiveP
from gan.training.augment import diff_augment
from gan.training.losses import LOSSES, GanLoss
from gan.training.regularisers import gradient_penalty, r1_penalty

# d_real/d_fake: the mean of sigmoid(D's logits) on real/fake images -- D's probability for the ns loss, for the
# hinge and Wasserstein losses a monotone indicator of the same thing (their D outputs a score, not a logit).
BASE_STATS = ("loss_d", "loss_g", "d_real", "d_fake")


@dataclass(frozen=True)
class StepParts:
    """What varies between GAN algorithms; built from the config by `step_parts`."""

    loss: GanLoss
    augment: tuple[str, ...] = ()
    r1_gamma: float = 0.0
    r1_every: int = 16
    gp_weight: float = 0.0
    d_steps: int = 1
    conditional: bool = False
    ada_target: float = 0.0  # > 0: adaptive augmentation probability toward this E[sign(D(real))]
    ada_kimg: float = 100.0  # images (thousands) for p to go from 0 to 1
    reconstruct: bool = False  # D(real, quadrants=q) -> (logits, reconstruction loss), added to D's loss

    def r1_due(self, step: int) -> bool:
        """Lazy R1 (StyleGAN2): applied on every `r1_every`-th step, where D's loss adds it times `r1_every`."""
        return bool(self.r1_gamma) and step % self.r1_every == 0

    @property
    def stat_names(self) -> tuple[str, ...]:
        extra = (("r1",) if self.r1_gamma else ()) + (("gp",) if self.loss.gradient_penalty else ())
        extra += ("reconstruction",) if self.reconstruct else ()
        return BASE_STATS + extra + (("augment_p", "real_sign") if self.ada_target else ())


def step_parts(model_cfg: ModelConfig, train_cfg: TrainConfig) -> StepParts:
    loss = LOSSES[train_cfg.loss]
    return StepParts(
        loss=loss,
        augment=train_cfg.augment_policies,
        r1_gamma=train_cfg.r1_gamma,
        r1_every=train_cfg.r1_every,
        gp_weight=train_cfg.gp_weight if loss.gradient_penalty else 0.0,
        d_steps=train_cfg.d_steps,
        conditional=model_cfg.conditional,
        ada_target=train_cfg.ada_target,
        ada_kimg=train_cfg.ada_kimg,
        reconstruct=ARCHITECTURES[model_cfg.arch].reconstructing_d,
    )


def _call(module: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """module(inputs) for unconditional models (exactly today's call), module(inputs, labels) for conditional ones."""
    return module(inputs) if labels is None else module(inputs, labels)


def _d_for_g(D: torch.nn.Module) -> torch.nn.Module:
    """The D that scores G's fakes in G's update: D's own module under DistributedDataParallel (unwrapped once), so
    no DDP reducer waits for D's gradients there. torch.compile over DDP is refused: its own module would be the eager
    D, silently uncompiled (the config refuses train.compile with several processes, `check_processes`)."""
    if isinstance(D, DistributedDataParallel):
        return D.module
    if isinstance(getattr(D, "_orig_mod", None), DistributedDataParallel):
        raise ValueError(
            "a compiled DistributedDataParallel D: G's update would run D's own module uncompiled; "
            "train.compile is for one process (gan.core.config.check_processes)"
        )
    return D


class GanStep:
    """`step(x, z, y_real, y_fake, regularise)` -> statistics; x: d_steps×B×C×H×W, z: d_steps×B×z_dim, y_*:
    d_steps×B class indices (None when unconditional); `regularise`: apply R1 this step (lazy R1).

    `rng` (a torch.Generator on the device, checkpointed by the trainer) draws the augmentation and the gradient
    penalty's interpolation, so a resumed run replays them.
    """

    def __init__(self, G, D, opt_g, opt_d, parts: StepParts, rng: torch.Generator, amp: bool = False):
        self.G, self.D, self.opt_g, self.opt_d, self.parts, self.rng, self.amp = G, D, opt_g, opt_d, parts, rng, amp
        self.D_for_g = _d_for_g(D)
        # Only G's gradients in G's update: autograd then skips D's weight gradients, which the textbook loop
        # computes and throws away (bench/train_throughput.py: about 9% of a 64x64 DCGAN step on the CPU).
        self.g_params = [p for group in opt_g.param_groups for p in group["params"]]
        self.stat_names = parts.stat_names
        device = next(iter(self.g_params)).device
        # ADA's state, on the device (no host sync): p, and D's signs on real images since the last adjustment
        self.ada = AdaptiveP(parts.ada_target, parts.ada_kimg, device) if parts.ada_target else None

    def run_d(self, D: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor | None, rebuild: bool = False):
        """D's logits for `images`, augmented first: every image D sees goes through here (with ADA, each image
        with probability p). `rebuild` (a reconstructing D, real images): (logits, D's reconstruction loss)."""
        if self.parts.augment:
            augmented = diff_augment(images, self.parts.augment, self.rng)
            if self.ada is not None:
                chosen = torch.rand(len(images), generator=self.rng, device=images.device) < self.ada.p
                augmented = torch.where(chosen.view(-1, 1, 1, 1), augmented, images)
            images = augmented
        if rebuild:
            quadrants = torch.randint(4, (len(images),), generator=self.rng, device=images.device)
            return D(images, quadrants=quadrants)
        return _call(D, images, labels)

    @property
    def augment_p(self) -> torch.Tensor:
        """ADA's p (0 without ADA)."""
        return self.ada.p if self.ada is not None else torch.zeros(())

    @augment_p.setter
    def augment_p(self, p: torch.Tensor) -> None:
        self.ada.p = p

    def state_dict(self) -> dict:
        """What a resumed run needs to replay the step exactly (ADA's p and signal; nothing without ADA)."""
        return self.ada.state_dict() if self.ada is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if state and self.ada is not None:
            self.ada.load_state_dict(state)

    def __call__(self, x, z, y_real=None, y_fake=None, regularise: bool = False) -> torch.Tensor:
        # No autocast weight cache: D is updated in place mid-step, and a cached bf16 copy of D's weights would
        # give G's update the pre-update D (seen on an H200).
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.amp, cache_enabled=False):
            return self._step(x, z, y_real, y_fake, regularise)

    def _step(self, x, z, y_real, y_fake, regularise: bool) -> torch.Tensor:
        parts, G, D = self.parts, self.G, self.D
        extra: list[torch.Tensor] = []
        r1_value = None
        # --- D: d_steps updates, each on its own real batch and noise ---
        for k in range(parts.d_steps):
            yr = None if y_real is None else y_real[k]
            yf = None if y_fake is None else y_fake[k]
            last = k == parts.d_steps - 1
            with torch.set_grad_enabled(last):  # only the last fakes go on to G's update
                fake = _call(G, z[k], yf)
            r1 = parts.r1_gamma and regularise
            real = x[k].detach().requires_grad_(True) if r1 else x[k]
            if parts.reconstruct:
                real_logits, reconstruction = self.run_d(D, real, yr, rebuild=True)
            else:
                real_logits = self.run_d(D, real, yr)
            if self.ada is not None:
                self.ada.observe(real_logits)
            fake_logits = self.run_d(D, fake.detach(), yf)
            loss_d = parts.loss.d(real_logits, fake_logits)
            total = loss_d + reconstruction if parts.reconstruct else loss_d
            if r1:
                r1_value = r1_penalty(real_logits, real)
                total = total + (parts.r1_gamma / 2 * parts.r1_every) * r1_value
            if parts.loss.gradient_penalty:
                gp = gradient_penalty(lambda im, yr=yr: self.run_d(D, im, yr), x[k], fake, self.rng)
                total = total + parts.gp_weight * gp
            self.opt_d.zero_grad(set_to_none=True)
            total.backward()
            self.opt_d.step()
        real_sign = self.ada.end_step() if self.ada is not None else None
        # --- G: the last fakes, scored by the updated D (its own module under DDP: no reducer waits for D) ---
        loss_g = parts.loss.g(self.run_d(self.D_for_g, fake, yf))
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward(inputs=self.g_params)
        self.opt_g.step()
        # --- statistics, on the device ---
        with torch.no_grad():
            if parts.r1_gamma:  # NaN on the steps between lazy R1 steps: not computed there
                extra.append(r1_value.detach().float() if r1_value is not None else torch.full_like(loss_d, math.nan))
            if parts.loss.gradient_penalty:
                extra.append(gp.detach().float())
            if parts.reconstruct:
                extra.append(reconstruction.detach().float())
            if self.ada is not None:
                extra += [self.ada.p.float(), real_sign]
            d_real, d_fake = torch.sigmoid(real_logits.float()).mean(), torch.sigmoid(fake_logits.float()).mean()
            return torch.stack([loss_d.detach().float(), loss_g.detach().float(), d_real, d_fake, *extra])


class CudaGraphStep:
    """A `GanStep` captured once as a CUDA graph, then replayed (`train.cuda_graph`).

    At small batches every kernel is tiny, so an eager step is bound by the host launching a
    few hundred of them; one replay launches them all (bench/train_throughput.py --cuda-graph
    on an H200, 64x64 DCGAN at batch 64: 4.6-5.1x the pytorch/examples loop, eager 1.2-1.3x).
    Needs one process, fixed batch shapes, Adam built with capturable=True, and a step that draws no random
    numbers of its own (no augmentation, R1 or gradient penalty: the config refuses those with the graph). The
    first `warmup` calls run eagerly on a side stream, as the CUDA-graphs docs prescribe before a capture; they
    are real training steps, so the sequence of updates is the eager one.
    """

    def __init__(self, step: GanStep, warmup: int = 3):
        self.step, self.warmup, self.stat_names = step, warmup, step.stat_names
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None

    def __call__(self, x, z, y_real=None, y_fake=None, regularise: bool = False) -> torch.Tensor:
        inputs = (x, z, y_real, y_fake)
        if self.calls < self.warmup:
            self.calls += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self.step(*inputs)
            torch.cuda.current_stream().wait_stream(side)
            return out
        if self.graph is None:
            self.static = tuple(None if t is None else t.clone() for t in inputs)  # the graph's static inputs
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = self.step(*self.static)
        else:
            for static, t in zip(self.static, inputs, strict=True):
                if static is not None:
                    static.copy_(t)
        self.graph.replay()
        return self.out.clone()
