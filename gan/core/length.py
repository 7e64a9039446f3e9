"""How long each network trains when its length is `auto`: sized to the data, in steps, never in bare epochs.

An epoch is a different amount of training on 60,000 images than on 2,000, so the defaults are counted in steps
(the classifier and the judge) or in thousands of real images shown to D (`train.kimg`, as StyleGAN counts), with
minimums that make a small folder train as long as a large one would.

- classifier: 2 epochs, at least `CLASSIFIER_MIN_STEPS` steps;
- judge: 1 epoch of full batches, at least `JUDGE_MIN_STEPS` steps;
- G and D: `auto_kimg(shape)`: `BASE_KIMG` for a 28×28 grey image (Fashion-MNIST's 5 epochs), growing with the
  fourth root of the values per image (3×32×32: 422 kimg, 3×64×64: 597), whatever the number of images;
  `train.epochs` instead when it is set. It is an upper bound: the quality probe's patience usually ends a run
  sooner (on 3,390 emoji at 32 px the judge's FD improved little after ~1,500 steps, 192 kimg);
- the quality probe: `EVALUATIONS` times over the planned length (`train.eval_every: auto`).

The figures come from `bench/recipes.py` and the soundness tests (docs: "Training length").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gan.core.config import AUTO, TrainConfig

CLASSIFIER_MIN_STEPS = 800  # below this a classifier of a small folder scored blobs as real (soundness test)
JUDGE_MIN_STEPS = 200  # the judge's views need about this many batches to tell blur from sharp on a small folder
BASE_KIMG = 300.0  # 5 epochs of Fashion-MNIST's 60,000 images: the default measured there
BASE_VALUES = 28 * 28  # values per image of that default
EVALUATIONS = 20  # probe scores over a planned run (auto eval_every)
MIN_EVAL_EVERY = 50  # steps: never score more often than this


def classifier_steps(steps: int | str, n: int, batch_size: int) -> int:
    if steps != AUTO:
        return int(steps)
    return max(2 * math.ceil(n / batch_size), CLASSIFIER_MIN_STEPS)


def judge_steps(steps: int | str, n: int, batch_size: int) -> int:
    if steps != AUTO:
        return int(steps)
    return max(n // batch_size, JUDGE_MIN_STEPS)


def auto_kimg(shape: tuple[int, int, int]) -> float:
    """Thousands of images shown to D for `train.kimg: auto`, from the image shape C×H×W."""
    values = shape[0] * shape[1] * shape[2]
    return round(BASE_KIMG * max(values / BASE_VALUES, 1.0) ** 0.25, 1)


@dataclass(frozen=True)
class Plan:
    """The run's planned length, and how it was decided (for the log and the model card)."""

    steps: int
    images_per_step: int  # real images D sees per step (batch × d_steps)
    steps_per_epoch: int
    eval_every: int  # 0 = no probe
    why: str

    @property
    def kimg(self) -> float:
        return self.steps * self.images_per_step / 1000

    @property
    def epochs(self) -> float:
        return self.steps / self.steps_per_epoch


def plan(cfg: TrainConfig, n: int, shape: tuple[int, int, int], batch_size: int) -> Plan:
    """Steps to train for, from train.epochs, train.kimg, or (auto) the data's shape."""
    per_step = batch_size * cfg.d_steps
    steps_per_epoch = n // per_step
    if cfg.epochs:
        steps, why = cfg.epochs * steps_per_epoch, f"train.epochs = {cfg.epochs}"
    else:
        kimg = auto_kimg(shape) if cfg.kimg == AUTO else float(cfg.kimg)
        steps = max(1, round(kimg * 1000 / per_step))
        why = (f"train.kimg = auto: {kimg:g} kimg for {shape[0]}×{shape[1]}×{shape[2]} images"
               if cfg.kimg == AUTO else f"train.kimg = {kimg:g}")  # fmt: skip
    if cfg.eval_every == AUTO:
        every = max(MIN_EVAL_EVERY, math.ceil(steps / EVALUATIONS))
    else:
        every = int(cfg.eval_every)
    return Plan(steps, per_step, steps_per_epoch, every, why)


def describe_trained(summary: dict) -> str:
    """data/train/summary.json in one line: steps against the plan, images shown, epochs, and why training ended."""

    def num(v) -> str:
        return f"{v:g}" if isinstance(v, int | float) else str(v)

    text = f"{summary.get('steps')} steps"
    if summary.get("steps_planned"):
        text += f" of {summary['steps_planned']} planned ({summary.get('length', '')})"
    text += f", {num(summary.get('kimg'))} kimg shown to D, epochs: {num(summary.get('epochs'))}"
    if summary.get("stop"):
        text += f"; {summary['stop']}"
    elif summary.get("stopped_by_time_budget"):
        text += f" of {num(summary.get('epochs_planned'))} planned (stopped by train.max_seconds)"
    kept = summary.get("kept") or {}
    if kept.get("generator") == "best":
        text += f"; kept the best-scoring snapshot, step {kept.get('step')}"
    return text
