"""numba kernels for TQ1_0 and TQ2_0, bit-identical to quantlab.formats.ternary.

Each kernel works on a range of rows (:func:`quantlab.kernels._rows.run_rows` spreads the ranges over
threads). The dequantizers unpack a run of bytes with one SIMD expression
each (``_make_unpacker``: integer trit extraction, int -> float, times d — the same operations as
ggml's scalar loop, so the same bits).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from ..formats.layout import offsets, size
from ..formats.registry import register
from ._c import inv
from ._fp import f32_as_u32, f32_to_f16, roundf, u32_as_f32, wr16
from ._rows import dequantize_rows, quantize_rows
from .legacy import h2f

_U = np.uint64

# Byte offsets inside one block (quantlab.formats.layout; ints, so numba compiles them as constants).
# TQ1_0's qs[48] holds two runs: qs[0:32] (5 trits a byte, elements m + 32n) and qs[32:48] (elements
# 160 + m + 16n); qh[4] the last 16 elements, 4 trits a byte.
TQ1_QS, TQ1_QH, TQ1_D = offsets("TQ1_0", "qs", "qh", "d")
TQ1_SIZE = size("TQ1_0")
TQ2_QS, TQ2_D = offsets("TQ2_0", "qs", "d")
TQ2_SIZE = size("TQ2_0")


@njit(cache=True, inline="always")
def _trit(v):
    """lroundf(v) + 1 for the ternary quantizers; a non-finite v (only when 1/d overflowed) gives 1,
    which is what C's lroundf(NaN/inf) = LONG_MIN, + 1, truncated to int, leaves."""
    if v - v != 0:  # NaN or infinity
        return np.int32(1)
    return np.int32(roundf(v)) + np.int32(1)


@njit(cache=True, inline="always")
def _absmax_block(xr, xo):
    """max |x| over a block, taken on the bits: for non-negative floats the integer order is the float
    order, and an integer max (unlike a float one without fastmath) vectorizes. The inputs are
    finite (checked in quantlab.api), so the result is the one of ggml's sequential MAX."""
    m = np.uint32(0)
    for j in range(_U(256)):
        m = max(m, np.uint32(f32_as_u32(xr[_U(xo) + j]) & np.uint32(0x7FFFFFFF)))
    return u32_as_f32(m)


@njit(cache=True, inline="always")
def _trit_near(v):
    """_trit(v) for |v| < 1.5, NaN included, without branches: lroundf rounds half away from zero.
    v = x * (1/amax) with |x| <= amax never reaches 1.5 while 1/amax is finite."""
    return np.uint8(np.uint8(1) + np.uint8(v >= np.float32(0.5)) - np.uint8(v <= np.float32(-0.5)))


