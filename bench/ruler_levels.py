"""Does a ruler rank a small folder's quality levels apart? Candidate metrics, each with its 95 % interval, on
four levels: real-vs-real floor < the default model < both its own snapshot at 20 % of its length and real images
blurred (radius 1.5) — and whole models of different recipes in the order of their grids.

    python bench/ruler_levels.py --tgz emoji-datasource-google-16.0.0.tgz --folders emoji32 emoji32-1k \
        --recipe ada=train.augment=color,translation,cutout;train.ada_target=0.6

For each folder (a workspace of bench/folders.py, its shared stages run with the defaults):

1. generators, each trained by the train stage itself (`python -m gan train` in the workspace): the default run
   (its length, probe, keep-best and early stop as a user gets them), each `--recipe` (the default plus its
   settings), and the default run's snapshot at 20 % of the steps it trained (the same seed, stopped there);
2. image sets: `n_gen` samples of each generator; real images blurred (radius 1.5): training images where the
   ruler compares with the test images, test images where it compares with the training images (never a blurred
   copy of a reference image); the real test images (unseen by the generator and by the extractors);
3. in each extractor's features (the workspace's classifier and judge), each candidate ruler with its 95 %
   bootstrap interval:
   - `FD test`: the evaluate stage's FID today: n = |test| images against the test images; the floor is n real
     *training* images (which the extractors were trained on);
   - `KID test`: the same sets, unbiased KID in standardised features;
   - `FD train`: |test| images of each set against *all* training images; the floor is the test images, unseen by
     the extractors like the generated ones are;
   - `KID train`: the same sets, KID.
   A ruler separates the levels when floor < default < {snapshot, blurred} with non-overlapping intervals.
Printed: the tables (markdown) and the machine; written: bench-output/ruler-levels/NAME/ (each generator's grid,
the grids side by side in grids.png, levels.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import save_image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from folders import FOLDERS, machine_name, workspace  # noqa: E402

from gan.core.config import load_params  # noqa: E402
from gan.core.paths import Paths  # noqa: E402
from gan.core.splits import load_split  # noqa: E402
from gan.evaluation.evaluate import generated_images  # noqa: E402
from gan.evaluation.features import ExtractorFiles, build_extractors, embed_all  # noqa: E402
from gan.evaluation.metrics import bootstrap_interval, fid_from_features, kid, paired_bootstrap  # noqa: E402
from gan.evaluation.soundness import BLUR_RADIUS, blur  # noqa: E402
from gan.training.models import load_generator  # noqa: E402

Distance = Callable[[np.ndarray, np.ndarray], float]
SNAPSHOT_SHARE = 0.2


def kid_full(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased KID (standardised by `a`, the real side) over one subset holding every image: no subset draw."""
    m = min(len(a), len(b))
    return kid(a, b, subsets=1, subset_size=m, seed=0)[0]


# --- generators, trained by the train stage itself ---


