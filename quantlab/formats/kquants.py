"""The K-quants of ggml: Q2_K Q3_K Q4_K Q5_K Q6_K (weights) and Q8_K (activations) — numpy reference.

A K-quant works on SUPER-BLOCKS of 256 weights. A super-block is cut into 16 sub-blocks of 16 weights
(Q2_K, Q3_K, Q6_K) or 8 sub-blocks of 32 (Q4_K, Q5_K). Every sub-block gets its own scale (and for
Q2_K/Q4_K/Q5_K its own min), but those per-sub-block numbers are themselves quantized to 4, 6 or 8 bits
against ONE or TWO float16 numbers per super-block (``d`` and ``dmin``). Two levels of scales: that is
how ~4.5 bits per weight buys almost the accuracy of a float scale for every 32 weights.

Dequantization, always computed in this order (float32)::

    Q2_K, Q4_K, Q5_K:   y = (d * sc[j]) * q  -  (dmin * m[j])        q >= 0, j = sub-block
    Q3_K, Q6_K:         y = (d * sc[j]) * q                           q signed, sc signed
    Q8_K:               y = d * q                                     d is a float32

How the codes are chosen (spec section 5). Without an imatrix (what ``quantize_row_X_ref`` does):

1. per sub-block, a scale search from :mod:`quantlab.formats._search` gives a float scale (+ min) and
   codes: ``make_qkx2_quants`` for Q2_K/Q4_K/Q5_K, ``make_q3_quants`` for Q3_K, ``make_qx_quants``
   for Q6_K;
2. the largest scale of the super-block defines ``d`` (e.g. ``max_scale/63`` for Q4_K) and every
   sub-block scale becomes a small integer ``round(scale/d)``; same for the mins;
3. ``d``/``dmin`` are rounded to float16, and every weight is re-quantized against the scale that will
   actually be applied, ``d_fp16 * sc`` (a sub-block whose applied scale is 0 keeps the codes of
   step 1).

With an imatrix the searches are weighted by ``imatrix[j] * sqrt(sigma2 + x_j**2)`` and the sub-block
scales are quantized by a search of their own (``make_qp_quants``/``make_qx_quants``).

The byte layout of each type is drawn in the docstring of its ``quantize_`` function.
"""

from __future__ import annotations

import numpy as np

from . import _numerics as nm
from ._numerics import nearest_int
from ._search import (
    make_q3_quants,
    make_qkx2_quants,
    make_qkx3_quants,
    make_qp_quants,
    make_qx_quants,
    running_max,
    signed_absmax,
)
from .registry import register

F32 = np.float32
QK_K = 256

__all__ = [
    f"{op}_{k}"
    for k in ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q8_k")
    for op in ("quantize", "dequantize", "inspect")
]


# ----------------------------------------------------------------------------------------------------
# helpers shared by the K types
# ----------------------------------------------------------------------------------------------------


