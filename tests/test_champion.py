"""Champion / challenger: the decision rule, a crash-safe swap, and an Inception-only gate."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from gan.core.config import ConfigError, apply_overrides, load_params
from gan.lifecycle import champion
from gan.lifecycle.champion import FILES, RECORD, MetricMissing, decide, promote, read_record, summary_lines

from .conftest import REPO, run

CLASSES = 10


def metrics(fd: float = 10.0, covered: int | None = CLASSES, metric: str = "fid_classifier", **extra) -> dict:
    """A metrics.json as evaluate writes it; covered=None: no classifier, so no class metrics."""
    m = {metric: fd, f"{metric}_floor": 1.0, **extra}
    if covered is not None:
        m.update(num_classes=CLASSES, classes_covered=covered, classes_covered_floor=CLASSES)
    return m


# ---- the decision rule


def paired(estimate: float, low: float, high: float):
    from gan.evaluation.metrics import PairedDifference

    return PairedDifference(estimate, low, high, 0.95, 200)


def test_a_paired_difference_below_zero_beyond_the_noise_promotes():
    d = decide(metrics(8.0), metrics(10.0), 0.02, paired=paired(-2.0, -2.6, -1.4))
    assert d.promote and "beyond the noise" in d.reason and "[-2.6, -1.4]" in d.reason
    assert (d.difference, d.difference_ci, d.confidence) == (-2.0, (-2.6, -1.4), 0.95)


@pytest.mark.parametrize(("interval", "words"), [((-2.6, 0.3), "no significant difference"),
                                                  ((0.2, 1.9), "significantly worse")])  # fmt: skip
def test_an_interval_that_reaches_zero_keeps_the_champion_whatever_the_point_values(interval, words):
    # 8.0 against 10.0 beats the margin by far, but the interval says the difference may be noise (or worse).
    d = decide(metrics(8.0), metrics(10.0), 0.02, paired=paired(-1.0, *interval))
    assert not d.promote and d.reason.startswith(f"{words}: champion kept") and "paired bootstrap" in d.reason
    lines = summary_lines(d, metrics(8.0))
    assert any("not promoted" in line and words in line for line in lines)


def test_better_beyond_the_noise_but_within_the_margin_is_kept():
    d = decide(metrics(9.9), metrics(10.0), 0.02, paired=paired(-0.1, -0.15, -0.05))
    assert not d.promote and "by less than 2%" in d.reason


def test_first_run_becomes_the_champion():
    d = decide(metrics(50.0), None, 0.02)
    assert d.promote and d.champion_value is None and "no champion yet" in d.reason


def test_margin_a_better_model_replaces_the_champion_a_slightly_better_one_does_not():
    champ = metrics(10.0)
    assert decide(metrics(9.7), champ, 0.02).promote  # 3 % better
    slightly = decide(metrics(9.9), champ, 0.02)  # 1 % better: not enough
    assert not slightly.promote and "needs < 9.8" in slightly.reason
    assert not decide(metrics(10.5), champ, 0.02).promote  # worse
    assert decide(metrics(9.9), champ, 0.0).promote  # no margin: any improvement
    d = decide(metrics(9.7), champ, 0.02)
    assert (d.metric, d.candidate_value, d.champion_value, d.margin) == ("fid_classifier", 9.7, 10.0, 0.02)


def test_class_rule_refuses_a_collapsed_candidate_unless_switched_off():
    collapsed = metrics(1.0, covered=7)  # far better distance, three classes missing
    d = decide(collapsed, metrics(10.0), 0.02)
    assert not d.promote and "7/10 classes" in d.reason
    assert not decide(collapsed, None, 0.02).promote  # not even as the first champion
    assert decide(collapsed, metrics(10.0), 0.02, require_all_classes=False).promote


def test_class_rule_asks_for_what_real_images_cover_not_more():
    """A class the real test split barely has (or a weak classifier never predicts) cannot be demanded."""
    real_cover_7 = {**metrics(1.0, covered=7), "classes_covered_floor": 7}
    assert decide(real_cover_7, None, 0.02).promote
    below = {**metrics(1.0, covered=6), "classes_covered_floor": 7}
    d = decide(below, None, 0.02)
    assert not d.promote and "6/10 classes, real images 7/10" in d.reason


def test_non_finite_candidate_never_promoted_non_finite_champion_replaced():
    for bad in (math.nan, math.inf):
        assert not decide(metrics(bad), None, 0.02).promote
        assert not decide(metrics(bad), metrics(10.0), 0.02).promote
    d = decide(metrics(10.0), metrics(math.nan), 0.02)
    assert d.promote and "nan" in d.reason


def test_configured_metric_is_compared_and_class_rule_needs_class_metrics():
    """Inception only: no fid_classifier, no classes_covered (what crashed the flow before promote.metric)."""
    cand = metrics(20.0, covered=None, metric="fid_inception", kid_inception=0.01)
    champ = metrics(30.0, covered=None, metric="fid_inception", kid_inception=0.02)
    d = decide(cand, champ, 0.02, require_all_classes=True, metric="fid_inception")
    assert d.promote and (d.metric, d.candidate_value, d.champion_value) == ("fid_inception", 20.0, 30.0)
    assert decide(cand, champ, 0.02, metric="kid_inception").promote


def test_absent_metric_is_a_clear_error_naming_key_keys_present_and_setting():
    cand = metrics(20.0, covered=None, metric="fid_inception", kid_inception=0.01)
    with pytest.raises(MetricMissing) as info:
        decide(cand, None, 0.02, metric="fid_classifier")
    msg = str(info.value)
    assert "'fid_classifier'" in msg and "fid_inception, kid_inception" in msg and "promote.metric" in msg
    assert isinstance(info.value, ConfigError)  # the flow exits 2 on it, like any bad setting


def test_auto_metric_is_the_classifiers_fid_with_labels_and_the_judges_without():
    labelled = metrics(20.0, fid_judge=5.0, fid_judge_floor=0.5)
    assert decide(labelled, None, 0.02).metric == "fid_classifier"  # the default promote.metric is auto
    unlabeled = metrics(5.0, covered=None, metric="fid_judge")
    d = decide(unlabeled, metrics(9.0, covered=None, metric="fid_judge"), 0.02, metric="auto")
    assert d.promote and (d.metric, d.candidate_value, d.champion_value) == ("fid_judge", 5.0, 9.0)
    with pytest.raises(MetricMissing, match="'fid_judge'"):  # neither distance: a clear error, not a guess
        decide(metrics(1.0, covered=None, metric="fid_inception"), None, 0.02)


def test_promote_metric_is_validated_by_the_schema(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("promote:\n  metric: fid_resnet\n")
    with pytest.raises(ConfigError, match=r"promote.metric = 'fid_resnet'.*'fid_classifier'"):
        load_params(p)
    # The metric's extractor must be configured: caught by the schema, so by every entry point before any stage.
    p.write_text("evaluate:\n  extractors: [inception]\n")
    with pytest.raises(ConfigError, match=r"'auto' needs the 'classifier' or 'judge' extractor.*fid_inception"):
        load_params(p)
    with pytest.raises(ConfigError, match=r"'fid_judge' needs the 'judge' extractor.*fid_inception, kid_inception"):
        load_params(p, ["promote.metric=fid_judge"])
    load_params(p, ["promote.metric=kid_inception"])
    proc = subprocess.run([sys.executable, "-m", "gan", "check", "--params", str(p)], capture_output=True, text=True)
    assert proc.returncode == 2 and "promote.metric = 'auto' needs the 'classifier' or 'judge'" in proc.stderr


def test_summary_lines_show_metric_floor_champion_and_decision():
    cand = metrics(9.5, covered=9, class_kl=0.1)
    lines = summary_lines(decide(cand, metrics(10.0), 0.02, require_all_classes=False), cand)
    assert lines == [
        "fid_classifier: 9.5 (real-vs-real floor 1; champion 10)",
        "classes covered: 9/10 (floor 10/10)",
        "PROMOTED to champion: fid_classifier 9.5 beats the champion's 10 by more than 2%",
    ]
    inception = metrics(3.25, covered=None, metric="fid_inception")
    lines = summary_lines(decide(inception, None, 0.02, metric="fid_inception"), inception)
    assert lines[0] == "fid_inception: 3.25 (real-vs-real floor 1; champion none yet)" and len(lines) == 2


# ---- the swap survives a crash at any step


def version_files(tmp: Path, tag: str) -> dict[str, Path]:
    src = tmp / f"src-{tag}"
    src.mkdir()
    for name in FILES:
        (src / name).write_text(f"{tag}:{name}")
    return {name: src / name for name in FILES}


def champion_version(champ_dir: Path) -> str | None:
    """The version a reader sees: checks the champion is complete and of one version, never a mix."""
    record = read_record(champ_dir)
    if record is None:
        assert not champ_dir.exists()
        return None
    assert sorted(p.name for p in champ_dir.iterdir()) == sorted([*FILES, RECORD])
    assert {(champ_dir / f).read_text() for f in FILES} == {f"{record['v']}:{f}" for f in FILES}
    assert [p.name for p in champ_dir.parent.iterdir() if p.name != champ_dir.name] == [], "leftovers"
    return record["v"]


FS_STEPS = [(os, "replace"), (os, "fsync"), (shutil, "copy2"), (shutil, "rmtree"), (Path, "write_text")]


def counting(on_call):
    """Patch every file-system step promote takes so that on_call(i) runs before the i-th one."""
    count = [0]

    def wrap(fn):
        def step(*args, **kwargs):
            count[0] += 1
            on_call(count[0])
            return fn(*args, **kwargs)

        return step

    for owner, name in FS_STEPS:
        setattr(owner, name, wrap(getattr(owner, name)))
    return count


def promote_in_child(sources, champ_dir, record, crash_at: int) -> int:
    """promote() in a forked process that dies (os._exit: no cleanup, like kill -9) before step `crash_at`."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            counting(lambda i: os._exit(17) if i == crash_at else None)
            promote(sources, champ_dir, record)
        except BaseException:
            code = 1
        os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def steps_and_swap(tmp_path: Path) -> tuple[int, int]:
    """Count promote's steps on a throwaway champion, and which step puts the new one in place."""
    probe = tmp_path / "probe" / "champion"
    promote(version_files(tmp_path, "p1"), probe, {"v": "p1"})
    calls: list = []
    saved = {(o, n): getattr(o, n) for o, n in FS_STEPS}
    p2 = version_files(tmp_path, "p2")
    try:
        count = counting(lambda i: calls.append((i, probe.exists())))
        promote(p2, probe, {"v": "p2"})
    finally:
        for (o, n), fn in saved.items():
            setattr(o, n, fn)
    swap = next(i for i, exists in calls if not exists)  # the step after champion -> .champion.old
    return count[0], swap


