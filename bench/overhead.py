"""Pipeline overhead when nothing changed: a no-op `dvc repro` and a no-op Prefect flow run.

    python bench/overhead.py      # in a workspace where the pipeline is up to date

The flow run uses the ephemeral API, so its time includes starting that server
(with a fresh PREFECT_HOME: the worst case, as on a new machine).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    ran = [line for line in proc.stdout.splitlines() if line.startswith("Running stage") and "'source'" not in line]
    if ran:  # `source` runs every time (it looks at what the source holds); any other stage means work was done
        raise SystemExit(f"the pipeline is not up to date here ({ran[0]}): run it first")
    return time.perf_counter() - t0


def main() -> None:
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{bindir}:{os.environ['PATH']}"}
    env.pop("PREFECT_API_URL", None)
    repro = [timed([sys.executable, "-m", "dvc", "repro"], env) for _ in range(3)]
    print(f"no-op dvc repro: {min(repro):.2f} s (best of 3; all: {', '.join(f'{t:.2f}' for t in repro)})")
    with tempfile.TemporaryDirectory() as home:
        env.update(PREFECT_HOME=home, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120")
        first = timed([sys.executable, "-m", "flows.pipeline"], env)
        again = timed([sys.executable, "-m", "flows.pipeline"], env)
    print(f"no-op flow run incl. ephemeral server start: {first:.1f} s (fresh PREFECT_HOME), {again:.1f} s (warm)")


if __name__ == "__main__":
    main()
