"""numba kernels for IQ3_XXS and IQ3_S (same names and bytes as quantlab.formats.iq3).

A range of rows per kernel call (spread over threads by :func:`quantlab.kernels._rows.run_rows`),
scalar loops in the order of ggml's ``quantize_row_iq3_xxs_impl`` / ``quantize_row_iq3_s_impl``.
Where ggml aborts, the row reports a status code and the Python wrapper
raises the same QuantizationError as the reference.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..formats import iq3 as ref
from ..formats._iqgrid import ksigns, lattice
from ..formats.layout import offsets, size
from ..formats.registry import register
from ._c import nearest_int
from ._fp import f16_to_f32, f32_to_f16, rd16, wr16
from ._rows import dequantize_rows, min_rows, run_rows

FLT_MAX = np.float32(np.finfo(np.float32).max)

OK, NO_NEIGHBOUR, NAN_SCALE = 0, 1, 2

# Byte offsets inside one super-block (quantlab.formats.layout; ints, so numba compiles them as constants).
# Both start with d (fp16) and the grid indices at IQ3_QS.
IQ3_D, IQ3_QS = offsets("IQ3_XXS", "d", "qs")
assert offsets("IQ3_S", "d", "qs") == (IQ3_D, IQ3_QS)
(IQ3XXS_SAS,) = offsets("IQ3_XXS", "sas")
IQ3S_QH, IQ3S_SIGNS, IQ3S_SCALES = offsets("IQ3_S", "qh", "signs", "scales")
IQ3XXS_SIZE, IQ3S_SIZE = size("IQ3_XXS"), size("IQ3_S")
_Q3_BODY = IQ3XXS_SIZE - IQ3_QS  # the IQ3_XXS bytes after d, assembled in a scratch buffer
_Q3_SAS = IQ3XXS_SAS - IQ3_QS  # where the scales-and-signs words start in it


@njit(cache=True, inline="always")
def _best_neighbour(neigh, start, points, pointsf, xval, waux, off, scale, L, loff):
    """iq3_find_best_neighbour: the listed point with the smallest sum waux*(scale*q - xval)**2."""
    count = neigh[start]
    best = FLT_MAX
    gi = -1
    for j in range(1, count + 1):
        idx = neigh[start + j]
        d2 = np.float32(0)
        for i in range(4):
            diff = scale * pointsf[idx, i] - xval[off + i]
            d2 += waux[off + i] * diff * diff
        if d2 < best:
            best = d2
            gi = idx
    if gi >= 0:
        for i in range(4):
            L[loff + i] = (points[gi, i] - 1) // 2
    return gi


@njit(cache=True, inline="always")
def _code(L, off):
    return np.int32(L[off]) | (np.int32(L[off + 1]) << 3) | (np.int32(L[off + 2]) << 6) | (np.int32(L[off + 3]) << 9)


@njit(cache=True)
def _row(xr, qw, has_qw, is_s, points, pointsf, kmap, neigh, o, bad):
    """Quantize one row into o; returns (status, block index of the failure)."""
    nsb = xr.shape[0] // 256
    weight = np.empty(32, dtype=np.float32)
    waux = np.empty(32, dtype=np.float32)
    xval = np.empty(32, dtype=np.float32)
    wx = np.empty(32, dtype=np.float32)
    L = np.zeros(32, dtype=np.int8)
    Laux = np.zeros(32, dtype=np.int8)
    on_grid = np.zeros(8, dtype=np.bool_)
    on_grid_aux = np.zeros(8, dtype=np.bool_)
    bsigns = np.zeros(4, dtype=np.int32)
    scales = np.zeros(8, dtype=np.float32)
    q3 = np.zeros(_Q3_BODY, dtype=np.uint8)  # IQ3_XXS body, copied out only if max_scale != 0
    bsize = IQ3S_SIZE if is_s else IQ3XXS_SIZE
    ntry = 9 if is_s else 15
    for ibl in range(nsb):
        base = ibl * 256
        ob = ibl * bsize
        q3[:] = 0
        sumx2 = np.float32(0)
        for i in range(256):
            sumx2 += xr[base + i] * xr[base + i]
        sigma2 = np.float32(2) * sumx2 / np.float32(256)
        max_scale = np.float32(0)
        slot = 0  # IQ3_S: qs/signs write position (see the reference)
        for ib in range(8):
            xo = base + 32 * ib
            if has_qw:
                for i in range(32):
                    weight[i] = qw[xo + i] * np.sqrt(sigma2 + xr[xo + i] * xr[xo + i])
            else:
                for i in range(32):
                    weight[i] = xr[xo + i] * xr[xo + i]
            for i in range(32):
                waux[i] = np.sqrt(weight[i])
            for k in range(4):
                nflip = 0
                s = 0
                for i in range(8):
                    v = xr[xo + 8 * k + i]
                    if v >= 0:
                        xval[8 * k + i] = v
                    else:
                        xval[8 * k + i] = -v
                        nflip += 1
                        s |= 1 << i
                if not is_s and nflip % 2 == 1:
                    imin = 0
                    mn = weight[8 * k] * xr[xo + 8 * k] * xr[xo + 8 * k]
                    for i in range(1, 8):
                        ax = weight[8 * k + i] * xr[xo + 8 * k + i] * xr[xo + 8 * k + i]
                        if ax < mn:
                            mn = ax
                            imin = i
                    xval[8 * k + imin] = -xval[8 * k + imin]
                    s ^= 1 << imin
                bsigns[k] = s if is_s else (s & 127)
            mx = xval[0]
            for i in range(1, 32):
                mx = mx if mx > xval[i] else xval[i]
            for i in range(32):
                wx[i] = weight[i] * xval[i]
            L[:] = 0
            if (is_s and mx == 0) or ((not is_s) and mx < np.float32(1e-8)):
                scales[ib] = 0
                continue
            best = np.float32(0)
            scale = mx / np.float32(15)
            for k in range(8):
                on_grid[k] = not is_s
            for t in range(-ntry, ntry + 1):
                inv = (np.float32(15) + np.float32(t) * np.float32(0.2)) / mx
                this_scale = np.float32(1) / inv
                for k in range(8):
                    for i in range(4):
                        l = nearest_int(np.float32(0.5) * (inv * xval[4 * k + i] - np.float32(1)))
                        Laux[4 * k + i] = max(0, min(7, l))
                    u = _code(Laux, 4 * k)
                    gi = kmap[u]
                    on_grid_aux[k] = True
                    if gi < 0:
                        on_grid_aux[k] = False
                        gi = _best_neighbour(
                            neigh, -kmap[u] - 1, points, pointsf, xval, waux, 4 * k, this_scale, Laux, 4 * k
                        )
                        if gi < 0:
                            bad[0] = ibl * 8 + ib
                            return NO_NEIGHBOUR
                sumqx = np.float32(0)
                sumq2 = np.float32(0)
                for i in range(32):
                    q = np.float32(2 * Laux[i] + 1)
                    sumqx += wx[i] * q
                    sumq2 += weight[i] * q * q
                if sumq2 > 0 and sumqx * sumqx > best * sumq2:
                    scale = sumqx / sumq2
                    best = scale * sumqx
                    for i in range(32):
                        L[i] = Laux[i]
                    for k in range(8):
                        on_grid[k] = on_grid_aux[k]
            n_off = 0
            for k in range(8):
                if not on_grid[k]:
                    n_off += 1
            if n_off > 0 and scale > 0:
                inv = np.float32(1) / scale
                for k in range(8):
                    if (not is_s) and on_grid[k]:
                        continue
                    u = 0
                    for i in range(4):
                        l = nearest_int(np.float32(0.5) * (inv * xval[4 * k + i] - np.float32(1)))
                        l = max(0, min(7, l))
                        u |= l << (3 * i)
                    gi = kmap[u]
                    if gi < 0:
                        gi = _best_neighbour(neigh, -kmap[u] - 1, points, pointsf, xval, waux, 4 * k, scale, L, 4 * k)
                        if gi < 0:
                            bad[0] = ibl * 8 + ib
                            return NO_NEIGHBOUR
                    for i in range(4):
                        L[4 * k + i] = (points[gi, i] - 1) // 2
                sumqx = np.float32(0)
                sumq2 = np.float32(0)
                for i in range(32):
                    w = weight[i]
                    q = np.float32(2 * L[i] + 1)
                    sumqx += w * xval[i] * q
                    sumq2 += w * q * q
                if sumq2 > 0:
                    scale = sumqx / sumq2
            if scale < 0:
                scale = -scale
                for k in range(4):
                    bsigns[k] = (~bsigns[k]) & (255 if is_s else 127)
            if not (scale >= 0):
                bad[0] = ibl * 8 + ib
                return NAN_SCALE
            if is_s:
                for k in range(8):
                    gi = kmap[_code(L, 4 * k)]
                    o[ob + IQ3_QS + 8 * slot + k] = np.uint8(gi & 255)
                    o[ob + IQ3S_QH + ib] |= np.uint8((gi >> 8) << k)
                for k in range(4):
                    o[ob + IQ3S_SIGNS + 4 * slot + k] = np.uint8(bsigns[k])
                slot += 1
            else:
                for k in range(8):
                    q3[8 * ib + k] = np.uint8(kmap[_code(L, 4 * k)])
                word = np.uint32(bsigns[0] | (bsigns[1] << 7) | (bsigns[2] << 14) | (bsigns[3] << 21))
                for k in range(4):
                    q3[_Q3_SAS + 4 * ib + k] = np.uint8((word >> np.uint32(8 * k)) & np.uint32(255))
            scales[ib] = scale
            max_scale = max_scale if max_scale > scale else scale
        if max_scale == 0:
            continue
        d = max_scale / np.float32(31)
        if is_s:
            wr16(o, ob + IQ3_D, f32_to_f16(d * np.float32(1.033)))
        else:
            wr16(o, ob + IQ3_D, f32_to_f16(d * np.float32(1.0125)))
        idd = np.float32(1) / d
        for ib in range(8):
            l = nearest_int(np.float32(0.5) * (idd * scales[ib] - np.float32(1)))
            l = max(0, min(15, l))
            if is_s:
                o[ob + IQ3S_SCALES + ib // 2] |= np.uint8(l << (4 * (ib % 2)))
            else:
                q3[_Q3_SAS + 4 * ib + 3] |= np.uint8(l << 4)
        if not is_s:
            for i in range(_Q3_BODY):
                o[ob + IQ3_QS + i] = q3[i]
    return OK


@njit(cache=True, nogil=True)
def _quant(x, qw, has_qw, is_s, points, pointsf, kmap, neigh, out, status, where, r0, r1):
    for r in range(r0, r1):
        bad = np.zeros(1, dtype=np.int64)
        status[r] = _row(x[r], qw, has_qw, is_s, points, pointsf, kmap, neigh, out[r], bad)
        where[r] = bad[0]


def _quantize(x, imatrix, is_s):
    v = ref.S if is_s else ref.XXS
    lat = lattice(v.grid)
    nrows, n = x.shape
    out = np.zeros((nrows, n // 256 * (IQ3S_SIZE if is_s else IQ3XXS_SIZE)), dtype=np.uint8)
    if imatrix is None:
        qw, has = np.zeros(n, dtype=np.float32), False
    else:
        qw, has = np.ascontiguousarray(imatrix, dtype=np.float32), True
    status = np.zeros(nrows, dtype=np.int32)
    where = np.zeros(nrows, dtype=np.int64)
    run_rows(
        _quant,
        nrows,
        x,
        qw,
        has,
        is_s,
        lat.points,
        lat.points.astype(np.float32),
        lat.kmap,
        lat.neighbours,
        out,
        status,
        where,
        min_rows=min_rows(n, "quantize"),
    )
    if status.any():
        r = int(np.flatnonzero(status)[0])
        what = (
            "no finite candidate in a grid-neighbour search"
            if status[r] == NO_NEIGHBOUR
            else "the fitted block scale is NaN"
        )
        ref._raise(v, what, r * (n // 32) + where[r], n, x)
    return out


def quantize_iq3_xxs(x, imatrix=None):
    return _quantize(x, imatrix, False)


def quantize_iq3_s(x, imatrix=None):
    return _quantize(x, imatrix, True)


@njit(cache=True, inline="always")
def _put8(y, yo, db, values, i1, i2, signs):
    """8 weights at y[yo]: db times grid point i1 (4 values) then grid point i2, negated where bit j of
    ``signs`` is set."""
    for j in range(4):
        s1 = np.float32(-1) if signs & (1 << j) else np.float32(1)
        s2 = np.float32(-1) if signs & (1 << (j + 4)) else np.float32(1)
        y[yo + j] = db * values[i1, j] * s1
        y[yo + 4 + j] = db * values[i2, j] * s2


def _dequant_kernel(is_s):
    """The dequantizer of IQ3_S (is_s) or IQ3_XXS; numba freezes ``is_s``, so each compiles without the
    other's branches. Super-block of 256: d (fp16), 64 grid index bytes, then
    IQ3_XXS: 8 x uint32 (4 x 7-bit sign index, 4-bit scale); IQ3_S: 8 bytes of 9th index bits,
    32 sign bytes, 4 bytes of 4-bit scales."""
    ts = IQ3S_SIZE if is_s else IQ3XXS_SIZE

    @njit(cache=True, nogil=True)
    def dequantize(q, out, values, ks, r0, r1):
        nsb = out.shape[1] // 256
        for r in range(r0, r1):
            qr = q[r]
            y = out[r]
            for ibl in range(nsb):
                ob = ibl * ts
                d = f16_to_f32(rd16(qr, ob + IQ3_D))
                for ib in range(8):
                    if is_s:
                        s = (np.int32(qr[ob + IQ3S_SCALES + ib // 2]) >> (4 * (ib % 2))) & 15
                        db = d * np.float32(1 + 2 * s)
                        qh = np.int32(qr[ob + IQ3S_QH + ib])
                        aux = np.uint32(0)
                    else:
                        wo = ob + IQ3XXS_SAS + 4 * ib
                        aux = (
                            np.uint32(qr[wo])
                            | (np.uint32(qr[wo + 1]) << np.uint32(8))
                            | (np.uint32(qr[wo + 2]) << np.uint32(16))
                            | (np.uint32(qr[wo + 3]) << np.uint32(24))
                        )
                        db = d * (np.float32(0.5) + np.float32(aux >> np.uint32(28))) * np.float32(0.5)
                        qh = np.int32(0)
                    for g in range(4):
                        i1 = np.int32(qr[ob + IQ3_QS + 8 * ib + 2 * g])
                        i2 = np.int32(qr[ob + IQ3_QS + 8 * ib + 2 * g + 1])
                        if is_s:
                            signs = qr[ob + IQ3S_SIGNS + 4 * ib + g]
                            i1 |= ((qh >> (2 * g)) & 1) << 8
                            i2 |= ((qh >> (2 * g + 1)) & 1) << 8
                        else:
                            signs = ks[(aux >> np.uint32(7 * g)) & np.uint32(127)]
                        _put8(y, ibl * 256 + 32 * ib + 8 * g, db, values, i1, i2, signs)

    return dequantize


_DEQUANT = {"IQ3_XXS": (_dequant_kernel(False), "iq3xxs"), "IQ3_S": (_dequant_kernel(True), "iq3s")}


def _dequantize(fmt, q, n_per_row):
    kernel, grid = _DEQUANT[fmt]
    return dequantize_rows(kernel, q, n_per_row, lattice(grid).values, ksigns())


def dequantize_iq3_xxs(q, n_per_row):
    return _dequantize("IQ3_XXS", q, n_per_row)


def dequantize_iq3_s(q, n_per_row):
    return _dequantize("IQ3_S", q, n_per_row)


# The implementations this module defines (quantlab.formats.registry.register; a format missing here
# fails tests/test_registry.py).
register("fast", "IQ3_XXS", quantize=quantize_iq3_xxs, dequantize=dequantize_iq3_xxs)
register("fast", "IQ3_S", quantize=quantize_iq3_s, dequantize=dequantize_iq3_s)
