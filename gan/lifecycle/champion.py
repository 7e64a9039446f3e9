"""Champion / challenger: promote a candidate generator only when it is better.

The champion lives in `data/models/champion/` (generator, TorchScript, metrics,
model card, and `record.json`: which run and which data version produced it).
Before comparing, the caller re-scores the champion with the *current*
evaluation setup, so both numbers come from the same classifier, data and n.
The number compared is `promote.metric` (a distance in metrics.json: lower is better).

A promotion swaps folders with two renames (champion -> `.champion.old`, staging ->
champion). A crash between them leaves no champion folder; `recover` (run by
`read_record` and `promote`) puts the old one back, so a reader always finds a
complete champion: the old one or the new one, never none and never a mix. A reader that
holds no workspace lock (`gan sample`) must not move folders; it reads `current` instead,
which names the same champion without changing anything.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import get_args

from gan.core import metric_keys as keys
from gan.core.config import AUTO_METRIC, ConfigError, PromoteConfig, auto_metric
from gan.evaluation.metrics import PairedDifference

RECORD = "record.json"
FILES = ("generator.pt", "generator.torchscript.pt", "metrics.json", "MODEL_CARD.md", "grid.png")
METRICS = tuple(m for m in get_args(PromoteConfig.model_fields["metric"].annotation) if m != AUTO_METRIC)
DEFAULT_METRIC = PromoteConfig().metric
_STAGING = "staging-"  # promote's temp folder: .<champion>.staging-XXXX beside the champion


class MetricMissing(ConfigError):
    """promote.metric names a distance that metrics.json does not have."""


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    metric: str
    candidate_value: float
    champion_value: float | None
    margin: float
    # The paired comparison with the re-scored champion (candidate minus champion on the same real images; negative:
    # the candidate is closer to them) and its interval at `confidence`; None where there was no champion to compare.
    difference: float | None = None
    difference_ci: tuple[float, float] | None = None
    confidence: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def metric_value(metrics: dict, metric: str, whose: str = "metrics.json") -> float:
    """`metrics[metric]`, or an error naming the key, the distances present and the setting to change."""
    if metric not in metrics:
        present = [k for k in METRICS if k in metrics]
        raise MetricMissing(
            f"promote.metric = {metric!r}: {whose} has no such key (distances it has: {', '.join(present) or 'none'}). "
            f"Set promote.metric in params.yaml to one of those, or add {keys.extractor_of(metric)!r} to "
            "evaluate.extractors."
        )
    return float(metrics[metric])


def decide(
    candidate: dict, champion: dict | None, margin: float, require_all_classes: bool = True,
    metric: str = DEFAULT_METRIC, require_sound: bool = True, paired: PairedDifference | None = None,
) -> Decision:  # fmt: skip
    """`candidate`/`champion`: metrics.json dicts scored the same way. `margin`: relative improvement needed.
    `metric` = auto: fid_classifier where the candidate has it (labelled data), else fid_judge.
    `paired`: candidate minus champion in `metric` on the same real images, with its bootstrap interval
    (`gan.evaluation.metrics.paired_bootstrap`). With it, a challenger is promoted only when the whole interval lies
    below 0 (better beyond the noise) and it beats the champion by the margin; without it, by the margin alone.

    The class-coverage rule applies only where the classifier's class metrics exist (`classes_covered`).
    """
    if metric == AUTO_METRIC:
        metric = auto_metric(candidate)
    value = metric_value(candidate, metric, "the candidate's metrics.json")
    champ = None if champion is None else metric_value(champion, metric, "the re-scored champion's metrics")

    def verdict(promote: bool, reason: str) -> Decision:
        if paired is None:
            return Decision(promote, reason, metric, value, champ, margin)
        return Decision(promote, reason, metric, value, champ, margin, paired.estimate, (paired.low, paired.high),
                        paired.confidence)  # fmt: skip

    extractor = keys.extractor_of(metric)
    unsound = candidate.get(keys.separates(extractor)) is False
    if unsound and require_sound:
        why = candidate.get(keys.soundness(extractor), {}).get("reason", "")
        return verdict(False, f"{metric} is not able to separate on this data: the {extractor} scores degraded real "
                              f"images like real ones ({why}); a model it ranks cannot be trusted, so none is "
                              "promoted (more images, or a longer classifier/judge training, would help; "
                              "promote.require_sound: false promotes anyway)")  # fmt: skip
    caveat = f" ({metric} cannot separate on this data; promote.require_sound is off)" if unsound else ""
    if not math.isfinite(value):
        return verdict(False, f"candidate {metric} is {value}")
    covered, total = candidate.get(keys.CLASSES_COVERED), candidate.get(keys.NUM_CLASSES)
    # What real images achieve on the same test (the floor) is the bar: a class the real test split barely has
    # cannot be demanded of a generator.
    needed = candidate.get(keys.floor(keys.CLASSES_COVERED), total)
    if require_all_classes and covered is not None and covered < needed:
        return verdict(
            False, f"candidate covers only {covered}/{total} classes, real images {needed}/{total} (mode collapse)"
        )
    if champ is None:
        return verdict(True, "no champion yet: the first successful run becomes the champion" + caveat)
    if not math.isfinite(champ):
        return verdict(True, f"the champion's {metric} is {champ}: a finite candidate replaces it" + caveat)
    needed = champ * (1 - margin)
    if paired is not None:
        diff = (f"difference {paired.estimate:+.4g}, {paired.confidence:.0%} interval [{paired.low:+.4g}, "
                f"{paired.high:+.4g}] (paired bootstrap, {paired.rounds} rounds on the same real images)")  # fmt: skip
        if paired.high >= 0:
            worse = paired.low > 0
            return verdict(False, f"{'significantly worse' if worse else 'no significant difference'}: champion kept "
                                  f"({metric} {value:.4g} against the champion's {champ:.4g}; {diff})")  # fmt: skip
        if value >= needed:
            return verdict(False, f"better beyond the noise but by less than {margin:.0%}: champion kept "
                                  f"({metric} {value:.4g} against the champion's {champ:.4g}, needs < {needed:.4g}; "
                                  f"{diff})")  # fmt: skip
        return verdict(True, f"{metric} {value:.4g} beats the champion's {champ:.4g} beyond the noise and by more than "
                             f"{margin:.0%} ({diff}){caveat}")  # fmt: skip
    if value < needed:
        return verdict(True, f"{metric} {value:.4g} beats the champion's {champ:.4g} by more than {margin:.0%}{caveat}")
    return verdict(
        False, f"{metric} {value:.4g} does not beat the champion's {champ:.4g} by {margin:.0%} (needs < {needed:.4g})"
    )


def summary_lines(decision: Decision, candidate: dict) -> list[str]:
    """A few lines for a person: the metric beside its floor and the champion's value, classes, the decision."""
    m = decision.metric
    floor = candidate.get(keys.floor(m))
    champ = "none yet" if decision.champion_value is None else f"{decision.champion_value:.4g}"
    lines = [f"{m}: {decision.candidate_value:.4g} (real-vs-real floor {_fmt(floor)}; champion {champ})"]
    if keys.CLASSES_COVERED in candidate:
        k = candidate[keys.NUM_CLASSES]
        lines.append(f"classes covered: {candidate[keys.CLASSES_COVERED]}/{k} "
                     f"(floor {candidate.get(keys.floor(keys.CLASSES_COVERED), '?')}/{k})")  # fmt: skip
    lines.append(f"{'PROMOTED to champion' if decision.promote else 'not promoted'}: {decision.reason}")
    return lines


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, int | float) else "—"


