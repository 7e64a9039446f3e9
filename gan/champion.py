"""Champion / challenger: promote a candidate generator only when it is better.

The champion lives in `data/models/champion/` (generator, TorchScript, metrics,
model card, and `record.json`: which run and which data version produced it).
Before comparing, the caller re-scores the champion with the *current*
evaluation setup, so both numbers come from the same classifier, data and n.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

RECORD = "record.json"
FILES = ("generator.pt", "generator.torchscript.pt", "metrics.json", "MODEL_CARD.md", "grid.png")


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    candidate_fd: float
    champion_fd: float | None
    margin: float

    def as_dict(self) -> dict:
        return asdict(self)


def decide(candidate: dict, champion: dict | None, margin: float, require_all_classes: bool = True) -> Decision:
    """`candidate`/`champion`: metrics.json dicts scored the same way. `margin`: relative improvement needed."""
    fd = float(candidate["fid_classifier"])
    champ_fd = None if champion is None else float(champion["fid_classifier"])
    if not math.isfinite(fd):
        return Decision(False, f"candidate distance is {fd}", fd, champ_fd, margin)
    covered, total = candidate.get("classes_covered"), candidate.get("num_classes")
    if require_all_classes and covered != total:
        return Decision(False, f"candidate covers only {covered}/{total} classes (mode collapse)", fd, champ_fd, margin)
    if champion is None:
        return Decision(True, "no champion yet: the first successful run becomes the champion", fd, None, margin)
    needed = champ_fd * (1 - margin)
    if fd < needed:
        return Decision(
            True,
            f"distance {fd:.4g} beats the champion's {champ_fd:.4g} by more than {margin:.0%}",
            fd,
            champ_fd,
            margin,
        )
    return Decision(
        False,
        f"distance {fd:.4g} does not beat the champion's {champ_fd:.4g} by {margin:.0%} (needs < {needed:.4g})",
        fd,
        champ_fd,
        margin,
    )


def read_record(champion_dir: str | Path) -> dict | None:
    path = Path(champion_dir) / RECORD
    return json.loads(path.read_text()) if path.exists() else None


def promote(sources: dict[str, Path], champion_dir: str | Path, record: dict) -> Path:
    """Replace the champion with the candidate's files in one rename: never a half-written champion."""
    champion_dir = Path(champion_dir)
    champion_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".champion.", dir=champion_dir.parent))
    try:
        for name, src in sources.items():
            shutil.copy2(src, staging / name)
        (staging / RECORD).write_text(json.dumps(record, indent=2) + "\n")
        old = None
        if champion_dir.exists():
            old = champion_dir.with_name(f".{champion_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(champion_dir, old)
        os.replace(staging, champion_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return champion_dir
