"""The history of pipeline runs: one CSV row per run, readable with pandas."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gan import atomic


def append_run(path: str | Path, row: dict) -> pd.DataFrame:
    path = Path(path)
    old = pd.read_csv(path) if path.exists() and path.stat().st_size else pd.DataFrame()
    df = pd.concat([old, pd.DataFrame([row])], ignore_index=True)
    with atomic.atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return df