def _superblocks(x, imatrix):
    """(nrows, n) -> x as (nrows*n/256, 256) and the matching imatrix slice of every super-block
    (ggml reuses the same per-column imatrix for every row), or None."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    nrows, n = x.shape
    xb = x.reshape(-1, QK_K)
    if imatrix is None:
        return xb, None
    qw = np.broadcast_to(np.asarray(imatrix, np.float32).reshape(1, n // QK_K, QK_K), (nrows, n // QK_K, QK_K)).reshape(
        -1, QK_K
    )
    return xb, qw


def _f16(v):
    """float32 -> (fp16 bits as uint16, the float32 value they decode to)."""
    bits = nm.f16_bits(v)
    return bits, nm.from_f16_bits(bits)


def _put16(out, off, bits):
    out[:, off : off + 2] = np.asarray(bits, dtype="<u2").reshape(-1, 1).view(np.uint8)


def _get16(q, off):
    return nm.from_f16_bits(np.ascontiguousarray(q[:, off : off + 2]).view("<u2")[:, 0])


def _seqsum_sq(xb):
    """sum of x*x over the last axis, sequential like C."""
    s = np.zeros(xb.shape[:-1], np.float32)
    for i in range(xb.shape[-1]):
        s = s + xb[..., i] * xb[..., i]
    return s


def _seqsum(v):
    s = np.zeros(v.shape[:-1], np.float32)
    for i in range(v.shape[-1]):
        s = s + v[..., i]
    return s


def _imatrix_weights(xb, qw, doubled):
    """The imatrix weights of Q2_K..Q5_K: qw * sqrt(sigma2 + x**2), sigma2 = (2*)sum(x**2)/256 per
    super-block (Q2_K does not double it)."""
    s = _seqsum_sq(xb)
    sigma2 = (F32(2) * s if doubled else s) / F32(QK_K)
    return qw * np.sqrt(sigma2[:, None] + xb * xb)


def _requant(x, L, dd, dm, lo, hi):
    """Re-quantize each sub-block against the scale really applied (fp16 d times the integer sub-scale):
    L = clamp(rint((x + dm)/dd), lo, hi) where dd != 0; sub-blocks with dd == 0 keep their codes.
    x, L: (NB, nsub, size); dd, dm: (NB, nsub) or dm None (symmetric types: rint(x/dd))."""
    with np.errstate(all="ignore"):
        v = x if dm is None else x + dm[..., None]
        l = np.clip(nearest_int(v / dd[..., None]), lo, hi)
    return np.where((dd != 0)[..., None], l, L)


def _pack_2bit(L):
    """Codes (NB, 256), values 0..3 -> 64 bytes: element 128c + 32s + l is bits 2s..2s+1 of byte 32c + l."""
    L4 = L.astype(np.int32).reshape(-1, 2, 4, 32)
    qs = L4[:, :, 0] | (L4[:, :, 1] << 2) | (L4[:, :, 2] << 4) | (L4[:, :, 3] << 6)
    return (qs & 0xFF).astype(np.uint8).reshape(-1, 64)


def _unpack_2bit(qs):
    q = qs.astype(np.int32).reshape(-1, 2, 1, 32)
    return ((q >> (2 * np.arange(4).reshape(1, 1, 4, 1))) & 3).reshape(-1, 256)


def _pack_4bit(L):
    """Codes (NB, 256), values 0..15 -> 128 bytes: element 64c + l is the low nibble of byte 32c + l,
    element 64c + 32 + l the high nibble."""
    L2 = L.astype(np.int32).reshape(-1, 4, 2, 32)
    return ((L2[:, :, 0] | (L2[:, :, 1] << 4)) & 0xFF).astype(np.uint8).reshape(-1, 128)


def _unpack_4bit(qs):
    q = qs.astype(np.int32).reshape(-1, 4, 1, 32)
    return np.concatenate([q & 0xF, q >> 4], axis=2).reshape(-1, 256)


def _pack_scale_min_k4(ls, lm):
    """Eight 6-bit scales and mins -> 12 bytes (spec 2.3), with C's uint8 arithmetic:
    j < 4:  S[j] = ls_j,  S[j+4] = lm_j;   j >= 4: S[j+4] = ls_j & 15 | (lm_j & 15) << 4,
    the top 2 bits of ls_j go to bits 6-7 of S[j-4], those of lm_j to bits 6-7 of S[j]."""
    ls = ls.astype(np.int32)
    lm = lm.astype(np.int32)
    S = np.zeros((ls.shape[0], 12), np.int32)
    S[:, 0:4] = ls[:, 0:4]
    S[:, 4:8] = lm[:, 0:4]
    S[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)
    S[:, 0:4] |= (ls[:, 4:8] >> 4) << 6
    S[:, 4:8] |= (lm[:, 4:8] >> 4) << 6
    return (S & 0xFF).astype(np.uint8)


def _unpack_scale_min_k4(S):
    """12 bytes -> (sc[8], m[8]), ggml's get_scale_min_k4."""
    S = S.astype(np.int32)
    sc = np.empty((S.shape[0], 8), np.int32)
    m = np.empty((S.shape[0], 8), np.int32)
    sc[:, :4] = S[:, 0:4] & 63
    m[:, :4] = S[:, 4:8] & 63
    sc[:, 4:] = (S[:, 8:12] & 0xF) | ((S[:, 0:4] >> 6) << 4)
    m[:, 4:] = (S[:, 8:12] >> 4) | ((S[:, 4:8] >> 6) << 4)
    return sc, m


def _pack_q3_scales(l):
    """Sixteen 6-bit values (0..63) -> 12 bytes (spec 2.4): low nibble of scale j in S[j] (j < 8) or the
    high nibble of S[j-8]; its top 2 bits at bit 2*(j//4) of S[8 + j%4]."""
    l = l.astype(np.int32)
    lo = l & 0xF
    hi = l >> 4
    S = np.zeros((l.shape[0], 12), np.int32)
    S[:, 0:8] = lo[:, 0:8] | (lo[:, 8:16] << 4)
    for q in range(4):
        S[:, 8:12] |= hi[:, 4 * q : 4 * q + 4] << (2 * q)
    return (S & 0xFF).astype(np.uint8)


