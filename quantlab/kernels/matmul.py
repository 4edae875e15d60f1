"""Matrix products straight from quantized blocks: what ggml's ``mul_mat`` does on the CPU.

ggml never expands a quantized weight matrix to float32. It quantizes the float32 activations to the
weight type's *vec_dot type* (spec §11.1: Q8_0 for Q4_0/Q5_0/Q8_0/IQ4_NL/..., Q8_1 for Q4_1/Q5_1, Q8_K
for the K- and IQ-quants) and then, per output element, sums exact integer products block by block and
combines the per-block sums with the two scales in float32 (spec §11.3)::

    Q4_1 x Q8_1:  y += (d_w * d_a) * sum_j q_w[j] * q_a[j]  +  m_w * s_a     (s_a = d_a * sum_j q_a[j])

Two paths live here, both with those numerics:

* **integer path** (few tokens, i.e. generation): numba kernels that read the weight bytes in place,
  for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL (32-blocks) and Q4_K, Q5_K, Q6_K, IQ4_XS (256-blocks):
  one row function per block family, the block decode picked by ``kind``. Like ggml's AVX2 code, the
  block products are kept as 8-lane vectors and accumulated in float x8 (one horizontal sum per
  row). Several matrices that read the same activations (Q, K, V) can run as one stacked product.
  Rows are spread over threads when that measures faster (:class:`ThreadPolicy`).
* **tile path** (prompt batches, and every other format): dequantize a tile of weight rows into a
  reusable float32 buffer and multiply with BLAS. The activations are first rounded through the
  vec_dot type ("fake-quantized": ``d_a * q_a``), so the product is, up to float32 summation order,
  the same sum as the integer path: ``sum (d_w q_w + m_w)(d_a q_a)``.

Neither path is bit-exact with llama.cpp (its AVX2 kernels accumulate in another order); the model
outputs agree to a few ulps per product, which is what perplexity comparisons need.
"""
from __future__ import annotations

from functools import lru_cache
from time import perf_counter

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

from ..errors import FormatError, ShapeError
from ..formats._iqgrid import kvalues_iq4nl
from ._fp import F16_TABLE, f16_to_f32, f32_to_f16

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


