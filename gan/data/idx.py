"""IDX (the MNIST file format) reader with strict validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gan.core.errors import PipelineError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class IDXError(PipelineError, ValueError):
    """An IDX file is malformed; the message names the file and what is wrong."""


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    if len(data) < 4:
        raise IDXError(f"{name}: {len(data)} bytes is too short for an IDX header")
    zero, code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or code not in _DTYPES or ndim == 0:
        raise IDXError(
            f"{name}: bad magic number 0x{data[:4].hex()} (expected 0x0000TTDD: type code "
            f"one of {sorted(hex(c) for c in _DTYPES)}, DD = number of dimensions >= 1); "
            "is this really an IDX file (and decompressed)?"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(f"{name}: truncated header ({len(data)} bytes, need {header})")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_DTYPES[code])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(data) != expected:
        raise IDXError(
            f"{name}: wrong length {len(data)} bytes; header says shape {tuple(dims)} of {dtype}, "
            f"which needs {expected} bytes (file truncated or corrupted)"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    path = Path(path)
    return parse_idx(path.read_bytes(), str(path))