@njit(cache=True, inline="always")
def _ceil243(q):
    return np.uint8((q * 256 + 242) // 243)


# ----------------------------------------------------------------------------------------------------
# TQ1_0
# ----------------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _tq1_0(x, out, r0, r1):
    nb = x.shape[1] // 256
    for r in range(r0, r1):
        xr = x[r]
        orow = out[r]
        for ib in range(nb):
            xo = ib * 256
            o = ib * TQ1_SIZE
            d = _absmax_block(xr, xo)
            idv = inv(d)
            for m in range(32):  # elements m + 32n, n = 0..4
                q = np.int32(0)
                for n in range(5):
                    q = q * 3 + _trit(xr[xo + m + 32 * n] * idv)
                orow[o + TQ1_QS + m] = _ceil243(q & 0xFF)
            for m in range(16):  # elements 160 + m + 16n
                q = np.int32(0)
                for n in range(5):
                    q = q * 3 + _trit(xr[xo + 160 + m + 16 * n] * idv)
                orow[o + TQ1_QS + 32 + m] = _ceil243(q & 0xFF)
            for j in range(4):  # elements 240 + j + 4n, n = 0..3, then * 3
                q = np.int32(0)
                for n in range(4):
                    q = q * 3 + _trit(xr[xo + 240 + j + 4 * n] * idv)
                orow[o + TQ1_QH + j] = _ceil243((q * 3) & 0xFF)
            wr16(orow, o + TQ1_D, f32_to_f16(d))


def quantize_tq1_0(x, imatrix=None):
    return quantize_rows(_tq1_0, x, "TQ1_0")


def _make_unpacker(nbytes, kind, nfields, stride):
    """An intrinsic ``f(q, qoff, y, yoff, d)`` that decodes the ``nbytes`` bytes q[qoff:qoff+nbytes]:
    field n (n < nfields) of byte m becomes ``y[yoff + stride*n + m] = float32(t - 1) * d`` where

    * kind "base3": t = ((byte * 3**n) mod 256) * 3 >> 8      (TQ1_0: 5 trits in a byte)
    * kind "2bit":  t = (byte >> 2n) & 3                     (TQ2_0: 4 two-bit codes in a byte)

    It is written as LLVM vector IR (a <nbytes x i8> load, i16 lanes, sitofp, fmul by the splatted
    scale, <nbytes x float> stores) because LLVM will not vectorize the scalar loop by itself: it
    cannot prove that q and y do not overlap. Callers keep both ranges inside their arrays."""

    @intrinsic
    def unpack(typingctx, q, qoff, y, yoff, d):
        sig = types.void(q, qoff, y, yoff, d)

        def codegen(context, builder, signature, args):
            qa, qo, ya, yo, dv = args
            qdata = context.make_array(signature.args[0])(context, builder, qa).data
            ydata = context.make_array(signature.args[2])(context, builder, ya).data
            v8 = ir.VectorType(ir.IntType(8), nbytes)
            v16 = ir.VectorType(ir.IntType(16), nbytes)
            vf = ir.VectorType(ir.FloatType(), nbytes)

            def k16(c):
                return ir.Constant(v16, [c] * nbytes)

            raw = builder.load(builder.bitcast(builder.gep(qdata, [qo]), v8.as_pointer()), align=1)
            b = builder.zext(raw, v16)
            undef = ir.Constant(vf, ir.Undefined)
            d1 = builder.insert_element(undef, dv, ir.Constant(ir.IntType(32), 0))
            dvec = builder.shuffle_vector(d1, undef, ir.Constant(ir.VectorType(ir.IntType(32), nbytes), [0] * nbytes))
            for n in range(nfields):
                if kind == "base3":
                    v = builder.and_(builder.mul(b, k16(3**n)), k16(0xFF))
                    t = builder.lshr(builder.mul(v, k16(3)), k16(8))
                else:
                    t = builder.and_(builder.lshr(b, k16(2 * n)), k16(3))
                val = builder.fmul(builder.sitofp(builder.sub(t, k16(1)), vf), dvec)
                ptr = builder.gep(ydata, [builder.add(yo, ir.Constant(yo.type, n * stride))])
                builder.store(val, builder.bitcast(ptr, vf.as_pointer()), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return unpack


_tq1_qs32 = _make_unpacker(32, "base3", 5, 32)  # qs[0:32]:  elements m + 32n
_tq1_qs16 = _make_unpacker(16, "base3", 5, 16)  # qs[32:48]: elements 160 + m + 16n
_tq1_qh4 = _make_unpacker(4, "base3", 4, 4)  # qh[0:4]:   elements 240 + m + 4n
_tq2_qs32 = _make_unpacker(32, "2bit", 4, 32)  # qs[32c:32c+32]: elements 128c + m + 32n


@njit(cache=True, nogil=True)
def _dtq1_0(q, y, r0, r1):
    nb = y.shape[1] // 256
    for r in range(r0, r1):
        qr = q[r]
        yr = y[r]
        for ib in range(nb):
            o = ib * TQ1_SIZE
            yo = ib * 256
            d = h2f(qr, o + TQ1_D)
            _tq1_qs32(qr, o + TQ1_QS, yr, yo, d)
            _tq1_qs16(qr, o + TQ1_QS + 32, yr, yo + 160, d)
            _tq1_qh4(qr, o + TQ1_QH, yr, yo + 240, d)


def dequantize_tq1_0(q, n_per_row):
    return dequantize_rows(_dtq1_0, q, n_per_row)


# ----------------------------------------------------------------------------------------------------
# TQ2_0
# ----------------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _tq2_0(x, out, r0, r1):
    nb = x.shape[1] // 256
    for r in range(r0, r1):
        xr = x[r]
        orow = out[r]
        for ib in range(nb):
            xo = ib * 256
            o = ib * TQ2_SIZE
            d = _absmax_block(xr, xo)
            idv = inv(d)
            if idv - idv == 0:  # 1/d finite: branchless uint8 codes, the m loop vectorizes
                for c in range(2):
                    xc = _U(xo + 128 * c)
                    oc = _U(o + TQ2_QS + 32 * c)
                    for m in range(_U(32)):
                        q = np.uint8(0)
                        for n in range(4):
                            t = _trit_near(xr[xc + _U(32 * n) + m] * idv)
                            q = np.uint8(q | np.uint8(t << np.uint8(2 * n)))
                        orow[oc + m] = q
            else:  # d below 2**-128: 1/d overflowed, C's lroundf(inf/NaN) path
                for c in range(2):
                    for m in range(32):
                        q = np.int32(0)
                        for n in range(4):
                            q |= (_trit(xr[xo + 128 * c + 32 * n + m] * idv) & 3) << (2 * n)
                        orow[o + TQ2_QS + 32 * c + m] = np.uint8(q & 0xFF)
            wr16(orow, o + TQ2_D, f32_to_f16(d))


def quantize_tq2_0(x, imatrix=None):
    return quantize_rows(_tq2_0, x, "TQ2_0")


@njit(cache=True, nogil=True)
def _dtq2_0(q, y, r0, r1):
    nb = y.shape[1] // 256
    for r in range(r0, r1):
        qr = q[r]
        yr = y[r]
        for ib in range(nb):
            o = ib * TQ2_SIZE
            yo = ib * 256
            d = h2f(qr, o + TQ2_D)
            _tq2_qs32(qr, o + TQ2_QS, yr, yo, d)
            _tq2_qs32(qr, o + TQ2_QS + 32, yr, yo + 128, d)


def dequantize_tq2_0(q, n_per_row):
    return dequantize_rows(_dtq2_0, q, n_per_row)


# The implementations this module defines (quantlab.formats.registry.register; a format missing here
# fails tests/test_registry.py).
register("fast", "TQ1_0", quantize=quantize_tq1_0, dequantize=dequantize_tq1_0)
register("fast", "TQ2_0", quantize=quantize_tq2_0, dequantize=dequantize_tq2_0)