F16 = F16_TABLE   # fp16 bits -> float32 for all 65536 patterns (ggml_table_f32_f16): the kernels' one table


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
def act_q8_0(x, qs, d, s):
    """x float32 [T, K] -> qs int8 [T, K], d float32 [T, K/32] (the fp16-rounded scale, as float), and
    s[t, b] = sum(q) of the block as float32 (exact: |sum| <= 4064), for the integer kernels' offset
    terms (Q4_0 / Q5_0: sum (c - off) a = sum c a - off * sum a)."""
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
            s[t, b] = F32(isum)


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
        s = np.empty((T, K // 32), dtype=np.float32)
        act_q8_0(x, qs, d, s)
        return qs, d, s
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
# multiply with the int8 activations and add groups of 4 products into 8 int32 lanes (see _dot8).
# Integer sums are exact; the float side is described with the block loops below.
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


def _load_bytes(context, builder, aty, aval, off, n):
    """<n x i8> from byte ``off`` of the array."""
    return builder.load(_byte_ptr(context, builder, aty, aval, off), typ=_vec(_I8, n), align=1)


def _splat(builder, val, n):
    vt = _vec(val.type, n)
    v = builder.insert_element(ir.Constant(vt, ir.Undefined), val, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, ir.Constant(vt, ir.Undefined), ir.Constant(_vec(_I32, n), [0] * n))


def _check_bytes(*tys):
    for t in tys:
        if not (isinstance(t, types.Array) and t.dtype in (types.uint8, types.int8) and t.layout == "C"):
            raise TypeError("block dot products need C-contiguous uint8/int8 arrays")


def _nibbles16(builder, vw):
    """16 packed bytes -> 32 unsigned 4-bit codes (<32 x i8>): low nibbles, then high nibbles (the
    order of Q4_0, Q4_1, Q5_0, Q5_1 and IQ4_NL blocks)."""
    lo = builder.and_(vw, _const(_I8, 16, 15))
    hi = builder.lshr(vw, _const(_I8, 16, 4))
    return builder.shuffle_vector(lo, hi, ir.Constant(_vec(_I32, 32), list(range(32))))


def _nibble_at(builder, vw, shift):
    """(byte >> shift) & 15 lane by lane (shift: an i32 value, 0 or 4)."""
    n = vw.type.count
    return builder.and_(builder.lshr(vw, _splat(builder, builder.trunc(shift, _I8), n)), _const(_I8, n, 15))


def _fifth_bits_u32(builder, qh):
    """Q5_0 / Q5_1: lane j gets bit j of the 32-bit ``qh`` moved to bit 4 (<32 x i8>). The uint32 is
    reinterpreted as 32 one-bit lanes (lane j = bit j), which x86 turns into a mask register move."""
    bits = builder.bitcast(qh, _vec(ir.IntType(1), 32))
    return builder.shl(builder.zext(bits, _vec(_I8, 32)), _const(_I8, 32, 4))


def _table16(builder, q8, table):
    """Codes 0..15 -> the int8 values ``table[code]`` (IQ4_NL's non-linear grid) as <n x i8>: one
    byte shuffle (vpshufb, the table in each 16-byte half) on AVX2 hosts, else a chain of compare +
    select (portable vector IR)."""
    n = q8.type.count
    if ISA != "generic" and n == 32:
        tab = ir.Constant(_vec(_I8, 32), [int(table[i % 16]) for i in range(32)])
        return _x86(builder, "llvm.x86.avx2.pshuf.b", _vec(_I8, 32), [tab, q8])
    out = _const(_I8, n, int(table[0]))
    for v in range(1, 16):
        hit = builder.icmp_unsigned("==", q8, _const(_I8, n, v))
        out = builder.select(hit, _const(_I8, n, int(table[v])), out)
    return out




# ---------------------------------------------------------------------------------------------
# 32-value blocks accumulated in float vectors (the generation path's hot loop)
#
# For a block with scale product d = d_w * d_a, ggml's AVX2 kernels keep 8 int32 partial sums of the
# 32 products as a vector, convert it to float, multiply by d and add it to a float x8 accumulator;
# the one horizontal sum happens once per row. The intrinsics below do the same: a row's accumulator
# is an LLVM <8 x float> value (the numba type ``F32x8``) that flows through the block loop.
#
# The 32 products of a block go into 8 int32 lanes (lane j: 4 products). Which instruction does that
# is picked for the host when the code is compiled: one vpdpbusd (AVX512-VNNI), vpmaddubsw + vpmaddwd
# (AVX2), or portable widen-multiply-add vector IR (any other CPU, or numba told to build for a
# generic CPU). The u8 x s8 instructions need an unsigned operand: signed codes c are made |c| and
# the activation gets c's sign, which leaves every product c * a unchanged. All integer sums are exact
# and every path adds the same 4 products per lane, so the three give identical bytes.
# ---------------------------------------------------------------------------------------------

_F32V = ir.VectorType(ir.FloatType(), 8)
_I32V = ir.VectorType(ir.IntType(32), 8)
_VEC_LL = {"F32x8": _F32V, "I32x8": _I32V}


class VecType(types.Type):
    """Lanes held in a register, as numba values: F32x8 (8 float32, the per-row accumulator of the
    block loops) and I32x8 (8 int32, a super-block's scaled integer partial sums)."""

    def __init__(self, name):
        super().__init__(name=name)


@register_model(VecType)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VEC_LL[fe_type.name])


f32x8 = VecType("F32x8")
i32x8 = VecType("I32x8")


def _host_isa() -> str:
    """'vnni' | 'avx2' | 'generic': the widest integer dot instruction of the CPU numba compiles for."""
    import numba

    if numba.config.CPU_NAME or numba.config.CPU_FEATURES:   # cross-/generic build: portable IR only
        return "generic"
    try:
        import llvmlite.binding as llvm

        feats = llvm.get_host_cpu_features()
    except Exception:   # noqa: BLE001  (no feature map on this platform: stay portable)
        return "generic"
    if feats.get("avx512vnni") and feats.get("avx512vl"):
        return "vnni"
    if feats.get("avxvnni"):
        return "vnni"
    if feats.get("avx2"):
        return "avx2"
    return "generic"


ISA = _host_isa()


@intrinsic
def _vzero(typingctx):
    """An F32x8 of zeros."""
    def codegen(context, builder, signature, args):
        return ir.Constant(_F32V, [0.0] * 8)
    return f32x8(), codegen


@intrinsic
def _vsum(typingctx, v):
    """Sum of the 8 lanes as float32: halves added pairwise ((0+4)+(2+6)) + ((1+5)+(3+7))."""
    def codegen(context, builder, signature, args):
        x = args[0]
        for n in (4, 2, 1):
            lo = builder.shuffle_vector(x, x, ir.Constant(_vec(_I32, n), list(range(n))))
            hi = builder.shuffle_vector(x, x, ir.Constant(_vec(_I32, n), list(range(n, 2 * n))))
            x = builder.fadd(lo, hi)
        return builder.extract_element(x, ir.Constant(_I32, 0))
    return types.float32(f32x8), codegen


def _x86(builder, name, ret, args):
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, [a.type for a in args]), name)
    return builder.call(fn, args)


