"""What differs between the transformer families quantlab runs, and their hyper-parameters, checked.

llama.cpp (0.3.36) builds each family in ``src/models/<arch>.cpp``; the five here share one layer
shape (pre-norm attention + gated FFN, RMSNorm, RoPE, GQA) and differ in a handful of switches, so each
is an :class:`Arch` record read by the one forward pass in :mod:`quantlab.model.llama` rather than a
forward of its own. Why a record and not five forwards: the switches are few and local (a norm here, a
scale there); five copies of the same 15-line layer would drift, and a reader sees every family's
difference from llama in one table below.

Optional tensors are optional for every family, as llama.cpp's ``create_tensor_qkv`` makes them: a
fused ``attn_qkv`` instead of q/k/v, q/k/v (or qkv) biases, an ``output`` matrix (else the embeddings
are tied).

:meth:`Config.from_metadata` validates every hyper-parameter it reads (type, range, consistency with
the others) and :class:`quantlab.model.llama.Model` then checks every tensor's shape against them, so
a bad file ends in one :class:`~quantlab.errors.ModelError` naming the key, the value and what was
expected, before anything runs.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ModelError


@dataclass(frozen=True)
class Arch:
    """One family's switches (defaults: llama's)."""

    name: str
    rope_neox: bool = False  # NeoX RoPE: rotate (x[i], x[i + n_rot/2]); else pairs (x[2i], x[2i+1])
    qk_norm: bool = False  # RMSNorm over each head of q and k (attn_q_norm / attn_k_norm) before RoPE
    post_norms: bool = False  # RMSNorm of the attention and FFN outputs before each residual add
    embd_scale: bool = False  # token embeddings times sqrt(n_embd)
    act: str = "silu"  # gated FFN: silu(gate) * up (SwiGLU) | gelu_tanh(gate) * up (GeGLU)
    fused_gate_up: bool = False  # ffn_up holds the gate rows then the up rows (no ffn_gate)
    q_prescale: bool = False  # Q times the attention scale before q.k (scores then scaled by 1)
    rope_factors: str = ""  # "freqs": optional rope_freqs (Llama 3) | "longrope": rope_factors_long/short
    swa: bool = False  # sliding-window layers (gemma3: 5 of every 6), their own RoPE base
    source: str = ""  # llama.cpp's build function, for the reader


ARCHS = {
    a.name: a
    for a in (
        Arch("llama", rope_factors="freqs", source="src/models/llama.cpp (Llama 2/3, Mistral, SmolLM)"),
        Arch("qwen2", rope_neox=True, source="src/models/qwen2.cpp"),
        Arch("qwen3", rope_neox=True, qk_norm=True, source="src/models/qwen3.cpp"),
        Arch(
            "gemma3",
            rope_neox=True,
            qk_norm=True,
            post_norms=True,
            embd_scale=True,
            act="gelu",
            q_prescale=True,
            swa=True,
            source="src/models/gemma3.cpp",
        ),
        Arch(
            "phi3",
            rope_neox=True,
            fused_gate_up=True,
            q_prescale=True,
            rope_factors="longrope",
            source="src/models/phi3.cpp",
        ),
    )
}
SUPPORTED_ARCHS = tuple(ARCHS)


def check_architecture(md: Mapping[str, Any]) -> Arch:
    """The :class:`Arch` of ``general.architecture``; ModelError naming it and the supported ones."""
    arch = md.get("general.architecture")
    if not isinstance(arch, str) or arch not in ARCHS:
        raise ModelError(
            f"unsupported architecture {arch!r} (general.architecture): quantlab runs "
            f"{', '.join(SUPPORTED_ARCHS)} models"
        )
    return ARCHS[arch]


# ------------------------------------------------------------------------------------------------
# reading one hyper-parameter: type, per-layer arrays, range
# ------------------------------------------------------------------------------------------------


def _uniform(key: str, v):
    """A per-layer array (list / tuple / numpy array, as the GGUF reader returns them) whose entries
    are all equal -> that value; quantlab's Config holds one value per hyper-parameter."""
    if isinstance(v, (list, tuple, np.ndarray)):
        vals = np.asarray(v).reshape(-1)
        if vals.size == 0:
            raise ModelError(f"{key} is an empty array; expected a number (or one per layer)")
        if not all(_same(vals[0], x) for x in vals[1:]):
            raise ModelError(
                f"{key} = {vals.tolist()} differs between layers; quantlab runs models whose layers "
                "all have the same value"
            )
        return vals[0].item() if isinstance(vals[0], np.generic) else vals[0]
    return v


