"""data/history/runs.csv: one row per run; histories from before promote.metric keep their numbers."""

from __future__ import annotations

import pandas as pd

from gan.lifecycle.history import append_run


def test_an_old_history_is_carried_over_into_the_new_columns(tmp_path):
    path = tmp_path / "runs.csv"
    pd.DataFrame([{"flow_run_id": "a", "fid_classifier": 17.0, "fid_classifier_floor": 0.2, "champion_fd": None,
                   "promoted": True}]).to_csv(path, index=False)  # fmt: skip
    df = append_run(path, {"flow_run_id": "b", "metric": "fid_inception", "value": 30.0, "floor": 1.0,
                           "champion_value": 31.0, "promoted": False})  # fmt: skip
    assert "fid_classifier" not in df.columns and "champion_fd" not in df.columns
    assert df[["metric", "value", "floor"]].values.tolist() == [["fid_classifier", 17.0, 0.2],
                                                                ["fid_inception", 30.0, 1.0]]  # fmt: skip
    assert pd.read_csv(path).equals(df)
