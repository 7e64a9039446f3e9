"""gan.core.pngs: the one writer of PNGs, grey stays grey, a grid has the padding it promises."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gan.core.pngs import GRID_PADDING, grid, write_grid, write_png


def test_one_image_round_trips_exactly_grey_and_rgb(tmp_path):
    g = torch.Generator().manual_seed(0)
    for c, mode in ((1, "L"), (3, "RGB")):
        image = torch.randint(0, 256, (c, 5, 7), dtype=torch.uint8, generator=g)
        write_png(image, tmp_path / f"{c}.png")
        with Image.open(tmp_path / f"{c}.png") as im:
            assert im.mode == mode and im.size == (7, 5)
            back = np.asarray(im)
        assert np.array_equal(back, image[0].numpy() if c == 1 else image.permute(1, 2, 0).numpy())


def test_a_grid_places_image_k_at_row_k_div_nrow_and_column_k_mod_nrow(tmp_path):
    images = torch.arange(6, dtype=torch.uint8).mul(40).view(6, 1, 1, 1).expand(6, 1, 4, 4).contiguous()
    out = grid(images, nrow=3)
    p = GRID_PADDING
    assert out.shape == (1, 2 * 4 + 3 * p, 3 * 4 + 4 * p)
    for k in range(6):
        r, c = divmod(k, 3)
        y, x = p + r * (4 + p), p + c * (4 + p)
        assert (out[0, y : y + 4, x : x + 4] == 40 * k).all()
    write_grid(images, tmp_path / "g.png", nrow=3)
    with Image.open(tmp_path / "g.png") as im:
        assert np.array_equal(np.asarray(im), out[0].numpy())


def test_a_float_image_is_refused_with_what_was_given(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_png(torch.zeros(3, 4, 4), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