def _same(a, b) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _value(md, key: str, default):
    """The value of ``key`` (``default`` when absent), one value even for a per-layer array; absent with no
    default is an error."""
    v = md.get(key, default)
    if v is None:
        raise ModelError(f"the GGUF metadata lacks {key}, needed to run the model")
    return _uniform(key, v)


def _int(md, key: str, default=None, lo: int = 1, hi: int = 1 << 31) -> int:
    v = _value(md, key, default)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise ModelError(f"{key} = {v!r} ({type(v).__name__}); expected an integer in {lo}..{hi}")
    v = int(v)
    if not lo <= v <= hi:
        raise ModelError(f"{key} = {v}; expected an integer in {lo}..{hi}")
    return v


def _float(md, key: str, default=None, lo: float = 0.0, lo_open: bool = True, hi: float = math.inf) -> float:
    v = _value(md, key, default)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise ModelError(f"{key} = {v!r} ({type(v).__name__}); expected a finite number")
    v = float(v)
    bound = f"> {lo:g}" if lo_open else f">= {lo:g}"
    if not math.isfinite(v) or (v <= lo if lo_open else v < lo) or v > hi:
        raise ModelError(
            f"{key} = {v!r}; expected a finite number {bound}" + (f" and <= {hi:g}" if hi != math.inf else "")
        )
    return v


def _str(md, key: str, default: str) -> str:
    v = md.get(key, default)
    if not isinstance(v, str):
        raise ModelError(f"{key} = {v!r}; expected a string")
    return v


