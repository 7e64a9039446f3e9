"""Pictures people look at rather than read: the closest generated/training pairs, samples by class, and the
training curves.

All are plain PNGs, so they render anywhere — in `data/samples/` and inlined in the Prefect report. The image
grids are tiles of the uint8 N×C×H×W images themselves (RGB for RGB data, grey repeated to RGB), pasted with PIL;
the curves are matplotlib plots drawn by its Agg renderer on a figure of their own (no pyplot, no global backend).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from gan.core import atomic

GAP = 2  # px between tiles
PAIR_GAP = 8  # px between one pair and the next


def _rgb(images_u8: np.ndarray) -> np.ndarray:
    """uint8 N×C×H×W (C = 1 or 3) -> uint8 N×H×W×3."""
    x = np.asarray(images_u8)
    x = np.repeat(x, 3, axis=1) if x.shape[1] == 1 else x
    return x.transpose(0, 2, 3, 1)


def _upscale(side: int) -> int:
    """Small images (28 px) are drawn 2× larger so a person can compare them."""
    return max(1, 64 // side)


def _save(img: Image.Image, path: str | Path) -> None:
    with atomic.atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def closest_pairs_picture(generated_u8: np.ndarray, train_u8: np.ndarray, distances: np.ndarray,
                          path: str | Path) -> None:  # fmt: skip
    """One row per pair: the generated image, then its nearest training image; the feature distance beside them."""
    g, t = _rgb(generated_u8), _rgb(train_u8)
    n, h, w, _ = g.shape
    s = _upscale(max(h, w))
    th, tw = h * s, w * s
    label_w = 70
    canvas = Image.new("RGB", (2 * tw + GAP + label_w + 2 * GAP, max(n, 1) * (th + PAIR_GAP) + 16), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((GAP, 2), "generated | nearest training image", fill="black")
    for i in range(n):
        y = 16 + i * (th + PAIR_GAP)
        canvas.paste(Image.fromarray(g[i]).resize((tw, th), Image.NEAREST), (GAP, y))
        canvas.paste(Image.fromarray(t[i]).resize((tw, th), Image.NEAREST), (GAP + tw + GAP, y))
        draw.text((2 * tw + 3 * GAP + 4, y + th // 2 - 6), f"d = {float(distances[i]):.3g}", fill="black")
    _save(canvas, path)


def class_grid(images_u8: torch.Tensor, predicted: np.ndarray, classes: list[str], per_class: int,
               path: str | Path) -> list[int]:  # fmt: skip
    """One row per class: the first `per_class` images the classifier assigns to it (blank where fewer), the class
    name on the left. Returns how many images each row holds."""
    x = _rgb(images_u8.numpy() if isinstance(images_u8, torch.Tensor) else images_u8)
    _, h, w, _ = x.shape
    s = _upscale(max(h, w))
    th, tw = h * s, w * s
    label_w = 8 + 7 * max((len(c) for c in classes), default=4)
    canvas = Image.new("RGB", (label_w + per_class * (tw + GAP), len(classes) * (th + GAP)), "white")
    draw = ImageDraw.Draw(canvas)
    counts = []
    for row, name in enumerate(classes):
        idx = np.flatnonzero(predicted == row)[:per_class]
        counts.append(len(idx))
        y = row * (th + GAP)
        draw.text((4, y + th // 2 - 6), name, fill="black")
        for col, i in enumerate(idx):
            canvas.paste(Image.fromarray(x[i]).resize((tw, th), Image.NEAREST), (label_w + col * (tw + GAP), y))
    _save(canvas, path)
    return counts


CURVE_COLOURS = (
    "tab:blue",
    "tab:red",
    "tab:green",
    "tab:purple",
    "tab:orange",
    "tab:brown",
    "tab:pink",
    "tab:gray",
    "tab:olive",
    "tab:cyan",
)
MARK_COLOUR = "#c80000"  # the snapshot kept
PANEL_W, PANEL_H, MARGIN = 560, 170, 44  # px: each panel is (PANEL_W + 2 MARGIN) × (PANEL_H + 2 MARGIN)
DPI = 100


def _binned(x: np.ndarray, y: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of y over at most `bins` equal runs of points (a 50,000-step log stays readable); NaNs skipped."""
    if len(x) <= bins:
        return x, y
    edges = np.linspace(0, len(x), bins + 1).astype(int)
    xs = np.array([x[a:b].mean() for a, b in zip(edges[:-1], edges[1:], strict=True)])
    ys = np.array([np.nanmean(y[a:b]) if np.isfinite(y[a:b]).any() else np.nan
                   for a, b in zip(edges[:-1], edges[1:], strict=True)])  # fmt: skip
    return xs, ys