def train_stage(ws: Path, out: Path, name: str, overrides: list[str]) -> Path:
    """`python -m gan train` in the workspace with `overrides`; its generator and summary copied to out/NAME.*"""
    gen = out / f"{name}.pt"
    if gen.exists():
        return gen
    cmd = [sys.executable, "-m", "gan", "train", *(a for o in overrides for a in ("--set", o))]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ws, check=True)  # the workspace's own copy of this repository's code
    summary = json.loads((Paths(ws).data / "train" / "summary.json").read_text())
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    summary["overrides"] = overrides
    (out / f"{name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    shutil.copy2(Paths(ws).generator, gen)
    print(f"{ws.name}: {name} trained ({summary.get('steps')} steps, {summary['seconds']:.0f} s)", flush=True)
    return gen


def generators(ws: Path, out: Path, recipes: dict[str, list[str]]) -> dict[str, Path]:
    gens = {"default": train_stage(ws, out, "default", [])}
    steps = json.loads((out / "default.json").read_text())["steps"]
    batch = load_params(ws / "params.yaml").train.batch_size
    kimg = round(SNAPSHOT_SHARE * steps) * batch / 1000
    snapshot = ["train.epochs=0", f"train.kimg={kimg}", "train.eval_every=0", "train.keep=last", "train.patience=0"]
    gens["snapshot 20 %"] = train_stage(ws, out, "snapshot20", snapshot)
    for name, overrides in recipes.items():
        gens[name] = train_stage(ws, out, name, overrides)
    return gens


# --- the levels' images and their features ---


def level_features(ws: Path, gens: dict[str, Path], n_gen: int, out: Path) -> dict[str, dict[str, np.ndarray]]:
    """{extractor: {set: features}} for: train (all), test, blurred (the training images), each generator."""
    p, paths = load_params(ws / "params.yaml"), Paths(ws)
    train, test = load_split(paths.train_split).images, load_split(paths.test_split).images
    images = {"train": torch.from_numpy(train), "test": torch.from_numpy(test)}
    images["blurred 1.5"] = blur(images["train"], BLUR_RADIUS)  # for rulers against the test images
    images["blurred 1.5 (test)"] = blur(images["test"], BLUR_RADIUS)  # for rulers against the training images
    for name, gen in gens.items():
        images[name], _ = generated_images(gen, p.evaluate, n_gen, "cpu")
        G, _ = load_generator(gen)
        with torch.no_grad():
            grid = G(torch.randn(64, G.z_dim, generator=torch.Generator().manual_seed(0)))
        save_image(grid, out / f"grid-{name.replace(' ', '').replace('%', '')}.png", nrow=8, normalize=True,
                   value_range=(-1, 1))  # fmt: skip
    side_by_side([out / f"grid-{n.replace(' ', '').replace('%', '')}.png" for n in gens], out / "grids.png")
    files = ExtractorFiles(paths.classifier, paths.judge)
    extractors, _ = build_extractors(["classifier", "judge"], files, torch.device("cpu"), 500)
    return {name: {k: embed_all(ex, v.numpy(), 500) for k, v in images.items()} for name, ex in extractors.items()}


def side_by_side(grids: list[Path], dest: Path, gap: int = 10) -> None:
    """The generators' grids in one picture, left to right in their order, `gap` white pixels apart (the docs')."""
    from PIL import Image

    pictures = [Image.open(g).convert("RGB") for g in grids]
    width = sum(p.width for p in pictures) + gap * (len(pictures) - 1)
    canvas = Image.new("RGB", (width, max(p.height for p in pictures)), "white")
    x = 0
    for picture in pictures:
        canvas.paste(picture, (x, 0))
        x += picture.width + gap
    canvas.save(dest)


# --- candidate rulers ---


def rulers(f: dict[str, np.ndarray], sets: list[str], rounds: int, seed: int) -> dict[str, dict[str, tuple]]:
    """{ruler: {set: (value, low, high)}}; the set "floor" is the ruler's real-vs-real twin."""
    n = len(f["test"])
    rng = np.random.default_rng(seed)
    train_n = f["train"][np.sort(rng.choice(len(f["train"]), n, replace=False))]

    def measure(distance: Distance, ref: np.ndarray, floor: np.ndarray, clip: bool) -> dict[str, tuple]:
        """Each set's first n images against `ref`; a degraded level is made from real images the reference does
        not hold (blurred training images against the test images, blurred test images against the training ones)."""
        against_train = ref is f["train"]
        row = {}
        for s in ["floor", *sets]:
            x = floor if s == "floor" else f[f"{s} (test)" if against_train and f"{s} (test)" in f else s][:n]
            lo, hi = bootstrap_interval(distance, x, ref, rounds, seed, clip=clip)
            row[s] = (distance(x, ref), lo, hi)
        return row

    return {
        "FD test": measure(fid_from_features, f["test"], train_n, True),
        "KID test": measure(lambda x, r: kid_full(r, x), f["test"], train_n, False),
        "FD train": measure(fid_from_features, f["train"], f["test"], True),
        "KID train": measure(lambda x, r: kid_full(r, x), f["train"], f["test"], False),
    }


PAIRS = (("default", "floor"), ("snapshot 20 %", "default"), ("blurred 1.5", "default"))


def paired_rulers(f: dict[str, np.ndarray], sets: list[str], rounds: int, seed: int) -> dict[str, dict[str, tuple]]:
    """{ruler: {"B − A": (difference, low, high)}}: each level against the one below it (and each recipe against the
    default) as the gate compares two generators, paired on the same resampled real images
    (`gan.evaluation.metrics.paired_bootstrap`), so that the reference set's own luck cancels."""
    n = len(f["test"])
    rng = np.random.default_rng(seed)
    train_n = f["train"][np.sort(rng.choice(len(f["train"]), n, replace=False))]
    recipes = [s for s in sets if s not in ("default", "snapshot 20 %", "blurred 1.5")]
    pairs = [*PAIRS, *((r, "default") for r in recipes)]

    def table(distance: Distance, ref: np.ndarray, floor: np.ndarray) -> dict[str, tuple]:
        against_train = ref is f["train"]

        def images(s: str) -> np.ndarray:
            if s == "floor":
                return floor
            return f[f"{s} (test)" if against_train and f"{s} (test)" in f else s][:n]

        row = {}
        for b, a in pairs:
            d = paired_bootstrap(distance, ref, images(a), images(b), rounds, seed)
            row[f"{b} − {a}"] = (d.estimate, d.low, d.high)
        return row

    return {
        "FD test": table(fid_from_features, f["test"], train_n),
        "KID test": table(lambda r, x: kid_full(r, x), f["test"], train_n),
        "FD train": table(fid_from_features, f["train"], f["test"]),
        "KID train": table(lambda r, x: kid_full(r, x), f["train"], f["test"]),
    }


def by_sample_count(f: dict[str, np.ndarray], pairs: list[tuple[str, str]], rounds: int, seed: int
                    ) -> dict[str, dict[str, tuple]]:  # fmt: skip
    """{"B − A, FD against REF": {n_gen: (difference, low, high)}}: two generators compared as the gate does (paired
    FD), with n_gen of each one's images against the test images or all the training images."""
    n = len(f["test"])
    out = {}
    for b, a in pairs:
        for ref in ("test", "train"):
            row = {}
            for k in sorted({n, 1000, len(f[a])}):
                d = paired_bootstrap(fid_from_features, f[ref], f[a][:k], f[b][:k], rounds, seed)
                row[str(k)] = (d.estimate, d.low, d.high)
            out[f"{b} − {a}, FD against the {len(f[ref])} {ref} images"] = row
    return out


def separates_paired(row: dict[str, tuple]) -> bool:
    """Each level above the one below it with its whole paired interval above 0."""
    return all(row[f"{b} − {a}"][1] > 0 for b, a in PAIRS)


def separates(row: dict[str, tuple]) -> bool:
    """floor < default < snapshot and blurred, each interval clear of the next."""
    floor, default = row["floor"], row["default"]
    return floor[2] < default[1] and all(default[2] < row[s][1] for s in ("snapshot 20 %", "blurred 1.5"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tgz", type=Path, default=None, help="emoji folders: the npm package's tarball")
    ap.add_argument("--folders", nargs="+", default=["emoji32", "emoji32-1k"], choices=FOLDERS)
    ap.add_argument("--root", type=Path, default=REPO / "bench-output" / "folders")
    ap.add_argument("--recipe", action="append", default=[], metavar="NAME=K=V;K=V",
                    help="a whole model of another recipe, trained and ranked beside the default")  # fmt: skip
    ap.add_argument("--n-gen", type=int, default=5000, help="samples of each generator")
    ap.add_argument("--rounds", type=int, default=200, help="bootstrap rounds of each interval")
    ap.add_argument("--out", type=Path, default=REPO / "bench-output" / "ruler-levels")
    args = ap.parse_args()
    recipes = {r.split("=", 1)[0]: r.split("=", 1)[1].split(";") for r in args.recipe}
    print(f"machine: {machine_name()}, torch {torch.__version__}", flush=True)
    report = {}
    for folder in args.folders:
        ws = workspace(folder, args.root, args.tgz, "cpu")
        out = args.out / folder
        out.mkdir(parents=True, exist_ok=True)
        gens = generators(ws, out, recipes)
        feats = level_features(ws, gens, args.n_gen, out)
        sets = [*gens, "blurred 1.5"]
        report[folder] = {}
        n_test = None
        for extractor, f in feats.items():
            n_test = len(f["test"])
            table = rulers(f, sets, args.rounds, seed=0)
            report[folder][extractor] = {r: {s: list(v) for s, v in row.items()} for r, row in table.items()}
            print(f"\n{folder} ({len(f['train'])} training, {n_test} test images), {extractor}'s features:\n")
            print("| ruler | " + " | ".join(["floor", *sets]) + " | separates |")
            print("|---|" + "---|" * (len(sets) + 2))
            for r, row in table.items():
                cells = [f"{v:.4g} [{lo:.3g}, {hi:.3g}]" for v, lo, hi in row.values()]
                print(f"| {r} | " + " | ".join(cells) + f" | {'yes' if separates(row) else 'no'} |")
            paired = paired_rulers(f, sets, args.rounds, seed=0)
            report[folder][extractor + " paired"] = {r: {s: list(v) for s, v in row.items()} for r, row in
                                                     paired.items()}  # fmt: skip
            names = list(next(iter(paired.values())))
            print("\nthe same, paired (each difference on the same resampled real images, as the gate compares):\n")
            print("| ruler | " + " | ".join(names) + " | separates |")
            print("|---|" + "---|" * (len(names) + 1))
            for r, row in paired.items():
                cells = [f"{v:+.4g} [{lo:+.3g}, {hi:+.3g}]" for v, lo, hi in row.values()]
                print(f"| {r} | " + " | ".join(cells) + f" | {'yes' if separates_paired(row) else 'no'} |")
            pairs = [("snapshot 20 %", "default"), *((r, "default") for r in recipes)]
            counts = by_sample_count(f, pairs, args.rounds, seed=0)
            report[folder][extractor + " by sample count"] = {r: {k: list(v) for k, v in row.items()} for r, row in
                                                              counts.items()}  # fmt: skip
            ks = list(next(iter(counts.values())))
            print(
                "\ntwo generators, paired, by the images of each (n_gen) and the real images they are measured "
                "against:\n"
            )
            print("| comparison | " + " | ".join(f"n_gen = {k}" for k in ks) + " |")
            print("|---|" + "---|" * len(ks))
            for r, row in counts.items():
                print(f"| {r} | " + " | ".join(f"{v:+.4g} [{lo:+.3g}, {hi:+.3g}]" for v, lo, hi in row.values()) + " |")
        (out / "levels.json").write_text(json.dumps(report[folder], indent=1) + "\n")
    print(f"\ngrids and figures: {args.out}")


if __name__ == "__main__":
    main()
