"""Decoding one image file of any common kind into the uint8 C×H×W array the pipeline trains on.

`decode_image(path, target)` does, in this order:

1. open the file with Pillow, accepting only the raster formats in FORMATS (no EPS/PDF: Pillow hands those to
   Ghostscript); a multi-frame file (GIF, APNG, animated WebP, multi-page TIFF) gives its first frame;
2. apply the EXIF orientation (`ImageOps.exif_transpose`), so a phone photo comes out the way it is shown;
3. bring any mode to 8 bits: "I;16*" and "I" are 16-bit data (Pillow scales 16-bit PGM/PPM and PNG to
   0..65535), mapped to 0..255 by rounding v * 255 / 65535, never clipped; "F" is taken as 0..1 when all its
   values are, as 0..255 otherwise; other ranges, NaN, and modes Pillow cannot convert are refused;
4. composite any alpha ("RGBA", "LA", "PA", or a "P"/"L"/"RGB" image with a transparency key) onto
   `target.background`, then convert to "L" (1 channel, ITU-R 601-2 luma) or "RGB" (3 channels);
5. make it square: "center" crops the largest centred square, "pad" letterboxes the whole image on the
   background colour (its luma for 1 channel);
6. resize to `target.resolution` with `target.resize_filter` (Pillow's resize is antialiased when shrinking).

A file that cannot be decoded raises BadImage, never anything else, with a short `.reason` (see REASONS) and
a message naming the file, what was wrong and what to do. Pillow's LOAD_TRUNCATED_IMAGES is forced off while
decoding (a truncated file must not pass as an image with a grey bottom half), and DecompressionBombWarning
(more than PIL.Image.MAX_IMAGE_PIXELS pixels) is an error here, like DecompressionBombError (more than twice
that). Both switches are process-wide in Pillow and `warnings`; do not decode from several threads at once.

`has_colour` tells grey images (R=G=B everywhere, stored as RGB or not) from colour ones, to choose the
default channel count; `pixel_digest` fingerprints a decoded array to find exact duplicates across formats.
`decode_file` does both, and several targets, from one read of the file (what the prepare stage runs);
`convert_array` takes an image already in memory (a built-in dataset's uint8 C×H×W) through steps 4-6.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from gan.core.errors import PipelineError

FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "DIB", "GIF", "TIFF", "PPM")  # JPEG includes MPO (multi-picture JPEG)
FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
Reason = Literal["empty", "not-an-image", "truncated", "corrupt", "decompression-bomb", "unsupported", "unreadable"]
REASONS: tuple[Reason, ...] = (
    "empty",  # zero bytes
    "not-an-image",  # no format in FORMATS recognises it
    "truncated",  # the pixel data ends early or is cut (Pillow's OSError while loading)
    "corrupt",  # any other failure inside Pillow on this file (bad header values, broken EXIF, ...)
    "decompression-bomb",  # more pixels than PIL.Image.MAX_IMAGE_PIXELS
    "unsupported",  # decodes, but its mode or value range has no faithful 8-bit form
    "unreadable",  # the file itself cannot be read (permissions, a folder, missing, I/O error)
)
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_TO_RGB = ("1", "P", "RGBX", "CMYK", "YCbCr")  # modes Pillow converts straight to RGB
_WHITE = (255, 255, 255)  # what has_colour composites alpha on


@dataclass(frozen=True)
class Target:
    """What every decoded image becomes: `channels`×`resolution`×`resolution` uint8."""

    resolution: int
    channels: int  # 1 (grey) or 3 (RGB)
    crop: Literal["center", "pad"] = "center"
    resize_filter: str = "lanczos"  # a key of FILTERS
    background: tuple[int, int, int] = (255, 255, 255)  # RGB that alpha and "pad" bars are filled with

    def __post_init__(self) -> None:
        if not isinstance(self.resolution, int) or self.resolution < 1:
            raise ValueError(f"Target.resolution={self.resolution!r}: must be a positive int (e.g. 32, 64)")
        if self.channels not in (1, 3):
            raise ValueError(f"Target.channels={self.channels!r}: must be 1 (grey) or 3 (RGB)")
        if self.crop not in ("center", "pad"):
            raise ValueError(f"Target.crop={self.crop!r}: must be 'center' or 'pad'")
        if self.resize_filter not in FILTERS:
            raise ValueError(f"Target.resize_filter={self.resize_filter!r}: must be one of {', '.join(FILTERS)}")
        bg = self.background
        if len(bg) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in bg):
            raise ValueError(f"Target.background={bg!r}: must be three ints 0..255 (R, G, B)")


class BadImage(PipelineError, ValueError):
    """An image file cannot be decoded; `.reason` is one of REASONS and the message names the file."""

    def __init__(self, path: Path, reason: Reason, detail: str) -> None:
        super().__init__(f"{path}: {detail} [{reason}]")
        self.path = path
        self.reason = reason
        self.detail = detail


def decode_image(path: Path, target: Target) -> np.ndarray:
    """The image at `path` as uint8 C×H×W with C = target.channels and H = W = target.resolution."""
    return _fit(_load(Path(path), target.background), target)


@dataclass(frozen=True)
class Decoded:
    colour: bool  # has_colour(path): some pixel's R, G and B differ (alpha composited on white)
    arrays: tuple[np.ndarray, ...]  # the image as decode_image gives it for each target, in order


def decode_file(path: Path, targets: Sequence[Target]) -> Decoded:
    """has_colour(path) and decode_image(path, t) for each t, from one read and decode of the file."""
    backgrounds = list(dict.fromkeys([_WHITE, *(t.background for t in targets)]))
    flat = dict(zip(backgrounds, _load_many(Path(path), backgrounds), strict=True))
    return Decoded(colour=_colour(flat[_WHITE]), arrays=tuple(_fit(flat[t.background], t) for t in targets))


def convert_array(arr: np.ndarray, target: Target) -> np.ndarray:
    """An in-memory uint8 C×H×W image (C = 1 or 3) through steps 4-6 of decode_image (alpha-free: no step 4).

    An array that already has the target's shape is returned as is (a contiguous copy): byte-identical.
    """
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[0] not in (1, 3):
        raise ValueError(f"convert_array: expected uint8 C×H×W with C = 1 or 3, got {arr.dtype} {arr.shape}")
    if arr.shape == (target.channels, target.resolution, target.resolution):
        return np.array(arr, order="C", copy=True)
    im = Image.fromarray(arr[0], "L") if arr.shape[0] == 1 else Image.fromarray(arr.transpose(1, 2, 0), "RGB")
    return _fit(im, target)


def _fit(im: Image.Image, target: Target) -> np.ndarray:
    """A loaded "L" or "RGB" image to the target: channels, square (crop or pad), size."""
    im = im.convert("L") if target.channels == 1 else im.convert("RGB")
    fill = _fill(im.mode, target.background)
    w, h = im.size
    side = min(w, h) if target.crop == "center" else max(w, h)
    if (w, h) != (side, side):
        if target.crop == "center":
            left, top = (w - side) // 2, (h - side) // 2
            im = im.crop((left, top, left + side, top + side))
        else:
            square = Image.new(im.mode, (side, side), fill)
            square.paste(im, ((side - w) // 2, (side - h) // 2))
            im = square
    if im.size != (target.resolution, target.resolution):
        im = im.resize((target.resolution, target.resolution), resample=FILTERS[target.resize_filter])
    arr = np.asarray(im, dtype=np.uint8)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr)


def has_colour(path: Path, tolerance: int = 0) -> bool:
    """True if some pixel's R, G and B differ by more than `tolerance` (alpha composited on white first).

    Grey modes (1, L, LA, I, F) are grey; an RGB, palette or CMYK image whose pixels are all R=G=B is grey
    too. A `tolerance` of 2 or 3 forgives the chroma noise of a grey picture saved as a colour JPEG.
    """
    return _colour(_load(Path(path), _WHITE), tolerance)


def _colour(im: Image.Image, tolerance: int = 0) -> bool:
    if im.mode == "L":
        return False
    rgb = np.asarray(im, dtype=np.int16)
    spread = np.maximum(np.abs(rgb[..., 0] - rgb[..., 1]), np.abs(rgb[..., 1] - rgb[..., 2]))
    return bool(spread.max(initial=0) > tolerance)


def pixel_digest(arr: np.ndarray) -> str:
    """sha256 of a decoded array's shape, dtype and bytes: equal exactly when the pixels are."""
    arr = np.ascontiguousarray(arr)
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


