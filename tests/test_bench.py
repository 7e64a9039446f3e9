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
