"""Packed numeric columns: numpy arrays stored as little-endian ``bytes`` in Avro.

The schema declares each such field with ``logicalType: packed-array`` and its
``dtype`` (and ``columns`` for matrices), so any reader knows how to decode it.
Decoding is a single ``numpy.frombuffer``: no per-item work at all.
"""

from __future__ import annotations

import numpy as np

F4 = np.dtype("<f4")
F8 = np.dtype("<f8")


def pack(values, dtype: np.dtype) -> bytes:
    """Pack a sequence or array as little-endian ``dtype`` bytes."""
    return np.ascontiguousarray(values, dtype=dtype).tobytes()


def unpack(data: bytes, dtype: np.dtype, columns: int | None = None) -> np.ndarray:
    """Decode packed bytes (read-only view, no copy); ``columns`` reshapes to rows of that width."""
    arr = np.frombuffer(data, dtype=dtype)
    return arr.reshape(-1, columns) if columns else arr
