"""The champion gate and the history row as plain functions (gan/lifecycle/gate.py): no Prefect, no DVC."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from gan.core.config import load_params
from gan.lifecycle import gate
from gan.lifecycle.champion import FILES, read_record

from .conftest import REPO

CANDIDATE = {"fid_judge": 10.0, "fid_judge_floor": 0.5, "kid_judge": 0.01, "n": 64}
LOG = logging.getLogger("test-gate")


@pytest.fixture
def ws(tmp_path, monkeypatch):
    """A workspace with a candidate's files, its metrics.json and the prepared data's summary."""
    (tmp_path / "data/metrics").mkdir(parents=True)
    (tmp_path / "data/metrics/metrics.json").write_text(json.dumps(CANDIDATE))
    (tmp_path / "data/prepared").mkdir(parents=True)
    splits = {s: {"sha256_images": s * 8} for s in ("train", "test")}
    summary = {"dataset": "folder", "shape": [1, 8, 8], "classes": [], "splits": splits}
    (tmp_path / "data/prepared/summary.json").write_text(json.dumps(summary))
    for f in ("data/models/generator.pt", *(f"data/samples/{f}" for f in FILES if f != "generator.pt")):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text(f)
    return tmp_path


@pytest.fixture
def dvc_calls(monkeypatch) -> list[list[str]]:
    """The gate's `dvc` commands, recorded instead of run; every .dvc file counts as current."""
    calls: list[list[str]] = []
    monkeypatch.setattr(gate.dvcrun, "dvc", lambda args, repo: calls.append(args))
    monkeypatch.setattr(gate.dvcrun, "is_current", lambda target, repo: True)
    return calls


def params(*overrides: str):
    return load_params(REPO / "params.yaml", ["promote.metric=fid_judge", *overrides])


def test_no_champion_yet_the_candidate_is_promoted_and_nothing_is_rescored(ws, dvc_calls, monkeypatch):
    monkeypatch.setattr(gate, "rescore_champion", lambda *a, **k: pytest.fail("no champion to re-score"))
    out = gate.run_gate(ws, params(), "run-1", LOG)
    assert out["decision"]["promote"] and out["champion"] is None and out["previous_record"] is None
    record = read_record(ws / "data/models/champion")
    assert (record["flow_run_id"], record["metrics"], record["dataset"]) == ("run-1", CANDIDATE, "folder")
    assert (ws / "data/models/champion/MODEL_CARD.md").read_text() == "data/samples/MODEL_CARD.md"
    assert dvc_calls == [["add", "data/models/champion"]]


@pytest.mark.parametrize(("champion_fid", "promoted"), [(20.0, True), (10.5, False)])
def test_the_champion_is_rescored_and_compared_with_the_margin(ws, dvc_calls, monkeypatch, champion_fid, promoted):
    gate.run_gate(ws, params(), "run-1", LOG)
    seen = {}

    def rescore(cfg, generator_path, paths, classes, device="auto", features=None):
        seen["generator"] = generator_path
        return {"fid_judge": champion_fid}

    monkeypatch.setattr(gate, "rescore_champion", rescore)
    monkeypatch.setattr("gan.training.models.generator_shape", lambda path: (1, 8, 8))
    out = gate.run_gate(ws, params("promote.margin=0.1"), "run-2", LOG)
    assert seen["generator"] == ws / "data/models/champion/generator.pt"
    assert out["champion"] == {"fid_judge": champion_fid} and out["decision"]["promote"] is promoted
    assert read_record(ws / "data/models/champion")["flow_run_id"] == ("run-2" if promoted else "run-1")
    assert not list((ws / "data/metrics").glob(".*")), "re-scoring writes nothing beside metrics.json"


def test_a_champion_of_another_image_shape_is_not_rescored(ws, dvc_calls, monkeypatch):
    gate.run_gate(ws, params(), "run-1", LOG)
    monkeypatch.setattr(gate, "rescore_champion", lambda *a, **k: pytest.fail("not comparable: not re-scored"))
    monkeypatch.setattr("gan.training.models.generator_shape", lambda path: (3, 8, 8))
    out = gate.run_gate(ws, params(), "run-2", LOG)
    assert out["champion"] is None and out["previous_record"] is None and out["decision"]["promote"]


