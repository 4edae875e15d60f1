"""numba kernels for IQ1_S and IQ1_M (same bytes as quantlab.formats.iq1, which explains them).

Scalar code in ggml's order (quantize_row_iq1_s_impl / quantize_row_iq1_m_impl of llama.cpp 0c1e57098),
a range of rows per kernel call (spread over threads by :func:`quantlab.kernels._rows.run_rows`).
Where ggml asserts (or would read past its input), the row's error slot is set and the
wrapper raises QuantizationError with the reference's message.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..errors import ImatrixRequired
from ..formats import iq1 as ref
from ..formats._iqgrid import lattice
from ..formats.layout import offsets, size
from ..formats.registry import register
from ._c import nearest_int
from ._fp import f16_to_f32, f32_to_f16, rd16
from ._rows import dequantize_rows
from .iq2 import _code, _scan, run_grid_rows

_FLT_MAX = np.float32(np.finfo(np.float32).max)
_NEG_FLT_MAX = np.float32(-np.finfo(np.float32).max)
_XP = np.array([-1 + 0.125, 0.125, 1 + 0.125], dtype=np.float32)
_XM = np.array([-1 - 0.125, -0.125, 1 - 0.125], dtype=np.float32)


# Byte offsets inside one super-block (quantlab.formats.layout; ints, so numba compiles them as constants)
IQ1S_D, IQ1S_QS, IQ1S_QH = offsets("IQ1_S", "d", "qs", "qh")
IQ1M_QS, IQ1M_QH, IQ1M_SCALES = offsets("IQ1_M", "qs", "qh", "scales")
IQ1S_SIZE, IQ1M_SIZE = size("IQ1_S"), size("IQ1_M")


@njit(cache=True, inline="always")
def _sort_idx(x, r, b0, n, idx):
    """Stable ascending order of x[r, b0:b0+n] (insertion sort = glibc's stable merge sort order)."""
    for j in range(n):
        idx[j] = j
    for j in range(1, n):
        key = idx[j]
        v = x[r, b0 + key]
        i = j - 1
        while i >= 0 and x[r, b0 + idx[i]] > v:
            idx[i + 1] = idx[i]
            i -= 1
        idx[i + 1] = key


@njit(cache=True, inline="always")
def _neighbour2(neigh, off, codes, levels, x, r, g0, w, wbase, scale, xx, ngrid, e):
    """iq1_find_best_neighbour2: minimise sum w*(scale*xx[level] - x)**2 over the listed points; if
    none has an error below FLT_MAX, ggml scans the whole grid comparing every coordinate with x[i]
    (sic: the i-th value from the group's start in the input buffer). Returns the index, -1 when nothing
    qualifies (ggml asserts), -2 when the scan would read past the input."""
    n = x.shape[1]
    # e (caller's scratch of 32, zeros at 4i + 3): e[4i + l] = the term of coordinate i at level l,
    # as ggml computes it
    for i in range(8):
        for l in range(3):
            diff = scale * xx[l] - x[r, g0 + i]
            e[4 * i + l] = (w[wbase + i] * diff) * diff
    gi = _scan(neigh, off, codes, e)
    best = _FLT_MAX
    if gi < 0:
        flat0 = r * n + g0
        if flat0 + ngrid > x.shape[0] * n:
            return np.int32(-2)
        for i in range(ngrid):
            f = flat0 + i
            xi = x[f // n, f % n]
            d2 = np.float32(0.0)
            for j in range(8):
                diff = scale * xx[levels[i, j]] - xi
                d2 += (w[wbase + j] * diff) * diff
            if d2 < best:
                best = d2
                gi = i
    return gi


@njit(cache=True, inline="always")
def _weights(x, r, b0, bs, qw, has_qw, sigma2, weight):
    for i in range(bs):
        xi = x[r, b0 + i]
        if has_qw:
            weight[i] = qw[b0 + i] * np.float32(np.sqrt(sigma2 + xi * xi))
        else:
            weight[i] = xi * xi


@njit(cache=True, inline="always")
def _block_max(x, r, b0, bs):
    mx = abs(x[r, b0])
    for i in range(1, bs):
        a = abs(x[r, b0 + i])
        if not (mx > a):
            mx = a
    return mx


@njit(cache=True)
def _fail(err, r, code, blk):
    err[r, 0] = code
    err[r, 1] = blk


# ----------------------------------------------------------------------------------------------------
# IQ1_S
# ----------------------------------------------------------------------------------------------------


@njit(cache=True)
def _iq1s_row(x, r, qw, has_qw, kmap, neigh, codes, levels, out, err):
    n = x.shape[1]
    bs = 32
    weight = np.empty(bs, np.float32)
    idx = np.empty(bs, np.int64)
    e = np.zeros(32, np.float32)  # scratch of _neighbour2, allocated once per row
    sumx = np.empty(bs + 1, np.float32)
    sumw = np.empty(bs + 1, np.float32)
    ax = np.empty((2, bs + 1), np.float32)
    aw = np.empty((2, bs + 1), np.float32)
    cx = np.empty((2, bs + 1), np.float32)
    cw = np.empty((2, bs + 1), np.float32)
    L = np.empty(bs, np.int8)
    index = np.empty(4, np.int32)
    scales = np.empty(8, np.float32)
    shifts = np.empty(8, np.int32)
    ngrid = levels.shape[0]
    for ibl in range(n // 256):
        x0 = ibl * 256
        o = ibl * IQ1S_SIZE
        for j in range(IQ1S_SIZE):
            out[r, o + j] = 0
        sumx2 = np.float32(0.0)
        for i in range(256):
            sumx2 += x[r, x0 + i] * x[r, x0 + i]
        sigma2 = (np.float32(2.0) * sumx2) / np.float32(256.0)
        max_scale = np.float32(0.0)
        for ib in range(8):
            b0 = x0 + ib * bs
            _weights(x, r, b0, bs, qw, has_qw, sigma2, weight)
            scales[ib] = np.float32(0.0)
            shifts[ib] = 1
            mx = _block_max(x, r, b0, bs)
            if mx < np.float32(1e-12):
                continue
            _sort_idx(x, r, b0, bs, idx)
            sumx[0] = np.float32(0.0)
            sumw[0] = np.float32(0.0)
            for j in range(bs):
                i = idx[j]
                sumx[j + 1] = sumx[j] + weight[i] * x[r, b0 + i]
                sumw[j + 1] = sumw[j] + weight[i]
            best = _NEG_FLT_MAX
            scale = mx
            bi1 = -1
            bi2 = -1
            bsh = 0
            # the products that depend on one split point only are computed once per point (each
            # exactly as ggml computes it); the loop then does ggml's additions in ggml's order
            for j in range(bs + 1):
                a = sumx[j] - sumx[0]
                wa = sumw[j] - sumw[0]
                c = sumx[bs] - sumx[j]
                wc = sumw[bs] - sumw[j]
                for t in range(2):
                    xs = _XP if t == 0 else _XM
                    ax[t, j] = a * xs[0]
                    aw[t, j] = (wa * xs[0]) * xs[0]
                    cx[t, j] = c * xs[2]
                    cw[t, j] = (wc * xs[2]) * xs[2]
            for i1 in range(bs + 1):
                for i2 in range(i1, bs + 1):
                    b = sumx[i2] - sumx[i1]
                    wb = sumw[i2] - sumw[i1]
                    for t in range(2):
                        v1 = _XP[1] if t == 0 else _XM[1]
                        sumqx = (ax[t, i1] + b * v1) + cx[t, i2]
                        sumq2 = (aw[t, i1] + (wb * v1) * v1) + cw[t, i2]
                        if sumq2 > 0 and sumqx * sumqx > best * sumq2:
                            scale = sumqx / sumq2
                            best = scale * sumqx
                            bi1 = i1
                            bi2 = i2
                            bsh = 1 if t == 0 else -1
            if bi1 < 0 or bi2 < 0 or bsh == 0:
                continue
            for j in range(bs):
                L[idx[j]] = 0 if j < bi1 else (1 if j < bi2 else 2)
            if scale < 0:
                for j in range(bs):
                    L[j] = 2 - L[j]
                scale = -scale
                bsh = -bsh
            xx = _XP if bsh == 1 else _XM
            all_on = True
            for k in range(4):
                u = _code(L, 8 * k)
                gi = kmap[u]
                if gi < 0:
                    all_on = False
                    gi = _neighbour2(
                        neigh, -gi - 1, codes, levels, x, r, b0 + 8 * k, weight, 8 * k, scale, xx, ngrid, e
                    )
                    if gi < 0:
                        _fail(err, r, 1 if gi == -1 else 4, b0 // bs)
                        return
                index[k] = gi
            if not all_on:
                sqx = np.float32(0.0)
                sq2 = np.float32(0.0)
                for k in range(4):
                    for j in range(8):
                        w = weight[8 * k + j]
                        q = xx[levels[index[k], j]]
                        sqx += (w * q) * x[r, b0 + 8 * k + j]
                        sq2 += (w * q) * q
                if sqx > 0 and sq2 > 0:
                    scale = sqx / sq2
            h = np.uint16(0)
            for k in range(4):
                out[r, o + IQ1S_QS + 4 * ib + k] = np.uint8(index[k] & 255)
                h |= np.uint16((index[k] >> 8) << (3 * k))
            out[r, o + IQ1S_QH + 2 * ib] = np.uint8(h & np.uint16(255))
            out[r, o + IQ1S_QH + 1 + 2 * ib] = np.uint8(h >> np.uint16(8))
            if not (scale >= 0):
                _fail(err, r, 2, b0 // bs)
                return
            scales[ib] = scale
            shifts[ib] = bsh
            if not (max_scale > scale):
                max_scale = scale
        if max_scale == 0:
            continue
        d = max_scale / np.float32(15.0)
        dh = f32_to_f16(d * np.float32(1.125))
        out[r, o + IQ1S_D] = np.uint8(dh & np.uint16(255))
        out[r, o + IQ1S_D + 1] = np.uint8(dh >> np.uint16(8))
        idd = np.float32(1.0) / d
        for ib in range(8):
            l = nearest_int(np.float32(0.5) * (idd * scales[ib] - np.float32(1.0)))
            l = 0 if l < 0 else (7 if l > 7 else l)
            if shifts[ib] == -1:
                l |= 8
            out[r, o + IQ1S_QH + 1 + 2 * ib] |= np.uint8(l << 4)


@njit(cache=True, nogil=True)
def _iq1s(x, qw, has_qw, kmap, neigh, codes, levels, out, err, r0, r1):
    for r in range(r0, r1):
        _iq1s_row(x, r, qw, has_qw, kmap, neigh, codes, levels, out, err)


# ----------------------------------------------------------------------------------------------------
# IQ1_M
# ----------------------------------------------------------------------------------------------------


# IQ1_M's search is IQ1_S's with two half-block shifts instead of one (ggml: quantize_row_iq1_m_impl next to
# iq1_s_impl); the shared steps are helpers (_weights, _block_max, _sort_idx, _neighbour2), the search stays
# written out in each, as in ggml.
@njit(cache=True)
def _iq1m_row(x, r, qw, has_qw, kmap, neigh, codes, levels, out, err):
    n = x.shape[1]
    bs = 16
    weight = np.empty(bs, np.float32)
    idx = np.empty(bs, np.int64)
    e = np.zeros(32, np.float32)  # scratch of _neighbour2, allocated once per row
    px = np.empty((2, bs + 1), np.float32)
    pw = np.empty((2, bs + 1), np.float32)
    L = np.empty(bs, np.int8)
    index = np.empty(2, np.int32)
    scales = np.empty(16, np.float32)
    shifts = np.empty(16, np.int32)
    ap = np.empty((2, bs + 1), np.float32)
    am = np.empty((2, bs + 1), np.float32)
    bp = np.empty((2, bs + 1), np.float32)
    bm = np.empty((2, bs + 1), np.float32)
    sc = np.zeros(4, np.uint16)
    ngrid = levels.shape[0]
    p2 = _XP[2]
    m2 = _XM[2]
    cp1 = _XP[0] * _XP[0] - _XP[1] * _XP[1]
    cp2 = _XP[1] * _XP[1] - _XP[2] * _XP[2]
    cm1 = _XM[0] * _XM[0] - _XM[1] * _XM[1]
    cm2 = _XM[1] * _XM[1] - _XM[2] * _XM[2]
    for ibl in range(n // 256):
        x0 = ibl * 256
        o = ibl * IQ1M_SIZE
        for j in range(IQ1M_SIZE):
            out[r, o + j] = 0
        sumx2 = np.float32(0.0)
        for i in range(256):
            sumx2 += x[r, x0 + i] * x[r, x0 + i]
        sigma2 = (np.float32(2.0) * sumx2) / np.float32(256.0)
        max_scale = np.float32(0.0)
        for ib in range(16):
            b0 = x0 + ib * bs
            _weights(x, r, b0, bs, qw, has_qw, sigma2, weight)
            scales[ib] = np.float32(0.0)
            shifts[ib] = 0
            mx = _block_max(x, r, b0, bs)
            if mx < np.float32(1e-7):
                continue
            _sort_idx(x, r, b0, bs, idx)
            px[0, 0] = np.float32(0.0)
            px[1, 0] = np.float32(0.0)
            pw[0, 0] = np.float32(0.0)
            pw[1, 0] = np.float32(0.0)
            for j in range(bs):
                i = idx[j]
                h = 0 if i < bs // 2 else 1
                px[h, j + 1] = px[h, j] + weight[i] * x[r, b0 + i]
                px[1 - h, j + 1] = px[1 - h, j]
                pw[h, j + 1] = pw[h, j] + weight[i]
                pw[1 - h, j + 1] = pw[1 - h, j]
            t0 = px[0, bs]
            t1 = px[1, bs]
            u0 = pw[0, bs]
            u1 = pw[1, bs]
            best = _NEG_FLT_MAX
            scale = mx
            bi1 = -1
            bi2 = -1
            bk = -1
            # per split point: q2 terms ((U*v2)*v2 + pw[i1]*c1) and pw[i2]*c2 (as ggml computes them)
            for j in range(bs + 1):
                for h in range(2):
                    uh = u0 if h == 0 else u1
                    ap[h, j] = (uh * p2) * p2 + pw[h, j] * cp1
                    am[h, j] = (uh * m2) * m2 + pw[h, j] * cm1
                    bp[h, j] = pw[h, j] * cp2
                    bm[h, j] = pw[h, j] * cm2
            tp0 = t0 * p2
            tm0 = t0 * m2
            tp1 = t1 * p2
            tm1 = t1 * m2
            for i1 in range(bs + 1):
                for i2 in range(i1, bs + 1):
                    sx0 = px[0, i1] + px[0, i2]
                    sx1 = px[1, i1] + px[1, i2]
                    qxp0 = tp0 - sx0
                    qxm0 = tm0 - sx0
                    qxp1 = tp1 - sx1
                    qxm1 = tm1 - sx1
                    q2p0 = ap[0, i1] + bp[0, i2]
                    q2m0 = am[0, i1] + bm[0, i2]
                    q2p1 = ap[1, i1] + bp[1, i2]
                    q2m1 = am[1, i1] + bm[1, i2]
                    for k in range(4):
                        sqx = (qxp0 if k < 2 else qxm0) + (qxp1 if k % 2 == 0 else qxm1)
                        sq2 = (q2p0 if k < 2 else q2m0) + (q2p1 if k % 2 == 0 else q2m1)
                        if sq2 > 0 and sqx * sqx > best * sq2:
                            scale = sqx / sq2
                            best = scale * sqx
                            bi1 = i1
                            bi2 = i2
                            bk = k
            if bi1 < 0 or bi2 < 0 or bk < 0:
                continue
            for j in range(bs):
                L[idx[j]] = 0 if j < bi1 else (1 if j < bi2 else 2)
            if scale < 0:
                for j in range(bs):
                    L[j] = 2 - L[j]
                scale = -scale
                bk = 3 - bk
            all_on = True
            for k in range(2):
                if k == 0:
                    xx = _XP if bk < 2 else _XM
                else:
                    xx = _XP if bk % 2 == 0 else _XM
                u = _code(L, 8 * k)
                gi = kmap[u]
                if gi < 0:
                    all_on = False
                    gi = _neighbour2(
                        neigh, -gi - 1, codes, levels, x, r, b0 + 8 * k, weight, 8 * k, scale, xx, ngrid, e
                    )
                    if gi < 0:
                        _fail(err, r, 1 if gi == -1 else 4, b0 // bs)
                        return
                index[k] = gi
            if not all_on:
                sqx = np.float32(0.0)
                sq2 = np.float32(0.0)
                for k in range(2):
                    if k == 0:
                        xx = _XP if bk < 2 else _XM
                    else:
                        xx = _XP if bk % 2 == 0 else _XM
                    for j in range(8):
                        w = weight[8 * k + j]
                        q = xx[levels[index[k], j]]
                        sqx += (w * q) * x[r, b0 + 8 * k + j]
                        sq2 += (w * q) * q
                if sqx > 0 and sq2 > 0:
                    scale = sqx / sq2
            out[r, o + IQ1M_QS + 2 * ib] = np.uint8(index[0] & 255)
            out[r, o + IQ1M_QS + 2 * ib + 1] = np.uint8(index[1] & 255)
            out[r, o + IQ1M_QH + ib] = np.uint8((index[0] >> 8) | ((index[1] >> 8) << 4))
            if not (scale >= 0):
                _fail(err, r, 2, b0 // bs)
                return
            scales[ib] = scale
            shifts[ib] = bk
            if not (max_scale > scale):
                max_scale = scale
        if max_scale == 0:
            continue
        d = max_scale / np.float32(15.0)
        idd = np.float32(1.0) / d
        sqx = np.float32(0.0)
        sq2 = np.float32(0.0)
        for k in range(4):
            sc[k] = 0
        for ib in range(16):
            b0 = x0 + ib * bs
            l = nearest_int(np.float32(0.5) * (idd * scales[ib] - np.float32(1.0)))
            l = 0 if l < 0 else (7 if l > 7 else l)
            sc[ib // 4] |= np.uint16(l << (3 * (ib % 4)))
            sh = shifts[ib]
            qh = np.int32(out[r, o + IQ1M_QH + ib]) | (
                0x00 if sh == 0 else (0x80 if sh == 1 else (0x08 if sh == 2 else 0x88))
            )
            out[r, o + IQ1M_QH + ib] = np.uint8(qh)
            _weights(x, r, b0, bs, qw, has_qw, sigma2, weight)
            fl = np.float32(2 * l + 1)
            for k in range(2):
                if k == 0:
                    xx = _XP if sh < 2 else _XM
                else:
                    xx = _XP if sh % 2 == 0 else _XM
                gi = np.int32(out[r, o + IQ1M_QS + 2 * ib + k]) + ((qh << (8 - 4 * k)) & 0x700)
                for j in range(8):
                    w = weight[8 * k + j]
                    q = xx[levels[gi, j]] * fl
                    sqx += (w * q) * x[r, b0 + 8 * k + j]
                    sq2 += (w * q) * q
        if sq2 > 0:
            d = sqx / sq2
        dbits = f32_to_f16(d * np.float32(1.1125))
        sc[0] |= np.uint16((dbits & np.uint16(0x000F)) << np.uint16(12))
        sc[1] |= np.uint16((dbits & np.uint16(0x00F0)) << np.uint16(8))
        sc[2] |= np.uint16((dbits & np.uint16(0x0F00)) << np.uint16(4))
        sc[3] |= np.uint16(dbits & np.uint16(0xF000))
        for k in range(4):
            out[r, o + IQ1M_SCALES + 2 * k] = np.uint8(sc[k] & np.uint16(255))
            out[r, o + IQ1M_SCALES + 1 + 2 * k] = np.uint8(sc[k] >> np.uint16(8))


@njit(cache=True, nogil=True)
def _iq1m(x, qw, has_qw, kmap, neigh, codes, levels, out, err, r0, r1):
    for r in range(r0, r1):
        _iq1m_row(x, r, qw, has_qw, kmap, neigh, codes, levels, out, err)


_WHAT = {
    1: "no grid point has a finite weighted error",
    2: "the fitted block scale is NaN",
    4: "no listed grid neighbour has a finite weighted error and ggml's full-grid fallback would "
    "read past the end of the input",
}


def _run(fn, name, bs, ts, x, imatrix):
    out, bad = run_grid_rows(fn, x, imatrix, lattice("iq1s"), ts)
    if bad is not None:
        r, code, b = bad
        ref._raise(name, bs, _WHAT[code], r * (x.shape[1] // bs) + b, x.shape[1], x)
    return out


def quantize_iq1_s(x, imatrix=None):
    if imatrix is None:
        raise ImatrixRequired("IQ1_S cannot be quantized without an importance matrix")
    return _run(_iq1s, "IQ1_S", 32, IQ1S_SIZE, x, imatrix)


def quantize_iq1_m(x, imatrix=None):
    return _run(_iq1m, "IQ1_M", 16, IQ1M_SIZE, x, imatrix)


# ----------------------------------------------------------------------------------------------------
# dequantization
# ----------------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _deq_iq1s(q, out, values, r0, r1):
    nsb = q.shape[1] // IQ1S_SIZE
    for r in range(r0, r1):
        for ibl in range(nsb):
            o = ibl * IQ1S_SIZE
            d = f16_to_f32(rd16(q[r], o + IQ1S_D))
            for ib in range(8):
                qh = np.int32(rd16(q[r], o + IQ1S_QH + 2 * ib))
                dl = d * np.float32(2 * ((qh >> 12) & 7) + 1)
                delta = np.float32(-0.125) if qh & 0x8000 else np.float32(0.125)
                for l in range(4):
                    gi = np.int32(q[r, o + IQ1S_QS + 4 * ib + l]) | (((qh >> (3 * l)) & 7) << 8)
                    y0 = ibl * 256 + 32 * ib + 8 * l
                    for j in range(8):
                        out[r, y0 + j] = dl * (values[gi, j] + delta)


@njit(cache=True, nogil=True)
def _deq_iq1m(q, out, values, r0, r1):
    nsb = q.shape[1] // IQ1M_SIZE
    for r in range(r0, r1):
        for ibl in range(nsb):
            o = ibl * IQ1M_SIZE
            w0 = np.int32(rd16(q[r], o + IQ1M_SCALES))
            w1 = np.int32(rd16(q[r], o + IQ1M_SCALES + 2))
            w2 = np.int32(rd16(q[r], o + IQ1M_SCALES + 4))
            w3 = np.int32(rd16(q[r], o + IQ1M_SCALES + 6))
            dbits = (w0 >> 12) | ((w1 >> 8) & 0xF0) | ((w2 >> 4) & 0xF00) | (w3 & 0xF000)
            d = f16_to_f32(np.uint16(dbits))
            for ib in range(16):
                w = np.int32(rd16(q[r], o + IQ1M_SCALES + 2 * (ib // 4)))
                dl = d * np.float32(2 * ((w >> (3 * (ib % 4))) & 7) + 1)
                qh = np.int32(q[r, o + IQ1M_QH + ib])
                for k in range(2):
                    nib = (qh >> (4 * k)) & 15
                    gi = np.int32(q[r, o + IQ1M_QS + 2 * ib + k]) | ((nib & 7) << 8)
                    delta = np.float32(-0.125) if nib & 8 else np.float32(0.125)
                    y0 = ibl * 256 + 16 * ib + 8 * k
                    for j in range(8):
                        out[r, y0 + j] = dl * (values[gi, j] + delta)


def dequantize_iq1_s(q, n_per_row):
    return dequantize_rows(_deq_iq1s, q, n_per_row, lattice("iq1s").values)


def dequantize_iq1_m(q, n_per_row):
    return dequantize_rows(_deq_iq1m, q, n_per_row, lattice("iq1s").values)


# The implementations this module defines (quantlab.formats.registry.register; a format missing here
# fails tests/test_registry.py).
register("fast", "IQ1_S", quantize=quantize_iq1_s, dequantize=dequantize_iq1_s)
register("fast", "IQ1_M", quantize=quantize_iq1_m, dequantize=dequantize_iq1_m)
