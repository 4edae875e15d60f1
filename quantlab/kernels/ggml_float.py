"""float32 arithmetic as ggml-cpu's AVX2 + FMA build does it, for numba kernels that reproduce its ops
bit for bit: the fused multiply-add (:func:`fma32`), ggml's own vector exp (:func:`v_expf`, used by its
soft max, SiLU and SwiGLU instead of libm's expf) and the fp16 round trip of a store through F16C
(:func:`round16`).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

F32 = np.float32


@intrinsic
def fma32(typingctx, a, b, c):
    """a * b + c with one rounding (llvm.fma.f32; vfmadd on x86 with FMA)."""

    def codegen(context, builder, signature, args):
        f = ir.FloatType()
        fn = builder.module.declare_intrinsic("llvm.fma", [f], ir.FunctionType(f, [f, f, f]))
        return builder.call(fn, args)

    return types.float32(types.float32, types.float32, types.float32), codegen


@intrinsic
def _bits(typingctx, x):
    """The 32 bits of a float32, as an int64 in 0 .. 2^32-1."""

    def codegen(context, builder, signature, args):
        return builder.zext(builder.bitcast(args[0], ir.IntType(32)), ir.IntType(64))

    return types.int64(types.float32), codegen


@intrinsic
def _from_bits(typingctx, u):
    """The float32 whose bits are the low 32 bits of an int64."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.trunc(args[0], ir.IntType(32)), ir.FloatType())

    return types.float32(types.int64), codegen


@intrinsic
def round16(typingctx, x):
    """x rounded to fp16 (nearest even, overflow to inf) and back to float32: what a store through
    _mm256_cvtps_ph(x, 0) and a load through _mm256_cvtph_ps keep."""

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.fptrunc(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.float32), codegen


def _hexf(h: str) -> np.float32:
    return np.float32(float.fromhex(h))


# ggml_v_expf's constants, as written in vec.h (C hex floats)
_E_R, _E_LOG2E = _hexf("0x1.8p23"), _hexf("0x1.715476p+0")
_E_LN2_HI, _E_LN2_LO = _hexf("0x1.62e4p-1"), _hexf("0x1.7f7d1cp-20")
_E_C5, _E_C4, _E_C3 = _hexf("0x1.0e4020p-7"), _hexf("0x1.573e2ep-5"), _hexf("0x1.555e66p-3")
_E_C2, _E_C1 = _hexf("0x1.fffdb6p-2"), _hexf("0x1.ffffecp-1")


@njit(cache=True, inline="always")
def v_expf(x):
    """ggml_v_expf (ggml-cpu/vec.h, the AVX2 + FMA form), one lane: exp(x) by a degree-5 polynomial on
    the reduced argument, with its own handling of large |x| (0 for x -> -inf). Not libm's expf: the
    results differ in the last bits, and ggml's soft max uses this one."""
    M32 = 0xFFFFFFFF
    r = _E_R
    z = fma32(x, _E_LOG2E, r)
    n = z - r
    b = fma32(-n, _E_LN2_LO, fma32(-n, _E_LN2_HI, x))
    e = (_bits(z) << 23) & M32
    k = _from_bits((e + _bits(F32(1.0))) & M32)
    u = b * b
    j = fma32(fma32(fma32(_E_C5, b, _E_C4), u, fma32(_E_C3, b, _E_C2)), u, _E_C1 * b)
    an = abs(n)
    if not an > F32(126):
        return fma32(j, k, k)
    g = 0x82000000 if n <= F32(0) else 0
    s1 = _from_bits((g + 0x7F000000) & M32)
    if an > F32(192):
        return s1 * s1
    s2 = _from_bits((e - g) & M32)
    return fma32(s2, j, s2) * s1


def v_expf_ir(builder, x):
    """:func:`v_expf` on an LLVM float vector ``x`` (any width), lane by lane the same operations, its
    branches as selects (all three results computed, the one v_expf would return kept)."""
    vt = x.type
    n = vt.count
    vi = ir.VectorType(ir.IntType(32), n)
    fk = lambda c: ir.Constant(vt, [float(c)] * n)  # noqa: E731
    ik = lambda c: ir.Constant(vi, [c] * n)  # noqa: E731

    def call(name, *args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vt] * len(args)), f"{name}.v{n}f32")
        return builder.call(fn, list(args))

    def fma(a, b, c):
        return call("llvm.fma", a, b, c)

    bits = lambda v: builder.bitcast(v, vi)  # noqa: E731
    flt = lambda v: builder.bitcast(v, vt)  # noqa: E731
    z = fma(x, fk(_E_LOG2E), fk(_E_R))
    nn = builder.fsub(z, fk(_E_R))
    neg = builder.fneg(nn)
    b = fma(neg, fk(_E_LN2_LO), fma(neg, fk(_E_LN2_HI), x))
    e = builder.shl(bits(z), ik(23))
    k = flt(builder.add(e, bits(fk(1.0))))
    u = builder.fmul(b, b)
    j = fma(fma(fma(fk(_E_C5), b, fk(_E_C4)), u, fma(fk(_E_C3), b, fk(_E_C2))), u, builder.fmul(fk(_E_C1), b))
    an = call("llvm.fabs", nn)
    fast = fma(j, k, k)
    g = builder.select(builder.fcmp_ordered("<=", nn, fk(0.0)), ik(0x82000000 - (1 << 32)), ik(0))
    s1 = flt(builder.add(g, ik(0x7F000000)))
    big = builder.fmul(s1, s1)
    s2 = flt(builder.sub(e, g))
    mid = builder.fmul(fma(s2, j, s2), s1)
    slow = builder.select(builder.fcmp_ordered(">", an, fk(192.0)), big, mid)
    return builder.select(builder.fcmp_ordered(">", an, fk(126.0)), slow, fast)
