"""End to end, on the completed tiny flow run (`completed_flow`: real Fashion-MNIST from the Debian package, every
stage run by `dvc repro --single-item` in a git + DVC copy of the repo): what each stage wrote, and that each read
only the params dvc.yaml declares for it. Bad params stop `dvc repro` before any stage."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from gan.core import metric_keys as keys

from .conftest import PARAMS_TRACE_FILE, TINY, copy_repo, run
from .test_stage_deps import dvc_stages, params_problems, read_trace

pytestmark = pytest.mark.slow


def check_metric_ranges(metrics: dict, extractors: tuple[str, ...], num_classes: int) -> None:
    """Every metric of each extractor present beside its real-vs-real floor, each within the range its definition
    allows: FID and its bootstrap interval >= 0 (the interval is bias-corrected, so it need not contain the
    estimate: only low <= high is asserted), precision, recall and coverage in [0, 1], density >= 0 (the mean count
    of real neighbourhoods a sample falls in, over k: above 1 where samples crowd the real data), spreads >= 0,
    the class score in [1, classes], classes covered <= classes, KL >= 0, shares in [0, 1]. KID is unbiased, so it
    may be below 0."""

    def finite(key: str) -> float:
        assert key in metrics, f"{key} missing from metrics.json"
        value = metrics[key]
        assert isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value), (key, value)
        return value

    def within(key: str, low: float, high: float = np.inf, spread: bool = False) -> None:
        """`key` and its floor in [low, high]; `spread`: also their std (key_std, key_floor_std) >= 0."""
        for k in (key, keys.floor(key)):
            assert low <= finite(k) <= high, (k, metrics[k], low, high)
            assert not spread or finite(keys.std(k)) >= 0, keys.std(k)

    for name in extractors:
        fid = keys.fid(name)
        within(fid, 0)
        for k in (fid, keys.floor(fid)):
            low, high = metrics[keys.ci95(k)]
            assert 0 <= low <= high and np.isfinite(high), (keys.ci95(k), low, high)
        within(keys.kid(name), -np.inf, spread=True)
        for kind in ("precision", "recall", "coverage"):
            within(keys.metric(kind, name), 0, 1)
        within(keys.metric("density", name), 0)
    if "classifier" in extractors:
        within(keys.inception_score("classifier"), 1 - 1e-6, num_classes + 1e-6, spread=True)
        assert metrics[keys.NUM_CLASSES] == num_classes <= 10
        within(keys.CLASSES_COVERED, 0, num_classes)
        within(keys.CLASS_KL, 0)
        within("mean_confidence", 1 / num_classes, 1)
        histogram = metrics["class_histogram"]
        assert len(histogram) == num_classes and min(histogram) >= 0 and abs(sum(histogram) - 1) < 1e-3, histogram
        for k in ("per_class_fid_classifier", "per_class_fid_classifier_floor"):
            assert len(metrics[k]) == num_classes and all(v is None or v >= 0 for v in metrics[k].values()), k
    if "judge" in extractors:  # the data-copying test
        finite(keys.copy_ct("judge")), finite(keys.floor(keys.copy_ct("judge")))
        within(keys.copy_fraction("judge"), 0, 1)
        assert metrics[keys.copy_cells("judge")] >= 1 and isinstance(metrics[keys.copying("judge")], bool)


def test_every_stage_reads_only_the_params_dvc_yaml_declares(completed_flow):
    """The completed flow ran its stages with the params tracer (every key each `python -m gan STAGE` read)."""
    repo = completed_flow[0]
    trace = read_trace(repo.parent / PARAMS_TRACE_FILE)
    stages = ["source", "download", "prepare", "classifier", "judge", "train", "reference", "evaluate", "export"]
    assert {t["stage"] for t in trace} == set(stages), "the params tracer did not run in every stage"
    problems = params_problems(trace, dvc_stages(repo / "dvc.yaml"))
    assert not problems, "dvc.yaml misses params its stages read:\n" + "\n".join(problems)


def test_the_stages_outputs_end_to_end(completed_flow, tmp_path):
    """What every stage wrote, on the completed tiny flow (read only)."""
    repo = completed_flow[0]
    raw = repo / "data/raw/fashion-mnist"
    assert sorted(p.name for p in raw.iterdir()) == [
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
    ]
    summary = json.loads((repo / "data/prepared/summary.json").read_text())
    assert summary["splits"]["train"]["n"] == 3000 and summary["splits"]["test"]["n"] == 1000
    with np.load(repo / "data/prepared/train.npz") as z:
        assert z["images"].shape == (3000, 1, 28, 28) and z["images"].dtype == np.uint8

    metrics = json.loads((repo / "data/metrics/metrics.json").read_text())
    assert "not_applicable" not in metrics  # labelled data, both extractors: everything applies
    assert metrics["n"] == 600 and metrics["fid_classifier_floor"] < metrics["fid_classifier"]
    check_metric_ranges(metrics, extractors=("classifier", "judge"), num_classes=10)
    assert json.loads((repo / "data/metrics/classifier.json").read_text())["test_accuracy"] > 0.5

    samples = repo / "data/samples"
    assert Image.open(samples / "grid.png").size == (8 * 28 + 9 * 2, 8 * 28 + 9 * 2)
    assert Image.open(samples / "closest_pairs.png").mode == Image.open(samples / "class_grid.png").mode == "RGB"
    assert Image.open(samples / "training_curves.png").height == 3 * (170 + 2 * 44)  # losses, D's outputs, quality
    assert len(list((samples / "png").glob("*.png"))) == 10
    with np.load(samples / "samples.npz") as z:
        assert z["images"].shape == (200, 28, 28, 1) and z["images"].dtype == np.uint8
    card = (samples / "MODEL_CARD.md").read_text()
    assert "fashion-mnist" in card and f"{metrics['fid_classifier']:.4g}" in card and "KID (classifier)" in card
    code = run(["git", "rev-list", "--max-parents=0", "HEAD"], repo).stdout.strip()  # before the flow's own commit
    assert f"- code: `{code}`" in card  # the commit the stage ran (the copy's code is committed: no local changes)
    # TorchScript loads where this project cannot be imported.
    probe = (
        "import sys; sys.modules['gan'] = None; import torch; "
        f"G = torch.jit.load({str(samples / 'generator.torchscript.pt')!r}); print(tuple(G(torch.randn(2, 100)).shape))"
    )
    assert run([sys.executable, "-c", probe], tmp_path).stdout.strip() == "(2, 1, 28, 28)"
    log_rows = (repo / "data/train/log.tsv").read_text().splitlines()
    assert len(log_rows) == 1 + 3 * (3000 // 64)  # FLOW_TINY: 3 epochs of 3000 images, batch 64
    # That `dvc repro` then reruns nothing but the source watcher, and that everything was pushed: test_flow's
    # test_flow_runs_every_stage_with_artifacts.


def test_bad_params_stop_dvc_before_any_stage(tmp_path):
    repo = copy_repo(tmp_path / "repo", TINY)
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["train"]["epochs"] = -3
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    proc = run(["dvc", "repro"], repo, check=False)
    assert proc.returncode != 0
    assert "train.epochs = -3" in proc.stderr + proc.stdout
    assert not (repo / "data/raw").exists()
