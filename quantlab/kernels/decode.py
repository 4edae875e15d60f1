"""One generated token in one compiled call: the decode path without the interpreter in between.

A layer of a one-token forward pass is about a dozen small steps (norm, activation quantization,
Q/K/V product, RoPE + cache store, attention, output product, residual, norm, quantization, gate/up
product, SwiGLU, quantization, down product, residual). Called one by one from Python each costs a few
microseconds of dispatch and a numpy temporary, which at SmolLM2's size (30 layers, ~8-10 ms a token
on 2 threads) is a sizeable share of the token. Here :func:`token` runs every layer and then the
output norm and output product as compiled code, one call a token; a layer is

* :func:`attn_in`: ``h = rms_norm(x) * attn_norm``; Q, K, V = one stacked integer product of h (or
  one fused Q|K|V matrix, phi3), + the Q/K/V biases (qwen2); per-head RMSNorm of q and k (qwen3,
  gemma3); RoPE on q and k, k and v stored in the fp16 cache -> q; q * scale (phi3, gemma3);
* kernels.attn's few-row attention (ggml's one_chunk numerics; its query rows on threads from
  :data:`ATTN_PAR_MIN` (query row, key) pairs on);
* :func:`attn_out_ffn`: ``x += Wo a`` (Wo a normed first: gemma3's post-attention norm);
  ``h = rms_norm(x) * ffn_norm``; gate, up = one stacked product (or one fused gate|up matrix, phi3);
  ``x += Wdown (act(gate) * up)`` (SwiGLU, or GeGLU for gemma3; the down product normed first:
  gemma3's post-FFN norm), x updated in place.

Covered: the layers of all five families (llama, qwen2, qwen3, gemma3, phi3; gemma3's embedding scale
is applied in Python before the call). A model with output-projection or FFN biases, or a format mix
without one stacked integer product, runs the general forward (Model._decode_plan returns None).

Every step is the same kernel the step-by-step path calls (kernels.llama's rms_norm / rope_store /
swiglu, kernels.act's quantizers, kernels.matmul's row drivers, kernels.attn's rows), in the same order
on the same values, so the outputs are bit-identical to it; only the calls between them are gone.
Measured against the two-calls-a-layer version (one Python call per layer half plus attention), same
run, load 3.7-4.5, median CPU per token of 100 (tools/tg_ab.py): SmolLM2 Q4_1 19.2-19.8 -> 16.7-16.8 ms,
Q8_0 24.3-24.5 -> 20.3-20.4, Q4_0 18.0-18.5 -> 15.0 (with multirow's unsigned-code dot products).

A product is described by ``(Ws, kinds, tss, vt)``: a tuple of matmul.MAX_STACK weight matrices
(unused ones empty), their row-kernel kinds and block sizes, and the activation type (VT_Q8_0,
VT_Q8_1, VT_Q8_K). ``par``: run the products' rows on numba's threads (``nt`` of them) or serially.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import attn as fa
from . import llama as lk
from . import matmul as mm
from .act import act_q8_0, act_q8_1, act_q8_k

VT_Q8_0, VT_Q8_1, VT_Q8_K = 0, 1, 2
VT_CODES = {"Q8_0": VT_Q8_0, "Q8_1": VT_Q8_1, "Q8_K": VT_Q8_K}


@njit(cache=True)
def _product(x, Ws, kinds, tss, vt, out, par, nt):
    """out[t, :] = x[t] times the stacked rows of Ws (the integer path of matmul.matmul_int)."""
    T, K = x.shape
    qs = np.empty((T, K), dtype=np.int8)
    d = np.empty((T, K // 32), dtype=np.float32)
    if vt == VT_Q8_K:
        bs = np.empty((T, K // 16), dtype=np.int32)
        act_q8_k(x, qs, d, bs)
        if par:
            mm._par_256(kinds, tss, Ws, qs, d, bs, out, nt)
        else:
            mm._ser_256(kinds, tss, Ws, qs, d, bs, out, nt)
    else:
        s = np.empty((T, K // 32), dtype=np.float32)
        if vt == VT_Q8_1:
            act_q8_1(x, qs, d, s)
        else:
            act_q8_0(x, qs, d, s)
        if par:
            mm._par_32(kinds, tss, Ws, qs, d, s, out, nt)
        else:
            mm._ser_32(kinds, tss, Ws, qs, d, s, out, nt)


@njit(cache=True)
def _add_bias(y, c0, b):
    """y[t, c0 + i] += b[i] for every row t (nothing when b is empty: no bias)."""
    for t in range(y.shape[0]):
        for i in range(b.shape[0]):
            y[t, c0 + i] = y[t, c0 + i] + b[i]


@njit(cache=True)
def _head_norm(x, w, eps):
    """RMSNorm over each head's D values of x [T, n, D] (rows of D: kernels.llama.rms_norm)."""
    T, n, D = x.shape
    out = np.empty((T * n, D), dtype=np.float32)
    lk.rms_norm(x.reshape(T * n, D), w, eps, out)
    return out.reshape(T, n, D)


