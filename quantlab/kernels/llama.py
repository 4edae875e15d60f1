"""numba kernels for the non-matmul parts of a llama forward pass (used when few tokens run at once,
where numpy's per-call overhead would dominate): RMSNorm, RoPE, attention over an fp16 KV cache,
SwiGLU. Numerics follow ggml's CPU ops (float32, sums of squares in double)."""
from __future__ import annotations

import numpy as np
from numba import njit

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


@njit(cache=True)
def rope(x, pos, n_rot, theta_scale, freq_scale):
    """In place "normal" RoPE on x [T, H, D]: pairs (2i, 2i+1), theta = pos * theta_scale^i built by
    repeated float32 multiplication (ggml's rope cache)."""
    T, H, D = x.shape
    half = n_rot // 2
    c = np.empty(half, dtype=np.float32)
    s = np.empty(half, dtype=np.float32)
    for t in range(T):
        theta = F32(pos[t]) * freq_scale
        for i in range(half):
            c[i] = np.cos(theta)
            s[i] = np.sin(theta)
            theta = theta * theta_scale
        for h in range(H):
            for i in range(half):
                x0 = x[t, h, 2 * i]
                x1 = x[t, h, 2 * i + 1]
                x[t, h, 2 * i] = x0 * c[i] - x1 * s[i]
                x[t, h, 2 * i + 1] = x0 * s[i] + x1 * c[i]


@njit(cache=True)
def attention(q, kc, vc, tab, pos0, scale, out):
    """Causal attention of T new queries q [T, H, D] (token t at position pos0 + t) over the fp16
    cache kc/vc [n, Hkv, D] (uint16 bits, decoded through ``tab``); GQA: head h reads kv head h // g."""
    T, H, D = q.shape
    Hkv = kc.shape[1]
    g = H // Hkv
    for th in range(T * H):
        t = th // H
        h = th % H
        kh = h // g
        n = pos0 + t + 1
        sc = np.empty(n, dtype=np.float32)
        mx = F32(-np.inf)
        for j in range(n):
            acc = F32(0)
            for d in range(D):
                acc += q[t, h, d] * tab[kc[j, kh, d]]
            acc *= scale
            sc[j] = acc
            if acc > mx:
                mx = acc
        tot = 0.0
        for j in range(n):
            e = np.exp(sc[j] - mx)
            sc[j] = e
            tot += e
        inv = F32(1.0 / tot)
        for d in range(D):
            out[t, h, d] = F32(0)
        for j in range(n):
            p = sc[j] * inv
            for d in range(D):
                out[t, h, d] += p * tab[vc[j, kh, d]]


@njit(cache=True)
def swiglu(g, u, out):
    """out = silu(g) * u = g / (1 + exp(-g)) * u."""
    T, F = g.shape
    for t in range(T):
        for j in range(F):
            x = g[t, j]
            out[t, j] = x / (F32(1) + np.exp(-x)) * u[t, j]
