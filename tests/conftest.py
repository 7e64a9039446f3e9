from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from filelock import FileLock

from gan.core.config import apply_overrides, load_params

REPO = Path(__file__).resolve().parents[1]
DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# pytest-xdist runs the suite in worker processes (gw0, gw1, ...), each importing this file: every worker gets its own
# PREFECT_HOME (set here, before anything imports prefect), its own Prefect server (`prefect_server`, session scope =
# one per worker, on a free port), and its own tmp_path root. Without xdist the "worker" is "main".
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
N_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix=f"gan-tests-prefect-{WORKER}-")
# The workers share the cores: each (and every process it starts: dvc stages, flows, benches) gets its share of
# threads, so 2 workers on 2 cores do not run 4 busy threads. An explicit OMP_NUM_THREADS wins.
WORKER_THREADS = max(1, (os.cpu_count() or 1) // N_WORKERS) if N_WORKERS > 1 else None
if WORKER_THREADS and "OMP_NUM_THREADS" not in os.environ:
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, str(WORKER_THREADS))
else:
    WORKER_THREADS = None
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
ARTIFACTS_DIR = REPO / "test-output"
PARAMS_TRACE_DIR = Path(__file__).parent / "params_trace"  # its sitecustomize records the params each stage reads
PARAMS_TRACE_FILE = "params-read.jsonl"


def pytest_configure(config):
    """In an xdist worker, this process's own torch and BLAS threads too (numpy may have loaded its BLAS already)."""
    if WORKER_THREADS:
        import torch

        torch.set_num_threads(WORKER_THREADS)
        with contextlib.suppress(ImportError):
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=WORKER_THREADS)


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


