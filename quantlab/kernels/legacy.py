"""numba kernels for Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q8_1 Q1_0 Q2_0, bit-identical to quantlab.formats.legacy.

Each kernel works on a range of rows (:func:`quantlab.kernels._rows.run_rows` spreads the ranges over
threads); inside a row, blocks are processed in order with float32 code in ggml's evaluation order.
The imatrix paths call the shared scale searches of :mod:`quantlab.kernels._search` on block slices.
Q4_0, Q4_1, Q5_0 and Q5_1 share one set of block routines with two compile-time flags (``asym``: the _1
formats' min/max scale and stored min; ``five``: 5-bit codes with a qh word); :func:`_q45_kernels`
builds each format's drivers with its flags frozen, so every format still compiles to its own
branch-free code. Speed comes from three things that change no bit: inner loops with run-time trip
counts (so LLVM vectorizes them), a 65536-entry fp16 table for block scales in the dequantizers, and
one explicit SIMD intrinsic for the int8 codes of Q8_0/Q8_1.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ..formats.layout import offsets, size
from ..formats.registry import register
from ._c import inv
from ._fp import F16_TABLE, f32_to_f16, h2f, roundf, wr16  # noqa: F401  (F16_TABLE, h2f: kernel API)
from ._rows import dequantize_rows, quantize_rows
from ._search import make_qkx3_quants, make_qx_quants

F32 = np.float32
_TWO31 = np.float32(2147483648.0)
# Inner loops over a block take their trip count as a run-time argument (always 16 or 32): with a
# compile-time count LLVM unrolls them fully and, unable to prove that the input and output arrays do
# not overlap, leaves them scalar; a run-time count lets its loop vectorizer add an overlap check and
# use SIMD. (ggml's C gets the same effect from `restrict`.)
_H = 16
_K32 = 32


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
# Q4_0 / Q4_1 / Q5_0 / Q5_1: one block routine per step, inlined with constant flags
#   asym: _1 formats (scale d and min m, codes 0..nlev) versus _0 (signed scale, codes centred)
#   five: 5-bit codes (a 32-bit qh word of high bits before the nibbles) versus 4-bit codes
# Block layout: d (fp16) [m (fp16)] [qh (4 bytes)] nibbles (16 bytes): 18, 20, 22 or 24 bytes (the
# constants above, from quantlab.formats.layout).
# ----------------------------------------------------------------------------------------------------

# Byte offsets inside one block (quantlab.formats.layout; ints, so numba compiles them as constants).
# Q4_0/Q4_1/Q5_0/Q5_1 share their code: d [m] [qh (4 bytes)] qs (16 bytes), checked here.
Q40_D, Q40_QS = offsets("Q4_0", "d", "qs")
Q41_D, Q41_M, Q41_QS = offsets("Q4_1", "d", "m", "qs")
assert Q40_D == Q41_D == 0 and offsets("Q5_0", "d", "qh", "qs") == (Q40_D, Q40_QS, Q40_QS + 4)
assert offsets("Q5_1", "d", "m", "qh", "qs") == (Q41_D, Q41_M, Q41_QS, Q41_QS + 4)
assert (size("Q4_0"), size("Q4_1"), size("Q5_0"), size("Q5_1")) == (Q40_QS + 16, Q41_QS + 16, Q40_QS + 20, Q41_QS + 20)
Q80_D, Q80_QS = offsets("Q8_0", "d", "qs")
Q81_D, Q81_S, Q81_QS = offsets("Q8_1", "d", "s", "qs")
Q80_SIZE, Q81_SIZE = size("Q8_0"), size("Q8_1")
assert Q80_D == Q81_D == 0 and Q80_SIZE - Q80_QS == Q81_SIZE - Q81_QS == 32
Q10_D, Q10_QS = offsets("Q1_0", "d", "qs")
Q20_D, Q20_QS = offsets("Q2_0", "d", "qs")
Q10_SIZE, Q20_SIZE = size("Q1_0"), size("Q2_0")


@njit(cache=True, inline="always")
def _wr32(orow, o, v):
    orow[o] = np.uint8(v & np.uint32(0xFF))
    orow[o + 1] = np.uint8((v >> np.uint32(8)) & np.uint32(0xFF))
    orow[o + 2] = np.uint8((v >> np.uint32(16)) & np.uint32(0xFF))
    orow[o + 3] = np.uint8(v >> np.uint32(24))


@njit(cache=True, inline="always")
def _rd32(qr, o):
    return (
        np.uint32(qr[o])
        | (np.uint32(qr[o + 1]) << np.uint32(8))
        | (np.uint32(qr[o + 2]) << np.uint32(16))
        | (np.uint32(qr[o + 3]) << np.uint32(24))
    )


# ----------------------------------------------------------------------------------------------------
# SIMD steps written as LLVM IR (numba intrinsics). LLVM leaves the scalar block loops scalar (it cannot
# prove the input and output arrays do not overlap); these do the same IEEE operations on 32 lanes at once,
# so the same bits. Every caller guarantees that the ranges lie inside their arrays (offsets come from
# the validated shapes) and that the values are finite (the API refuses NaN/inf for these formats).
# ----------------------------------------------------------------------------------------------------

_I32 = ir.IntType(32)
_F32X32 = ir.VectorType(ir.FloatType(), 32)
_I32X32 = ir.VectorType(_I32, 32)


def _splat32(builder, v):
    """<32 x float> with every lane = v."""
    vf = ir.VectorType(v.type, 32)
    undef = ir.Constant(vf, ir.Undefined)
    one = builder.insert_element(undef, v, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(ir.IntType(32), 32), [0] * 32))


def _vector_intrinsic(builder, name, vf):
    """The LLVM intrinsic ``name`` taking and returning the vector type vf, declared once per module
    (llvmlite's declare_intrinsic does not name vector overloads)."""
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(vf, [vf]), name)


