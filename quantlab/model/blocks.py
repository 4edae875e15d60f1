"""The building blocks of a transformer forward pass, shared by every architecture quantlab runs.

* :class:`Linear`: one weight matrix in its stored ggml format, ``x @ W.T`` with ggml's numerics
  (integer block dot products where the format has a kernel, for any number of rows, as ggml's mul_mat;
  dequantized tiles + BLAS for the other formats; see :mod:`quantlab.kernels.matmul`);
* :class:`KVCache`: keys and values of every layer as fp16, like llama.cpp's default cache;
* the **op set** (norm, rope + cache store, attention, gated FFN activation): :class:`Ops`, numba
  kernels (:mod:`quantlab.kernels.llama`, :mod:`quantlab.kernels.attn`) that compute what ggml-cpu
  computes, bit for bit (tests/test_forward_ops.py), for any number of rows (ggml's numerics do not
  depend on the batch size except in attention, which picks its path itself);
* :func:`threads`: numba, the row-kernel pool and BLAS on ``n`` threads, all three restored after.
"""

from __future__ import annotations

import contextlib
import functools
import os

import numpy as np

from ..errors import FormatError, ModelError
from ..formats.registry import Format
from ..kernels import _rows
from ..kernels import attn as fa
from ..kernels import gemm as gk
from ..kernels import llama as lk
from ..kernels import matmul as mm

PAR_ROWS = 64  # RMSNorm / SwiGLU of at least this many rows run on the row-kernel threads (same bytes)
SMALL_BATCH = 4  # up to this many tokens: Q/K/V (gate/up) as one stacked product (model/llama.py)
TILE_ELEMS = 1 << 20  # floats per dequantized weight tile (4 MB)


def _dequantize_any(data: np.ndarray, fmt: Format) -> np.ndarray:
    """Rows of any registry format to float32: quantlab's own dequantizer, else gguf-py's."""
    from ..api import dequantize

    try:
        return dequantize(data, fmt)
    except FormatError:
        import gguf.quants

        n = data.shape[-1] // fmt.type_size * fmt.block_size
        return np.asarray(gguf.quants.dequantize(np.ascontiguousarray(data), fmt.id), dtype=np.float32).reshape(
            data.shape[0], n
        )


