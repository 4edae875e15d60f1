"""LLVM vector code for numba: the 8-lane types and the integer block dot products the row kernels
of :mod:`quantlab.kernels.matmul` are built from.

What lives here changes with the instruction set, not with a format: the ``F32x8`` / ``I32x8`` numba
types (a row's accumulator held in a register), the host ISA pick (AVX512-VNNI, AVX2 or portable IR),
``_dot8`` (32 int8 products into 8 int32 lanes), byte loads and nibble / bit unpacking, and the two
factories that turn a block decode into an intrinsic (:func:`_fma_block` for 32-value blocks summed in
float lanes, :func:`_split_block` for super-block sub-blocks summed in int32 lanes). The format-specific
decodes built with them sit next to the row kernels in matmul.
"""

from __future__ import annotations

import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

F32 = np.float32

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
    if numba.config.CPU_NAME or numba.config.CPU_FEATURES:  # cross-/generic build: portable IR only
        return "generic"
    try:
        feats = llvm.get_host_cpu_features()
    except Exception:  # noqa: BLE001  (no feature map on this platform: stay portable)
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
        return _x86(
            builder,
            "llvm.x86.avx512.vpdpbusd.256",
            v8,
            [ir.Constant(v8, [0] * 8), builder.bitcast(codes, v8), builder.bitcast(acts, v8)],
        )
    pairs = _x86(builder, "llvm.x86.avx2.pmadd.ub.sw", _vec(_I16, 16), [codes, acts])
    return _x86(builder, "llvm.x86.avx2.pmadd.wd", v8, [pairs, _const(_I16, 16, 1)])


def _vfma(builder, a, b, c):
    """a * b + c on <8 x float> with one rounding (llvm.fma: vfmadd), as ggml's AVX2 dot products
    accumulate their blocks (``acc = _mm256_fmadd_ps(d, q, acc)``)."""
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_F32V, [_F32V] * 3), "llvm.fma.v8f32")
    return builder.call(fn, [a, b, c])


def _fma_block(decode, doc):
    """An intrinsic f(acc, d, w, wo, a, ao) -> fma(float(dot8(codes, a[ao:ao+32])), d, acc) (one rounding,
    like ggml's AVX2 kernels), where ``decode(context, builder, w type, w, wo) -> (<32 x i8> codes,
    signed)`` reads one block's codes from byte ``wo`` of w (flat offsets)."""

    def impl(typingctx, acc, d, w, wo, a, ao):
        _check_bytes(w, a)
        sig = f32x8(f32x8, types.float32, w, types.intp, a, types.intp)

        def codegen(context, builder, signature, args):
            accv, dv, wv, wov, av, aov = args
            codes, signed = decode(context, builder, signature.args[2], wv, wov)
            acts = _load_bytes(context, builder, signature.args[4], av, aov, 32)
            p = builder.sitofp(_dot8(builder, codes, signed, acts), _F32V)
            return _vfma(builder, p, _splat(builder, dv, 8), accv)

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
        sig = i32x8(i32x8, types.int32, types.int32, w, types.intp, types.int32, types.intp, types.int32, a, types.intp)

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
            sc = builder.shuffle_vector(
                _splat(builder, s0, 4), _splat(builder, s1, 4), ir.Constant(_I32V, list(range(8)))
            )
            return builder.add(ivv, builder.mul(p, sc))

        return sig, codegen

    impl.__doc__ = doc
    return intrinsic(impl)


@intrinsic
def _f16_at(typingctx, w, off):
    """The little-endian fp16 at flat byte ``off`` of a uint8 array, as float32 (exact: fpext half ->
    float, one vcvtph2ps on x86 with F16C; no 256 KB lookup table competing with the weights for cache)."""
    _check_bytes(w)
    sig = types.float32(w, types.intp)

    def codegen(context, builder, signature, args):
        p = builder.bitcast(
            _byte_ptr(context, builder, signature.args[0], args[0], args[1]), ir.HalfType().as_pointer()
        )
        return builder.fpext(builder.load(p, typ=ir.HalfType(), align=1), ir.FloatType())

    return sig, codegen
