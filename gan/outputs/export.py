"""Export stage: what people and other tools consume.

`data/samples/` gets an 8×8 PNG grid, individual PNGs (RGB for RGB data), an NPZ
of uint8 images (key `images`, N×H×W×C: the NHWC layout external FID tools read),
the generator as TorchScript (loads with plain `torch.jit.load`, no need for
this project; traced and checked at the generator's image shape), a model card
that states the image shape and where the data came from, and two pictures:
`closest_pairs.png` (the memorisation check's closest generated/training pairs, from
evaluate), where the data has labels `class_grid.png` (one row per class, as the
domain classifier sees the samples), and `training_curves.png` (the per-step losses,
D's outputs and, with `train.eval_every`, the quality score during training).
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from gan.core import atomic
from gan.core.config import ExportConfig, Params
from gan.core.length import describe_trained
from gan.core.pngs import write_grid, write_png
from gan.core.splits import describe_shape, shape_text
from gan.core.tensors import from_uint8, to_uint8
from gan.evaluation.classifier import NoClassifier, load_classifier, predict
from gan.outputs.metric_table import summary_rows
from gan.outputs.pictures import class_grid, closest_pairs_picture, training_curves
from gan.training.models import load_generator
from gan.training.sampling import requested_labels, sample_batches, sample_uint8

CLASS_GRID_PER_CLASS = 8
CLASS_GRID_DRAWS = 2000  # samples classified to fill the per-class rows


def _trace_inputs(G: torch.nn.Module, n: int) -> tuple[torch.Tensor, ...]:
    """Example inputs for G: (z,) or, for a class-conditional G, (z, y) with y the class indices."""
    z = torch.zeros(n, G.z_dim)
    return (z, torch.arange(n) % G.num_classes) if getattr(G, "num_classes", 0) else (z,)


def export_torchscript(G: torch.nn.Module, path: Path) -> None:
    """G traced to TorchScript (G(z), or G(z, y) when class-conditional); the traced module must make G's image
    shape (checked, as is a batch of another size)."""
    G = G.cpu().eval()
    with warnings.catch_warnings():
        # torch.jit is deprecated upstream, but TorchScript is still the format that loads without our code.
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.trace(G, _trace_inputs(G, 2))
        with torch.no_grad():
            out = scripted(*_trace_inputs(G, 3))
        if tuple(out.shape) != (3, *G.image_shape):
            raise RuntimeError(
                f"TorchScript generator makes {tuple(out.shape)}, expected (3, {shape_text(G.image_shape)})"
            )
        buf = io.BytesIO()
        torch.jit.save(scripted, buf)
    atomic.write_bytes(path, buf.getvalue())


RECIPE_SECTIONS = ("data", "model", "train")  # the export stage declares these params in dvc.yaml


def _kept(train_summary: dict) -> str:
    kept = train_summary.get("kept") or {}
    fd = f" (the kept snapshot's FD {kept.get('fd')} in the {kept.get('extractor')}'s features)" if "fd" in kept else ""
    return f"- scored during training: {train_summary.get('probe') or 'no'}{fd}"


def _data_source(params: Params, data_summary: dict) -> str:
    """Where the images came from: the data summary's `source` (what prepare recorded), else the configured one."""
    source = data_summary.get("source")
    if not source and params.data.dataset == "folder":
        source = params.data.source
    return f"`{source}`" if source else f"the built-in {params.data.dataset} download"


def _usage(params: Params, data_summary: dict, out_shape: str) -> str:
    """The model card's one line of use: G(z), or G(z, y) for a class-conditional G."""
    z = f"torch.randn(16, {params.model.z_dim})"
    if params.model.conditional:
        k = len(data_summary.get("classes", []))
        return f"images = G({z}, torch.arange(16) % {k})  # 16×{out_shape} in [-1, 1], classes 0, 1, ..., {k - 1}"
    return f"images = G({z})  # 16×{out_shape} in [-1, 1]"


def model_card(
    params: Params, metrics: dict, data_summary: dict, train_summary: dict, code: str,
    image_shape: tuple[int, int, int] | None = None,
) -> str:  # fmt: skip
    """The card. `image_shape`: what the generator makes (else the data summary's shape)."""
    m = metrics
    splits = data_summary.get("splits", {})
    shape = image_shape or data_summary.get("shape")
    shape_line = describe_shape(shape) if shape else "unknown"
    out_shape = shape_text(shape) if shape else "C×H×W"
    classes = ", ".join(data_summary.get("classes", [])) or "none (unlabeled)"
    lines = [
        f"# Generator card: {params.model.arch} GAN on {params.data.dataset}",
        "",
        "## Data",
        f"- dataset: **{data_summary.get('dataset')}**, source: {_data_source(params, data_summary)}",
        f"- image shape: **{shape_line}** (C×H×W), classes: {classes}",
        *(
            f"- {s}: n={v.get('n')}, images sha256 `{str(v.get('sha256_images'))[:16]}…`, "
            f"labels sha256 `{str(v.get('sha256_labels'))[:16]}…`"
            for s, v in splits.items()
        ),
        "",
        "## Training",
        f"- length: {describe_trained(train_summary)}",
        f"- wall time: {train_summary.get('seconds')} s, {train_summary.get('images_per_second')} images/s",
        _kept(train_summary),
        f"- D's overfitting: {train_summary.get('overfitting') or 'not recorded'}",
        "",
        "## Metrics (FID/KID: lower is better; the floor: n real train images in place of the generated ones)",
        "| metric | generated | real-vs-real floor |",
        "|---|---|---|",
        *(f"| {r['metric']} | {r['value']} | {r['floor']} |" for r in summary_rows(m)),
        "",
        f"Mode collapse flagged: {m.get('mode_collapse')}. FID intervals: 95 % bootstrap, bias-corrected.",
        "",
        f"n = {m.get('n')} per side, reference split: {m.get('reference_split')}, "
        f"classifier test accuracy: {m.get('classifier_test_accuracy')}.",
        "",
        "## Versions",
        f"- code: `{code}`",
        f"- torch: {torch.__version__}",
        "",
        "## Parameters (the data, model and train settings that produced this generator)",
        "```json",
        json.dumps({k: getattr(params, k).model_dump(mode="json") for k in RECIPE_SECTIONS}, indent=2),
        "```",
        "",
        "## Use",
        "```python",
        "import torch",
        "G = torch.jit.load('generator.torchscript.pt')",
        _usage(params, data_summary, out_shape),
        "```",
    ]
    return "\n".join(lines) + "\n"