def test_history_row_holds_the_metric_its_floor_the_champion_and_the_trained_length():
    p = params()
    dec = {"metric": "fid_judge", "candidate_value": 10.0, "champion_value": 12.0, "promote": True}
    result = {"candidate": {**CANDIDATE, "classes_covered": 9, "class_kl": 0.1}, "decision": dec,
              "flow_run_id": "run-1"}  # fmt: skip
    row = gate.history_row(result, p, ["train", "evaluate"], {"epochs": 0.5, "kept": {"step": 40},
                                                               "stopped_by_time_budget": True})  # fmt: skip
    assert (row["metric"], row["value"], row["floor"], row["champion_value"]) == ("fid_judge", 10.0, 0.5, 12.0)
    assert (row["epochs"], row["kept_step"], row["stopped_by_time_budget"]) == (0.5, 40, True)
    assert (row["classes_covered"], row["class_kl"], row["promoted"]) == (9, 0.1, True)
    assert (row["stages_run"], row["flow_run_id"], row["dataset"]) == ("train evaluate", "run-1", p.data.dataset)
    no_classes = gate.history_row({**result, "candidate": CANDIDATE}, p, ["evaluate"], {})
    assert no_classes["classes_covered"] is None and no_classes["epochs"] is None


# --- the paired decision on a real workspace: real generators, extractors and reference ---


def _evaluate_as_candidate(ws, p, generator) -> dict:
    """`generator` as this run's model: saved where train writes it and scored by the evaluate stage's function."""
    from gan.core.paths import Paths
    from gan.evaluation.evaluate import evaluate
    from gan.evaluation.features import ExtractorFiles
    from gan.training.models import save_generator

    paths = Paths(ws)
    save_generator(paths.generator, generator, p.model, {"test": "candidate"})
    files = ExtractorFiles(paths.classifier, paths.judge, p.evaluate.inception_weights)
    return evaluate(p.evaluate, paths.generator, files, paths.reference, paths.metrics, device="cpu")


@pytest.mark.slow
def test_the_gate_promotes_only_a_difference_beyond_the_noise_both_ways(completed_run, monkeypatch):
    """The completed run's champion against (1) itself: no significant difference, kept; (2) an untrained G:
    significantly worse, kept; then, with the untrained G as the champion, (3) the trained G: promoted beyond the
    noise. Each decision carries the paired difference and its interval, and the history row records them."""
    from gan.core.paths import Paths
    from gan.training.models import build_generator, load_generator

    ws, _, _ = completed_run
    monkeypatch.chdir(ws)
    p = load_params(ws / "params.yaml", ["promote.bootstrap=40"])
    paths = Paths(ws)
    trained, _ = load_generator(paths.generator)
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    untrained = build_generator(p.model, tuple(trained.image_shape), trained.num_classes)

    from gan.evaluation import evaluate as ev

    asked: list[int] = []  # the images drawn of each generator
    draw = ev.generated_images
    monkeypatch.setattr(
        ev, "generated_images", lambda g, cfg, n, device="auto": asked.append(n) or draw(g, cfg, n, device)
    )
    same = gate.run_gate(ws, p, "same", LOG)["decision"]
    # the paired comparison: PAIRED_SAMPLES images of the champion and of the candidate (against training images)
    assert asked.count(gate.PAIRED_SAMPLES) == 2, asked
    assert not same["promote"] and same["reason"].startswith("no significant difference"), same
    assert (
        same["difference"] == pytest.approx(0.0, abs=1e-9) and same["difference_ci"][0] < 0 < same["difference_ci"][1]
    )

    _evaluate_as_candidate(ws, p, untrained)
    worse = gate.run_gate(ws, p, "worse", LOG)
    dec = worse["decision"]
    assert not dec["promote"] and dec["reason"].startswith("significantly worse"), dec
    assert 0 < dec["difference_ci"][0] < dec["difference"] < dec["difference_ci"][1]
    assert dec["candidate_value"] > dec["champion_value"]  # the evaluate stage's FID agrees (its own n and images)
    row = gate.history_row(worse, p, ["evaluate"], {})
    assert (row["difference"], row["difference_low"], row["difference_high"]) == (
        dec["difference"], *dec["difference_ci"]
    )  # fmt: skip

    shutil.rmtree(ws / "data/models/champion")  # the untrained G becomes the champion ...
    assert gate.run_gate(ws, p, "untrained", LOG)["decision"]["promote"]
    _evaluate_as_candidate(ws, p, trained)  # ... and the trained one challenges it
    better = gate.run_gate(ws, p, "better", LOG)["decision"]
    assert better["promote"] and "beyond the noise" in better["reason"], better
    assert better["difference_ci"][1] < 0