def curves_figure(panels: list[tuple[str, dict[str, tuple[np.ndarray, np.ndarray]]]], bins: int = 400,
                  marks: dict[str, tuple[float, float, str]] | None = None,
                  ylabels: dict[str, str] | None = None) -> Figure:  # fmt: skip
    """The matplotlib figure of `curves_picture`: one axes per panel, stacked, each with its title, ticks, the
    x label "step", its y label from `ylabels` and a legend of its series. A figure of its own (no pyplot), so
    drawing it changes no global state."""
    marks, ylabels = marks or {}, ylabels or {}
    fig = Figure(figsize=((PANEL_W + 2 * MARGIN) / DPI, max(len(panels), 1) * (PANEL_H + 2 * MARGIN) / DPI), dpi=DPI,
                 layout="constrained")  # fmt: skip
    axes = fig.subplots(max(len(panels), 1), 1, squeeze=False)[:, 0]
    for ax, (title, series) in zip(axes, panels, strict=False):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.set_ylabel(ylabels.get(title, ""), fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(True, alpha=0.3)
        drawn = False
        for k, (name, (x, y)) in enumerate(series.items()):
            bx, by = _binned(np.asarray(x, float), np.asarray(y, float), bins)
            finite = np.isfinite(by)
            if not finite.any():
                continue
            # a run of NaNs (e.g. r1 logged every 4th step) would break the line into dots: join the finite points
            ax.plot(bx[finite], by[finite], color=CURVE_COLOURS[k % len(CURVE_COLOURS)], linewidth=1.5, label=name,
                    marker="o" if finite.sum() == 1 else None)  # fmt: skip
            drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center")
            continue
        if title in marks:
            mx, my, label = marks[title]
            ax.axvline(mx, color="grey", linewidth=1)
            ax.plot([mx], [my], linestyle="none", marker="o", markersize=11, markerfacecolor="none",
                    markeredgecolor=MARK_COLOUR, markeredgewidth=2.5, label=label)  # fmt: skip
        ax.legend(fontsize=8, loc="best")
    return fig


def curves_picture(panels: list[tuple[str, dict[str, tuple[np.ndarray, np.ndarray]]]], path: str | Path,
                   bins: int = 400, marks: dict[str, tuple[float, float, str]] | None = None,
                   ylabels: dict[str, str] | None = None) -> None:  # fmt: skip
    """Line charts, one panel per (title, {series name: (x, y)}), stacked, as a PNG of (PANEL_W + 2 MARGIN) ×
    n (PANEL_H + 2 MARGIN) px: axes with ticks, "step" on x, `ylabels[title]` on y, a legend per panel; each series
    averaged over at most `bins` runs of points. `marks`: {panel title: (x, y, label)} rings the point, draws a
    vertical line there and names it in the legend (e.g. the snapshot kept). Drawn by matplotlib's Agg renderer:
    offline, fonts bundled."""
    fig = curves_figure(panels, bins, marks, ylabels)
    FigureCanvasAgg(fig)
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


def read_tsv_columns(path: str | Path) -> dict[str, np.ndarray]:
    """A tab-separated log with a header row (data/train/log.tsv, quality.tsv) as {column: float array}."""
    return tsv_columns(Path(path).read_text())


def tsv_columns(text: str) -> dict[str, np.ndarray]:
    """`read_tsv_columns` of a log's text (e.g. read at a git revision)."""
    lines = [ln.split("\t") for ln in text.splitlines() if ln]
    if not lines:
        return {}
    header, rows = lines[0], lines[1:]
    return {name: np.array([float(r[i]) for r in rows], dtype=float) for i, name in enumerate(header)}


QUALITY_PANEL = "quality during training: FD to real training images (lower is better)"


ADA_PANEL = "adaptive augmentation: D's overfitting signal and p"
YLABELS = {"losses": "loss", "mean sigmoid of D's outputs": "mean σ(D(x))", "penalties": "penalty",
           ADA_PANEL: "r_t, p", QUALITY_PANEL: "FD"}  # fmt: skip


def training_panels(log_tsv: str | Path, quality_tsv: str | Path | None, kept_step: int | None = None
                    ) -> tuple[list[tuple[str, dict[str, tuple[np.ndarray, np.ndarray]]]], dict]:  # fmt: skip
    """The panels and marks of `training_curves`: losses, D's outputs, the penalties and ADA's r_t and p where logged,
    and the quality score where there is one, with the snapshot kept (`kept_step`) marked."""
    log_cols = read_tsv_columns(log_tsv)
    step = log_cols.get("step", np.zeros(0))
    panels = [
        ("losses", {k: (step, log_cols[k]) for k in ("loss_d", "loss_g") if k in log_cols}),
        ("mean sigmoid of D's outputs", {k: (step, log_cols[k]) for k in ("d_real", "d_fake") if k in log_cols}),
    ]
    extra = {k: (step, log_cols[k]) for k in ("r1", "gp") if k in log_cols}
    if extra:
        panels.append(("penalties", extra))
    ada = {name: (step, log_cols[k]) for k, name in (("real_sign", "r_t = E[sign(D(real))]"), ("augment_p", "p"))
           if k in log_cols}  # fmt: skip
    if ada:
        panels.append((ADA_PANEL, ada))
    quality = read_tsv_columns(quality_tsv) if quality_tsv is not None and Path(quality_tsv).exists() else {}
    marks = {}
    if len(quality.get("step", ())):
        panels.append((QUALITY_PANEL, {"fd": (quality["step"], quality["fd"])}))
        at = np.flatnonzero(quality["step"] == kept_step) if kept_step is not None else []
        if len(at):
            marks[QUALITY_PANEL] = (float(kept_step), float(quality["fd"][at[0]]), f"kept: step {kept_step}")
    return panels, marks


def training_curves(log_tsv: str | Path, quality_tsv: str | Path | None, path: str | Path,
                    kept_step: int | None = None) -> None:  # fmt: skip
    """data/train/log.tsv's losses and D's outputs per step, and the quality score of train.eval_every when there
    is one, with the snapshot kept (`kept_step`) marked, as one picture (the DVC plots' data, drawn without the CDN
    `dvc plots show` needs)."""
    panels, marks = training_panels(log_tsv, quality_tsv, kept_step)
    curves_picture(panels, path, marks=marks, ylabels=YLABELS)
