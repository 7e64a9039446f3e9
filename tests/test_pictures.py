"""The pictures people look at: closest generated/training pairs, samples by class and the training curves
(gan/outputs/pictures.py)."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from PIL import Image

from gan.outputs.pictures import class_grid, closest_pairs_picture


def test_closest_pairs_put_each_generated_image_beside_its_training_image(tmp_path):
    rng = np.random.default_rng(0)
    gen = rng.integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
    train = rng.integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
    out = tmp_path / "pairs.png"
    closest_pairs_picture(gen, train, np.array([0.0, 0.5, 1.25]), out)
    img = np.asarray(Image.open(out))
    assert Image.open(out).mode == "RGB"
    s = 2  # 32 px images are drawn 2× larger
    for i in range(3):  # row i: generated i at the left, then its training image, pixel for pixel (upscaled)
        y = 16 + i * (32 * s + 8)
        left = img[y : y + 32 * s : s, 2 : 2 + 32 * s : s]
        right = img[y : y + 32 * s : s, 2 + 32 * s + 2 : 2 + 64 * s + 2 : s]
        assert (left == gen[i].transpose(1, 2, 0)).all() and (right == train[i].transpose(1, 2, 0)).all(), i


def test_class_grid_has_one_row_per_class_with_that_class_only(tmp_path):
    # grey 28×28: class c images are filled with the value 20 + 50 c; predictions say which row each goes to
    classes = ["a", "b", "c"]
    predicted = np.array([0, 2, 2, 1, 0, 2, 0, 0])
    images = torch.from_numpy(np.stack([np.full((1, 28, 28), 20 + 50 * p, np.uint8) for p in predicted]))
    out = tmp_path / "classes.png"
    counts = class_grid(images, predicted, classes, per_class=2, path=out)
    assert counts == [2, 1, 2]  # at most per_class each; class b has only one
    img = np.asarray(Image.open(out))
    th = 28 * 2  # drawn 2× larger
    label_w = img.shape[1] - 2 * (th + 2)
    for row, c in enumerate(range(3)):
        y = row * (th + 2) + th // 2
        tiles = [img[y, label_w + col * (th + 2) + th // 2] for col in range(counts[row])]
        assert all((t == 20 + 50 * c).all() for t in tiles), (row, tiles)
    # a missing tile (class b's second) stays blank
    assert (img[1 * (th + 2) + th // 2, label_w + (th + 2) + th // 2] == 255).all()


def _training_logs(tmp_path):
    log = tmp_path / "log.tsv"
    rows = ["step\tepoch\tloss_d\tloss_g\td_real\td_fake\tr1"]
    rows += [f"{s}\t0\t{1 + 0.01 * s}\t{2 - 0.01 * s}\t0.6\t0.4\t{'nan' if s % 4 else 0.5}" for s in range(1, 101)]
    log.write_text("\n".join(rows) + "\n")
    quality = tmp_path / "quality.tsv"
    quality.write_text("step\tfd\n25\t90.0\n50\t40.0\n75\t55.0\n100\t30.0\n")
    return log, quality


def _drawn(fig):
    """The figure rendered by Agg as uint8 H×W×3 (row 0 at the top); warnings (e.g. a glyph missing from the font)
    are errors."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3]


def _near(region, colour, tol=25):
    """How many pixels of `region` are within `tol` (per channel) of the matplotlib colour `colour`."""
    from matplotlib.colors import to_rgb

    rgb = np.array(to_rgb(colour)) * 255
    return int((np.abs(region.astype(float) - rgb) <= tol).all(axis=2).sum())


def _inside(img, ax):
    """The pixels inside `ax`'s frame (display coordinates have their origin at the bottom)."""
    b = ax.get_window_extent()
    h = img.shape[0]
    return img[int(h - b.y1) + 2 : int(h - b.y0) - 2, int(b.x0) + 2 : int(b.x1) - 2]


