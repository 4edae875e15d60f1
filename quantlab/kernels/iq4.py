"""numba kernels for IQ4_NL and IQ4_XS (same names and bytes as quantlab.formats.iq4).

A range of rows per kernel call (spread over threads by :func:`quantlab.kernels._rows.run_rows`);
inside, plain scalar loops in the order of ggml's ``quantize_row_iq4_nl_impl`` (float32, sequential
sums).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..formats._iqgrid import kvalues_iq4nl
from ..formats.layout import offsets, size
from ..formats.registry import register
from ._c import inv, nearest_int
from ._fp import f16_to_f32, f32_to_f16, rd16, wr16
from ._rows import dequantize_rows, quantize_rows

F32 = np.float32
NTRY = 7

# Byte offsets inside one block (quantlab.formats.layout; ints, so numba compiles them as constants).
NL_D, NL_QS = offsets("IQ4_NL", "d", "qs")
NL_SIZE = size("IQ4_NL")
XS_D, XS_SCALES_H, XS_SCALES_L, XS_QS = offsets("IQ4_XS", "d", "scales_h", "scales_l", "qs")
XS_SIZE = size("IQ4_XS")


def _kv() -> np.ndarray:
    return kvalues_iq4nl().astype(np.float32)


@njit(cache=True, inline="always")
def best_index(vals, x, cnt):
    """ggml best_index_int8 over the 16 float32 table values, without the binary search.

    The table entries are integers, so the number c of entries <= x only depends on floor(x):
    ``cnt[floor(x) + 128]`` (precomputed). Between the two bracketing entries vals[c-1] <= x < vals[c]
    the same float32 comparison as ggml decides (ties go up). Same result as the binary search for
    every float32, NaN included (ggml's search ends at the last entry)."""
    if x <= vals[0]:
        return 0
    if x >= vals[15]:
        return 15
    if x != x:
        return 15
    c = cnt[np.int32(np.floor(x)) + 128]
    if x - vals[c - 1] < vals[c] - x:
        return c - 1
    return c


def _counts(values) -> np.ndarray:
    """cnt[k + 128] = number of table entries <= k, for integers k in -128..127."""
    k = np.arange(-128, 128)
    return (values.astype(np.int32)[None, :] <= k[:, None]).sum(axis=1).astype(np.int32)


@njit(cache=True, inline="always")
def _wsums(x, off, w, vals, cnt, inv):
    """sum w*q*x and sum w*q*q over x[off:off+32], q = the table value nearest to inv*x (in order)."""
    sumqx = np.float32(0)
    sumq2 = np.float32(0)
    for j in range(32):
        xj = x[off + j]
        q = vals[best_index(vals, inv * xj, cnt)]
        wq = w[j] * q
        sumqx += wq * xj
        sumq2 += wq * q
    return sumqx, sumq2


@njit(cache=True, inline="always")
def _fit_block(x, off, w, vals, cnt, ntry):
    """Scale search of quantize_row_iq4_nl_impl on x[off:off+32] with weights w[0:32]."""
    amax = np.float32(0)
    mx = np.float32(0)
    for j in range(32):
        ax = abs(x[off + j])
        if ax > amax:
            amax = ax
            mx = x[off + j]
    if amax < np.float32(1e-15):
        return np.float32(0)
    if ntry > 0:
        d = -mx / vals[0]
    else:
        d = mx / vals[0]
    sumqx, sumq2 = _wsums(x, off, w, vals, cnt, np.float32(1) / d)
    if sumq2 > 0:
        d = sumqx / sumq2
    else:
        d = np.float32(0)
    best = d * sumqx
    for itry in range(-ntry, ntry + 1):
        sumqx, sumq2 = _wsums(x, off, w, vals, cnt, np.float32(itry - 127) / mx)
        if sumq2 > 0 and sumqx * sumqx > best * sumq2:
            d = sumqx / sumq2
            best = d * sumqx
    return d


@njit(cache=True, inline="always")
def _weights(x, off, qw, qoff, has_qw, sigma2, w):
    if has_qw:
        for j in range(32):
            xj = x[off + j]
            w[j] = qw[qoff + j] * np.sqrt(sigma2 + xj * xj)
    else:
        for j in range(32):
            xj = x[off + j]
            w[j] = xj * xj


@njit(cache=True, inline="always")
def _sigma2(xr, off, n):
    """2 * sum(x**2) / n over xr[off:off+n], summed in order."""
    s = np.float32(0)
    for j in range(n):
        s += xr[off + j] * xr[off + j]
    return s * np.float32(2.0 / n)


@njit(cache=True, inline="always")
def _pack_codes(xr, off, inv, vals, cnt, o, qo):
    """32 values at xr[off], times inv -> nearest table indices, 16 bytes at o[qo]: value j in the low
    nibble of byte j, value j + 16 in the high one."""
    for j in range(16):
        lo = best_index(vals, inv * xr[off + j], cnt)
        hi = best_index(vals, inv * xr[off + 16 + j], cnt)
        o[qo + j] = np.uint8(lo | (hi << 4))


@njit(cache=True, inline="always")
def _unpack_codes(qr, qo, d, vals, y, yo):
    """The inverse of _pack_codes: 16 bytes at qr[qo] -> 32 values d * vals[code] at y[yo]."""
    for j in range(16):
        b = qr[qo + j]
        y[yo + j] = d * vals[b & np.uint8(0xF)]
        y[yo + 16 + j] = d * vals[b >> np.uint8(4)]


@njit(cache=True, nogil=True)
def _quant_nl(x, out, qw, has_qw, vals, cnt, r0, r1):
    nb = x.shape[1] // 32
    for r in range(r0, r1):
        w = np.empty(32, dtype=np.float32)
        xr = x[r]
        o = out[r]
        for ib in range(nb):
            off = ib * 32
            _weights(xr, off, qw, off, has_qw, _sigma2(xr, off, 32), w)
            d = _fit_block(xr, off, w, vals, cnt, NTRY)
            wr16(o, ib * NL_SIZE + NL_D, f32_to_f16(d))
            _pack_codes(xr, off, inv(d), vals, cnt, o, ib * NL_SIZE + NL_QS)


@njit(cache=True, nogil=True)
def _quant_xs(x, out, qw, has_qw, vals, cnt, r0, r1):
    nsb = x.shape[1] // 256
    for r in range(r0, r1):
        w = np.empty(32, dtype=np.float32)
        scales = np.empty(8, dtype=np.float32)
        xr = x[r]
        o = out[r]
        for ibl in range(nsb):
            base = ibl * 256
            sigma2 = _sigma2(xr, base, 256)
            max_scale = np.float32(0)
            amax_scale = np.float32(0)
            for ib in range(8):
                off = base + ib * 32
                _weights(xr, off, qw, off, has_qw, sigma2, w)
                s = _fit_block(xr, off, w, vals, cnt, NTRY)
                scales[ib] = s
                a = abs(s)
                if a > amax_scale:
                    amax_scale = a
                    max_scale = s
            d = -max_scale / np.float32(32)
            ob = ibl * XS_SIZE
            wr16(o, ob + XS_D, f32_to_f16(d))
            idd = inv(d)
            sh = np.uint16(0)
            for ib in range(8):
                l = nearest_int(idd * scales[ib])
                l = max(-32, min(31, l))
                _pack_codes(xr, base + ib * 32, inv(d * np.float32(l)), vals, cnt, o, ob + XS_QS + ib * 16)
                ls = l + 32
                if ib % 2 == 0:
                    o[ob + XS_SCALES_L + ib // 2] = np.uint8(ls & 0xF)
                else:
                    o[ob + XS_SCALES_L + ib // 2] |= np.uint8((ls & 0xF) << 4)
                sh |= np.uint16((ls >> 4) << (2 * ib))
            wr16(o, ob + XS_SCALES_H, sh)


@njit(cache=True, nogil=True)
def _deq_nl(q, out, vals, r0, r1):
    nb = out.shape[1] // 32
    for r in range(r0, r1):
        qr = q[r]
        for ib in range(nb):
            o = ib * NL_SIZE
            _unpack_codes(qr, o + NL_QS, f16_to_f32(rd16(qr, o + NL_D)), vals, out[r], ib * 32)


@njit(cache=True, nogil=True)
def _deq_xs(q, out, vals, r0, r1):
    nsb = out.shape[1] // 256
    for r in range(r0, r1):
        qr = q[r]
        for ibl in range(nsb):
            ob = ibl * XS_SIZE
            d = f16_to_f32(rd16(qr, ob + XS_D))
            sh = np.int32(rd16(qr, ob + XS_SCALES_H))
            for ib in range(8):
                ls = ((np.int32(qr[ob + XS_SCALES_L + ib // 2]) >> (4 * (ib % 2))) & 0xF) | (
                    ((sh >> (2 * ib)) & 3) << 4
                )
                _unpack_codes(qr, ob + XS_QS + ib * 16, d * np.float32(ls - 32), vals, out[r], ibl * 256 + ib * 32)


def _qw(imatrix, n):
    if imatrix is None:
        return np.zeros(n, dtype=np.float32), False
    return np.ascontiguousarray(imatrix, dtype=np.float32), True


def quantize_iq4_nl(x, imatrix=None):
    return quantize_rows(_quant_nl, x, "IQ4_NL", *_qw(imatrix, x.shape[1]), _kv(), _counts(kvalues_iq4nl()))


def quantize_iq4_xs(x, imatrix=None):
    return quantize_rows(_quant_xs, x, "IQ4_XS", *_qw(imatrix, x.shape[1]), _kv(), _counts(kvalues_iq4nl()))


def dequantize_iq4_nl(q, n_per_row):
    return dequantize_rows(_deq_nl, q, n_per_row, _kv())


def dequantize_iq4_xs(q, n_per_row):
    return dequantize_rows(_deq_xs, q, n_per_row, _kv())


# The implementations this module defines (quantlab.formats.registry.register; a format missing here
# fails tests/test_registry.py).
register("fast", "IQ4_NL", quantize=quantize_iq4_nl, dequantize=dequantize_iq4_nl)
register("fast", "IQ4_XS", quantize=quantize_iq4_xs, dequantize=dequantize_iq4_xs)
