"""numba kernels for MXFP4 and NVFP4, bit-identical to quantlab.formats.fp4.

Two things differ from a literal transcription of ggml, with the same results:

* The MXFP4 exponent ``floor(log2f(amax))`` is read from the float's bits, plus a per-binade threshold
  table: log2f rounds up to the next integer for the ~44 largest mantissas of a binade, and the table
  (built at import from the reference ``formats.fp4._log2f``) says where that starts. No log call.
* The nearest-code search scans 8 candidates instead of 16: for x > 0 a negative code can never be
  strictly nearer than code 0 (value 0), and for x < 0 the error of code 8 + i equals, bit for bit, the
  error of code i for |x| (rounding is symmetric). So the code is the best of 0..7 for |x|, moved to the
  negative half when x < 0 and the best is not 0 — the same index ggml's 16-way scan returns.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..formats import _numerics as nm
from ..formats.fp4 import KVALUES, _log2f
from ..formats.layout import offsets, size
from ..formats.registry import register
from ._fp import e8m0_half, f32_as_u32
from ._rows import dequantize_rows, quantize_rows

KV = KVALUES.astype(np.float32)
UE4M3_TABLE = nm.ue4m3_to_f32(np.arange(256))  # decoded NVFP4 scale bytes (includes the 1/2)

# Byte offsets inside one block (quantlab.formats.layout; ints, so numba compiles them as constants).
MX_E, MX_QS = offsets("MXFP4", "e", "qs")
MX_SIZE = size("MXFP4")
NV_D, NV_QS = offsets("NVFP4", "d", "qs")  # d: 4 ue4m3 scale bytes, one per 16 values; qs: 8 bytes each
NV_SIZE = size("NVFP4")


def _log2_thresholds() -> np.ndarray:
    """T[p + 149] = smallest float32 bit pattern in [2**p, 2**(p+1)) whose floor(log2f) is p + 1
    (0xFFFFFFFF when there is none), for p = -149..127 (subnormals included)."""
    out = np.full(277, 0xFFFFFFFF, dtype=np.uint32)
    span = 256
    for p in range(-149, 128):
        if p >= -126:
            bot, top = (p + 127) << 23, (p + 128) << 23
        else:
            bot, top = 1 << (p + 149), 1 << (p + 150)
        bits = np.arange(max(bot, top - span), top, dtype=np.uint32)
        up = np.floor(_log2f(bits.view(np.float32))) > p
        if up.any():
            i = int(np.argmax(up))
            assert i > 0 or top - span <= bot, "threshold search window too small"
            out[p + 149] = bits[i]
    return out


LOG2_UP = _log2_thresholds()


@njit(cache=True, inline="always")
def _mxfp4_e(amax):
    """(uint8)(floorf(log2f(amax)) - 2 + 127) for amax >= 0, 0 for amax == 0."""
    bits = f32_as_u32(amax)
    if bits == np.uint32(0):
        return np.uint8(0)
    ex = np.int32(bits >> np.uint32(23))
    if ex > 0:
        p = ex - np.int32(127)
    else:  # subnormal: position of the top set bit
        p = np.int32(-150)
        b = bits
        while b:
            b >>= np.uint32(1)
            p += np.int32(1)
    if bits >= LOG2_UP[p + 149]:
        p += np.int32(1)
    return np.uint8((p - np.int32(2) + np.int32(127)) & np.int32(0xFF))


@njit(cache=True, inline="always")
def _best(x, cand):
    """Index of the nearest of kvalues * d (cand[0..7] = kv[0..7] * d) to x, ggml's tie rule."""
    ax = abs(x)
    best = np.int32(0)
    be = ax  # |0 - x|
    for i in range(1, 8):
        e = abs(cand[i] - ax)
        if e < be:
            be = e
            best = np.int32(i)
    if x < 0 and best > 0:
        best += np.int32(8)
    return best


@njit(cache=True, inline="always")
def _kvalue(n):
    """kvalues[n] computed instead of looked up (the lookup does not vectorize well): the magnitude
    code c = n & 7 is an E2M1 number, 0 and 1 for c < 2, else (2 + mantissa) << (exponent - 1), i.e.
    0, 1, 2, 3, 4, 6, 8, 12; bit 3 is the sign."""
    c = n & np.int32(7)
    mag = ((np.int32(2) + (c & np.int32(1))) << (c >> np.int32(1))) >> np.int32(1)
    mag = c if c < 2 else mag
    return -mag if n & np.int32(8) else mag


@njit(cache=True, inline="always")
def _absmax(xr, xo, n):
    """max |x| over xr[xo:xo+n] (strict '<' scan, like ggml)."""
    amax = np.float32(0.0)
    for j in range(n):
        a = abs(xr[xo + j])
        if amax < a:
            amax = a
    return amax


@njit(cache=True, inline="always")
def _quant_pairs(xr, xo, orow, qo, h, d, cand):
    """2h values at xr[xo] -> h bytes at orow[qo]: the nearest code of value j (scale d) in the low nibble
    of byte j, that of value j + h in the high one. cand is an 8-float scratch."""
    for i in range(8):
        cand[i] = KV[i] * d
    for j in range(h):
        orow[qo + j] = np.uint8(_best(xr[xo + j], cand) | (_best(xr[xo + h + j], cand) << 4))


