"""The benchmark folders, each as a workspace a sweep runs in.

    python bench/folders.py --tgz emoji-datasource-google-16.0.0.tgz --folders emoji32-1k emoji32 fashion32
    cd bench-output/folders/emoji32 && python -m flows.sweep ../../../sweeps/recipes.yaml

Folders (each built once under --root/sources):

- `emoji32`, `emoji64`: the npm package emoji-datasource-google (examples/emoji_folder.py: one class per category)
  at 32 and 64 px;
- `emoji32-flat`: the same images flattened into one folder (unlabeled: the judge alone scores it);
- `emoji32-1k`: a seeded 1,000-image subset of emoji32;
- `fashion32`: the first 12,000 Fashion-MNIST training images from the Debian package, written as a folder of PNGs in
  class subfolders (the folder path, not the built-in reader), prepared at 32 px (every architecture's size).

Each workspace (--root/NAME) is this repository's files in a git repository of its own with `data.dataset: folder`
and the folder as its source; its shared stages (prepare, classifier, judge, reference: `dvc repro reference`) are
run with the default settings (and any `--set`) and committed, so a sweep there trains and scores only its trials.
The workspace's `params.yaml` keeps every other default. `bench/sweep_table.py` puts the sweep reports of several
workspaces side by side.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gan.core.config import parse_override  # noqa: E402

FOLDERS = ("emoji32", "emoji64", "emoji32-flat", "emoji32-1k", "fashion32")
FASHION_IDX = Path("/usr/share/datasets/fashion-mnist")
FASHION_IMAGES = 12_000
IDENTITY = ["-c", "user.name=bench", "-c", "user.email=bench@localhost"]


def machine_name() -> str:
    """The CPU as `lscpu` names it (model name, family/model, AVX-512 or not) and its cores."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        flags = info.get("Flags", "")
        avx = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else ""
        return (f"{info.get('Model name', '?').strip()} (family {info.get('CPU family', '?').strip()} model "
                f"{info.get('Model', '?').strip()}, {avx}), {os.cpu_count()} cores")  # fmt: skip
    except (OSError, subprocess.CalledProcessError, ValueError):
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


# ---------------------------------------------------------------- folders


def _emoji(root: Path, tgz: Path) -> Path:
    sys.path.insert(0, str(REPO / "examples"))
    import emoji_folder

    src = root / "sources" / "emoji"
    if not src.exists():
        emoji_folder.build(tgz, src)
    return src


def _flat(src: Path, dest: Path) -> Path:
    if not dest.exists():
        dest.mkdir(parents=True)
        for f in sorted(src.rglob("*.png")):
            shutil.copy(f, dest / f"{f.parent.name}-{f.name}")
    return dest


def _subset(src: Path, dest: Path, n: int, seed: int = 0) -> Path:
    if not dest.exists():
        files = sorted(src.rglob("*.png"))
        for i in np.sort(np.random.default_rng(seed).choice(len(files), n, replace=False)):
            f = files[i]
            (dest / f.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dest / f.parent.name / f.name)
    return dest


def _fashion(dest: Path, n: int) -> Path:
    """The first n Fashion-MNIST training images as PNGs in one subfolder per class."""
    if dest.exists():
        return dest
    with gzip.open(FASHION_IDX / "train-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION_IDX / "train-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for i in range(n):
        (tmp / f"class-{labels[i]}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(tmp / f"class-{labels[i]}" / f"{i:05d}.png")
    tmp.rename(dest)
    return dest


def folder_source(name: str, root: Path, tgz: Path | None, fashion_images: int = FASHION_IMAGES) -> tuple[Path, int]:
    """(the folder, the resolution to prepare it at)."""
    if name == "fashion32":
        return _fashion(root / "sources" / f"fashion28-{fashion_images}", fashion_images), 32
    if tgz is None:
        raise SystemExit(f"{name}: needs --tgz (an `npm pack emoji-datasource-google@16.0.0` file)")
    emoji = _emoji(root, tgz)
    if name == "emoji32-flat":
        return _flat(emoji, root / "sources" / "emoji-flat"), 32
    if name == "emoji32-1k":
        return _subset(emoji, root / "sources" / "emoji-1k", 1000), 32
    return emoji, int(name.removeprefix("emoji"))


# ---------------------------------------------------------------- workspaces


def sh(cmd: list[str], cwd: Path, env: dict | None = None) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           **(env or {})}  # fmt: skip
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def git_workspace(ws: Path, settings: dict, stages: str = "reference") -> Path:
    """This repository's files (as git sees them, data/ aside) in a fresh git repository at `ws`, `settings`
    ({section: {key: value}}) merged into params.yaml, `dvc repro STAGES` run and everything committed. Built once:
    an existing workspace (its dvc.lock committed) is returned as it is."""
    if (ws / "dvc.lock").exists() and not sh(["git", "status", "--porcelain", "dvc.lock"], ws).strip():
        return ws
    ws.mkdir(parents=True, exist_ok=True)
    for f in sh(["git", "ls-files", "-co", "--exclude-standard"], REPO).split():
        if not f.startswith("data/") and (REPO / f).is_file():
            (ws / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, ws / f)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in settings.items():
        params[section].update(values)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if not (ws / ".git").exists():
        sh(["git", "init", "-q"], ws)
    sh(["git", "add", "-A"], ws)
    sh(["git", *IDENTITY, "commit", "-qm", "bench workspace", "--allow-empty"], ws)
    t0 = time.perf_counter()
    print(f"{ws.name}: dvc repro {stages} ...", flush=True)
    sh([sys.executable, "-m", "dvc", "repro", stages], ws)
    print(f"{ws.name}: shared stages in {time.perf_counter() - t0:.0f} s", flush=True)
    sh(["git", "add", "-A"], ws)
    sh(["git", *IDENTITY, "commit", "-qm", f"bench workspace: dvc repro {stages}"], ws)
    return ws


def workspace(name: str, root: Path, tgz: Path | None, device: str = "cpu", overrides: list[str] = (),
              fashion_images: int = FASHION_IMAGES) -> Path:  # fmt: skip
    """The folder `name` as a workspace at root/NAME: prepared, with its classifier, judge and reference (the default
    settings, and `overrides` as KEY=VALUE), committed."""
    src, resolution = folder_source(name, root, tgz, fashion_images)
    settings: dict = {"data": {"dataset": "folder", "source": str(src.resolve()), "resolution": resolution},
                      "train": {"device": device}}  # fmt: skip
    for item in overrides:
        (section, field), value = parse_override(item)
        settings.setdefault(section, {})[field] = value
    return git_workspace(root / name, settings)


def judge_verdict(ws: Path) -> dict:
    return json.loads((ws / "data" / "metrics" / "judge.json").read_text()).get("soundness", {})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folders", nargs="+", default=["emoji32-1k", "emoji32", "fashion32"], choices=FOLDERS)
    ap.add_argument("--tgz", type=Path, default=None, help="emoji folders: the npm package's tarball")
    ap.add_argument("--root", type=Path, default=REPO / "bench-output" / "folders")
    ap.add_argument("--fashion-images", type=int, default=FASHION_IMAGES)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting of every workspace (e.g. its classifier's or judge's)")  # fmt: skip
    args = ap.parse_args()
    for name in args.folders:
        ws = workspace(name, args.root.resolve(), args.tgz, "cpu", args.overrides, args.fashion_images)
        print(f"{name}: {ws} (judge soundness: {judge_verdict(ws).get('reason', '?')})", flush=True)


if __name__ == "__main__":
    main()
