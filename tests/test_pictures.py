"""The pictures people look at: closest generated/training pairs and samples by class (gan/outputs/pictures.py)."""

from __future__ import annotations

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


def test_training_curves_draw_a_panel_per_group_with_each_series_colour(tmp_path):
    from PIL import Image

    from gan.outputs.pictures import CURVE_COLOURS, MARGIN, PANEL_H, training_curves

    log = tmp_path / "log.tsv"
    rows = ["step\tepoch\tloss_d\tloss_g\td_real\td_fake\tr1"]
    rows += [f"{s}\t0\t{1 + 0.01 * s}\t{2 - 0.01 * s}\t0.6\t0.4\t{'nan' if s % 4 else 0.5}" for s in range(1, 101)]
    log.write_text("\n".join(rows) + "\n")
    quality = tmp_path / "quality.tsv"
    quality.write_text("step\tfd\n25\t90.0\n50\t40.0\n75\t55.0\n100\t30.0\n")
    out = tmp_path / "curves.png"
    training_curves(log, quality, out)
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape[0] == 4 * (PANEL_H + 2 * MARGIN)  # losses, D's outputs, penalties (r1), quality
    colours = {tuple(c) for c in img.reshape(-1, 3)}
    assert CURVE_COLOURS[0] in colours and CURVE_COLOURS[1] in colours
    panel = PANEL_H + 2 * MARGIN
    quality_panel = img[3 * panel + MARGIN : 3 * panel + MARGIN + PANEL_H]
    assert (quality_panel == CURVE_COLOURS[0]).all(axis=2).any()  # the fd curve is drawn
    assert not (quality_panel == (200, 0, 0)).all(axis=2).any()  # no snapshot marked: none was kept
    training_curves(log, quality, out, kept_step=100)
    img = np.asarray(Image.open(out).convert("RGB"))
    ring = np.argwhere((img[3 * panel + MARGIN : 3 * panel + MARGIN + PANEL_H] == (200, 0, 0)).all(axis=2))
    assert len(ring) and ring[:, 1].max() >= MARGIN + 0.9 * (img.shape[1] - 2 * MARGIN)  # at the last step (100)
    # without quality scores (train.eval_every off: a header only) the panel is left out
    quality.write_text("step\tfd\n")
    training_curves(log, quality, out)
    assert Image.open(out).height == 3 * panel