@njit(cache=True)
def attn_in(
    x,
    norm_w,
    eps,
    Ws,
    kinds,
    tss,
    vt,
    bq,
    bk,
    bv,
    qn,
    kn,
    H,
    Hkv,
    D,
    pos,
    n_rot,
    theta_scale,
    freq_scale,
    ff,
    mscale,
    neox,
    kc,
    vc,
    p0,
    par,
    nt,
):
    """Attention input of a layer for x [T, E]: returns q [T, H, D] (RoPE applied); k, v (RoPE on k)
    are stored into the fp16 caches kc / vc at positions p0 .. p0 + T - 1. bq / bk / bv: the Q, K, V
    biases (qwen2), qn / kn: the per-head q / k RMSNorm weights (qwen3), each empty when absent."""
    T = x.shape[0]
    h = np.empty_like(x)
    lk.rms_norm(x, norm_w, eps, h)
    nq, nk = H * D, Hkv * D
    y = np.empty((T, nq + 2 * nk), dtype=np.float32)
    _product(h, Ws, kinds, tss, vt, y, par, nt)  # Q | K | V, one stacked product
    _add_bias(y, 0, bq)  # + biases (qwen2), float32 adds as the general forward's ``q += bq``
    _add_bias(y, nq, bk)
    _add_bias(y, nq + nk, bv)
    q = np.empty((T, H, D), dtype=np.float32)
    k = np.empty((T, Hkv, D), dtype=np.float32)
    v = np.empty((T, Hkv, D), dtype=np.float32)
    for t in range(T):
        for i in range(nq):
            q[t, i // D, i % D] = y[t, i]
        for i in range(nk):
            k[t, i // D, i % D] = y[t, nq + i]
            v[t, i // D, i % D] = y[t, nq + nk + i]
    if qn.shape[0] > 0:  # per-head q, k RMSNorm before RoPE (qwen3), as the general forward's ops.head_norm
        q = _head_norm(q, qn, eps)
        k = _head_norm(k, kn, eps)
    lk.rope_store(q, k, v, pos, n_rot, theta_scale, freq_scale, ff, mscale, neox, kc, vc, p0)
    return q


@njit(cache=True)
def attn_out_ffn(
    x, a, Wo, ko, tso, vto, post_attn_w, norm_w, eps, Wgu, kgu, tsgu, vtgu, F, gelu_tab, Wd, kd, tsd, vtd,
    post_ffn_w, par, nt,
):  # fmt: skip
    """The rest of the layer, x [T, E] updated in place: x += Wo a; h = rms_norm(x) * norm_w;
    gate | up = Wgu h (gate rows first, F each); x += Wd (act(gate) * up). post_attn_w / post_ffn_w:
    gemma3's norms of Wo a and of the down product before each residual (empty: none); gelu_tab:
    kernels.llama.geglu's table (gemma3's GeGLU; empty: SwiGLU)."""
    T, E = x.shape
    y = np.empty((T, E), dtype=np.float32)
    _product(a, Wo, ko, tso, vto, y, par, nt)  # attention output projection
    if post_attn_w.shape[0] > 0:  # gemma3: post-attention norm
        y = _norm(y, post_attn_w, eps)
    for t in range(T):  # residual
        for j in range(E):
            x[t, j] = x[t, j] + y[t, j]
    h = _norm(x, norm_w, eps)  # FFN input norm
    gu = np.empty((T, 2 * F), dtype=np.float32)
    _product(h, Wgu, kgu, tsgu, vtgu, gu, par, nt)  # gate | up
    g = np.ascontiguousarray(gu[:, :F])
    u = np.ascontiguousarray(gu[:, F:])
    if gelu_tab.shape[0] > 0:  # act(gate) * up
        lk.geglu(g, u, gelu_tab, g)
    else:
        lk.swiglu(g, u, g)
    _product(g, Wd, kd, tsd, vtd, y, par, nt)  # down projection
    if post_ffn_w.shape[0] > 0:  # gemma3: post-FFN norm
        y = _norm(y, post_ffn_w, eps)
    for t in range(T):  # residual
        for j in range(E):
            x[t, j] = x[t, j] + y[t, j]


@njit(cache=True)
def _norm(x, w, eps):
    """rms_norm(x) * w into a new array (kernels.llama.rms_norm)."""
    h = np.empty_like(x)
    lk.rms_norm(x, w, eps, h)
    return h


@njit(cache=True)
def _scale(q, scale):
    """q [T, H, D] *= scale in place."""
    T, H, D = q.shape
    for t in range(T):
        for h in range(H):
            for d in range(D):
                q[t, h, d] = q[t, h, d] * scale


# attention's query rows run on threads from this many (query row, key) pairs on (a token's rows at a
# short context cost less than waking a thread)
ATTN_PAR_MIN = 256


@njit(cache=True)
def token(
    x, layers, kc, vc, pos, p0, scale, prescale, H, Hkv, D, F, eps, gelu_tab, out_norm, head, logits, do_logits, par, nt
):  # fmt: skip
    """One token (x [1, E], updated in place) through every layer, then the output norm (into x) and,
    ``do_logits``, the output product ``head`` (a product tuple, see below) into ``logits`` [1, n_vocab]. ``layers``: a typed list with one
    tuple per layer (see Model._decode_plan): its four products (Q|K|V, Wo, gate|up, down) as
    ``(Ws, kinds, tss, vt)``, the two norm weights, Q/K/V biases, q/k head-norm and post-norm weights
    (empty when absent), its RoPE parameters and sliding window. gelu_tab: GeGLU's table (empty: SwiGLU).
    kc / vc: the fp16 caches of all layers [n_layer, n, Hkv, D]. ``prescale`` (phi3): q * scale after
    RoPE, then attention with scale 1, as the general forward does. Each step is the step-by-step
    path's kernel (attn_in, kernels.attn's few-row attention, attn_out_ffn), in the same order."""
    T = x.shape[0]
    a = np.empty((T, H, D), dtype=np.float32)
    qk_scale = np.float32(1.0) if prescale else scale  # the scale attention applies to q.k
    for li in range(len(layers)):
        L = layers[li]
        qkv, wo, gu, wd = L[0], L[1], L[2], L[3]
        attn_norm, ffn_norm = L[4], L[5]
        bq, bk, bv, qn, kn = L[6], L[7], L[8], L[9], L[10]
        post_attn_w, post_ffn_w = L[11], L[12]
        n_rot, theta_scale, freq_scale, ff, mscale, neox, n_swa = L[13], L[14], L[15], L[16], L[17], L[18], L[19]
        q = attn_in(
            x, attn_norm, eps, qkv[0], qkv[1], qkv[2], qkv[3], bq, bk, bv, qn, kn, H, Hkv, D, pos, n_rot, theta_scale,
            freq_scale, ff, mscale, neox, kc[li], vc[li], p0, par, nt,
        )  # fmt: skip
        if prescale:  # phi3: q * scale (float32 products, as the general forward's ``q *= scale``)
            _scale(q, scale)
        if par and T * H * (p0 + T) >= ATTN_PAR_MIN:
            fa.attention_rows_par(q, kc[li], vc[li], n_swa, p0, qk_scale, a, nt)
        else:
            fa.attention_rows(q, kc[li], vc[li], n_swa, p0, qk_scale, a)
        attn_out_ffn(
            x, a.reshape(T, H * D), wo[0], wo[1], wo[2], wo[3], post_attn_w, ffn_norm, eps, gu[0], gu[1], gu[2],
            gu[3], F, gelu_tab, wd[0], wd[1], wd[2], wd[3], post_ffn_w, par, nt,
        )  # fmt: skip
    h = np.empty_like(x)
    lk.rms_norm(x, out_norm, eps, h)
    x[:] = h
    if do_logits:
        _product(h, head[0], head[1], head[2], head[3], logits, par, nt)
