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

from gan.core import atomic
from gan.core.config import ModelConfig, TrainConfig, apply_overrides
from gan.training.models import load_generator, save_generator
from gan.training.train import DivergenceError, TrainOutputs, load_checkpoint, train

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


_KILLED_MID_WRITE = """
import os, signal, sys
from contextlib import ExitStack
from gan.core import atomic
with ExitStack() as writes:
    for path in sys.argv[1:]:
        tmp = writes.enter_context(atomic.atomic_path(path))
        tmp.write_bytes(b"half-written")
        print(tmp, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_mid_write(cwd: Path, *paths: str) -> list[Path]:
    """The temp files `kill -9` leaves: a process starts an atomic write of each path and is killed."""
    proc = subprocess.run([sys.executable, "-c", _KILLED_MID_WRITE, *paths], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    temps = [cwd / line for line in proc.stdout.split()]
    assert len(temps) == len(paths) and all(t.is_file() for t in temps)
    return temps


def logged_steps(log: Path) -> list[int]:
    """Steps of the complete rows of a log.tsv that may be mid-append."""
    rows = log.read_text().split("\n")[1:-1] if log.exists() else []
    return [int(r.split("\t", 1)[0]) for r in rows]


def with_probe(ws: Path) -> Path:
    """Add what the quality probe needs: real test images and a trained domain classifier (tested for soundness)."""
    from gan.core.config import ClassifierConfig
    from gan.evaluation.classifier import train_classifier

    prepared = ws / "data/prepared"
    for name, n, seed in (("train", 2000, 0), ("test", 200, 1)):  # a bar whose row is the label, on faint noise
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, 8, n)
        images = rng.integers(0, 40, (n, 1, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            images[i, 0, 3 * k + 2 : 3 * k + 4, 2:26] = 220
        np.savez(prepared / f"{name}.npz", images=images, labels=labels)
    (ws / "data/models").mkdir(parents=True, exist_ok=True)
    train_classifier(ClassifierConfig(steps=20), prepared / "train.npz", prepared / "test.npz",
                     ws / "data/models/classifier.pt", ws / "data/metrics/classifier.json", num_classes=8,
                     device="cpu", progress_bar=False)  # fmt: skip
    return ws


def kill_mid_epoch_then_rerun(tmp_path: Path, overrides: list[str], setup=lambda ws: ws) -> tuple[Path, Path, dict]:
    """Train once uninterrupted; train again, kill -9 just after a mid-epoch checkpoint (rows logged past it), leave
    half-written files in every output, and rerun. Returns (uninterrupted, rerun workspace, the checkpoint left)."""
    ref = setup(workspace(tmp_path / "uninterrupted", overrides))
    run([sys.executable, "-m", "gan", "train"], ref)

    ws = setup(workspace(tmp_path / "killed", overrides))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.Popen([sys.executable, "-m", "gan", "train"], cwd=ws, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    ckpt, log = ws / "data/checkpoints/last.pt", ws / "data/train/log.tsv"
    per_epoch = 2000 // 64  # 31 steps; checkpoints every 20 steps, log rows every 5
    deadline = time.monotonic() + 120
    seen = None
    while time.monotonic() < deadline and proc.poll() is None:
        if ckpt.exists():
            c = load_checkpoint(ckpt)
            epoch_end = (c["epoch"] + 1) * per_epoch
            # After a mid-epoch checkpoint, with rows logged past it, 5+ steps before the epoch's end.
            if c["batch"] > 0 and c["step"] + 5 <= max(logged_steps(log), default=0) <= epoch_end - 5:
                proc.send_signal(signal.SIGKILL)
                seen = c
                break
        time.sleep(0.02)
    proc.wait()
    assert seen is not None and proc.returncode == -signal.SIGKILL, "training ended before it could be killed"
    # What the rerun finds: the mid-epoch checkpoint, rows past it to drop and replay, the epoch unfinished.
    left = load_checkpoint(ckpt)
    assert (left["step"], left["epoch"], left["batch"]) == (seen["step"], seen["epoch"], seen["batch"])
    assert left["batch"] > 0 and left["step"] == left["epoch"] * per_epoch + left["batch"]
    assert left["step"] < logged_steps(log)[-1] < (left["epoch"] + 1) * per_epoch
    assert not (ws / f"data/train/samples/epoch_{left['epoch'] + 1:03d}.png").exists()
    assert not (ws / "data/models/generator.pt").exists()
    # A kill can land inside any write; leave what such kills leave, in every output of the stage.
    killed_mid_write(ws, "data/train/log.tsv", "data/train/quality.tsv",
                     f"data/train/samples/epoch_{left['epoch'] + 1:03d}.png", "data/checkpoints/last.pt",
                     "data/models/generator.pt")  # fmt: skip

    run([sys.executable, "-m", "gan", "train"], ws)
    summary = yaml.safe_load((ws / "data/train/summary.json").read_text())
    assert summary["resumed_from_step"] == left["step"]
    a = torch.load(ref / "data/models/generator.pt", weights_only=True)["state_dict"]
    b = torch.load(ws / "data/models/generator.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from an uninterrupted run"
    assert (ref / "data/train/log.tsv").read_text() == (ws / "data/train/log.tsv").read_text()
    assert not list((ws / "data").rglob("*.tmp")), "a half-written file was left behind"
    return ref, ws, left


def test_kill_9_with_the_quality_probe_best_snapshot_and_patience(tmp_path):
    """kill -9 mid-epoch, then a rerun resumes bit-identically (kill_mid_epoch_then_rerun: the same weights and
    log.tsv as an uninterrupted run, no temp file left). The probe's scores, the best snapshot and the patience
    count survive too: the rerun keeps the same snapshot and stops at the same step, for the same reason, as the
    uninterrupted run. (One run covers both: a kill without the probe takes the same resume path.)"""
    probed = [*TRAIN, "train.eval_every=10", "train.eval_samples=200", "train.keep=best", "train.patience=3"]
    ref, ws, left = kill_mid_epoch_then_rerun(tmp_path, probed, with_probe)
    assert "best" in left  # the checkpoint the rerun resumed from carried the probe's state
    ref_summary, summary = (yaml.safe_load((w / "data/train/summary.json").read_text()) for w in (ref, ws))
    assert summary["probe"] == "classifier every 10 steps"
    for key in ("steps", "stop", "kept"):
        assert summary[key] == ref_summary[key], key
    assert (ref / "data/train/quality.tsv").read_text() == (ws / "data/train/quality.tsv").read_text()


def test_a_stage_removes_only_its_own_stale_temps_when_it_starts(tmp_path, monkeypatch):
    """Temps that kill -9 left in a stage's outputs are gone when the stage body starts; files that only look
    like them, and temps of files the stage does not write (another stage's may be mid-write), stay."""
    from gan import cli

    ours = killed_mid_write(tmp_path, "data/models/generator.pt", "data/train/log.tsv",
                            "data/train/samples/epoch_003.png", "data/checkpoints/last.pt")  # fmt: skip
    not_ours = killed_mid_write(tmp_path, "data/models/classifier.pt", "data/models/generator.pt.old",
                                "data/metrics/metrics.json", "data/samples/samples.npz")  # fmt: skip
    (tmp_path / "notes.txt").write_text("a user's file")
    look_alikes = [tmp_path / "data/train" / name for name in (
        ".log.tsv.tmp", "log.tsv.abcd1234.tmp", ".log.tsv.ABCD1234.tmp", ".log.tsv.abcd123.tmp",
        ".log.tsv.abcd1234.tmp.bak", "notes.tmp", ".log.tsv.abcd1234.TMP",
    )]  # fmt: skip
    for f in look_alikes:
        f.write_text("a user's file")
    link = tmp_path / "data/train/.log.tsv.zzzzzzzz.tmp"
    link.symlink_to(tmp_path / "notes.txt")
    at_start = set()
    monkeypatch.setitem(cli.STAGES, "train", lambda p: at_start.update(tmp_path.rglob("*")))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--params", str(REPO / "params.yaml")]) == 0
    assert at_start, "the stage did not run"
    assert not at_start & set(ours), "stale temps left at stage start"
    assert set(not_ours + look_alikes + [link]) <= at_start, "a file that is not a stale temp of the stage was removed"
    assert (tmp_path / "notes.txt").read_text() == "a user's file"


def test_each_stages_outputs_are_its_dvc_yaml_outs():
    """The cleanup at stage start covers exactly what dvc.yaml says the stage writes."""
    from gan.cli import OUTPUTS, STAGES

    declared = {}
    for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items():
        entries = stage.get("outs", []) + stage.get("metrics", [])
        declared[name] = {e if isinstance(e, str) else next(iter(e)) for e in entries}
    assert OUTPUTS.keys() == STAGES.keys() == declared.keys()
    assert {k: {str(p) for p in v} for k, v in OUTPUTS.items()} == declared


def test_divergence_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, tiny_split, monkeypatch):
    from gan.training.losses import LOSSES, GanLoss, d_loss, g_loss

    out = TrainOutputs(tmp_path / "generator.pt", tmp_path / "ckpt", tmp_path / "log")
    out.generator.write_bytes(b"previous generator")
    calls = {"n": 0}
    real_d_loss = d_loss

    def poisoned(real, fake):  # the loss explodes at step 13
        calls["n"] += 1
        loss = real_d_loss(real, fake)
        return loss * float("nan") if calls["n"] >= 13 else loss

    monkeypatch.setitem(LOSSES, "ns", GanLoss("ns", poisoned, g_loss))
    cfg = TrainConfig(epochs=3, batch_size=32, checkpoint_every=5, log_flush_every=1, device="cpu")
    with pytest.raises(DivergenceError, match=r"diverged at step 13: loss_d=nan"):
        train(ModelConfig(channels=8, z_dim=16), cfg, tiny_split, out, progress_bar=False)
    ckpt = load_checkpoint(out.checkpoint_dir / "last.pt")
    assert ckpt["step"] == 10 and all(torch.isfinite(v).all() for v in ckpt["G"].values() if v.is_floating_point())
    assert out.generator.read_bytes() == b"previous generator"


