"""Matrix products straight from quantized blocks: what ggml's ``mul_mat`` does on the CPU.

ggml never expands a quantized weight matrix to float32. It quantizes the float32 activations to the
weight type's *vec_dot type* (spec §11.1: Q8_0 for Q4_0/Q5_0/Q8_0/IQ4_NL/..., Q8_1 for Q4_1/Q5_1, Q8_K
for the K- and IQ-quants) and then, per output element, sums exact integer products block by block and
combines the per-block sums with the two scales in float32 (spec §11.3)::

    Q4_1 x Q8_1:  y += (d_w * d_a) * sum_j q_w[j] * q_a[j]  +  m_w * s_a     (s_a = d_a * sum_j q_a[j])

Two paths live here, both with those numerics:

* **integer path** (few tokens, i.e. generation): numba kernels that read the weight bytes in place,
  one kernel per weight format (Q4_0, Q4_1, Q8_0, Q4_K, Q6_K). Rows are spread over threads.
* **tile path** (prompt batches, and every other format): dequantize a tile of weight rows into a
  reusable float32 buffer and multiply with BLAS. The activations are first rounded through the
  vec_dot type ("fake-quantized": ``d_a * q_a``), so the product is, up to float32 summation order,
  the same sum as the integer path: ``sum (d_w q_w + m_w)(d_a q_a)``.

Neither path is bit-exact with llama.cpp (its AVX2 kernels accumulate in another order); the model
outputs agree to a few ulps per product, which is what perplexity comparisons need.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._fp import f16_to_f32, f32_to_f16

F32 = np.float32

# weight format -> activation ("vec_dot") type, spec §11.1
VEC_DOT_TYPE = {
    "F32": "F32", "F16": "F16", "BF16": "BF16",
    "Q4_0": "Q8_0", "Q5_0": "Q8_0", "Q8_0": "Q8_0", "Q1_0": "Q8_0", "Q2_0": "Q8_0", "MXFP4": "Q8_0",
    "NVFP4": "Q8_0", "IQ4_NL": "Q8_0",
    "Q4_1": "Q8_1", "Q5_1": "Q8_1",
}
for _n in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S",
           "IQ1_S", "IQ1_M", "IQ4_XS", "TQ1_0", "TQ2_0"):
    VEC_DOT_TYPE[_n] = "Q8_K"


def f16_table() -> np.ndarray:
    """fp16 bits -> float32 for all 65536 patterns (what ggml_table_f32_f16 holds)."""
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


F16 = f16_table()


# ---------------------------------------------------------------------------------------------
# activation quantizers (x86 AVX2 flavour, spec §11.2: id = 127/amax, round half to even)
# ---------------------------------------------------------------------------------------------

@njit(cache=True, inline="always")
def _amax32(x, t, o):
    m = F32(0)
    for j in range(32):
        a = abs(x[t, o + j])
        if a > m:
            m = a
    return m


@njit(cache=True)
def act_q8_0(x, qs, d):
    """x float32 [T, K] -> qs int8 [T, K], d float32 [T, K/32] (the fp16-rounded scale, as float)."""
    T, K = x.shape
    nb = K // 32
    for t in range(T):
        for b in range(nb):
            o = b * 32
            amax = _amax32(x, t, o)
            dd = amax / F32(127)
            d[t, b] = f16_to_f32(f32_to_f16(dd))
            iscale = F32(127) / amax if amax != F32(0) else F32(0)
            for j in range(32):
                qs[t, o + j] = np.int8(np.rint(x[t, o + j] * iscale))


@njit(cache=True)
def act_q8_1(x, qs, d, s):
    """Like act_q8_0, plus s = fp16(d * sum(q)) per block (d unrounded here, as ggml does)."""
    T, K = x.shape
    nb = K // 32
    for t in range(T):
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
    T, K = x.shape
    nb = K // 256
    for t in range(T):
        for b in range(nb):
            o = b * 256
            amax = F32(0)
            mx = F32(0)
            for j in range(256):
                a = abs(x[t, o + j])
                if a > amax:
                    amax = a
                    mx = x[t, o + j]
            if amax == F32(0):
                d[t, b] = F32(0)
                for j in range(256):
                    qs[t, o + j] = 0
                for j in range(16):
                    bsums[t, b * 16 + j] = 0
                continue
            iscale = F32(-127) / mx
            for j in range(256):
                v = np.int32(np.rint(iscale * x[t, o + j]))
                qs[t, o + j] = np.int8(min(127, v))
            for j in range(16):
                acc = np.int32(0)
                for i in range(16):
                    acc += np.int32(qs[t, o + j * 16 + i])
                bsums[t, b * 16 + j] = acc
            d[t, b] = F32(1) / iscale


def quantize_activations(x: np.ndarray, vtype: str):
    """Quantize float32 activations [T, K] to ``vtype`` ('Q8_0' | 'Q8_1' | 'Q8_K'); returns a tuple of
    arrays the integer kernels take."""
    T, K = x.shape
    qs = np.empty((T, K), dtype=np.int8)
    if vtype == "Q8_0":
        d = np.empty((T, K // 32), dtype=np.float32)
        act_q8_0(x, qs, d)
        return qs, d, d
    if vtype == "Q8_1":
        d = np.empty((T, K // 32), dtype=np.float32)
        s = np.empty((T, K // 32), dtype=np.float32)
        act_q8_1(x, qs, d, s)
        return qs, d, s
    if vtype == "Q8_K":
        d = np.empty((T, K // 256), dtype=np.float32)
        bs = np.empty((T, K // 16), dtype=np.int32)
        act_q8_k(x, qs, d, bs)
        return qs, d, bs
    raise ValueError(vtype)


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
    T, K = x.shape
    for t in range(T):
        for b in range(K // 256):
            o = b * 256
            amax = F32(0)
            mx = F32(0)
            for j in range(256):
                a = abs(x[t, o + j])
                if a > amax:
                    amax = a
                    mx = x[t, o + j]
            if amax == F32(0):
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
        from ..formats._numerics import bf16_bits, from_bf16_bits
        return from_bf16_bits(bf16_bits(x))
    out = np.empty_like(x)
    if vtype in ("Q8_0", "Q8_1"):   # same d and q; Q8_1's s only re-expresses sum(d*q)
        _fake_q8_0(x, out)
    elif vtype == "Q8_K":
        _fake_q8_k(x, out)
    else:
        raise ValueError(vtype)
    return out


# ---------------------------------------------------------------------------------------------
# integer dot products of one block, written as LLVM vector code
#
# numba's auto-vectorizer gives up on these short fixed-length loops (it unrolls them into scalar
# code), so each block product is emitted directly as vector IR: load the bytes, unpack the codes,
# widen, multiply, horizontal add. LLVM turns that into vpmaddwd / vpdpbusd on x86. Integer sums are
# exact, so the result is the same as a scalar loop, just 4-5x faster.
# ---------------------------------------------------------------------------------------------

_I8, _I16, _I32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)


def _vec(t, n):
    return ir.VectorType(t, n)


def _const(t, n, v):
    return ir.Constant(_vec(t, n), [v] * n)


def _byte_ptr(context, builder, aty, aval, off):
    """Pointer to byte ``off`` of a uint8/int8 C-contiguous array (flat offset)."""
    arr = context.make_array(aty)(context, builder, aval)
    return builder.gep(arr.data, [off], source_etype=_I8)


def _splat(builder, val, n):
    vt = _vec(val.type, n)
    v = builder.insert_element(ir.Constant(vt, ir.Undefined), val, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, ir.Constant(vt, ir.Undefined), ir.Constant(_vec(_I32, n), [0] * n))


def _hsum(builder, vec):
    n = vec.type.count
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I32, [vec.type]),
                                        f"llvm.vector.reduce.add.v{n}i32")
    return builder.call(fn, [vec])


def _check_bytes(*tys):
    for t in tys:
        if not (isinstance(t, types.Array) and t.dtype in (types.uint8, types.int8) and t.layout == "C"):
            raise TypeError("block dot products need C-contiguous uint8/int8 arrays")


@intrinsic
def _dot_nib16(typingctx, w, wo, a, ao, off):
    """sum_{j<16} ((w[wo+j] & 15) - off) * a[ao+j] + ((w[wo+j] >> 4) - off) * a[ao+16+j]
    (Q4_0 with off = 8, Q4_1 with off = 0); offsets are flat byte offsets."""
    _check_bytes(w, a)
    sig = types.int32(w, types.intp, a, types.intp, types.int32)

    def codegen(context, builder, signature, args):
        wv, wov, av, aov, offv = args
        vw = builder.load(_byte_ptr(context, builder, signature.args[0], wv, wov), typ=_vec(_I8, 16), align=1)
        va = builder.load(_byte_ptr(context, builder, signature.args[2], av, aov), typ=_vec(_I8, 32), align=1)
        lo = builder.and_(vw, _const(_I8, 16, 15))
        hi = builder.lshr(vw, _const(_I8, 16, 4))
        q = builder.shuffle_vector(lo, hi, ir.Constant(_vec(_I32, 32), list(range(32))))
        q = builder.sub(builder.zext(q, _vec(_I32, 32)), _splat(builder, offv, 32))
        return _hsum(builder, builder.mul(q, builder.sext(va, _vec(_I32, 32))))
    return sig, codegen


@intrinsic
def _dot_i8_32(typingctx, w, wo, a, ao):
    """sum_{j<32} int8(w[wo+j]) * a[ao+j] (Q8_0)."""
    _check_bytes(w, a)
    sig = types.int32(w, types.intp, a, types.intp)

    def codegen(context, builder, signature, args):
        wv, wov, av, aov = args
        vw = builder.load(_byte_ptr(context, builder, signature.args[0], wv, wov), typ=_vec(_I8, 32), align=1)
        va = builder.load(_byte_ptr(context, builder, signature.args[2], av, aov), typ=_vec(_I8, 32), align=1)
        return _hsum(builder, builder.mul(builder.sext(vw, _vec(_I32, 32)), builder.sext(va, _vec(_I32, 32))))
    return sig, codegen


@intrinsic
def _dot_nib32(typingctx, w, wo, a, ao, shift):
    """sum_{j<32} ((w[wo+j] >> shift) & 15) * a[ao+j] (Q4_K: shift 0 = low nibbles, 4 = high)."""
    _check_bytes(w, a)
    sig = types.int32(w, types.intp, a, types.intp, types.int32)

    def codegen(context, builder, signature, args):
        wv, wov, av, aov, sh = args
        vw = builder.load(_byte_ptr(context, builder, signature.args[0], wv, wov), typ=_vec(_I8, 32), align=1)
        va = builder.load(_byte_ptr(context, builder, signature.args[2], av, aov), typ=_vec(_I8, 32), align=1)
        q = builder.and_(builder.lshr(vw, _splat(builder, builder.trunc(sh, _I8), 32)), _const(_I8, 32, 15))
        return _hsum(builder, builder.mul(builder.zext(q, _vec(_I32, 32)), builder.sext(va, _vec(_I32, 32))))
    return sig, codegen


@intrinsic
def _dot_q6_16(typingctx, w, lo, sl, hi, sh, a, ao):
    """sum_{j<16} (((w[lo+j] >> sl) & 15) | (((w[hi+j] >> sh) & 3) << 4)) - 32) * a[ao+j] (Q6_K)."""
    _check_bytes(w, a)
    sig = types.int32(w, types.intp, types.int32, types.intp, types.int32, a, types.intp)

    def codegen(context, builder, signature, args):
        wv, lov, slv, hiv, shv, av, aov = args
        aty = signature.args[0]
        vl = builder.load(_byte_ptr(context, builder, aty, wv, lov), typ=_vec(_I8, 16), align=1)
        vh = builder.load(_byte_ptr(context, builder, aty, wv, hiv), typ=_vec(_I8, 16), align=1)
        va = builder.load(_byte_ptr(context, builder, signature.args[5], av, aov), typ=_vec(_I8, 16), align=1)
        ql = builder.and_(builder.lshr(vl, _splat(builder, builder.trunc(slv, _I8), 16)), _const(_I8, 16, 15))
        qh = builder.and_(builder.lshr(vh, _splat(builder, builder.trunc(shv, _I8), 16)), _const(_I8, 16, 3))
        q = builder.or_(ql, builder.shl(qh, _const(_I8, 16, 4)))
        q = builder.sub(builder.zext(q, _vec(_I32, 16)), _const(_I32, 16, 32))
        return _hsum(builder, builder.mul(q, builder.sext(va, _vec(_I32, 16))))
    return sig, codegen


# ---------------------------------------------------------------------------------------------
# integer matrix products: out[t, r] = W[r, :] . a[t, :], rows spread over threads
# ---------------------------------------------------------------------------------------------

@njit(cache=True, inline="always")
def _h(W, r, o, tab):
    return tab[np.int64(W[r, o]) | (np.int64(W[r, o + 1]) << 8)]


@njit(cache=True)
def _row_q4_0(r, W, tab, qs, d, out):
    R, rb = W.shape
    nb = rb // 18
    T, K = qs.shape
    for t in range(T):
        acc = F32(0)
        for b in range(nb):
            o = b * 18
            isum = _dot_nib16(W, r * rb + o + 2, qs, t * K + b * 32, np.int32(8))
            acc += F32(isum) * _h(W, r, o, tab) * d[t, b]
        out[t, r] = acc


@njit(cache=True)
def _row_q4_1(r, W, tab, qs, d, s, out):
    R, rb = W.shape
    nb = rb // 20
    T, K = qs.shape
    for t in range(T):
        acc = F32(0)
        for b in range(nb):
            o = b * 20
            isum = _dot_nib16(W, r * rb + o + 4, qs, t * K + b * 32, np.int32(0))
            acc += (_h(W, r, o, tab) * d[t, b]) * F32(isum) + _h(W, r, o + 2, tab) * s[t, b]
        out[t, r] = acc


@njit(cache=True)
def _row_q8_0(r, W, tab, qs, d, out):
    R, rb = W.shape
    nb = rb // 34
    T, K = qs.shape
    for t in range(T):
        acc = F32(0)
        for b in range(nb):
            o = b * 34
            isum = _dot_i8_32(W, r * rb + o + 2, qs, t * K + b * 32)
            acc += F32(isum) * (_h(W, r, o, tab) * d[t, b])
        out[t, r] = acc


@njit(cache=True, inline="always")
def _scale_min_k4(W, r, o, j):
    """6-bit scale and min of sub-block j of a Q4_K/Q5_K super-block whose 12 scale bytes start at o."""
    if j < 4:
        sc = np.int32(W[r, o + j]) & 63
        m = np.int32(W[r, o + j + 4]) & 63
    else:
        sc = (np.int32(W[r, o + j + 4]) & 15) | ((np.int32(W[r, o + j - 4]) >> 6) << 4)
        m = (np.int32(W[r, o + j + 4]) >> 4) | ((np.int32(W[r, o + j]) >> 6) << 4)
    return sc, m


@njit(cache=True)
def _row_q4_k(r, W, tab, qs, d, bsums, out):
    R, rb = W.shape
    nb = rb // 144
    T, K = qs.shape
    for t in range(T):
        acc = F32(0)
        for b in range(nb):
            o = b * 144
            isum = np.int32(0)
            summs = np.int32(0)
            for jj in range(4):          # 4 chunks of 64 values: low nibbles, then high nibbles
                sc0, m0 = _scale_min_k4(W, r, o + 4, 2 * jj)
                sc1, m1 = _scale_min_k4(W, r, o + 4, 2 * jj + 1)
                wo = r * rb + o + 16 + jj * 32
                ao = t * K + b * 256 + jj * 64
                s0 = _dot_nib32(W, wo, qs, ao, np.int32(0))
                s1 = _dot_nib32(W, wo, qs, ao + 32, np.int32(4))
                isum = np.int32(isum + sc0 * s0 + sc1 * s1)
                bo = b * 16 + jj * 4
                summs = np.int32(summs + m0 * (bsums[t, bo] + bsums[t, bo + 1])
                                 + m1 * (bsums[t, bo + 2] + bsums[t, bo + 3]))
            acc += (d[t, b] * _h(W, r, o, tab)) * F32(isum) - (d[t, b] * _h(W, r, o + 2, tab)) * F32(summs)
        out[t, r] = acc


@njit(cache=True)
def _row_q6_k(r, W, tab, qs, d, bsums, out):
    R, rb = W.shape
    nb = rb // 210
    T, K = qs.shape
    for t in range(T):
        acc = F32(0)
        for b in range(nb):
            o = b * 210
            isum = np.int32(0)
            for n in range(2):           # two halves of 128 values
                ql = r * rb + o + n * 64
                qh = r * rb + o + 128 + n * 32
                sc = o + 192 + n * 8
                ao = t * K + b * 256 + n * 128
                for k in range(2):       # values 16k..16k+15 of each 32-run use scales k, k+2, k+4, k+6
                    l = 16 * k
                    s1 = _dot_q6_16(W, ql + l, np.int32(0), qh + l, np.int32(0), qs, ao + l)
                    s2 = _dot_q6_16(W, ql + 32 + l, np.int32(0), qh + l, np.int32(2), qs, ao + 32 + l)
                    s3 = _dot_q6_16(W, ql + l, np.int32(4), qh + l, np.int32(4), qs, ao + 64 + l)
                    s4 = _dot_q6_16(W, ql + 32 + l, np.int32(4), qh + l, np.int32(6), qs, ao + 96 + l)
                    isum = np.int32(isum + np.int32(np.int8(W[r, sc + k])) * s1
                                    + np.int32(np.int8(W[r, sc + k + 2])) * s2
                                    + np.int32(np.int8(W[r, sc + k + 4])) * s3
                                    + np.int32(np.int8(W[r, sc + k + 6])) * s4)
            acc += (_h(W, r, o + 208, tab) * d[t, b]) * F32(isum)
        out[t, r] = acc


# serial and threaded drivers (separate functions so that numba caches both). Threads only pay off for
# big products: waking a worker costs more than a 576 x 1536 matvec on a busy machine.
PAR_MIN_MACS = 1 << 23


@njit(cache=True, parallel=True)
def _par_q4_0(W, tab, qs, d, out):
    for r in prange(W.shape[0]):
        _row_q4_0(r, W, tab, qs, d, out)


@njit(cache=True)
def _ser_q4_0(W, tab, qs, d, out):
    for r in range(W.shape[0]):
        _row_q4_0(r, W, tab, qs, d, out)


@njit(cache=True, parallel=True)
def _par_q8_0(W, tab, qs, d, out):
    for r in prange(W.shape[0]):
        _row_q8_0(r, W, tab, qs, d, out)


@njit(cache=True)
def _ser_q8_0(W, tab, qs, d, out):
    for r in range(W.shape[0]):
        _row_q8_0(r, W, tab, qs, d, out)


@njit(cache=True, parallel=True)
def _par_q4_1(W, tab, qs, d, s, out):
    for r in prange(W.shape[0]):
        _row_q4_1(r, W, tab, qs, d, s, out)


@njit(cache=True)
def _ser_q4_1(W, tab, qs, d, s, out):
    for r in range(W.shape[0]):
        _row_q4_1(r, W, tab, qs, d, s, out)


@njit(cache=True, parallel=True)
def _par_q4_k(W, tab, qs, d, bsums, out):
    for r in prange(W.shape[0]):
        _row_q4_k(r, W, tab, qs, d, bsums, out)


@njit(cache=True)
def _ser_q4_k(W, tab, qs, d, bsums, out):
    for r in range(W.shape[0]):
        _row_q4_k(r, W, tab, qs, d, bsums, out)


@njit(cache=True, parallel=True)
def _par_q6_k(W, tab, qs, d, bsums, out):
    for r in prange(W.shape[0]):
        _row_q6_k(r, W, tab, qs, d, bsums, out)


@njit(cache=True)
def _ser_q6_k(W, tab, qs, d, bsums, out):
    for r in range(W.shape[0]):
        _row_q6_k(r, W, tab, qs, d, bsums, out)


# ---------------------------------------------------------------------------------------------
# dequantize weight rows [r0, r1) into a float32 buffer (the tile path); same numbers as ggml's to_float
# ---------------------------------------------------------------------------------------------

@njit(cache=True)
def deq_q4_0(W, tab, r0, out):
    n = out.shape[0]
    nb = W.shape[1] // 18
    for i in range(n):
        r = r0 + i
        for b in range(nb):
            o = b * 18
            dd = _h(W, r, o, tab)
            for j in range(16):
                v = np.int32(W[r, o + 2 + j])
                out[i, b * 32 + j] = F32((v & 15) - 8) * dd
                out[i, b * 32 + 16 + j] = F32((v >> 4) - 8) * dd


@njit(cache=True)
def deq_q4_1(W, tab, r0, out):
    n = out.shape[0]
    nb = W.shape[1] // 20
    for i in range(n):
        r = r0 + i
        for b in range(nb):
            o = b * 20
            dd = _h(W, r, o, tab)
            m = _h(W, r, o + 2, tab)
            for j in range(16):
                v = np.int32(W[r, o + 4 + j])
                out[i, b * 32 + j] = F32(v & 15) * dd + m
                out[i, b * 32 + 16 + j] = F32(v >> 4) * dd + m


@njit(cache=True)
def deq_q8_0(W, tab, r0, out):
    n = out.shape[0]
    nb = W.shape[1] // 34
    for i in range(n):
        r = r0 + i
        for b in range(nb):
            o = b * 34
            dd = _h(W, r, o, tab)
            for j in range(32):
                out[i, b * 32 + j] = F32(np.int8(W[r, o + 2 + j])) * dd


@njit(cache=True)
def deq_q4_k(W, tab, r0, out):
    n = out.shape[0]
    nb = W.shape[1] // 144
    for i in range(n):
        r = r0 + i
        for b in range(nb):
            o = b * 144
            dd = _h(W, r, o, tab)
            dm = _h(W, r, o + 2, tab)
            for jj in range(4):
                sc0, m0 = _scale_min_k4(W, r, o + 4, 2 * jj)
                sc1, m1 = _scale_min_k4(W, r, o + 4, 2 * jj + 1)
                d1 = dd * F32(sc0)
                n1 = dm * F32(m0)
                d2 = dd * F32(sc1)
                n2 = dm * F32(m1)
                qo = o + 16 + jj * 32
                yo = b * 256 + jj * 64
                for l in range(32):
                    v = np.int32(W[r, qo + l])
                    out[i, yo + l] = d1 * F32(v & 15) - n1
                    out[i, yo + 32 + l] = d2 * F32(v >> 4) - n2


@njit(cache=True)
def deq_q6_k(W, tab, r0, out):
    n = out.shape[0]
    nb = W.shape[1] // 210
    for i in range(n):
        r = r0 + i
        for b in range(nb):
            o = b * 210
            dd = _h(W, r, o + 208, tab)
            for h2 in range(2):
                ql = o + h2 * 64
                qh = o + 128 + h2 * 32
                sc = o + 192 + h2 * 8
                yo = b * 256 + h2 * 128
                for l in range(32):
                    k = l // 16
                    lo = np.int32(W[r, ql + l])
                    lo2 = np.int32(W[r, ql + 32 + l])
                    h = np.int32(W[r, qh + l])
                    out[i, yo + l] = dd * F32(np.int8(W[r, sc + k])) * F32(((lo & 15) | ((h & 3) << 4)) - 32)
                    out[i, yo + 32 + l] = dd * F32(np.int8(W[r, sc + k + 2])) * F32(((lo2 & 15) | (((h >> 2) & 3) << 4)) - 32)
                    out[i, yo + 64 + l] = dd * F32(np.int8(W[r, sc + k + 4])) * F32(((lo >> 4) | (((h >> 4) & 3) << 4)) - 32)
                    out[i, yo + 96 + l] = dd * F32(np.int8(W[r, sc + k + 6])) * F32(((lo2 >> 4) | (((h >> 6) & 3) << 4)) - 32)


INT_KERNELS = {"Q4_0": (_ser_q4_0, _par_q4_0), "Q4_1": (_ser_q4_1, _par_q4_1), "Q8_0": (_ser_q8_0, _par_q8_0),
               "Q4_K": (_ser_q4_k, _par_q4_k), "Q6_K": (_ser_q6_k, _par_q6_k)}
DEQ_KERNELS = {"Q4_0": deq_q4_0, "Q4_1": deq_q4_1, "Q8_0": deq_q8_0, "Q4_K": deq_q4_k, "Q6_K": deq_q6_k}


def matmul_int(W: np.ndarray, fmt: str, act, out: np.ndarray) -> np.ndarray:
    """Integer path: ``out[t, r] = W[r] . a[t]`` with ``act`` from :func:`quantize_activations` for the
    format's vec_dot type. W: uint8 [R, row_bytes] in ggml layout."""
    ser, par = INT_KERNELS[fmt]
    qs, d, extra = act
    k = par if W.shape[0] * qs.shape[0] * qs.shape[1] >= PAR_MIN_MACS else ser
    if fmt in ("Q4_0", "Q8_0"):
        k(W, F16, qs, d, out)
    else:
        k(W, F16, qs, d, extra, out)
    return out


def block_mins(W: np.ndarray, fmt: str, r0: int, r1: int) -> np.ndarray:
    """The fp16 min ``m`` of every 32-block of rows [r0, r1) of a Q4_1 / Q5_1 matrix, as float32
    [rows, blocks]. With e from ``fake_quantize_activations(x, "Q8_1", with_s_error=True)``, ggml's
    integer product equals the tile product plus ``e @ mins.T`` (the m * s term of spec §11.3)."""
    ts = {"Q4_1": 20, "Q5_1": 24}[fmt]
    blocks = W[r0:r1].reshape(r1 - r0, -1, ts)
    bits = blocks[:, :, 2].astype(np.uint16) | (blocks[:, :, 3].astype(np.uint16) << 8)
    return F16[bits]


def dequantize_rows(W: np.ndarray, fmt: str, r0: int, out: np.ndarray) -> np.ndarray:
    """Dequantize rows ``r0 .. r0 + len(out)`` of W into ``out`` (float32 [n, K]), for fast formats."""
    if r0 < 0 or r0 + out.shape[0] > W.shape[0]:
        raise IndexError("row range outside the weight matrix")
    DEQ_KERNELS[fmt](W, F16, r0, out)
    return out