def _halves(builder, v, n):
    """The lower and upper halves (n/2 lanes each) of the n-lane vector v."""
    idx = ir.VectorType(ir.IntType(32), n // 2)
    undef = ir.Constant(v.type, ir.Undefined)
    lo = builder.shuffle_vector(v, undef, ir.Constant(idx, list(range(n // 2))))
    hi = builder.shuffle_vector(v, undef, ir.Constant(idx, list(range(n // 2, n))))
    return lo, hi


def _load32(context, builder, arrtype, arr, off):
    """<32 x float> load of arr[off:off+32] (a float32 array)."""
    a = context.make_array(arrtype)(context, builder, arr)
    return builder.load(builder.bitcast(builder.gep(a.data, [off]), _F32X32.as_pointer()), align=4)


def _first_lane(builder, v, mask):
    """The lane of v at the first set bit of the <32 x i1> mask (which has one)."""
    bits = builder.bitcast(mask, _I32)
    cttz = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I32, [_I32, ir.IntType(1)]), "llvm.cttz.i32")
    return builder.extract_element(v, builder.call(cttz, [bits, ir.Constant(ir.IntType(1), 1)]))


def _tree(builder, v, pick):
    """Reduce the 32 lanes of v pairwise with pick(a, b) (order-free for min/max of finite values)."""
    n = 32
    while n > 1:
        lo, hi = _halves(builder, v, n)
        v = pick(lo, hi)
        n //= 2
    return builder.extract_element(v, ir.Constant(_I32, 0))


@intrinsic
def _minmax_first32(typingctx, x, xo):
    """(min, max) of x[xo:xo+32] as ggml's ``if (v < min) min = v; if (v > max) max = v`` loop leaves them:
    the extreme values (a tree of compares), each taken from the FIRST element equal to it, so that of
    -0.0 and +0.0 the one the loop meets first is kept, as the loop does."""
    sig = types.UniTuple(types.float32, 2)(x, xo)

    def codegen(context, builder, signature, args):
        v = _load32(context, builder, signature.args[0], *args)
        lo_t = _tree(builder, v, lambda a, b: builder.select(builder.fcmp_ordered("<", a, b), a, b))
        hi_t = _tree(builder, v, lambda a, b: builder.select(builder.fcmp_ordered(">", a, b), a, b))
        mn = _first_lane(builder, v, builder.fcmp_ordered("==", v, _splat32(builder, lo_t)))
        mx = _first_lane(builder, v, builder.fcmp_ordered("==", v, _splat32(builder, hi_t)))
        return context.make_tuple(builder, signature.return_type, [mn, mx])

    return sig, codegen


@intrinsic
def _absmax_first32(typingctx, x, xo):
    """(amax, the signed value of the first element with |x| == amax) of x[xo:xo+32], as ggml's
    ``if (amax < fabsf(v)) { amax = fabsf(v); max = v; }`` loop leaves them (both +0.0 when every value
    is a zero)."""
    sig = types.UniTuple(types.float32, 2)(x, xo)

    def codegen(context, builder, signature, args):
        v = _load32(context, builder, signature.args[0], *args)
        a = builder.call(_vector_intrinsic(builder, "llvm.fabs.v32f32", _F32X32), [v])
        amax = _tree(builder, a, lambda p, q: builder.select(builder.fcmp_ordered(">", p, q), p, q))
        first = _first_lane(builder, v, builder.fcmp_ordered("==", a, _splat32(builder, amax)))
        zero = ir.Constant(ir.FloatType(), 0.0)
        mx = builder.select(builder.fcmp_ordered("==", amax, zero), zero, first)
        return context.make_tuple(builder, signature.return_type, [amax, mx])

    return sig, codegen


def _q45_packer(asym, five):
    """An intrinsic ``(x, xo, out, o, mn, idv)`` writing the codes of the 32 values at x[xo] into the
    Q4_0 / Q4_1 / Q5_0 / Q5_1 block at out[o] (nibbles, and qh for the 5-bit formats), as ggml's _ref
    quantizers compute and store them: t = (x - mn) * id + bias (_1 formats) or x * id + bias (_0), C's
    float -> int cast (truncation; out of int32 range -> INT32_MIN, as x86 does), then MIN(nlev,
    (int8_t)t) except Q5_1's plain (uint8_t) cast; byte j holds code j (low nibble) and code j + 16
    (high); qh bit j is bit 4 of code j."""
    qh_off = Q41_QS if asym else Q40_QS  # as _layout: after d [and m]
    qs_off = qh_off + 4 if five else qh_off
    nlev = 31 if five else 15
    bias = 0.5 if asym else (nlev + 1) // 2 + 0.5

    @intrinsic
    def pack(typingctx, x, xo, out, o, mn, idv):
        sig = types.void(x, xo, out, o, mn, idv)

        def codegen(context, builder, signature, args):
            xa, xoff, oa, ooff, mnv, idvv = args
            v = _load32(context, builder, signature.args[0], xa, xoff)
            if asym:
                v = builder.fsub(v, _splat32(builder, mnv))
            t = builder.fadd(
                builder.fmul(v, _splat32(builder, idvv)), _splat32(builder, ir.Constant(ir.FloatType(), bias))
            )
            two31 = _splat32(builder, ir.Constant(ir.FloatType(), 2147483648.0))
            inside = builder.and_(
                builder.fcmp_ordered(">=", t, builder.fneg(two31)), builder.fcmp_ordered("<", t, two31)
            )
            q = builder.select(inside, builder.fptosi(t, _I32X32), ir.Constant(_I32X32, [-(2**31)] * 32))
            if not (asym and five):
                q = builder.sext(builder.trunc(q, ir.VectorType(ir.IntType(8), 32)), _I32X32)
                top = ir.Constant(_I32X32, [nlev] * 32)
                q = builder.select(builder.icmp_signed("<", q, top), q, top)
            lo, hi = _halves(builder, q, 32)
            i32x16 = ir.VectorType(_I32, 16)
            if five:
                f15 = ir.Constant(i32x16, [15] * 16)
                byte = builder.or_(
                    builder.and_(lo, f15), builder.shl(builder.and_(hi, f15), ir.Constant(i32x16, [4] * 16))
                )
            else:
                byte = builder.or_(lo, builder.shl(hi, ir.Constant(i32x16, [4] * 16)))
            oarr = context.make_array(signature.args[2])(context, builder, oa)
            v8 = ir.VectorType(ir.IntType(8), 16)
            dst = builder.gep(oarr.data, [builder.add(ooff, ir.Constant(ooff.type, qs_off))])
            builder.store(builder.trunc(byte, v8), builder.bitcast(dst, v8.as_pointer()), align=1)
            if five:
                bit4 = builder.lshr(q, ir.Constant(_I32X32, [4] * 32))
                qh = builder.bitcast(builder.trunc(bit4, ir.VectorType(ir.IntType(1), 32)), _I32)
                dst = builder.gep(oarr.data, [builder.add(ooff, ir.Constant(ooff.type, qh_off))])
                builder.store(qh, builder.bitcast(dst, _I32.as_pointer()), align=1)
            return context.get_dummy_value()

        return sig, codegen

    return pack


@njit(cache=True, inline="always")
def _layout(asym, five):
    """(block bytes, offset of qh, offset of the nibbles) of Q4_0 / Q4_1 / Q5_0 / Q5_1."""
    qh = Q41_QS if asym else Q40_QS  # after d [and m]
    qs = qh + 4 if five else qh
    return qs + 16, qh, qs


_PACK_Q40, _PACK_Q41, _PACK_Q50, _PACK_Q51 = (_q45_packer(a, f) for a, f in ((0, 0), (1, 0), (0, 1), (1, 1)))


@njit(cache=True, inline="always")
def _ref_block(xr, xo, orow, o, h, asym, five):
    """ggml's quantize_row_q{4,5}_{0,1}_ref on the 32 values at xr[xo], written at orow[o]: the extremes
    and the codes are the SIMD intrinsics above (``h`` is unused: the former scalar loops' trip count)."""
    nlev = 31 if five else 15
    if asym:
        mn, mx = _minmax_first32(xr, xo)
        d = np.float32((mx - mn) / np.float32(nlev))
    else:
        _amax, mx = _absmax_first32(xr, xo)
        d = np.float32(mx / np.float32(-(nlev + 1) // 2))
        mn = np.float32(0.0)
    idv = inv(d)
    wr16(orow, o + Q40_D, f32_to_f16(d))
    if asym:
        wr16(orow, o + Q41_M, f32_to_f16(mn))
    if asym:
        if five:
            _PACK_Q51(xr, xo, orow, o, mn, idv)
        else:
            _PACK_Q41(xr, xo, orow, o, mn, idv)
    elif five:
        _PACK_Q50(xr, xo, orow, o, mn, idv)
    else:
        _PACK_Q40(xr, xo, orow, o, mn, idv)


@njit(cache=True, error_model="numpy")
def _qkx3_block(xb, w, nmax, L, Laux):
    """make_qkx3_quants as the _1 formats call it. A function of its own, not inlined, with ``nmax`` a
    run-time int64: compiled once for Q4_1 and Q5_1 instead of into every format's kernel (numba inlines
    before it prunes dead branches, so the _0 formats paid for it too: about 8 s of compile each)."""
    return make_qkx3_quants(xb, w, nmax, np.float32(-0.9), np.float32(0.05), 36, False, L, Laux)


@njit(cache=True, inline="always")
def _imx_codes(xb, w, L, Laux, asym, five):
    """ggml's quantize_row_q{4,5}_{0,1}_impl on one block with weights w: codes into L, returns (d, m).
    The searches are called with a run-time ``nmax`` (np.int64), so each compiles once for both
    widths."""
    if asym:
        d, the_min = _qkx3_block(xb, w, np.int64(31 if five else 15), L, Laux)
        return d, -the_min
    d = make_qx_quants(xb, np.int64(16 if five else 8), 1, w, L)
    return d, np.float32(0.0)


@njit(cache=True, inline="always")
def _pack4(orow, o, L):
    """32 codes -> 16 bytes at o, value j in the low nibble of byte j, value j + 16 in the high one."""
    for j in range(16):
        orow[o + j] = np.uint8((L[j] | (L[j + 16] << 4)) & 0xFF)


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


@njit(cache=True, inline="always")
def _quant_q45_row(xr, orow, nb, h, asym, five):
    """One row of Q4_0 / Q4_1 / Q5_0 / Q5_1 blocks without an imatrix (the _ref quantizers)."""
    ts = _layout(asym, five)[0]
    for ib in range(nb):
        _ref_block(xr, ib * 32, orow, ib * ts, h, asym, five)


@njit(cache=True, inline="always")
def _quant_q45_imx_row(xr, im, orow, nb, asym, five):
    """One row of Q4_0 / Q4_1 / Q5_0 / Q5_1 blocks weighted by an imatrix (the _impl quantizers)."""
    ts, qh_off, qs_off = _layout(asym, five)
    w = np.empty(32, dtype=np.float32)
    L = np.empty(32, dtype=np.uint8)
    Laux = np.empty(32, dtype=np.uint8)
    sigma2 = _row_sigma2(xr)
    for ib in range(nb):
        xo = ib * 32
        _block_weights(xr, im, xo, sigma2, w)
        d, m = _imx_codes(xr[xo : xo + 32], w, L, Laux, asym, five)
        o = ib * ts
        wr16(orow, o + Q40_D, f32_to_f16(d))
        if asym:
            wr16(orow, o + Q41_M, f32_to_f16(m))
        if five:
            _pack5(orow, o + qh_off, L)
        else:
            _pack4(orow, o + qs_off, L)


@njit(cache=True, inline="always")
def _dequant_q45_row(qr, yr, nb, h, asym, five):
    """One row of Q4_0 / Q4_1 / Q5_0 / Q5_1 blocks back to float32."""
    ts, qh_off, qs_off = _layout(asym, five)
    zero = 0 if asym else (32 if five else 16) // 2  # the code of 0.0 in the _0 formats
    for ib in range(nb):
        o = ib * ts
        d = h2f(qr, o + Q40_D)
        m = h2f(qr, o + Q41_M) if asym else np.float32(0.0)
        qh = _rd32(qr, o + qh_off) if five else np.uint32(0)
        yo = ib * 32
        for j in range(h):
            b = np.int32(qr[o + qs_off + j])
            lo = b & 15
            hi = b >> 4
            if five:
                lo |= np.int32((qh >> np.uint32(j)) & np.uint32(1)) << 4
                hi |= np.int32((qh >> np.uint32(j + 16)) & np.uint32(1)) << 4
            if asym:
                yr[yo + j] = np.float32(lo) * d + m
                yr[yo + 16 + j] = np.float32(hi) * d + m
            else:
                yr[yo + j] = np.float32(lo - zero) * d
                yr[yo + 16 + j] = np.float32(hi - zero) * d


def _q45_kernels(asym, five):
    """The row-range drivers (quantize, quantize with imatrix, dequantize) of one of Q4_0 / Q4_1 / Q5_0 /
    Q5_1, each over rows [r0, r1): the row routines inlined with the format's flags as constants (numba
    freezes closure variables), so each format compiles its own branch-free copy on first use."""

    @njit(cache=True, nogil=True)
    def quantize(x, out, h, r0, r1):
        for r in range(r0, r1):
            _quant_q45_row(x[r], out[r], x.shape[1] // 32, h, asym, five)

    @njit(cache=True, nogil=True, error_model="numpy")  # C float semantics: x/0 -> inf/NaN
    def quantize_imatrix(x, out, im, r0, r1):
        for r in range(r0, r1):
            _quant_q45_imx_row(x[r], im, out[r], x.shape[1] // 32, asym, five)

    @njit(cache=True, nogil=True)
    def dequantize(q, y, h, r0, r1):
        for r in range(r0, r1):
            _dequant_q45_row(q[r], y[r], y.shape[1] // 32, h, asym, five)

    return quantize, quantize_imatrix, dequantize


_Q45 = {
    "Q4_0": _q45_kernels(False, False),
    "Q4_1": _q45_kernels(True, False),
    "Q5_0": _q45_kernels(False, True),
    "Q5_1": _q45_kernels(True, True),
}


def _quantize_q45(fmt, x, imatrix):
    ref, imx, _ = _Q45[fmt]
    if imatrix is None:
        return quantize_rows(ref, x, fmt, _H)
    return quantize_rows(imx, x, fmt, imatrix)


def _dequantize_q45(fmt, q, n_per_row):
    return dequantize_rows(_Q45[fmt][2], q, n_per_row, _H)


def quantize_q4_0(x, imatrix=None):
    return _quantize_q45("Q4_0", x, imatrix)


def quantize_q4_1(x, imatrix=None):
    return _quantize_q45("Q4_1", x, imatrix)


def quantize_q5_0(x, imatrix=None):
    return _quantize_q45("Q5_0", x, imatrix)


def quantize_q5_1(x, imatrix=None):
    return _quantize_q45("Q5_1", x, imatrix)


def dequantize_q4_0(q, n_per_row):
    return _dequantize_q45("Q4_0", q, n_per_row)


def dequantize_q4_1(q, n_per_row):
    return _dequantize_q45("Q4_1", q, n_per_row)


def dequantize_q5_0(q, n_per_row):
    return _dequantize_q45("Q5_0", q, n_per_row)


def dequantize_q5_1(q, n_per_row):
    return _dequantize_q45("Q5_1", q, n_per_row)


# ----------------------------------------------------------------------------------------------------
# Q8_0 / Q8_1
# ----------------------------------------------------------------------------------------------------


@intrinsic
def _absmax32(typingctx, x, xoff):
    """max(|x[xoff:xoff+32]|) as ONE SIMD expression: a <32 x float> load, fabs, then a tree of
    ``a > b ? a : b`` halvings. The maximum of finite values does not depend on the order it is taken in,
    so it is ggml's ``amax = MAX(amax, fabsf(x[j]))`` loop's value (the API refuses NaN/inf for these
    formats before any kernel runs). The caller guarantees the range lies inside the array."""
    sig = types.float32(x, xoff)

    def codegen(context, builder, signature, args):
        xa, xo = args
        xarr = context.make_array(signature.args[0])(context, builder, xa)
        vf = ir.VectorType(ir.FloatType(), 32)
        v = builder.load(builder.bitcast(builder.gep(xarr.data, [xo]), vf.as_pointer()), align=4)
        v = builder.call(_vector_intrinsic(builder, "llvm.fabs.v32f32", vf), [v])
        n = 32
        while n > 1:
            lo, hi = _halves(builder, v, n)
            v = builder.select(builder.fcmp_ordered(">", lo, hi), lo, hi)
            n //= 2
        return builder.extract_element(v, ir.Constant(ir.IntType(32), 0))

    return sig, codegen


@intrinsic
def _q8_codes32(typingctx, x, xoff, out, ooff, idv):
    """out[ooff:ooff+32] = int8(roundf(x[xoff:xoff+32] * idv)); returns the sum of the 32 codes. ONE SIMD
    expression: a <32 x float> load, fmul by the splatted inverse scale, llvm.round (C roundf: half away
    from zero), fptosi to i32, the low 8 bits stored; the sum is exact integer adds. The same IEEE
    operations as ggml's scalar loop, so the same bytes (|x * idv| <= 127 plus rounding: the int8 fits).
    The caller guarantees both ranges lie inside their arrays."""
    sig = types.int32(x, xoff, out, ooff, idv)

    def codegen(context, builder, signature, args):
        xa, xo, oa, oo, dv = args
        xarr = context.make_array(signature.args[0])(context, builder, xa)
        oarr = context.make_array(signature.args[2])(context, builder, oa)
        vf = ir.VectorType(ir.FloatType(), 32)
        vi = ir.VectorType(ir.IntType(32), 32)
        v = builder.load(builder.bitcast(builder.gep(xarr.data, [xo]), vf.as_pointer()), align=4)
        r = builder.call(_vector_intrinsic(builder, "llvm.round.v32f32", vf), [builder.fmul(v, _splat32(builder, dv))])
        q = builder.fptosi(r, vi)
        v8 = ir.VectorType(ir.IntType(8), 32)
        builder.store(builder.trunc(q, v8), builder.bitcast(builder.gep(oarr.data, [oo]), v8.as_pointer()), align=1)
        n = 32
        while n > 1:
            lo, hi = _halves(builder, q, n)
            q = builder.add(lo, hi)
            n //= 2
        return builder.extract_element(q, ir.Constant(ir.IntType(32), 0))

    return sig, codegen


@njit(cache=True, inline="always")
def _q8_block(xr, xo, orow, o, qo, k):
    """One Q8_0/Q8_1 block: writes d at o (Q80_D = Q81_D = 0) and the codes at o + qo; returns
    (d, sum of codes). ggml's quantize_row_q8_0_ref: amax, d = amax / 127, id = 1/d, roundf(x * id);
    the 32-wide steps are the two SIMD intrinsics above (``k`` is always 32)."""
    amax = _absmax32(xr, xo)
    d = np.float32(amax / np.float32(127.0))
    idv = inv(d)
    wr16(orow, o + Q80_D, f32_to_f16(d))
    s = _q8_codes32(xr, xo, orow, o + qo, idv)
    return d, s


@njit(cache=True, inline="always")
def _quant_q8_row(xr, orow, nb, k, one):
    """One row of Q8_0 (d, codes) or Q8_1 (one: d, s = d * sum of codes, codes) blocks."""
    ts = Q81_SIZE if one else Q80_SIZE
    for ib in range(nb):
        o = ib * ts
        d, s = _q8_block(xr, ib * 32, orow, o, Q81_QS if one else Q80_QS, k)
        if one:
            wr16(orow, o + Q81_S, f32_to_f16(np.float32(s) * d))


@njit(cache=True, nogil=True)
def _quant_q8(x, out, k, one, r0, r1):
    for r in range(r0, r1):  # a copy of the row routine per type: its offsets are constants
        if one:
            _quant_q8_row(x[r], out[r], x.shape[1] // 32, k, True)
        else:
            _quant_q8_row(x[r], out[r], x.shape[1] // 32, k, False)


def quantize_q8_0(x, imatrix=None):
    return quantize_rows(_quant_q8, x, "Q8_0", _K32, False)


def quantize_q8_1(x, imatrix=None):
    return quantize_rows(_quant_q8, x, "Q8_1", _K32, True)


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


@njit(cache=True, inline="always")
def _dequant_q8_row(qr, yr, nb, one):
    ts = Q81_SIZE if one else Q80_SIZE
    qs = Q81_QS if one else Q80_QS
    for ib in range(nb):
        _i8x32_times(qr, ib * ts + qs, yr, ib * 32, h2f(qr, ib * ts + Q80_D))


@njit(cache=True, nogil=True)
def _dequant_q8(q, y, one, r0, r1):
    for r in range(r0, r1):
        if one:
            _dequant_q8_row(q[r], y[r], y.shape[1] // 32, True)
        else:
            _dequant_q8_row(q[r], y[r], y.shape[1] // 32, False)


def dequantize_q8_0(q, n_per_row):
    return dequantize_rows(_dequant_q8, q, n_per_row, False)


def dequantize_q8_1(q, n_per_row):
    return dequantize_rows(_dequant_q8, q, n_per_row, True)


# ----------------------------------------------------------------------------------------------------
# Q1_0 / Q2_0
# ----------------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _q1_0(x, out, r0, r1):
    nb = x.shape[1] // 128
    for r in range(r0, r1):
        xr = x[r]
        orow = out[r]
        for ib in range(nb):
            xo = ib * 128
            s = np.float32(0.0)
            for j in range(128):
                s += abs(xr[xo + j])
            d = np.float32(s / np.float32(128.0))
            o = ib * Q10_SIZE
            wr16(orow, o + Q10_D, f32_to_f16(d))
            for k in range(16):
                b = np.uint8(0)
                for t in range(8):
                    if xr[xo + 8 * k + t] >= np.float32(0.0):
                        b |= np.uint8(1 << t)
                orow[o + Q10_QS + k] = b


def quantize_q1_0(x, imatrix=None):
    return quantize_rows(_q1_0, x, "Q1_0")


@njit(cache=True, nogil=True)
def _dq1_0(q, y, r0, r1):
    nb = y.shape[1] // 128
    for r in range(r0, r1):
        qr = q[r]
        yr = y[r]
        for ib in range(nb):
            o = ib * Q10_SIZE
            d = h2f(qr, o + Q10_D)
            nd = -d
            yo = ib * 128
            for k in range(16):
                b = qr[o + Q10_QS + k]
                for t in range(8):
                    yr[yo + 8 * k + t] = d if (b >> t) & 1 else nd


def dequantize_q1_0(q, n_per_row):
    return dequantize_rows(_dq1_0, q, n_per_row)


@njit(cache=True, nogil=True)
def _q2_0(x, out, r0, r1):
    nb = x.shape[1] // 64
    for r in range(r0, r1):
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
            o = ib * Q20_SIZE
            wr16(orow, o + Q20_D, f32_to_f16(d))
            for k in range(16):
                b = np.int32(0)
                for t in range(4):
                    qv = _trunc(roundf(xr[xo + 4 * k + t] * idv)) + np.int32(1)
                    if qv < 0:
                        qv = np.int32(0)
                    if qv > 3:
                        qv = np.int32(3)
                    b |= qv << (2 * t)
                orow[o + Q20_QS + k] = np.uint8(b)


def quantize_q2_0(x, imatrix=None):
    return quantize_rows(_q2_0, x, "Q2_0")


@njit(cache=True, nogil=True)
def _dq2_0(q, y, r0, r1):
    nb = y.shape[1] // 64
    for r in range(r0, r1):
        qr = q[r]
        yr = y[r]
        for ib in range(nb):
            o = ib * Q20_SIZE
            d = h2f(qr, o + Q20_D)
            yo = ib * 64
            for k in range(16):
                b = np.int32(qr[o + Q20_QS + k])
                for t in range(4):
                    yr[yo + 4 * k + t] = np.float32(((b >> (2 * t)) & 3) - 1) * d


def dequantize_q2_0(q, n_per_row):
    return dequantize_rows(_dq2_0, q, n_per_row)


# The implementations this module defines (quantlab.formats.registry.register; a format missing here
# fails tests/test_registry.py).
register("fast", "Q4_0", quantize=quantize_q4_0, dequantize=dequantize_q4_0)
register("fast", "Q4_1", quantize=quantize_q4_1, dequantize=dequantize_q4_1)
register("fast", "Q5_0", quantize=quantize_q5_0, dequantize=dequantize_q5_0)
register("fast", "Q5_1", quantize=quantize_q5_1, dequantize=dequantize_q5_1)
register("fast", "Q8_0", quantize=quantize_q8_0, dequantize=dequantize_q8_0)
register("fast", "Q8_1", quantize=quantize_q8_1, dequantize=dequantize_q8_1)
register("fast", "Q1_0", quantize=quantize_q1_0, dequantize=dequantize_q1_0)
register("fast", "Q2_0", quantize=quantize_q2_0, dequantize=dequantize_q2_0)
