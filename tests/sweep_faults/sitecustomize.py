"""Test-only: make one trial's training diverge for real (its loss turns NaN), chosen by its seed.

On `PYTHONPATH` with `GAN_TEST_DIVERGE_SEED=N`, a `python -m gan train` whose params have `train.seed: N` gets a
discriminator loss that is NaN from the 5th call on; the training loop's own divergence check then stops it with
`DivergenceError` (what a real NaN does). Every other process and trial is untouched. Used by tests/test_sweep.py:
no valid setting makes the tiny training diverge reliably within seconds.
"""

from __future__ import annotations

import os
import sys

_SEED = os.environ.get("GAN_TEST_DIVERGE_SEED")


def _install() -> None:
    sys.path.insert(0, os.getcwd())  # what `python -m` puts first: the workspace's own `gan`
    import yaml

    params = yaml.safe_load(open("params.yaml")) or {}
    if str((params.get("train") or {}).get("seed")) != _SEED:
        return
    import dataclasses

    from gan.training import losses

    calls = {"n": 0}
    for name, loss in list(losses.LOSSES.items()):

        def poisoned(real, fake, _d=loss.d):
            calls["n"] += 1
            value = _d(real, fake)
            return value * float("nan") if calls["n"] >= 5 else value

        losses.LOSSES[name] = dataclasses.replace(loss, d=poisoned)


if _SEED and sys.orig_argv[1:4] == ["-m", "gan", "train"] and os.path.exists("params.yaml"):
    _install()