@dataclass(frozen=True)
class Config:
    """The hyper-parameters of a model, as llama.cpp's ``llama_hparams`` reads them (validated)."""

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
    rope_scale: float  # freq_scale = 1 / rope.scaling.factor (linear scaling), else 1
    eps: float
    n_ctx_train: int
    spec: Arch = field(default=ARCHS["llama"], compare=False)
    attn_scale: float = 0.0  # 0: 1/sqrt(head_dim)
    rope_attn_factor: float = 1.0  # rope.scaling.attn_factor (LongRoPE's magnitude scale)
    n_ctx_orig: int = 0  # rope.scaling.original_context_length (LongRoPE: long factors beyond it)
    n_swa: int = 0  # sliding window (0: every layer sees the whole context)
    swa_layers: tuple = ()  # per layer: True = sliding-window layer
    rope_base_swa: float = 10000.0
    rope_scale_swa: float = 1.0
    logit_softcap: float = 0.0  # final_logit_softcapping (0: none)

    @classmethod
    def from_metadata(cls, md: Mapping[str, Any], n_vocab: int) -> Config:
        spec = check_architecture(md)
        a = spec.name
        n_embd = _int(md, f"{a}.embedding_length")
        n_layer = _int(md, f"{a}.block_count", hi=4096)
        n_head = _int(md, f"{a}.attention.head_count", hi=n_embd)
        n_head_kv = _int(md, f"{a}.attention.head_count_kv", md.get(f"{a}.attention.head_count"), hi=n_head)
        if n_head % n_head_kv:
            raise ModelError(
                f"{a}.attention.head_count = {n_head} query heads cannot share "
                f"{a}.attention.head_count_kv = {n_head_kv} key/value heads evenly"
            )
        n_ff = _int(md, f"{a}.feed_forward_length")
        head_dim = _int(md, f"{a}.attention.key_length", n_embd // n_head, hi=1 << 16)
        v_dim = _int(md, f"{a}.attention.value_length", head_dim, hi=1 << 16)
        if v_dim != head_dim:
            raise ModelError(f"{a}.attention.value_length = {v_dim}; expected {head_dim} (= key_length)")
        n_rot = _int(md, f"{a}.rope.dimension_count", head_dim, lo=2, hi=head_dim)
        if n_rot % 2:
            raise ModelError(f"{a}.rope.dimension_count = {n_rot}; expected an even number <= {head_dim}")
        if a == "llama" and n_rot != head_dim:  # llama.cpp: "invalid n_rot" for llama
            raise ModelError(f"{a}.rope.dimension_count = {n_rot}; expected {head_dim} (the head size)")
        stype = _str(md, f"{a}.rope.scaling.type", "linear" if f"{a}.rope.scaling.factor" in md else "none")
        if stype not in ("none", "linear", "longrope"):
            raise ModelError(f"{a}.rope.scaling.type = {stype!r}; quantlab runs 'none', 'linear' and 'longrope'")
        factor = _float(md, f"{a}.rope.scaling.factor", md.get(f"{a}.rope.scale_linear", 0.0), lo_open=False)
        rope_scale = 1.0 / factor if factor and stype != "none" else 1.0
        n_ctx_train = _int(md, f"{a}.context_length", 2048)
        swa_layers: tuple = ()
        n_swa = 0
        if spec.swa:
            n_swa = _int(md, f"{a}.attention.sliding_window", 0, lo=0)
        if n_swa:
            pat = md.get(f"{a}.attention.sliding_window_pattern", 6)
            if isinstance(pat, (list, tuple, np.ndarray)):
                swa_layers = tuple(bool(x) for x in np.asarray(pat).reshape(-1))
                if len(swa_layers) != n_layer:
                    raise ModelError(
                        f"{a}.attention.sliding_window_pattern has {len(swa_layers)} entries; "
                        f"expected one per layer ({n_layer})"
                    )
            else:
                p = _int(md, f"{a}.attention.sliding_window_pattern", 6, lo=0)
                swa_layers = tuple(p == 0 or i % p < p - 1 for i in range(n_layer))
        attn_scale = 0.0
        if a == "gemma3":  # llama.cpp: 1/sqrt(n_embd / n_head) for the 27B (62 layers), else 1/sqrt(head_dim)
            d = n_embd // n_head if n_layer == 62 else head_dim
            attn_scale = float(np.float32(1) / np.sqrt(np.float32(d)))
        return cls(
            arch=a,
            n_vocab=n_vocab,
            n_embd=n_embd,
            n_layer=n_layer,
            n_head=n_head,
            n_head_kv=n_head_kv,
            n_ff=n_ff,
            head_dim=head_dim,
            n_rot=n_rot,
            rope_base=_float(md, f"{a}.rope.freq_base", 10000.0),
            rope_scale=rope_scale,
            eps=_float(md, f"{a}.attention.layer_norm_rms_epsilon", hi=1.0),
            n_ctx_train=n_ctx_train,
            spec=spec,
            attn_scale=attn_scale,
            rope_attn_factor=_float(md, f"{a}.rope.scaling.attn_factor", 1.0),
            n_ctx_orig=_int(md, f"{a}.rope.scaling.original_context_length", n_ctx_train),
            n_swa=n_swa,
            swa_layers=swa_layers,
            rope_base_swa=_float(md, f"{a}.rope.freq_base_swa", 10000.0),
            logit_softcap=_float(md, f"{a}.final_logit_softcapping", 0.0, lo_open=False),
        )

    def is_swa(self, layer: int) -> bool:
        return bool(self.n_swa) and self.swa_layers[layer]
