"""numba kernels for IQ2_XXS, IQ2_XS and IQ2_S (same bytes as quantlab.formats.iq2, which explains them).

One scalar pass per super-block in ggml's order (quantize_row_iq2_{xxs,xs,s}_impl), a range of rows per
kernel call (spread over threads by :func:`quantlab.kernels._rows.run_rows`).
Where ggml asserts, the row's error slot is set and the Python wrapper raises QuantizationError with the
reference's message.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..errors import ImatrixRequired
from ..formats import iq2 as ref
from ..formats._iqgrid import ksigns, lattice
from ..formats.layout import offsets, size
from ..formats.registry import register
from ._c import nearest_int
from ._fp import f16_to_f32, f32_to_f16, rd16, wr16
from ._rows import dequantize_rows, min_rows, run_rows
from ._search import make_qp_quants

F32 = np.float32
_FLT_MAX = np.float32(np.finfo(np.float32).max)

# Byte offsets inside one super-block (quantlab.formats.layout; ints, so numba compiles them as constants).
# All three start with d (fp16) and the grid indices at IQ2_QS.
IQ2_D, IQ2_QS = offsets("IQ2_XXS", "d", "qs")
assert offsets("IQ2_XS", "d", "qs") == offsets("IQ2_S", "d", "qs") == (IQ2_D, IQ2_QS)
(IQ2XS_SCALES,) = offsets("IQ2_XS", "scales")
IQ2S_SIGNS, IQ2S_QH, IQ2S_SCALES = offsets("IQ2_S", "signs", "qh", "scales")
IQ2XXS_SIZE, IQ2XS_SIZE, IQ2S_SIZE = size("IQ2_XXS"), size("IQ2_XS"), size("IQ2_S")

# kind: 0 = IQ2_XXS, 1 = IQ2_XS, 2 = IQ2_S
_TYPE_SIZE = (IQ2XXS_SIZE, IQ2XS_SIZE, IQ2S_SIZE)
_BLOCK = (32, 16, 16)
_VARIANT = (ref.XXS, ref.XS, ref.S)
_GRID = ("iq2xxs", "iq2xs", "iq2s")


@njit(cache=True, inline="always")
def _term(e, c, i):
    """e[4i + l] with l = level i of the packed code c (unsigned arithmetic: no index wrap checks)."""
    return e[(np.uint32(i) << np.uint32(2)) | ((c >> np.uint32(2 * i)) & np.uint32(3))]


@njit(cache=True, inline="always")
def _scan(neigh, off, codes, e):
    """Best of the neighbour list at ``off``: the candidate with the smallest sum over i of
    e[4i + level_i] (added in i order, strict '<' against FLT_MAX, first one wins). Returns the grid
    index or -1. ``e`` holds the 3 possible terms of each of the 8 coordinates, each computed exactly as
    ggml computes it, so every candidate's sum is ggml's float32 sum. The terms are >= 0, so a partial sum
    never decreases: once it reaches the best so far the candidate cannot win, and it is dropped early."""
    cnt = neigh[off]
    best = _FLT_MAX
    gi = np.int32(-1)
    for j in range(1, cnt + 1):
        p = neigh[off + j]
        c = codes[p]
        d2 = ((_term(e, c, 0) + _term(e, c, 1)) + _term(e, c, 2)) + _term(e, c, 3)
        if not (d2 < best):
            continue
        d2 = (((d2 + _term(e, c, 4)) + _term(e, c, 5)) + _term(e, c, 6)) + _term(e, c, 7)
        if d2 < best:
            best = d2
            gi = p
    return gi


@njit(cache=True, inline="always")
def _neighbour(neigh, off, codes, levels, xval, waux, base, scale, L, e):
    """iq2_find_best_neighbour: the listed point with the smallest sum sqrt(w)*(scale*q - |x|)**2
    (q = 2l+1); writes its levels into L[base:base+8]. Returns the grid index or -1 (no finite error:
    ggml asserts there)."""
    cnt = neigh[off]
    if cnt <= 2:
        # short list (typical of IQ2_S): evaluate the candidates directly, as ggml does
        best = _FLT_MAX
        gi = np.int32(-1)
        for j in range(1, cnt + 1):
            p = neigh[off + j]
            d2 = np.float32(0.0)
            for i in range(8):
                diff = scale * np.float32(2 * levels[p, i] + 1) - xval[base + i]
                d2 += (waux[base + i] * diff) * diff
            if d2 < best:
                best = d2
                gi = p
    else:
        for i in range(8):
            for l in range(3):
                diff = scale * np.float32(2 * l + 1) - xval[base + i]
                e[4 * i + l] = (waux[base + i] * diff) * diff
        gi = _scan(neigh, off, codes, e)
    if gi >= 0:
        for i in range(8):
            L[base + i] = levels[gi, i]
    return gi


def _codes_u32(lat):
    c = _CODES.get(lat.name)
    if c is None:
        c = _CODES[lat.name] = np.ascontiguousarray(lat.codes, dtype=np.uint32)
    return c


_CODES: dict = {}


@njit(cache=True, inline="always")
def _code(L, base):
    """The grid key of the 8 level indices L[base:base+8], 2 bits each (IQ1's and IQ2's lattices)."""
    u = np.int32(0)
    for i in range(8):
        u |= np.int32(L[base + i]) << np.int32(2 * i)
    return u


@njit(cache=True)
def _fit_tables(w, xval, bs, tqx, tq2):
    """tqx[3i + l] = (w_i*|x_i|)*q and tq2[3i + l] = (w_i*q)*q for q = 2l+1: the terms of sumqx and sumq2
    exactly as ggml computes them, so that every candidate only adds table entries."""
    for i in range(bs):
        wx = w[i] * xval[i]
        for l in range(3):
            q = np.float32(2 * l + 1)
            tqx[3 * i + l] = wx * q
            tq2[3 * i + l] = (w[i] * q) * q


@njit(cache=True, inline="always")
def _fit(tqx, tq2, L, bs):
    """sumqx = sum (w*|x|)*q, sumq2 = sum (w*q)*q, q = 2l+1, left to right (from the tables)."""
    sumqx = np.float32(0.0)
    sumq2 = np.float32(0.0)
    for i in range(bs):
        j = 3 * i + np.int64(L[i])
        sumqx += tqx[j]
        sumq2 += tq2[j]
    return sumqx, sumq2


@njit(cache=True)
def _quantize_row(x, r, qw, has_qw, kind, kmap, neigh, codes, levels, out, err):
    n = x.shape[1]
    bs = 32 if kind == 0 else 16
    G = bs // 8
    nblk = 256 // bs
    parity = kind != 2
    ts = IQ2XXS_SIZE if kind == 0 else (IQ2XS_SIZE if kind == 1 else IQ2S_SIZE)
    eps = np.float32(1e-8) if kind == 2 else np.float32(1e-15)
    weight = np.empty(bs, np.float32)
    waux = np.empty(bs, np.float32)
    xval = np.empty(bs, np.float32)
    L = np.zeros(bs, np.int8)
    Laux = np.zeros(bs, np.int8)
    Lqp = np.zeros(bs, np.uint8)
    signs = np.zeros(G, np.int32)
    on_grid = np.zeros(G, np.bool_)
    on_aux = np.zeros(G, np.bool_)
    scales = np.zeros(nblk, np.float32)
    gidx = np.zeros((nblk, G), np.int32)
    bsigns = np.zeros((nblk, G), np.int32)
    live = np.zeros(nblk, np.bool_)
    e = np.zeros(32, np.float32)
    tqx = np.zeros(3 * bs, np.float32)
    tq2 = np.zeros(3 * bs, np.float32)
    for ibl in range(n // 256):
        x0 = ibl * 256
        sumx2 = np.float32(0.0)
        for i in range(256):
            sumx2 += x[r, x0 + i] * x[r, x0 + i]
        if kind == 2:
            sigma2 = (np.float32(2.0) * sumx2) / np.float32(256.0)
        else:
            sigma2 = sumx2 / np.float32(256.0)
        max_scale = np.float32(0.0)
        for ib in range(nblk):
            b0 = x0 + ib * bs
            live[ib] = False
            scales[ib] = np.float32(0.0)
            for i in range(bs):
                xi = x[r, b0 + i]
                if has_qw:
                    weight[i] = qw[b0 + i] * np.float32(np.sqrt(sigma2 + xi * xi))
                else:
                    weight[i] = np.float32(0.25) * sigma2 + xi * xi
                waux[i] = np.float32(np.sqrt(weight[i]))
            for k in range(G):
                nflip = 0
                s = np.int32(0)
                for i in range(8):
                    xi = x[r, b0 + 8 * k + i]
                    if xi >= 0:
                        xval[8 * k + i] = xi
                    else:
                        xval[8 * k + i] = -xi
                        nflip += 1
                        s |= np.int32(1) << np.int32(i)
                if parity:
                    if nflip % 2 == 1:
                        xi = x[r, b0 + 8 * k]
                        imin = 0
                        mn = (weight[8 * k] * xi) * xi
                        for i in range(1, 8):
                            xi = x[r, b0 + 8 * k + i]
                            ax = (weight[8 * k + i] * xi) * xi
                            if ax < mn:
                                mn = ax
                                imin = i
                        xval[8 * k + imin] = -xval[8 * k + imin]
                        s ^= np.int32(1) << np.int32(imin)
                    s &= 127
                signs[k] = s
            mx = xval[0]
            for i in range(1, bs):
                if not (mx > xval[i]):
                    mx = xval[i]
            if mx < eps:
                continue
            if kind == 0:
                scale = make_qp_quants(xval, 4, weight, Lqp)
                denom = scale * np.float32(3.0)
                if denom <= 0:
                    continue
                for i in range(bs):
                    L[i] = np.int8(Lqp[i])
            else:
                scale = mx / np.float32(5.0)
                denom = mx
                for i in range(bs):
                    L[i] = 0
            best = np.float32(0.0)
            _fit_tables(weight, xval, bs, tqx, tq2)
            for k in range(G):
                on_grid[k] = True
            tmin = -6 if kind == 0 else -9
            for t in range(tmin, -tmin + 1):
                inv = (np.float32(5.0) + np.float32(t) * np.float32(0.1)) / denom
                this_scale = np.float32(1.0) / inv
                for k in range(G):
                    for i in range(8):
                        l = nearest_int(np.float32(0.5) * (inv * xval[8 * k + i] - np.float32(1.0)))
                        Laux[8 * k + i] = 0 if l < 0 else (2 if l > 2 else l)
                    u = _code(Laux, 8 * k)
                    gi = kmap[u]
                    on_aux[k] = True
                    if gi < 0:
                        on_aux[k] = False
                        gi = _neighbour(neigh, -gi - 1, codes, levels, xval, waux, 8 * k, this_scale, Laux, e)
                        if gi < 0:
                            err[r, 0] = 1
                            err[r, 1] = (x0 + ib * bs) // bs
                            return
                sumqx, sumq2 = _fit(tqx, tq2, Laux, bs)
                if sumq2 > 0 and sumqx * sumqx > best * sumq2:
                    scale = sumqx / sumq2
                    best = scale * sumqx
                    for i in range(bs):
                        L[i] = Laux[i]
                    for k in range(G):
                        on_grid[k] = on_aux[k]
            need = False
            if kind == 0:
                need = scale > 0
            else:
                for k in range(G):
                    if not on_grid[k]:
                        need = True
                need = need and scale > 0
            if need:
                inv = np.float32(1.0) / scale
                for k in range(G):
                    if kind != 0 and on_grid[k]:
                        continue
                    for i in range(8):
                        l = nearest_int(np.float32(0.5) * (inv * xval[8 * k + i] - np.float32(1.0)))
                        L[8 * k + i] = 0 if l < 0 else (2 if l > 2 else l)
                    u = _code(L, 8 * k)
                    gi = kmap[u]
                    if gi < 0:
                        gi = _neighbour(neigh, -gi - 1, codes, levels, xval, waux, 8 * k, scale, L, e)
                        if gi < 0:
                            err[r, 0] = 1
                            err[r, 1] = (x0 + ib * bs) // bs
                            return
                sumqx, sumq2 = _fit(tqx, tq2, L, bs)
                if sumq2 > 0:
                    scale = sumqx / sumq2
            if scale < 0:
                scale = -scale
                for k in range(G):
                    signs[k] = (~signs[k]) & (127 if parity else 255)
            for k in range(G):
                u = _code(L, 8 * k)
                if u >= kmap.shape[0] or kmap[u] < 0:
                    err[r, 0] = 3
                    err[r, 1] = (x0 + ib * bs) // bs
                    return
                gidx[ib, k] = kmap[u]
                bsigns[ib, k] = signs[k]
            if not (scale >= 0):
                err[r, 0] = 2
                err[r, 1] = (x0 + ib * bs) // bs
                return
            live[ib] = True
            scales[ib] = scale
            if not (max_scale > scale):
                max_scale = scale

        # pack the super-block
        o = ibl * ts
        for j in range(ts):
            out[r, o + j] = 0
        if max_scale == 0:
            if kind == 2:  # IQ2_S keeps the index/sign bytes of its (zero-scale) live blocks
                for ib in range(nblk):
                    if live[ib]:
                        for k in range(G):
                            g = 2 * ib + k
                            out[r, o + IQ2_QS + g] = np.uint8(gidx[ib, k] & 255)
                            out[r, o + IQ2S_SIGNS + g] = np.uint8(bsigns[ib, k])
                            out[r, o + IQ2S_QH + g // 4] |= np.uint8((gidx[ib, k] >> 8) << (2 * (g % 4)))
            continue
        d = max_scale / np.float32(31.0)
        if kind == 2:
            wr16(out[r], o + IQ2_D, f32_to_f16(d * np.float32(0.9875)))
        else:
            wr16(out[r], o + IQ2_D, f32_to_f16(d))
        idd = np.float32(1.0) / d
        for ib in range(nblk):
            l = nearest_int(np.float32(0.5) * (idd * scales[ib] - np.float32(1.0)))
            l = 0 if l < 0 else (15 if l > 15 else l)
            if kind == 0:
                w0 = np.uint32(0)
                w1 = np.uint32(0)
                if live[ib]:
                    for k in range(4):
                        w0 |= np.uint32(gidx[ib, k]) << np.uint32(8 * k)
                        w1 |= np.uint32(bsigns[ib, k]) << np.uint32(7 * k)
                w1 |= np.uint32(l) << np.uint32(28)
                p = o + IQ2_QS + 8 * ib
                for j in range(4):
                    out[r, p + j] = np.uint8((w0 >> np.uint32(8 * j)) & np.uint32(255))
                    out[r, p + 4 + j] = np.uint8((w1 >> np.uint32(8 * j)) & np.uint32(255))
            elif kind == 1:
                if live[ib]:
                    for k in range(2):
                        v = np.uint16(gidx[ib, k] | (bsigns[ib, k] << 9))
                        wr16(out[r], o + IQ2_QS + 2 * (2 * ib + k), v)
                if ib % 2 == 0:
                    out[r, o + IQ2XS_SCALES + ib // 2] = np.uint8(l)
                else:
                    out[r, o + IQ2XS_SCALES + ib // 2] |= np.uint8(l << 4)
            else:
                if live[ib]:
                    for k in range(2):
                        g = 2 * ib + k
                        out[r, o + IQ2_QS + g] = np.uint8(gidx[ib, k] & 255)
                        out[r, o + IQ2S_SIGNS + g] = np.uint8(bsigns[ib, k])
                        out[r, o + IQ2S_QH + g // 4] |= np.uint8((gidx[ib, k] >> 8) << (2 * (g % 4)))
                if ib % 2 == 0:
                    out[r, o + IQ2S_SCALES + ib // 2] = np.uint8(l)
                else:
                    out[r, o + IQ2S_SCALES + ib // 2] |= np.uint8(l << 4)


@njit(cache=True, nogil=True)
def _quantize(x, qw, has_qw, kind, kmap, neigh, codes, levels, out, err, r0, r1):
    for r in range(r0, r1):
        _quantize_row(x, r, qw, has_qw, kind, kmap, neigh, codes, levels, out, err)


def run_grid_rows(fn, x, imatrix, lat, type_size: int, *kind):
    """The rows of ``x`` through a grid-search row kernel of IQ1/IQ2 ``fn(x, qw, has_qw, *kind, kmap,
    neighbours, codes, levels, out, err, r0, r1)`` on the thread pool. Returns the quantized rows and, for
    the first row whose search failed, (row, the kernel's error code, block in the row); else None."""
    nrows, n = x.shape
    out = np.empty((nrows, n // 256 * type_size), dtype=np.uint8)
    err = np.zeros((nrows, 2), dtype=np.int64)
    has = imatrix is not None
    qw = np.ascontiguousarray(imatrix, dtype=np.float32) if has else np.zeros(1, np.float32)
    codes = _codes_u32(lat)
    run_rows(
        fn,
        nrows,
        x,
        qw,
        has,
        *kind,
        lat.kmap,
        lat.neighbours,
        codes,
        lat.levels,
        out,
        err,
        min_rows=min_rows(n, "quantize"),
    )
    bad = np.flatnonzero(err[:, 0])
    if not bad.size:
        return out, None
    r = int(bad[0])
    return out, (r, int(err[r, 0]), int(err[r, 1]))


_WHAT = {
    1: "no candidate of a grid-neighbour search has a finite error",
    2: "the fitted block scale is NaN",
    3: "a group ended off the grid",
}


def _run(x, imatrix, kind):
    v = _VARIANT[kind]
    out, bad = run_grid_rows(_quantize, x, imatrix, lattice(_GRID[kind]), _TYPE_SIZE[kind], kind)
    if bad is not None:
        r, code, b = bad
        ref._raise(v, _WHAT[code], r * (x.shape[1] // v.block) + b, x.shape[1], x)
    return out


def quantize_iq2_xxs(x, imatrix=None):
    if imatrix is None:
        raise ImatrixRequired("IQ2_XXS cannot be quantized without an importance matrix")
    return _run(x, imatrix, 0)


def quantize_iq2_xs(x, imatrix=None):
    if imatrix is None:
        raise ImatrixRequired("IQ2_XS cannot be quantized without an importance matrix")
    return _run(x, imatrix, 1)


def quantize_iq2_s(x, imatrix=None):
    return _run(x, imatrix, 2)


# ----------------------------------------------------------------------------------------------------
# dequantization
# ----------------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _dequantize(q, out, kind, values, ksg, r0, r1):
    ts = IQ2XXS_SIZE if kind == 0 else (IQ2XS_SIZE if kind == 1 else IQ2S_SIZE)
    nsb = q.shape[1] // ts
    for r in range(r0, r1):
        for ibl in range(nsb):
            o = ibl * ts
            d = f16_to_f32(rd16(q[r], o + IQ2_D))
            y0 = ibl * 256
            for ib in range(8):  # blocks of 32
                p = o + IQ2_QS + 8 * ib
                w1 = np.uint32(0)
                if kind == 0:
                    w1 = (
                        np.uint32(q[r, p + 4])
                        | (np.uint32(q[r, p + 5]) << np.uint32(8))
                        | (np.uint32(q[r, p + 6]) << np.uint32(16))
                        | (np.uint32(q[r, p + 7]) << np.uint32(24))
                    )
                    db0 = (d * (np.float32(0.5) + np.float32(w1 >> np.uint32(28)))) * np.float32(0.25)
                    db1 = db0
                else:
                    sc = q[r, o + (IQ2XS_SCALES if kind == 1 else IQ2S_SCALES) + ib]
                    db0 = (d * (np.float32(0.5) + np.float32(sc & 15))) * np.float32(0.25)
                    db1 = (d * (np.float32(0.5) + np.float32(sc >> 4))) * np.float32(0.25)
                for l in range(4):
                    if kind == 0:
                        gi = np.int32(q[r, p + l])
                        sg = ksg[(w1 >> np.uint32(7 * l)) & np.uint32(127)]
                    elif kind == 1:
                        v = np.int32(rd16(q[r], o + IQ2_QS + 2 * (4 * ib + l)))
                        gi = v & 511
                        sg = ksg[v >> 9]
                    else:
                        g = 4 * ib + l
                        gi = np.int32(q[r, o + IQ2_QS + g]) | (((np.int32(q[r, o + IQ2S_QH + ib]) >> (2 * l)) & 3) << 8)
                        sg = q[r, o + IQ2S_SIGNS + g]
                    db = db0 if l < 2 else db1
                    for j in range(8):
                        y = db * values[gi, j]
                        if (sg >> j) & 1:
                            y = y * np.float32(-1.0)
                        out[r, y0 + 32 * ib + 8 * l + j] = y


def _deq(q, n, kind):
    return dequantize_rows(_dequantize, q, n, kind, lattice(_GRID[kind]).values, ksigns())


def dequantize_iq2_xxs(q, n_per_row):
    return _deq(q, n_per_row, 0)


def dequantize_iq2_xs(q, n_per_row):
    return _deq(q, n_per_row, 1)


def dequantize_iq2_s(q, n_per_row):
    return _deq(q, n_per_row, 2)


# The implementations this module defines (quantlab.formats.registry.register; a format missing here
# fails tests/test_registry.py).
register("fast", "IQ2_XXS", quantize=quantize_iq2_xxs, dequantize=dequantize_iq2_xxs)
register("fast", "IQ2_XS", quantize=quantize_iq2_xs, dequantize=dequantize_iq2_xs)
register("fast", "IQ2_S", quantize=quantize_iq2_s, dequantize=dequantize_iq2_s)