@pytest.mark.parametrize("mode", ["kill", "exception"])
def test_a_crash_at_any_step_of_a_promotion_leaves_the_old_or_the_new_champion(tmp_path, monkeypatch, mode):
    total, swap = steps_and_swap(tmp_path)
    assert total >= 9  # 5 copies, the record, fsyncs, 2 renames, clean-ups
    v1, v2 = version_files(tmp_path, "v1"), version_files(tmp_path, "v2")
    for crash_at in range(1, total + 2):  # total + 1: no crash
        champ_dir = tmp_path / f"crash-{crash_at}" / "champion"
        promote(v1, champ_dir, {"v": "v1"})
        if mode == "kill":
            code = promote_in_child(v2, champ_dir, {"v": "v2"}, crash_at)
            assert code == (0 if crash_at > total else 17)
        else:
            with monkeypatch.context() as m:

                def fail(i, crash_at=crash_at):
                    if i == crash_at:
                        raise OSError(28, "No space left on device (simulated)")

                for owner, name in FS_STEPS:
                    m.setattr(owner, name, getattr(owner, name))  # restored when the context ends
                counting(fail)
                if crash_at <= total:
                    with pytest.raises(OSError, match="simulated"):
                        promote(v2, champ_dir, {"v": "v2"})
                else:
                    promote(v2, champ_dir, {"v": "v2"})
        seen = champion_version(champ_dir)
        assert seen in ("v1", "v2"), f"crash before step {crash_at}: no champion"
        expected = "v1" if crash_at <= swap else "v2"  # step `swap` renames the new champion into place
        assert seen == expected, f"crash before step {crash_at} of {total} (the swap is step {swap}) left {seen}"
        # The next promotion works and leaves exactly the new champion.
        promote(version_files(tmp_path, f"v3-{crash_at}"), champ_dir, {"v": f"v3-{crash_at}"})
        assert champion_version(champ_dir) == f"v3-{crash_at}"