def _dot8(builder, codes, signed, acts, isa=None):
    """<32 x i8> weight codes (``signed``: int8, else uint8) times <32 x i8> int8 activations ->
    <8 x i32>, lane j = the 4 products 4j..4j+3 summed."""
    isa = isa or ISA
    v8 = _vec(_I32, 8)
    if isa == "generic":
        ext = builder.sext if signed else builder.zext
        p = builder.mul(ext(codes, _vec(_I32, 32)), builder.sext(acts, _vec(_I32, 32)))
        s = None
        for k in range(4):
            part = builder.shuffle_vector(p, p, ir.Constant(v8, list(range(k, 32, 4))))
            s = part if s is None else builder.add(s, part)
        return s
    if signed:
        zero = _const(_I8, 32, 0)
        neg = builder.icmp_signed("<", codes, zero)
        acts = builder.select(neg, builder.sub(zero, acts), acts)
        codes = builder.select(neg, builder.sub(zero, codes), codes)
    if isa == "vnni":
        return _x86(builder, "llvm.x86.avx512.vpdpbusd.256", v8,
                    [ir.Constant(v8, [0] * 8), builder.bitcast(codes, v8), builder.bitcast(acts, v8)])
    pairs = _x86(builder, "llvm.x86.avx2.pmadd.ub.sw", _vec(_I16, 16), [codes, acts])
    return _x86(builder, "llvm.x86.avx2.pmadd.wd", v8, [pairs, _const(_I16, 16, 1)])


def _fma_block(decode, doc):
    """An intrinsic f(acc, d, w, wo, a, ao) -> acc + float(dot8(codes, a[ao:ao+32])) * d, where
    ``decode(context, builder, w type, w, wo) -> (<32 x i8> codes, signed)`` reads one block's codes
    from byte ``wo`` of w (flat offsets)."""
    def impl(typingctx, acc, d, w, wo, a, ao):
        _check_bytes(w, a)
        sig = f32x8(f32x8, types.float32, w, types.intp, a, types.intp)

        def codegen(context, builder, signature, args):
            accv, dv, wv, wov, av, aov = args
            codes, signed = decode(context, builder, signature.args[2], wv, wov)
            acts = _load_bytes(context, builder, signature.args[4], av, aov, 32)
            p = builder.sitofp(_dot8(builder, codes, signed, acts), _F32V)
            return builder.fadd(accv, builder.fmul(p, _splat(builder, dv, 8)))
        return sig, codegen
    impl.__doc__ = doc
    return intrinsic(impl)


def _sub8(builder, q, off):
    return builder.sub(q, _const(_I8, 32, off))


def _q5_codes(context, builder, aty, wv, qo, ho):
    """Nibbles at byte qo | bit j of the uint32 at byte ho as bit 4 (Q5_0 / Q5_1)."""
    q = _nibbles16(builder, _load_bytes(context, builder, aty, wv, qo, 16))
    hp = builder.bitcast(_byte_ptr(context, builder, aty, wv, ho), _I32.as_pointer())
    return builder.or_(q, _fifth_bits_u32(builder, builder.load(hp, typ=_I32, align=1)))


def _at(builder, wo, k):
    return builder.add(wo, ir.Constant(wo.type, k))


def _nib_codes(context, builder, aty, wv, qo):
    return _nibbles16(builder, _load_bytes(context, builder, aty, wv, qo, 16))


# wo: the block's first byte. Layouts (spec §3): Q4_0 d|qs, Q4_1 d|m|qs, Q5_0 d|qh|qs, Q5_1 d|m|qh|qs,
# Q8_0 d|qs, IQ4_NL d|qs; the IQ4_XS form reads the 16 nibble bytes of one 32-block at wo itself.
_fma_q4_0 = _fma_block(lambda c, b, t, w, o: (_nib_codes(c, b, t, w, _at(b, o, 2)), False),
                       "Q4_0 block: the unsigned nibbles (the caller adds the -8 * sum(a) term).")