class Linear:
    """A weight matrix ``[rows = out features, cols = in features]`` in its stored ggml format."""

    def __init__(self, name: str, fmt: Format, data: np.ndarray, rows: int, cols: int, source=None):
        self.name, self.format, self.rows, self.cols = name, fmt, rows, cols
        self.data = data  # uint8 [rows, row_bytes], a view of the file map
        self.vtype = fmt.vec_dot()  # the activation type of its products (registry column)
        self.fast = fmt.name in mm.INT_KERNELS
        self.row_bytes = fmt.row_bytes(cols)
        self.source = source  # (file descriptor, absolute offset) for streamed reads
        self.stream = False  # True: read rows with pread instead of touching the map
        self.gemm = gk.AVAILABLE and fmt.name in gk.EXACT  # batches >= gk.MIN_ROWS: the panel GEMM
        self._panels = None  # gk.pack(data), made on the first batch

    def block_rows(self, r0: int, r1: int, buf: np.ndarray | None = None) -> np.ndarray:
        """The stored bytes of rows [r0, r1): a view of the map, or (streaming) read into ``buf``.
        Streaming keeps the weights out of the process's resident memory (they stay in the page
        cache), at the cost of a copy: worth it for prompt batches, not for one token at a time."""
        if not (self.stream and self.source is not None):
            return self.data[r0:r1]
        n = (r1 - r0) * self.row_bytes
        out = buf[:n] if buf is not None and buf.nbytes >= n else np.empty(n, dtype=np.uint8)
        fd, off = self.source
        got = os.preadv(fd, [memoryview(out)], off + r0 * self.row_bytes)
        if got != n:
            raise ModelError(f"short read of {self.name}: {got} of {n} bytes (file truncated?)")
        return out.reshape(r1 - r0, self.row_bytes)

    def __repr__(self):
        return f"<Linear {self.name} {self.format.name} {self.rows}x{self.cols}>"

    def rows_f32(self, r0: int, r1: int, buf: np.ndarray | None = None, raw=None) -> np.ndarray:
        """Dequantize rows [r0, r1) (into ``buf`` when given and the format has a fast kernel)."""
        n = self.format.name
        if raw is None:
            raw = self.block_rows(r0, r1)
        if n == "F32":
            return raw.view(np.float32)
        if n in mm.DEQ_KERNELS:
            out = (
                buf[: (r1 - r0) * self.cols].reshape(r1 - r0, self.cols)
                if buf is not None
                else np.empty((r1 - r0, self.cols), dtype=np.float32)
            )
            return mm.dequantize_rows(np.ascontiguousarray(raw), n, 0, out)
        return _dequantize_any(raw, self.format)

    def __call__(self, x: np.ndarray, buf: np.ndarray | None = None, act=None) -> np.ndarray:
        """``x @ W.T`` for float32 activations x [T, cols] -> [T, rows], ggml's numerics.

        Formats with an integer kernel take it for any number of rows, as ggml's mul_mat does (one
        vec_dot per output, bit for bit the same sums for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0): a prompt batch then gives
        llama.cpp's very activations, where dequantized tiles + BLAS (the path of the other formats)
        sum in another order and flip 8-bit activation roundings downstream. It is also the faster path
        here (2 chunks of 512 tokens of the llama test model: 19-25 s vs 55-57 s, load 7-11).

        Batches of at least ``gk.MIN_ROWS`` rows of the formats in ``gk.EXACT`` take the panel GEMM of
        kernels/gemm.py instead: the row kernels' very bytes (tests/test_gemm.py), each weight block
        decoded once per gk.TILE activation rows instead of once per row."""
        T = x.shape[0]
        out = np.empty((T, self.rows), dtype=np.float32)
        streamed = self.stream and self.source is not None
        if self.gemm and T >= gk.MIN_ROWS:  # a batch: weight panels x integer activations, the row kernels' bytes
            if act is None:
                act = mm.quantize_activations(x, self.vtype)
            name = self.format.name
            if not streamed:  # panels packed once, kept
                if self._panels is None:
                    self._panels = gk.pack(self.data, name)
                return gk.gemm(self._panels, name, act)
            # streamed: packed tile by tile, not kept
            step = max(gk.PANEL, (TILE_ELEMS * 4) // self.row_bytes // gk.PANEL * gk.PANEL)
            for r0 in range(0, self.rows, step):
                r1 = min(self.rows, r0 + step)
                out[:, r0:r1] = gk.gemm(gk.pack(self.block_rows(r0, r1), name), name, act)
            return out
        if self.fast:
            if act is None:
                act = mm.quantize_activations(x, self.vtype)
            if not streamed:
                return mm.matmul_int(self.data, self.format.name, act, out)
            step = max(1, (TILE_ELEMS * 4) // self.row_bytes)
            for r0 in range(0, self.rows, step):
                r1 = min(self.rows, r0 + step)
                part = np.empty((T, r1 - r0), dtype=np.float32)
                out[:, r0:r1] = mm.matmul_int(self.block_rows(r0, r1), self.format.name, act, part)
            return out
        s_err = self.format.name in ("Q4_1", "Q5_1")
        xq = mm.fake_quantize_activations(x, self.vtype, with_s_error=s_err)
        if s_err:
            xq, e = xq
        step = max(1, TILE_ELEMS // self.cols)
        for r0 in range(0, self.rows, step):
            r1 = min(self.rows, r0 + step)
            raw = self.block_rows(r0, r1)
            w = self.rows_f32(r0, r1, buf, raw)
            if r1 - r0 == self.rows:
                np.matmul(xq, w.T, out=out)
            else:
                out[:, r0:r1] = xq @ w.T
            if s_err:  # Q8_1's rounded block sums, as ggml's Q4_1/Q5_1 dot products use them
                out[:, r0:r1] += e @ mm.block_mins(raw, self.format.name, 0, r1 - r0).T
        return out


class KVCache:
    """Keys and values of every layer for positions 0..n-1, stored as fp16 (as llama.cpp's default
    f16 cache does; kept as uint16 bit patterns for the numba kernels), grown on demand up to ``n_ctx``.
    ``k`` and ``v`` are uint16 [n_layer, capacity, n_head_kv, head_dim]: ``k[layer]`` is one layer's
    cache, and the decode path hands all layers to one compiled call."""

    def __init__(self, cfg, n_ctx: int):
        self.cfg, self.n_ctx, self.n = cfg, int(n_ctx), 0
        self._cap = 0
        shape = (cfg.n_layer, 0, cfg.n_head_kv, cfg.head_dim)
        self.k: np.ndarray = np.zeros(shape, dtype=np.uint16)
        self.v: np.ndarray = np.zeros(shape, dtype=np.uint16)

    def reserve(self, n: int) -> None:
        if n > self.n_ctx:
            raise ModelError(f"context full: {n} tokens do not fit a context of {self.n_ctx}")
        if n <= self._cap:
            return
        cap = min(self.n_ctx, max(n, 2 * self._cap, 256))
        c = self.cfg
        shape = (c.n_layer, cap, c.n_head_kv, c.head_dim)
        k = np.zeros(shape, dtype=np.uint16)
        v = np.zeros(shape, dtype=np.uint16)
        k[:, : self.n] = self.k[:, : self.n]
        v[:, : self.n] = self.v[:, : self.n]
        self.k, self.v, self._cap = k, v, cap

    def clear(self) -> None:
        self.n = 0


# --------------------------------------------------------------------------------------------
# what the op kernels are given: RoPE parameters per layer, ggml's GELU table
# --------------------------------------------------------------------------------------------


class Rope:
    """How one layer rotates q and k (ggml_rope_ext without YaRN): the first ``n_rot`` values of each
    head, pairs (2i, 2i+1) or, ``neox``, (i, i + n_rot/2); pair i turns by
    freq_scale * (pos * theta_scale^i) / ff[i] with theta_scale = powf(base, -2/n_rot) (``ff``:
    frequency factors, Llama 3's rope_freqs or Phi-3's LongRoPE factors, else ones); cos and sin are
    then multiplied by ``mscale``."""

    def __init__(
        self,
        n_rot: int,
        base: float,
        freq_scale: float = 1.0,
        neox: bool = False,
        ff: np.ndarray | None = None,
        mscale: float = 1.0,
    ):
        self.n_rot, self.neox = int(n_rot), bool(neox)
        # powf(base, -2.0f/n_rot) as ggml computes it: float32 exponent, pow rounded once to float32
        self.theta_scale = np.float32(float(np.float32(base)) ** float(np.float32(-2.0) / np.float32(n_rot)))
        self.freq_scale, self.mscale = np.float32(freq_scale), np.float32(mscale)
        self.ff = np.ones(n_rot // 2, np.float32) if ff is None else np.ascontiguousarray(ff, dtype=np.float32)


@functools.cache
def gelu_table() -> np.ndarray:
    """ggml_table_gelu_f16 as float32: GELU-tanh (kernels.llama.gelu_f32, ggml's float32 arithmetic) of
    every fp16 value, rounded to fp16 -- what ggml's CPU gelu/geglu look up (GGML_GELU_FP16). Built on
    first use (a numba call, not at import)."""
    x = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)
    y = np.empty_like(x)
    with np.errstate(all="ignore"):
        lk.gelu_f32(x, y)
    return y.astype(np.float16).astype(np.float32)


# --------------------------------------------------------------------------------------------
# the op set: one for every batch size (a prompt's PromptOps had become an empty subclass)
# --------------------------------------------------------------------------------------------


class Ops:
    """The ops of tokens at positions ``pos``: numba kernels (one call per step, outputs preallocated)."""

    def __init__(self, cfg, pos: np.ndarray):
        self.eps, self.pos = cfg.eps, pos

    def norm(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        h = np.empty_like(x)
        if x.shape[0] >= PAR_ROWS:  # a prompt batch: pieces of rows on the row-kernel threads (same bytes)
            _rows.run_rows(lk.rms_norm_rows, x.shape[0], x, w, self.eps, h, min_rows=16)
        else:
            lk.rms_norm(x, w, self.eps, h)
        return h

    def head_norm(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        """RMSNorm over each head's D values of x [T, heads, D]."""
        T, n, D = x.shape
        return self.norm(np.ascontiguousarray(x).reshape(T * n, D), w).reshape(T, n, D)

    def rope_store(self, q, k, v, kc, vc, p0: int, rope: Rope) -> None:
        lk.rope_store(
            q,
            k,
            v,
            self.pos,
            rope.n_rot,
            rope.theta_scale,
            rope.freq_scale,
            rope.ff,
            rope.mscale,
            rope.neox,
            kc,
            vc,
            p0,
        )

    def attention(self, q, kc, vc, p0: int, scale, n_swa: int = 0) -> np.ndarray:
        """llama.cpp's flash attention numerics (see :mod:`quantlab.kernels.attn`)."""
        T, H, D = q.shape
        return fa.attention(q, kc, vc, p0, scale, n_swa).reshape(T, H * D)

    def glu(self, g: np.ndarray, u: np.ndarray, act: str = "silu") -> np.ndarray:
        if act == "gelu":
            lk.geglu(g, u, gelu_table(), g)
        elif g.shape[0] >= PAR_ROWS:  # a prompt batch: pieces of rows on the row-kernel threads
            _rows.run_rows(lk.swiglu_rows, g.shape[0], g, u, g, min_rows=16)
        else:
            lk.swiglu(g, u, g)
        return g


def ops_for(cfg, pos: np.ndarray, n_rows: int | None = None) -> Ops:
    """The op set for a call at positions ``pos``. ``n_rows`` no longer changes it (what ggml computes for a
    row does not depend on how many rows run; attention picks its path in kernels.attn); model/llama.py's
    calls still pass it."""
    return Ops(cfg, pos)


# --------------------------------------------------------------------------------------------
# threads: numba's parallel kernels, the row-kernel pool and BLAS, set together and restored
# --------------------------------------------------------------------------------------------

_BLAS = None


def _blas():
    """threadpoolctl's controller for the BLAS libraries loaded in this process (numpy's OpenBLAS)."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS


@contextlib.contextmanager
def threads(n: int | None):
    """Run numba's parallel kernels, quantlab's row kernels and BLAS with ``n`` threads (clamped to
    1..NUMBA_NUM_THREADS; None: leave all three as they are); each is back to its previous count after."""
    if n is None:
        yield
        return
    import numba

    n = max(1, min(int(n), _rows.max_threads()))
    old = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        with _rows.use_threads(n), _blas().limit(limits=n, user_api="blas"):
            yield
    finally:
        numba.set_num_threads(old)
