"""numba kernels for IQ4_NL and IQ4_XS (same names and bytes as quantlab.formats.iq4).

One row per prange iteration; inside, plain scalar loops in the order of ggml's
``quantize_row_iq4_nl_impl`` (float32, sequential sums).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..formats._iqgrid import kvalues_iq4nl
from ._fp import f16_to_f32, f32_as_u32, f32_to_f16, rd16, wr16

F32 = np.float32
NTRY = 7


def _kv() -> np.ndarray:
    return kvalues_iq4nl().astype(np.float32)


@njit(cache=True, inline="always")
def _nearest_int(f):
    """ggml nearest_int, bit for bit (NaN -> 0, inf -> -2**22)."""
    t = np.float32(f) + np.float32(12582912.0)
    return np.int32(f32_as_u32(t) & np.uint32(0x007FFFFF)) - np.int32(0x00400000)


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
    inv = np.float32(1) / d
    sumqx = np.float32(0)
    sumq2 = np.float32(0)
    for j in range(32):
        xj = x[off + j]
        q = vals[best_index(vals, inv * xj, cnt)]
        wq = w[j] * q
        sumqx += wq * xj
        sumq2 += wq * q
    if sumq2 > 0:
        d = sumqx / sumq2
    else:
        d = np.float32(0)
    best = d * sumqx
    for itry in range(-ntry, ntry + 1):
        inv = np.float32(itry - 127) / mx
        sumqx = np.float32(0)
        sumq2 = np.float32(0)
        for j in range(32):
            xj = x[off + j]
            q = vals[best_index(vals, inv * xj, cnt)]
            wq = w[j] * q
            sumqx += wq * xj
            sumq2 += wq * q
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


@njit(cache=True, parallel=True)
def _quant_nl(x, qw, has_qw, vals, cnt, out):
    nrows, n = x.shape
    nb = n // 32
    for r in prange(nrows):
        w = np.empty(32, dtype=np.float32)
        xr = x[r]
        o = out[r]
        for ib in range(nb):
            off = ib * 32
            sigma2 = np.float32(0)
            for j in range(32):
                sigma2 += xr[off + j] * xr[off + j]
            sigma2 *= np.float32(2.0 / 32)
            _weights(xr, off, qw, off, has_qw, sigma2, w)
            d = _fit_block(xr, off, w, vals, cnt, NTRY)
            ob = ib * 18
            wr16(o, ob, f32_to_f16(d))
            inv = np.float32(1) / d if d != 0 else np.float32(0)
            for j in range(16):
                lo = best_index(vals, inv * xr[off + j], cnt)
                hi = best_index(vals, inv * xr[off + 16 + j], cnt)
                o[ob + 2 + j] = np.uint8(lo | (hi << 4))


@njit(cache=True, parallel=True)
def _quant_xs(x, qw, has_qw, vals, cnt, out):
    nrows, n = x.shape
    nsb = n // 256
    for r in prange(nrows):
        w = np.empty(32, dtype=np.float32)
        scales = np.empty(8, dtype=np.float32)
        xr = x[r]
        o = out[r]
        for ibl in range(nsb):
            base = ibl * 256
            sigma2 = np.float32(0)
            for j in range(256):
                sigma2 += xr[base + j] * xr[base + j]
            sigma2 *= np.float32(2.0 / 256)
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
            ob = ibl * 136
            wr16(o, ob, f32_to_f16(d))
            idd = np.float32(1) / d if d != 0 else np.float32(0)
            sh = np.uint16(0)
            for ib in range(8):
                l = _nearest_int(idd * scales[ib])
                l = max(-32, min(31, l))
                dl = d * np.float32(l)
                idl = np.float32(1) / dl if dl != 0 else np.float32(0)
                off = base + ib * 32
                q = ob + 8 + ib * 16
                for j in range(16):
                    lo = best_index(vals, idl * xr[off + j], cnt)
                    hi = best_index(vals, idl * xr[off + 16 + j], cnt)
                    o[q + j] = np.uint8(lo | (hi << 4))
                ls = l + 32
                if ib % 2 == 0:
                    o[ob + 4 + ib // 2] = np.uint8(ls & 0xF)
                else:
                    o[ob + 4 + ib // 2] |= np.uint8((ls & 0xF) << 4)
                sh |= np.uint16((ls >> 4) << (2 * ib))
            wr16(o, ob + 2, sh)


@njit(cache=True, parallel=True)
def _deq_nl(q, vals, out):
    nrows = q.shape[0]
    nb = out.shape[1] // 32
    for r in prange(nrows):
        qr = q[r]
        y = out[r]
        for ib in range(nb):
            ob = ib * 18
            d = f16_to_f32(rd16(qr, ob))
            for j in range(16):
                b = qr[ob + 2 + j]
                y[ib * 32 + j] = d * vals[b & np.uint8(0xF)]
                y[ib * 32 + 16 + j] = d * vals[b >> np.uint8(4)]


@njit(cache=True, parallel=True)
def _deq_xs(q, vals, out):
    nrows = q.shape[0]
    nsb = out.shape[1] // 256
    for r in prange(nrows):
        qr = q[r]
        y = out[r]
        for ibl in range(nsb):
            ob = ibl * 136
            d = f16_to_f32(rd16(qr, ob))
            sh = np.int32(rd16(qr, ob + 2))
            for ib in range(8):
                ls = ((np.int32(qr[ob + 4 + ib // 2]) >> (4 * (ib % 2))) & 0xF) | (((sh >> (2 * ib)) & 3) << 4)
                dl = d * np.float32(ls - 32)
                base = ibl * 256 + ib * 32
                qo = ob + 8 + ib * 16
                for j in range(16):
                    b = qr[qo + j]
                    y[base + j] = dl * vals[b & np.uint8(0xF)]
                    y[base + 16 + j] = dl * vals[b >> np.uint8(4)]


def _qw(imatrix, n):
    if imatrix is None:
        return np.zeros(n, dtype=np.float32), False
    return np.ascontiguousarray(imatrix, dtype=np.float32), True


def quantize_iq4_nl(x, imatrix=None):
    nrows, n = x.shape
    out = np.zeros((nrows, n // 32 * 18), dtype=np.uint8)
    qw, has = _qw(imatrix, n)
    _quant_nl(x, qw, has, _kv(), _counts(kvalues_iq4nl()), out)
    return out


def quantize_iq4_xs(x, imatrix=None):
    nrows, n = x.shape
    out = np.zeros((nrows, n // 256 * 136), dtype=np.uint8)
    qw, has = _qw(imatrix, n)
    _quant_xs(x, qw, has, _kv(), _counts(kvalues_iq4nl()), out)
    return out


def dequantize_iq4_nl(q, n_per_row):
    out = np.empty((q.shape[0], n_per_row), dtype=np.float32)
    _deq_nl(np.ascontiguousarray(q), _kv(), out)
    return out


def dequantize_iq4_xs(q, n_per_row):
    out = np.empty((q.shape[0], n_per_row), dtype=np.float32)
    _deq_xs(np.ascontiguousarray(q), _kv(), out)
    return out