def _unpack_q3_scales(S):
    """12 bytes -> sixteen stored values 0..63 (the applied scale is value - 32)."""
    S = S.astype(np.int32)
    lo = np.concatenate([S[:, 0:8] & 0xF, S[:, 0:8] >> 4], axis=1)
    hi = np.concatenate([(S[:, 8:12] >> (2 * q)) & 3 for q in range(4)], axis=1)
    return lo | (hi << 4)


def _as_int8(i):
    return ((np.asarray(i).astype(np.int64) + 128) & 255) - 128


def _dequant_subblocks(codes, sub, n_per_row, d, sc, dmin=None, m=None):
    """y = (d * sc_j) * q  [- (dmin * m_j)] for sub-block j of ``sub`` codes: every K-quant's dequantization."""
    dl = d[:, None] * sc.astype(np.float32)
    y = dl[:, :, None] * codes.reshape(-1, 256 // sub, sub).astype(np.float32)
    if dmin is not None:
        y = y - (dmin[:, None] * m.astype(np.float32))[:, :, None]
    return y.reshape(-1, n_per_row)


def _inspect_with_mins(d, dmin, sc, m, codes, sub, qmax):
    """inspect() of the formats with sub-block scales and mins (Q2_K, Q4_K, Q5_K), one block."""
    return {
        "d": float(d[0]),
        "dmin": float(dmin[0]),
        "scales": sc[0],
        "mins": m[0],
        "scales_applied": (d[0] * sc[0].astype(np.float32)).astype(np.float32),
        "mins_applied": (dmin[0] * m[0].astype(np.float32)).astype(np.float32),
        "codes": codes[0],
        "sub_block_size": sub,
        "formula": f"y = (d*scales[j])*q - (dmin*mins[j]), j = i // {sub}, q in 0..{qmax}",
    }


def _rows(out, nrows):
    return np.ascontiguousarray(out).reshape(nrows, -1)


# ----------------------------------------------------------------------------------------------------
# Q2_K
# ----------------------------------------------------------------------------------------------------


def quantize_q2_k(x, imatrix=None):
    """Q2_K: 256 weights in 84 bytes (2.625 bits per weight). 16 sub-blocks of 16 weights.

    ::

        byte  0 .. 15   scales[16]  sub-block b: low nibble = 4-bit scale sc_b, high nibble = 4-bit min m_b
        byte 16 .. 79   qs[64]      2-bit codes: element 128c + 32s + l is bits 2s..2s+1 of qs[32c + l]
        byte 80 .. 81   d           fp16, the scale of the scales
        byte 82 .. 83   dmin        fp16, the scale of the mins

        y = (d * sc_b) * q - (dmin * m_b),   q in 0..3

    No imatrix: make_qkx2_quants(16, nmax 3, weights |x|, rmin -0.5, rdelta 0.1, 15 steps, absolute
    error); sc_b = round(15 * scale_b / max scale), d = max scale / 15 (same for the mins).
    Imatrix: make_qkx3_quants(weights qw*sqrt(sigma2 + x**2), -0.9, 0.05, 36 steps, squared error),
    then make_qp_quants(nmax 15) picks d and the 4-bit sub-scales (and dmin / the mins).
    """
    nrows = x.shape[0]
    xb, qw = _superblocks(x, imatrix)
    NB = xb.shape[0]
    xs = xb.reshape(-1, 16)
    with np.errstate(all="ignore"):
        if qw is None:
            sc, mn, L = make_qkx2_quants(xs, np.abs(xs), 3, -0.5, 0.1, 15, True)
            sc, mn = sc.reshape(NB, 16), mn.reshape(NB, 16)
            max_scale, max_min = running_max(sc), running_max(mn)
            ls = np.where(max_scale[:, None] > 0, nearest_int((F32(15) / max_scale)[:, None] * sc), 0)
            lm = np.where(max_min[:, None] > 0, nearest_int((F32(15) / max_min)[:, None] * mn), 0)
            packed = ((ls & 0xFF) | (lm << 4)) & 0xFF
            d_bits, d = _f16(np.where(max_scale > 0, max_scale / F32(15), F32(0)))
            m_bits, dmin = _f16(np.where(max_min > 0, max_min / F32(15), F32(0)))
        else:
            w = _imatrix_weights(xb, qw, doubled=False).reshape(-1, 16)
            sw = _seqsum(w).reshape(NB, 16)
            sc, mn, L = make_qkx3_quants(xs, w, 3, -0.9, 0.05, 36, False)
            dm, Ls = make_qp_quants(sc.reshape(NB, 16), 15, sw)
            mm, Lm = make_qp_quants(mn.reshape(NB, 16), 15, sw)
            packed = (Ls.astype(np.int32) | (Lm.astype(np.int32) << 4)) & 0xFF
            d_bits, d = _f16(dm)
            m_bits, dmin = _f16(mm)
        dd = d[:, None] * (packed & 0xF).astype(np.float32)
        dmm = dmin[:, None] * (packed >> 4).astype(np.float32)
    L = _requant(xb.reshape(NB, 16, 16), L.reshape(NB, 16, 16).astype(np.int32), dd, dmm, 0, 3)
    out = np.zeros((NB, 84), np.uint8)
    out[:, 0:16] = packed
    out[:, 16:80] = _pack_2bit(L.reshape(NB, 256))
    _put16(out, 80, d_bits)
    _put16(out, 82, m_bits)
    return _rows(out, nrows)


def _q2_k_fields(q):
    d, dmin = _get16(q, 80), _get16(q, 82)
    sc = (q[:, 0:16] & 0xF).astype(np.int32)
    m = (q[:, 0:16] >> 4).astype(np.int32)
    return d, dmin, sc, m, _unpack_2bit(q[:, 16:80])


def dequantize_q2_k(q, n_per_row):
    d, dmin, sc, m, codes = _q2_k_fields(q.reshape(-1, 84))
    return _dequant_subblocks(codes, 16, n_per_row, d, sc, dmin, m)


def inspect_q2_k(block):
    return _inspect_with_mins(*_q2_k_fields(np.asarray(block, np.uint8).reshape(1, 84)), 16, 3)


# ----------------------------------------------------------------------------------------------------
# Q3_K
# ----------------------------------------------------------------------------------------------------


def quantize_q3_k(x, imatrix=None):
    """Q3_K: 256 weights in 110 bytes (3.4375 bits per weight). 16 sub-blocks of 16 weights.

    ::

        byte   0 ..  31  hmask[32]   high bit of element e: bit (e // 32) of hmask[e % 32]
        byte  32 ..  95  qs[64]      low 2 bits, laid out as in Q2_K
        byte  96 .. 107  scales[12]  sixteen 6-bit values s_j (stored + 32): low nibbles in bytes 0-7
                                     (j < 8 low half, j >= 8 high half), top 2 bits in bytes 8-11
        byte 108 .. 109  d           fp16

        q = low2 - (high bit ? 0 : 4)  in -4..3,    y = (d * (s_j - 32)) * q

    No imatrix: make_q3_quants (coordinate descent, weights x*x) per sub-block; the scale with the largest
    magnitude maps to -32. Imatrix: make_qx_quants(nmax 4, weights qw*sqrt(2*mean(x**2) + x**2)), then
    make_qx_quants(nmax 32) over the 16 scales gives d and the 6-bit values directly.
    """
    nrows = x.shape[0]
    xb, qw = _superblocks(x, imatrix)
    NB = xb.shape[0]
    xs = xb.reshape(-1, 16)
    with np.errstate(all="ignore"):
        if qw is None:
            sc, L = make_q3_quants(xs, 4, True)
            sc = sc.reshape(NB, 16)
            max_scale, _ = signed_absmax(sc)
            live = max_scale != 0
            iscale = F32(-32) / max_scale
            l = _as_int8(nearest_int(iscale[:, None] * sc))  # C: int8_t l = nearest_int(...)
            l = np.clip(l, -32, 31) + 32
            stored = np.where(live[:, None], l, 0)
            S = np.where(live[:, None], _pack_q3_scales(stored), 0).astype(np.uint8)
            d_bits, d = _f16(np.where(live, F32(1) / iscale, F32(0)))
        else:
            w = _imatrix_weights(xb, qw, doubled=True).reshape(-1, 16)
            sw = _seqsum(w).reshape(NB, 16)
            sc, L = make_qx_quants(xs, 4, 1, w)
            d_block, Ls = make_qx_quants(sc.reshape(NB, 16), 32, 1, sw)
            S = _pack_q3_scales(Ls)
            d_bits, d = _f16(d_block)
        s = _unpack_q3_scales(S) - 32
        dd = d[:, None] * s.astype(np.float32)
    # codes are kept offset by +4 (0..7); a sub-block with applied scale 0 keeps the search's codes
    L = _requant(xb.reshape(NB, 16, 16), L.reshape(NB, 16, 16).astype(np.int32) - 4, dd, None, -4, 3) + 4
    L = L.reshape(NB, 256)
    high = L > 3
    hmask = np.zeros((NB, 32), np.int32)
    for k in range(8):  # element e = 32k + m -> bit k of hmask[m]
        hmask |= high[:, 32 * k : 32 * k + 32].astype(np.int32) << k
    low = np.where(high, L - 4, L)
    out = np.zeros((NB, 110), np.uint8)
    out[:, 0:32] = hmask
    out[:, 32:96] = _pack_2bit(low)
    out[:, 96:108] = S
    _put16(out, 108, d_bits)
    return _rows(out, nrows)


def _q3_k_fields(q):
    d = _get16(q, 108)
    s = _unpack_q3_scales(q[:, 96:108])
    low = _unpack_2bit(q[:, 32:96])
    hm = q[:, 0:32].astype(np.int32)
    high = np.concatenate([(hm >> k) & 1 for k in range(8)], axis=1)
    return d, s, low - np.where(high == 1, 0, 4)


def dequantize_q3_k(q, n_per_row):
    d, s, codes = _q3_k_fields(q.reshape(-1, 110))
    return _dequant_subblocks(codes, 16, n_per_row, d, s - 32)


def inspect_q3_k(block):
    b = np.asarray(block, np.uint8).reshape(1, 110)
    d, s, codes = _q3_k_fields(b)
    return {
        "d": float(d[0]),
        "scales_stored": s[0],
        "scales": s[0] - 32,
        "scales_applied": (d[0] * (s[0] - 32).astype(np.float32)).astype(np.float32),
        "codes": codes[0],
        "sub_block_size": 16,
        "formula": "y = (d*scales[j])*q, j = i // 16, q in -4..3, scales = stored - 32",
    }


# ----------------------------------------------------------------------------------------------------
# Q4_K and Q5_K (same scales, 4 or 5 bit codes)
# ----------------------------------------------------------------------------------------------------


def _q45_scales(xb, qw, nmax, rmin, rdelta, nstep, clamp_imatrix):
    """Sub-block search + 6-bit scale/min encoding shared by Q4_K and Q5_K.
    Returns (scales bytes (NB,12), d bits, d, dmin bits, dmin, codes (NB,256) after requantization)."""
    NB = xb.shape[0]
    xs = xb.reshape(-1, 32)
    with np.errstate(all="ignore"):
        if qw is None:
            av_x = np.sqrt(_seqsum_sq(xs) / F32(32))
            w = av_x[:, None] + np.abs(xs)
            sc, mn, L = make_qkx2_quants(xs, w, nmax, rmin, rdelta, nstep, False)
            sc, mn = sc.reshape(NB, 8), mn.reshape(NB, 8)
            max_scale, max_min = running_max(sc), running_max(mn)
            inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0))
            inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0))
            # uint8_t ls = nearest_int(...): the int wraps to a byte BEFORE the MIN(63, .) clamp
            ls = np.minimum(63, nearest_int(inv_scale[:, None] * sc) & 0xFF)
            lm = np.minimum(63, nearest_int(inv_min[:, None] * mn) & 0xFF)
            d_bits, d = _f16(max_scale / F32(63))
            m_bits, dmin = _f16(max_min / F32(63))
        else:
            w = _imatrix_weights(xb, qw, doubled=True).reshape(-1, 32)
            sw = _seqsum(w).reshape(NB, 8)
            sc, mn, L = make_qkx3_quants(xs, w, nmax, -0.9, 0.05, 36, False)
            d_block, ls = make_qp_quants(sc.reshape(NB, 8), 63, sw)
            m_block, lm = make_qp_quants(mn.reshape(NB, 8), 63, sw)
            if clamp_imatrix:  # Q5_K clamps to 63 here, Q4_K does not
                ls, lm = np.minimum(63, ls), np.minimum(63, lm)
            d_bits, d = _f16(d_block)
            m_bits, dmin = _f16(m_block)
        S = _pack_scale_min_k4(ls, lm)
        s_dec, m_dec = _unpack_scale_min_k4(S)  # requantization uses the scales as stored
        dd = d[:, None] * s_dec.astype(np.float32)
        dm = dmin[:, None] * m_dec.astype(np.float32)
    L = _requant(xb.reshape(NB, 8, 32), L.reshape(NB, 8, 32).astype(np.int32), dd, dm, 0, nmax)
    return S, d_bits, m_bits, L.reshape(NB, 256)


