"""Versioned retraining end to end: two real flow runs on tiny Fashion-MNIST (the first: the shared completed flow),
recorded in git and pushed to a real DVC remote; another clone brings each model back (`dvc pull`, `gan restore`,
`gan sample`) and `dvc repro` there retrains the first champion bit for bit (CPU)."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from gan.lifecycle import gitrepo

from .conftest import flow, flow_result, run, tag_message

pytestmark = pytest.mark.slow


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def gan(repo: Path, *args: str) -> None:
    """`python -m gan ARGS` in `repo`, in this process (the same `main`; saves a torch import per call)."""
    from gan.cli import main

    assert main([*args, "--repo", str(repo)]) == 0


def test_two_recorded_runs_come_back_on_another_clone(completed_run, tmp_path, prefect_server):
    repo, _, first_proc = completed_run  # a copy of the first run (FLOW_TINY: 3 epochs), recorded and pushed
    generator = repo / "data/models/generator.pt"

    # ---- a second run with other settings; the first is the first champion, the second beats it
    first = flow_result(first_proc)
    g1 = sha(generator)
    second = flow_result(flow(repo, prefect_server, "train.epochs=6"))
    g2 = sha(generator)
    assert first["promoted"] and second["promoted"], second["decision"]
    assert second["ran"] == ["train", "evaluate", "export"] and g1 != g2
    tag1, tag2 = first["recorded"]["tag"], second["recorded"]["tag"]
    assert gitrepo.champion_tags(repo) == [tag2, tag1]
    assert run(["git", "status", "--porcelain"], repo).stdout == ""
    second_message = tag_message(repo, tag2)
    assert f"fid_classifier {second['decision']['candidate_value']}" in second_message

    # ---- another clone at the first champion's tag: `dvc pull` brings its exact files
    clone = repo.parent / "clone"  # beside the repo: the relative DVC remote URL names the same remote
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    run(["git", "checkout", "-q", tag1], clone)
    run([sys.executable, "-m", "dvc", "pull"], clone)
    assert sha(clone / "data/models/generator.pt") == g1
    assert sha(clone / "data/models/champion/generator.pt") == g1

    # ---- and `dvc repro` there retrains it bit for bit
    out = run([sys.executable, "-m", "dvc", "repro", "--force", "--single-item", "train"], clone).stdout
    assert "Running stage 'train'" in out
    assert sha(clone / "data/models/generator.pt") == g1

    # ---- `gan restore` of both versions, from the clone, into folders outside it
    gan(clone, "restore", "champion", "--to", str(tmp_path / "r-champion"))
    gan(clone, "restore", tag1, "--to", str(tmp_path / "r-first"))
    assert sha(tmp_path / "r-champion/generator.pt") == g2
    assert sha(tmp_path / "r-first/generator.pt") == g1
    for name, result in (("r-champion", second), ("r-first", first)):
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        assert metrics["fid_classifier"] == result["decision"]["candidate_value"]
        assert (tmp_path / name / "samples/MODEL_CARD.md").exists() and (tmp_path / name / "samples/grid.png").exists()

    # ---- `gan sample`: the same seed gives the same images; each revision its own
    def sample(*args: str) -> np.ndarray:
        out = tmp_path / f"s{len(list(tmp_path.glob('s*.npz')))}.npz"
        gan(clone, "sample", *args, "--n", "16", "--seed", "5", "--out", str(out))
        with np.load(out) as z:
            return z["images"]

    a, b = sample("--rev", tag1), sample("--rev", tag1)
    assert a.shape == (16, 28, 28, 1) and np.array_equal(a, b)
    assert np.array_equal(a, sample())  # the clone's workspace champion (at tag1) is the first
    assert not np.array_equal(a, sample("--rev", "champion"))
    grid = tmp_path / "strip.png"
    gan(clone, "sample", "--rev", "champion", "--interpolate", "8", "--out", str(grid))
    assert grid.stat().st_size > 0


def test_a_clone_at_another_depth_restores_the_champion_from_the_workspaces_remote(completed_run, tmp_path):
    """`git clone` of the workspace anywhere (here three folders deeper, where the tracked .dvc/config's relative URL
    names no remote), then `python -m gan restore champion` and `dvc pull` there: every file from the workspace's DVC
    remote, none from a cache (the clone's is its own and empty; the workspace's is removed)."""
    repo, _, _ = completed_run
    remote = repo.parent / "gan-pipeline-dvc-remote"  # .dvc/config: ../../gan-pipeline-dvc-remote, beside the repo
    champion = repo / "data/models/champion"
    want = {f.name: sha(f) for f in champion.iterdir() if f.is_file()}
    generator = sha(repo / "data/models/generator.pt")
    assert (remote / "files").is_dir() and "generator.pt" in want
    shutil.rmtree(repo / ".dvc/cache")

    clone = tmp_path / "a/b/c/clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    assert not (clone / ".dvc/cache").exists()
    out = run([sys.executable, "-m", "gan", "restore", "champion"], clone).stdout
    tag = gitrepo.champion_tags(clone)[0]
    restored = clone / "restored" / tag
    assert "restored champion (commit" in out and f"restored/{tag}" in out
    assert {name: sha(restored / name) for name in want} == want

    run([sys.executable, "-m", "dvc", "pull"], clone)
    assert sha(clone / "data/models/generator.pt") == generator
    assert {f.name: sha(f) for f in (clone / "data/models/champion").iterdir() if f.is_file()} == want
    assert run(["git", "status", "--porcelain"], clone).stdout == ""  # the remote is in the untracked config.local
    assert not (clone.parent / "gan-pipeline-dvc-remote").exists()  # nothing went where the relative URL points
