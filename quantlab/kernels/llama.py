"""numba kernels for the non-matmul parts of a transformer forward pass: RMSNorm, RoPE (normal and NeoX,
frequency factors, magnitude scale) with the fp16 cache store, SwiGLU and GeGLU (attention:
:mod:`quantlab.kernels.attn`). Numerics are ggml-cpu's, bit for bit
(float32, sums of squares in double, fused multiply-adds where its AVX2 build fuses, its vector exp)."""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .ggml_float import fma32, v_expf, v_expf_ir

F32 = np.float32


@njit(cache=True)
def rms_norm(x, w, eps, out):
    """out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w  (ggml_rms_norm then the norm weight)."""
    rms_norm_rows(x, w, eps, out, 0, x.shape[0])


@njit(cache=True, nogil=True)
def rms_norm_rows(x, w, eps, out, r0, r1):
    """rms_norm of rows [r0, r1) (a piece for :func:`~quantlab.kernels._rows.run_rows`)."""
    E = x.shape[1]
    for t in range(r0, r1):
        s = 0.0
        for j in range(E):
            v = x[t, j] * x[t, j]
            s += np.float64(v)
        scale = F32(1.0) / np.sqrt(F32(s / E) + F32(eps))  # ggml: 1.0f/sqrtf(mean + eps), in float
        for j in range(E):
            out[t, j] = (x[t, j] * scale) * w[j]


@njit(cache=True, inline="always")
def _rope_rows(x, t, c, s, half, neox):
    """Rotate the pairs of every head of row t: (2i, 2i+1) ("normal"), or (i, i + half) (NeoX)."""
    for h in range(x.shape[1]):
        for i in range(half):
            i0 = i if neox else 2 * i
            i1 = i + half if neox else 2 * i + 1
            x0 = x[t, h, i0]
            x1 = x[t, h, i1]
            # ggml's rotate_pairs, x0*cos - x1*sin and x0*sin + x1*cos, as GCC contracts them
            # (-ffp-contract=fast): the second product rounded, the first fused with the add
            x[t, h, i0] = fma32(x0, c[i], -(x1 * s[i]))
            x[t, h, i1] = fma32(x0, s[i], x1 * c[i])