def quantize_q4_k(x, imatrix=None):
    """Q4_K: 256 weights in 144 bytes (4.5 bits per weight). 8 sub-blocks of 32 weights.

    ::

        byte  0 ..   1  d           fp16, scale of the sub-block scales
        byte  2 ..   3  dmin        fp16, scale of the sub-block mins
        byte  4 ..  15  scales[12]  eight 6-bit scales sc_j and eight 6-bit mins m_j:
                                      S[0..3]  = sc_0..3 (bits 0-5) | top 2 bits of sc_4..7 (bits 6-7)
                                      S[4..7]  = m_0..3  (bits 0-5) | top 2 bits of m_4..7  (bits 6-7)
                                      S[8..11] = low 4 bits of sc_4..7 | low 4 bits of m_4..7 << 4
        byte 16 .. 143  qs[128]     4-bit codes: element 64c + l = low nibble of qs[32c + l],
                                    element 64c + 32 + l = high nibble

        y = (d * sc_j) * q - (dmin * m_j),   j = i // 32,  q in 0..15

    No imatrix: weights av|x| + |x| (av = rms of the sub-block), make_qkx2_quants(nmax 15, rmin -1,
    rdelta 0.1, 20 steps); sc_j = min(63, round(63*scale_j/max scale)), d = max scale / 63.
    Imatrix: make_qkx3_quants(qw*sqrt(2*mean(x**2) + x**2), -0.9, 0.05, 36 steps) and make_qp_quants(63).
    """
    return _quantize_q45_k(x, imatrix, five=False)


