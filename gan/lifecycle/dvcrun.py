"""Run DVC stages from Python, one at a time, streaming their output.

The Prefect flow uses these so that a stage it runs is recorded in `dvc.lock`
exactly as `dvc repro` records it (it *is* `dvc repro`, one stage at a time),
and a stage DVC reports up to date is skipped.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

ALWAYS_CHANGED = "always changed"  # how `dvc status --json` reports an always_changed stage
# DVC's advice after a repro, which the flow acts on itself (it commits dvc.lock and pushes): not logged per task
_HINTS = re.compile(
    r"^(To track the changes with git, run:|git add \S|To enable auto staging, run:|dvc config core\.autostage true$"
    r"|Use `dvc push` to send your updates to remote storage\.)"
)
_UNCHANGED = "Stage '{}' didn't change, skipping"  # what `dvc repro` says of a stage that is up to date
_PROGRESS = re.compile(r"^(?P<desc>[\w-]+):\s+\d+%\|.*?\|\s*(?P<n>\d+)/(?P<total>\d+)(?: \[[^\]]*\])?")


def split_progress(line: str) -> tuple[tuple[int, int] | None, str]:
    """A captured output line -> ((n, total) of a tqdm bar at its start, or None; the text after the bar).

    A log line written while a bar is drawn ends up on the bar's line (the bar is redrawn after a carriage return,
    the log line ends with a newline), so the text after the bar is kept as a line of its own."""
    m = _PROGRESS.match(line)
    if not m:
        return None, line
    return (int(m["n"]), int(m["total"])), line[m.end() :].strip()


class StageFailed(RuntimeError):
    """A DVC stage exited non-zero; the message carries the stage's last output lines."""


def _env() -> dict[str, str]:
    # The stage commands are `python -m gan ...`: make sure `python` is this interpreter.
    bindir = str(Path(sys.executable).parent)
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}


def dvc(args: list[str], repo: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=_env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise StageFailed(f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


def stage_definitions(repo: str | Path) -> dict[str, dict]:
    """dvc.yaml's stages, by name, as written."""
    return yaml.safe_load((Path(repo) / "dvc.yaml").read_text())["stages"]


def stage_names(repo: str | Path) -> list[str]:
    return list(stage_definitions(repo))


def watch_stages(repo: str | Path) -> list[str]:
    """The stages dvc.yaml marks `always_changed`: they look at the source on every run (`source`)."""
    return [name for name, stage in stage_definitions(repo).items() if stage.get("always_changed")]


def is_current(stage: str | None, repo: str | Path) -> bool:
    """True when DVC says the stage (deps, params, outs) is up to date; stage None: the whole pipeline.

    A stage marked `always_changed` (the `source` watcher) is reported as "always changed" even when nothing
    changed; that alone is not a change (the stages that depend on its output say whether it changed).
    """
    proc = dvc(["status", "--json", *([stage] if stage else [])], repo)
    return all(v == [ALWAYS_CHANGED] for v in json.loads(proc.stdout or "{}").values())


def out_hash(stage: str, repo: str | Path, path: str | Path | None = None) -> str | None:
    """The md5 dvc.lock records for the stage's output `path` (default: its first, as dvc.lock sorts them);
    None if never run."""
    lock = Path(repo) / "dvc.lock"
    if not lock.exists():
        return None
    outs = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).get(stage, {}).get("outs", [])
    if path is not None:
        outs = [o for o in outs if o.get("path") == Path(path).as_posix()]
    return outs[0].get("md5") if outs else None


def stream(
    args: list[str],
    repo: str | Path,
    on_line: Callable[[str], None],
    on_progress: Callable[[int, int], None] | None = None,
    env: dict[str, str] | None = None,
    lifeline: bool = False,
) -> tuple[int, list[str]]:
    """`dvc ARGS` with each output line (and progress-bar state) reported as it comes, but DVC's advice to
    `git add` and `dvc push`. Returns the exit status and the last 30 lines reported. `env`: more variables.
    `lifeline`: DVC and everything it starts run as one process group that is killed, whole, when this process
    dies or stops reading (`gan.lifecycle.lifeline`)."""
    cmd = [sys.executable, "-m", "dvc", *args]
    if lifeline:
        cmd = [sys.executable, "-m", "gan.lifecycle.lifeline", *cmd]
    proc = subprocess.Popen(
        cmd,
        cwd=repo,
        env={**_env(), **(env or {})},
        stdin=subprocess.PIPE if lifeline else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=lifeline,
    )
    try:
        return _read(proc, on_line, on_progress)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()  # the lifeline's end: a group still running is killed
        proc.wait()


def _read(proc: subprocess.Popen, on_line: Callable[[str], None], on_progress: Callable[[int, int], None] | None
          ) -> tuple[int, list[str]]:  # fmt: skip
    tail: list[str] = []
    buf = ""
    assert proc.stdout is not None
    while True:
        ch = proc.stdout.read(1)
        if ch in ("\n", "\r", ""):
            line = buf.strip()
            buf = ""
            if line:
                progress, line = split_progress(line)
                if progress and on_progress:
                    on_progress(*progress)
                if line and not _HINTS.match(line):
                    on_line(line)
                    tail = (tail + [line])[-30:]
            if ch == "":
                break
        else:
            buf += ch
    return proc.wait(), tail


def repro_stage(
    stage: str, repo: str | Path, on_line: Callable[[str], None], on_progress: Callable[[int, int], None] | None = None
) -> bool:
    """`dvc repro --single-item STAGE`, streamed (`stream`). False when DVC found the stage up to date (it ran
    nothing), True when it ran the stage (or restored its outputs from DVC's run cache)."""
    rc, tail = stream(["repro", "--single-item", stage], repo, on_line, on_progress)
    if rc != 0:
        raise StageFailed(f"stage {stage!r} failed (exit {rc}); last output:\n" + "\n".join(tail))
    return _UNCHANGED.format(stage) not in tail
