"""Activation quantizers: float32 activations -> a weight type's vec_dot type (Q8_0, Q8_1, Q8_K), as
ggml's ``from_float`` does before every quantized ``mul_mat`` (spec §11.2, x86 AVX2 flavour:
id = 127/amax, round half to even).

* :func:`quantize_activations` -> the codes, scales and block sums the integer kernels of
  :mod:`quantlab.kernels.matmul` take;
* :func:`fake_quantize_activations` -> the same rounding expressed back in float32 (``d_a * q_a``), for
  the tile path (dequantized weights x BLAS).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ..formats._numerics import bf16_bits, from_bf16_bits
from . import _rows
from ._fp import f16_to_f32, f32_to_f16

F32 = np.float32


@njit(cache=True, inline="always")
def _amax32(x, t, o):
    m = F32(0)
    for j in range(32):
        a = abs(x[t, o + j])
        if a > m:
            m = a
    return m


_F, _I32 = ir.FloatType(), ir.IntType(32)
_V16F, _V16I = ir.VectorType(_F, 16), ir.VectorType(_I32, 16)


def _block_ptr(context, builder, aty, aval, t, o, elt):
    """Pointer to element [t, o] of a C-contiguous 2-D array, as ``elt``*. Every caller's array is C-contiguous
    (quantize_activations and the act_q8_* wrappers make it so)."""
    arr = context.make_array(aty)(context, builder, aval)
    ncol = builder.extract_value(arr.shape, 1)
    return builder.bitcast(builder.gep(arr.data, [builder.add(builder.mul(t, ncol), o)]), elt.as_pointer())


@intrinsic
def _absmax32(typingctx, x, t, o):
    """max |x[t, o:o+32]| (0 if all are 0; NaN never taken, as ``if a > m: m = a`` from m = 0), with
    16-lane selects: the maximum does not depend on the order (abs leaves no -0)."""
    sig = types.float32(x, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        xv, tv, ov = args
        p = _block_ptr(context, builder, signature.args[0], xv, tv, ov, _V16F)
        fabs = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V16F, [_V16F]), "llvm.fabs.v16f32")
        m = ir.Constant(_V16F, [0.0] * 16)
        for j in range(2):
            a = builder.call(fabs, [builder.load(builder.gep(p, [ir.Constant(_I32, j)]), align=4)])
            m = builder.select(builder.fcmp_ordered(">", a, m), a, m)
        r = ir.Constant(_F, 0.0)
        for i in range(16):
            e = builder.extract_element(m, ir.Constant(_I32, i))
            r = builder.select(builder.fcmp_ordered(">", e, r), e, r)
        return r

    return sig, codegen


@intrinsic
def _round32(typingctx, x, t, o, iscale, qs):
    """qs[t, o:o+32] = int8(rint(x * iscale)) (round half to even, as np.rint), returns their int32 sum."""
    sig = types.int32(x, types.intp, types.intp, types.float32, qs)

    def codegen(context, builder, signature, args):
        xv, tv, ov, sc, qv = args
        p = _block_ptr(context, builder, signature.args[0], xv, tv, ov, _V16F)
        q = _block_ptr(context, builder, signature.args[4], qv, tv, ov, ir.VectorType(ir.IntType(8), 16))
        rint = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V16F, [_V16F]), "llvm.rint.v16f32")
        v = builder.insert_element(ir.Constant(_V16F, ir.Undefined), sc, ir.Constant(_I32, 0))
        scv = builder.shuffle_vector(v, ir.Constant(_V16F, ir.Undefined), ir.Constant(_V16I, [0] * 16))
        tot = ir.Constant(_V16I, [0] * 16)
        for j in range(2):
            xi = builder.load(builder.gep(p, [ir.Constant(_I32, j)]), align=4)
            qi = builder.fptosi(builder.call(rint, [builder.fmul(xi, scv)]), _V16I)
            builder.store(
                builder.trunc(qi, ir.VectorType(ir.IntType(8), 16)), builder.gep(q, [ir.Constant(_I32, j)]), align=1
            )
            tot = builder.add(tot, qi)
        r = ir.Constant(_I32, 0)
        for i in range(16):
            r = builder.add(r, builder.extract_element(tot, ir.Constant(_I32, i)))
        return r

    return sig, codegen


@intrinsic
def _signed_absmax256(typingctx, x, t, o):
    """The value of largest magnitude among x[t, o:o+256], the first one in order on ties (0 if all are 0
    or NaN), as ``if |v| > amax: amax, mx = |v|, v`` from amax = 0 finds it: the maximum by 16-lane
    selects (order-free), then the first index whose |v| equals it."""
    sig = types.float32(x, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        xv, tv, ov = args
        p = _block_ptr(context, builder, signature.args[0], xv, tv, ov, _V16F)
        fabs = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V16F, [_V16F]), "llvm.fabs.v16f32")
        i16 = ir.IntType(16)
        cttz = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(i16, [i16, ir.IntType(1)]), "llvm.cttz.i16"
        )
        vs = [builder.load(builder.gep(p, [ir.Constant(_I32, j)]), align=4) for j in range(16)]
        ab = [builder.call(fabs, [v]) for v in vs]
        m = ir.Constant(_V16F, [0.0] * 16)
        for a in ab:
            m = builder.select(builder.fcmp_ordered(">", a, m), a, m)
        amax = ir.Constant(_F, 0.0)
        for i in range(16):
            e = builder.extract_element(m, ir.Constant(_I32, i))
            amax = builder.select(builder.fcmp_ordered(">", e, amax), e, amax)
        splat = builder.shuffle_vector(
            builder.insert_element(ir.Constant(_V16F, ir.Undefined), amax, ir.Constant(_I32, 0)),
            ir.Constant(_V16F, ir.Undefined),
            ir.Constant(_V16I, [0] * 16),
        )
        mx = ir.Constant(_F, 0.0)
        for j in reversed(range(16)):  # the first chunk holding amax wins
            hit = builder.bitcast(builder.fcmp_ordered("==", ab[j], splat), i16)
            k = builder.call(cttz, [hit, ir.Constant(ir.IntType(1), 0)])
            val = builder.extract_element(vs[j], builder.zext(builder.and_(k, ir.Constant(i16, 15)), _I32))
            mx = builder.select(builder.icmp_unsigned("!=", hit, ir.Constant(i16, 0)), val, mx)
        return builder.select(builder.fcmp_ordered(">", amax, ir.Constant(_F, 0.0)), mx, ir.Constant(_F, 0.0))

    return sig, codegen


@intrinsic
def _round256(typingctx, x, t, o, iscale, qs, bsums, bo):
    """qs[t, o:o+256] = int8(min(127, rint(iscale * x))) and bsums[t, bo + j] = the sum of its run j of 16."""
    sig = types.void(x, types.intp, types.intp, types.float32, qs, bsums, types.intp)

    def codegen(context, builder, signature, args):
        xv, tv, ov, sc, qv, bv, bov = args
        p = _block_ptr(context, builder, signature.args[0], xv, tv, ov, _V16F)
        q = _block_ptr(context, builder, signature.args[4], qv, tv, ov, ir.VectorType(ir.IntType(8), 16))
        bp = _block_ptr(context, builder, signature.args[5], bv, tv, bov, _I32)
        rint = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V16F, [_V16F]), "llvm.rint.v16f32")
        v = builder.insert_element(ir.Constant(_V16F, ir.Undefined), sc, ir.Constant(_I32, 0))
        scv = builder.shuffle_vector(v, ir.Constant(_V16F, ir.Undefined), ir.Constant(_V16I, [0] * 16))
        top = ir.Constant(_V16I, [127] * 16)
        for j in range(16):
            xi = builder.load(builder.gep(p, [ir.Constant(_I32, j)]), align=4)
            qi = builder.fptosi(builder.call(rint, [builder.fmul(scv, xi)]), _V16I)
            qi = builder.select(builder.icmp_signed("<", qi, top), qi, top)
            q8 = builder.trunc(qi, ir.VectorType(ir.IntType(8), 16))
            builder.store(q8, builder.gep(q, [ir.Constant(_I32, j)]), align=1)
            qw = builder.sext(q8, _V16I)  # the stored int8, summed (as ggml sums y[i].qs)
            r = ir.Constant(_I32, 0)
            for i in range(16):
                r = builder.add(r, builder.extract_element(qw, ir.Constant(_I32, i)))
            builder.store(r, builder.gep(bp, [ir.Constant(_I32, j)]))
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True)
def act_q8_0(x, qs, d, s):
    """x float32 [T, K] -> qs int8 [T, K], d float32 [T, K/32] (the fp16-rounded scale, as float), and
    s[t, b] = sum(q) of the block as float32 (exact: |sum| <= 4064), for the integer kernels' offset
    terms (Q4_0 / Q5_0: sum (c - off) a = sum c a - off * sum a)."""
    _q8_0_rows(np.ascontiguousarray(x), qs, d, s, 0, x.shape[0])


@njit(cache=True, nogil=True)
def _q8_0_rows(x, qs, d, s, r0, r1):
    """act_q8_0 of rows [r0, r1) (a piece for :func:`~quantlab.kernels._rows.run_rows`)."""
    K = x.shape[1]
    nb = K // 32
    for t in range(r0, r1):
        for b in range(nb):
            o = b * 32
            amax = _absmax32(x, t, o)  # = _amax32, 16 lanes at a time
            dd = amax / F32(127)
            d[t, b] = f16_to_f32(f32_to_f16(dd))
            iscale = F32(127) / amax if amax != F32(0) else F32(0)
            s[t, b] = F32(_round32(x, t, o, iscale, qs))  # q = rint(x * iscale), their sum


@njit(cache=True)
def act_q8_1(x, qs, d, s):
    """Like act_q8_0, plus s = fp16(d * sum(q)) per block (d unrounded here, as ggml does)."""
    _q8_1_rows(np.ascontiguousarray(x), qs, d, s, 0, x.shape[0])


@njit(cache=True, nogil=True)
def _q8_1_rows(x, qs, d, s, r0, r1):
    """act_q8_1 of rows [r0, r1)."""
    K = x.shape[1]
    nb = K // 32
    for t in range(r0, r1):
        for b in range(nb):
            o = b * 32
            amax = _amax32(x, t, o)
            dd = amax / F32(127)
            d[t, b] = f16_to_f32(f32_to_f16(dd))
            iscale = F32(127) / amax if amax != F32(0) else F32(0)
            isum = np.int32(0)
            for j in range(32):
                q = np.int32(np.rint(x[t, o + j] * iscale))
                qs[t, o + j] = np.int8(q)
                isum += q
            s[t, b] = f16_to_f32(f32_to_f16(dd * F32(isum)))


@njit(cache=True)
def act_q8_k(x, qs, d, bsums):
    """Q8_K (spec §5.6): per 256 values d = max/-127 with max the signed value of largest magnitude,
    q = min(127, rint(x * -127/max)), and 16 sums of 16 quants each."""
    _q8_k_rows(np.ascontiguousarray(x), qs, d, bsums, 0, x.shape[0])


@njit(cache=True, nogil=True)
def _q8_k_rows(x, qs, d, bsums, r0, r1):
    """act_q8_k of rows [r0, r1)."""
    K = x.shape[1]
    nb = K // 256
    for t in range(r0, r1):
        for b in range(nb):
            o = b * 256
            mx = _signed_absmax256(x, t, o)  # the first value of largest magnitude (0: none)
            if mx == F32(0):
                d[t, b] = F32(0)
                for j in range(256):
                    qs[t, o + j] = 0
                for j in range(16):
                    bsums[t, b * 16 + j] = 0
                continue
            iscale = F32(-127) / mx
            _round256(x, t, o, iscale, qs, bsums, b * 16)  # q = min(127, rint(iscale * x)), sums of 16
            d[t, b] = F32(1) / iscale


def quantize_activations(x: np.ndarray, vtype: str):
    """Quantize float32 activations [T, K] to ``vtype`` ('Q8_0' | 'Q8_1' | 'Q8_K'); returns a tuple of
    arrays the integer kernels take."""
    T, K = x.shape
    x = np.ascontiguousarray(x, dtype=np.float32)
    qs = np.empty((T, K), dtype=np.int8)
    if vtype == "Q8_0":
        d = np.empty((T, K // 32), dtype=np.float32)
        s = np.empty((T, K // 32), dtype=np.float32)
        _by_rows(_q8_0_rows, x, qs, d, s)
        return qs, d, s
    if vtype == "Q8_1":
        d = np.empty((T, K // 32), dtype=np.float32)
        s = np.empty((T, K // 32), dtype=np.float32)
        _by_rows(_q8_1_rows, x, qs, d, s)
        return qs, d, s
    if vtype == "Q8_K":
        d = np.empty((T, K // 256), dtype=np.float32)
        bs = np.empty((T, K // 16), dtype=np.int32)
        _by_rows(_q8_k_rows, x, qs, d, bs)
        return qs, d, bs
    raise ValueError(vtype)


PAR_ROWS = 64  # batches of at least this many rows are quantized on the row-kernel threads


def _by_rows(kernel, x, *outs):
    """kernel(x, *outs, r0, r1) over every row: one call for small batches, else pieces of rows on the
    row-kernel threads (a prompt batch's quantization would otherwise run on one core while the products
    around it use every thread). Every row is computed by the same code: the same bytes."""
    T = x.shape[0]
    if T < PAR_ROWS:
        kernel(x, *outs, 0, T)
    else:
        _rows.run_rows(kernel, T, x, *outs, min_rows=16)


@njit(cache=True)
def _fake_q8_0(x, out):
    T, K = x.shape
    for t in range(T):
        for b in range(K // 32):
            o = b * 32
            amax = _amax32(x, t, o)
            dd = f16_to_f32(f32_to_f16(amax / F32(127)))
            iscale = F32(127) / amax if amax != F32(0) else F32(0)
            for j in range(32):
                out[t, o + j] = dd * F32(np.rint(x[t, o + j] * iscale))


@njit(cache=True)
def _fake_q8_1(x, out, e):
    """Like _fake_q8_0, plus e[t, b] = s - d * sum(q): how much Q8_1's fp16-rounded block sum s
    differs from the sum of the fake-quantized values (the min term of Q4_1/Q5_1 products uses s)."""
    T, K = x.shape
    for t in range(T):
        for b in range(K // 32):
            o = b * 32
            amax = _amax32(x, t, o)
            d0 = amax / F32(127)
            dd = f16_to_f32(f32_to_f16(d0))
            iscale = F32(127) / amax if amax != F32(0) else F32(0)
            isum = np.int32(0)
            for j in range(32):
                q = np.int32(np.rint(x[t, o + j] * iscale))
                isum += q
                out[t, o + j] = dd * F32(q)
            e[t, b] = f16_to_f32(f32_to_f16(d0 * F32(isum))) - dd * F32(isum)


@njit(cache=True)
def _fake_q8_k(x, out):
    x = np.ascontiguousarray(x)  # (_signed_absmax256 reads rows as flat vectors)
    T, K = x.shape
    for t in range(T):
        for b in range(K // 256):
            o = b * 256
            mx = _signed_absmax256(x, t, o)  # the first value of largest magnitude (0: none)
            if mx == F32(0):
                for j in range(256):
                    out[t, o + j] = F32(0)
                continue
            iscale = F32(-127) / mx
            dd = F32(1) / iscale
            for j in range(256):
                out[t, o + j] = dd * F32(min(np.int32(127), np.int32(np.rint(iscale * x[t, o + j]))))


def fake_quantize_activations(x: np.ndarray, vtype: str, with_s_error: bool = False):
    """Round activations through the vec_dot type and back to float32 (``d_a * q_a``): multiplying
    these with dequantized weights gives the same sum as ggml's integer kernels (up to order).
    For Q8_1 with ``with_s_error`` returns ``(values, e)``, e[t, b] = s - d*sum(q) per 32-block (see
    :func:`block_mins` for how it is used)."""
    if vtype == "Q8_1" and with_s_error:
        out = np.empty_like(x)
        e = np.empty((x.shape[0], x.shape[1] // 32), dtype=np.float32)
        _fake_q8_1(x, out, e)
        return out, e
    if vtype == "F32":
        return x
    if vtype == "F16":
        return x.astype(np.float16).astype(np.float32)
    if vtype == "BF16":
        return from_bf16_bits(bf16_bits(x))
    out = np.empty_like(x)
    if vtype in ("Q8_0", "Q8_1"):  # same d and q; Q8_1's s only re-expresses sum(d*q)
        _fake_q8_0(x, out)
    elif vtype == "Q8_K":
        _fake_q8_k(x, out)
    else:
        raise ValueError(vtype)
    return out
