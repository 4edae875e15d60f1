"""The Python side of every row kernel: allocate the output from the registry, run the kernel, return.

A numba kernel here is a ``prange`` driver taking ``(input, output, *constants)``; these two wrappers
are what each ``quantize_<key>`` / ``dequantize_<key>`` of a kernel module does around it, so the
block and type sizes come from :mod:`quantlab.formats.registry` and nowhere else.
"""
from __future__ import annotations

import numpy as np

from ..formats.registry import get


def quantize_rows(kernel, x, fmt, *args) -> np.ndarray:
    """``kernel(x, out, *args)`` into a fresh uint8 array of ``fmt``'s row size per row of ``x``."""
    out = np.empty((x.shape[0], get(fmt).row_bytes(x.shape[1])), dtype=np.uint8)
    kernel(x, out, *args)
    return out


def dequantize_rows(kernel, q, n_per_row, *args) -> np.ndarray:
    """``kernel(q, y, *args)`` into a fresh float32 array of ``n_per_row`` values per row of ``q``."""
    y = np.empty((q.shape[0], n_per_row), dtype=np.float32)
    kernel(np.ascontiguousarray(q), y, *args)
    return y
