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

from .conftest import PARAMS_TRACE_FILE, TINY, copy_repo, run
from .test_stage_deps import dvc_stages, params_problems, read_trace

pytestmark = pytest.mark.slow


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
    for key in (
        "fid_classifier",
        "fid_classifier_floor",
        "kid_classifier",
        "is_classifier",
        "precision_classifier",
        "recall_classifier",
        "density_classifier",
        "coverage_classifier",
        "classes_covered",
        "class_kl",
        "fid_judge",
        "fid_judge_floor",
        "kid_judge",
        "copy_ct_judge",
        "copy_ct_judge_floor",
        "copy_fraction_judge",
    ):
        assert np.isfinite(metrics[key]), key
    assert "not_applicable" not in metrics  # labelled data, both extractors: everything applies
    assert metrics["n"] == 600 and metrics["fid_classifier_floor"] < metrics["fid_classifier"]
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
