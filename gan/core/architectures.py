"""What the config knows about each architecture and loss: names and properties, no torch.

The one list of `model.arch` and `train.loss` names. The config validates against it (`gan.core.config`), and
`gan.training.models` / `gan.training.losses` register the torch code for each name (a test checks both sets of names
agree). Adding an architecture = one `ArchSpec` here, one `register` call in `gan.training.models`, and its test.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArchSpec:
    """One architecture as the config sees it."""

    name: str
    description: str
    resolutions: tuple[int, ...] | None = None  # square sides it is built for; None = any size
    channels: tuple[int, ...] | None = None  # image channels it is built for; None = any
    conditional: bool = True  # supports model.conditional (G(z, y), D(x, y))
    reconstructing_d: bool = False  # D is also an auto-encoder on real images: the step adds its loss


ARCHITECTURES: dict[str, ArchSpec] = {
    spec.name: spec
    for spec in (
        ArchSpec("mlp", "mlp (textbook)"),
        ArchSpec("dcgan", "dcgan (Radford et al.)", resolutions=(28, 32, 64, 128), channels=(1, 3)),
        ArchSpec("resnet", "resnet (SNGAN's ResNet G and D, Miyato et al.)", resolutions=(28, 32, 64), channels=(1, 3)),
        ArchSpec(
            "fastgan",
            "fastgan (Liu et al. 2021: skip-layer excitation, self-supervised D; for small folders; always spectrally "
            "normalised, unconditional)",
            resolutions=(32, 64, 128),
            channels=(1, 3),
            conditional=False,
            reconstructing_d=True,
        ),
    )
}
ARCH_NAMES = tuple(ARCHITECTURES)


@dataclass(frozen=True)
class LossSpec:
    """One GAN loss as the config sees it."""

    name: str
    description: str
    gradient_penalty: bool = False  # the step adds the WGAN gradient penalty (weight train.gp_weight)

    @property
    def double_backward(self) -> bool:
        """The loss differentiates D's input gradient (the gradient penalty does)."""
        return self.gradient_penalty

    @property
    def draws_random(self) -> bool:
        """The loss draws random numbers of its own in the step (the penalty's interpolation)."""
        return self.gradient_penalty


LOSS_SPECS: dict[str, LossSpec] = {
    spec.name: spec
    for spec in (
        LossSpec("ns", "ns: non-saturating (Goodfellow et al.)"),
        LossSpec("hinge", "hinge (SNGAN)"),
        LossSpec(
            "wgan-gp",
            "wgan-gp: Wasserstein loss with the gradient penalty (Gulrajani et al., weight train.gp_weight)",
            gradient_penalty=True,
        ),
    )
}
LOSS_NAMES = tuple(LOSS_SPECS)
