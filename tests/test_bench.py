"""The throughput benchmark still runs end to end (a bench nobody runs rots): one step per arm, tiny split."""

from __future__ import annotations

import gzip
import re
import shutil
import sys

import pytest

from tests.conftest import DEBIAN_FMNIST, REPO, require_debian_fashion_mnist, run


@pytest.mark.slow
def test_train_throughput_bench_prints_every_arm(tmp_path, tiny_split):
    require_debian_fashion_mnist()
    raw = tmp_path / "data" / "raw" / "fashion-mnist"  # the baseline's torchvision dataset reads the IDX files
    raw.mkdir(parents=True)
    for gz in DEBIAN_FMNIST.glob("*-ubyte.gz"):
        with gzip.open(gz) as src, open(raw / gz.name.removesuffix(".gz"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    (tmp_path / "data" / "prepared").mkdir()
    shutil.copy(tiny_split, tmp_path / "data" / "prepared" / "train.npz")

    out = run([sys.executable, str(REPO / "bench" / "train_throughput.py"), "--steps", "2", "--warmup", "1",
               "--batch", "8", "--models", "default", "--ablation"], cwd=tmp_path).stdout  # fmt: skip

    def rate(label: str) -> float:
        m = re.search(re.escape(label) + r"[^:]*:\s+([\d.]+) images/s", out)
        assert m, f"no '{label}' line in:\n{out}"
        return float(m.group(1))

    assert rate("baseline (pytorch/examples style)") > 0 and rate("project trainer") > 0
    assert re.search(r"ratio project / baseline: [\d.]+x", out), out
    ablation = re.findall(r"^\s+(?:baseline arithmetic|\+ channels_last|\+ no D weight).*?:\s+([\d.]+) \(([\d.]+)x\)",
                          out, re.M)  # fmt: skip
    assert len(ablation) == 3 and all(float(r) > 0 for r, _ in ablation), out
    assert re.search(r"matmul peak measured here \(fp32\): \d+ GFLOP/s", out), out
    assert re.search(r"project at \d+% of the measured matmul peak", out), out


def test_train_throughput_bench_names_an_unknown_model(tmp_path):
    """A typo in --models must not silently bench the default model under the typo's name."""
    proc = run([sys.executable, str(REPO / "bench" / "train_throughput.py"), "--models", "dcgan64,dcgan"],
               cwd=tmp_path, check=False)  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--models: unknown model(s) dcgan; choose from dcgan64, default" in proc.stderr
    assert "images/s" not in proc.stdout  # refused before any timing


def test_source_manifest_bench_prints_its_three_timings(tmp_path):
    out = run([sys.executable, str(REPO / "bench" / "source_manifest.py"), "--n", "300", "--size", "64"],
              cwd=tmp_path).stdout  # fmt: skip
    for label, n in (("first look (cold cache)", 300), ("unchanged rerun", 300), ("after adding 3", 303)):
        assert re.search(re.escape(label) + rf"\s+{n} files\s+[\d.]+ s\s+\d+ files/s", out), out
    assert re.search(r"unchanged / cold time: [\d.]+", out) and "CPU: " in out, out


@pytest.mark.slow
def test_prepare_speed_bench_prints_both_runs(tmp_path):
    out = run([sys.executable, str(REPO / "bench" / "prepare_speed.py"), "--n", "40", "--resolution", "32"],
              cwd=tmp_path).stdout  # fmt: skip
    assert re.search(r"full prepare\s*:\s+40 images .* images/s \(decoded 40, from cache 0\)", out), out
    assert re.search(r"incremental \(\+4\):\s+44 images .* images/s \(decoded 4, from cache 40\)", out), out
    assert re.search(r"ratio incremental / full: [\d.]+x images/s", out) and "peak RSS" in out, out


@pytest.mark.slow
def test_shapes_bench_runs_every_stage_on_the_cpu(tmp_path):
    out = run([sys.executable, str(REPO / "bench" / "shapes_gpu.py"), "--device", "cpu", "--n", "64", "--batch",
               "16", "--shapes", "3x32x32"], cwd=tmp_path).stdout  # fmt: skip
    assert '"npz": "64\\u00d732\\u00d732\\u00d73"' in out and '"graph/eager"' in out, out


def test_sweep_table_puts_the_workspaces_side_by_side_and_says_where_a_trial_wins(tmp_path):
    import json

    def trial(label, fd, lo, hi, steps):
        return {"label": label, "metrics": {"fid_judge": fd, "fid_judge_floor": 2.0, "fid_judge_ci95": [lo, hi],
                "recall_judge": 0.5}, "train_summary": {"steps": steps}}  # fmt: skip

    for ws, other in (("a", (4.0, 3.5, 4.5)), ("b", (30.0, 29.0, 31.0))):
        folder = tmp_path / ws / "sweep-reports" / "recipes"
        folder.mkdir(parents=True)
        report = {"machine": "m", "trials": [trial("default", 10.0, 9.0, 11.0, 100), trial("ema", *other, 90)]}
        (folder / "trials.json").write_text(json.dumps(report))
    out = run([sys.executable, str(REPO / "bench" / "sweep_table.py"), "recipes", str(tmp_path / "a"),
               str(tmp_path / "b")], cwd=tmp_path).stdout  # fmt: skip
    assert "| default | 5× (0.50), 100 steps | 5× (0.50), 100 steps |" in out, out
    assert "| ema | 2× (0.50), 90 steps | 15× (0.50), 90 steps |" in out, out
    assert "- ema vs default: clearly better on 1 of 2 (a), clearly worse on 1 (b): does not win on most" in out, out


@pytest.mark.slow
def test_ruler_bench_scores_snapshots_with_both_extractor_sets(tmp_path):
    """bench/ruler.py end to end on a tiny Fashion-MNIST folder: both sets' soundness rows, a snapshot per wanted
    step (and the last) scored by both, a grid each, ruler.json."""
    import json

    require_debian_fashion_mnist()
    tiny = ["classifier.steps=5", "judge.steps=3", "judge.batch_size=32", "model.channels=8", "evaluate.n_samples=60",
            "evaluate.bootstrap=0", "evaluate.kid_subsets=2", "evaluate.kid_subset_size=20",
            "evaluate.prdc_samples=30", "train.batch_size=32"]  # fmt: skip
    out = run([sys.executable, str(REPO / "bench" / "ruler.py"), "--folder", "fashion32", "--fashion-images", "300",
               "--weak", "2,2", "--steps", "2,4", "--root", str(tmp_path / "ws"), "--out", str(tmp_path / "ruler"),
               *(f"--set={s}" for s in tiny)], cwd=tmp_path).stdout  # fmt: skip
    sets = re.findall(r"^\| (default|weak \(2,2 steps\)) \| (classifier|judge) \| (\d+) \|", out, re.M)
    assert sets == [("default", "classifier", "5"), ("default", "judge", "3"), ("weak (2,2 steps)", "classifier", "2"),
                    ("weak (2,2 steps)", "judge", "2")], out  # fmt: skip
    rows = json.loads((tmp_path / "ruler" / "ruler.json").read_text())
    assert [r["step"] for r in rows] == [2, 4]
    for r in rows:
        for label in ("default", "weak (2,2 steps)"):
            assert r[label]["fid_judge"] > 0 and r[label]["fid_classifier"] > 0, r
    assert sorted(p.name for p in (tmp_path / "ruler").glob("step_*.png")) == ["step_00002.png", "step_00004.png"]
    assert re.search(r"^\| 4 steps \| weak \(2,2 steps\) \| [\d.]+ / [\d.]+ \([\d.]+×\) \|", out, re.M), out