_fma_q4_1 = _fma_block(lambda c, b, t, w, o: (_nib_codes(c, b, t, w, _at(b, o, 4)), False),
                       "Q4_1 block: codes = nibbles (the min term m * s is added by the caller).")
_fma_q5_0 = _fma_block(lambda c, b, t, w, o: (_q5_codes(c, b, t, w, _at(b, o, 6), _at(b, o, 2)), False),
                       "Q5_0 block: the unsigned 5-bit codes (the caller adds the -16 * sum(a) term).")
_fma_q5_1 = _fma_block(lambda c, b, t, w, o: (_q5_codes(c, b, t, w, _at(b, o, 8), _at(b, o, 4)), False),
                       "Q5_1 block: 5-bit codes (min term added by the caller).")
_fma_q8_0 = _fma_block(lambda c, b, t, w, o: (_load_bytes(c, b, t, w, _at(b, o, 2), 32), True),
                       "Q8_0 block: int8 codes.")
_fma_iq4nl = _fma_block(lambda c, b, t, w, o: (_table16(b, _nib_codes(c, b, t, w, _at(b, o, 2)), IQ4NL_VALUES), True),
                        "IQ4_NL block: kvalues_iq4nl[nibble].")
_fma_iq4 = _fma_block(lambda c, b, t, w, o: (_table16(b, _nib_codes(c, b, t, w, o), IQ4NL_VALUES), True),
                      "The 16 nibble bytes of one IQ4_XS 32-block at wo: kvalues_iq4nl[nibble].")


# Super-block formats: the sub-block products times their small integer scales are summed as an
# int32 x8 vector over the whole super-block (exact), then converted and scaled once, like ggml's.

@intrinsic
def _izero(typingctx):
    """An I32x8 of zeros."""
    def codegen(context, builder, signature, args):
        return ir.Constant(_I32V, [0] * 8)
    return i32x8(), codegen


@intrinsic
def _fma_ivec(typingctx, acc, iv, d):
    """acc + float(iv) * d (F32x8, I32x8, float32)."""
    def codegen(context, builder, signature, args):
        accv, ivv, dv = args
        return builder.fadd(accv, builder.fmul(builder.sitofp(ivv, _F32V), _splat(builder, dv, 8)))
    return f32x8(f32x8, i32x8, types.float32), codegen


def _split_block(mask, off, doc):
    """An intrinsic f(iv, sc0, sc1, w, lo, sl, hi, sh, a, ao) -> iv + dot8(q - off, a[ao:ao+32]) * scales,
    lanes 0-3 (values 0-15) times sc0 and lanes 4-7 (values 16-31) times sc1, for 32 codes split over
    two byte runs: q_j = ((w[lo+j] >> sl) & 15) | (((w[hi+j] >> sh) & mask) << 4) (mask 0: nibbles only)."""
    def impl(typingctx, iv, sc0, sc1, w, lo, sl, hi, sh, a, ao):
        _check_bytes(w, a)
        sig = i32x8(i32x8, types.int32, types.int32, w, types.intp, types.int32, types.intp, types.int32,
                    a, types.intp)

        def codegen(context, builder, signature, args):
            ivv, s0, s1, wv, lov, slv, hiv, shv, av, aov = args
            aty = signature.args[3]
            q = _nibble_at(builder, _load_bytes(context, builder, aty, wv, lov, 32), slv)
            if mask:
                vh = _load_bytes(context, builder, aty, wv, hiv, 32)
                qh = builder.and_(builder.lshr(vh, _splat(builder, builder.trunc(shv, _I8), 32)), _const(_I8, 32, mask))
                q = builder.or_(q, builder.shl(qh, _const(_I8, 32, 4)))
            if off:
                q = _sub8(builder, q, off)
            p = _dot8(builder, q, bool(off), _load_bytes(context, builder, signature.args[8], av, aov, 32))
            sc = builder.shuffle_vector(_splat(builder, s0, 4), _splat(builder, s1, 4),
                                        ir.Constant(_I32V, list(range(8))))
            return builder.add(ivv, builder.mul(p, sc))
        return sig, codegen
    impl.__doc__ = doc
    return intrinsic(impl)


_blk_q4k = _split_block(0, 0, "Q4_K: 32 nibbles (shift 0 or 4); hi, sh unused.")
_blk_q5k = _split_block(1, 0, "Q5_K: 4 low bits from a nibble, bit 4 from bit ``sh`` of qh.")
_blk_q6k = _split_block(3, 32, "Q6_K: 4 low bits from a nibble, 2 high bits from qh, minus 32.")