S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@contextlib.contextmanager
def s3_server(host: str = "127.0.0.1"):
    """A real S3 API (moto's server) on `host` with an empty bucket `gan`; its endpoint URL. dvc-s3 talks to it as to
    AWS, through the remote's `endpointurl`, with the credentials S3_CREDENTIALS (set them in the environment)."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    try:
        url = f"http://{host}:{port}"
        credentials = {key.lower(): S3_CREDENTIALS[key] for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        s3 = boto3.client("s3", endpoint_url=url, region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"], **credentials)
        s3.create_bucket(Bucket="gan")
        yield url
    finally:
        server.stop()


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


def shared_root(tmp_path_factory) -> Path:
    """The folder every xdist worker of this test run shares (each worker's basetemp is a subfolder of it); without
    xdist, this process's basetemp."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if WORKER != "main" else base


def built_once(tmp_path_factory, name: str, build: Callable[[Path], dict]) -> tuple[Path, dict]:
    """`build(folder)` once per test run, whichever worker asks first; every other caller (another worker, another
    thread) waits for it, then gets the same folder and the dict `build` returned. A failed build is retried by the
    next caller (and fails there with its own error)."""
    root = shared_root(tmp_path_factory)
    folder, done = root / name, root / f"{name}.json"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            done_tmp = done.with_suffix(".tmp")
            done_tmp.write_text(json.dumps(build(folder)))
            done_tmp.replace(done)
    return folder, json.loads(done.read_text())


def _start_prefect_server(folder: Path, host: str = "127.0.0.1") -> dict:
    """`prefect server start` on a free port of `host`, in its own session (the session's server outlives the worker
    that started it: the run's main process stops it, see pytest_sessionfinish); its PREFECT_HOME and log under
    `folder`."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(
        PREFECT_HOME=str(folder),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5",
        PREFECT_UI_API_URL=f"http://{host}:{port}/api",
    )
    with open(folder / "server.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    return {"pid": proc.pid, "port": port, "host": host}


def _pid_alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):  # our own child: reap it if it ended (else it stays a zombie)
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory) -> PrefectServer:
    """A real `prefect server start` on 127.0.0.1, one for the whole test run: the first worker that needs it starts
    it, the others use it (each client with its own PREFECT_HOME)."""
    folder, info = built_once(tmp_path_factory, "prefect-server", _start_prefect_server)
    return prefect_server_ready(folder, info, tmp_path_factory.mktemp("prefect-client-home"))


def prefect_server_ready(folder: Path, info: dict, client_home: Path) -> PrefectServer:
    """The server `_start_prefect_server` started (`info`), once its API answers; its clients' PREFECT_HOME is
    `client_home`."""
    url = f"http://{info.get('host', '127.0.0.1')}:{info['port']}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if not _pid_alive(info["pid"]) or time.monotonic() > deadline:
            raise RuntimeError(f"prefect server did not start:\n{(folder / 'server.log').read_text()[-3000:]}")
        time.sleep(0.5)
    client_env = {**os.environ, "PREFECT_API_URL": f"{url}/api", "PREFECT_HOME": str(client_home)}
    return PrefectServer(url=url, api_url=f"{url}/api", env=client_env)


def pytest_sessionfinish(session):
    """The run's main process (xdist's controller, after every worker ended; or the only process) stops the shared
    Prefect server."""
    if WORKER != "main":
        return
    factory = getattr(session.config, "_tmp_path_factory", None)
    info = factory.getbasetemp() / "prefect-server.json" if factory is not None else None
    if info is None or not info.exists():
        return
    pid = json.loads(info.read_text())["pid"]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        os.killpg(pid, signal.SIGKILL)


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


# Tiny runs rarely cover all 10 classes, so the class rule is off in the flow tests; it is tested in
# tests/test_champion.py::test_class_rule_refuses_a_collapsed_candidate_unless_switched_off.
FLOW_TINY = [*TINY, "promote.require_all_classes=false", "train.lr_g=0.001", "train.lr_d=0.0005", "train.epochs=3"]


def flow(repo: Path, server, *args: str, check: bool = True, as_json: bool = True, env: dict | None = None):
    """`python -m flows.pipeline ARGS` reporting to `server`; as_json: --json (the result, not the summary); `env`:
    more environment variables for it."""
    cmd = [sys.executable, "-m", "flows.pipeline", *(["--json"] if as_json else []), *args]
    return run(cmd, repo, check=check, env={**server.env, **(env or {})})


def flow_result(proc) -> dict:
    return json.loads(proc.stdout[proc.stdout.index("{") :])


def history(repo: Path) -> list[dict]:
    with open(repo / "data/history/runs.csv") as f:
        return list(csv.DictReader(f))


def tag_message(repo: Path, name: str) -> str:
    """The message of git tag `name` in `repo`."""
    return run(["git", "tag", "-l", "--format=%(contents)", name], repo).stdout.strip()


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


def _completed_flow_build(server: PrefectServer) -> Callable[[Path], dict]:
    def build(folder: Path) -> dict:
        # The repo's DVC remote (.dvc/config: ../../gan-pipeline-dvc-remote) lands beside it, in `folder`; so does
        # the params trace: every params key each stage read (tests/params_trace, checked by test_pipeline_e2e).
        repo = copy_repo(folder / "repo", FLOW_TINY)
        trace = {"PYTHONPATH": str(PARAMS_TRACE_DIR), "GAN_PARAMS_TRACE": str(folder / PARAMS_TRACE_FILE)}
        proc = flow(repo, server, env=trace)
        return {"run_id": history(repo)[-1]["flow_run_id"], "stdout": proc.stdout, "stderr": proc.stderr}

    return build


@pytest.fixture(scope="session")
def completed_flow(prefect_server, tmp_path_factory) -> tuple[Path, str, subprocess.CompletedProcess]:
    """One full flow run on a tiny config (FLOW_TINY), once per test run: its repo (beside it, its DVC remote), its
    flow run id on `prefect_server`, and the flow's output. Read only: a test that runs anything there takes a
    copy (`completed_run`)."""
    require_debian_fashion_mnist()
    folder, info = built_once(tmp_path_factory, "completed-flow", _completed_flow_build(prefect_server))
    return folder / "repo", info["run_id"], subprocess.CompletedProcess([], 0, info["stdout"], info["stderr"])


@pytest.fixture
def completed_run(completed_flow, tmp_path) -> tuple[Path, str, subprocess.CompletedProcess]:
    """A copy of `completed_flow`'s repo and DVC remote, for this test to change."""
    repo, run_id, proc = completed_flow
    dest = tmp_path / "completed"
    shutil.copytree(repo.parent, dest, symlinks=True)
    return dest / "repo", run_id, proc


@pytest.fixture(scope="session", autouse=True)
def _completed_flow_in_the_background(request, tmp_path_factory):
    """When this run has tests of the completed flow, a worker starts building it at once, in a thread, and goes on
    with other tests meanwhile; the tests that need it wait for it (`built_once`)."""
    if not any(BUILT_IN_THE_BACKGROUND & set(item.fixturenames) for item in request.session.items):
        return
    if not (DEBIAN_FMNIST / "train-images-idx3-ubyte.gz").exists():
        return  # the tests themselves skip or fail, saying why
    build = _completed_flow_build(request.getfixturevalue("prefect_server"))

    def in_background() -> None:
        with contextlib.suppress(BaseException):  # a failed build is retried, and reported, by the first test
            built_once(tmp_path_factory, "completed-flow", build)

    threading.Thread(target=in_background, name="completed-flow", daemon=True).start()


