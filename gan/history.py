"""The history of pipeline runs: one CSV row per run, readable with pandas."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gan import atomic

# Columns of histories written before promote.metric existed (the metric was always fid_classifier).
_RENAMED = {"fid_classifier": "value", "fid_classifier_floor": "floor", "champion_fd": "champion_value"}


def append_run(path: str | Path, row: dict) -> pd.DataFrame:
    path = Path(path)
    old = pd.read_csv(path) if path.exists() and path.stat().st_size else pd.DataFrame()
    if "fid_classifier" in old.columns and "metric" not in old.columns:
        old = old.rename(columns=_RENAMED).assign(metric="fid_classifier")
    df = pd.concat([old, pd.DataFrame([row])], ignore_index=True)
    with atomic.atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return df
