"""Reading external samples (`gan evaluate --samples PATH`): NPZ, NPY or a folder of PNGs.

The result is uint8 N×C×H×W of the expected shape (the prepared data's). Arrays may be laid out
N×H×W×C, N×C×H×W or N×H×W (grey), uint8 or float in [0, 1]; three equal channels count as grey.
PNGs may be stored grey or RGB (RGB with R = G = B counts as grey; alpha is dropped). Anything else,
a shape that is not the expected one included, is refused with the file and the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from gan.core.errors import PipelineError
from gan.core.splits import shape_text


class SamplesError(PipelineError, ValueError):
    """External samples cannot be read as images of the expected shape; the message names the file."""


def _mismatch(expected: tuple[int, int, int], got: Sequence[int] | str, name: str) -> SamplesError:
    got_text = got if isinstance(got, str) else shape_text(got)
    return SamplesError(f"expected {shape_text(expected)} images (the prepared data's shape), got {got_text} in {name}")


def _as_channels(arr: np.ndarray, channels: int, name: str, expected: tuple[int, int, int]) -> np.ndarray:
    """NCHW `arr` with `channels` channels: 3 equal channels become 1 when grey is expected."""
    if arr.shape[1] == channels:
        return arr
    if channels == 1 and arr.shape[1] == 3 and (arr == arr[:, :1]).all():
        return arr[:, :1]
    colour = " (colour)" if arr.shape[1] == 3 else ""
    raise _mismatch(expected, shape_text(arr.shape[1:]) + colour, name)


def _to_nchw_u8(arr: np.ndarray, expected: tuple[int, int, int], name: str) -> np.ndarray:
    c, h, w = expected
    if arr.ndim == 3:  # N×H×W: grey
        arr = arr[:, None]
    elif arr.ndim == 4 and arr.shape[2:] != (h, w) and arr.shape[1:3] == (h, w):  # N×H×W×C
        arr = arr.transpose(0, 3, 1, 2)
    elif arr.ndim == 4 and arr.shape[1] not in (1, 3) and arr.shape[-1] in (1, 3):  # N×H×W×C of another size
        arr = arr.transpose(0, 3, 1, 2)
    if arr.ndim != 4 or arr.shape[1] not in (1, 3):
        raise SamplesError(
            f"{name}: shape {arr.shape} is not N×H×W, N×H×W×C or N×C×H×W (C = 1 or 3); "
            f"expected {shape_text(expected)} images (the prepared data's shape)"
        )
    if arr.shape[2:] != (h, w):
        raise _mismatch(expected, arr.shape[1:], name)
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating) or arr.min() < 0 or arr.max() > 1:
            raise SamplesError(f"{name}: {arr.dtype} values must be uint8 0..255 or floats in [0, 1]")
        arr = np.round(arr * 255).astype(np.uint8)
    return np.ascontiguousarray(_as_channels(arr, c, name, expected))


def _read_png(path: Path, expected: tuple[int, int, int]) -> np.ndarray:
    """One PNG as C×H×W uint8 of the expected shape."""
    c, h, w = expected
    try:
        with Image.open(path) as im:
            if im.size != (w, h):
                got = f"{1 if im.mode in ('L', 'LA', '1', 'I', 'I;16') else 3}×{im.size[1]}×{im.size[0]}"
                raise _mismatch(expected, got, str(path))
            grey = im.mode in ("L", "LA", "1", "I", "I;16")
            arr = np.asarray(im.convert("L"))[None] if grey else np.asarray(im.convert("RGB")).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError) as err:
        raise SamplesError(f"{path}: not a readable image ({err})") from None
    return _as_channels(arr[None], c, str(path), expected)[0]


def load_samples(path: str | Path, shape: Sequence[int]) -> torch.Tensor:
    """Samples at `path` as uint8 N×C×H×W, checked against `shape` = the prepared data's (C, H, W)."""
    path = Path(path)
    expected = tuple(int(s) for s in shape)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".png")
        if not files:
            raise SamplesError(f"{path}: no .png files in this folder")
        return torch.from_numpy(np.stack([_read_png(f, expected) for f in files]))
    if not path.exists():
        raise SamplesError(f"{path}: no such file or folder")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if "images" not in z.files:
                    raise SamplesError(f"{path}: no array 'images' (has: {', '.join(z.files)})")
                arr = z["images"]
        elif path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            raise SamplesError(f"{path}: expected .npz (key 'images'), .npy or a folder of .png files")
    except (ValueError, OSError) as err:
        if isinstance(err, SamplesError):
            raise
        raise SamplesError(f"{path}: cannot read ({err})") from None
    return torch.from_numpy(_to_nchw_u8(arr, expected, str(path)))
