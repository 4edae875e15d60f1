"""C behaviour that ggml's quantizers rely on, as numba helpers shared by every kernel family
(numpy twins for the references live in :mod:`quantlab.formats._numerics`: formats never import kernels).

* :func:`nearest_int` – ggml's ``nearest_int``: add 1.5*2**23 in float32, read the low 22 mantissa bits.
  Round half to even for |v| < 2**22; beyond, NaN and inf it gives ggml's bits (NaN -> 0, inf -> -2**22),
  which ``np.rint`` does not.
* :func:`inv` – ``d ? 1.0f/d : 0.0f`` in float32.
* :func:`clampi` – ``MAX(lo, MIN(hi, l))`` on ints.

All are inlined into their callers: numba's on-disk cache of a kernel in another module does not notice
an edit here (see :mod:`quantlab.kernels._search`); delete the numba cache after editing this file.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._fp import f32_as_u32

__all__ = ["nearest_int", "inv", "clampi"]

_MAGIC = np.float32(12582912.0)  # 1.5 * 2**23


@njit(cache=True, error_model="numpy", inline="always")
def nearest_int(v):
    """ggml nearest_int: (bits(v + 1.5*2**23) & 0x7fffff) - 0x400000, as int32."""
    b = f32_as_u32(np.float32(np.float32(v) + _MAGIC))
    return np.int32(b & np.uint32(0x7FFFFF)) - np.int32(0x400000)


@njit(cache=True, error_model="numpy", inline="always")
def inv(d):
    """``d ? 1.0f/d : 0.0f`` in float32."""
    if d != 0:
        return np.float32(np.float32(1.0) / d)
    return np.float32(0.0)


@njit(cache=True, error_model="numpy", inline="always")
def clampi(l, lo, hi):
    """``MAX(lo, MIN(hi, l))``."""
    if l < lo:
        return lo
    if l > hi:
        return hi
    return l