def export(
    cfg: ExportConfig,
    params: Params,
    generator_path: str | Path,
    metrics_path: str | Path,
    data_summary_path: str | Path,
    train_summary_path: str | Path,
    out_dir: str | Path,
    classifier_path: str | Path | None = None,
    pairs_path: str | Path | None = None,
    train_log_dir: str | Path | None = None,
    code: str = "",
) -> dict:
    """The stage's outputs in `out_dir` (the module docstring lists them). `code`: the code version the model card
    records (the CLI gives `gan.lifecycle.gitrepo.describe_head`; "" writes "not recorded")."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    G, _ = load_generator(generator_path)
    if G.num_classes:  # one row of 8 per class
        rows = torch.arange(G.num_classes).repeat_interleave(8)
        grid = sample_uint8(G, len(rows), cfg.seed, len(rows), rows)
    else:
        grid = sample_uint8(G, 64, cfg.seed, 64)
    write_grid(grid, out_dir / "grid.png", nrow=8, rgb=True)  # RGB as torchvision writes it

    png_dir = out_dir / "png"
    png_dir.mkdir(exist_ok=True)
    for i, img in enumerate(sample_uint8(G, cfg.n_png, cfg.seed + 1, 256)):
        write_png(img, png_dir / f"{i:05d}.png", rgb=True)

    c, h, w = G.image_shape
    images = np.empty((cfg.n_npz, h, w, c), dtype=np.uint8)  # NHWC
    k = 0
    for batch in sample_batches(G, cfg.n_npz, cfg.seed + 2, 500):
        u8 = to_uint8(batch).cpu().permute(0, 2, 3, 1).numpy()
        images[k : k + len(u8)] = u8
        k += len(u8)
    with atomic.atomic_path(out_dir / "samples.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, images=images)

    export_torchscript(G, out_dir / "generator.torchscript.pt")
    metrics = json.loads(Path(metrics_path).read_text())
    card = model_card(
        params,
        metrics,
        json.loads(Path(data_summary_path).read_text()),
        json.loads(Path(train_summary_path).read_text()),
        code or "not recorded",
        G.image_shape,
    )
    atomic.write_text(out_dir / "MODEL_CARD.md", card)
    curves_png = out_dir / "training_curves.png"
    if train_log_dir is not None and (Path(train_log_dir) / "log.tsv").exists():
        kept = json.loads(Path(train_summary_path).read_text()).get("kept") or {}
        training_curves(Path(train_log_dir) / "log.tsv", Path(train_log_dir) / "quality.tsv", curves_png,
                        kept_step=kept.get("step") if kept.get("generator") == "best" else None)  # fmt: skip
    else:
        curves_png.unlink(missing_ok=True)
    pictures = _pictures(G, cfg, out_dir, classifier_path, pairs_path,
                         json.loads(Path(data_summary_path).read_text()).get("classes", []))  # fmt: skip
    if curves_png.exists():
        pictures["training_curves"] = str(curves_png)
    return {"grid": str(out_dir / "grid.png"), "n_png": i, "n_npz": k, **pictures}


def _pictures(G: torch.nn.Module, cfg: ExportConfig, out_dir: Path, classifier_path: str | Path | None,
              pairs_path: str | Path | None, classes: list[str]) -> dict:  # fmt: skip
    """closest_pairs.png (when evaluate found pairs) and class_grid.png (when there is a domain classifier: rows by
    the class it sees; for a class-conditional G, rows by the class asked for); a picture that does not apply is
    removed, so none from an earlier run is left looking current."""
    made: dict = {}
    pairs_png, class_png = out_dir / "closest_pairs.png", out_dir / "class_grid.png"
    pairs = np.load(pairs_path) if pairs_path is not None and Path(pairs_path).exists() else None
    if pairs is not None and len(pairs["generated"]):
        closest_pairs_picture(pairs["generated"], pairs["train"], pairs["distance"], pairs_png)
        made["closest_pairs"] = str(pairs_png)
    else:
        pairs_png.unlink(missing_ok=True)
    try:
        model, _ = load_classifier(classifier_path) if classifier_path is not None else (None, 0.0)
    except NoClassifier:
        model = None
    if model is not None and classes:
        u8 = sample_uint8(G, CLASS_GRID_DRAWS, cfg.seed + 3, 500)
        if G.num_classes:
            rows = requested_labels(CLASS_GRID_DRAWS, G.num_classes).numpy()
        else:
            rows = predict(model, from_uint8(u8))[1].argmax(1).numpy()
        made["class_grid_counts"] = class_grid(u8, rows, classes, CLASS_GRID_PER_CLASS, class_png)
        made["class_grid"] = str(class_png)
    else:
        class_png.unlink(missing_ok=True)
    return made