# ---- loading: the file to a loaded "L" or "RGB" image at its own size, every failure a BadImage


def _load(path: Path, background: tuple[int, int, int]) -> Image.Image:
    return _load_many(path, [background])[0]


def _load_many(path: Path, backgrounds: Sequence[tuple[int, int, int]]) -> list[Image.Image]:
    """The file opened once, as "L" or "RGB" with its alpha composited on each of `backgrounds`."""
    try:
        f = open(path, "rb")
    except OSError as err:
        raise _unreadable(path, err) from err
    with f, _strict_pillow():
        try:
            if f.seek(0, 2) == 0:
                raise BadImage(path, "empty", "the file is empty (0 bytes); copy it again or remove it")
            f.seek(0)
            with Image.open(f, formats=FORMATS) as opened:
                im = ImageOps.exif_transpose(opened)  # loads the pixels; a copy that outlives the file
            return [_to_l_or_rgb(path, im, bg) for bg in backgrounds]
        except BadImage:
            raise
        except UnidentifiedImageError as err:
            raise BadImage(
                path,
                "not-an-image",
                f"not an image in a supported format ({', '.join(FORMATS)}); remove it, or convert it to PNG",
            ) from err
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise BadImage(
                path,
                "decompression-bomb",
                f"{err}; shrink the image, or raise PIL.Image.MAX_IMAGE_PIXELS if it is genuine",
            ) from err
        except OSError as err:
            if err.errno is not None:  # a real I/O error from the OS, not Pillow's "image file is truncated"
                raise _unreadable(path, err) from err
            raise BadImage(
                path, "truncated", f"the image data is truncated or damaged ({err}); copy or export it again"
            ) from err
        except Exception as err:  # Pillow raises SyntaxError, ValueError, struct.error, ... on malformed files
            raise BadImage(
                path, "corrupt", f"Pillow cannot decode it ({type(err).__name__}: {err}); export it again as PNG"
            ) from err