@njit(cache=True, inline="always")
def _dequant_pairs(qr, qo, yr, yo, h, half, d):
    """The inverse of _quant_pairs: h bytes at qr[qo] -> 2h values at yr[yo]. ``half`` (= h) is passed
    as a constant: a constant offset for the high nibbles lets LLVM see that the two stores of a byte
    never overlap (NVFP4 dequantizes ~10% slower with the run-time h there)."""
    for j in range(h):
        b = np.int32(qr[qo + j])
        yr[yo + j] = np.float32(_kvalue(b & 15)) * d
        yr[yo + half + j] = np.float32(_kvalue(b >> 4)) * d


# ----------------------------------------------------------------------------------------------------
# MXFP4: blocks of 32 = e8m0 exponent byte + 16 bytes of pairs (j, j + 16)
# ----------------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _mxfp4(x, out, h, r0, r1):
    nb = x.shape[1] // 32
    for r in range(r0, r1):
        xr = x[r]
        orow = out[r]
        cand = np.empty(8, dtype=np.float32)
        for ib in range(nb):
            e = _mxfp4_e(_absmax(xr, ib * 32, 32))
            orow[ib * MX_SIZE + MX_E] = e
            _quant_pairs(xr, ib * 32, orow, ib * MX_SIZE + MX_QS, h, e8m0_half(e), cand)


def quantize_mxfp4(x, imatrix=None):
    return quantize_rows(_mxfp4, x, "MXFP4", 16)


@njit(cache=True, nogil=True)
def _dmxfp4(q, y, h, r0, r1):
    nb = y.shape[1] // 32
    for r in range(r0, r1):
        qr = q[r]
        yr = y[r]
        for ib in range(nb):
            _dequant_pairs(qr, ib * MX_SIZE + MX_QS, yr, ib * 32, h, 16, e8m0_half(qr[ib * MX_SIZE + MX_E]))


def dequantize_mxfp4(q, n_per_row):
    return dequantize_rows(_dmxfp4, q, n_per_row, 16)


# ----------------------------------------------------------------------------------------------------
# NVFP4
# ----------------------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def f32_to_ue4m3(v):
    """ggml_fp32_to_ue4m3 (see formats._numerics.f32_to_ue4m3): unsigned E4M3, one guard bit rounding
    half up, clamp to 448; non-positive / NaN -> 0."""
    if not (v > np.float32(0.0)):
        return np.uint8(0)
    if v > np.float32(448.0):
        v = np.float32(448.0)
    bits = f32_as_u32(v)
    ex = np.int32((bits >> np.uint32(23)) & np.uint32(0xFF)) - np.int32(127) + np.int32(7)
    if ex <= 0:
        man = np.int32(v * np.float32(512.0) + np.float32(0.5))
        if man > 7:
            man = np.int32(7)
        if man < 1:
            return np.uint8(0)
        return np.uint8(man)
    if ex >= 15:
        return np.uint8(0x7E)
    man = np.int32((bits >> np.uint32(20)) & np.uint32(7)) + np.int32((bits >> np.uint32(19)) & np.uint32(1))
    if man > 7:
        man = np.int32(0)
        ex += np.int32(1)
        if ex >= 15:
            return np.uint8(0x7E)
    return np.uint8((ex << 3) | man)


@njit(cache=True, nogil=True)
def _nvfp4(x, out, h, r0, r1):
    """Blocks of 64 = 4 ue4m3 scale bytes + 4 x 8 bytes of pairs (j, j + 8) of 16 values each."""
    nb = x.shape[1] // 64
    for r in range(r0, r1):
        xr = x[r]
        orow = out[r]
        cand = np.empty(8, dtype=np.float32)
        for ib in range(nb):
            for s in range(4):
                xo = ib * 64 + s * 16
                ue = f32_to_ue4m3(np.float32(_absmax(xr, xo, 16) / np.float32(6.0)))
                orow[ib * NV_SIZE + NV_D + s] = ue
                _quant_pairs(xr, xo, orow, ib * NV_SIZE + NV_QS + 8 * s, h, UE4M3_TABLE[ue], cand)


def quantize_nvfp4(x, imatrix=None):
    return quantize_rows(_nvfp4, x, "NVFP4", 8)


@njit(cache=True, nogil=True)
def _dnvfp4(q, y, h, r0, r1):
    nb = y.shape[1] // 64
    for r in range(r0, r1):
        qr = q[r]
        yr = y[r]
        for ib in range(nb):
            o = ib * NV_SIZE
            for s in range(4):
                _dequant_pairs(qr, o + NV_QS + 8 * s, yr, ib * 64 + 16 * s, h, 8, UE4M3_TABLE[qr[o + NV_D + s]])


def dequantize_nvfp4(q, n_per_row):
    return dequantize_rows(_dnvfp4, q, n_per_row, 8)


# The implementations this module defines (quantlab.formats.registry.register; a format missing here
# fails tests/test_registry.py).
register("fast", "MXFP4", quantize=quantize_mxfp4, dequantize=dequantize_mxfp4)
register("fast", "NVFP4", quantize=quantize_nvfp4, dequantize=dequantize_nvfp4)
