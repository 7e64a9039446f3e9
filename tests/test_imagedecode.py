"""gan.data.imagedecode: every mode, orientation, crop, size and format made usable; every bad file a BadImage."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from gan.core.errors import PipelineError
from gan.data.imagedecode import BadImage, Target, convert_array, decode_file, decode_image, has_colour, pixel_digest

BG = (10, 200, 30)  # a background that is neither black, white nor grey, so it is recognisable


def luma(rgb: tuple[int, int, int]) -> int:
    """ITU-R 601-2 luma, as Pillow's convert("L") rounds it."""
    r, g, b = rgb
    return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16


def save(tmp_path: Path, name: str, im: Image.Image, **kw) -> Path:
    path = tmp_path / name
    im.save(path, **kw)
    return path


def both(path: Path, size: int = 2, bg: tuple[int, int, int] = BG) -> tuple[np.ndarray, np.ndarray]:
    """The image decoded to 1 and to 3 channels at `size` (its own size: no resize), as H×W and H×W×3."""
    grey = decode_image(path, Target(size, 1, resize_filter="nearest", background=bg))
    rgb = decode_image(path, Target(size, 3, resize_filter="nearest", background=bg))
    assert grey.shape == (1, size, size) and rgb.shape == (3, size, size)
    assert grey.dtype == rgb.dtype == np.uint8
    return grey[0], rgb.transpose(1, 2, 0)


# ---- modes: each converts to 1 and 3 channels with the expected values


def test_mode_1_bit(tmp_path: Path) -> None:
    im = Image.new("1", (2, 2), 0)
    im.putpixel((1, 0), 1)
    grey, rgb = both(save(tmp_path, "a.png", im))
    assert grey.tolist() == [[0, 255], [0, 0]]
    assert rgb[0, 1].tolist() == [255, 255, 255] and rgb[1, 1].tolist() == [0, 0, 0]


def test_mode_l(tmp_path: Path) -> None:
    grey, rgb = both(save(tmp_path, "a.png", Image.new("L", (2, 2), 100)))
    assert (grey == 100).all() and (rgb == 100).all()


def test_mode_la_alpha_composited_on_background(tmp_path: Path) -> None:
    im = Image.new("LA", (2, 2), (100, 255))
    im.putpixel((0, 0), (100, 0))  # fully transparent: becomes the background
    grey, rgb = both(save(tmp_path, "a.png", im))
    assert rgb[0, 0].tolist() == list(BG) and grey[0, 0] == luma(BG)
    assert rgb[1, 1].tolist() == [100, 100, 100] and grey[1, 1] == 100


def test_mode_rgba_alpha_composited_on_background(tmp_path: Path) -> None:
    im = Image.new("RGBA", (2, 2), (200, 10, 10, 255))
    im.putpixel((0, 0), (123, 45, 67, 0))  # transparent: its colour must not show
    im.putpixel((1, 0), (250, 250, 250, 128))  # half: a blend of pixel and background
    grey, rgb = both(save(tmp_path, "a.png", im))
    assert rgb[0, 0].tolist() == list(BG) and grey[0, 0] == luma(BG)
    assert rgb[1, 1].tolist() == [200, 10, 10] and grey[1, 1] == luma((200, 10, 10))
    half = [round(p * 128 / 255 + b * 127 / 255) for p, b in zip((250, 250, 250), BG, strict=True)]
    assert np.abs(rgb[0, 1].astype(int) - half).max() <= 1


def test_mode_p_with_transparency_index(tmp_path: Path) -> None:
    im = Image.new("P", (2, 2), 0)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)  # 0 red, 1 blue
    im.putpixel((0, 0), 1)
    path = save(tmp_path, "a.png", im, transparency=1)  # index 1 (blue) is transparent
    assert Image.open(path).info.get("transparency") == 1
    grey, rgb = both(path)
    assert rgb[0, 0].tolist() == list(BG) and grey[0, 0] == luma(BG)
    assert rgb[1, 1].tolist() == [255, 0, 0] and grey[1, 1] == luma((255, 0, 0))


def test_mode_p_opaque(tmp_path: Path) -> None:
    im = Image.new("P", (2, 2), 1)
    im.putpalette([0, 0, 0, 20, 120, 220] + [0] * 762)
    grey, rgb = both(save(tmp_path, "a.bmp", im))
    assert (rgb == [20, 120, 220]).all() and (grey == luma((20, 120, 220))).all()


def test_mode_cmyk_pure_cyan(tmp_path: Path) -> None:
    path = save(tmp_path, "a.tif", Image.new("CMYK", (2, 2), (255, 0, 0, 0)))
    assert Image.open(path).mode == "CMYK"
    grey, rgb = both(path)
    assert (rgb == [0, 255, 255]).all() and (grey == luma((0, 255, 255))).all()