@contextlib.contextmanager
def _strict_pillow() -> Iterator[None]:
    """Truncated files fail, and the DecompressionBombWarning is an error, for the duration of the block."""
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _to_l_or_rgb(path: Path, im: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    if im.mode == "I" or im.mode.startswith("I;16"):
        values = np.asarray(im).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise _unsupported(path, f"32-bit integer pixels from {values.min()} to {values.max()}, not 0..65535")
        return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), "L")
    if im.mode == "F":
        values = np.asarray(im).astype(np.float64)
        if values.size and not np.isfinite(values).all():
            raise _unsupported(path, "floating-point pixels that are NaN or infinite")
        lo, hi = (values.min(), values.max()) if values.size else (0.0, 0.0)
        if lo < 0 or hi > 255:
            raise _unsupported(path, f"floating-point pixels from {lo:g} to {hi:g}, neither 0..1 nor 0..255")
        scale = 255.0 if hi <= 1 else 1.0
        return Image.fromarray(np.round(values * scale).astype(np.uint8), "L")
    if im.mode in _ALPHA_MODES or im.info.get("transparency") is not None:
        rgba = im.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    if im.mode in ("L", "RGB"):
        return im
    if im.mode in _TO_RGB:
        return im.convert("RGB")
    raise _unsupported(path, f"Pillow mode {im.mode!r}, which has no direct conversion to RGB")


def _fill(mode: str, background: tuple[int, int, int]) -> int | tuple[int, int, int]:
    """The background in `mode`: the RGB itself, or its luma for "L" (as convert("L") computes it)."""
    return background if mode == "RGB" else Image.new("RGB", (1, 1), background).convert("L").getpixel((0, 0))


def _unreadable(path: Path, err: OSError) -> BadImage:
    why = err.strerror or str(err)
    return BadImage(path, "unreadable", f"cannot read the file ({why}); check it exists, is a file and is readable")


def _unsupported(path: Path, what: str) -> BadImage:
    return BadImage(path, "unsupported", f"{what}; convert it to 8- or 16-bit PNG first")
