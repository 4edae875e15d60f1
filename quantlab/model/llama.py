"""The transformer families quantlab runs (llama, qwen2, qwen3, gemma3, phi3), straight from the GGUF
file with the weights kept quantized.

One forward pass serves every family; what differs is an :class:`~quantlab.model.arch.Arch` record
(see :mod:`quantlab.model.arch`, with the llama.cpp source each follows). A layer, as llama.cpp builds
it (``src/models/llama.cpp`` and the others)::

    x = token_embd[tokens]                          (* sqrt(n_embd): gemma3)
    for each layer:
        h = rms_norm(x) * attn_norm
        q, k, v = Wq h, Wk h, Wv h                  (or one fused Wqkv; + biases where the file has them)
        q, k = rms_norm per head (qwen3, gemma3)
        q, k = rope(q), rope(k)                     (normal or NeoX pairs; frequency factors; per-layer base)
        a = Wo softmax(q k^T * scale + mask) v      (GQA; K, V cached as fp16; causal, or a sliding window)
        x = x + a                                   (a = rms_norm(a) * post_attention_norm first: gemma3)
        h = rms_norm(x) * ffn_norm
        f = Wdown (act(Wgate h) * Wup h)            (SwiGLU, or GeGLU: gemma3; gate|up fused: phi3)
        x = x + f                                   (f = rms_norm(f) * post_ffw_norm first: gemma3)
    logits = output (rms_norm(x) * output_norm)     (output = token_embd when tied)

Every ``W h`` reads the weight's own blocks (see :mod:`quantlab.kernels.matmul`): integer block dot
products for a few tokens, a dequantized tile of rows at a time + BLAS for prompt batches. Nothing is
expanded to float32 up front; resident memory stays near the file size.
"""

from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Callable, Iterable, Sequence
from time import perf_counter

import numba
import numpy as np

from ..errors import FormatError, ModelError, ShapeError
from ..kernels import decode as dk
from ..kernels import matmul as mm
from .arch import ARCHS, SUPPORTED_ARCHS, Config, check_architecture  # noqa: F401  (Config: public API)
from .blocks import (
    SMALL_BATCH,
    TILE_ELEMS,
    KVCache,
    Linear,
    Rope,
    _dequantize_any,
    gelu_table,
    ops_for,
    threads,
)
from .tokenizer import Tokenizer


class Layer:
    """One transformer block's weights (Linear matrices, float32 norm vectors) by role."""

    LINEARS = ("wqkv", "wq", "wk", "wv", "wo", "wg", "wu", "wd")  # graph order
    OPTIONAL = (
        "wqkv",
        "wq",
        "wk",
        "wv",
        "wg",
        "bqkv",
        "bq",
        "bk",
        "bv",
        "bo",
        "bg",
        "bu",
        "bd",
        "q_norm",
        "k_norm",
        "post_attn_norm",
        "post_ffn_norm",
    )

    def __init__(self, **parts):
        for k in self.OPTIONAL:
            setattr(self, k, None)
        self.__dict__.update(parts)
        self.plans: dict = {}  # Model._project's per-layer plans for stacked products
        self.rope: Rope | None = None
        self.n_swa = 0  # sliding window of this layer (0: whole context)

    def linears(self) -> list:
        return [getattr(self, k) for k in self.LINEARS if getattr(self, k, None) is not None]