def test_recover_puts_the_old_champion_back_and_drops_leftovers(tmp_path):
    champ_dir = tmp_path / "models" / "champion"
    promote(version_files(tmp_path, "v1"), champ_dir, {"v": "v1"})
    # A crash between the two renames, with a half-copied staging folder beside it.
    os.replace(champ_dir, champ_dir.with_name(".champion.old"))
    (tmp_path / "models" / ".champion.staging-abc").mkdir()
    (tmp_path / "models" / ".champion.staging-abc" / "generator.pt").write_text("partial")
    assert champion_version(champ_dir) == "v1"
    # A crash while deleting the replaced champion: the partial .champion.old goes.
    (tmp_path / "models" / ".champion.old").mkdir()
    (tmp_path / "models" / ".champion.old" / "grid.png").write_text("v0")
    assert champion_version(champ_dir) == "v1"
    champion.recover(tmp_path / "nothing-here" / "champion")  # no champion, nothing to recover: a no-op


# ---- the gate on an Inception-only setup


def random_inception_weights(path: Path) -> Path:
    """Random-init weights of the real FID Inception architecture (torch-fidelity's FeatureExtractorInceptionV3)."""
    from unittest import mock

    import torch
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    torch.manual_seed(0)
    with mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None), \
         mock.patch("torch.load", lambda *a, **k: {}):  # fmt: skip
        net = FeatureExtractorInceptionV3("random", ["2048"], feature_extractor_weights_path="unused")
    torch.save(net.state_dict(), path)
    return path