# ---------------------------------------------------------------------------------------------
# integer matrix products: out[t, r] = W[r, :] . a[t, :], rows spread over threads
#
# Two families, one row function each: the 32-value block formats (activations Q8_0 / Q8_1: per block
# d and, for Q8_1, s) and the 256-value super-block formats (activations Q8_K: d and 16 bsums per
# super-block). ``kind`` picks the block decode; the per-block float combination is ggml's (spec §11.3).
# ---------------------------------------------------------------------------------------------

K_Q4_0, K_Q4_1, K_Q5_0, K_Q5_1, K_Q8_0, K_IQ4_NL = 0, 1, 2, 3, 4, 5
K_Q4_K, K_Q5_K, K_Q6_K, K_IQ4_XS = 10, 11, 12, 13
# format -> (kind, block bytes); every 32-block format has its fp16 d in bytes 0-1
_KINDS = {"Q4_0": (K_Q4_0, 18), "Q4_1": (K_Q4_1, 20), "Q5_0": (K_Q5_0, 22), "Q5_1": (K_Q5_1, 24),
          "Q8_0": (K_Q8_0, 34), "IQ4_NL": (K_IQ4_NL, 18),
          "Q4_K": (K_Q4_K, 144), "Q5_K": (K_Q5_K, 176), "Q6_K": (K_Q6_K, 210), "IQ4_XS": (K_IQ4_XS, 136)}
IQ4NL_VALUES = tuple(int(v) for v in kvalues_iq4nl())


@intrinsic
def _f16_at(typingctx, w, off):
    """The little-endian fp16 at flat byte ``off`` of a uint8 array, as float32 (exact: fpext half ->
    float, one vcvtph2ps on x86 with F16C; no 256 KB lookup table competing with the weights for cache)."""
    _check_bytes(w)
    sig = types.float32(w, types.intp)

    def codegen(context, builder, signature, args):
        p = builder.bitcast(_byte_ptr(context, builder, signature.args[0], args[0], args[1]),
                            ir.HalfType().as_pointer())
        return builder.fpext(builder.load(p, typ=ir.HalfType(), align=1), ir.FloatType())
    return sig, codegen


@njit(cache=True, inline="always")
def _h(W, r, o, tab):
    """fp16 at byte o of row r as float32 (``tab``, the fp16 table, is not needed any more)."""
    return _f16_at(W, r * W.shape[1] + o)


@njit(cache=True, inline="always")
def _row_32(kind, ts, r, W, qs, d, s, out, c):
    """Row r of W (a 32-value block format) times T activation rows into out[:, c] (Q8_0: s = sum(q)
    per block; Q8_1: s = the block sums d * sum(q), fp16-rounded): per block acc += float(int
    products) * (d_w * d_a) in 8 float lanes, plus in a scalar the min term m_w * s of Q4_1 / Q5_1 or
    the offset term (d_w * d_a) * (-off * sum(q)) of Q4_0 / Q5_0, whose codes are taken unsigned."""
    R, rb = W.shape
    nb = rb // ts
    T, K = qs.shape
    for t in range(T):
        acc = _vzero()
        accm = F32(0)
        for b in range(nb):
            wo = r * rb + b * ts
            ao = t * K + b * 32
            dd = _f16_at(W, wo) * d[t, b]
            if kind == K_Q4_0:       # codes q - 8: d (sum q a) + d (-8 sum a), like Q4_1's m * s
                acc = _fma_q4_0(acc, dd, W, wo, qs, ao)
                accm += dd * (F32(-8) * s[t, b])
            elif kind == K_Q4_1:
                acc = _fma_q4_1(acc, dd, W, wo, qs, ao)
                accm += _f16_at(W, wo + 2) * s[t, b]
            elif kind == K_Q5_0:     # codes q - 16
                acc = _fma_q5_0(acc, dd, W, wo, qs, ao)
                accm += dd * (F32(-16) * s[t, b])
            elif kind == K_Q5_1:
                acc = _fma_q5_1(acc, dd, W, wo, qs, ao)
                accm += _f16_at(W, wo + 2) * s[t, b]
            elif kind == K_Q8_0:
                acc = _fma_q8_0(acc, dd, W, wo, qs, ao)
            else:
                acc = _fma_iq4nl(acc, dd, W, wo, qs, ao)
        out[t, c] = _vsum(acc) + accm


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


