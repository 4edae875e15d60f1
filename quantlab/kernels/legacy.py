"""numba kernels for Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q8_1 Q1_0 Q2_0, bit-identical to quantlab.formats.legacy.

Rows are distributed over threads (``prange``); inside a row, blocks are processed in order with
float32 code in ggml's evaluation order. The imatrix paths call the shared scale searches of
:mod:`quantlab.kernels._search` on block slices. Speed comes from three things that change no bit:
inner loops with run-time trip counts (so LLVM vectorizes them), a 65536-entry fp16 table for block
scales in the dequantizers, and one explicit SIMD intrinsic for the int8 codes of Q8_0/Q8_1.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from ..formats import legacy as _ref
from ..formats._numerics import from_f16_bits
from ._fp import f32_to_f16, rd16, roundf, wr16
from ._search import make_qkx3_quants, make_qx_quants

F32 = np.float32
_TWO31 = np.float32(2147483648.0)
# Inner loops over a block take their trip count as a run-time argument (always 16 or 32): with a
# compile-time count LLVM unrolls them fully and, unable to prove that the input and output arrays do
# not overlap, leaves them scalar; a run-time count lets its loop vectorizer add an overlap check and
# use SIMD. (ggml's C gets the same effect from `restrict`.)
_H = 16
_K32 = 32
# fp16 -> float32 for every one of the 65536 bit patterns (256 KiB, NaNs quieted like ggml): decoding a
# block scale by table lookup costs a fraction of the bit manipulation in _fp.f16_to_f32, which shows
# in the dequantizers (one scale per 32 values).
F16_TABLE = from_f16_bits(np.arange(65536, dtype=np.uint32).astype(np.uint16))


@njit(cache=True, inline="always")
def h2f(q, off):
    """The little-endian fp16 at q[off], as float32 (table lookup)."""
    return F16_TABLE[rd16(q, off)]


@njit(cache=True, inline="always")
def _trunc(v):
    """C float -> int cast as x86-64 does it: truncate; NaN / out of int32 range -> INT32_MIN."""
    if v >= -_TWO31 and v < _TWO31:
        return np.int32(v)
    return np.int32(-2147483648)


@njit(cache=True, inline="always")
def _i8(i):
    """C (int8_t) narrowing of an int: keep the low 8 bits, signed."""
    return np.int32(np.int8(i & np.int32(0xFF)))


@njit(cache=True, inline="always")
def _inv(d):
    if d != 0:
        return np.float32(np.float32(1.0) / d)
    return np.float32(0.0)


def _out(x, type_size, qk):
    return np.empty((x.shape[0], x.shape[1] // qk * type_size), dtype=np.uint8)


# ----------------------------------------------------------------------------------------------------
# imatrix weights (shared by the four _impl paths)
# ----------------------------------------------------------------------------------------------------

@njit(cache=True, inline="always")
def _row_sigma2(xr):
    s = np.float32(0.0)
    for j in range(xr.shape[0]):
        s += xr[j] * xr[j]
    return np.float32(s / np.float32(xr.shape[0]))


@njit(cache=True, inline="always")
def _block_weights(xr, im, xo, sigma2, w):
    for j in range(32):
        v = xr[xo + j]
        w[j] = im[xo + j] * np.float32(np.sqrt(np.float32(sigma2 + v * v)))


# ----------------------------------------------------------------------------------------------------
# Q4_0
# ----------------------------------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def _q4_0_ref(x, out, h):
    nb = x.shape[1] // 32
    for r in prange(x.shape[0]):
        xr = x[r]
        orow = out[r]
        for ib in range(nb):
            xo = ib * 32
            amax = np.float32(0.0)
            mx = np.float32(0.0)
            for j in range(32):
                v = xr[xo + j]
                a = abs(v)
                if amax < a:
                    amax = a
                    mx = v
            d = np.float32(mx / np.float32(-8.0))
            idv = _inv(d)
            o = ib * 18
            wr16(orow, o, f32_to_f16(d))
            for j in range(h):
                q0 = min(np.int32(15), _i8(_trunc(xr[xo + j] * idv + np.float32(8.5))))
                q1 = min(np.int32(15), _i8(_trunc(xr[xo + 16 + j] * idv + np.float32(8.5))))
                orow[o + 2 + j] = np.uint8((q0 | (q1 << 4)) & 0xFF)


@njit(cache=True, parallel=True, error_model="numpy")  # C float semantics: x/0 -> inf/NaN
def _q4_0_imx(x, im, out):
    nb = x.shape[1] // 32
    for r in prange(x.shape[0]):
        xr = x[r]
        orow = out[r]
        w = np.empty(32, dtype=np.float32)
        L = np.empty(32, dtype=np.uint8)
        sigma2 = _row_sigma2(xr)
        for ib in range(nb):
            xo = ib * 32
            _block_weights(xr, im, xo, sigma2, w)
            d = make_qx_quants(xr[xo:xo + 32], 8, 1, w, L)
            o = ib * 18
            wr16(orow, o, f32_to_f16(d))
            for j in range(16):
                orow[o + 2 + j] = np.uint8((L[j] | (L[j + 16] << 4)) & 0xFF)


def quantize_q4_0(x, imatrix=None):
    out = _out(x, 18, 32)
    if imatrix is None:
        _q4_0_ref(x, out, _H)
    else:
        _q4_0_imx(x, imatrix, out)
    return out


@njit(cache=True, parallel=True)
def _dq4_0(q, y, h):
    nb = y.shape[1] // 32
    for r in prange(q.shape[0]):
        qr = q[r]
        yr = y[r]
        for ib in range(nb):
            o = ib * 18
            d = h2f(qr, o)
            yo = ib * 32
            for j in range(h):
                b = np.int32(qr[o + 2 + j])
                yr[yo + j] = np.float32((b & 15) - 8) * d
                yr[yo + 16 + j] = np.float32((b >> 4) - 8) * d


def dequantize_q4_0(q, n_per_row):
    y = np.empty((q.shape[0], n_per_row), dtype=np.float32)
    _dq4_0(q, y, _H)
    return y


# ----------------------------------------------------------------------------------------------------
# Q4_1
# ----------------------------------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def _q4_1_ref(x, out, h):
    nb = x.shape[1] // 32
    for r in prange(x.shape[0]):
        xr = x[r]
        orow = out[r]
        for ib in range(nb):
            xo = ib * 32
            mn = np.float32(3.4028234663852886e38)
            mx = np.float32(-3.4028234663852886e38)
            for j in range(32):
                v = xr[xo + j]
                if v < mn:
                    mn = v
                if v > mx:
                    mx = v
            d = np.float32((mx - mn) / np.float32(15.0))
            idv = _inv(d)
            o = ib * 20
            wr16(orow, o, f32_to_f16(d))
            wr16(orow, o + 2, f32_to_f16(mn))
            for j in range(h):
                q0 = min(np.int32(15), _i8(_trunc((xr[xo + j] - mn) * idv + np.float32(0.5))))
                q1 = min(np.int32(15), _i8(_trunc((xr[xo + 16 + j] - mn) * idv + np.float32(0.5))))
                orow[o + 4 + j] = np.uint8((q0 | (q1 << 4)) & 0xFF)


@njit(cache=True, parallel=True, error_model="numpy")  # C float semantics: x/0 -> inf/NaN
def _q4_1_imx(x, im, out):
    nb = x.shape[1] // 32
    for r in prange(x.shape[0]):
        xr = x[r]
        orow = out[r]
        w = np.empty(32, dtype=np.float32)
        L = np.empty(32, dtype=np.uint8)
        Laux = np.empty(32, dtype=np.uint8)
        sigma2 = _row_sigma2(xr)
        for ib in range(nb):
            xo = ib * 32
            _block_weights(xr, im, xo, sigma2, w)
            d, the_min = make_qkx3_quants(xr[xo:xo + 32], w, 15, np.float32(-0.9), np.float32(0.05), 36,
                                          False, L, Laux)
            o = ib * 20
            wr16(orow, o, f32_to_f16(d))
            wr16(orow, o + 2, f32_to_f16(-the_min))
            for j in range(16):
                orow[o + 4 + j] = np.uint8((L[j] | (L[j + 16] << 4)) & 0xFF)


def quantize_q4_1(x, imatrix=None):
    out = _out(x, 20, 32)
    if imatrix is None:
        _q4_1_ref(x, out, _H)
    else:
        _q4_1_imx(x, imatrix, out)
    return out


@njit(cache=True, parallel=True)
def _dq4_1(q, y, h):
    nb = y.shape[1] // 32
    for r in prange(q.shape[0]):
        qr = q[r]
        yr = y[r]
        for ib in range(nb):
            o = ib * 20
            d = h2f(qr, o)
            m = h2f(qr, o + 2)
            yo = ib * 32
            for j in range(h):
                b = np.int32(qr[o + 4 + j])
                yr[yo + j] = np.float32(b & 15) * d + m
                yr[yo + 16 + j] = np.float32(b >> 4) * d + m


def dequantize_q4_1(q, n_per_row):
    y = np.empty((q.shape[0], n_per_row), dtype=np.float32)
    _dq4_1(q, y, _H)
    return y


# ----------------------------------------------------------------------------------------------------
# Q5_0
# ----------------------------------------------------------------------------------------------------

@njit(cache=True, inline="always")
def _wr32(orow, o, v):
    orow[o] = np.uint8(v & np.uint32(0xFF))
    orow[o + 1] = np.uint8((v >> np.uint32(8)) & np.uint32(0xFF))
    orow[o + 2] = np.uint8((v >> np.uint32(16)) & np.uint32(0xFF))
    orow[o + 3] = np.uint8(v >> np.uint32(24))


@njit(cache=True, inline="always")
def _rd32(qr, o):
    return (np.uint32(qr[o]) | (np.uint32(qr[o + 1]) << np.uint32(8))
            | (np.uint32(qr[o + 2]) << np.uint32(16)) | (np.uint32(qr[o + 3]) << np.uint32(24)))


@njit(cache=True, inline="always")
def _pack5(orow, o, L):
    """32 five-bit codes -> qh (4 bytes at o) and nibbles (16 bytes at o + 4)."""
    qh = np.uint32(0)
    for j in range(16):
        a = np.uint32(L[j])
        b = np.uint32(L[j + 16])
        orow[o + 4 + j] = np.uint8(((a & np.uint32(15)) | ((b & np.uint32(15)) << np.uint32(4))) & np.uint32(0xFF))
        qh |= ((a & np.uint32(0x10)) >> np.uint32(4)) << np.uint32(j)
        qh |= ((b & np.uint32(0x10)) >> np.uint32(4)) << np.uint32(j + 16)
    _wr32(orow, o, qh)


@njit(cache=True, parallel=True)
def _q5_0_ref(x, out, h):
    nb = x.shape[1] // 32
    for r in prange(x.shape[0]):
        xr = x[r]
        orow = out[r]
        for ib in range(nb):
            xo = ib * 32
            amax = np.float32(0.0)
            mx = np.float32(0.0)
            for j in range(32):
                v = xr[xo + j]
                a = abs(v)
                if amax < a:
                    amax = a
                    mx = v
            d = np.float32(mx / np.float32(-16.0))
            idv = _inv(d)
            o = ib * 22
            wr16(orow, o, f32_to_f16(d))
            qh = np.uint32(0)
            for j in range(h):
                q0 = np.uint32(min(np.int32(31), _i8(_trunc(xr[xo + j] * idv + np.float32(16.5)))) & 0xFF)
                q1 = np.uint32(min(np.int32(31), _i8(_trunc(xr[xo + 16 + j] * idv + np.float32(16.5)))) & 0xFF)
                orow[o + 6 + j] = np.uint8((q0 & np.uint32(15)) | ((q1 & np.uint32(15)) << np.uint32(4)))
                qh |= ((q0 & np.uint32(0x10)) >> np.uint32(4)) << np.uint32(j)
                qh |= ((q1 & np.uint32(0x10)) >> np.uint32(4)) << np.uint32(j + 16)
            _wr32(orow, o + 2, qh)


@njit(cache=True, parallel=True, error_model="numpy")  # C float semantics: x/0 -> inf/NaN
def _q5_0_imx(x, im, out):
    nb = x.shape[1] // 32
    for r in prange(x.shape[0]):
        xr = x[r]
        orow = out[r]
        w = np.empty(32, dtype=np.float32)
        L = np.empty(32, dtype=np.uint8)
        sigma2 = _row_sigma2(xr)
        for ib in range(nb):
            xo = ib * 32
            _block_weights(xr, im, xo, sigma2, w)
            d = make_qx_quants(xr[xo:xo + 32], 16, 1, w, L)
            o = ib * 22
            wr16(orow, o, f32_to_f16(d))
            _pack5(orow, o + 2, L)


def quantize_q5_0(x, imatrix=None):
    out = _out(x, 22, 32)
    if imatrix is None:
        _q5_0_ref(x, out, _H)
    else:
        _q5_0_imx(x, imatrix, out)
    return out


@njit(cache=True, parallel=True)
def _dq5_0(q, y, h):
    nb = y.shape[1] // 32
    for r in prange(q.shape[0]):
        qr = q[r]
        yr = y[r]
        for ib in range(nb):
            o = ib * 22
            d = h2f(qr, o)
            qh = _rd32(qr, o + 2)
            yo = ib * 32
            for j in range(h):
                b = np.int32(qr[o + 6 + j])
                h0 = np.int32((qh >> np.uint32(j)) & np.uint32(1)) << 4
                h1 = np.int32((qh >> np.uint32(j + 16)) & np.uint32(1)) << 4
                yr[yo + j] = np.float32(((b & 15) | h0) - 16) * d
                yr[yo + 16 + j] = np.float32(((b >> 4) | h1) - 16) * d


def dequantize_q5_0(q, n_per_row):
    y = np.empty((q.shape[0], n_per_row), dtype=np.float32)
    _dq5_0(q, y, _H)
    return y


# ----------------------------------------------------------------------------------------------------
# Q5_1
# ----------------------------------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def _q5_1_ref(x, out, h):
    nb = x.shape[1] // 32
    for r in prange(x.shape[0]):
        xr = x[r]
        orow = out[r]
        for ib in range(nb):
            xo = ib * 32
            mn = np.float32(3.4028234663852886e38)
            mx = np.float32(-3.4028234663852886e38)
            for j in range(32):
                v = xr[xo + j]
                if v < mn:
                    mn = v
                if v > mx:
                    mx = v
            d = np.float32((mx - mn) / np.float32(31.0))
            idv = _inv(d)
            o = ib * 24
            wr16(orow, o, f32_to_f16(d))
            wr16(orow, o + 2, f32_to_f16(mn))
            qh = np.uint32(0)
            for j in range(h):
                q0 = np.uint32(_trunc((xr[xo + j] - mn) * idv + np.float32(0.5)) & 0xFF)
                q1 = np.uint32(_trunc((xr[xo + 16 + j] - mn) * idv + np.float32(0.5)) & 0xFF)
                orow[o + 8 + j] = np.uint8((q0 & np.uint32(15)) | ((q1 & np.uint32(15)) << np.uint32(4)))
                qh |= ((q0 & np.uint32(0x10)) >> np.uint32(4)) << np.uint32(j)
                qh |= ((q1 & np.uint32(0x10)) >> np.uint32(4)) << np.uint32(j + 16)
            _wr32(orow, o + 4, qh)


@njit(cache=True, parallel=True, error_model="numpy")  # C float semantics: x/0 -> inf/NaN
def _q5_1_imx(x, im, out):
    nb = x.shape[1] // 32
    for r in prange(x.shape[0]):
        xr = x[r]
        orow = out[r]
        w = np.empty(32, dtype=np.float32)
        L = np.empty(32, dtype=np.uint8)
        Laux = np.empty(32, dtype=np.uint8)
        sigma2 = _row_sigma2(xr)
        for ib in range(nb):
            xo = ib * 32
            _block_weights(xr, im, xo, sigma2, w)
            d, the_min = make_qkx3_quants(xr[xo:xo + 32], w, 31, np.float32(-0.9), np.float32(0.05), 36,
                                          False, L, Laux)
            o = ib * 24
            wr16(orow, o, f32_to_f16(d))
            wr16(orow, o + 2, f32_to_f16(-the_min))
            _pack5(orow, o + 4, L)


def quantize_q5_1(x, imatrix=None):
    out = _out(x, 24, 32)
    if imatrix is None:
        _q5_1_ref(x, out, _H)
    else:
        _q5_1_imx(x, imatrix, out)
    return out


@njit(cache=True, parallel=True)
def _dq5_1(q, y, h):
    nb = y.shape[1] // 32
    for r in prange(q.shape[0]):
        qr = q[r]
        yr = y[r]
        for ib in range(nb):
            o = ib * 24
            d = h2f(qr, o)
            m = h2f(qr, o + 2)
            qh = _rd32(qr, o + 4)
            yo = ib * 32
            for j in range(h):
                b = np.int32(qr[o + 8 + j])
                h0 = np.int32((qh >> np.uint32(j)) & np.uint32(1)) << 4
                h1 = np.int32((qh >> np.uint32(j + 16)) & np.uint32(1)) << 4
                yr[yo + j] = np.float32((b & 15) | h0) * d + m
                yr[yo + 16 + j] = np.float32((b >> 4) | h1) * d + m


def dequantize_q5_1(q, n_per_row):
    y = np.empty((q.shape[0], n_per_row), dtype=np.float32)
    _dq5_1(q, y, _H)
    return y


# ----------------------------------------------------------------------------------------------------
# Q8_0 / Q8_1
# ----------------------------------------------------------------------------------------------------

@njit(cache=True, inline="always")
def _q8_block(xr, xo, orow, o, qo, k):
    """One Q8_0/Q8_1 block: writes d at o and the codes at o + qo; returns (d, sum of codes)."""
    amax = np.float32(0.0)
    for j in range(32):
        a = abs(xr[xo + j])
        amax = amax if amax > a else a
    d = np.float32(amax / np.float32(127.0))
    idv = _inv(d)
    wr16(orow, o, f32_to_f16(d))
    s = np.int32(0)
    for j in range(k):
        q = _i8(_trunc(roundf(xr[xo + j] * idv)))
        s += q
        orow[o + qo + j] = np.uint8(q & 0xFF)
    return d, s


@njit(cache=True, parallel=True)
def _q8_0(x, out, k):
    nb = x.shape[1] // 32
    for r in prange(x.shape[0]):
        xr = x[r]
        orow = out[r]
        for ib in range(nb):
            _q8_block(xr, ib * 32, orow, ib * 34, 2, k)


@njit(cache=True, parallel=True)
def _q8_1(x, out, k):
    nb = x.shape[1] // 32
    for r in prange(x.shape[0]):
        xr = x[r]
        orow = out[r]
        for ib in range(nb):
            o = ib * 36
            d, s = _q8_block(xr, ib * 32, orow, o, 4, k)
            wr16(orow, o + 2, f32_to_f16(np.float32(s) * d))


def quantize_q8_0(x, imatrix=None):
    out = _out(x, 34, 32)
    _q8_0(x, out, _K32)
    return out


def quantize_q8_1(x, imatrix=None):
    out = _out(x, 36, 32)
    _q8_1(x, out, _K32)
    return out


@intrinsic
def _i8x32_times(typingctx, q, qoff, y, yoff, d):
    """y[yoff:yoff+32] = float32(int8(q[qoff:qoff+32])) * d as ONE SIMD expression (LLVM IR: a
    <32 x i8> load, sitofp, fmul by the splatted scale, a <32 x float> store). The same IEEE
    operations as the scalar loop, so the same bits; written out because LLVM does not vectorize the
    scalar loop on its own (it cannot prove that q and y do not overlap). Callers guarantee that both
    ranges lie inside their arrays (offsets come from the validated shapes)."""
    sig = types.void(q, qoff, y, yoff, d)

    def codegen(context, builder, signature, args):
        qa, qo, ya, yo, dv = args
        qarr = context.make_array(signature.args[0])(context, builder, qa)
        yarr = context.make_array(signature.args[2])(context, builder, ya)
        v8 = ir.VectorType(ir.IntType(8), 32)
        vf = ir.VectorType(ir.FloatType(), 32)
        codes = builder.load(builder.bitcast(builder.gep(qarr.data, [qo]), v8.as_pointer()), align=1)
        undef = ir.Constant(vf, ir.Undefined)
        one = builder.insert_element(undef, dv, ir.Constant(ir.IntType(32), 0))
        dvec = builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(ir.IntType(32), 32), [0] * 32))
        prod = builder.fmul(builder.sitofp(codes, vf), dvec)
        builder.store(prod, builder.bitcast(builder.gep(yarr.data, [yo]), vf.as_pointer()), align=4)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, parallel=True)
def _dq8_0(q, y):
    nb = y.shape[1] // 32
    for r in prange(q.shape[0]):
        qr = q[r]
        yr = y[r]
        for ib in range(nb):
            _i8x32_times(qr, ib * 34 + 2, yr, ib * 32, h2f(qr, ib * 34))


@njit(cache=True, parallel=True)
def _dq8_1(q, y):
    nb = y.shape[1] // 32
    for r in prange(q.shape[0]):
        qr = q[r]
        yr = y[r]
        for ib in range(nb):
            _i8x32_times(qr, ib * 36 + 4, yr, ib * 32, h2f(qr, ib * 36))


def dequantize_q8_0(q, n_per_row):
    y = np.empty((q.shape[0], n_per_row), dtype=np.float32)
    _dq8_0(q, y)
    return y


def dequantize_q8_1(q, n_per_row):
    y = np.empty((q.shape[0], n_per_row), dtype=np.float32)
    _dq8_1(q, y)
    return y


# ----------------------------------------------------------------------------------------------------
# Q1_0 / Q2_0
# ----------------------------------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def _q1_0(x, out):
    nb = x.shape[1] // 128
    for r in prange(x.shape[0]):
        xr = x[r]
        orow = out[r]
        for ib in range(nb):
            xo = ib * 128
            s = np.float32(0.0)
            for j in range(128):
                s += abs(xr[xo + j])
            d = np.float32(s / np.float32(128.0))
            o = ib * 18
            wr16(orow, o, f32_to_f16(d))
            for k in range(16):
                b = np.uint8(0)
                for t in range(8):
                    if xr[xo + 8 * k + t] >= np.float32(0.0):
                        b |= np.uint8(1 << t)
                orow[o + 2 + k] = b


def quantize_q1_0(x, imatrix=None):
    out = _out(x, 18, 128)
    _q1_0(x, out)
    return out


@njit(cache=True, parallel=True)
def _dq1_0(q, y):
    nb = y.shape[1] // 128
    for r in prange(q.shape[0]):
        qr = q[r]
        yr = y[r]
        for ib in range(nb):
            o = ib * 18
            d = h2f(qr, o)
            nd = -d
            yo = ib * 128
            for k in range(16):
                b = qr[o + 2 + k]
                for t in range(8):
                    yr[yo + 8 * k + t] = d if (b >> t) & 1 else nd


def dequantize_q1_0(q, n_per_row):
    y = np.empty((q.shape[0], n_per_row), dtype=np.float32)
    _dq1_0(q, y)
    return y


@njit(cache=True, parallel=True)
def _q2_0(x, out):
    nb = x.shape[1] // 64
    for r in prange(x.shape[0]):
        xr = x[r]
        orow = out[r]
        for ib in range(nb):
            xo = ib * 64
            amax = np.float32(0.0)
            for j in range(64):
                a = abs(xr[xo + j])
                if a > amax:
                    amax = a
            d = amax
            idv = np.float32(np.float32(1.0) / d) if d > np.float32(0.0) else np.float32(0.0)
            o = ib * 18
            wr16(orow, o, f32_to_f16(d))
            for k in range(16):
                b = np.int32(0)
                for t in range(4):
                    qv = _trunc(roundf(xr[xo + 4 * k + t] * idv)) + np.int32(1)
                    if qv < 0:
                        qv = np.int32(0)
                    if qv > 3:
                        qv = np.int32(3)
                    b |= qv << (2 * t)
                orow[o + 2 + k] = np.uint8(b)


def quantize_q2_0(x, imatrix=None):
    out = _out(x, 18, 64)
    _q2_0(x, out)
    return out


@njit(cache=True, parallel=True)
def _dq2_0(q, y):
    nb = y.shape[1] // 64
    for r in prange(q.shape[0]):
        qr = q[r]
        yr = y[r]
        for ib in range(nb):
            o = ib * 18
            d = h2f(qr, o)
            yo = ib * 64
            for k in range(16):
                b = np.int32(qr[o + 2 + k])
                for t in range(4):
                    yr[yo + 4 * k + t] = np.float32(((b >> (2 * t)) & 3) - 1) * d


def dequantize_q2_0(q, n_per_row):
    y = np.empty((q.shape[0], n_per_row), dtype=np.float32)
    _dq2_0(q, y)
    return y
