"""numba kernels for the K-quants Q2_K..Q6_K and Q8_K, bit-identical to :mod:`quantlab.formats.kquants`
(read that module for the layouts and the algorithm). Each kernel works on a range of rows
(:func:`quantlab.kernels._rows.run_rows` spreads the ranges over threads); every
super-block is processed with scalar float32 code in ggml's evaluation order, using the searches of
:mod:`quantlab.kernels._search` on 1-D slices and per-row scratch buffers.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..formats.layout import offsets, size
from ..formats.registry import register
from ._c import clampi, nearest_int
from ._fp import f16_to_f32, f32_as_u32, f32_to_f16, rd16, u32_as_f32, wr16
from ._rows import min_rows, run_rows
from ._search import (
    make_q3_quants,
    make_qkx2_quants,
    make_qkx3_quants,
    make_qkx_groups,
    make_qp_quants,
    make_qx_groups,
    make_qx_quants,
)

QK_K = 256
_ZERO = np.float32(0.0)
_U = np.uint64
_B0, _B4, _B16, _LO4 = np.uint8(0), np.uint8(4), np.uint8(16), np.uint8(0xF)

# Byte offsets inside one super-block (quantlab.formats.layout; ints, so numba compiles them as constants)
Q2K_SCALES, Q2K_QS, Q2K_D, Q2K_DMIN = offsets("Q2_K", "scales", "qs", "d", "dmin")
Q3K_HMASK, Q3K_QS, Q3K_SCALES, Q3K_D = offsets("Q3_K", "hmask", "qs", "scales", "d")
Q4K_D, Q4K_DMIN, Q4K_SCALES, Q4K_QS = offsets("Q4_K", "d", "dmin", "scales", "qs")
Q5K_QH, Q5K_QS = offsets("Q5_K", "qh", "qs")
assert offsets("Q5_K", "d", "dmin", "scales") == (Q4K_D, Q4K_DMIN, Q4K_SCALES)  # Q4_K/Q5_K share code
Q6K_QL, Q6K_QH, Q6K_SCALES, Q6K_D = offsets("Q6_K", "ql", "qh", "scales", "d")
Q8K_D, Q8K_QS, Q8K_BSUMS = offsets("Q8_K", "d", "qs", "bsums")
Q2K_SIZE, Q3K_SIZE, Q4K_SIZE, Q5K_SIZE, Q6K_SIZE, Q8K_SIZE = (
    size(f) for f in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K")
)


@njit(cache=True, error_model="numpy", inline="always")
def _imatrix_weights(xb, qw, doubled, w):
    """w[i] = qw[i] * sqrt(sigma2 + x[i]**2) over one super-block, sigma2 = (2*)sum(x**2)/256."""
    s = np.float32(0.0)
    for i in range(QK_K):
        s += xb[i] * xb[i]
    if doubled:
        s = np.float32(2.0) * s
    sigma2 = np.float32(s / np.float32(QK_K))
    for i in range(QK_K):
        w[i] = qw[i] * np.float32(np.sqrt(sigma2 + xb[i] * xb[i]))


@njit(cache=True, error_model="numpy", inline="always")
def _pack_2bit(L, q, off):
    for c in range(2):
        for l in range(32):
            e = 128 * c + l
            q[off + 32 * c + l] = np.uint8(
                (np.int32(L[e]) | (np.int32(L[e + 32]) << 2) | (np.int32(L[e + 64]) << 4) | (np.int32(L[e + 96]) << 6))
                & 0xFF
            )


@njit(cache=True, error_model="numpy", inline="always")
def _pack_4bit(L, q, off):
    for c in range(4):
        for l in range(32):
            e = 64 * c + l
            q[off + 32 * c + l] = np.uint8((np.int32(L[e]) | (np.int32(L[e + 32]) << 4)) & 0xFF)


@njit(cache=True, error_model="numpy", inline="always")
def _s8(b):
    """A byte read as int8 (two's complement), as int32."""
    return ((np.int32(b) + 128) & 255) - 128


# ------------------------------------------------------------------------------------------- Q2_K


@njit(cache=True, nogil=True, error_model="numpy")
def _quant_q2_k(x, qw, has_im, out, r0, r1):
    _nrows, n = x.shape
    nb = n // QK_K
    for r in range(r0, r1):
        L = np.empty(QK_K, np.uint8)
        Laux = np.empty(16, np.uint8)
        w = np.empty(QK_K, np.float32)
        scales = np.empty(16, np.float32)
        mins = np.empty(16, np.float32)
        sw = np.empty(16, np.float32)
        Ls = np.empty(16, np.uint8)
        Lm = np.empty(16, np.uint8)
        packed = np.empty(16, np.int32)
        S = np.empty(4 * QK_K + 15 * 16, np.float32)
        q = out[r]
        for i in range(nb):
            xb = x[r, i * QK_K : (i + 1) * QK_K]
            o = i * Q2K_SIZE
            if has_im:
                _imatrix_weights(xb, qw[i * QK_K : (i + 1) * QK_K], False, w)
                for j in range(16):
                    s = np.float32(0.0)
                    for l in range(16):
                        s += w[16 * j + l]
                    sw[j] = s
                # make_qkx3_quants on the 16 groups at once (interleaved, one lane per group)
                make_qkx_groups(xb, w, 16, 16, 3, -0.9, 0.05, 36, False, True, L, scales, mins, S, Laux)
                dm = make_qp_quants(scales, 15, sw, Ls)
                mm = make_qp_quants(mins, 15, sw, Lm)
                for j in range(16):
                    packed[j] = (np.int32(Ls[j]) | (np.int32(Lm[j]) << 4)) & 0xFF
                d_bits = f32_to_f16(dm)
                m_bits = f32_to_f16(mm)
            else:
                max_scale = np.float32(0.0)
                max_min = np.float32(0.0)
                for e in range(QK_K):
                    w[e] = np.float32(abs(xb[e]))
                # make_qkx2_quants on the 16 groups at once (interleaved, one lane per group)
                make_qkx_groups(xb, w, 16, 16, 3, -0.5, 0.1, 15, True, False, L, scales, mins, S, Laux)
                for j in range(16):
                    sc = scales[j]
                    mn = mins[j]
                    if sc > max_scale:
                        max_scale = sc
                    if mn > max_min:
                        max_min = mn
                if max_scale > 0:
                    iscale = np.float32(np.float32(15.0) / max_scale)
                    for j in range(16):
                        packed[j] = nearest_int(iscale * scales[j]) & 0xFF
                    d_bits = f32_to_f16(np.float32(max_scale / np.float32(15.0)))
                else:
                    for j in range(16):
                        packed[j] = 0
                    d_bits = f32_to_f16(_ZERO)
                if max_min > 0:
                    iscale = np.float32(np.float32(15.0) / max_min)
                    for j in range(16):
                        packed[j] = (packed[j] | (nearest_int(iscale * mins[j]) << 4)) & 0xFF
                    m_bits = f32_to_f16(np.float32(max_min / np.float32(15.0)))
                else:
                    m_bits = f32_to_f16(_ZERO)
            d = f16_to_f32(d_bits)
            dmin = f16_to_f32(m_bits)
            for j in range(16):
                dd = d * np.float32(packed[j] & 0xF)
                if dd == 0:
                    continue
                dm_ = dmin * np.float32(packed[j] >> 4)
                for l in range(16):
                    e = 16 * j + l
                    L[e] = np.uint8(clampi(nearest_int((xb[e] + dm_) / dd), 0, 3))
            for j in range(16):
                q[o + Q2K_SCALES + j] = np.uint8(packed[j])
            _pack_2bit(L, q, o + Q2K_QS)
            wr16(q, o + Q2K_D, d_bits)
            wr16(q, o + Q2K_DMIN, m_bits)


@njit(cache=True, nogil=True, error_model="numpy")
def _dequant_q2_k(q, y, r0, r1):
    _nrows, n = y.shape
    nb = n // QK_K
    for r in range(r0, r1):
        qr = q[r]
        yr = y[r]
        for i in range(nb):
            o = i * Q2K_SIZE
            d = f16_to_f32(rd16(qr, o + Q2K_D))
            dmin = f16_to_f32(rd16(qr, o + Q2K_DMIN))
            for c in range(2):
                for s in range(4):
                    for h in range(2):
                        sc = np.int32(qr[o + Q2K_SCALES + 8 * c + 2 * s + h])
                        dl = d * np.float32(sc & 0xF)
                        ml = dmin * np.float32(sc >> 4)
                        base = _U(i * QK_K + 128 * c + 32 * s + 16 * h)
                        qo = _U(o + Q2K_QS + 32 * c + 16 * h)
                        for l in range(16):
                            v = (np.int32(qr[qo + _U(l)]) >> (2 * s)) & 3
                            yr[base + _U(l)] = dl * np.float32(v) - ml


# ------------------------------------------------------------------------------------------- Q3_K


@njit(cache=True, error_model="numpy", inline="always")
def _q3_scale(q, so, j):
    """Stored 6-bit value (0..63) of scale j from the 12 scale bytes at q[so]."""
    if j < 8:
        lo = np.int32(q[so + j]) & 0xF
    else:
        lo = np.int32(q[so + j - 8]) >> 4
    return lo | (((np.int32(q[so + 8 + j % 4]) >> (2 * (j // 4))) & 3) << 4)


@njit(cache=True, error_model="numpy", inline="always")
def _put_q3_scale(q, so, j, l):
    if j < 8:
        q[so + j] = np.uint8(l & 0xF)
    else:
        q[so + j - 8] = np.uint8((np.int32(q[so + j - 8]) | ((l & 0xF) << 4)) & 0xFF)
    q[so + 8 + j % 4] = np.uint8((np.int32(q[so + 8 + j % 4]) | ((l >> 4) << (2 * (j // 4)))) & 0xFF)


@njit(cache=True, nogil=True, error_model="numpy")
def _quant_q3_k(x, qw, has_im, out, r0, r1):
    _nrows, n = x.shape
    nb = n // QK_K
    for r in range(r0, r1):
        L = np.empty(QK_K, np.uint8)
        w = np.empty(QK_K, np.float32)
        scales = np.empty(16, np.float32)
        sw = np.empty(16, np.float32)
        Ls = np.empty(16, np.uint8)
        q = out[r]
        for i in range(nb):
            xb = x[r, i * QK_K : (i + 1) * QK_K]
            o = i * Q3K_SIZE
            so = o + Q3K_SCALES
            for k in range(12):
                q[so + k] = 0
            if has_im:
                _imatrix_weights(xb, qw[i * QK_K : (i + 1) * QK_K], True, w)
                for j in range(16):
                    s = np.float32(0.0)
                    for l in range(16):
                        s += w[16 * j + l]
                    sw[j] = s
                    scales[j] = make_qx_quants(
                        xb[16 * j : 16 * j + 16], 4, 1, w[16 * j : 16 * j + 16], L[16 * j : 16 * j + 16]
                    )
                d_block = make_qx_quants(scales, 32, 1, sw, Ls)
                for j in range(16):
                    _put_q3_scale(q, so, j, np.int32(Ls[j]))
                d_bits = f32_to_f16(d_block)
            else:
                max_scale = np.float32(0.0)
                amax = np.float32(0.0)
                for j in range(16):
                    sc = make_q3_quants(xb[16 * j : 16 * j + 16], 4, True, L[16 * j : 16 * j + 16])
                    scales[j] = sc
                    a = np.float32(abs(sc))
                    if a > amax:
                        amax = a
                        max_scale = sc
                if max_scale != 0:
                    iscale = np.float32(np.float32(-32.0) / max_scale)
                    for j in range(16):
                        l = nearest_int(iscale * scales[j])
                        l = ((l + 128) & 255) - 128  # int8_t l = nearest_int(...)
                        l = clampi(l, -32, 31) + 32
                        _put_q3_scale(q, so, j, l)
                    d_bits = f32_to_f16(np.float32(np.float32(1.0) / iscale))
                else:
                    d_bits = f32_to_f16(_ZERO)
            d = f16_to_f32(d_bits)
            for j in range(16):
                dd = d * np.float32(_q3_scale(q, so, j) - 32)
                if dd == 0:
                    continue
                for l in range(16):
                    e = 16 * j + l
                    L[e] = np.uint8(clampi(nearest_int(xb[e] / dd), -4, 3) + 4)
            for m in range(32):
                hm = 0
                for k in range(8):
                    e = 32 * k + m
                    if L[e] > 3:
                        hm |= 1 << k
                        L[e] -= 4
                q[o + Q3K_HMASK + m] = np.uint8(hm)
            _pack_2bit(L, q, o + Q3K_QS)
            wr16(q, o + Q3K_D, d_bits)


@njit(cache=True, nogil=True, error_model="numpy")
def _dequant_q3_k(q, y, r0, r1):
    _nrows, n = y.shape
    nb = n // QK_K
    for r in range(r0, r1):
        qr = q[r]
        yr = y[r]
        for i in range(nb):
            o = i * Q3K_SIZE
            d_all = f16_to_f32(rd16(qr, o + Q3K_D))
            for c in range(2):
                for s in range(4):
                    k = 4 * c + s  # hmask bit of these 32 elements
                    for h in range(2):
                        j = 8 * c + 2 * s + h
                        dl = d_all * np.float32(_q3_scale(qr, o + Q3K_SCALES, j) - 32)
                        base = _U(i * QK_K + 128 * c + 32 * s + 16 * h)
                        qo = _U(o + Q3K_QS + 32 * c + 16 * h)
                        ho = _U(o + Q3K_HMASK + 16 * h)
                        for l in range(16):
                            ul = _U(l)
                            v = (np.int32(qr[qo + ul]) >> (2 * s)) & 3
                            v -= (1 - ((np.int32(qr[ho + ul]) >> k) & 1)) << 2
                            yr[base + ul] = dl * np.float32(v)


# ------------------------------------------------------------------------------------- Q4_K / Q5_K


@njit(cache=True, error_model="numpy", inline="always")
def _get_scale_min_k4(q, so, j):
    if j < 4:
        return np.int32(q[so + j]) & 63, np.int32(q[so + j + 4]) & 63
    sc = (np.int32(q[so + j + 4]) & 0xF) | ((np.int32(q[so + j - 4]) >> 6) << 4)
    m = (np.int32(q[so + j + 4]) >> 4) | ((np.int32(q[so + j]) >> 6) << 4)
    return sc, m


@njit(cache=True, error_model="numpy")
def _q45_block(xb, qwb, has_im, nmax, rmin, rdelta, nstep, clamp_im, q, o, L, Laux, w, scales, mins, sw, Ls, Lm):
    """Scale search + 6-bit encoding + requantization of one Q4_K/Q5_K super-block.
    Writes d, dmin and the 12 scale bytes of the block at q[o]; leaves the final codes in L.
    Called, not inlined: numba's IR inlining of this block (with the searches inlined into it) took
    about 18 s of the kernel's compile; a call per super-block costs nothing measurable."""
    if has_im:
        _imatrix_weights(xb, qwb, True, w)
        for j in range(8):
            s = np.float32(0.0)
            for l in range(32):
                s += w[32 * j + l]
            sw[j] = s
            sc, mn = make_qkx3_quants(
                xb[32 * j : 32 * j + 32],
                w[32 * j : 32 * j + 32],
                nmax,
                -0.9,
                0.05,
                36,
                False,
                L[32 * j : 32 * j + 32],
                Laux,
            )
            scales[j] = sc
            mins[j] = mn
        d_block = make_qp_quants(scales, 63, sw, Ls)
        m_block = make_qp_quants(mins, 63, sw, Lm)
        if clamp_im:
            for j in range(8):
                if Ls[j] > 63:
                    Ls[j] = 63
                if Lm[j] > 63:
                    Lm[j] = 63
        d_bits = f32_to_f16(d_block)
        m_bits = f32_to_f16(m_block)
    else:
        max_scale = np.float32(0.0)
        max_min = np.float32(0.0)
        for j in range(8):
            s = np.float32(0.0)
            for l in range(32):
                s += xb[32 * j + l] * xb[32 * j + l]
            av_x = np.float32(np.sqrt(np.float32(s / np.float32(32.0))))
            for l in range(32):
                w[l] = av_x + np.float32(abs(xb[32 * j + l]))
            sc, mn = make_qkx2_quants(
                xb[32 * j : 32 * j + 32], w[:32], nmax, rmin, rdelta, nstep, False, L[32 * j : 32 * j + 32], Laux
            )
            scales[j] = sc
            mins[j] = mn
            if sc > max_scale:
                max_scale = sc
            if mn > max_min:
                max_min = mn
        inv_scale = np.float32(np.float32(63.0) / max_scale) if max_scale > 0 else _ZERO
        inv_min = np.float32(np.float32(63.0) / max_min) if max_min > 0 else _ZERO
        for j in range(8):
            ls = nearest_int(inv_scale * scales[j]) & 0xFF  # uint8 first, then MIN(63, .)
            lm = nearest_int(inv_min * mins[j]) & 0xFF
            Ls[j] = np.uint8(min(63, ls))
            Lm[j] = np.uint8(min(63, lm))
        d_bits = f32_to_f16(np.float32(max_scale / np.float32(63.0)))
        m_bits = f32_to_f16(np.float32(max_min / np.float32(63.0)))
    so = o + Q4K_SCALES
    for j in range(4):
        q[so + j] = Ls[j]
        q[so + j + 4] = Lm[j]
    for j in range(4, 8):
        ls = np.int32(Ls[j])
        lm = np.int32(Lm[j])
        q[so + j + 4] = np.uint8(((ls & 0xF) | ((lm & 0xF) << 4)) & 0xFF)
        q[so + j - 4] = np.uint8((np.int32(q[so + j - 4]) | ((ls >> 4) << 6)) & 0xFF)
        q[so + j] = np.uint8((np.int32(q[so + j]) | ((lm >> 4) << 6)) & 0xFF)
    wr16(q, o + Q4K_D, d_bits)
    wr16(q, o + Q4K_DMIN, m_bits)
    d = f16_to_f32(d_bits)
    dmin = f16_to_f32(m_bits)
    for j in range(8):
        sc, m = _get_scale_min_k4(q, so, j)
        dd = d * np.float32(sc)
        if dd == 0:
            continue
        dm = dmin * np.float32(m)
        for l in range(32):
            e = 32 * j + l
            L[e] = np.uint8(clampi(nearest_int((xb[e] + dm) / dd), 0, nmax))


@njit(cache=True, nogil=True, error_model="numpy")
def _quant_q45(x, qw, has_im, out, five, r0, r1):
    _nrows, n = x.shape
    nb = n // QK_K
    ts = Q5K_SIZE if five else Q4K_SIZE
    nmax = 31 if five else 15
    rmin = -0.5 if five else -1.0
    nstep = 15 if five else 20
    for r in range(r0, r1):
        L = np.empty(QK_K, np.uint8)
        Laux = np.empty(32, np.uint8)
        w = np.empty(QK_K, np.float32)
        scales = np.empty(8, np.float32)
        mins = np.empty(8, np.float32)
        sw = np.empty(8, np.float32)
        Ls = np.empty(8, np.uint8)
        Lm = np.empty(8, np.uint8)
        q = out[r]
        for i in range(nb):
            xb = x[r, i * QK_K : (i + 1) * QK_K]
            qwb = qw[i * QK_K : (i + 1) * QK_K] if has_im else qw
            o = i * ts
            _q45_block(xb, qwb, has_im, nmax, rmin, 0.1, nstep, five, q, o, L, Laux, w, scales, mins, sw, Ls, Lm)
            if five:
                for l in range(32):
                    hm = 0
                    for c in range(4):
                        e = 64 * c + l
                        l1 = np.int32(L[e])
                        l2 = np.int32(L[e + 32])
                        if l1 > 15:
                            l1 -= 16
                            hm |= 1 << (2 * c)
                        if l2 > 15:
                            l2 -= 16
                            hm |= 2 << (2 * c)
                        q[o + Q5K_QS + 32 * c + l] = np.uint8((l1 | (l2 << 4)) & 0xFF)
                    q[o + Q5K_QH + l] = np.uint8(hm)
            else:
                _pack_4bit(L, q, o + Q4K_QS)


@njit(cache=True, error_model="numpy", inline="always")
def _dequant_q45_row(qr, yr, nb, five):
    """One row of Q4_K (five=False) or Q5_K (five=True) blocks; inlined with a constant `five`."""
    ts = Q5K_SIZE if five else Q4K_SIZE
    qs_off = Q5K_QS if five else Q4K_QS
    for i in range(nb):
        o = i * ts
        d = f16_to_f32(rd16(qr, o + Q4K_D))
        dmin = f16_to_f32(rd16(qr, o + Q4K_DMIN))
        for c in range(4):
            sc1, m1i = _get_scale_min_k4(qr, o + Q4K_SCALES, 2 * c)
            sc2, m2i = _get_scale_min_k4(qr, o + Q4K_SCALES, 2 * c + 1)
            d1 = d * np.float32(sc1)
            m1 = dmin * np.float32(m1i)
            d2 = d * np.float32(sc2)
            m2 = dmin * np.float32(m2i)
            # unsigned indices: numba then skips its negative-index handling. The codes stay uint8
            # (each result cast back to np.uint8): numba widens integer arithmetic to 64 bits, the
            # casts let LLVM narrow it again, so the loop vectorizes 16 floats wide instead of 8.
            base = _U(i * QK_K + 64 * c)
            qo = _U(o + qs_off + 32 * c)
            ho = _U(o + Q5K_QH)
            if five:
                mk1 = np.uint8(1 << (2 * c))  # the hmask bits of these two sub-blocks
                mk2 = np.uint8(2 << (2 * c))
                for l in range(32):
                    ul = _U(l)
                    b = qr[qo + ul]
                    h = qr[ho + ul]
                    v1 = np.uint8(np.uint8(b & _LO4) | (_B16 if np.uint8(h & mk1) != _B0 else _B0))
                    v2 = np.uint8(np.uint8(b >> _B4) | (_B16 if np.uint8(h & mk2) != _B0 else _B0))
                    yr[base + ul] = d1 * np.float32(v1) - m1
                    yr[base + _U(32) + ul] = d2 * np.float32(v2) - m2
            else:
                for l in range(32):
                    ul = _U(l)
                    b = qr[qo + ul]
                    yr[base + ul] = d1 * np.float32(np.uint8(b & _LO4)) - m1
                    yr[base + _U(32) + ul] = d2 * np.float32(np.uint8(b >> _B4)) - m2


@njit(cache=True, nogil=True, error_model="numpy")
def _dequant_q4_k(q, y, r0, r1):
    nb = y.shape[1] // QK_K
    for r in range(r0, r1):
        _dequant_q45_row(q[r], y[r], nb, False)


@njit(cache=True, nogil=True, error_model="numpy")
def _dequant_q5_k(q, y, r0, r1):
    nb = y.shape[1] // QK_K
    for r in range(r0, r1):
        _dequant_q45_row(q[r], y[r], nb, True)


# ------------------------------------------------------------------------------------------- Q6_K


@njit(cache=True, nogil=True, error_model="numpy")
def _quant_q6_k(x, qw, has_im, out, r0, r1):
    _nrows, n = x.shape
    nb = n // QK_K
    for r in range(r0, r1):
        L = np.empty(QK_K, np.uint8)
        scales = np.empty(16, np.float32)
        S = np.empty(5 * QK_K + 9 * 16, np.float32)
        q = out[r]
        for i in range(nb):
            xb = x[r, i * QK_K : (i + 1) * QK_K]
            o = i * Q6K_SIZE
            max_scale = np.float32(0.0)
            max_abs = np.float32(0.0)
            # make_qx_quants(., 32, 1, qw or None, .) on the 16 groups at once
            make_qx_groups(xb, qw[i * QK_K : (i + 1) * QK_K] if has_im else qw, has_im, 16, 16, 32, L, scales, S)
            for j in range(16):
                sc = scales[j]
                a = np.float32(abs(sc))
                if a > max_abs:
                    max_abs = a
                    max_scale = sc
            if max_abs < np.float32(1e-15):
                for k in range(Q6K_SIZE):
                    q[o + k] = 0
                continue
            iscale = np.float32(np.float32(-128.0) / max_scale)
            d_bits = f32_to_f16(np.float32(np.float32(1.0) / iscale))
            d = f16_to_f32(d_bits)
            for j in range(16):
                s = min(127, nearest_int(iscale * scales[j]))
                s = ((s + 128) & 255) - 128  # stored as int8
                q[o + Q6K_SCALES + j] = np.uint8(s & 0xFF)
                dd = d * np.float32(s)
                if dd == 0:
                    continue
                for l in range(16):
                    e = 16 * j + l
                    L[e] = np.uint8(clampi(nearest_int(xb[e] / dd), -32, 31) + 32)
            for h in range(2):
                for l in range(32):
                    e = 128 * h + l
                    a0 = np.int32(L[e])
                    a1 = np.int32(L[e + 32])
                    a2 = np.int32(L[e + 64])
                    a3 = np.int32(L[e + 96])
                    q[o + Q6K_QL + 64 * h + l] = np.uint8(((a0 & 0xF) | ((a2 & 0xF) << 4)) & 0xFF)
                    q[o + Q6K_QL + 64 * h + 32 + l] = np.uint8(((a1 & 0xF) | ((a3 & 0xF) << 4)) & 0xFF)
                    q[o + Q6K_QH + 32 * h + l] = np.uint8(
                        ((a0 >> 4) | ((a1 >> 4) << 2) | ((a2 >> 4) << 4) | ((a3 >> 4) << 6)) & 0xFF
                    )
            wr16(q, o + Q6K_D, d_bits)


@njit(cache=True, nogil=True, error_model="numpy")
def _dequant_q6_k(q, y, r0, r1):
    _nrows, n = y.shape
    nb = n // QK_K
    for r in range(r0, r1):
        qr = q[r]
        yr = y[r]
        for i in range(nb):
            o = i * Q6K_SIZE
            d = f16_to_f32(rd16(qr, o + Q6K_D))
            for h in range(2):
                ql = o + Q6K_QL + 64 * h
                qh = o + Q6K_QH + 32 * h
                base = i * QK_K + 128 * h
                for half in range(2):
                    s0 = o + Q6K_SCALES + 8 * h + half
                    dl0 = d * np.float32(_s8(qr[s0]))
                    dl1 = d * np.float32(_s8(qr[s0 + 2]))
                    dl2 = d * np.float32(_s8(qr[s0 + 4]))
                    dl3 = d * np.float32(_s8(qr[s0 + 6]))
                    for l in range(16 * half, 16 * half + 16):
                        a = np.int32(qr[ql + l])
                        b = np.int32(qr[ql + l + 32])
                        hh = np.int32(qr[qh + l])
                        yr[base + l] = dl0 * np.float32(((a & 0xF) | ((hh & 3) << 4)) - 32)
                        yr[base + l + 32] = dl1 * np.float32(((b & 0xF) | (((hh >> 2) & 3) << 4)) - 32)
                        yr[base + l + 64] = dl2 * np.float32(((a >> 4) | (((hh >> 4) & 3) << 4)) - 32)
                        yr[base + l + 96] = dl3 * np.float32(((b >> 4) | (((hh >> 6) & 3) << 4)) - 32)


# ------------------------------------------------------------------------------------------- Q8_K


@njit(cache=True, nogil=True, error_model="numpy")
def _quant_q8_k(x, out, r0, r1):
    _nrows, n = x.shape
    nb = n // QK_K
    xb = x.view(np.uint32)
    for r in range(r0, r1):
        q = out[r]
        for i in range(nb):
            o = i * Q8K_SIZE
            # ggml: the first value of the largest |x| (NaN never wins). |x| compared as its bit pattern
            # (monotonic for non-negative floats, NaN patterns mapped to 0): an integer max the compiler
            # vectorizes, then one scan for its first position
            abits = np.uint32(0)
            for j in range(QK_K):
                a = xb[r, i * QK_K + j] & np.uint32(0x7FFFFFFF)
                a = a if a <= np.uint32(0x7F800000) else np.uint32(0)
                abits = max(abits, a)
            if abits == 0:
                for k in range(Q8K_SIZE):
                    q[o + k] = 0
                continue
            mx = np.float32(0.0)
            for j in range(QK_K):
                if xb[r, i * QK_K + j] & np.uint32(0x7FFFFFFF) == abits:
                    mx = x[r, i * QK_K + j]
                    break
            iscale = np.float32(np.float32(-127.0) / mx)
            for j in range(16):
                s = np.int32(0)
                for l in range(16):
                    v = min(127, nearest_int(iscale * x[r, i * QK_K + 16 * j + l]))
                    v = ((v + 128) & 255) - 128
                    q[o + Q8K_QS + 16 * j + l] = np.uint8(v & 0xFF)
                    s += v
                q[o + Q8K_BSUMS + 2 * j] = np.uint8(s & 0xFF)
                q[o + Q8K_BSUMS + 1 + 2 * j] = np.uint8((s >> 8) & 0xFF)
            b = f32_as_u32(np.float32(np.float32(1.0) / iscale))
            for k in range(4):
                q[o + Q8K_D + k] = np.uint8((b >> np.uint32(8 * k)) & np.uint32(0xFF))


@njit(cache=True, nogil=True, error_model="numpy")
def _dequant_q8_k(q, y, r0, r1):
    _nrows, n = y.shape
    nb = n // QK_K
    for r in range(r0, r1):
        qr = q[r]
        for i in range(nb):
            o = i * Q8K_SIZE
            b = (
                np.uint32(qr[o + Q8K_D])
                | (np.uint32(qr[o + Q8K_D + 1]) << np.uint32(8))
                | (np.uint32(qr[o + Q8K_D + 2]) << np.uint32(16))
                | (np.uint32(qr[o + Q8K_D + 3]) << np.uint32(24))
            )
            d = u32_as_f32(b)
            for j in range(QK_K):
                y[r, i * QK_K + j] = d * np.float32(_s8(qr[o + Q8K_QS + j]))


# ------------------------------------------------------------------------------------------- API


def _im(imatrix, n):
    if imatrix is None:
        return np.zeros(1, np.float32), False
    return np.ascontiguousarray(imatrix, dtype=np.float32).reshape(n), True


def _run_quant(kernel, x, imatrix, type_size, *extra):
    x = np.ascontiguousarray(x, dtype=np.float32)
    nrows, n = x.shape
    out = np.zeros((nrows, n // QK_K * type_size), np.uint8)
    im, has = _im(imatrix, n)
    run_rows(kernel, nrows, x, im, has, out, *extra, min_rows=min_rows(n, "quantize"))
    return out


def _run_dequant(kernel, q, n, *extra):
    q = np.ascontiguousarray(q, dtype=np.uint8)
    y = np.empty((q.shape[0], n), np.float32)
    run_rows(kernel, q.shape[0], q, y, *extra, min_rows=min_rows(n, "dequantize"))
    return y


def quantize_q2_k(x, imatrix=None):
    return _run_quant(_quant_q2_k, x, imatrix, Q2K_SIZE)


def dequantize_q2_k(q, n_per_row):
    return _run_dequant(_dequant_q2_k, q, n_per_row)


def quantize_q3_k(x, imatrix=None):
    return _run_quant(_quant_q3_k, x, imatrix, Q3K_SIZE)


def dequantize_q3_k(q, n_per_row):
    return _run_dequant(_dequant_q3_k, q, n_per_row)


def quantize_q4_k(x, imatrix=None):
    return _run_quant(_quant_q45, x, imatrix, Q4K_SIZE, False)


def dequantize_q4_k(q, n_per_row):
    return _run_dequant(_dequant_q4_k, q, n_per_row)


def quantize_q5_k(x, imatrix=None):
    return _run_quant(_quant_q45, x, imatrix, Q5K_SIZE, True)


def dequantize_q5_k(q, n_per_row):
    return _run_dequant(_dequant_q5_k, q, n_per_row)


def quantize_q6_k(x, imatrix=None):
    return _run_quant(_quant_q6_k, x, imatrix, Q6K_SIZE)


def dequantize_q6_k(q, n_per_row):
    return _run_dequant(_dequant_q6_k, q, n_per_row)


def quantize_q8_k(x, imatrix=None):
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.zeros((x.shape[0], x.shape[1] // QK_K * Q8K_SIZE), np.uint8)
    run_rows(_quant_q8_k, x.shape[0], x, out, min_rows=min_rows(x.shape[1], "quantize"))
    return out


def dequantize_q8_k(q, n_per_row):
    return _run_dequant(_dequant_q8_k, q, n_per_row)


# The implementations this module defines (quantlab.formats.registry.register; a format missing here
# fails tests/test_registry.py).
register("fast", "Q2_K", quantize=quantize_q2_k, dequantize=dequantize_q2_k)
register("fast", "Q3_K", quantize=quantize_q3_k, dequantize=dequantize_q3_k)
register("fast", "Q4_K", quantize=quantize_q4_k, dequantize=dequantize_q4_k)
register("fast", "Q5_K", quantize=quantize_q5_k, dequantize=dequantize_q5_k)
register("fast", "Q6_K", quantize=quantize_q6_k, dequantize=dequantize_q6_k)
register("fast", "Q8_K", quantize=quantize_q8_k, dequantize=dequantize_q8_k)