def test_training_curves_are_plots_with_titles_axis_labels_legends_and_ticks(tmp_path):
    from gan.outputs.pictures import CURVE_COLOURS, MARK_COLOUR, QUALITY_PANEL, YLABELS, curves_figure, training_panels

    log, quality = _training_logs(tmp_path)
    panels, marks = training_panels(log, quality, kept_step=100)
    fig = curves_figure(panels, marks=marks, ylabels=YLABELS)
    img = _drawn(fig)
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["losses", "mean sigmoid of D's outputs", "penalties", QUALITY_PANEL]
    assert [ax.get_ylabel() for ax in axes] == ["loss", "mean σ(D(x))", "penalty", "FD"]
    assert all(ax.get_xlabel() == "step" for ax in axes)
    legends = [[t.get_text() for t in ax.get_legend().get_texts()] for ax in axes]
    assert legends == [["loss_d", "loss_g"], ["d_real", "d_fake"], ["r1"], ["fd", "kept: step 100"]]
    for ax in axes:  # real ticks, labelled with numbers
        assert len([t for t in ax.get_xticklabels() if t.get_text()]) >= 3
        assert len([t for t in ax.get_yticklabels() if t.get_text()]) >= 3
    # the log's values are what is plotted: loss_d = 1 + 0.01 step; r1 (logged every 4th step) joined over its NaNs
    loss_d = axes[0].get_lines()[0]
    assert np.allclose(loss_d.get_ydata(), 1 + 0.01 * np.asarray(loss_d.get_xdata()))
    assert list(axes[2].get_lines()[0].get_xdata()) == list(range(4, 101, 4))
    (ring,) = [line for line in axes[3].get_lines() if line.get_label() == "kept: step 100"]
    assert (ring.get_xdata()[0], ring.get_ydata()[0]) == (100, 30)  # at the kept step's score
    # and drawn: each series in its colour inside its panel, the kept snapshot's ring in the quality panel only
    losses, quality_ax = _inside(img, axes[0]), _inside(img, axes[3])
    assert _near(losses, CURVE_COLOURS[0]) > 100 and _near(losses, CURVE_COLOURS[1]) > 100
    assert _near(quality_ax, MARK_COLOUR) > 20 and _near(losses, MARK_COLOUR) == 0
    # no snapshot kept: no ring, no legend entry for it
    panels, marks = training_panels(log, quality)
    fig = curves_figure(panels, marks=marks, ylabels=YLABELS)
    img = _drawn(fig)
    assert marks == {} and _near(_inside(img, fig.get_axes()[3]), MARK_COLOUR) == 0
    assert [t.get_text() for t in fig.get_axes()[3].get_legend().get_texts()] == ["fd"]


def test_an_ada_run_shows_ds_overfitting_signal_and_p(tmp_path):
    """A run with adaptive augmentation logs r_t (real_sign) and p (augment_p): they get their own panel, drawn."""
    from gan.outputs.pictures import ADA_PANEL, YLABELS, curves_figure, training_panels

    log = tmp_path / "log.tsv"
    rows = ["step\tepoch\tloss_d\tloss_g\td_real\td_fake\taugment_p\treal_sign"]
    rows += [f"{s}\t0\t1.0\t2.0\t0.9\t0.1\t{0.002 * s}\t{0.9 - 0.003 * s}" for s in range(1, 101)]
    log.write_text("\n".join(rows) + "\n")
    panels, _ = training_panels(log, None)
    fig = curves_figure(panels, ylabels=YLABELS)
    _drawn(fig)
    (ax,) = [ax for ax in fig.get_axes() if ax.get_title() == ADA_PANEL]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["r_t = E[sign(D(real))]", "p"]
    r_t, p = ax.get_lines()[:2]
    assert np.allclose(p.get_ydata(), 0.002 * np.asarray(p.get_xdata()))
    assert np.allclose(r_t.get_ydata(), 0.9 - 0.003 * np.asarray(r_t.get_xdata()))


def test_training_curves_png_has_a_panel_per_group(tmp_path):
    from PIL import Image

    from gan.outputs.pictures import MARGIN, PANEL_H, PANEL_W, training_curves

    log, quality = _training_logs(tmp_path)
    out = tmp_path / "curves.png"
    training_curves(log, quality, out, kept_step=100)
    panel = PANEL_H + 2 * MARGIN
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (PANEL_W + 2 * MARGIN, 4 * panel)  # losses, D, r1, quality
        pixels = np.asarray(img.convert("RGB"))
    assert 0.5 < (pixels == 255).all(axis=2).mean() < 0.99  # mostly white background, with something drawn on it
    # without quality scores (train.eval_every off: a header only) the panel is left out
    quality.write_text("step\tfd\n")
    training_curves(log, quality, out)
    assert Image.open(out).size == (PANEL_W + 2 * MARGIN, 3 * panel)