class Model:
    """A GGUF model of a supported family (see SUPPORTED_ARCHS), weights left in their stored formats.

    >>> m = quantlab.model.load(quantlab.data.path("smollm2"))
    >>> m.tokenize("Hello"), m.generate("The capital of France is", n_predict=8)
    """

    def __init__(self, path: str | os.PathLike) -> None:
        from ..gguf import open as open_gguf

        self.path = pathlib.Path(path)
        self.file = open_gguf(self.path)
        md = self.file.metadata
        self.metadata = md
        spec = check_architecture(md)  # an unsupported architecture is refused before anything else
        if self.file.byte_order != "little":
            raise ModelError(f"{self.path.name}: big-endian GGUF files cannot be run")
        self.tokenizer = Tokenizer(md)
        self.config = cfg = Config.from_metadata(md, self.tokenizer.n_vocab)
        self.spec = spec
        ts = self.file.tensors
        E, H, Hkv, D, F, V = cfg.n_embd, cfg.n_head, cfg.n_head_kv, cfg.head_dim, cfg.n_ff, cfg.n_vocab
        a = cfg.arch
        dims = (
            f"{a}.embedding_length={E}, {a}.attention.head_count={H}, {a}.attention.head_count_kv={Hkv}, "
            f"head size={D}, {a}.feed_forward_length={F}, vocabulary={V}"
        )

        def tensor(name, shape):
            if name not in ts:
                raise ModelError(f"tensor {name!r} is missing from {self.path.name}: this is not a complete {a} model")
            t = ts[name]
            if tuple(t.shape) != tuple(shape):
                raise ModelError(
                    f"tensor {name!r} has shape {tuple(t.shape)}, expected {tuple(shape)} from the metadata ({dims})"
                )
            return t

        self._fd = os.open(self.path, os.O_RDONLY)

        def linear(name, rows, cols, optional=False):
            if optional and name not in ts:
                return None
            t = tensor(name, (rows, cols))
            if t.format.vec_dot_type is None:
                raise ModelError(f"tensor {name!r} is stored as {t.format.name}, which has no matrix product")
            return Linear(name, t.format, np.ascontiguousarray(t.data), rows, cols, source=(self._fd, t.file_offset))

        def vec(name, n, optional=False):
            if optional and name not in ts:
                return None
            v = np.ascontiguousarray(tensor(name, (n,)).numpy(), dtype=np.float32)
            if not np.isfinite(v).all():
                raise ModelError(f"tensor {name!r} holds non-finite values")
            return v

        self.tok_embd = linear("token_embd.weight", V, E)
        self.output = linear("output.weight", V, E, optional=True) or self.tok_embd
        self.tied = self.output is self.tok_embd
        self.output_b = vec("output.bias", V, optional=True)
        self.output_norm = vec("output_norm.weight", E)
        self.layers = []
        for i in range(cfg.n_layer):
            p = f"blk.{i}."
            L = Layer(
                attn_norm=vec(p + "attn_norm.weight", E),
                wo=linear(p + "attn_output.weight", E, H * D),
                bo=vec(p + "attn_output.bias", E, True),
                ffn_norm=vec(p + "ffn_norm.weight", E),
                wd=linear(p + "ffn_down.weight", E, F),
                bd=vec(p + "ffn_down.bias", E, True),
            )
            if p + "attn_qkv.weight" in ts:  # fused Q|K|V rows (phi3; any family may have it)
                L.wqkv = linear(p + "attn_qkv.weight", (H + 2 * Hkv) * D, E)
                L.bqkv = vec(p + "attn_qkv.bias", (H + 2 * Hkv) * D, True)
            else:
                L.wq, L.wk, L.wv = (
                    linear(p + "attn_q.weight", H * D, E),
                    linear(p + "attn_k.weight", Hkv * D, E),
                    linear(p + "attn_v.weight", Hkv * D, E),
                )
            if L.bqkv is None:
                L.bq, L.bk, L.bv = (
                    vec(p + "attn_q.bias", H * D, True),
                    vec(p + "attn_k.bias", Hkv * D, True),
                    vec(p + "attn_v.bias", Hkv * D, True),
                )
            if spec.qk_norm:
                L.q_norm, L.k_norm = vec(p + "attn_q_norm.weight", D), vec(p + "attn_k_norm.weight", D)
            if spec.post_norms:
                L.post_attn_norm = vec(p + "post_attention_norm.weight", E)
                L.post_ffn_norm = vec(p + "post_ffw_norm.weight", E)
            if spec.fused_gate_up:  # ffn_up = gate rows then up rows (phi3)
                L.wu = linear(p + "ffn_up.weight", 2 * F, E)
            else:
                L.wg, L.wu = linear(p + "ffn_gate.weight", F, E), linear(p + "ffn_up.weight", F, E)
                L.bg, L.bu = vec(p + "ffn_gate.bias", F, True), vec(p + "ffn_up.bias", F, True)
            L.n_swa = cfg.n_swa if cfg.is_swa(i) else 0
            self.layers.append(L)
        self._ropes = self._rope_choices(vec, md)
        self._buf = np.empty(TILE_ELEMS, dtype=np.float32)
        self.hook = None  # callable(weight_name, activations float32 [T, cols]) for imatrix collection

    def _rope_choices(self, vec, md) -> dict:
        """(sliding-window layer?, long context?) -> Rope, as llama.cpp picks them per layer and context:
        sliding-window layers use rope.freq_base_swa and no scaling; Llama 3's rope_freqs factors apply
        to every layer; LongRoPE (phi3) uses rope_factors_long when the context is longer than
        rope.scaling.original_context_length, else rope_factors_short."""
        cfg, spec = self.config, self.spec
        half = cfg.n_rot // 2
        longrope = spec.rope_factors == "longrope" or md.get(f"{cfg.arch}.rope.scaling.type") == "longrope"
        names = (
            ("rope_factors_short.weight", "rope_factors_long.weight")
            if longrope
            else ("rope_freqs.weight",) * 2
            if spec.rope_factors == "freqs"
            else ()
        )
        short = long = None
        if names:
            short, long = (vec(n, half, True) for n in names)
        for name, ff in zip(names, (short, long)):
            if ff is not None and not (ff > 0).all():
                raise ModelError(f"tensor {name!r} holds frequency factors <= 0; expected positive values")
        out = {}
        for swa in (False, True):
            for is_long in (False, True):
                base, fs = (cfg.rope_base_swa, cfg.rope_scale_swa) if swa else (cfg.rope_base, cfg.rope_scale)
                out[swa, is_long] = Rope(
                    cfg.n_rot, base, fs, spec.rope_neox, long if is_long else short, cfg.rope_attn_factor
                )
        return out

    # -- tokenizer ------------------------------------------------------------------------------
    @property
    def n_vocab(self) -> int:
        return self.config.n_vocab

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        return self.tokenizer.tokenize(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, ids: Iterable[int], special: bool = True) -> str:
        return self.tokenizer.detokenize(ids, special=special)

    def new_cache(self, n_ctx: int | None = None) -> KVCache:
        return KVCache(self.config, n_ctx or self.config.n_ctx_train)

    def linears(self) -> dict[str, Linear]:
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
        return (
            f"<Model {self.path.name}: {c.arch}, {c.n_layer} layers, width {c.n_embd}, {c.n_head}/{c.n_head_kv} "
            f"heads, vocab {c.n_vocab}; matrices {fm}>"
        )

    # -- forward ----------------------------------------------------------------------------------
    def _mm(self, lin: Linear, x: np.ndarray, act=None) -> np.ndarray:
        if self.hook is not None:
            self.hook(lin.name, x)
        return lin(x, self._buf, act)

    def _project(self, L: Layer, keys: tuple, h: np.ndarray) -> list:
        """``h @ W.T`` for the weights ``L.<key>`` that read the same input (Q, K, V; gate, up). For a
        few tokens the activations are quantized once, and when the formats allow (one vec_dot type,
        one block family, weights read through the map) all rows run as one stacked integer product:
        one kernel call, one thread fork/join. Outputs are column slices of one array then."""
        T = h.shape[0]
        if T > SMALL_BATCH or self.hook is not None:
            return [self._mm(getattr(L, k), h) for k in keys]
        plan = L.plans.get(keys)
        if plan is None:  # worked out once per layer: (stacked?, shared vtype or None, Ws, fmts, rows, cuts)
            lins = [getattr(L, k) for k in keys]
            fast = all(lin.fast for lin in lins)
            vt = lins[0].vtype if fast and len({lin.vtype for lin in lins}) == 1 else None
            fam = {mm.INT_KERNELS[lin.format.name][0] < mm.K_Q4_K for lin in lins} if fast else set()
            cuts, c = [], 0
            for lin in lins:
                cuts.append((c, c + lin.rows))
                c += lin.rows
            plan = L.plans[keys] = (
                vt is not None and len(fam) == 1,
                vt,
                tuple(lin.data for lin in lins),
                tuple(lin.format.name for lin in lins),
                c,
                cuts,
            )
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

    def _qkv(self, L: Layer, h: np.ndarray):
        """Q, K, V of the layer's input h: one fused matrix or three (stacked when they can), + biases."""
        if L.wqkv is not None:
            qkv = self._mm(L.wqkv, h)
            if L.bqkv is not None:
                qkv += L.bqkv
            c = self.config
            nq, nk = c.n_head * c.head_dim, c.n_head_kv * c.head_dim
            q, k, v = qkv[:, :nq], qkv[:, nq : nq + nk], qkv[:, nq + nk :]
        else:
            q, k, v = self._project(L, ("wq", "wk", "wv"), h)
        for y, b in ((q, L.bq), (k, L.bk), (v, L.bv)):
            if b is not None:
                y += b
        return q, k, v

    def _gate_up(self, L: Layer, h: np.ndarray):
        """Gate and up projections of the FFN input h (one fused matrix: gate rows, then up rows)."""
        if L.wg is None:
            gu = self._mm(L.wu, h)
            F = self.config.n_ff
            return gu[:, :F], gu[:, F:]
        g, u = self._project(L, ("wg", "wu"), h)
        if L.bg is not None:
            g += L.bg
        if L.bu is not None:
            u += L.bu
        return g, u

    def _linear_out(self, lin: Linear, x: np.ndarray, bias) -> np.ndarray:
        y = self._mm(lin, x)
        if bias is not None:
            y += bias
        return y

    def forward(
        self,
        tokens: Sequence[int] | np.ndarray,
        cache: KVCache,
        outputs: str | Sequence[int] | np.ndarray = "last",
        logits: bool = True,
    ) -> np.ndarray:
        """Run ``tokens`` at positions cache.n, cache.n+1, ...; returns logits float32 [n_out, n_vocab]
        for ``outputs``: "last", "all", or an array of indices into ``tokens``. With ``logits=False``
        returns the final normalized hidden states [n_out, n_embd] instead (see :meth:`logits`)."""
        cfg, spec = self.config, self.spec
        tokens, out_idx = self._check_tokens(tokens, outputs)
        if len(tokens) == 1 and self.hook is None and not self.stream and self._decode_plan() is not None:
            return self._forward_decode(tokens, cache, logits)
        T, p0 = len(tokens), cache.n
        cache.reserve(p0 + T)
        pos = np.arange(p0, p0 + T)
        ops = ops_for(cfg, pos)  # the numba op set (blocks.Ops: norm, rope + cache store, attention, GLU)
        H, Hkv, D = cfg.n_head, cfg.n_head_kv, cfg.head_dim
        long_ctx = cache.n_ctx > cfg.n_ctx_orig  # LongRoPE: long factors
        scale = np.float32(cfg.attn_scale or 1.0 / math.sqrt(D))  # attention scale
        x = self.embed(tokens)  # token embeddings [T, n_embd]
        if spec.embd_scale:
            x *= np.float32(math.sqrt(cfg.n_embd))  # gemma: embeddings * sqrt(n_embd)
        for li, L in enumerate(self.layers):
            kc, vc = cache.k[li], cache.v[li]
            h = ops.norm(x, L.attn_norm)  # attention input norm
            q, k, v = self._qkv(L, h)  # Q, K, V projections (+ biases)
            q, k, v = q.reshape(T, H, D), k.reshape(T, Hkv, D), v.reshape(T, Hkv, D)
            if L.q_norm is not None:  # per-head q/k norms (qwen3, gemma3)
                q, k = ops.head_norm(q, L.q_norm), ops.head_norm(k, L.k_norm)
            ops.rope_store(q, k, v, kc, vc, p0, self._ropes[L.n_swa > 0, long_ctx])  # RoPE; k, v cached
            if spec.q_prescale:  # gemma3, phi3: q * scale, then q.k
                q *= scale
            a = ops.attention(q, kc, vc, p0, np.float32(1) if spec.q_prescale else scale, L.n_swa)
            if li == cfg.n_layer - 1 and len(out_idx) < T:  # last layer: only the rows asked for
                a, x = a[out_idx], x[out_idx]  # (as llama.cpp does)
                ops = ops_for(cfg, pos, len(out_idx))
            a = self._linear_out(L.wo, a, L.bo)  # attention output projection
            if L.post_attn_norm is not None:
                a = ops.norm(a, L.post_attn_norm)  # gemma3: post-attention norm
            x = x + a  # residual
            h = ops.norm(x, L.ffn_norm)  # FFN input norm
            g, u = self._gate_up(L, h)  # gate and up projections
            f = self._linear_out(L.wd, ops.glu(g, u, spec.act), L.bd)  # act(gate) * up, down projection
            if L.post_ffn_norm is not None:
                f = ops.norm(f, L.post_ffn_norm)  # gemma3: post-FFN norm
            x = x + f  # residual
        cache.n = p0 + T
        if x.shape[0] != len(out_idx):
            x = x[out_idx]
        h = ops_for(cfg, pos, x.shape[0]).norm(x, self.output_norm)  # output norm
        return self.logits(h) if logits else h

    # -- the decode path: one token, all layers and the output product in one compiled call -------------
    def _decode_plan(self):
        """The arguments of kernels.decode.token for this model, worked out once, as (layers, head,
        typed lists by context): per layer its four products (weights as read-only views, kinds,
        activation types; a fused Q|K|V or gate|up matrix is a one-matrix product), norm weights, Q/K/V
        biases, per-head q/k norm weights and post norm weights (those seven empty when absent)
        (:meth:`_decode_layers` adds RoPE parameters and window and makes the numba typed list); the
        output product (None: the output matrix has no integer kernel, or a bias / soft-cap follows,
        and the logits are made in Python). None when this model needs the general forward for one
        token (output / FFN biases, an activation other than SwiGLU / GeGLU, a format or format mix
        without one stacked integer product)."""
        plan = getattr(self, "_decode", False)
        if plan is not False:
            return plan
        self._decode = None
        spec, cfg = self.spec, self.config
        if spec.act not in ("silu", "gelu"):  # token() has SwiGLU and GeGLU
            return None

        def product(lins):
            if not all(lin.fast for lin in lins) or len({lin.vtype for lin in lins}) != 1:
                return None
            fmts = tuple(lin.format.name for lin in lins)
            try:
                kinds, tss = mm._stack_kinds(fmts)
            except (FormatError, ShapeError):  # mixed block families: no stacked product
                return None
            Ws = tuple(mm._readonly(lin.data) for lin in lins)
            Ws = Ws + (Ws[0][:0],) * (mm.MAX_STACK - len(Ws))
            return Ws, kinds, tss, dk.VT_CODES[lins[0].vtype]

        layers = []
        for L in self.layers:
            if any(getattr(L, b) is not None for b in ("bo", "bg", "bu", "bd")):
                return None
            qkv = [L.wqkv] if L.wqkv is not None else [L.wq, L.wk, L.wv]  # fused Q|K|V rows (phi3)
            gu = [L.wu] if L.wg is None else [L.wg, L.wu]  # fused gate|up rows (phi3)
            parts = (product(qkv), product([L.wo]), product(gu), product([L.wd]))
            if any(p is None for p in parts):
                return None
            bq, bk, bv = L.bq, L.bk, L.bv
            if L.bqkv is not None:  # a fused bias: its Q, K, V slices (the same per-value adds)
                nq, nk = cfg.n_head * cfg.head_dim, cfg.n_head_kv * cfg.head_dim
                bq, bk, bv = L.bqkv[:nq], L.bqkv[nq : nq + nk], L.bqkv[nq + nk :]
            # biases (qwen2), per-head norms (qwen3, gemma3), post norms (gemma3)
            extra = (bq, bk, bv, L.q_norm, L.k_norm, L.post_attn_norm, L.post_ffn_norm)
            extra = tuple(np.zeros(0, np.float32) if b is None else np.array(b) for b in extra)
            layers.append(parts + (L.attn_norm, L.ffn_norm) + extra)
        head = product([self.output]) if self.output_b is None and not cfg.logit_softcap else None
        self._decode = (layers, head, {})
        return self._decode

    def _decode_layers(self, long_ctx: bool):
        """kernels.decode.token's typed list of layers for a context (long or not: LongRoPE's factors)."""
        layers, _head, by_ctx = self._decode
        if long_ctx not in by_ctx:
            typed = numba.typed.List()
            for L, parts in zip(self.layers, layers):
                r = self._ropes[L.n_swa > 0, long_ctx]
                typed.append(parts + (r.n_rot, r.theta_scale, r.freq_scale, r.ff, r.mscale, r.neox, L.n_swa))
            by_ctx[long_ctx] = typed
        return by_ctx[long_ctx]

    def _forward_decode(self, tokens, cache: KVCache, logits: bool) -> np.ndarray:
        """forward() for one token through kernels.decode.token: the same kernels in the same order as
        the general forward (bit-identical outputs), one compiled call for the token."""
        cfg = self.config
        _, head, _ = self._decode
        layers = self._decode_layers(cache.n_ctx > cfg.n_ctx_orig)
        p0 = cache.n
        cache.reserve(p0 + 1)
        pos = np.arange(p0, p0 + 1)
        scale = np.float32(cfg.attn_scale or 1.0 / math.sqrt(cfg.head_dim))
        x = self.embed(tokens)
        if self.spec.embd_scale:
            x *= np.float32(math.sqrt(cfg.n_embd))  # gemma: embeddings * sqrt(n_embd), as forward()
        gelu_tab = gelu_table() if self.spec.act == "gelu" else np.zeros(0, np.float32)  # GeGLU (gemma3)
        in_head = logits and head is not None
        y = np.empty((1, cfg.n_vocab if in_head else 0), dtype=np.float32)
        nt = numba.get_num_threads()
        key = ("decode", self.path.name)
        par = nt > 1 and mm.POLICY.choose(key)
        if not par and nt > 1:  # a serial token runs serial throughout (a parallel region on a busy
            numba.set_num_threads(1)  # machine stalls)
        try:
            t0 = perf_counter()
            dk.token(
                x, layers, cache.k, cache.v, pos, p0, scale, bool(self.spec.q_prescale), cfg.n_head,
                cfg.n_head_kv, cfg.head_dim, cfg.n_ff, cfg.eps, gelu_tab, self.output_norm,
                head if head is not None else layers[0][3], y, in_head, par, nt,
            )  # fmt: skip
            if nt > 1:
                mm.POLICY.record(key, par, 1 << 30, perf_counter() - t0)
        finally:
            if not par and nt > 1:
                numba.set_num_threads(nt)
        cache.n = p0 + 1
        if not logits:
            return x
        return y if in_head else self.logits(x)

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
        y = self.output(np.ascontiguousarray(h), self._buf)
        if self.output_b is not None:
            y += self.output_b
        cap = self.config.logit_softcap
        if cap:  # final logit soft-capping: cap * tanh(y / cap)
            y = (np.tanh(y * np.float32(1.0 / cap)) * np.float32(cap)).astype(np.float32)
        return y

    # -- generation -------------------------------------------------------------------------------
    def generate(
        self,
        prompt: str | Sequence[int],
        n_predict: int = 64,
        temperature: float = 0.0,
        top_k: int = 40,
        top_p: float = 0.95,
        seed: int | None = None,
        stop_at_eog: bool = True,
        threads: int | None = None,
        callback: Callable[[int, str], object] | None = None,
        special: bool = False,
    ) -> str:
        """Continue ``prompt`` (text or token ids) by ``n_predict`` tokens with a KV cache.

        ``temperature == 0``: greedy (argmax). Otherwise sample from softmax(logits / temperature)
        restricted to the ``top_k`` most likely tokens and then to the smallest set whose probability
        reaches ``top_p``. Returns the generated text (``callback(token_id, piece)`` sees each token), as
        llama-completion prints it: control tokens are not rendered unless ``special`` (its --special);
        the ids are in ``self.last_generated``."""
        ids = self.tokenize(prompt) if isinstance(prompt, str) else [int(i) for i in prompt]
        if not ids:
            raise ModelError("the prompt is empty: give at least one token")
        rng = np.random.default_rng(seed)
        # the context is the model's training context, as llama.cpp's default (-c 0): it decides which
        # LongRoPE factors apply (long beyond rope.scaling.original_context_length); the cache only
        # grows as far as the tokens go
        cache = self.new_cache()
        out = []
        with _threads(threads):
            logits = self.forward(ids, cache)[-1]
            for _ in range(n_predict):
                tok = sample(logits, temperature, top_k, top_p, rng)
                if stop_at_eog and self.tokenizer.is_eog(tok):
                    break
                out.append(tok)
                if callback is not None:
                    callback(tok, self.tokenizer.token_bytes(tok, special).decode("utf-8", errors="replace"))
                if len(out) == n_predict or cache.n + 1 > cache.n_ctx:
                    break
                logits = self.forward([tok], cache)[-1]
        self.last_generated = out
        return self.detokenize(out, special=special)


_threads = threads


def sample(logits: np.ndarray, temperature: float, top_k: int, top_p: float, rng: np.random.Generator) -> int:
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


def load(path: str | os.PathLike) -> Model:
    """Open a GGUF model (weights stay memory-mapped in their stored formats). An architecture other
    than those in SUPPORTED_ARCHS is refused first, with a ModelError naming it."""
    p = pathlib.Path(path)
    if not p.exists():
        raise ModelError(f"no such model file: {p}")
    return Model(p)
