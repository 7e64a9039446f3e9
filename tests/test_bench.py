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


@pytest.mark.slow
def test_ablation_bench_scores_every_variant_at_every_budget(tmp_path):
    """bench/ablation.py on a tiny workspace (synthetic 4-class data, a 1-epoch classifier, its reference): a row
    per variant and budget, the conditional one with the requested-class accuracy."""
    import json

    import numpy as np
    import yaml

    from gan.core.config import ClassifierConfig, load_params
    from gan.core.paths import Paths
    from gan.evaluation.classifier import train_classifier
    from gan.evaluation.features import ExtractorFiles
    from gan.evaluation.reference import build_reference

    paths = Paths(tmp_path)
    paths.prepared.mkdir(parents=True)
    for split, n, seed in ((paths.train_split, 256, 0), (paths.test_split, 64, 1)):
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, 4, n).astype(np.int64)
        images = rng.integers(0, 40, (n, 1, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            images[i, 0, 6 * k + 2 : 6 * k + 5, 2:26] = 220
        np.savez(split, images=images, labels=labels)
    classes = ["a", "b", "c", "d"]
    paths.prepared_summary.write_text(json.dumps({"dataset": "fashion-mnist", "shape": [1, 28, 28],
                                                  "classes": classes}))  # fmt: skip
    settings = {"model": {"channels": 8, "z_dim": 16}, "train": {"batch_size": 32},
                "evaluate": {"n_samples": 64, "bootstrap": 0, "kid_subsets": 2, "kid_subset_size": 20,
                             "prdc_samples": 20, "prdc_k": 3, "extractors": ["classifier"]}}  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(settings))
    p = load_params(tmp_path / "params.yaml")
    train_classifier(ClassifierConfig(steps=8, batch_size=32), paths.train_split, paths.test_split, paths.classifier,
                     paths.classifier_metrics, num_classes=4, device="cpu", progress_bar=False)  # fmt: skip
    build_reference(p.evaluate, ExtractorFiles(paths.classifier, paths.judge), paths.train_split, paths.test_split,
                    paths.reference, device="cpu")  # fmt: skip

    out = run([sys.executable, str(REPO / "bench" / "ablation.py"), "fashion", "--workspace", str(tmp_path),
               "--minutes", "0.02", "0.04", "--variants", "default", "conditional", "--snapshot-every", "2",
               "--threads", "1", "--out", str(tmp_path / "ablation.json")], cwd=tmp_path).stdout  # fmt: skip
    rows = re.findall(r"^\| (default|conditional) \| ([\d.]+) min \| (\d+) \| ([\d.]+) \|.*\| (—|[\d.]+%) \|$", out,
                      re.M)  # fmt: skip
    assert [(v, b) for v, b, *_ in rows] == [("default", "0.02"), ("default", "0.04"), ("conditional", "0.02"),
                                             ("conditional", "0.04")], out  # fmt: skip
    assert all(int(steps) > 0 and float(fid) >= 0 for _, _, steps, fid, _ in rows), out
    assert [acc == "—" for *_, acc in rows] == [True, True, False, False], out  # only the conditional G is asked
    written = json.loads((tmp_path / "ablation.json").read_text())
    assert "machine: " in out and len(written["results"]) == 4


@pytest.mark.slow
def test_recipes_bench_trains_every_candidate_on_a_folder_and_prints_the_table(tmp_path):
    """bench/recipes.py end to end on a tiny Fashion-MNIST folder of PNGs (its workspace made by the stage commands,
    with short extractor training): a row per candidate and budget, the judge's verdict, the JSON."""
    import json

    require_debian_fashion_mnist()
    tiny = ["classifier.steps=5", "judge.steps=3", "judge.batch_size=32", "model.channels=8", "evaluate.n_samples=60",
            "evaluate.bootstrap=0", "evaluate.kid_subsets=2", "evaluate.kid_subset_size=20",
            "evaluate.prdc_samples=30"]  # fmt: skip
    out = run([sys.executable, str(REPO / "bench" / "recipes.py"), "--folders", "fashion28", "--fashion-images", "300",
               "--candidates", "default", "ema-0.99", "--minutes", "0.02", "0.04", "--snapshot-every", "2",
               "--root", str(tmp_path / "ws"), "--out", str(tmp_path / "recipes.json"),
               *(f"--set={s}" for s in tiny)], cwd=tmp_path).stdout  # fmt: skip
    rows = re.findall(r"^\| (default|ema-0.99) \| ([\d.]+) min \| ([\d.]+)× \(([\d.]+)\), (\d+) steps \|$", out, re.M)
    assert [(c, b) for c, b, *_ in rows] == [("default", "0.02"), ("default", "0.04"), ("ema-0.99", "0.02"),
                                             ("ema-0.99", "0.04")], out  # fmt: skip
    assert all(float(ratio) > 0 and int(steps) > 0 for _, _, ratio, _, steps in rows), out
    assert "judge soundness per folder: fashion28: " in out and "machine: " in out
    best = r"^- fashion28: best (default|ema-0.99) \([\d.]+× its floor\), then (default|ema-0.99) "
    assert re.search(best, out, re.M), out
    assert re.search(r"^- ema-0.99 vs default: clearly better on [01] of 1 folders", out, re.M), out
    written = json.loads((tmp_path / "recipes.json").read_text())
    assert len(written["results"]) == 4 and "separates" in written["verdicts"]["fashion28"]
    # a rerun with the same --out trains nothing it has and prints the same table
    again = run([sys.executable, str(REPO / "bench" / "recipes.py"), "--folders", "fashion28", "--fashion-images",
                 "300", "--candidates", "default", "ema-0.99", "--minutes", "0.02", "0.04", "--root",
                 str(tmp_path / "ws"), "--out", str(tmp_path / "recipes.json"), *(f"--set={s}" for s in tiny)],
                cwd=tmp_path).stdout  # fmt: skip
    assert "fashion28 default: in " in again and "fashion28 ema-0.99: in " in again, again
    table = r"^\| (?:default|ema-0.99) \|.*$"
    assert re.findall(table, again, re.M) == re.findall(table, out, re.M)


@pytest.mark.slow
def test_ruler_bench_scores_snapshots_with_both_extractor_sets(tmp_path):
    """bench/ruler.py end to end on a tiny Fashion-MNIST folder: both sets' soundness rows, a snapshot per wanted
    step (and the last) scored by both, a grid each, ruler.json."""
    import json

    require_debian_fashion_mnist()
    tiny = ["classifier.steps=5", "judge.steps=3", "judge.batch_size=32", "model.channels=8", "evaluate.n_samples=60",
            "evaluate.bootstrap=0", "evaluate.kid_subsets=2", "evaluate.kid_subset_size=20",
            "evaluate.prdc_samples=30", "train.batch_size=32"]  # fmt: skip
    out = run([sys.executable, str(REPO / "bench" / "ruler.py"), "--folder", "fashion28", "--fashion-images", "300",
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
