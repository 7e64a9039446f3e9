"""Pictures people look at rather than read: the closest generated/training pairs, samples by class, and the
training curves.

Both are plain PNGs (RGB for RGB data, grey repeated to RGB) built from uint8 N×C×H×W images, so they render
anywhere — in `data/samples/` and inlined in the Prefect report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
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


CURVE_COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189))
PANEL_W, PANEL_H, MARGIN = 560, 170, 44


def _binned(x: np.ndarray, y: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of y over at most `bins` equal runs of points (a 50,000-step log stays readable); NaNs skipped."""
    if len(x) <= bins:
        return x, y
    edges = np.linspace(0, len(x), bins + 1).astype(int)
    xs = np.array([x[a:b].mean() for a, b in zip(edges[:-1], edges[1:], strict=True)])
    ys = np.array([np.nanmean(y[a:b]) if np.isfinite(y[a:b]).any() else np.nan
                   for a, b in zip(edges[:-1], edges[1:], strict=True)])  # fmt: skip
    return xs, ys


def curves_picture(panels: list[tuple[str, dict[str, tuple[np.ndarray, np.ndarray]]]], path: str | Path,
                   bins: int = 400, marks: dict[str, tuple[float, float, str]] | None = None) -> None:  # fmt: skip
    """Line charts, one panel per (title, {series name: (x, y)}), stacked; each panel's y range fits its series and
    is labelled with its min and max, the x axis with the first and last step. `marks`: {panel title: (x, y, label)}
    draws a ringed point and a labelled vertical line there (e.g. the snapshot kept). Drawn with PIL: it shows
    offline."""
    marks = marks or {}
    canvas = Image.new("RGB", (PANEL_W + 2 * MARGIN, len(panels) * (PANEL_H + 2 * MARGIN)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (title, series) in enumerate(panels):
        top = i * (PANEL_H + 2 * MARGIN) + MARGIN
        box = (MARGIN, top, MARGIN + PANEL_W, top + PANEL_H)
        draw.rectangle(box, outline=(120, 120, 120))
        binned = {name: _binned(np.asarray(x, float), np.asarray(y, float), bins) for name, (x, y) in series.items()}
        finite = [v for _, y in binned.values() for v in y[np.isfinite(y)]]
        xs = [v for x, _ in binned.values() for v in x]
        draw.text((MARGIN, top - 30), title, fill="black")
        x_pos = MARGIN + 6 * len(title) + 20
        for k, name in enumerate(binned):
            draw.text((x_pos, top - 30), f"— {name}", fill=CURVE_COLOURS[k % len(CURVE_COLOURS)])
            x_pos += 6 * len(name) + 30
        if not finite or not xs:
            draw.text((MARGIN + 8, top + PANEL_H // 2), "no data", fill="black")
            continue
        lo, hi = min(finite), max(finite)
        hi = hi if hi > lo else lo + 1.0
        x0, x1 = min(xs), max(xs)
        x1 = x1 if x1 > x0 else x0 + 1.0
        draw.text((4, top - 6), f"{hi:.3g}", fill="black")
        draw.text((4, top + PANEL_H - 6), f"{lo:.3g}", fill="black")
        draw.text((MARGIN, top + PANEL_H + 4), f"step {x0:.0f}", fill="black")
        draw.text((MARGIN + PANEL_W - 70, top + PANEL_H + 4), f"step {x1:.0f}", fill="black")
        for k, (x, y) in enumerate(binned.values()):
            colour = CURVE_COLOURS[k % len(CURVE_COLOURS)]
            pts = [(MARGIN + (a - x0) / (x1 - x0) * PANEL_W, top + PANEL_H - (b - lo) / (hi - lo) * PANEL_H)
                   for a, b in zip(x, y, strict=True) if np.isfinite(b)]  # fmt: skip
            if len(pts) == 1:
                draw.ellipse((pts[0][0] - 2, pts[0][1] - 2, pts[0][0] + 2, pts[0][1] + 2), fill=colour)
            elif pts:
                draw.line(pts, fill=colour, width=2)
        if title in marks:
            mx, my, label = marks[title]
            px = MARGIN + (mx - x0) / (x1 - x0) * PANEL_W
            py = top + PANEL_H - (min(max(my, lo), hi) - lo) / (hi - lo) * PANEL_H
            draw.line([(px, top), (px, top + PANEL_H)], fill=(150, 150, 150), width=1)
            draw.ellipse((px - 6, py - 6, px + 6, py + 6), outline=(200, 0, 0), width=3)
            draw.text((min(px + 8, MARGIN + PANEL_W - 6 * len(label)), top + 4), label, fill=(200, 0, 0))
    _save(canvas, path)


def read_tsv_columns(path: str | Path) -> dict[str, np.ndarray]:
    """A tab-separated log with a header row (data/train/log.tsv, quality.tsv) as {column: float array}."""
    lines = [ln.split("\t") for ln in Path(path).read_text().splitlines() if ln]
    if not lines:
        return {}
    header, rows = lines[0], lines[1:]
    return {name: np.array([float(r[i]) for r in rows], dtype=float) for i, name in enumerate(header)}


QUALITY_PANEL = "quality during training: FD to real training images (lower is better)"


def training_curves(log_tsv: str | Path, quality_tsv: str | Path | None, path: str | Path,
                    kept_step: int | None = None) -> None:  # fmt: skip
    """data/train/log.tsv's losses and D's outputs per step, and the quality score of train.eval_every when there
    is one, with the snapshot kept (`kept_step`) marked, as one picture (the DVC plots' data, drawn without the CDN
    `dvc plots show` needs)."""
    log_cols = read_tsv_columns(log_tsv)
    step = log_cols.get("step", np.zeros(0))
    panels = [
        ("losses", {k: (step, log_cols[k]) for k in ("loss_d", "loss_g") if k in log_cols}),
        ("mean sigmoid of D's outputs", {k: (step, log_cols[k]) for k in ("d_real", "d_fake") if k in log_cols}),
    ]
    extra = {k: (step, log_cols[k]) for k in ("r1", "gp") if k in log_cols}
    if extra:
        panels.append(("penalties", extra))
    quality = read_tsv_columns(quality_tsv) if quality_tsv is not None and Path(quality_tsv).exists() else {}
    marks = {}
    if len(quality.get("step", ())):
        panels.append((QUALITY_PANEL, {"fd": (quality["step"], quality["fd"])}))
        at = np.flatnonzero(quality["step"] == kept_step) if kept_step is not None else []
        if len(at):
            marks[QUALITY_PANEL] = (float(kept_step), float(quality["fd"][at[0]]), f"kept: step {kept_step}")
    curves_picture(panels, path, marks=marks)
