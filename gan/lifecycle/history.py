"""The history of pipeline runs: one CSV row per run, readable with pandas."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gan.core import atomic
from gan.core import metric_keys as keys

# Columns of histories written before promote.metric existed (the metric was always fid_classifier).
_LEGACY_METRIC = keys.fid("classifier")
_RENAMED = {_LEGACY_METRIC: "value", keys.floor(_LEGACY_METRIC): "floor", "champion_fd": "champion_value"}


def _read(path: Path) -> pd.DataFrame:
    old = pd.read_csv(path) if path.exists() and path.stat().st_size else pd.DataFrame()
    if _LEGACY_METRIC in old.columns and "metric" not in old.columns:
        old = old.rename(columns=_RENAMED).assign(metric=_LEGACY_METRIC)
    return old


def read_runs(path: str | Path) -> list[dict]:
    """The recorded runs, oldest first (empty cells are NaN, as pandas reads them)."""
    return _read(Path(path)).to_dict("records")


def append_run(path: str | Path, row: dict) -> pd.DataFrame:
    path = Path(path)
    df = pd.concat([_read(path), pd.DataFrame([row])], ignore_index=True)
    with atomic.atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return df