def _quantize_q45_k(x, imatrix, five):
    """Q4_K (five=False) or Q5_K: the shared scale search, then the layout of each."""
    nrows = x.shape[0]
    xb, qw = _superblocks(x, imatrix)
    NB = xb.shape[0]
    if five:
        S, d_bits, m_bits, L = _q45_scales(xb, qw, 31, -0.5, 0.1, 15, clamp_imatrix=True)
    else:
        S, d_bits, m_bits, L = _q45_scales(xb, qw, 15, -1.0, 0.1, 20, clamp_imatrix=False)
    out = np.zeros((NB, 176 if five else 144), np.uint8)
    _put16(out, 0, d_bits)
    _put16(out, 2, m_bits)
    out[:, 4:16] = S
    if five:
        L4 = L.reshape(NB, 4, 2, 32)
        high = (L4 > 15).astype(np.int32)
        qh = np.zeros((NB, 32), np.int32)
        for c in range(4):
            qh |= high[:, c, 0] << (2 * c)
            qh |= high[:, c, 1] << (2 * c + 1)
        out[:, 16:48] = qh
        L = np.where(L > 15, L - 16, L)
    out[:, -128:] = _pack_4bit(L)
    return _rows(out, nrows)


def _q4_k_fields(q):
    d, dmin = _get16(q, 0), _get16(q, 2)
    sc, m = _unpack_scale_min_k4(q[:, 4:16])
    return d, dmin, sc, m, _unpack_4bit(q[:, 16:144])


