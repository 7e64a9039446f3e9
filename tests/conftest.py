from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from gan.core.config import apply_overrides, load_params

REPO = Path(__file__).resolve().parents[1]
DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# One PREFECT_HOME per test session, set before anything imports prefect.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="gan-tests-prefect-")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
ARTIFACTS_DIR = REPO / "test-output"


def require_debian_fashion_mnist() -> None:
    """Real-data tests need the Debian package; CI (GAN_REQUIRE_REAL_DATA=1) fails instead of skipping."""
    if (DEBIAN_FMNIST / "train-images-idx3-ubyte.gz").exists():
        return
    msg = f"{DEBIAN_FMNIST} missing: apt-get install -y dataset-fashion-mnist"
    if os.environ.get("GAN_REQUIRE_REAL_DATA") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture
def tiny_split(tmp_path: Path) -> Path:
    """A synthetic prepared split: 256 images of 10 'classes' (class k = a bright band at row 2k)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 256).astype(np.int64)
    images = rng.integers(0, 40, (256, 1, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        images[i, 0, 2 * k + 3 : 2 * k + 6, 4:24] = 220
    path = tmp_path / "train.npz"
    np.savez(path, images=images, labels=labels)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PrefectServer:
    url: str  # the UI
    api_url: str
    env: dict  # environment for processes that must report to this server

    @contextlib.contextmanager
    def client(self):
        """A sync Prefect client bound to this server."""
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: self.api_url}), get_client(sync_client=True) as c:
            yield c


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory) -> PrefectServer:
    """A real `prefect server start` on 127.0.0.1, shared by the whole test session."""
    home = tmp_path_factory.mktemp("prefect-server-home")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5",
        PREFECT_UI_API_URL=f"http://127.0.0.1:{port}/api",
    )
    log = open(home / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"prefect server did not start:\n{(home / 'server.log').read_text()[-3000:]}")
        time.sleep(0.5)
    client_env = {
        **os.environ,
        "PREFECT_API_URL": api,
        "PREFECT_HOME": str(tmp_path_factory.mktemp("prefect-client-home")),
    }
    try:
        yield PrefectServer(url=f"http://127.0.0.1:{port}", api_url=api, env=client_env)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


TINY = [
    "data.mirrors=['file:///usr/share/datasets/fashion-mnist/']",
    "data.limit_train=3000",
    "data.limit_test=1000",
    "model.channels=16",
    "train.epochs=1",
    "train.batch_size=64",
    "classifier.steps=24",
    "judge.steps=11",
    "evaluate.n_samples=600",
    "export.n_png=10",
    "export.n_npz=200",
]


def run(cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {
        **(env or os.environ),
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def copy_repo(dest: Path, overrides: list[str]) -> Path:
    """Copy the project's files (as git sees them) into a fresh git repo with tiny params."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for f in files:
        if f.startswith("data/") or not (REPO / f).is_file():
            continue
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, dest / f)
    raw = apply_overrides(yaml.safe_load((REPO / "params.yaml").read_text()), overrides)
    (dest / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    load_params(dest / "params.yaml")
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny"],
    ):
        run(cmd, dest)
    return dest


@pytest.fixture
def one_torch_thread():
    """One intra-op torch thread for the test (the machine is shared), restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