@pytest.mark.parametrize("net", ["generator", "discriminator"])
def test_nan_weights_are_never_checkpointed(net, tmp_path, tiny_split, monkeypatch):
    """A NaN the losses cannot show -- a BatchNorm running mean, unused in training mode -- is caught by the weight
    check before the checkpoint at step 5: the error names the tensor, and nothing is saved."""
    import gan.training.train as gt

    build, poisoned_buffer = getattr(gt, f"build_{net}"), []

    def poisoned(cfg, shape, num_classes=0):  # its first BatchNorm's running mean is NaN; each step keeps it NaN
        module = build(cfg, shape, num_classes)
        name, bn = next((n, m) for n, m in module.named_modules() if isinstance(m, torch.nn.BatchNorm2d))
        bn.running_mean.fill_(float("nan"))
        poisoned_buffer.append(f"{name}.running_mean")
        return module

    monkeypatch.setattr(gt, f"build_{net}", poisoned)
    cfg = TrainConfig(epochs=1, batch_size=32, checkpoint_every=5, log_flush_every=1, device="cpu")
    out = TrainOutputs(tmp_path / "g.pt", tmp_path / "ckpt", tmp_path / "log")
    with pytest.raises(DivergenceError) as info:
        train(ModelConfig(channels=8, z_dim=16), cfg, tiny_split, out, progress_bar=False)
    assert str(info.value) == f"training diverged at step 5: {net} weight '{poisoned_buffer[0]}' is NaN/inf"
    rows = [r.split("\t") for r in (out.log_dir / "log.tsv").read_text().splitlines()[1:]]
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4, 5]  # the loss check passed every step: the losses were finite
    assert all(np.isfinite(float(v)) for r in rows for v in r[2:4])
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
    from gan.training.models import build_generator

    with pytest.raises(OSError) as info:
        save_generator(target, build_generator(big, (1, 28, 28)), big, {})  # ~3 MB onto a full disk
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
    from gan.evaluation.classifier import load_classifier

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