def dequantize_q4_k(q, n_per_row):
    d, dmin, sc, m, codes = _q4_k_fields(q.reshape(-1, 144))
    return _dequant_subblocks(codes, 32, n_per_row, d, sc, dmin, m)


def inspect_q4_k(block):
    return _inspect_with_mins(*_q4_k_fields(np.asarray(block, np.uint8).reshape(1, 144)), 32, 15)


def quantize_q5_k(x, imatrix=None):
    """Q5_K: 256 weights in 176 bytes (5.5 bits per weight). 8 sub-blocks of 32 weights.

    ::

        byte  0 ..   1  d           fp16
        byte  2 ..   3  dmin        fp16
        byte  4 ..  15  scales[12]  as Q4_K
        byte 16 ..  47  qh[32]      5th bit: element 64c + l -> bit 2c of qh[l],
                                             element 64c + 32 + l -> bit 2c+1 of qh[l]
        byte 48 .. 175  qs[128]     low 4 bits, laid out as in Q4_K

        y = (d * sc_j) * q - (dmin * m_j),   q in 0..31

    As Q4_K with nmax 31 and, without imatrix, rmin -0.5, rdelta 0.1, 15 steps.
    """
    return _quantize_q45_k(x, imatrix, five=True)


def _q5_k_fields(q):
    d, dmin = _get16(q, 0), _get16(q, 2)
    sc, m = _unpack_scale_min_k4(q[:, 4:16])
    low = _unpack_4bit(q[:, 48:176]).reshape(-1, 4, 2, 32)
    qh = q[:, 16:48].astype(np.int32)
    for c in range(4):
        low[:, c, 0] += ((qh >> (2 * c)) & 1) * 16
        low[:, c, 1] += ((qh >> (2 * c + 1)) & 1) * 16
    return d, dmin, sc, m, low.reshape(-1, 256)


