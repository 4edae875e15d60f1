"""The element-wise ops of a prompt batch (RMSNorm, RoPE + cache store, SwiGLU / GeGLU, activation
quantization) on the row-kernel threads.

Each is the generation path's own numba kernel (:mod:`quantlab.kernels.llama`, :mod:`.act`) applied to
a range of rows: a ``nogil`` wrapper ``f(..., r0, r1)`` that :func:`quantlab.kernels._rows.run_rows`
splits over threads. Rows are independent in all of them, so a row's result does not depend on the
thread count or the batch it is in: the prompt path and the generation path compute these ops
identically (float32 products summed in double for the norm, as ggml_rms_norm does).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import _rows
from . import act as _act
from . import llama as _lk
from .matmul import _DEQ

# a piece of work for a helper thread: at least this many values (a dispatcher call costs microseconds)
MIN_VALUES = 1 << 14


def _min_rows(cols: int) -> int:
    return max(1, MIN_VALUES // max(1, cols))


@njit(cache=True, nogil=True)
def _norm_rows(x, w, eps, out, r0, r1):
    _lk.rms_norm(x[r0:r1], w, eps, out[r0:r1])


@njit(cache=True, nogil=True)
def _swiglu_rows(g, u, out, r0, r1):
    _lk.swiglu(g[r0:r1], u[r0:r1], out[r0:r1])


@njit(cache=True, nogil=True)
def _geglu_rows(g, u, table, out, r0, r1):
    _lk.geglu(g[r0:r1], u[r0:r1], table, out[r0:r1])


@njit(cache=True, nogil=True)
def _rope_rows(q, k, v, pos, n_rot, theta_scale, freq_scale, ff, mscale, neox, kc, vc, p0, r0, r1):
    _lk.rope_store(
        q[r0:r1], k[r0:r1], v[r0:r1], pos[r0:r1], n_rot, theta_scale, freq_scale, ff, mscale, neox, kc, vc, p0 + r0
    )


@njit(cache=True, nogil=True)
def _q8_0_rows(x, qs, d, s, r0, r1):
    _act.act_q8_0(x[r0:r1], qs[r0:r1], d[r0:r1], s[r0:r1])


@njit(cache=True, nogil=True)
def _q8_1_rows(x, qs, d, s, r0, r1):
    _act.act_q8_1(x[r0:r1], qs[r0:r1], d[r0:r1], s[r0:r1])


@njit(cache=True, nogil=True)
def _q8_k_rows(x, qs, d, bs, r0, r1):
    _act.act_q8_k(x[r0:r1], qs[r0:r1], d[r0:r1], bs[r0:r1])


@njit(cache=True, nogil=True)
def _fake_q8_0_rows(x, out, r0, r1):
    _act._fake_q8_0(x[r0:r1], out[r0:r1])


@njit(cache=True, nogil=True)
def _fake_q8_1_rows(x, out, e, r0, r1):
    _act._fake_q8_1(x[r0:r1], out[r0:r1], e[r0:r1])


@njit(cache=True, nogil=True)
def _fake_q8_k_rows(x, out, r0, r1):
    _act._fake_q8_k(x[r0:r1], out[r0:r1])


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    _rows.run_rows(_norm_rows, x.shape[0], x, w, eps, out, min_rows=_min_rows(x.shape[1]))
    return out


def glu(g: np.ndarray, u: np.ndarray, table: np.ndarray | None = None) -> np.ndarray:
    """act(g) * u written into g (SwiGLU; GeGLU with ``table``, ggml's fp16 GELU table)."""
    if table is None:
        _rows.run_rows(_swiglu_rows, g.shape[0], g, u, g, min_rows=_min_rows(g.shape[1]))
    else:
        _rows.run_rows(_geglu_rows, g.shape[0], g, u, table, g, min_rows=_min_rows(g.shape[1]))
    return g


def rope_store(q, k, v, pos, rope, kc, vc, p0: int) -> None:
    _rows.run_rows(
        _rope_rows,
        q.shape[0],
        q,
        k,
        v,
        pos,
        rope.n_rot,
        rope.theta_scale,
        rope.freq_scale,
        rope.ff,
        rope.mscale,
        rope.neox,
        kc,
        vc,
        p0,
        min_rows=_min_rows(q.shape[1] * q.shape[2]),
    )


def quantize_activations(x: np.ndarray, vtype: str):
    """act.quantize_activations on the row threads (same arrays, same bytes)."""
    x = np.ascontiguousarray(x)
    T, K = x.shape
    qs = np.empty((T, K), dtype=np.int8)
    mr = _min_rows(K)
    if vtype in ("Q8_0", "Q8_1"):
        d = np.empty((T, K // 32), dtype=np.float32)
        s = np.empty((T, K // 32), dtype=np.float32)
        _rows.run_rows(_q8_0_rows if vtype == "Q8_0" else _q8_1_rows, T, x, qs, d, s, min_rows=mr)
        return qs, d, s
    if vtype == "Q8_K":
        d = np.empty((T, K // 256), dtype=np.float32)
        bs = np.empty((T, K // 16), dtype=np.int32)
        _rows.run_rows(_q8_k_rows, T, x, qs, d, bs, min_rows=mr)
        return qs, d, bs
    raise ValueError(vtype)


def fake_quantize_activations(x: np.ndarray, vtype: str, with_s_error: bool = False):
    """act.fake_quantize_activations on the row threads for Q8_0 / Q8_1 / Q8_K (others: act's own)."""
    if vtype not in ("Q8_0", "Q8_1", "Q8_K"):
        return _act.fake_quantize_activations(x, vtype, with_s_error)
    x = np.ascontiguousarray(x)
    T, K = x.shape
    out = np.empty_like(x)
    mr = _min_rows(K)
    if vtype == "Q8_1" and with_s_error:
        e = np.empty((T, K // 32), dtype=np.float32)
        _rows.run_rows(_fake_q8_1_rows, T, x, out, e, min_rows=mr)
        return out, e
    _rows.run_rows(_fake_q8_k_rows if vtype == "Q8_K" else _fake_q8_0_rows, T, x, out, min_rows=mr)
    return out


def dequantize_rows(W: np.ndarray, fmt: str, out: np.ndarray) -> np.ndarray:
    """matmul.dequantize_rows(W, fmt, 0, out) on the row threads (the format kernels are nogil)."""
    kernel, extra = _DEQ[fmt]
    W = np.ascontiguousarray(W)
    _rows.run_rows(kernel, out.shape[0], W, out, *extra, min_rows=_min_rows(out.shape[1]))
    return out
