"""A llama-architecture transformer that runs straight from the GGUF file, weights kept quantized.

The forward pass, as llama.cpp builds it for ``general.architecture = llama`` (``src/models/llama.cpp``)::

    x = token_embd[tokens]                                  (rows dequantized on demand)
    for each layer:
        h = rms_norm(x) * attn_norm
        q, k, v = Wq h, Wk h, Wv h                          (GQA: n_head_kv < n_head)
        q, k = rope(q), rope(k)                             ("normal" RoPE: pairs (2i, 2i+1))
        x = x + Wo softmax(q k^T / sqrt(d) + causal mask) v (K, V cached as fp16, like llama.cpp)
        h = rms_norm(x) * ffn_norm
        x = x + Wdown (silu(Wgate h) * Wup h)               (SwiGLU)
    logits = output (rms_norm(x) * output_norm)             (output = token_embd when tied)

Every ``W h`` reads the weight's own blocks (see :mod:`quantlab.kernels.matmul`): integer block dot
products for a few tokens, a dequantized tile of rows at a time + BLAS for prompt batches. Nothing is
expanded to float32 up front; resident memory stays near the file size.
"""
from __future__ import annotations

import contextlib
import ctypes
import math
import os
import pathlib
from dataclasses import dataclass

import numpy as np

from ..errors import FormatError, ModelError
from ..formats.registry import Format
from ..kernels import llama as lk
from ..kernels import matmul as mm
from .tokenizer import Tokenizer

SUPPORTED_ARCHS = ("llama",)
ATT_BLOCK = 128         # query rows per block of batch attention (see Model._attention)
SMALL_BATCH = 4          # up to this many tokens: integer kernels; above: dequantized tiles + BLAS
TILE_ELEMS = 1 << 20     # floats per dequantized weight tile (4 MB)


