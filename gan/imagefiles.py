"""Reading external samples (`gan evaluate --samples PATH`): NPZ, NPY or a folder of PNGs.

Whatever the layout (N×H×W, N×H×W×C, N×C×H×W; uint8, or float in [0, 1]),
the result is uint8 N×1×28×28, the format of the prepared data. Anything else
is refused with the file and the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from gan.errors import PipelineError

SIZE = 28


class SamplesError(PipelineError, ValueError):
    """External samples cannot be read as 28×28 grey images; the message names the file."""


def _to_nchw_u8(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 3:
        arr = arr[:, None]
    elif arr.ndim == 4 and arr.shape[-1] in (1, 3) and arr.shape[1] not in (1, 3):
        arr = arr.transpose(0, 3, 1, 2)
    if arr.ndim != 4 or arr.shape[1] not in (1, 3) or arr.shape[2:] != (SIZE, SIZE):
        raise SamplesError(f"{name}: shape {arr.shape} is not N×28×28, N×28×28×C or N×C×28×28 (C = 1 or 3)")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating) or arr.min() < 0 or arr.max() > 1:
            raise SamplesError(f"{name}: {arr.dtype} values must be uint8 0..255 or floats in [0, 1]")
        arr = np.round(arr * 255).astype(np.uint8)
    if arr.shape[1] == 3:  # ITU-R 601-2 luma, as PIL's convert("L")
        arr = np.round(arr[:, 0] * 0.299 + arr[:, 1] * 0.587 + arr[:, 2] * 0.114)[:, None].astype(np.uint8)
    return np.ascontiguousarray(arr)


def load_samples(path: str | Path) -> torch.Tensor:
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".png")
        if not files:
            raise SamplesError(f"{path}: no .png files in this folder")
        images = []
        for f in files:
            try:
                with Image.open(f) as im:
                    if im.size != (SIZE, SIZE):
                        raise SamplesError(f"{f}: size {im.size[0]}×{im.size[1]}, expected 28×28 like the others")
                    images.append(np.asarray(im.convert("L")))
            except (UnidentifiedImageError, OSError) as err:
                raise SamplesError(f"{f}: not a readable image ({err})") from None
        return torch.from_numpy(np.stack(images)[:, None])
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
    return torch.from_numpy(_to_nchw_u8(arr, str(path)))
