"""The run report (gan/outputs/report.py): the Markdown the flow publishes as `gan-report`, without Prefect."""

from __future__ import annotations

import base64

from gan.core.paths import Paths
from gan.outputs.report import report_markdown

PNG = b"\x89PNG\r\n\x1a\n-not-a-real-picture"
CANDIDATE = {"fid_classifier": 12.5, "fid_classifier_floor": 0.75, "classes_covered": 9, "classes_covered_floor": 10,
             "num_classes": 10, "copy_ct_judge": -0.5, "copy_ct_judge_floor": 0.25, "copying_judge": False,
             "copy_fraction_judge": 0.02, "copy_fraction_judge_floor": 0.01}  # fmt: skip


def gate(promote: bool, champion: dict | None = None) -> dict:
    decision = {"promote": promote, "reason": "the reason given", "metric": "fid_classifier"}
    return {"candidate": CANDIDATE, "champion": champion, "decision": decision}


def test_report_shows_the_decision_the_metric_beside_champion_and_floor_and_the_files(tmp_path):
    paths = Paths(tmp_path)
    paths.samples.mkdir(parents=True)
    paths.grid.write_bytes(PNG)
    md = report_markdown(tmp_path, gate(False, {"fid_classifier": 11.0, "classes_covered": 10}), "commit `abc`",
                         "| metric | diff |")  # fmt: skip
    assert "**Candidate not promoted.** the reason given" in md
    assert "| | fid_classifier | classes covered |" in md
    assert "| this run | 12.5 | 9/10 |" in md and "| champion | 11.0 | 10/10 |" in md
    assert "| real-vs-real floor | 0.75 | 10/10 |" in md
    assert "**Recorded:** commit `abc`" in md and "## Changes since the previous champion\n\n| metric | diff |" in md
    assert f"(data:image/png;base64,{base64.b64encode(PNG).decode()})" in md  # inlined: renders offline
    assert f"- `{paths.samples / 'MODEL_CARD.md'}`" in md and f"- champion: `{paths.champion}`" in md
    assert f"- run history: `{paths.history}`" in md
    # Pictures only where they were drawn: no pairs, class grid or curves here.
    assert "memorisation check" not in md and "Samples by class" not in md and "Training curves" not in md


def test_report_without_champion_or_class_metrics_and_with_every_picture(tmp_path):
    paths = Paths(tmp_path)
    paths.samples.mkdir(parents=True)
    for p in (paths.grid, paths.closest_pairs_picture, paths.class_grid, paths.training_curves):
        p.write_bytes(PNG)
    cand = {k: v for k, v in CANDIDATE.items() if not k.startswith(("classes_", "num_"))}
    md = report_markdown(tmp_path, {**gate(True), "candidate": cand})
    assert "**Candidate PROMOTED to champion.**" in md and "| champion | — |" in md and "classes covered" not in md
    assert "**Copying: no**" in md and "C_T -0.50 (unseen real images: 0.25" in md
    assert "likely copies 2.00% (unseen real images: 1.00%)" in md
    assert md.count("data:image/png;base64,") == 4 and "Recorded" not in md and "Changes since" not in md
