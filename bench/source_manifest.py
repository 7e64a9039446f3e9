"""Cost of the `source` stage on a large folder: the first look, an unchanged rerun, and a rerun after 1 % more.

    python bench/source_manifest.py [--n 100000] [--size 1024]

The `source` stage runs on every `dvc repro` and every flow run, so what matters is the unchanged rerun: it
must not re-read every file. Builds N files of `--size` random bytes in 100 subfolders, then times
`gan.data.sources.source_manifest` three times (cold hash cache; unchanged; after adding N/100 files), and prints
seconds, files/s, the unchanged/cold ratio, peak RSS and the CPU (`lscpu`'s model name).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from prepare_speed import cpu_model  # noqa: E402

from gan.data.download import FetchSettings  # noqa: E402
from gan.data.sources import RACY_NS, source_manifest  # noqa: E402

SETTLE = RACY_NS / 1e9 + 0.1  # seconds: the hash cache skips files modified this recently (a write may be under way)


def write_files(root: Path, start: int, n: int, size: int) -> None:
    for i in range(start, start + n):
        folder = root / f"d{i % 100:02d}"
        folder.mkdir(exist_ok=True)
        (folder / f"f{i:07d}.bin").write_bytes(os.urandom(size))


def timed(label: str, src: Path, cache: Path, n_files: int) -> float:
    t0 = time.perf_counter()
    m = source_manifest(str(src), "", cache, FetchSettings(progress=False))
    dt = time.perf_counter() - t0
    assert len(m["files"]) == n_files, (len(m["files"]), n_files)
    print(f"{label:<28} {n_files:>8} files  {dt:7.2f} s  {n_files / dt:10.0f} files/s")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=1024, help="bytes per file")
    args = ap.parse_args()
    print(f"CPU: {cpu_model()}; {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        src, cache = Path(tmp) / "src", Path(tmp) / "cache"
        src.mkdir()
        write_files(src, 0, args.n, args.size)
        time.sleep(SETTLE)
        cold = timed("first look (cold cache)", src, cache, args.n)
        warm = timed("unchanged rerun", src, cache, args.n)
        extra = max(1, args.n // 100)
        write_files(src, args.n, extra, args.size)
        time.sleep(SETTLE)
        timed(f"after adding {extra}", src, cache, args.n + extra)
    print(f"unchanged / cold time: {warm / cold:.2f}")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
