"""The sweep file: which settings to try, how long each trial trains, how many run at once.

    name: lr-loss                      # experiment names start with it
    base: {train.eval_every: 50}       # params.yaml overrides every trial shares
    search:                            # exactly one of grid, random, trials
      grid: {train.lr_g: [0.0005, 0.001, 0.002], train.loss: [ns, hinge]}
    budget: {max_seconds: 300}         # each trial's length: kimg, or max_seconds (a cap on the planned length)
    parallel: 0                        # trials at once on the local cluster (0 = sized to the machine)
    threads: 0                         # torch threads per trial (0 = the machine's cores / parallel)
    metric: auto                       # the distance trials are ranked by (promote.metric's choices)
    workspace: the default workspace   # the workspace it is written for, in words (named when a trial is refused)

Validated like params.yaml (pydantic, unknown keys refused, the key and value named), and every trial's settings
are validated against params.yaml by the params schema before anything runs (`plan`); every refusal is one
paragraph (`SweepError`) naming the file, the trial and the key. A trial's name carries the sweep's name, the
trial's label and a hash of everything it overrides, so the same settings get the same name in any later sweep
(which then skips them).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gan.core.config import AUTO_METRIC, ConfigError, PromoteConfig, load_params

NAME = r"^[a-z0-9][a-z0-9-]{0,39}$"  # a git ref component and a readable experiment name prefix
KEY = re.compile(r"^[a-z_]+\.[a-z_0-9]+$")  # section.key of params.yaml


MetricName = PromoteConfig.model_fields["metric"].annotation  # the distances promote.metric may name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _check_keys(overrides: dict[str, Any]) -> dict[str, Any]:
    for key in overrides:
        if not KEY.match(key):
            raise ValueError(f"{key!r} is not a params.yaml key of the form section.key (e.g. train.lr_g)")
    return overrides


class Range(_Strict):
    low: float
    high: float
    log: bool = Field(False, description="draw uniformly in log space (learning rates)")
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("log: low must be above 0")
        return self


class RandomSearch(_Strict):
    n: int = Field(ge=1, le=1000, description="how many draws")
    seed: int = Field(0, ge=0)
    ranges: dict[str, Range] = {}
    choices: dict[str, list[Any]] = {}

    @model_validator(mode="after")
    def _some(self) -> RandomSearch:
        _check_keys(self.ranges)
        _check_keys(self.choices)
        if not self.ranges and not self.choices:
            raise ValueError("random: give ranges and/or choices to draw from")
        if empty := [k for k, v in self.choices.items() if not v]:
            raise ValueError(f"random.choices: {', '.join(empty)} has no values")
        return self


class Search(_Strict):
    grid: dict[str, list[Any]] | None = Field(None, description="every combination of these values")
    random: RandomSearch | None = None
    trials: dict[str, dict[str, Any]] | None = Field(None, description="named trials, each its own overrides")

    @model_validator(mode="after")
    def _one(self) -> Search:
        given = [k for k in ("grid", "random", "trials") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of grid, random, trials (got {', '.join(given) or 'none'})")
        if self.grid is not None:
            _check_keys(self.grid)
            if not self.grid or any(not v for v in self.grid.values()):
                raise ValueError("grid: every key needs at least one value")
        for label, overrides in (self.trials or {}).items():
            if not re.match(r"^[a-z0-9][a-z0-9.-]{0,39}$", label) or ".." in label or label.endswith("."):
                raise ValueError(f"trial name {label!r}: lowercase letters, digits, dots and dashes, at most 40")
            _check_keys(overrides)
        if self.trials is not None and not self.trials:
            raise ValueError("trials: name at least one")
        return self


class Budget(_Strict):
    max_seconds: float | None = Field(None, gt=0, description="wall-clock training budget of each trial")
    kimg: float | None = Field(None, gt=0, description="thousands of real images each trial shows D")

    @model_validator(mode="after")
    def _one(self) -> Budget:
        if (self.max_seconds is None) == (self.kimg is None):
            raise ValueError("give exactly one of max_seconds, kimg")
        return self

    def overrides(self) -> dict[str, Any]:
        if self.kimg is not None:
            return {"train.kimg": self.kimg, "train.epochs": 0}
        return {"train.max_seconds": self.max_seconds}  # a cap on the planned length (base's, or params.yaml's)


class SweepSpec(_Strict):
    name: str = Field(pattern=NAME, description="experiment names start with it")
    base: dict[str, Any] = Field({}, description="params.yaml overrides every trial shares")
    search: Search
    budget: Budget
    parallel: int = Field(0, ge=0, le=256, description="trials at once on the local cluster (0 = sized)")
    threads: int = Field(0, ge=0, le=256, description="torch threads per trial (0 = cores / parallel)")
    metric: MetricName = Field(  # promote.metric's choices
        AUTO_METRIC, description="the distance trials are ranked by (auto: as promote.metric = auto picks it)"
    )
    workspace: str = Field(
        "", max_length=300, description="the workspace the sweep is written for, in words (named when a trial is "
        "refused on another)"
    )  # fmt: skip

    _keys = field_validator("base")(classmethod(lambda cls, v: _check_keys(v)))


class SweepError(ConfigError):
    """The sweep (its file, a trial's settings, the workspace) is refused before anything runs; the message is one
    paragraph naming the file, the trial and the key, and what to do."""


def one_paragraph(text: str) -> str:
    """A message as one paragraph: a ConfigError's "SOURCE: N invalid setting(s); ...\\n  - A\\n  - B" becomes
    "SOURCE: N invalid setting(s); ...: A; B", other line breaks spaces."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    head, items = [], []
    for ln in lines:
        (items.append(ln[2:]) if ln.startswith("- ") else head.append(ln))
    text = " ".join(head)
    return f"{text.rstrip('.:')}: {'; '.join(items)}" if items else text


@dataclass(frozen=True)
class Trial:
    name: str  # the DVC experiment's name: <sweep>-<label>-<hash of every override>
    label: str  # what differs, short: "lr_g-0.002-loss-hinge", or the trials: entry's name
    overrides: dict[str, Any]  # base + budget + the trial's own, as params.yaml keys
    own: dict[str, Any]  # the trial's own settings (what the report shows)
    budget: str = ""  # its training length with these settings: "kimg=auto, max_seconds=120"

    @property
    def key(self) -> str:
        return self.name.rsplit("-", 1)[-1]


def settings_hash(overrides: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:8]


def _slug(own: dict[str, Any]) -> str:
    text = "-".join(f"{k.split('.', 1)[1]}-{v}" for k, v in own.items()) or "base"
    text = re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.")
    return re.sub(r"\.+", ".", text)[:60].strip("-.") or "base"


def _draw(r: Range, rng: random.Random) -> float | int:
    if r.log:
        value = math.exp(rng.uniform(math.log(r.low), math.log(r.high)))
    else:
        value = rng.uniform(r.low, r.high)
    return round(value) if r.integer else float(f"{value:.4g}")


def _own_settings(search: Search) -> list[tuple[str | None, dict[str, Any]]]:
    if search.grid is not None:
        keys = list(search.grid)
        return [(None, dict(zip(keys, combo, strict=True))) for combo in itertools.product(*search.grid.values())]
    if search.trials is not None:
        return list(search.trials.items())
    rnd = search.random
    rng = random.Random(rnd.seed)
    draws = []
    for _ in range(rnd.n):
        own = {k: _draw(r, rng) for k, r in rnd.ranges.items()}
        own |= {k: rng.choice(v) for k, v in rnd.choices.items()}
        draws.append((None, own))
    return draws


def _budget(train) -> str:
    """A trial's training length: its length setting, and the time cap where there is one."""
    kimg = f"{train.kimg:g}" if isinstance(train.kimg, float) else train.kimg
    length = f"epochs={train.epochs}" if train.epochs else f"kimg={kimg}"
    return length + (f", max_seconds={train.max_seconds:g}" if train.max_seconds else "")


def plan(spec: SweepSpec, params_path: str | Path, source: str | Path | None = None) -> list[Trial]:
    """Every trial of the sweep, each validated against `params_path` by the params schema (a bad value stops
    the sweep here, naming the sweep file `source`, the trial, the key, and the workspace the sweep is written
    for). Duplicate settings (a random search drawing twice) are run once."""
    where = f"{source}" if source else f"sweep {spec.name!r}"
    try:
        load_params(params_path)
    except ConfigError as err:
        raise SweepError(f"{where}: the workspace's own settings are refused, so no trial was run: "
                         f"{one_paragraph(str(err)).replace('no stage was run', 'nothing was run')}. Fix params.yaml "
                         "first (`python -m gan check` names every setting).") from None  # fmt: skip
    trials: dict[str, Trial] = {}
    for label, own in _own_settings(spec.search):
        overrides = {**spec.base, **spec.budget.overrides(), **own}
        label = label or _slug(own)
        try:
            params = load_params(params_path, overrides)
        except ConfigError as err:
            text = one_paragraph(str(err)).replace("no stage was run", "no trial was run")
            meant = " Change the trial's settings (or params.yaml)."
            if spec.workspace:
                meant = f" This sweep file is written for {spec.workspace.rstrip('.')}: run it there, or change them."
            raise SweepError(f"{where}: trial {label!r} ({_settings(own)}) is refused on this workspace: "
                             f"{text}.{meant}") from None  # fmt: skip
        digest = settings_hash(overrides)
        trials.setdefault(digest, Trial(f"{spec.name}-{label}-{digest}", label, overrides, own, _budget(params.train)))
    return list(trials.values())


def _settings(own: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={json.dumps(v) if isinstance(v, bool) or v is None else v}" for k, v in own.items())
    return text or "the base settings"


def _format(err: ValidationError, source: str) -> str:
    problems = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            allowed = ", ".join(SweepSpec.model_fields) if len(e["loc"]) == 1 else ""
            problems.append(f"{key}: unknown key" + (f" (allowed: {allowed})" if allowed else ""))
        else:
            problems.append(f"{key} = {e.get('input')!r}: {e['msg']}")
    return (f"{source}: {err.error_count()} invalid setting(s) in the sweep file, so nothing was run: "
            f"{'; '.join(problems)}. Fix them (docs/sweeps.md lists every key of a sweep file).")  # fmt: skip


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading 1e-4 as a number (YAML 1.2) as a sweep file's author means it."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9_]+"
        r"(?:[eE][-+]?[0-9]+)?|\.inf|\.nan)$",
        re.X,
    ),  # fmt: skip
    list("-+0123456789."),
)


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file. Raises SweepError naming every bad key and value (one paragraph)."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 (a safe loader)
    except FileNotFoundError:
        raise SweepError(f"{path}: no such sweep file, so nothing was run. Give the path of one (this project's "
                         "are in sweeps/).") from None  # fmt: skip
    except (OSError, UnicodeDecodeError) as err:
        why = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise SweepError(f"{path}: cannot read it as a sweep file ({why}), so nothing was run. Give the path of a "
                         "YAML sweep file (this project's are in sweeps/).") from None  # fmt: skip
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = getattr(err, "problem", None) or " ".join(str(err).split())
        raise SweepError(f"{path}: not valid YAML ({where}{what}), so nothing was run. Fix the file there.") from None
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: expected a mapping (name, base, search, budget, ...), got {type(raw).__name__}, so "
                         "nothing was run. docs/sweeps.md shows a sweep file.")  # fmt: skip
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as err:
        raise SweepError(_format(err, str(path))) from None