@pytest.fixture
def one_torch_thread():
    """One intra-op torch thread for the test (the machine is shared), restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- scheduling under pytest-xdist -------------------------------------------------------------------------------
# test.sh runs `-n auto --dist loadgroup`. Tests that share an expensive module-scoped fixture get one xdist_group
# (so the fixture is built once, on one worker), and the costliest groups and tests are queued first (so the run does
# not end with one worker busy on a long end-to-end test while the other idles). The tests of the completed flow
# come after the other slow ones: a worker builds that flow in the background meanwhile, and they need not wait.

# Seconds each costly test (or group: its xdist_group name) took in a 2-worker run on the 2-core machine, to queue it
# first. Only the order depends on these; a test missing here counts as SLOW_DEFAULT_S if marked slow, else 1 s.
COST_S = {
    "test_folder_flow.py::test_folder_runs_then_is_a_no_op_then_retrains_incrementally_when_it_grows": 220,
    "test_flow.py::test_download_with_new_bytes_emits_dataset_changed": 150,
    "test_flow.py::test_a_failed_push_or_a_refused_commit_fails_the_run_and_loses_nothing": 150,
    "test_deployment.py::test_nightly_deployment_schedules_runs_and_a_worker_executes_one": 135,
    "test_champion.py::test_gate_history_and_report_on_inception_only_metrics": 150,
    "test_recording_e2e.py::test_two_recorded_runs_come_back_on_another_clone": 125,
    "test_flow.py::test_a_worse_model_is_not_promoted_then_a_manual_repro_is_recorded": 120,
    "test_folder_flow.py::test_an_unlabeled_folder_is_scored_by_the_judge_with_class_metrics_not_applicable": 100,
    "test_flow.py::test_a_run_that_waited_for_the_lock_reads_params_after_it": 60,
    "test_flow.py::test_two_runs_at_once_do_not_corrupt_the_workspace": 50,
    "test_reliability.py::test_kill_9_with_the_quality_probe_best_snapshot_and_patience": 55,
    "test_bench.py::test_ruler_bench_scores_snapshots_with_both_extractor_sets": 55,
    "test_train.py::test_compiled_training_matches_eager": 20,
    "judge-fmnist": 310,
    "judge-emoji": 100,
    "sweep-cluster": 300,  # its servers, a grid of 2 trials with a worker killed, then 3 tests that sweep again
    "test_evaluate.py:workspace": 75,  # its workspace is copied from the completed flow
    "test_doc_commands.py::test_documented_commands_run_as_written": 160,
    "test_gate.py::test_the_gate_promotes_only_a_difference_beyond_the_noise_both_ways": 60,
    "test_sweep.py::test_the_default_path_runs_a_sweep_on_a_local_cluster_of_its_own_and_resumes_after_a_kill": 180,
}
SLOW_DEFAULT_S = 20
BUILT_IN_THE_BACKGROUND = {"completed_run", "completed_flow"}  # fixtures (see _completed_flow_in_the_background)


def _shared_fixtures(item) -> list[str]:
    """Names of the module-scoped fixtures (autouse ones aside) that `item` uses."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return []
    names = []
    for name, defs in info.name2fixturedefs.items():
        if (
            name in item.fixturenames
            and defs
            and defs[-1].scope == "module"
            and not getattr(defs[-1], "_autouse", False)
        ):
            names.append(name)
    return sorted(names)


def _cost(item) -> float:
    rel = item.nodeid.split("/")[-1].split("[")[0].split("@")[0]
    if rel in COST_S:
        return COST_S[rel]
    return SLOW_DEFAULT_S if item.get_closest_marker("slow") else 1


def _group(item) -> str | None:
    module = item.nodeid.split("::")[0].split("/")[-1]
    if shared := _shared_fixtures(item):
        return f"{module}:{'+'.join(shared)}"
    return None


def pytest_itemcollected(item):
    """Mark each test as it is collected, before any pytest_collection_modifyitems."""
    if (group := _group(item)) and not item.get_closest_marker("xdist_group"):
        item.add_marker(pytest.mark.xdist_group(group))


def _group_name(item) -> str | None:
    mark = item.get_closest_marker("xdist_group")
    return (mark.args[0] if mark.args else mark.kwargs.get("name", "default")) if mark else None


def _add_group_to_nodeid(item, group: str) -> None:
    """What xdist's worker does for --dist loadgroup (its scheduler groups tests by the nodeid's "@group" suffix).
    xdist 3.8 sets `item._nodeid`, which pytest 9 no longer reads (the nodeid is `item._id`): do it for both."""
    nodeid = f"{item.nodeid}@{group}"
    if hasattr(item, "_id"):
        from _pytest.nodeid import coerce_node_id

        item._id = coerce_node_id(nodeid)
    else:
        item._nodeid = nodeid


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    groups: dict[str, list] = {}
    for item in items:
        group = _group_name(item)
        if group and getattr(config.option, "loadgroup", False) and "@" not in item.nodeid.rsplit("]", 1)[-1]:
            _add_group_to_nodeid(item, group)
        groups.setdefault(group or item.nodeid, []).append(item)
    module_cost = {m: c for m, c in COST_S.items() if "::" not in m}
    cost = {key: module_cost.get(key) or sum(_cost(i) for i in members) for key, members in groups.items()}
    # Every worker collects and must get the same order: sort is stable and depends only on the items.
    waits = {k for k, members in groups.items() if any(BUILT_IN_THE_BACKGROUND & set(i.fixturenames) for i in members)}
    rank = {key: (SLOW_DEFAULT_S - 1 + cost[key] / 1e4 if key in waits else cost[key]) for key in groups}
    order = sorted(groups, key=lambda k: -rank[k])
    items[:] = [i for k in order for i in groups[k]]