@dataclass(frozen=True)
class Config:
    arch: str
    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    head_dim: int
    n_rot: int
    rope_base: float
    rope_scale: float
    eps: float
    n_ctx_train: int

    @classmethod
    def from_metadata(cls, md, n_vocab: int) -> "Config":
        arch = md.get("general.architecture")
        if arch not in SUPPORTED_ARCHS:
            raise ModelError(f"unsupported architecture {arch!r}: quantlab runs {', '.join(SUPPORTED_ARCHS)} models")

        def need(key, default=None):
            v = md.get(f"{arch}.{key}", default)
            if v is None:
                raise ModelError(f"the GGUF metadata lacks {arch}.{key}, needed to run the model")
            return v

        n_embd = int(need("embedding_length"))
        n_head = int(need("attention.head_count"))
        n_head_kv = int(need("attention.head_count_kv", n_head))
        head_dim = int(md.get(f"{arch}.attention.key_length", n_embd // n_head))
        if n_head % n_head_kv:
            raise ModelError(f"{n_head} query heads cannot share {n_head_kv} key/value heads evenly")
        scale = md.get(f"{arch}.rope.scaling.factor")
        stype = md.get(f"{arch}.rope.scaling.type", "none")
        if stype not in ("none", "linear") or (scale and stype == "none" and float(scale) != 1.0):
            raise ModelError(f"RoPE scaling {stype!r} is not supported")
        return cls(arch=arch, n_vocab=n_vocab, n_embd=n_embd, n_layer=int(need("block_count")),
                   n_head=n_head, n_head_kv=n_head_kv, n_ff=int(need("feed_forward_length")),
                   head_dim=head_dim, n_rot=int(md.get(f"{arch}.rope.dimension_count", head_dim)),
                   rope_base=float(md.get(f"{arch}.rope.freq_base", 10000.0)),
                   rope_scale=1.0 / float(scale) if scale and stype == "linear" else 1.0,
                   eps=float(need("attention.layer_norm_rms_epsilon")),
                   n_ctx_train=int(md.get(f"{arch}.context_length", 2048)))


def _dequantize_any(data: np.ndarray, fmt: Format) -> np.ndarray:
    """Rows of any registry format to float32: quantlab's own dequantizer, else gguf-py's."""
    from ..api import dequantize

    try:
        return dequantize(data, fmt)
    except FormatError:
        import gguf.quants

        n = data.shape[-1] // fmt.type_size * fmt.block_size
        return np.asarray(gguf.quants.dequantize(np.ascontiguousarray(data), fmt.id),
                          dtype=np.float32).reshape(data.shape[0], n)


class Linear:
    """A weight matrix ``[rows = out features, cols = in features]`` in its stored ggml format."""

    def __init__(self, name: str, fmt: Format, data: np.ndarray, rows: int, cols: int, source=None):
        self.name, self.format, self.rows, self.cols = name, fmt, rows, cols
        self.data = data                       # uint8 [rows, row_bytes], a view of the file map
        self.vtype = mm.VEC_DOT_TYPE.get(fmt.name, "F32")
        self.fast = fmt.name in mm.INT_KERNELS
        self.row_bytes = fmt.row_bytes(cols)
        self.source = source                   # (file descriptor, absolute offset) for streamed reads
        self.stream = False                    # True: read rows with pread instead of touching the map

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
            out = buf[: (r1 - r0) * self.cols].reshape(r1 - r0, self.cols) if buf is not None \
                else np.empty((r1 - r0, self.cols), dtype=np.float32)
            return mm.dequantize_rows(np.ascontiguousarray(raw), n, 0, out)
        return _dequantize_any(raw, self.format)

    def __call__(self, x: np.ndarray, buf: np.ndarray | None = None, act=None) -> np.ndarray:
        """``x @ W.T`` for float32 activations x [T, cols] -> [T, rows], ggml's numerics."""
        T = x.shape[0]
        out = np.empty((T, self.rows), dtype=np.float32)
        streamed = self.stream and self.source is not None
        if T <= SMALL_BATCH and self.fast:
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
            if s_err:   # Q8_1's rounded block sums, as ggml's Q4_1/Q5_1 dot products use them
                out[:, r0:r1] += e @ mm.block_mins(raw, self.format.name, 0, r1 - r0).T
        return out


class KVCache:
    """Keys and values of every layer for positions 0..n-1, stored as fp16 (as llama.cpp's default
    f16 cache does; kept as uint16 bit patterns for the numba kernels), grown on demand up to ``n_ctx``."""

    def __init__(self, cfg: Config, n_ctx: int):
        self.cfg, self.n_ctx, self.n = cfg, int(n_ctx), 0
        self._cap = 0
        self.k: list[np.ndarray] = []
        self.v: list[np.ndarray] = []

    def reserve(self, n: int) -> None:
        if n > self.n_ctx:
            raise ModelError(f"context full: {n} tokens do not fit a context of {self.n_ctx}")
        if n <= self._cap:
            return
        cap = min(self.n_ctx, max(n, 2 * self._cap, 256))
        c = self.cfg
        shape = (cap, c.n_head_kv, c.head_dim)
        k = [np.zeros(shape, dtype=np.uint16) for _ in range(c.n_layer)]
        v = [np.zeros(shape, dtype=np.uint16) for _ in range(c.n_layer)]
        for i in range(len(self.k)):
            k[i][: self.n] = self.k[i][: self.n]
            v[i][: self.n] = self.v[i][: self.n]
        self.k, self.v, self._cap = k, v, cap

    def clear(self) -> None:
        self.n = 0


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """ggml_rms_norm (sum of squares in double) times the norm weight."""
    ms = np.einsum("ij,ij->i", x.astype(np.float64), x.astype(np.float64)) / x.shape[1]
    scale = (1.0 / np.sqrt(ms + eps)).astype(np.float32)
    return (x * scale[:, None]) * w


def rope_tables(pos: np.ndarray, n_rot: int, base: float, freq_scale: float):
    """cos/sin per position and pair, computed the way ggml's rope cache does (float32, theta
    multiplied by base^(-2/n_rot) pair after pair)."""
    theta_scale = np.float32(base ** (-2.0 / n_rot))
    theta = (pos.astype(np.float32) * np.float32(freq_scale))[:, None]
    th = np.empty((len(pos), n_rot // 2), dtype=np.float32)
    cur = theta[:, 0].copy()
    for i in range(n_rot // 2):
        th[:, i] = cur
        cur = (cur * theta_scale).astype(np.float32)
    return np.cos(th).astype(np.float32), np.sin(th).astype(np.float32)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, n_rot: int) -> None:
    """In place, "normal" (non-NeoX) RoPE: rotate the pairs (x[2i], x[2i+1]) of each head."""
    x0 = x[..., 0:n_rot:2].copy()
    x1 = x[..., 1:n_rot:2]
    c = cos[:, None, :]
    s = sin[:, None, :]
    x[..., 0:n_rot:2] = x0 * c - x1 * s
    x[..., 1:n_rot:2] = x0 * s + x1 * c


def silu(x: np.ndarray) -> np.ndarray:
    return x / (np.float32(1) + np.exp(-x))


def softmax_rows(s: np.ndarray) -> np.ndarray:
    s = s - s.max(axis=-1, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(axis=-1, keepdims=True, dtype=np.float64).astype(np.float32)
    return s


# --------------------------------------------------------------------------------------------
# BLAS thread control (OpenBLAS as shipped with numpy), so `threads` means the same for BLAS and numba
# --------------------------------------------------------------------------------------------

def _openblas():
    if hasattr(_openblas, "fn"):
        return _openblas.fn
    fn = None
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line}
        for lib in libs:
            h = ctypes.CDLL(lib)
            for name in ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_",
                         "scipy_openblas_set_num_threads", "openblas_set_num_threads"):
                if hasattr(h, name):
                    fn = getattr(h, name)
                    fn.argtypes = [ctypes.c_int]
                    break
            if fn:
                break
    except OSError:
        fn = None
    _openblas.fn = fn
    return fn


@contextlib.contextmanager
def threads(n: int | None):
    """Run numba kernels and BLAS with ``n`` threads (None: leave as is)."""
    if n is None:
        yield
        return
    import numba

    n = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    old = numba.get_num_threads()
    numba.set_num_threads(n)
    blas = _openblas()
    if blas:
        blas(n)
    try:
        yield
    finally:
        numba.set_num_threads(old)
        if blas:
            blas(os.cpu_count() or 1)


class Model:
    """A llama-architecture GGUF model, weights left in their stored formats.

    >>> m = quantlab.model.load(quantlab.data.path("smollm2"))
    >>> m.tokenize("Hello"), m.generate("The capital of France is", n_predict=8)
    """

    def __init__(self, path):
        from ..gguf import open as open_gguf

        self.path = pathlib.Path(path)
        self.file = open_gguf(self.path)
        md = self.file.metadata
        self.metadata = md
        self.tokenizer = Tokenizer(md)
        self.config = cfg = Config.from_metadata(md, self.tokenizer.n_vocab)
        ts = self.file.tensors

        def tensor(name, shape):
            if name not in ts:
                raise ModelError(f"tensor {name!r} is missing from {self.path.name}: this is not a complete "
                                 f"{cfg.arch} model")
            t = ts[name]
            if tuple(t.shape) != tuple(shape):
                raise ModelError(f"tensor {name!r} has shape {tuple(t.shape)}, expected {tuple(shape)}")
            if self.file.byte_order != "little":
                raise ModelError("big-endian GGUF files cannot be run")
            return t

        self._fd = os.open(self.path, os.O_RDONLY)

        def linear(name, rows, cols):
            t = tensor(name, (rows, cols))
            return Linear(name, t.format, np.ascontiguousarray(t.data), rows, cols,
                          source=(self._fd, t.file_offset))

        def vec(name, n):
            return np.ascontiguousarray(tensor(name, (n,)).numpy(), dtype=np.float32)

        E, H, Hkv, D, F = cfg.n_embd, cfg.n_head, cfg.n_head_kv, cfg.head_dim, cfg.n_ff
        self.tok_embd = linear("token_embd.weight", cfg.n_vocab, E)
        self.output = linear("output.weight", cfg.n_vocab, E) if "output.weight" in ts else self.tok_embd
        self.tied = self.output is self.tok_embd
        self.output_norm = vec("output_norm.weight", E)
        self.layers = []
        for i in range(cfg.n_layer):
            p = f"blk.{i}."
            self.layers.append(dict(
                attn_norm=vec(p + "attn_norm.weight", E),
                wq=linear(p + "attn_q.weight", H * D, E), wk=linear(p + "attn_k.weight", Hkv * D, E),
                wv=linear(p + "attn_v.weight", Hkv * D, E), wo=linear(p + "attn_output.weight", E, H * D),
                ffn_norm=vec(p + "ffn_norm.weight", E),
                wg=linear(p + "ffn_gate.weight", F, E), wu=linear(p + "ffn_up.weight", F, E),
                wd=linear(p + "ffn_down.weight", E, F)))
        self._buf = np.empty(TILE_ELEMS, dtype=np.float32)
        self.hook = None       # callable(weight_name, activations float32 [T, cols]) for imatrix collection

    # -- tokenizer ------------------------------------------------------------------------------
    @property
    def n_vocab(self) -> int:
        return self.config.n_vocab

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        return self.tokenizer.tokenize(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, ids, special: bool = True) -> str:
        return self.tokenizer.detokenize(ids, special=special)

    def new_cache(self, n_ctx: int | None = None) -> KVCache:
        return KVCache(self.config, n_ctx or self.config.n_ctx_train)

    def linears(self):
        """Every weight matrix (name -> Linear) in graph order."""
        out = {}
        for L in self.layers:
            for k in ("wq", "wk", "wv", "wo", "wg", "wu", "wd"):
                out[L[k].name] = L[k]
        out[self.output.name if not self.tied else "output.weight"] = self.output
        return out

    def __repr__(self):
        c = self.config
        fm = {}
        for lin in self.linears().values():
            fm[lin.format.name] = fm.get(lin.format.name, 0) + 1
        return (f"<Model {self.path.name}: {c.arch}, {c.n_layer} layers, width {c.n_embd}, {c.n_head}/{c.n_head_kv} "
                f"heads, vocab {c.n_vocab}; matrices {fm}>")

    # -- forward ----------------------------------------------------------------------------------
    def _mm(self, lin: Linear, x: np.ndarray, act=None) -> np.ndarray:
        if self.hook is not None:
            self.hook(lin.name, x)
        return lin(x, self._buf, act)

    def _project(self, L: dict, keys: tuple, h: np.ndarray) -> list:
        """``h @ W.T`` for the weights ``L[k]`` that read the same input (Q, K, V; gate, up). For a few
        tokens the activations are quantized once, and when the formats allow (one vec_dot type, one
        block family, weights read through the map) all rows run as one stacked integer product: one
        kernel call, one thread fork/join. Outputs are column slices of one array then."""
        T = h.shape[0]
        if T > SMALL_BATCH or self.hook is not None:
            return [self._mm(L[k], h) for k in keys]
        plan = L.get(keys)
        if plan is None:          # worked out once per layer: (stacked?, shared vtype or None, Ws, fmts, rows, cuts)
            lins = [L[k] for k in keys]
            fast = all(lin.fast for lin in lins)
            vt = lins[0].vtype if fast and len({lin.vtype for lin in lins}) == 1 else None
            fam = {mm.INT_KERNELS[lin.format.name][0] < mm.K_Q4_K for lin in lins} if fast else set()
            cuts, c = [], 0
            for lin in lins:
                cuts.append((c, c + lin.rows))
                c += lin.rows
            plan = L[keys] = (vt is not None and len(fam) == 1, vt, tuple(lin.data for lin in lins),
                              tuple(lin.format.name for lin in lins), c, cuts)
        stacked, vt, Ws, fmts, rows, cuts = plan
        if stacked and not self.stream:
            out = np.empty((T, rows), dtype=np.float32)
            mm.matmul_int(Ws, fmts, mm.quantize_activations(h, vt), out)
            return [out[:, a:b] for a, b in cuts]
        act = mm.quantize_activations(h, vt) if vt is not None else None
        return [self._mm(L[k], h, act) for k in keys]

    @property
    def stream(self) -> bool:
        """Read weights with pread (True) instead of through the memory map (False, the default).
        Streaming keeps resident memory near the interpreter's own (the weights stay in the OS page
        cache): evaluate() and imatrix() use it for their prompt batches."""
        return self.tok_embd.stream

    @stream.setter
    def stream(self, on: bool) -> None:
        for lin in list(self.linears().values()) + [self.tok_embd]:
            lin.stream = bool(on)

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def embed(self, tokens: np.ndarray) -> np.ndarray:
        t = self.tok_embd
        if t.stream and t.source is not None:
            rows = np.concatenate([t.block_rows(int(i), int(i) + 1) for i in tokens])
        else:
            rows = np.ascontiguousarray(t.data[tokens])
        if t.format.name == "F32":
            return rows.view(np.float32).copy()
        if t.format.name in mm.DEQ_KERNELS:
            out = np.empty((len(tokens), t.cols), dtype=np.float32)
            return mm.dequantize_rows(rows, t.format.name, 0, out)
        return _dequantize_any(rows, t.format)

    def forward(self, tokens, cache: KVCache, outputs="last", logits: bool = True) -> np.ndarray:
        """Run ``tokens`` at positions cache.n, cache.n+1, ...; returns logits float32 [n_out, n_vocab]
        for ``outputs``: "last", "all", or an array of indices into ``tokens``. With ``logits=False``
        returns the final normalized hidden states [n_out, n_embd] instead (see :meth:`logits`)."""
        cfg = self.config
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        T = len(tokens)
        if T == 0:
            raise ModelError("forward needs at least one token")
        if tokens.min() < 0 or tokens.max() >= cfg.n_vocab:
            raise ModelError(f"token ids must be in 0..{cfg.n_vocab - 1}")
        if isinstance(outputs, str):
            out_idx = np.arange(T) if outputs == "all" else np.array([T - 1])
        else:
            out_idx = np.asarray(outputs, dtype=np.int64).reshape(-1)
        p0 = cache.n
        cache.reserve(p0 + T)
        pos = np.arange(p0, p0 + T)
        if T > SMALL_BATCH:
            cos, sin = rope_tables(pos, cfg.n_rot, cfg.rope_base, cfg.rope_scale)
        H, Hkv, D = cfg.n_head, cfg.n_head_kv, cfg.head_dim
        x = self.embed(tokens)
        small = T <= SMALL_BATCH
        theta_scale = np.float32(cfg.rope_base ** (-2.0 / cfg.n_rot))
        kq_scale = np.float32(1.0 / math.sqrt(D))
        rope_scale = np.float32(cfg.rope_scale)
        for li, L in enumerate(self.layers):
            if small:
                h = np.empty_like(x)
                lk.rms_norm(x, L["attn_norm"], cfg.eps, h)
            else:
                h = rms_norm(x, L["attn_norm"], cfg.eps)
            q, k, v = self._project(L, ("wq", "wk", "wv"), h)
            q, k, v = q.reshape(T, H, D), k.reshape(T, Hkv, D), v.reshape(T, Hkv, D)
            if small:
                lk.rope_store(q, k, v, pos, cfg.n_rot, theta_scale, rope_scale, cache.k[li], cache.v[li], p0)
            else:
                apply_rope(q, cos, sin, cfg.n_rot)
                apply_rope(k, cos, sin, cfg.n_rot)
                cache.k[li][p0:p0 + T] = k.astype(np.float16).view(np.uint16)
                cache.v[li][p0:p0 + T] = v.astype(np.float16).view(np.uint16)
            if small:
                a = np.empty((T, H, D), dtype=np.float32)
                lk.attention(q, cache.k[li], cache.v[li], mm.F16, p0, kq_scale, a)
                a = a.reshape(T, H * D)
            else:
                a = self._attention(q, cache, li, p0 + T, pos)
            last = li == cfg.n_layer - 1
            if last and len(out_idx) < T:            # like llama.cpp: finish only the rows asked for
                a, x = a[out_idx], x[out_idx]
            x = x + self._mm(L["wo"], a)
            n = x.shape[0]
            if n <= SMALL_BATCH:
                h = np.empty_like(x)
                lk.rms_norm(x, L["ffn_norm"], cfg.eps, h)
            else:
                h = rms_norm(x, L["ffn_norm"], cfg.eps)
            g, u = self._project(L, ("wg", "wu"), h)
            if n <= SMALL_BATCH:
                lk.swiglu(g, u, g)
                x = x + self._mm(L["wd"], g)
            else:
                x = x + self._mm(L["wd"], silu(g) * u)
        cache.n = p0 + T
        if x.shape[0] != len(out_idx):
            x = x[out_idx]
        if x.shape[0] <= SMALL_BATCH:
            h = np.empty_like(x)
            lk.rms_norm(x, self.output_norm, cfg.eps, h)
        else:
            h = rms_norm(x, self.output_norm, cfg.eps)
        return self.logits(h) if logits else h

    def logits(self, h: np.ndarray) -> np.ndarray:
        """The output projection of final hidden states h [n, n_embd] -> [n, n_vocab]."""
        if self.hook is not None and not self.tied:
            self.hook("output.weight", h)
        return self.output(np.ascontiguousarray(h), self._buf)

    def _attention(self, q, cache: KVCache, li: int, n_kv: int, pos) -> np.ndarray:
        """Causal attention of T query rows over the cache's first ``n_kv`` positions, for a batch.

        The queries go in blocks of ATT_BLOCK rows and a block only multiplies the keys it can see
        (positions up to its last query's): with a causal mask the rest would be scored, set to -inf and
        then contribute exp(-inf) = 0, so skipping them halves the work of a long prompt and changes no
        probability; only the float summation over the visible keys remains."""
        cfg = self.config
        T, H, D = q.shape
        Hkv = cfg.n_head_kv
        g = H // Hkv
        K = cache.k[li][:n_kv].view(np.float16).astype(np.float32)       # [n_kv, Hkv, D]
        V = cache.v[li][:n_kv].view(np.float16).astype(np.float32)
        scale = np.float32(1.0 / math.sqrt(D))
        out = np.empty((T, H, D), dtype=np.float32)
        for t0 in range(0, T, ATT_BLOCK):
            t1 = min(T, t0 + ATT_BLOCK)
            tb = t1 - t0
            nk = min(n_kv, int(pos[t0:t1].max()) + 1)                  # keys this block can see
            mask = np.where(pos[t0:t1, None] < np.arange(nk)[None, :], np.float32(-np.inf), np.float32(0))
            for kh in range(Hkv):
                qh = q[t0:t1, kh * g:(kh + 1) * g, :].transpose(1, 0, 2).reshape(g * tb, D)
                s = qh @ K[:nk, kh, :].T                              # [g*tb, nk]
                s *= scale
                s = s.reshape(g, tb, nk)
                s += mask                                            # masked positions -> -inf
                p = softmax_rows(s.reshape(g * tb, nk))
                o = p @ V[:nk, kh, :]                                # [g*tb, D]
                out[t0:t1, kh * g:(kh + 1) * g, :] = o.reshape(g, tb, D).transpose(1, 0, 2)
        return out.reshape(T, H * D)

    # -- generation -------------------------------------------------------------------------------
    def generate(self, prompt, n_predict: int = 64, temperature: float = 0.0, top_k: int = 40,
                 top_p: float = 0.95, seed: int | None = None, stop_at_eog: bool = True,
                 threads: int | None = None, callback=None):
        """Continue ``prompt`` (text or token ids) by ``n_predict`` tokens with a KV cache.

        ``temperature == 0``: greedy (argmax). Otherwise sample from softmax(logits / temperature)
        restricted to the ``top_k`` most likely tokens and then to the smallest set whose probability
        reaches ``top_p``. Returns the generated text (``callback(token_id, piece)`` sees each token)."""
        ids = self.tokenize(prompt) if isinstance(prompt, str) else [int(i) for i in prompt]
        if not ids:
            raise ModelError("the prompt is empty: give at least one token")
        rng = np.random.default_rng(seed)
        cache = self.new_cache(min(self.config.n_ctx_train, len(ids) + n_predict))
        out = []
        with _threads(threads):
            logits = self.forward(ids, cache)[-1]
            for _ in range(n_predict):
                tok = sample(logits, temperature, top_k, top_p, rng)
                if stop_at_eog and self.tokenizer.is_eog(tok):
                    break
                out.append(tok)
                if callback is not None:
                    callback(tok, self.tokenizer.token_bytes(tok).decode("utf-8", errors="replace"))
                if len(out) == n_predict or cache.n + 1 > cache.n_ctx:
                    break
                logits = self.forward([tok], cache)[-1]
        self.last_generated = out
        return self.detokenize(out)


_threads = threads


def sample(logits: np.ndarray, temperature: float, top_k: int, top_p: float, rng) -> int:
    if temperature <= 0:
        return int(np.argmax(logits))
    l = logits.astype(np.float64) / temperature
    idx = np.argsort(-l, kind="stable")
    if top_k and top_k > 0:
        idx = idx[:top_k]
    p = np.exp(l[idx] - l[idx[0]])
    p /= p.sum()
    if top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(p), top_p) + 1)
        idx, p = idx[:keep], p[:keep] / p[:keep].sum()
    return int(idx[rng.choice(len(idx), p=p)])


def load(path) -> Model:
    """Open a GGUF model (weights stay memory-mapped in their stored formats)."""
    p = pathlib.Path(path)
    if not p.exists():
        raise ModelError(f"no such model file: {p}")
    return Model(p)