@njit(cache=True, inline="always")
def _rope_table(p, n_rot, theta_scale, freq_scale, ff, mscale, c, s):
    """ggml_rope_cache_init without YaRN: theta = p * theta_scale^i built by repeated float32
    multiplication; pair i turns by freq_scale * (theta / ff[i]) (ff: frequency factors, all 1 when
    the model has none), cos and sin times mscale."""
    theta = F32(p)
    for i in range(n_rot // 2):
        th = freq_scale * (theta / ff[i])
        c[i] = np.cos(th) * mscale
        s[i] = np.sin(th) * mscale
        theta = theta * theta_scale


@intrinsic
def _to_half_bits(typingctx, x):
    """float32 -> fp16 bits (uint16), round to nearest even, overflow to inf (fptrunc; what numpy's
    astype(float16) does)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return types.uint16(types.float32), codegen


@njit(cache=True)
def rope_store(q, k, v, pos, n_rot, theta_scale, freq_scale, ff, mscale, neox, kc, vc, p0):
    """One step of a layer for a few tokens: RoPE on the first n_rot values of every head of
    q [T, H, D] and k [T, Hkv, D] in place (cos/sin computed once per token for q and k, see
    _rope_table), then k and v stored into the fp16 caches kc/vc [n, Hkv, D] (uint16 bits) at
    positions p0..p0+T-1."""
    half = n_rot // 2
    c = np.empty(half, dtype=np.float32)
    s = np.empty(half, dtype=np.float32)
    for t in range(q.shape[0]):
        _rope_table(pos[t], n_rot, theta_scale, freq_scale, ff, mscale, c, s)
        _rope_rows(q, t, c, s, half, neox)
        _rope_rows(k, t, c, s, half, neox)
        for h in range(k.shape[1]):
            for d in range(k.shape[2]):
                kc[p0 + t, h, d] = _to_half_bits(k[t, h, d])
                vc[p0 + t, h, d] = _to_half_bits(v[t, h, d])


@intrinsic
def _half(typingctx, bits):
    """fp16 bits (uint16) -> float32, exact (fpext; vcvtph2ps on x86 with F16C)."""

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.uint16), codegen


@njit(cache=True)
def swiglu(g, u, out):
    """out = silu(g) * u as ggml_vec_swiglu_f32 (AVX2 + FMA) computes it: g / (1 + exp(0 - g)) * u with
    ggml's vector exp (ggml_float.v_expf) on each run of 8, libm's expf on the last F % 8."""
    swiglu_rows(g, u, out, 0, g.shape[0])


def _row_ptr16(context, builder, aty, aval, t, j):
    """<16 x float>* to element [t, j] of a 2-D float32 array (any row stride; elements contiguous)."""
    arr = context.make_array(aty)(context, builder, aval)
    s0 = builder.extract_value(arr.strides, 0)
    off = builder.add(builder.mul(t, s0), builder.mul(j, ir.Constant(t.type, 4)))
    p = builder.gep(builder.bitcast(arr.data, ir.IntType(8).as_pointer()), [off])
    return builder.bitcast(p, ir.VectorType(ir.FloatType(), 16).as_pointer())


@intrinsic
def _swiglu16(typingctx, g, u, out, t, j):
    """out[t, j:j+16] = g / (1 + v_expf(0 - g)) * u on 16 lanes (ggml_float.v_expf_ir: v_expf's operations
    lane by lane; the division and product rounded as the scalar code's)."""
    sig = types.void(g, u, out, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        gv, uv, ov, tv, jv = args
        ag, au, ao, _, _ = signature.args
        vt = ir.VectorType(ir.FloatType(), 16)
        x = builder.load(_row_ptr16(context, builder, ag, gv, tv, jv), align=4)
        y = builder.load(_row_ptr16(context, builder, au, uv, tv, jv), align=4)
        e = v_expf_ir(builder, builder.fsub(ir.Constant(vt, [0.0] * 16), x))
        r = builder.fmul(builder.fdiv(x, builder.fadd(ir.Constant(vt, [1.0] * 16), e)), y)
        builder.store(r, _row_ptr16(context, builder, ao, ov, tv, jv), align=4)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True)
def swiglu_rows(g, u, out, r0, r1):
    """swiglu of rows [r0, r1) (a piece for :func:`~quantlab.kernels._rows.run_rows`); runs of 16 with
    :func:`_swiglu16` where every array's elements are contiguous."""
    F = g.shape[1]
    F8 = F - F % 8
    vec = g.strides[1] == 4 and u.strides[1] == 4 and out.strides[1] == 4
    F16 = F8 - F8 % 16 if vec else 0
    for t in range(r0, r1):
        for j in range(0, F16, 16):
            _swiglu16(g, u, out, t, j)
        for j in range(F16, F8):
            x = g[t, j]
            out[t, j] = x / (F32(1) + v_expf(F32(0) - x)) * u[t, j]
        for j in range(F8, F):
            x = g[t, j]
            out[t, j] = x / (F32(1) + np.exp(-x)) * u[t, j]


@njit(cache=True)
def gelu_f32(x, out):
    """ggml_gelu_f32 (GELU-tanh) of every x as ggml-cpu computes it when it fills ggml_table_gelu_f16:
    0.5f*x*(1.0f + tanhf(SQRT_2_OVER_PI*x*(1.0f + GELU_COEF_A*x*x))) in float32 with libm's tanhf and
    the inner 1 + a*x*x fused (GCC's contraction); checked on every fp16 input against ggml's geglu."""
    a = F32(0.044715)
    c = F32(0.79788456080286535587989211986876)
    for i in range(x.shape[0]):
        v = x[i]
        out[i] = F32(0.5) * v * (F32(1) + np.tanh(c * v * fma32(a * v, v, F32(1))))


@njit(cache=True)
def geglu(g, u, table, out):
    """out = gelu(g) * u the way ggml's CPU op computes it (GGML_GELU_FP16): g <= -10 -> 0, g >= 10 ->
    g * u, else table[fp16 bits of g] * u with ``table`` the float32 of ggml_table_gelu_f16 (GELU-tanh
    of every fp16 value, rounded to fp16)."""
    T, F = g.shape
    for t in range(T):
        for j in range(F):
            x = g[t, j]
            if x <= F32(-10):
                out[t, j] = F32(0)
            elif x >= F32(10):
                out[t, j] = x * u[t, j]
            else:
                out[t, j] = table[_to_half_bits(x)] * u[t, j]
