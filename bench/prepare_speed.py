"""Prepare-stage speed on a folder source: a full run, then an incremental run after ~10 % more images.

    python bench/prepare_speed.py [--n 2000] [--workers N] [--resolution 64] [--keep DIR]

Builds a synthetic folder of N images in a temporary directory (PNG, JPEG and WebP; sizes from 48 to 640 px
on a side, portrait and landscape; modes L, RGB, RGBA and P; about a third in colour), runs `gan.data.prepare.prepare`
on it with an empty decode cache, adds N/10 new images and runs it again. Prints images/s of both runs (every
image in the folder over the wall time, so the incremental run's rate counts the images it took from the
cache), their ratio, how many were decoded vs taken from the cache, the peak RSS of this process and of the
worker processes, and the CPU (`lscpu`'s model name).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gan.core.config import DataConfig  # noqa: E402
from gan.data.prepare import prepare  # noqa: E402

FORMATS = (("png", {}), ("jpg", {"quality": 90}), ("webp", {"quality": 85}))


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no lscpu)"
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")]
    return names[0] if names else "unknown"


def synthetic_image(i: int) -> tuple[Image.Image, str, dict]:
    """Image i: smooth gradients plus noise (compresses like a photo, not like flat colour), its format."""
    rng = np.random.default_rng(i)
    w, h = (int(s) for s in rng.integers(48, 641, 2))
    y, x = np.mgrid[0:h, 0:w]
    base = (np.sin(x / rng.uniform(5, 40)) + np.cos(y / rng.uniform(5, 40))) * 60 + 128
    planes = [base + rng.normal(0, 12, (h, w)) for _ in range(3)]
    if i % 3:  # two thirds grey (R = G = B), a third in colour
        planes = [planes[0]] * 3
    rgb = np.clip(np.stack(planes, -1), 0, 255).astype(np.uint8)
    im = Image.fromarray(rgb, "RGB")
    mode = ("RGB", "L", "RGBA", "P")[i % 4]
    if mode == "RGBA":
        im.putalpha(Image.fromarray(np.clip(x * 255 // max(w - 1, 1), 0, 255).astype(np.uint8)))
    elif mode != "RGB":
        im = im.convert(mode)
    ext, kw = FORMATS[i % len(FORMATS)]
    if ext == "jpg" and im.mode in ("RGBA", "P"):
        im = im.convert("RGB")
    return im, ext, kw


def build(folder: Path, start: int, count: int) -> None:
    for i in range(start, start + count):
        im, ext, kw = synthetic_image(i)
        sub = folder / f"part{i % 7}"
        sub.mkdir(parents=True, exist_ok=True)
        im.save(sub / f"img{i:06d}.{ext}", **kw)


def timed(data: DataConfig, raw: Path, out: Path, cache: Path, workers: int | None) -> tuple[float, dict]:
    t0 = time.perf_counter()
    summary = prepare(data, raw, out, cache, workers=workers)
    return time.perf_counter() - t0, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="images in the first run (default 2000)")
    ap.add_argument("--workers", type=int, default=None, help="decode processes (default: os.cpu_count())")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--keep", type=Path, default=None, help="build the folder here and keep it (default: a temp dir)")
    args = ap.parse_args()
    if args.n < 10:
        ap.error("--n: at least 10 images")

    work = Path(args.keep or tempfile.mkdtemp(prefix="prepare-bench-"))
    raw, cache = work / "raw", work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    t0 = time.perf_counter()
    build(raw, 0, args.n)
    print(f"cpu: {cpu_model()}; {os.cpu_count()} CPUs; workers {args.workers or os.cpu_count()}")
    built_s = time.perf_counter() - t0
    print(f"built {args.n} synthetic images (png/jpg/webp, 48-640 px, L/RGB/RGBA/P) in {built_s:.1f} s")
    # the part0..part6 subfolders are read as 7 classes (labels from subfolders)
    data = DataConfig(dataset="folder", source=str(raw), resolution=args.resolution, max_bad_fraction=0.0)

    full_s, full = timed(data, raw, work / "out", cache, args.workers)
    extra = max(1, args.n // 10)
    build(raw, args.n, extra)
    inc_s, inc = timed(data, raw, work / "out", cache, args.workers)

    full_rate, inc_rate = args.n / full_s, (args.n + extra) / inc_s
    print(
        f"full prepare       : {args.n:7d} images in {full_s:7.2f} s = {full_rate:8.1f} images/s "
        f"(decoded {full['run']['decoded_now']}, from cache {full['run']['from_cache']})"
    )
    print(
        f"incremental (+{extra}): {args.n + extra:7d} images in {inc_s:7.2f} s = {inc_rate:8.1f} images/s "
        f"(decoded {inc['run']['decoded_now']}, from cache {inc['run']['from_cache']})"
    )
    print(f"ratio incremental / full: {inc_rate / full_rate:.1f}x images/s")
    print(f"output: {inc['shape']} ({inc['label_source']} labels), train {inc['splits']['train']['n']}, "
          f"test {inc['splits']['test']['n']}, duplicates {inc['counts']['duplicates']}")  # fmt: skip
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS: {me:.0f} MB (this process), {kids:.0f} MB (largest worker process)")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