@njit(cache=True, inline="always")
def _sb_q45_k(five, r, W, o, qs, ao, bsums, t, b):
    """Q4_K / Q5_K super-block: (sum_j sc_j * (q.a of sub-block j) as I32x8, sum_j m_j * bsums_j)."""
    rb = W.shape[1]
    qo = r * rb + o + (48 if five else 16)
    ho = r * rb + o + 16
    iv = _izero()
    summs = np.int32(0)
    for jj in range(4):          # 4 chunks of 64 values: low nibbles, then high nibbles
        sc0, m0 = _scale_min_k4(W, r, o + 4, 2 * jj)
        sc1, m1 = _scale_min_k4(W, r, o + 4, 2 * jj + 1)
        wo = qo + jj * 32
        a0 = ao + jj * 64
        if five:                 # bit 2jj / 2jj+1 of qh[l] is bit 4 of value 64jj + l / 64jj + 32 + l
            iv = _blk_q5k(iv, sc0, sc0, W, wo, np.int32(0), ho, np.int32(2 * jj), qs, a0)
            iv = _blk_q5k(iv, sc1, sc1, W, wo, np.int32(4), ho, np.int32(2 * jj + 1), qs, a0 + 32)
        else:
            iv = _blk_q4k(iv, sc0, sc0, W, wo, np.int32(0), wo, np.int32(0), qs, a0)
            iv = _blk_q4k(iv, sc1, sc1, W, wo, np.int32(4), wo, np.int32(0), qs, a0 + 32)
        bo = b * 16 + jj * 4
        summs = np.int32(summs + m0 * (bsums[t, bo] + bsums[t, bo + 1])
                         + m1 * (bsums[t, bo + 2] + bsums[t, bo + 3]))
    return iv, summs


