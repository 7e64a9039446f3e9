"""How the flow reads a stage's output: tqdm bars become progress, every other line is logged."""

from gan.lifecycle.dvcrun import split_progress


def test_a_log_line_written_while_a_bar_is_drawn_is_kept():
    bar = "train:   7%|▋         | 7/100 [00:41<04:09, step 230/3298, loss_d 0.512, FD 1.5e+03 (best 1.5e+03)]"
    log = "2026-12-02 15:13:38,405 INFO gan.training.train: timed over the first 20 steps: 0.300 s/step"
    assert split_progress(bar + log) == ((7, 100), log)  # the log line shares the bar's line: both are kept
    assert split_progress(bar) == ((7, 100), "")
    classifier = "classifier:  10%|█         | 81/800 [00:24<04:59,  2.40step/s, loss=0.498]"
    assert split_progress(classifier) == ((81, 800), "")
    assert split_progress("stage 'train' done in 3.0 s") == (None, "stage 'train' done in 3.0 s")


def test_a_stage_run_by_the_flow_logs_its_output_but_not_dvcs_git_and_push_advice(tmp_path):
    """The flow commits dvc.lock and pushes itself: DVC's `git add` / autostage / `dvc push` hints, which plain
    `dvc repro` prints after every stage, are not repeated in each task's log."""
    import os
    import subprocess
    import sys

    from gan.lifecycle.dvcrun import repro_stage

    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, env=env)
    say = "import pathlib; print('stage says hi'); pathlib.Path('{}').write_text('x')"
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n"
        f'  a:\n    cmd: python -c "{say.format("a.txt")}"\n    outs: [a.txt]\n'
        f'  b:\n    cmd: python -c "{say.format("b.txt")}"\n    outs: [b.txt]\n'
    )
    plain = subprocess.run([sys.executable, "-m", "dvc", "repro", "b"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, check=True).stdout  # fmt: skip
    assert "git add" in plain and "dvc push" in plain  # what DVC says after a stage
    lines: list[str] = []
    assert repro_stage("a", tmp_path, on_line=lines.append) is True  # it ran
    assert "stage says hi" in lines and (tmp_path / "a.txt").exists()
    again: list[str] = []
    assert repro_stage("a", tmp_path, on_line=again.append) is False  # DVC found it up to date
    assert "stage says hi" not in again
    assert not [x for x in lines if "git add" in x or "autostage" in x or "dvc push" in x], lines


# ---- the lifeline: a trial's process tree ends with the worker that started it


STARTER = r"""
import subprocess, sys, time
from pathlib import Path

# a trial's command as a worker thread starts it: the lifeline, then a child that starts a grandchild (dvc exp run ->
# python -m gan train), each writing its pid
tree = (
    "import os, subprocess, sys, time; from pathlib import Path; out = Path(sys.argv[1]);"
    "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']);"
    "(out / 'child').write_text(str(os.getpid())); (out / 'grandchild').write_text(str(g.pid)); time.sleep(300)"
)
out = Path(sys.argv[1])
proc = subprocess.Popen([sys.executable, "-m", "gan.lifecycle.lifeline", sys.executable, "-c", tree, str(out)],
                        stdin=subprocess.PIPE, start_new_session=True)
(out / "lifeline").write_text(str(proc.pid))
time.sleep(300)
"""


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (exited, not yet reaped) is not running
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_killed_starter_takes_its_whole_process_tree_with_it(tmp_path):
    """SIGKILL of the process that started a lifeline (a Dask worker in a sweep): the lifeline, its child and the
    child's child all end within seconds; nothing of the tree is left."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from .conftest import REPO

    starter = subprocess.Popen([sys.executable, "-c", STARTER, str(tmp_path)], cwd=REPO)
    deadline = time.monotonic() + 60
    while not (tmp_path / "grandchild").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    pids = {name: int((tmp_path / name).read_text()) for name in ("lifeline", "child", "grandchild")}
    assert all(_alive(p) for p in pids.values()), pids
    os.kill(starter.pid, signal.SIGKILL)
    starter.wait()
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = {name: p for name, p in pids.items() if _alive(p)}
    for p in left.values():
        os.kill(p, signal.SIGKILL)
    assert not left, f"still running after the starter was killed: {left}"


def test_a_lifeline_that_finishes_returns_its_commands_exit_status(tmp_path):
    import subprocess
    import sys
    import time

    from .conftest import REPO

    proc = subprocess.Popen([sys.executable, "-m", "gan.lifecycle.lifeline", sys.executable, "-c", "import time; "
                             "time.sleep(1); raise SystemExit(3)"], stdin=subprocess.PIPE, cwd=REPO)  # fmt: skip
    try:
        assert proc.wait(timeout=60) == 3  # the starter alive (the pipe open): the command runs to its end
    finally:
        proc.stdin.close()
    # the starter closing the pipe while the command runs: the group is killed
    proc = subprocess.Popen([sys.executable, "-m", "gan.lifecycle.lifeline", sys.executable, "-c", "import time; "
                             "time.sleep(60)"], stdin=subprocess.PIPE, cwd=REPO)  # fmt: skip
    time.sleep(1)
    proc.stdin.close()
    assert proc.wait(timeout=20) == -9