def test_mode_i16_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 32768], [65535, 1000]], dtype=np.uint16)
    path = save(tmp_path, "a.png", Image.fromarray(values))
    assert Image.open(path).mode == "I;16"
    grey, rgb = both(path)
    assert grey.tolist() == [[0, 128], [255, 4]]  # v * 255 / 65535, rounded
    assert (rgb == grey[..., None]).all()


def test_mode_i_from_16bit_pgm(tmp_path: Path) -> None:
    path = tmp_path / "a.pgm"
    path.write_bytes(b"P5\n2 2\n65535\n" + np.array([0, 32768, 65535, 257], dtype=">u2").tobytes())
    assert Image.open(path).mode == "I"
    grey, rgb = both(path)
    assert grey.tolist() == [[0, 128], [255, 1]] and (rgb == grey[..., None]).all()


def test_mode_f_unit_range_and_byte_range(tmp_path: Path) -> None:
    unit = save(tmp_path, "u.tif", Image.fromarray(np.array([[0, 0.5], [1, 0.25]], dtype=np.float32)))
    byte = save(tmp_path, "b.tif", Image.fromarray(np.array([[0, 7.0], [255, 100.4]], dtype=np.float32)))
    assert Image.open(unit).mode == "F"
    assert both(unit)[0].tolist() == [[0, 128], [255, 64]]
    assert both(byte)[0].tolist() == [[0, 7], [255, 100]]


@pytest.mark.parametrize(
    ("values", "what"),
    [
        (np.array([[0, 1], [2, -5]], dtype=np.int32), "32-bit integer"),
        (np.array([[0, 1], [2, 300.0]], dtype=np.float32), "floating-point"),
        (np.array([[0, 1], [2, np.nan]], dtype=np.float32), "NaN"),
    ],
)
def test_out_of_range_pixels_are_refused(tmp_path: Path, values: np.ndarray, what: str) -> None:
    path = save(tmp_path, "a.tif", Image.fromarray(values))
    with pytest.raises(BadImage, match=what) as info:
        decode_image(path, Target(2, 1))
    assert info.value.reason == "unsupported" and str(path) in str(info.value)


# ---- orientation and geometry


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    im = Image.new("RGB", (4, 2), (0, 0, 0))
    im.putpixel((0, 0), (255, 0, 0))  # stored top-left corner marked red
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: display rotated 90° clockwise
    path = save(tmp_path, "a.png", im, exif=exif)
    out = decode_image(path, Target(4, 3, crop="pad", resize_filter="nearest", background=(255, 255, 255)))
    # shown 2 wide × 4 tall, padded by one white column each side: the marked corner is now top-right
    assert out[:, 0, 2].tolist() == [255, 0, 0]
    assert out[:, 0, 0].tolist() == [255, 255, 255] and out[:, 0, 1].tolist() == [0, 0, 0]


def _wide(tmp_path: Path) -> Path:
    """8 wide × 4 tall: columns 0-3 red, 4-7 blue."""
    arr = np.zeros((4, 8, 3), np.uint8)
    arr[:, :4] = (255, 0, 0)
    arr[:, 4:] = (0, 0, 255)
    return save(tmp_path, "wide.png", Image.fromarray(arr))


def test_center_crops_without_bars(tmp_path: Path) -> None:
    out = decode_image(_wide(tmp_path), Target(4, 3, crop="center", resize_filter="nearest", background=BG))
    assert out[:, :, :2].transpose(1, 2, 0).tolist() == [[[255, 0, 0]] * 2] * 4  # the middle square only
    assert out[:, :, 2:].transpose(1, 2, 0).tolist() == [[[0, 0, 255]] * 2] * 4


def test_pad_letterboxes_on_background(tmp_path: Path) -> None:
    target = Target(4, 3, crop="pad", resize_filter="nearest", background=BG)
    out = decode_image(_wide(tmp_path), target).transpose(1, 2, 0)
    assert (out[0] == BG).all() and (out[3] == BG).all()  # bars above and below
    assert (out[1:3, :2] == [255, 0, 0]).all() and (out[1:3, 2:] == [0, 0, 255]).all()  # the whole width kept
    grey = decode_image(_wide(tmp_path), Target(4, 1, crop="pad", resize_filter="nearest", background=BG))[0]
    assert (grey[0] == luma(BG)).all() and (grey[3] == luma(BG)).all()