def _old(champion_dir: Path) -> Path:
    return champion_dir.with_name(f".{champion_dir.name}.old")


def recover(champion_dir: str | Path) -> None:
    """Finish or undo a promotion that a crash interrupted; a no-op when none was.

    No champion folder but `.champion.old` present: the crash fell between the two renames, so
    the old champion goes back. Otherwise `.champion.old` and staging folders are leftovers.
    Call it under the workspace lock (the flow holds it): it cannot tell a live staging folder
    from a dead one.
    """
    champion_dir = Path(champion_dir)
    old = _old(champion_dir)
    if not champion_dir.exists() and old.is_dir():
        os.replace(old, champion_dir)
    shutil.rmtree(old, ignore_errors=True)
    for stale in champion_dir.parent.glob(f".{champion_dir.name}.{_STAGING}*"):
        shutil.rmtree(stale, ignore_errors=True)


def current(champion_dir: str | Path) -> Path:
    """The folder that holds the champion now, without moving anything (no lock needed): `champion_dir`, or
    during or after an interrupted promotion the old champion (what `recover` would put back)."""
    champion_dir = Path(champion_dir)
    old = _old(champion_dir)
    return old if not champion_dir.exists() and old.is_dir() else champion_dir


def read_record(champion_dir: str | Path) -> dict | None:
    """The champion's record.json (None: no champion yet), after `recover`."""
    recover(champion_dir)
    path = Path(champion_dir) / RECORD
    return json.loads(path.read_text()) if path.exists() else None


def promote(sources: dict[str, Path], champion_dir: str | Path, record: dict) -> Path:
    """Replace the champion with the candidate's files: a reader sees the old or the new one, never a mix."""
    champion_dir = Path(champion_dir)
    champion_dir.parent.mkdir(parents=True, exist_ok=True)
    recover(champion_dir)
    staging = Path(tempfile.mkdtemp(prefix=f".{champion_dir.name}.{_STAGING}", dir=champion_dir.parent))
    try:
        for name, src in sources.items():
            shutil.copy2(src, staging / name)
        (staging / RECORD).write_text(json.dumps(record, indent=2) + "\n")
        _fsync_tree(staging)
        old = _old(champion_dir)
        if champion_dir.exists():
            os.replace(champion_dir, old)  # from here until the next rename, recover() undoes the swap
        os.replace(staging, champion_dir)
        _fsync_dir(champion_dir.parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        recover(champion_dir)  # a failure between the renames: the old champion goes back at once
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return champion_dir


def _fsync_tree(folder: Path) -> None:
    for f in folder.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
