"""The DVC remote on S3, moto's S3 server on loopback standing in for it (dvc-s3 talks to it as to AWS, through its
`endpointurl`): the pipeline pushes every version there, and a clone elsewhere, with no cache of its own and the
workspace's cache gone, restores the champion from it. Credentials come from the environment, as on AWS."""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import pytest

from .conftest import S3_CREDENTIALS as CREDENTIALS
from .conftest import flow, flow_result, run, s3_server

pytestmark = pytest.mark.slow


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def s3(monkeypatch):
    """moto's S3 server on loopback, the credentials in the environment; its endpoint URL."""
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    with s3_server() as url:
        yield url


def test_the_pipeline_pushes_to_s3_and_a_clone_elsewhere_restores_the_champion_from_it(
    completed_run, prefect_server, s3, tmp_path
):
    import boto3

    repo, _, _ = completed_run
    # what docs/versions.md tells a user to run: an S3 remote as the default, committed (credentials stay out)
    run([sys.executable, "-m", "dvc", "remote", "add", "-d", "s3", "s3://gan/pipeline"], repo)
    run([sys.executable, "-m", "dvc", "remote", "modify", "s3", "endpointurl", s3], repo)
    run(["git", "add", ".dvc/config"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "DVC remote on S3"], repo)

    # a run of the pipeline (nothing to retrain) pushes every output there
    result = flow_result(flow(repo, prefect_server, env=CREDENTIALS))
    assert result["pushed"]["url"] == "s3://gan/pipeline", result["pushed"]
    objects = boto3.client("s3", endpoint_url=s3).list_objects_v2(Bucket="gan", Prefix="pipeline/")
    assert objects["KeyCount"] > 10, objects.get("KeyCount")

    # a clone elsewhere, with no cache anywhere on this machine: the champion comes back from S3
    champion = repo / "data/models/champion"
    want = {f.name: sha(f) for f in champion.iterdir() if f.is_file()}
    shutil.rmtree(repo / ".dvc/cache")
    shutil.rmtree(repo.parent / "gan-pipeline-dvc-remote", ignore_errors=True)  # the old folder remote is gone too
    clone = tmp_path / "elsewhere/clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    out = run([sys.executable, "-m", "gan", "restore", "champion"], clone).stdout
    restored = next((clone / "restored").iterdir())
    assert "restored champion (commit" in out
    assert {name: sha(restored / name) for name in want} == want
    run([sys.executable, "-m", "dvc", "pull"], clone)
    assert sha(clone / "data/models/generator.pt") == sha(repo / "data/models/generator.pt")