@pytest.mark.parametrize("resolution", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shape(tmp_path: Path, resolution: int, channels: int) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    out = decode_image(save(tmp_path, "a.png", Image.fromarray(noise)), Target(resolution, channels))
    assert out.shape == (channels, resolution, resolution) and out.dtype == np.uint8 and out.flags.c_contiguous


def test_resize_filter_is_used(tmp_path: Path) -> None:
    checker = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)  # 1-pixel checkerboard
    path = save(tmp_path, "c.png", Image.fromarray(checker))
    smooth = decode_image(path, Target(32, 1, resize_filter="lanczos"))
    sharp = decode_image(path, Target(32, 1, resize_filter="nearest"))
    assert np.abs(smooth.astype(int) - 128).max() <= 6  # antialiased: the average grey (edges ring a little)
    assert set(np.unique(sharp)) <= {0, 255}  # point-sampled: no grey at all


def test_target_is_validated() -> None:
    for bad in (
        dict(resolution=0, channels=1),
        dict(resolution=8, channels=2),
        dict(resolution=8, channels=1, crop="stretch"),
        dict(resolution=8, channels=1, resize_filter="cubic"),
        dict(resolution=8, channels=1, background=(0, 0, 256)),
    ):
        with pytest.raises(ValueError, match="Target"):
            Target(**bad)


# ---- formats


RED = (200, 30, 30)


@pytest.mark.parametrize(
    ("name", "kw", "tolerance"),
    [
        ("a.png", {}, 0),
        ("a.jpg", {"quality": 95}, 8),
        ("a.webp", {"quality": 95}, 8),
        ("a.bmp", {}, 0),
        ("a.dib", {}, 0),  # Pillow writes .dib without the BMP file header: its own format, "DIB"
        ("a.tif", {}, 0),
        ("a.ppm", {}, 0),
    ],
)
def test_formats_decode(tmp_path: Path, name: str, kw: dict, tolerance: int) -> None:
    out = decode_image(save(tmp_path, name, Image.new("RGB", (8, 8), RED), **kw), Target(8, 3))
    assert np.abs(out.transpose(1, 2, 0).astype(int) - RED).max() <= tolerance


def test_pgm_decodes(tmp_path: Path) -> None:
    out = decode_image(save(tmp_path, "a.pgm", Image.new("L", (8, 8), 77)), Target(8, 1))
    assert (out == 77).all()


def test_gif_gives_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))]
    path = tmp_path / "a.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(path).n_frames == 2
    out = decode_image(path, Target(8, 3))
    assert (out.transpose(1, 2, 0) == [255, 0, 0]).all()


# ---- bad files: each a BadImage with its reason and the file's name


def _png_bytes(size: int = 64) -> bytes:
    noise = np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)  # incompressible
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "PNG")
    return buf.getvalue()


def _reason(path: Path) -> str:
    with pytest.raises(BadImage) as info:
        decode_image(path, Target(8, 3))
    assert str(path) in str(info.value) and isinstance(info.value, PipelineError)
    assert f"[{info.value.reason}]" in str(info.value)
    return info.value.reason


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    assert _reason(tmp_path / "a.png") == "empty"