# n=6: the Inception forward (~0.5 s an image on a CPU) and FID's 2048-d eigenvalues (~5 s each on one core)
# dominate this test. The gate's paired bootstrap computes two FIDs a round, so it gets its fewest rounds (the default
# 200 take over half an hour here); the re-scored champion is the candidate itself, kept whatever the rounds.
INCEPTION_ONLY = ["model.arch=mlp", "train.epochs=1", "train.batch_size=32", "train.device=cpu",
                  "evaluate.extractors=[inception]", "evaluate.n_samples=6", "evaluate.batch_size=6",
                  "evaluate.bootstrap=0", "evaluate.kid_subsets=5", "evaluate.kid_subset_size=3",
                  "evaluate.prdc_samples=10", "evaluate.prdc_k=2", "promote.metric=fid_inception",
                  "promote.bootstrap=20"]  # fmt: skip


@pytest.mark.slow
def test_gate_history_and_report_on_inception_only_metrics(tmp_path, tiny_split, monkeypatch):
    """No classifier metrics at all: the gate compares fid_inception, promotes, re-scores, and reports it.

    Real code end to end (train stage, reference, evaluate, the gate's re-scoring) on the real Inception
    architecture with random weights. The extractor refuses weights whose sha256 is not the FID
    Inception's; here the expected prefix is this file's own hash (nothing else is substituted).
    """
    import gan.evaluation.features
    from flows import pipeline
    from gan.evaluation.evaluate import evaluate
    from gan.evaluation.features import ExtractorFiles
    from gan.evaluation.reference import build_reference
    from gan.lifecycle import dvcrun
    from gan.lifecycle.gate import history_row, run_gate
    from gan.outputs.report import report_markdown

    ws = tmp_path / "ws"
    weights = random_inception_weights(tmp_path / "random-inception.pth")
    raw = apply_overrides(yaml.safe_load((REPO / "params.yaml").read_text()),
                          [*INCEPTION_ONLY, f"evaluate.inception_weights={weights}"])  # fmt: skip
    (ws / "data/prepared").mkdir(parents=True)
    (ws / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(ws / "params.yaml")
    with np.load(tiny_split) as z:
        images, labels = z["images"], z["labels"]
    prepared = ws / "data/prepared"
    np.savez(prepared / "train.npz", images=images[:128], labels=labels[:128])
    np.savez(prepared / "test.npz", images=images[128:], labels=labels[128:])
    splits = {s: {"sha256_images": hashlib.sha256(s.encode()).hexdigest()} for s in ("train", "test")}
    summary = {"dataset": "fashion-mnist", "shape": [1, 28, 28], "classes": [str(c) for c in range(CLASSES)]}
    (prepared / "summary.json").write_text(json.dumps({**summary, "splits": splits}))
    run([sys.executable, "-m", "gan", "train"], ws)  # a real (barely trained) generator.pt
    run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], ws)  # the gate `dvc add`s the champion
    for f in ("grid.png", "generator.torchscript.pt", "MODEL_CARD.md"):  # exported files the gate copies
        (ws / "data/samples").mkdir(exist_ok=True)
        (ws / "data/samples" / f).write_text(f)

    features = gan.evaluation.features
    monkeypatch.setattr(features, "INCEPTION_SHA256_PREFIX", features.sha256_file(weights)[:8])
    e = params.evaluate
    files = ExtractorFiles(ws / "data/models/classifier.pt", ws / "data/models/judge.pt", e.inception_weights)
    build_reference(e, files, prepared / "train.npz", prepared / "test.npz",
                    ws / "data/reference", device="cpu")  # fmt: skip
    cand = evaluate(e, ws / "data/models/generator.pt", files, ws / "data/reference",
                    ws / "data/metrics/metrics.json", device="cpu")  # fmt: skip
    assert "fid_inception" in cand and "fid_classifier" not in cand and "classes_covered" not in cand

    log = logging.getLogger("test-gate")
    first = run_gate(ws, params, "run-1", log)
    assert first["decision"]["promote"] and first["decision"]["metric"] == "fid_inception"
    assert read_record(ws / "data/models/champion")["flow_run_id"] == "run-1"
    # A crash after promote() but before its `dvc add` leaves champion.dvc behind the files: the next gate re-adds.
    (ws / "data/models/champion/MODEL_CARD.md").write_text("the files of a newer promotion\n")
    assert not dvcrun.is_current("data/models/champion.dvc", ws)
    second = run_gate(ws, params, "run-2", log)  # the same generator again: re-scored, not better
    assert dvcrun.is_current("data/models/champion.dvc", ws)
    dec = second["decision"]
    assert not dec["promote"] and dec["champion_value"] == pytest.approx(dec["candidate_value"])
    assert read_record(ws / "data/models/champion")["flow_run_id"] == "run-1"

    row = history_row(second, params, ["evaluate"], {"epochs": 0.5, "stopped_by_time_budget": True})
    assert (row["epochs"], row["stopped_by_time_budget"]) == (0.5, True)  # trained, not train.epochs
    assert (row["metric"], row["value"], row["champion_value"]) == ("fid_inception", cand["fid_inception"],
                                                                    dec["champion_value"])  # fmt: skip
    assert row["floor"] == cand["fid_inception_floor"] and row["classes_covered"] is None
    md = report_markdown(ws, second)
    assert "| | fid_inception |" in md and "classes covered" not in md and "not promoted" in md
    artifacts = {}
    monkeypatch.setattr(pipeline, "create_table_artifact", lambda rows, key, **_: artifacts.setdefault(key, rows))
    monkeypatch.setattr(pipeline, "create_markdown_artifact", lambda md, key, **_: artifacts.setdefault(key, md))
    pipeline._report(ws, second, [row])  # the artifacts a flow run makes, from inception-only metrics
    assert {r["metric"] for r in artifacts["gan-metrics"]} >= {"FID (inception)", "KID (inception)"}
    assert artifacts["gan-run-history"] == [row] and artifacts["gan-report"] == md

    # Switching to a metric the run did not compute: the schema refuses it before any stage; and should
    # metrics.json still lack it at the gate, the error names it, what there is, and the setting.
    with pytest.raises(ConfigError, match=r"'kid_classifier' needs the 'classifier' extractor"):
        load_params(ws / "params.yaml", ["promote.metric=kid_classifier"])
    unchecked = params.model_copy(update={"promote": params.promote.model_copy(update={"metric": "kid_classifier"})})
    with pytest.raises(MetricMissing, match=r"'kid_classifier'.*fid_inception, kid_inception.*promote.metric"):
        run_gate(ws, unchecked, "run-3", log)