@njit(cache=True, inline="always")
def _sb_q6_k(r, W, o, qs, ao):
    """Q6_K super-block: sum over its 16 sub-blocks of int8 scale * sum (q - 32) * a, as I32x8."""
    rb = W.shape[1]
    iv = _izero()
    for n in range(2):           # two halves of 128 values, each 4 runs of 32
        ql = r * rb + o + n * 64
        qh = r * rb + o + 128 + n * 32
        sc = o + 192 + n * 8
        a0 = ao + n * 128
        for c in range(4):       # run c: low (c < 2) or high nibbles of ql[32 * (c % 2) ...], qh bits 2c;
            s0 = np.int32(np.int8(W[r, sc + 2 * c]))          # values 0-15 scale 2c, 16-31 scale 2c + 1
            s1 = np.int32(np.int8(W[r, sc + 2 * c + 1]))
            iv = _blk_q6k(iv, s0, s1, W, ql + 32 * (c % 2), np.int32(4 * (c // 2)), qh, np.int32(2 * c), qs, a0 + 32 * c)
    return iv


@njit(cache=True, inline="always")
def _row_256(kind, ts, r, W, qs, d, bsums, out, c):
    """Row r of W (a 256-value super-block format) times T Q8_K activation rows into out[:, c]."""
    R, rb = W.shape
    nb = rb // ts
    T, K = qs.shape
    for t in range(T):
        acc = F32(0)             # Q4_K / Q5_K min terms
        accv = _vzero()
        for b in range(nb):
            o = b * ts
            ao = t * K + b * 256
            if kind == K_Q6_K:       # (d * dy) * isum, d at the end of the block
                accv = _fma_ivec(accv, _sb_q6_k(r, W, o, qs, ao), _h(W, r, o + 208, F16) * d[t, b])
            elif kind == K_IQ4_XS:   # per 32-block: (dx * dy * (ls - 32)) * isum
                d4d8 = _h(W, r, o, F16) * d[t, b]
                sh = np.int32(W[r, o + 2]) | (np.int32(W[r, o + 3]) << 8)
                for ib in range(8):
                    ls = ((np.int32(W[r, o + 4 + ib // 2]) >> (4 * (ib % 2))) & 15) | (((sh >> (2 * ib)) & 3) << 4)
                    accv = _fma_iq4(accv, d4d8 * F32(ls - 32), W, r * rb + o + 8 + 16 * ib, qs, ao + 32 * ib)
            else:                    # Q4_K / Q5_K: (dy * d) * isum - (dy * dmin) * summs
                iv, summs = _sb_q45_k(kind == K_Q5_K, r, W, o, qs, ao, bsums, t, b)
                accv = _fma_ivec(accv, iv, d[t, b] * _h(W, r, o, F16))
                acc -= (d[t, b] * _h(W, r, o + 2, F16)) * F32(summs)
        out[t, c] = _vsum(accv) + acc


# serial and threaded drivers (separate functions so that numba caches both). Whether threads pay off
# depends on the machine's load more than on the product: on a quiet machine two threads halve a 576 x 1536
# matvec; on a shared, busy one a worker that is not scheduled stalls the join for milliseconds and
# everything is faster on one thread. ThreadPolicy decides by measuring (see below).
PAR_MIN_MACS = 1 << 18     # smaller products always run on one thread


@njit(cache=True, inline="always")
def _n_rows(Ws):
    n = 0
    for i in range(len(Ws)):
        n += Ws[i].shape[0]
    return n


# Ws: a tuple of weight matrices whose rows are stacked into the columns of out (Q, K and V of a layer
# in one pass: one thread fork/join instead of three), kinds / tss their formats. A span [c0, c1) of
# output columns runs matrix by matrix, so each matrix and its format are fetched from the tuples once.
@njit(cache=True)
def _rows_32(kind, ts, W, qs, d, s, out, r0, r1, base):
    for r in range(r0, r1):
        _row_32(kind, ts, r, W, qs, d, s, out, base + r)


@njit(cache=True)
def _rows_256(kind, ts, W, qs, d, bsums, out, r0, r1, base):
    for r in range(r0, r1):
        _row_256(kind, ts, r, W, qs, d, bsums, out, base + r)


@njit(cache=True)
def _span_32(kinds, tss, Ws, qs, d, s, out, c0, c1):
    base = 0
    for i in range(len(Ws)):
        R = Ws[i].shape[0]
        _rows_32(kinds[i], tss[i], Ws[i], qs, d, s, out, max(c0 - base, 0), min(c1 - base, R), base)
        base += R


@njit(cache=True)
def _span_256(kinds, tss, Ws, qs, d, bsums, out, c0, c1):
    base = 0
    for i in range(len(Ws)):
        R = Ws[i].shape[0]
        _rows_256(kinds[i], tss[i], Ws[i], qs, d, bsums, out, max(c0 - base, 0), min(c1 - base, R), base)
        base += R


@njit(cache=True, parallel=True)
def _par_32(kinds, tss, Ws, qs, d, s, out, nthreads):
    n = _n_rows(Ws)
    m = min(n, nthreads)                   # one contiguous span of rows per thread
    for j in prange(m):
        _span_32(kinds, tss, Ws, qs, d, s, out, j * n // m, (j + 1) * n // m)


@njit(cache=True)
def _ser_32(kinds, tss, Ws, qs, d, s, out, nthreads):
    _span_32(kinds, tss, Ws, qs, d, s, out, 0, _n_rows(Ws))


@njit(cache=True, parallel=True)
def _par_256(kinds, tss, Ws, qs, d, bsums, out, nthreads):
    n = _n_rows(Ws)
    m = min(n, nthreads)
    for j in prange(m):
        _span_256(kinds, tss, Ws, qs, d, bsums, out, j * n // m, (j + 1) * n // m)


@njit(cache=True)
def _ser_256(kinds, tss, Ws, qs, d, bsums, out, nthreads):
    _span_256(kinds, tss, Ws, qs, d, bsums, out, 0, _n_rows(Ws))

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


class ThreadPolicy:
    """Serial or threaded for each (kernel, size class), chosen from measured speed.

    Every call reports its multiply-adds per second to :meth:`record`; per key an exponential moving
    average is kept for each mode, and :meth:`choose` takes the faster one. The slower mode is re-tried
    now and then (after ``explore`` calls, the interval doubling each time it loses again, up to
    ``max_explore``), so a machine that gets quiet (or busy) is noticed. Only the choice between two
    runs of the same row kernels depends on timing; the results are identical either way."""

    def __init__(self, explore: int = 16, max_explore: int = 4096, alpha: float = 0.3):
        self.explore, self.max_explore, self.alpha = explore, max_explore, alpha
        self.rate: dict = {}      # key -> [serial MACs/s or None, threaded MACs/s or None]
        self.wait: dict = {}      # key -> [calls until the next try of the slower mode, interval]

    @staticmethod
    def key(kind: int, macs: int):
        return kind, int(macs).bit_length()

    def choose(self, key) -> bool:
        r = self.rate.setdefault(key, [None, None])
        if r[0] is None or r[1] is None:
            return r[0] is not None          # measure serial first, then threaded
        best = r[1] > r[0]
        w = self.wait.setdefault(key, [self.explore, self.explore])
        w[0] -= 1
        if w[0] > 0:
            return best
        return not best                      # time to re-try the slower mode

    def record(self, key, parallel: bool, macs: int, seconds: float) -> None:
        r = self.rate.setdefault(key, [None, None])
        v = macs / max(seconds, 1e-9)
        was_best = None if None in r else (r[1] > r[0]) == parallel
        i = int(parallel)
        r[i] = v if r[i] is None else r[i] + self.alpha * (v - r[i])
        w = self.wait.get(key)
        if w is not None and w[0] <= 0 and was_best is False:   # that was an exploration
            still_worse = (r[1] > r[0]) != parallel
            w[1] = min(self.max_explore, w[1] * 2) if still_worse else self.explore
            w[0] = w[1]


POLICY = ThreadPolicy()
INT_KERNELS = _KINDS       # formats with an integer (generation-path) kernel
DEQ_KERNELS = {"Q4_0": deq_q4_0, "Q4_1": deq_q4_1, "Q8_0": deq_q8_0, "Q4_K": deq_q4_k, "Q6_K": deq_q6_k}


MAX_STACK = 3              # matrices per stacked product (Q, K, V); fewer are padded with empty ones


@lru_cache(maxsize=None)
def _stack_kinds(fmts: tuple):
    """(kinds, block sizes), padded to MAX_STACK entries: the drivers always see tuples of one length,
    so each compiles once (every extra tuple length would be another cold compile of the whole kernel)."""
    if not 1 <= len(fmts) <= MAX_STACK:
        raise ShapeError(f"matmul_int stacks 1 to {MAX_STACK} matrices, got {len(fmts)}")
    ks = [INT_KERNELS[f] for f in fmts]
    if len({k < K_Q4_K for k, _ in ks}) != 1:
        raise FormatError("matmul_int: stacked matrices must all be 32-value or all 256-value block formats "
                          f"(got {', '.join(fmts)})")
    ks += [ks[0]] * (MAX_STACK - len(ks))
    return tuple(k for k, _ in ks), tuple(t for _, t in ks)


@lru_cache(maxsize=None)
def _thread_count():
    from ..api import _thread_count_fns   # numba's raw per-thread getter (0.1-0.3 us, not 0.7-4 us)

    return _thread_count_fns()[0]


def _num_threads() -> int:
    return _thread_count()()


def _readonly(w):
    v = w.view()
    v.flags.writeable = False
    return v


def matmul_int(W, fmt, act, out: np.ndarray, parallel: bool | None = None) -> np.ndarray:
    """Integer path: ``out[t, r] = W[r] . a[t]`` with ``act`` from :func:`quantize_activations` for the
    format's vec_dot type. W: uint8 [R, row_bytes] in ggml layout, or a tuple of up to MAX_STACK such
    matrices (``fmt`` then a tuple of their formats, all with the same vec_dot type and block family)
    whose rows are stacked into out's columns. ``parallel``: spread rows over threads or not; default:
    products under PAR_MIN_MACS multiply-adds run on one thread, bigger ones as :data:`POLICY` (a
    :class:`ThreadPolicy`) finds faster."""
    if isinstance(W, tuple):
        kinds, tss = _stack_kinds(fmt)
        rows = 0
        for w in W:
            rows += w.shape[0]
        if len({w.flags.writeable for w in W}) > 1:      # one array type in the tuple: all read-only views
            W = tuple(_readonly(w) for w in W)
        W = W + (W[0][:0],) * (MAX_STACK - len(W))
    else:
        kinds, tss = _stack_kinds((fmt,))
        rows = W.shape[0]
        W = (W,) + (W[:0],) * (MAX_STACK - 1)
    qs, d, extra = act
    run = (_par_32, _ser_32) if kinds[0] < K_Q4_K else (_par_256, _ser_256)
    nt = _num_threads()
    if parallel is not None:
        (run[0] if parallel else run[1])(kinds, tss, W, qs, d, extra, out, nt)
        return out
    macs = rows * qs.shape[0] * qs.shape[1]
    if macs < PAR_MIN_MACS or nt < 2:
        run[1](kinds, tss, W, qs, d, extra, out, nt)
        return out
    key = POLICY.key(kinds[0], macs)
    par = POLICY.choose(key)
    t0 = perf_counter()
    (run[0] if par else run[1])(kinds, tss, W, qs, d, extra, out, nt)
    POLICY.record(key, par, macs, perf_counter() - t0)
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
