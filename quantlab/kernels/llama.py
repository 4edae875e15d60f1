"""numba kernels for the non-matmul parts of a llama forward pass (used when few tokens run at once,
where numpy's per-call overhead would dominate): RMSNorm, RoPE, attention over an fp16 KV cache,
SwiGLU. Numerics follow ggml's CPU ops (float32, sums of squares in double)."""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

F32 = np.float32


@njit(cache=True)
def rms_norm(x, w, eps, out):
    """out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w  (ggml_rms_norm then the norm weight)."""
    T, E = x.shape
    for t in range(T):
        s = 0.0
        for j in range(E):
            v = x[t, j] * x[t, j]
            s += np.float64(v)
        scale = F32(1.0) / F32(np.sqrt(np.float64(F32(s / E)) + eps))
        for j in range(E):
            out[t, j] = (x[t, j] * scale) * w[j]


@njit(cache=True, inline="always")
def _rope_rows(x, t, c, s, half):
    for h in range(x.shape[1]):
        for i in range(half):
            x0 = x[t, h, 2 * i]
            x1 = x[t, h, 2 * i + 1]
            x[t, h, 2 * i] = x0 * c[i] - x1 * s[i]
            x[t, h, 2 * i + 1] = x0 * s[i] + x1 * c[i]


@njit(cache=True, inline="always")
def _rope_table(p, n_rot, theta_scale, freq_scale, c, s):
    theta = F32(p) * freq_scale
    for i in range(n_rot // 2):
        c[i] = np.cos(theta)
        s[i] = np.sin(theta)
        theta = theta * theta_scale


@intrinsic
def _to_half_bits(typingctx, x):
    """float32 -> fp16 bits (uint16), round to nearest even, overflow to inf (fptrunc; what numpy's
    astype(float16) does)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))
    return types.uint16(types.float32), codegen


@njit(cache=True)
def rope_store(q, k, v, pos, n_rot, theta_scale, freq_scale, kc, vc, p0):
    """One step of a layer for a few tokens: "normal" RoPE on q [T, H, D] and k [T, Hkv, D] in place
    (pairs (2i, 2i+1), theta = pos * theta_scale^i built by repeated float32 multiplication, ggml's
    rope cache; cos/sin computed once for q and k), then k and v stored into the fp16 caches
    kc/vc [n, Hkv, D] (uint16 bits) at positions p0..p0+T-1."""
    half = n_rot // 2
    c = np.empty(half, dtype=np.float32)
    s = np.empty(half, dtype=np.float32)
    for t in range(q.shape[0]):
        _rope_table(pos[t], n_rot, theta_scale, freq_scale, c, s)
        _rope_rows(q, t, c, s, half)
        _rope_rows(k, t, c, s, half)
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
def _widen_cache(c, n, out):
    """out[kh, j, :] = float32 of the fp16 cache row c[j, kh, :] for j < n (a loop LLVM vectorizes)."""
    Hkv, D = c.shape[1], c.shape[2]
    for j in range(n):
        for kh in range(Hkv):
            for d in range(D):
                out[kh, j, d] = _half(c[j, kh, d])


@njit(cache=True)
def attention(q, kc, vc, tab, pos0, scale, out):
    """Causal attention of T new queries q [T, H, D] (token t at position pos0 + t) over the fp16
    cache kc/vc [n, Hkv, D] (uint16 bits; ``tab``, an fp16 table, is not used any more: the rows are
    widened to float32 first, the table's lines would be evicted by the streamed weights between
    calls); GQA: head h reads kv head h // g. Each score is sum_d q[d] k[d] in d order; four keys are
    scored side by side (independent sums, same results)."""
    T, H, D = q.shape
    Hkv = kc.shape[1]
    g = H // Hkv
    N = pos0 + T
    kf = np.empty((Hkv, N, D), dtype=np.float32)
    vf = np.empty((Hkv, N, D), dtype=np.float32)
    _widen_cache(kc, N, kf)
    _widen_cache(vc, N, vf)
    sc = np.empty(N, dtype=np.float32)
    o = np.empty(D, dtype=np.float32)
    for th in range(T * H):
        t = th // H
        h = th % H
        kh = h // g
        n = pos0 + t + 1
        j = 0
        while j + 4 <= n:
            a0 = F32(0)
            a1 = F32(0)
            a2 = F32(0)
            a3 = F32(0)
            for d in range(D):
                qd = q[t, h, d]
                a0 += qd * kf[kh, j, d]
                a1 += qd * kf[kh, j + 1, d]
                a2 += qd * kf[kh, j + 2, d]
                a3 += qd * kf[kh, j + 3, d]
            sc[j] = a0 * scale
            sc[j + 1] = a1 * scale
            sc[j + 2] = a2 * scale
            sc[j + 3] = a3 * scale
            j += 4
        while j < n:
            acc = F32(0)
            for d in range(D):
                acc += q[t, h, d] * kf[kh, j, d]
            sc[j] = acc * scale
            j += 1
        mx = F32(-np.inf)
        for j in range(n):
            if sc[j] > mx:
                mx = sc[j]
        tot = 0.0
        for j in range(n):
            e = np.exp(sc[j] - mx)
            sc[j] = e
            tot += e
        inv = F32(1.0 / tot)
        for d in range(D):
            o[d] = F32(0)
        for j in range(n):
            p = sc[j] * inv
            for d in range(D):
                o[d] += p * vf[kh, j, d]
        for d in range(D):
            out[t, h, d] = o[d]


@njit(cache=True)
def swiglu(g, u, out):
    """out = silu(g) * u = g / (1 + exp(-g)) * u."""
    T, F = g.shape
    for t in range(T):
        for j in range(F):
            x = g[t, j]
            out[t, j] = x / (F32(1) + np.exp(-x)) * u[t, j]
