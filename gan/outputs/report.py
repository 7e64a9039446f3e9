"""The run report: a Markdown page with the gate's decision, the primary metric, the pictures and the files.

`report_markdown` is what the Prefect flow publishes as its `gan-report` artifact; pictures are inlined as
data URIs, so the page renders with no file server and offline.
"""

from __future__ import annotations

import base64
from pathlib import Path

from gan.core import metric_keys as keys
from gan.core.paths import PATHS, Paths

SAMPLE_FILES = ("grid.png", "samples.npz", "generator.torchscript.pt", "MODEL_CARD.md", "png/")


def report_markdown(repo: Path, gate: dict, recorded: str = "", changes: str = "") -> str:
    """Decision, primary metric (and classes, where measured), pictures, files.

    `gate`: what `gan.lifecycle.gate.run_gate` returned; `recorded`: a line on the run's git commit, tag and
    push; `changes`: the diff against the previous champion.
    """
    cand, champ, dec = gate["candidate"], gate["champion"] or {}, gate["decision"]
    metric = dec["metric"]
    covered, covered_floor = keys.CLASSES_COVERED, keys.floor(keys.CLASSES_COVERED)
    classes = covered in cand
    k = cand.get(keys.NUM_CLASSES)

    def row(label: str, value, n_covered) -> str:
        return f"| {label} | {value} |" + (f" {n_covered}/{k} |" if classes else "")

    table = "\n".join([
        f"| | {metric} |" + (" classes covered |" if classes else ""),
        "|---|---|" + ("---|" if classes else ""),
        row("this run", cand[metric], cand.get(covered)),
        row("champion", champ.get(metric, "—"), champ.get(covered, "—")),
        row("real-vs-real floor", cand.get(keys.floor(metric), "—"), cand.get(covered_floor)),
    ])  # fmt: skip
    paths = Paths(repo)
    verdict = "PROMOTED to champion" if dec["promote"] else "not promoted"
    files = "\n".join(f"- `{paths.samples / f}`" for f in SAMPLE_FILES)
    return f"""# GAN pipeline run

**Candidate {verdict}.** {dec["reason"]}

{table}

{f"**Recorded:** {recorded}" if recorded else ""}

{f"## Changes since the previous champion{chr(10)}{chr(10)}{changes}" if changes else ""}
{pictures_markdown(paths, cand)}
## Files
{files}
- champion: `{repo / PATHS.champion}`
- run history: `{repo / PATHS.history}`
"""


def png_markdown(path: Path, alt: str) -> str:
    """An image inlined as a data URI: it renders in the Prefect UI with no file server and offline."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})"


def pictures_markdown(paths: Paths, cand: dict) -> str:
    """The report's pictures: the sample grid, the closest generated/training pairs, and one row per class."""
    parts = ["## Samples (8×8 grid)", png_markdown(paths.grid, "sample grid")]
    judge = keys.MEMORISATION_EXTRACTOR
    ct, fraction = keys.copy_ct(judge), keys.copy_fraction(judge)
    if paths.closest_pairs_picture.exists() and ct in cand:
        parts += [
            "## Closest to a training image (memorisation check)",
            f"Each generated image (left) beside its nearest training image in the judge's features (right), "
            f"closest first. **Copying: {'YES' if cand[keys.copying(judge)] else 'no'}** — data-copying statistic "
            f"C_T {cand[ct]:.2f} (unseen real images: {cand[keys.floor(ct)]:.2f}; strongly "
            f"negative means copying); likely copies {cand[fraction]:.2%} (unseen real images: "
            f"{cand[keys.floor(fraction)]:.2%}).",
            png_markdown(paths.closest_pairs_picture, "closest generated/training pairs"),
        ]
    if paths.class_grid.exists():
        parts += ["## Samples by class (one row per class, as the domain classifier sees them)",
                  png_markdown(paths.class_grid, "samples by class")]  # fmt: skip
    if paths.training_curves.exists():
        parts += ["## Training curves (losses, D's outputs; the quality score during training, the snapshot kept "
                  "ringed)",
                  png_markdown(paths.training_curves, "training curves")]  # fmt: skip
    return "\n\n".join(parts) + "\n"
