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

import os
import pathlib
from dataclasses import dataclass

import numpy as np

from ..errors import ModelError
from ..kernels import matmul as mm
from .blocks import (ATT_BLOCK, SMALL_BATCH, TILE_ELEMS, KVCache, Linear, _dequantize_any,  # noqa: F401
                     apply_rope, ops_for, rms_norm, rope_tables, silu, softmax_rows, threads)
from .tokenizer import Tokenizer

SUPPORTED_ARCHS = ("llama",)


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


class Layer:
    """One transformer block's weights (Linear matrices, float32 norm vectors) by role."""

    LINEARS = ("wq", "wk", "wv", "wo", "wg", "wu", "wd")     # graph order

    def __init__(self, **parts):
        self.__dict__.update(parts)
        self.plans: dict = {}      # Model._project's per-layer plans for stacked products

    def linears(self) -> list:
        return [getattr(self, k) for k in self.LINEARS if getattr(self, k, None) is not None]


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
            self.layers.append(Layer(
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
            for lin in L.linears():
                out[lin.name] = lin
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

    def _project(self, L: "Layer", keys: tuple, h: np.ndarray) -> list:
        """``h @ W.T`` for the weights ``L.<key>`` that read the same input (Q, K, V; gate, up). For a
        few tokens the activations are quantized once, and when the formats allow (one vec_dot type,
        one block family, weights read through the map) all rows run as one stacked integer product:
        one kernel call, one thread fork/join. Outputs are column slices of one array then."""
        T = h.shape[0]
        if T > SMALL_BATCH or self.hook is not None:
            return [self._mm(getattr(L, k), h) for k in keys]
        plan = L.plans.get(keys)
        if plan is None:          # worked out once per layer: (stacked?, shared vtype or None, Ws, fmts, rows, cuts)
            lins = [getattr(L, k) for k in keys]
            fast = all(lin.fast for lin in lins)
            vt = lins[0].vtype if fast and len({lin.vtype for lin in lins}) == 1 else None
            fam = {mm.INT_KERNELS[lin.format.name][0] < mm.K_Q4_K for lin in lins} if fast else set()
            cuts, c = [], 0
            for lin in lins:
                cuts.append((c, c + lin.rows))
                c += lin.rows
            plan = L.plans[keys] = (vt is not None and len(fam) == 1, vt, tuple(lin.data for lin in lins),
                                    tuple(lin.format.name for lin in lins), c, cuts)
        stacked, vt, Ws, fmts, rows, cuts = plan
        if stacked and not self.stream:
            out = np.empty((T, rows), dtype=np.float32)
            mm.matmul_int(Ws, fmts, mm.quantize_activations(h, vt), out)
            return [out[:, a:b] for a, b in cuts]
        act = mm.quantize_activations(h, vt) if vt is not None else None
        return [self._mm(getattr(L, k), h, act) for k in keys]

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
        tokens, out_idx = self._check_tokens(tokens, outputs)
        T, p0 = len(tokens), cache.n
        cache.reserve(p0 + T)
        pos = np.arange(p0, p0 + T)
        ops = ops_for(cfg, pos)          # generation (numba, few rows) or prompt (numpy + BLAS) op set
        H, Hkv, D = cfg.n_head, cfg.n_head_kv, cfg.head_dim
        x = self.embed(tokens)                                          # token embeddings [T, n_embd]
        for li, L in enumerate(self.layers):
            kc, vc = cache.k[li], cache.v[li]
            h = ops.norm(x, L.attn_norm)                                # attention input norm
            q, k, v = self._project(L, ("wq", "wk", "wv"), h)           # Q, K, V projections
            q, k, v = q.reshape(T, H, D), k.reshape(T, Hkv, D), v.reshape(T, Hkv, D)
            ops.rope_store(q, k, v, kc, vc, p0)                         # RoPE on q, k; k, v into the cache
            a = ops.attention(q, kc, vc, p0)                            # causal attention over the cache
            if li == cfg.n_layer - 1 and len(out_idx) < T:             # last layer: only the rows asked for
                a, x = a[out_idx], x[out_idx]                           # (as llama.cpp does)
                ops = ops_for(cfg, pos, len(out_idx))
            x = x + self._mm(L.wo, a)                                   # attention output + residual
            h = ops.norm(x, L.ffn_norm)                                 # FFN input norm
            g, u = self._project(L, ("wg", "wu"), h)                    # gate and up projections
            x = x + self._mm(L.wd, ops.glu(g, u))                       # SwiGLU, down + residual
        cache.n = p0 + T
        if x.shape[0] != len(out_idx):
            x = x[out_idx]
        h = ops_for(cfg, pos, x.shape[0]).norm(x, self.output_norm)     # output norm
        return self.logits(h) if logits else h

    def _check_tokens(self, tokens, outputs):
        """Token ids as int64 [T] (each < n_vocab) and the indices of the rows to output."""
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        T = len(tokens)
        if T == 0:
            raise ModelError("forward needs at least one token")
        if tokens.min() < 0 or tokens.max() >= self.config.n_vocab:
            raise ModelError(f"token ids must be in 0..{self.config.n_vocab - 1}")
        if isinstance(outputs, str):
            out_idx = np.arange(T) if outputs == "all" else np.array([T - 1])
        else:
            out_idx = np.asarray(outputs, dtype=np.int64).reshape(-1)
        return tokens, out_idx

    def logits(self, h: np.ndarray) -> np.ndarray:
        """The output projection of final hidden states h [n, n_embd] -> [n, n_vocab]."""
        if self.hook is not None and not self.tied:
            self.hook("output.weight", h)
        return self.output(np.ascontiguousarray(h), self._buf)

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