def dequantize_q5_k(q, n_per_row):
    d, dmin, sc, m, codes = _q5_k_fields(q.reshape(-1, 176))
    return _dequant_subblocks(codes, 32, n_per_row, d, sc, dmin, m)


def inspect_q5_k(block):
    return _inspect_with_mins(*_q5_k_fields(np.asarray(block, np.uint8).reshape(1, 176)), 32, 31)


# ----------------------------------------------------------------------------------------------------
# Q6_K
# ----------------------------------------------------------------------------------------------------


def quantize_q6_k(x, imatrix=None):
    """Q6_K: 256 weights in 210 bytes (6.5625 bits per weight). 16 sub-blocks of 16 weights.

    ::

        byte   0 .. 127  ql[128]     low 4 bits     } for half h (elements 128h..128h+127), l in 0..31,
        byte 128 .. 191  qh[64]      high 2 bits    } QL = ql + 64h, QH = qh + 32h:
                                       element 128h + l      = QL[l] & 15     | (QH[l] >> 0 & 3) << 4
                                       element 128h + 32 + l = QL[l+32] & 15  | (QH[l] >> 2 & 3) << 4
                                       element 128h + 64 + l = QL[l] >> 4     | (QH[l] >> 4 & 3) << 4
                                       element 128h + 96 + l = QL[l+32] >> 4  | (QH[l] >> 6 & 3) << 4
        byte 192 .. 207  scales[16]  int8 sub-block scales
        byte 208 .. 209  d           fp16

        y = (d * scales_j) * (q - 32),   j = i // 16,  q in 0..63

    Search: make_qx_quants(nmax 32) per sub-block, weights x*x (no imatrix) or the raw imatrix values;
    the scale of largest magnitude maps to -128; a super-block whose scales are all ~0 is all zero bytes.
    """
    nrows = x.shape[0]
    xb, qw = _superblocks(x, imatrix)
    NB = xb.shape[0]
    xs = xb.reshape(-1, 16)
    with np.errstate(all="ignore"):
        sc, L = make_qx_quants(xs, 32, 1, None if qw is None else qw.reshape(-1, 16))
        sc = sc.reshape(NB, 16)
        max_scale, max_abs = signed_absmax(sc)
        zero = max_abs < F32(1e-15)
        iscale = F32(-128) / max_scale
        d_bits, d = _f16(F32(1) / iscale)
        s8 = _as_int8(np.minimum(127, nearest_int(iscale[:, None] * sc)))
        dd = d[:, None] * s8.astype(np.float32)
    L = _requant(xb.reshape(NB, 16, 16), L.reshape(NB, 16, 16).astype(np.int32) - 32, dd, None, -32, 31)
    L = (L + 32).reshape(NB, 2, 4, 32)  # element 128h + 32k + l
    lo = L & 0xF
    ql = np.concatenate([lo[:, :, 0] | (lo[:, :, 2] << 4), lo[:, :, 1] | (lo[:, :, 3] << 4)], axis=2)
    hi = L >> 4
    qh = hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)
    out = np.zeros((NB, 210), np.uint8)
    out[:, 0:128] = (ql & 0xFF).reshape(NB, 128)
    out[:, 128:192] = (qh & 0xFF).reshape(NB, 64)
    out[:, 192:208] = (s8 & 0xFF).astype(np.uint8)
    _put16(out, 208, d_bits)
    out[zero] = 0
    return _rows(out, nrows)


def _q6_k_fields(q):
    d = _get16(q, 208)
    sc = q[:, 192:208].view(np.int8).astype(np.int32)
    ql = q[:, 0:128].astype(np.int32).reshape(-1, 2, 2, 32)  # (half, [l, l+32], l)
    qh = q[:, 128:192].astype(np.int32).reshape(-1, 2, 1, 32)
    lo = np.concatenate([ql & 0xF, ql >> 4], axis=2)  # k = 0, 1 (low nibbles), 2, 3 (high)
    hi = (qh >> (2 * np.arange(4).reshape(1, 1, 4, 1))) & 3
    return d, sc, (lo | (hi << 4)).reshape(-1, 256) - 32


