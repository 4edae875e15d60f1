"""numba kernels for TQ1_0 and TQ2_0, bit-identical to quantlab.formats.ternary.

Rows are distributed over threads; inner loops take their trip count as a run-time argument so LLVM
vectorizes them (see :mod:`quantlab.kernels.legacy`).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._fp import f32_to_f16, roundf, wr16
from .legacy import h2f



@njit(cache=True, inline="always")
def _trit(v):
    """lroundf(v) + 1 for the ternary quantizers; a non-finite v (only when 1/d overflowed) gives 1,
    which is what C's lroundf(NaN/inf) = LONG_MIN, + 1, truncated to int, leaves."""
    if v - v != 0:  # NaN or infinity
        return np.int32(1)
    return np.int32(roundf(v)) + np.int32(1)


@njit(cache=True, inline="always")
def _absmax_block(xr, xo):
    amax = np.float32(0.0)
    for j in range(256):
        a = abs(xr[xo + j])
        amax = amax if amax > a else a
    return amax


@njit(cache=True, inline="always")
def _inv(d):
    if d != 0:
        return np.float32(np.float32(1.0) / d)
    return np.float32(0.0)


@njit(cache=True, inline="always")
def _ceil243(q):
    return np.uint8((q * 256 + 242) // 243)


# ----------------------------------------------------------------------------------------------------
# TQ1_0
# ----------------------------------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def _tq1_0(x, out):
    nb = x.shape[1] // 256
    for r in prange(x.shape[0]):
        xr = x[r]
        orow = out[r]
        for ib in range(nb):
            xo = ib * 256
            o = ib * 54
            d = _absmax_block(xr, xo)
            idv = _inv(d)
            for m in range(32):                       # elements m + 32n, n = 0..4
                q = np.int32(0)
                for n in range(5):
                    q = q * 3 + _trit(xr[xo + m + 32 * n] * idv)
                orow[o + m] = _ceil243(q & 0xFF)
            for m in range(16):                       # elements 160 + m + 16n
                q = np.int32(0)
                for n in range(5):
                    q = q * 3 + _trit(xr[xo + 160 + m + 16 * n] * idv)
                orow[o + 32 + m] = _ceil243(q & 0xFF)
            for j in range(4):                        # elements 240 + j + 4n, n = 0..3, then * 3
                q = np.int32(0)
                for n in range(4):
                    q = q * 3 + _trit(xr[xo + 240 + j + 4 * n] * idv)
                orow[o + 48 + j] = _ceil243((q * 3) & 0xFF)
            wr16(orow, o + 52, f32_to_f16(d))


def quantize_tq1_0(x, imatrix=None):
    out = np.empty((x.shape[0], x.shape[1] // 256 * 54), dtype=np.uint8)
    _tq1_0(x, out)
    return out


@njit(cache=True, inline="always")
def _tv(b, p, d):
    """Trit of byte b selected by p = 3**n: v = (b * p) mod 256, t = (v * 3) >> 8; returns (t - 1) * d."""
    return np.float32(((((b * p) & 0xFF) * 3) >> 8) - 1) * d


@njit(cache=True, inline="always")
def _unpack5(qr, qo, yr, yo, stride, count, d):
    """Bytes qr[qo:qo+count] carry trit n of element yo + stride*n + m (n = 0..4). ``stride`` is a
    literal (16 or 32) and ``count`` the same number passed at run time (see kernels.legacy)."""
    for m in range(count):
        b = np.int32(qr[qo + m])
        yr[yo + m] = _tv(b, 1, d)
        yr[yo + stride + m] = _tv(b, 3, d)
        yr[yo + 2 * stride + m] = _tv(b, 9, d)
        yr[yo + 3 * stride + m] = _tv(b, 27, d)
        yr[yo + 4 * stride + m] = _tv(b, 81, d)


@njit(cache=True, parallel=True)
def _dtq1_0(q, y, k32, k16):
    nb = y.shape[1] // 256
    for r in prange(q.shape[0]):
        qr = q[r]
        yr = y[r]
        for ib in range(nb):
            o = ib * 54
            yo = ib * 256
            d = h2f(qr, o + 52)
            _unpack5(qr, o, yr, yo, 32, k32, d)
            _unpack5(qr, o + 32, yr, yo + 160, 16, k16, d)
            for m in range(4):                        # qh: 4 trits each, elements 240 + m + 4n
                b = np.int32(qr[o + 48 + m])
                yr[yo + 240 + m] = _tv(b, 1, d)
                yr[yo + 244 + m] = _tv(b, 3, d)
                yr[yo + 248 + m] = _tv(b, 9, d)
                yr[yo + 252 + m] = _tv(b, 27, d)


def dequantize_tq1_0(q, n_per_row):
    y = np.empty((q.shape[0], n_per_row), dtype=np.float32)
    _dtq1_0(q, y, 32, 16)
    return y


# ----------------------------------------------------------------------------------------------------
# TQ2_0
# ----------------------------------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def _tq2_0(x, out):
    nb = x.shape[1] // 256
    for r in prange(x.shape[0]):
        xr = x[r]
        orow = out[r]
        for ib in range(nb):
            xo = ib * 256
            o = ib * 66
            d = _absmax_block(xr, xo)
            idv = _inv(d)
            for c in range(2):
                for m in range(32):
                    q = np.int32(0)
                    for n in range(4):
                        q |= (_trit(xr[xo + 128 * c + 32 * n + m] * idv) & 3) << (2 * n)
                    orow[o + 32 * c + m] = np.uint8(q & 0xFF)
            wr16(orow, o + 64, f32_to_f16(d))


def quantize_tq2_0(x, imatrix=None):
    out = np.empty((x.shape[0], x.shape[1] // 256 * 66), dtype=np.uint8)
    _tq2_0(x, out)
    return out


@njit(cache=True, parallel=True)
def _dtq2_0(q, y, k32):
    nb = y.shape[1] // 256
    for r in prange(q.shape[0]):
        qr = q[r]
        yr = y[r]
        for ib in range(nb):
            o = ib * 66
            yo = ib * 256
            d = h2f(qr, o + 64)
            for c in range(2):
                for n in range(4):
                    sh = 2 * n
                    base = yo + 128 * c + 32 * n
                    for m in range(k32):
                        yr[base + m] = np.float32(((np.int32(qr[o + 32 * c + m]) >> sh) & 3) - 1) * d


def dequantize_tq2_0(q, n_per_row):
    y = np.empty((q.shape[0], n_per_row), dtype=np.float32)
    _dtq2_0(q, y, 32)
    return y