def test_random_bytes_and_unsupported_format(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(np.random.default_rng(2).bytes(1000))
    assert _reason(tmp_path / "a.png") == "not-an-image"
    tga = save(tmp_path, "a.tga", Image.new("RGB", (8, 8)))  # Pillow reads it, the pipeline does not accept it
    assert _reason(tga) == "not-an-image"


def test_truncated_png(tmp_path: Path) -> None:
    data = _png_bytes()
    (tmp_path / "a.png").write_bytes(data[: len(data) // 2])
    assert _reason(tmp_path / "a.png") == "truncated"


def test_truncated_jpeg(tmp_path: Path) -> None:
    noise = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "JPEG")
    (tmp_path / "a.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert _reason(tmp_path / "a.jpg") == "truncated"


def test_truncated_even_when_pillow_is_told_to_load_truncated(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = _png_bytes()
    (tmp_path / "a.png").write_bytes(data[: len(data) // 2])
    assert _reason(tmp_path / "a.png") == "truncated"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_damaged_png_data(tmp_path: Path) -> None:
    data = bytearray(_png_bytes())
    idat = data.index(b"IDAT") + 4
    data[idat + 100 : idat + 140] = bytes(40)  # zeroed inside the deflate stream (and the CRC no longer matches)
    (tmp_path / "a.png").write_bytes(bytes(data))
    assert _reason(tmp_path / "a.png") == "truncated"  # Pillow: "broken data stream", an OSError like truncation


def test_corrupt_exif(tmp_path: Path) -> None:
    png = _png_bytes(8)
    exif = b"garbage!!"  # an eXIf chunk that is not TIFF-structured: the orientation cannot be known
    chunk = struct.pack(">I", len(exif)) + b"eXIf" + exif + struct.pack(">I", zlib.crc32(b"eXIf" + exif))
    (tmp_path / "a.png").write_bytes(png[:33] + chunk + png[33:])  # after the 8-byte signature and IHDR
    assert _reason(tmp_path / "a.png") == "corrupt"


@pytest.mark.parametrize("side", [16, 12])  # 256 > 2 × 100: DecompressionBombError; 144 in (100, 200]: the Warning
def test_decompression_bomb(tmp_path: Path, monkeypatch, side: int) -> None:
    path = save(tmp_path, "a.png", Image.new("RGB", (side, side)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert _reason(path) == "decompression-bomb"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert decode_image(path, Target(8, 3)).shape == (3, 8, 8)


def test_unreadable(tmp_path: Path) -> None:
    assert _reason(tmp_path) == "unreadable"  # a folder
    assert _reason(tmp_path / "missing.png") == "unreadable"
    if os.geteuid() != 0:  # root reads anything
        path = save(tmp_path, "a.png", Image.new("RGB", (8, 8)))
        path.chmod(0)
        assert _reason(path) == "unreadable"


# ---- has_colour and pixel_digest


def test_has_colour(tmp_path: Path) -> None:
    grey = np.stack([np.arange(64, dtype=np.uint8).reshape(8, 8)] * 3, axis=-1)
    assert not has_colour(save(tmp_path, "grey.png", Image.fromarray(grey)))  # RGB, but R=G=B everywhere
    assert not has_colour(save(tmp_path, "l.png", Image.new("L", (8, 8), 90)))
    tinted = grey.copy()
    tinted[3, 3] = (10, 11, 10)
    path = save(tmp_path, "tinted.png", Image.fromarray(tinted))
    assert has_colour(path) and not has_colour(path, tolerance=1)
    hidden = np.dstack([grey, np.full((8, 8), 255, np.uint8)])
    hidden[0, 0] = (255, 0, 0, 0)  # a colour only where fully transparent does not count
    assert not has_colour(save(tmp_path, "hidden.png", Image.fromarray(hidden)))
    assert has_colour(save(tmp_path, "red.gif", Image.new("RGB", (8, 8), (255, 0, 0))))


def test_pixel_digest(tmp_path: Path) -> None:
    noise = np.random.default_rng(4).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    target = Target(16, 3)
    png = decode_image(save(tmp_path, "a.png", Image.fromarray(noise)), target)
    bmp = decode_image(save(tmp_path, "a.bmp", Image.fromarray(noise)), target)
    assert pixel_digest(png) == pixel_digest(bmp)
    changed = noise.copy()
    changed[5, 5, 1] ^= 1
    other = decode_image(save(tmp_path, "b.png", Image.fromarray(changed)), target)
    assert pixel_digest(other) != pixel_digest(png)
    assert pixel_digest(png.reshape(3, 8, 32)) != pixel_digest(png)  # same bytes, another shape


# ---- decode_file (one read, several targets) and convert_array (an image already in memory)


def test_decode_file_equals_decode_image_and_has_colour(tmp_path: Path) -> None:
    im = Image.new("RGBA", (12, 7), (200, 10, 10, 255))
    im.putpixel((3, 3), (0, 0, 255, 0))
    path = save(tmp_path, "a.png", im)
    targets = (Target(8, 1, "pad", background=BG), Target(8, 3, "center"), Target(5, 3, "pad", background=BG))
    got = decode_file(path, targets)
    assert got.colour == has_colour(path) is True
    assert all(np.array_equal(a, decode_image(path, t)) for a, t in zip(got.arrays, targets, strict=True))
    grey = save(tmp_path, "grey.png", Image.new("LA", (4, 4), (90, 255)))
    assert decode_file(grey, (Target(4, 3, background=BG),)).colour is False  # colour of the file, not of BG
    with pytest.raises(BadImage):
        decode_file(tmp_path / "missing.png", targets)
    assert BadImage(path, "empty", "what").detail == "what"


def test_convert_array(tmp_path: Path) -> None:
    rgb = np.random.default_rng(5).integers(0, 256, (3, 10, 6), dtype=np.uint8)
    native = convert_array(rgb[:, :6], Target(6, 3))
    assert np.array_equal(native, rgb[:, :6]) and native.flags.c_contiguous  # the target shape: as is
    path = save(tmp_path, "a.png", Image.fromarray(rgb.transpose(1, 2, 0)))
    for target in (Target(4, 1, "pad", "bicubic", BG), Target(8, 3, "center", "lanczos")):
        assert np.array_equal(convert_array(rgb, target), decode_image(path, target))  # same steps as a file
    with pytest.raises(ValueError, match="uint8 C×H×W"):
        convert_array(rgb.astype(np.float32), Target(4, 1))
