"""Faults injected for real: kill -9, divergence, full and read-only disks, broken DVC remotes, hostile pickles."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from gan import atomic
from gan.config import ModelConfig, TrainConfig, apply_overrides
from gan.train import DivergenceError, TrainOutputs, load_checkpoint, load_generator, save_generator, train

from .conftest import REPO, run

pytestmark = pytest.mark.slow


def workspace(root: Path, overrides: list[str]) -> Path:
    """A folder with params.yaml and a synthetic prepared split: enough for `python -m gan train`."""
    root.mkdir(parents=True)
    raw = apply_overrides(yaml.safe_load((REPO / "params.yaml").read_text()), overrides)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    rng = np.random.default_rng(0)
    prepared = root / "data/prepared"
    prepared.mkdir(parents=True)
    np.savez(prepared / "train.npz", images=rng.integers(0, 255, (2000, 1, 28, 28)).astype(np.uint8),
             labels=rng.integers(0, 10, 2000))  # fmt: skip
    return root


TRAIN = ["model.channels=32", "train.epochs=6", "train.batch_size=64", "train.checkpoint_every=20",
         "train.log_flush_every=5", "train.device=cpu"]  # fmt: skip


def test_kill_9_mid_training_then_rerun_resumes_bit_identically(tmp_path):
    ref = workspace(tmp_path / "uninterrupted", TRAIN)
    run([sys.executable, "-m", "gan", "train"], ref)

    ws = workspace(tmp_path / "killed", TRAIN)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.Popen([sys.executable, "-m", "gan", "train"], cwd=ws, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    ckpt = ws / "data/checkpoints/last.pt"
    deadline = time.monotonic() + 120
    killed_at = None
    while time.monotonic() < deadline and proc.poll() is None:
        if ckpt.exists():
            step = load_checkpoint(ckpt)["step"]
            if step >= 60:
                proc.send_signal(signal.SIGKILL)  # mid-epoch: 31 steps per epoch, checkpoints every 20
                killed_at = step
                break
        time.sleep(0.02)
    proc.wait()
    assert killed_at is not None and proc.returncode == -signal.SIGKILL, "training ended before it could be killed"
    assert not (ws / "data/models/generator.pt").exists()
    assert not list(ws.rglob("*.tmp")), "a half-written file was left behind"

    run([sys.executable, "-m", "gan", "train"], ws)
    summary = yaml.safe_load((ws / "data/train/summary.json").read_text())
    assert 60 <= summary["resumed_from_step"] < summary["steps"] == 186
    a = torch.load(ref / "data/models/generator.pt", weights_only=True)["state_dict"]
    b = torch.load(ws / "data/models/generator.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from an uninterrupted run"
    assert (ref / "data/train/log.tsv").read_text() == (ws / "data/train/log.tsv").read_text()


def test_divergence_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, tiny_split, monkeypatch):
    import gan.train as gt

    out = TrainOutputs(tmp_path / "generator.pt", tmp_path / "ckpt", tmp_path / "log")
    out.generator.write_bytes(b"previous generator")
    calls = {"n": 0}
    real_d_loss = gt.d_loss

    def poisoned(real, fake):  # the loss explodes at step 13
        calls["n"] += 1
        loss = real_d_loss(real, fake)
        return loss * float("nan") if calls["n"] >= 13 else loss

    monkeypatch.setattr(gt, "d_loss", poisoned)
    cfg = TrainConfig(epochs=3, batch_size=32, checkpoint_every=5, log_flush_every=1, device="cpu")
    with pytest.raises(DivergenceError, match=r"diverged at step 13: loss_d=nan"):
        train(ModelConfig(channels=8, z_dim=16), cfg, tiny_split, out, progress_bar=False)
    ckpt = load_checkpoint(out.checkpoint_dir / "last.pt")
    assert ckpt["step"] == 10 and all(torch.isfinite(v).all() for v in ckpt["G"].values() if v.is_floating_point())
    assert out.generator.read_bytes() == b"previous generator"


def test_nan_weights_are_never_checkpointed(tmp_path, tiny_split, monkeypatch):
    import gan.train as gt

    cfg = TrainConfig(epochs=1, batch_size=32, device="cpu")
    real_step = torch.optim.Adam.step

    def corrupting_step(self, *a, **k):  # weights go NaN while the losses still look finite
        r = real_step(self, *a, **k)
        with torch.no_grad():
            for group in self.param_groups:
                group["params"][0].fill_(float("nan"))
        return r

    monkeypatch.setattr(gt.torch.optim.Adam, "step", corrupting_step)
    out = TrainOutputs(tmp_path / "g.pt", tmp_path / "ckpt", tmp_path / "log")
    with pytest.raises(DivergenceError, match=r"diverged at step \d+"):
        train(ModelConfig(channels=8, z_dim=16), cfg, tiny_split, out, progress_bar=False)
    assert not (out.checkpoint_dir / "last.pt").exists() and not out.generator.exists()


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB tmpfs (root only; CI runs as root)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        if os.environ.get("GAN_REQUIRE_REAL_DATA") == "1":
            pytest.fail("cannot mount a tmpfs (needs root)")
        pytest.skip("cannot mount a tmpfs (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


def test_full_disk_clear_error_previous_output_intact(small_disk):
    G = torch.nn.Linear(1, 1)
    G.z_dim = 1
    target = small_disk / "generator.pt"
    target.write_bytes(b"the previous model")
    (small_disk / "filler").write_bytes(b"x" * (1024 * 1024 - 64 * 1024))
    big = ModelConfig(arch="dcgan", channels=64)
    from gan.models import build_generator

    with pytest.raises(OSError) as info:
        save_generator(target, build_generator(big), big, {})  # ~3 MB onto a full disk
    msg = str(info.value)
    assert f"cannot write {target}" in msg and "No space left on device" in msg and "previous version is intact" in msg
    assert target.read_bytes() == b"the previous model"
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "generator.pt"]


def test_read_only_output_clear_error_previous_output_intact(small_disk, tmp_path):
    metrics = small_disk / "metrics.json"
    metrics.write_text('{"old": 1}')
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(OSError, match=rf"cannot write {metrics}: Read-only file system; the previous version"):
        atomic.write_text(metrics, '{"new": 2}')
    assert metrics.read_text() == '{"old": 1}'

    # Through a stage command: one clear line, exit 1.
    ws = workspace(tmp_path / "ws", ["train.epochs=1", "model.channels=8", "train.device=cpu"])
    (ws / "data/models").symlink_to(small_disk)
    proc = run([sys.executable, "-m", "gan", "train"], ws, check=False)
    assert proc.returncode == 1
    assert (
        "error in stage train: [Errno 30] cannot write data/models/generator.pt: Read-only file system" in proc.stderr
    )


def test_hostile_pickle_is_refused_by_every_loader(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"state_dict": Exploit()}))
    torch.save({"model_config": {"arch": "mlp"}, "state_dict": Exploit(), "meta": {}}, tmp_path / "evil2.pt")
    from gan.classifier import load_classifier

    for loader, path in ((load_checkpoint, evil), (load_generator, tmp_path / "evil2.pt"), (load_classifier, evil)):
        with pytest.raises(pickle.UnpicklingError):
            loader(path)
    assert not marker.exists(), "loading a checkpoint ran code"


def dvc_repo(root: Path) -> Path:
    root.mkdir()
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        run(cmd, root)
    data = root / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(300):
        (data / f"f{i:03d}.bin").write_bytes(rng.bytes(200_000))
    run(["dvc", "add", "data"], root)
    return root


def test_dvc_push_to_a_broken_or_missing_remote_then_a_rerun_works(tmp_path):
    repo = dvc_repo(tmp_path / "repo")
    cache_files = sorted(p for p in (repo / ".dvc/cache").rglob("*") if p.is_file())
    proc = run(["dvc", "push"], repo, check=False)
    assert proc.returncode != 0 and "no remote specified" in (proc.stdout + proc.stderr).lower()

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the remote folder should be")
    run(["dvc", "remote", "add", "-d", "store", str(blocker / "remote")], repo)
    proc = run(["dvc", "push"], repo, check=False)
    assert proc.returncode != 0 and f"Not a directory: '{blocker}" in proc.stderr  # DVC names the bad path
    assert sorted(p for p in (repo / ".dvc/cache").rglob("*") if p.is_file()) == cache_files  # cache intact

    remote = tmp_path / "remote"
    run(["dvc", "remote", "modify", "store", "url", str(remote)], repo)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    push = subprocess.Popen(
        ["dvc", "push", "-j", "1"], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    while push.poll() is None and not (remote.exists() and any(p.is_file() for p in remote.rglob("*"))):
        time.sleep(0.01)
    push.send_signal(signal.SIGKILL)  # interrupted mid-push (if it has not finished already)
    push.wait()
    run(["dvc", "push"], repo)
    assert "in sync" in run(["dvc", "status", "-c"], repo).stdout.lower()
    assert len([p for p in remote.rglob("*") if p.is_file()]) >= 300