def dequantize_q6_k(q, n_per_row):
    d, sc, codes = _q6_k_fields(q.reshape(-1, 210))
    return _dequant_subblocks(codes, 16, n_per_row, d, sc)


def inspect_q6_k(block):
    d, sc, codes = _q6_k_fields(np.asarray(block, np.uint8).reshape(1, 210))
    return {
        "d": float(d[0]),
        "scales": sc[0],
        "scales_applied": (d[0] * sc[0].astype(np.float32)).astype(np.float32),
        "codes": codes[0],
        "sub_block_size": 16,
        "formula": "y = (d*scales[j])*q, j = i // 16, q in -32..31",
    }


# ----------------------------------------------------------------------------------------------------
# Q8_K
# ----------------------------------------------------------------------------------------------------


def quantize_q8_k(x, imatrix=None):
    """Q8_K: 256 values in 292 bytes — the activation-side partner of the K-quants in dot products.

    ::

        byte   0 ..   3  d          float32 (not fp16), may be negative
        byte   4 .. 259  qs[256]    int8 codes
        byte 260 .. 291  bsums[16]  int16, the sum of each 16 consecutive codes (speeds up dot products)

        y = d * q

    The value of largest magnitude (with its sign) maps to -127: d = -max/127, q = min(127, round(x/d)).
    An all-zero block is all zero bytes (ggml leaves bsums unwritten there; we write zeros).
    """
    nrows = x.shape[0]
    xb, _ = _superblocks(x, None)
    NB = xb.shape[0]
    with np.errstate(all="ignore"):
        mx, amax = signed_absmax(xb)
        zero = amax == 0
        iscale = F32(-127) / mx
        q = _as_int8(np.minimum(127, nearest_int(iscale[:, None] * xb)))
        d = (F32(1) / iscale).astype(np.float32)
    q = np.where(zero[:, None], 0, q)
    d = np.where(zero, F32(0), d).astype(np.float32)
    bsums = q.reshape(NB, 16, 16).sum(axis=2).astype(np.int16)  # integer sums: order is irrelevant
    out = np.zeros((NB, 292), np.uint8)
    out[:, 0:4] = d.astype("<f4").reshape(-1, 1).view(np.uint8)
    out[:, 4:260] = q.astype(np.int8).view(np.uint8)
    out[:, 260:292] = bsums.astype("<i2").view(np.uint8).reshape(NB, 32)
    return _rows(out, nrows)


def _q8_k_fields(q):
    d = np.ascontiguousarray(q[:, 0:4]).view("<f4")[:, 0].astype(np.float32)
    qs = q[:, 4:260].view(np.int8).astype(np.int32)
    bsums = np.ascontiguousarray(q[:, 260:292]).view("<i2").astype(np.int32)
    return d, qs, bsums


def dequantize_q8_k(q, n_per_row):
    d, qs, _ = _q8_k_fields(q.reshape(-1, 292))
    return (d[:, None] * qs.astype(np.float32)).reshape(-1, n_per_row)


def inspect_q8_k(block):
    d, qs, bsums = _q8_k_fields(np.asarray(block, np.uint8).reshape(1, 292))
    return {
        "d": float(d[0]),
        "codes": qs[0],
        "bsums": bsums[0],
        "formula": "y = d*q, q in -128..127; bsums[k] = sum of codes 16k..16k+15",
    }


# The implementations this module defines (quantlab.formats.registry.register; a format missing here
# fails tests/test_registry.py).
register("reference", "Q2_K", quantize=quantize_q2_k, dequantize=dequantize_q2_k, inspect=inspect_q2_k)
register("reference", "Q3_K", quantize=quantize_q3_k, dequantize=dequantize_q3_k, inspect=inspect_q3_k)
register("reference", "Q4_K", quantize=quantize_q4_k, dequantize=dequantize_q4_k, inspect=inspect_q4_k)
register("reference", "Q5_K", quantize=quantize_q5_k, dequantize=dequantize_q5_k, inspect=inspect_q5_k)
register("reference", "Q6_K", quantize=quantize_q6_k, dequantize=dequantize_q6_k, inspect=inspect_q6_k)
register("reference", "Q8_K", quantize=quantize_q8_k, dequantize=dequantize_q8_k, inspect=inspect_q8_k)
