"""Which ggml format each tensor of a model gets under a llama.cpp file type — and *why*.

This is llama-quantize's tensor-type selection (``src/llama-quant.cpp`` in llama.cpp, spec §9.2-9.4) as
pure functions of (tensor name, shape, source type, model hyper-parameters, options). Nothing here
reads weights: :func:`make_plan` works from names and shapes alone, so a notebook can show a plan for
a 70B model it does not have.

Every choice carries the rule that made it, in words, e.g.::

    blk.3.attn_v.weight   Q6_K   attn_v #3 of 30 in Q4_K_M: use_more_bits(3, 30) -> Q6_K

The order of the rules matters (the first matching branch wins) and some rules count tensors as they
go (``i_attention_wv``, ``i_ffn_down``), so tensors are visited in llama.cpp's order: non-layer tensors
first, then by layer number, names sorted inside a layer (:func:`loader_order`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import FormatError, ModelError
from ..formats.fallback import fallback
from ..formats.registry import Format
from ..formats.registry import get as get_format
from .ftypes import FileType, file_type

__all__ = [
    "ModelInfo",
    "TensorSpec",
    "Options",
    "TensorChoice",
    "Plan",
    "make_plan",
    "loader_order",
    "use_more_bits",
    "category",
    "allows_quantization",
    "fallback",
    "requires_imatrix",
]


# ---------------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """The few hyper-parameters the rules look at."""

    arch: str = "llama"
    n_layer: int = 1
    n_head: int = 1
    n_head_kv: int = 1
    n_expert: int = 0
    is_70b: bool = False  # llama.cpp's LLM_TYPE_70B (llama, 80 layers, grouped-query attention)

    @property
    def n_gqa(self) -> int:
        """Query heads per K/V head (integer division, as llama.cpp's ``hparams.n_gqa()``)."""
        return self.n_head // self.n_head_kv if self.n_head_kv else 0

    @classmethod
    def from_metadata(cls, kv: Mapping) -> ModelInfo:
        """From GGUF metadata (a mapping key -> value, e.g. ``{"llama.block_count": 30, ...}``), read the
        way llama.cpp's model loader reads them: ``block_count`` and ``expert_count`` are unsigned integer
        scalars; ``attention.head_count`` / ``head_count_kv`` a scalar or a per-layer array of exactly
        ``block_count`` integers (numpy array, list or tuple; the rules look at layer 0, as llama.cpp's
        ``n_gqa()`` does). Anything else — a string, a float, NaN, a negative number, a bool, an array of
        the wrong length — raises :class:`~quantlab.errors.ModelError` naming the key, the value and what
        was expected (llama.cpp refuses the same files)."""
        arch = kv.get("general.architecture", "llama")
        if not isinstance(arch, str) or not arch:
            raise ModelError(f"metadata general.architecture is {_show(arch)}; expected a non-empty string")
        n_layer = _hparam(kv, f"{arch}.block_count", 1)
        n_head = _hparam(kv, f"{arch}.attention.head_count", 1, n_layer)
        n_head_kv = _hparam(kv, f"{arch}.attention.head_count_kv", n_head, n_layer)
        is_70b = arch == "llama" and n_layer == 80 and n_head != n_head_kv
        return cls(
            arch=arch,
            n_layer=n_layer,
            n_head=n_head,
            n_head_kv=n_head_kv,
            n_expert=_hparam(kv, f"{arch}.expert_count", 0),
            is_70b=is_70b,
        )


_U32_MAX = (1 << 32) - 1


def _show(v) -> str:
    r = repr(v)
    return (r[:60] + "...") if len(r) > 63 else r


def _count(key: str, v, what: str) -> int:
    """One unsigned 32-bit integer (what llama.cpp's loader stores hyper-parameters in)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise ModelError(f"metadata {key} {what}is {_show(v)} ({type(v).__name__}); expected an unsigned integer")
    if not 0 <= int(v) <= _U32_MAX:
        raise ModelError(f"metadata {key} {what}is {int(v)}; expected an unsigned 32-bit integer (0 to {_U32_MAX})")
    return int(v)


def _hparam(kv: Mapping, key: str, default: int, n_layer: int | None = None) -> int:
    """The value of ``key`` (layer 0's for a per-layer array, allowed when ``n_layer`` is given)."""
    if key not in kv:
        return default
    v = kv[key]
    if isinstance(v, (list, tuple, np.ndarray)):
        a = v if not isinstance(v, np.ndarray) else (v.tolist() if v.ndim == 1 else None)
        if a is None:
            raise ModelError(f"metadata {key} is an array of shape {np.shape(v)}; expected a 1-D array")
        if n_layer is None:
            raise ModelError(f"metadata {key} is an array of {len(a)} values; expected a scalar")
        if len(a) != n_layer:
            raise ModelError(
                f"metadata {key} is an array of {len(a)} values; expected one per layer ({n_layer}, the block_count)"
            )
        vals = [_count(key, x, f"element {i} ") for i, x in enumerate(a)]
        return vals[0] if vals else default
    return _count(key, v, "")


@dataclass(frozen=True)
class TensorSpec:
    """A tensor as the rules see it. ``ne`` is in ggml order: ``ne[0]`` is the row length."""

    name: str
    ne: tuple
    type: Format

    def __post_init__(self):
        object.__setattr__(self, "ne", tuple(int(v) for v in self.ne))
        object.__setattr__(self, "type", get_format(self.type))

    @property
    def n_dims(self) -> int:
        """ggml_n_dims: trailing dimensions of size 1 do not count."""
        n = len(self.ne)
        while n > 1 and self.ne[n - 1] == 1:
            n -= 1
        return max(n, 1)

    @property
    def n_elements(self) -> int:
        n = 1
        for v in self.ne:
            n *= v
        return n

    def nbytes(self, fmt: Format | None = None) -> int:
        f = self.type if fmt is None else fmt
        return f.row_bytes(self.ne[0]) * (self.n_elements // self.ne[0] if self.ne[0] else 0)


def _fmt_opt(v):
    return None if v is None else get_format(v)


@dataclass(frozen=True)
class Options:
    """llama-quantize's options that change the plan (same meaning as its command-line flags)."""

    pure: bool = False  # --pure: no mixing, every tensor the default type
    output_tensor_type: Format | None = None  # --output-tensor-type
    token_embedding_type: Format | None = None  # --token-embedding-type
    leave_output_tensor: bool = False  # --leave-output-tensor
    tensor_types: tuple = ()  # --tensor-type PATTERN=TYPE, first match wins
    allow_requantize: bool = False  # --allow-requantize
    only_copy: bool = False  # the "COPY" file type

    def __post_init__(self):
        object.__setattr__(self, "output_tensor_type", _fmt_opt(self.output_tensor_type))
        object.__setattr__(self, "token_embedding_type", _fmt_opt(self.token_embedding_type))
        tts = []
        items = self.tensor_types.items() if isinstance(self.tensor_types, Mapping) else self.tensor_types
        for item in items:
            if isinstance(item, str):
                item = parse_tensor_type(item)
            pat, t = item
            try:
                rx = re.compile(pat)
            except re.error as e:
                raise FormatError(f"--tensor-type pattern {pat!r} is not a valid regular expression: {e}") from None
            tts.append((pat, get_format(t), rx))
        object.__setattr__(self, "tensor_types", tuple(tts))
        for label, f in (
            ("--output-tensor-type", self.output_tensor_type),
            ("--token-embedding-type", self.token_embedding_type),
            *((f"--tensor-type {p}", f) for p, f, _ in self.tensor_types),
        ):
            if f is not None:
                f.check_usable()
                if f.activation_only:
                    raise FormatError(f"{label}: {f.name} is an activation-side type, never stored in a model")


def parse_tensor_type(s: str) -> tuple[str, Format]:
    """``"attn_q=q8_0"`` -> ``("attn_q", Q8_0)``; the pattern is lower-cased like llama-quantize does."""
    if "=" not in s:
        raise FormatError(f"--tensor-type expects PATTERN=TYPE (e.g. attn_v=q8_0), got {s!r}")
    pat, t = s.split("=", 1)
    if not pat:
        raise FormatError(f"--tensor-type {s!r}: the tensor name pattern before '=' is empty")
    if not t:
        raise FormatError(f"--tensor-type {s!r}: the type after '=' is empty")
    return pat.lower(), get_format(t)


# ---------------------------------------------------------------------------------------------------
# helpers, one per llama.cpp notion
# ---------------------------------------------------------------------------------------------------

_LAYER = re.compile(r"blk\.([+-]?\d+)\.")


def _layer_of(name: str) -> int:
    m = _LAYER.match(name)
    return int(m.group(1)) if m else -1


def loader_order(names: Iterable[str]) -> list[str]:
    """llama.cpp's tensor order: by the layer number of ``blk.N.`` (others first, as -1), then by name."""
    return sorted(names, key=lambda n: (_layer_of(n), n.encode()))


def use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's "more bits here" layers: the first and last eighth, and every third one between."""
    return i < n // 8 or i >= 7 * n // 8 or _cmod(i - n // 8, 3) == 2


def _cmod(a: int, b: int) -> int:
    """C's remainder (sign follows the dividend)."""
    r = abs(a) % b
    return -r if a < 0 else r


# tensor categories, in the order llama.cpp tests the substrings
OUTPUT, TOKEN_EMBD, ATTN_QKV, ATTN_KV_B, ATTN_V, ATTN_K, ATTN_Q, ATTN_OUTPUT, FFN_UP, FFN_GATE, FFN_DOWN, OTHER = (
    "output",
    "token_embd",
    "attn_qkv",
    "attn_kv_b",
    "attn_v",
    "attn_k",
    "attn_q",
    "attn_output",
    "ffn_up",
    "ffn_gate",
    "ffn_down",
    "other",
)

_CATEGORY_TESTS = [
    (ATTN_QKV, "attn_qkv.weight"),
    (ATTN_KV_B, "attn_kv_b.weight"),
    (ATTN_V, "attn_v.weight"),
    (ATTN_K, "attn_k.weight"),
    (ATTN_Q, "attn_q.weight"),
    (ATTN_OUTPUT, "attn_output.weight"),
    (FFN_UP, "ffn_up"),
    (FFN_GATE, "ffn_gate"),
    (FFN_DOWN, "ffn_down"),
]


def category(name: str) -> str:
    """The broad role of a tensor, from its name."""
    if name == "output.weight":
        return OUTPUT
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return TOKEN_EMBD
    for cat, sub in _CATEGORY_TESTS:
        if sub in name:
            return cat
    return OTHER


def _attn_v_like(cat: str) -> bool:
    return cat in (ATTN_V, ATTN_QKV, ATTN_KV_B)


_NEVER_SUBSTRINGS = (
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ffn_gate_tid2eid.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",
    "shortconv.conv.weight",
    "indexer.k_proj.weight",
    "indexer.q_proj.weight",
    *(
        f"time_mix_{s}.weight"
        for s in (
            "first",
            "w0",
            "w1",
            "w2",
            "v0",
            "v1",
            "v2",
            "a0",
            "a1",
            "a2",
            "g1",
            "g2",
            "decay_w1",
            "decay_w2",
            "lerp_fused",
        )
    ),
    "attn_rel_b.weight",
    ".position_embd",
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    "a.rvq.codebook",
    "mm.a.code_embd",
)
_GLM5_NEXT_NEVER = (
    "hc_",
    "indexer.attn_q_b",
    "indexer.attn_k",
    "indexer.proj",
    "indexer_compressor_gate",
    "indexer_compressor_ape",
    "ssm_f_a.weight",
    "ssm_f_b.weight",
    "ssm_g_a.weight",
    "ssm_g_b.weight",
    "ssm_beta.weight",
    "attn_kv_a_mqa.weight",
    "attn_k_b.weight",
    "attn_v_b.weight",
)


def allows_quantization(t: TensorSpec, options: Options = Options(), arch: str = "llama") -> tuple[bool, str]:
    """Is this tensor quantized at all? Returns (yes/no, the reason in words)."""
    if options.only_copy:
        return False, "COPY: tensors are copied as they are"
    if t.n_dims < 2:
        return False, f"{t.n_dims}-D tensor (norms, biases stay as they are)"
    if not t.name.endswith("weight"):
        return False, "name does not end in 'weight'"
    if t.name == "output.weight" and options.leave_output_tensor:
        return False, "--leave-output-tensor"
    if t.name in ("position_embd.weight", "token_types.weight"):
        return False, "position / token-type embeddings are never quantized"
    subs = _NEVER_SUBSTRINGS + (_GLM5_NEXT_NEVER if arch == "glm5-next" else ())
    for s in subs:
        if s in t.name:
            return False, f"never quantized (name contains {s!r})"
    return True, ""


def requires_imatrix(name: str, fmt: Format, ftype: FileType) -> bool:
    """llama-quantize's policy (stricter than ggml's): these targets refuse to run without an imatrix."""
    if name in ("token_embd.weight", "per_layer_token_embd.weight", "output.weight"):
        return False
    if fmt.name in ("IQ3_XXS", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_M", "IQ1_S"):
        return True
    return fmt.name == "Q2_K" and ftype.name == "Q2_K_S"


# ---------------------------------------------------------------------------------------------------
# the plan
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorChoice:
    """The decision for one tensor."""

    name: str
    ne: tuple
    src: Format  # type in the input file
    fmt: Format  # type in the output file
    rule: str  # the rule that chose ``fmt`` (before any fallback)
    fallback: str | None  # why the shape forced another type, if it did
    quantizable: bool  # tensor_allows_quantization
    requires_imatrix: bool

    @property
    def action(self) -> str:
        """'copy' (same type: bytes copied as they are), or 'quantize' (dequantize + quantize)."""
        return "copy" if self.src.id == self.fmt.id else "quantize"

    @property
    def why(self) -> str:
        return self.rule + (f"; {self.fallback}" if self.fallback else "")

    @property
    def n_elements(self) -> int:
        n = 1
        for v in self.ne:
            n *= v
        return n

    @property
    def nbytes(self) -> int:
        return self.fmt.row_bytes(self.ne[0]) * (self.n_elements // self.ne[0])

    @property
    def src_nbytes(self) -> int:
        return self.src.row_bytes(self.ne[0]) * (self.n_elements // self.ne[0])


@dataclass
class Plan:
    """A whole-model plan: one :class:`TensorChoice` per tensor, in output-file order."""

    ftype: FileType
    model: ModelInfo
    options: Options
    has_imatrix: bool
    tensors: list = field(default_factory=list)
    n_fallback: int = 0

    def __iter__(self):
        return iter(self.tensors)

    def __len__(self):
        return len(self.tensors)

    def __getitem__(self, name: str) -> TensorChoice:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def types(self) -> dict:
        """``{tensor name: format name}`` — what a fixture records."""
        return {t.name: t.fmt.name for t in self.tensors}

    @property
    def n_elements(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def src_nbytes(self) -> int:
        return sum(t.src_nbytes for t in self.tensors)

    @property
    def bpw(self) -> float:
        """Bits per weight over all tensors (llama-quantize's BPW figure)."""
        return 8.0 * self.nbytes / max(1, self.n_elements)

    def counts(self) -> dict:
        """``{format name: number of tensors}``."""
        out: dict = {}
        for t in self.tensors:
            out[t.fmt.name] = out.get(t.fmt.name, 0) + 1
        return out

    def needs_imatrix(self) -> list:
        """Tensors that will be quantized to a type llama-quantize refuses without an imatrix."""
        return [t for t in self.tensors if t.quantizable and t.action == "quantize" and t.requires_imatrix]

    def table(self, width: int = 36) -> str:
        """The plan as text, one line per tensor: name, shape, source -> target, rule."""
        lines = []
        for i, t in enumerate(self.tensors):
            shape = "x".join(str(v) for v in t.ne)
            lines.append(
                f"[{i + 1:4d}/{len(self.tensors)}] {t.name:<{width}} {shape:>14} "
                f"{t.src.name:>7} -> {t.fmt.name:<7} {t.why}"
            )
        return "\n".join(lines)

    def summary(self) -> str:
        mib = 1024.0 * 1024.0
        mix = ", ".join(f"{k} x{v}" for k, v in sorted(self.counts().items(), key=lambda kv: -kv[1]))
        return (
            f"{self.ftype.name} ({self.ftype.description}): {len(self)} tensors, "
            f"{self.src_nbytes / mib:.2f} MiB -> {self.nbytes / mib:.2f} MiB, {self.bpw:.2f} bits/weight; "
            f"{mix}" + (f"; {self.n_fallback} fallback(s)" if self.n_fallback else "")
        )

    def __repr__(self):
        return f"<Plan {self.summary()}>"


class _State:
    def __init__(self, names, model: ModelInfo):
        cats = [category(n) for n in names]
        self.n_attention_wv = sum(_attn_v_like(c) for c in cats)
        self.tied = OUTPUT not in cats
        self.n_ffn = model.n_layer
        self.i_attention_wv = 0
        self.i_ffn_down = 0
        self.i_ffn_gate = 0
        self.i_ffn_up = 0


_IQ_LOW = ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M")


@dataclass
class _Ask:
    """One tensor put to llama.cpp's mixing rules: the file type's name ``f``, the tensor's default format
    ``new``, its category, the model, the options and the running counters ``st``."""

    st: _State
    model: ModelInfo
    f: str
    new: str
    t: TensorSpec
    cat: str
    has_imatrix: bool
    options: Options

    @property
    def gqa(self) -> int:
        return self.model.n_gqa

    def layer(self, counter: int, n: int) -> tuple[int, int]:
        """(layer index, layer count): the counter, or for an MoE model (experts are not in order) the
        layer number in the name."""
        if max(1, self.model.n_expert) > 1:
            i = _layer_of(self.t.name)
            if not 0 <= i < n:
                raise FormatError(f"cannot tell the layer of {self.t.name} (expected blk.N. with 0 <= N < {n})")
            return i, n
        return counter, n

    def default(self) -> tuple[str, str]:
        return self.new, f"default type of {self.f}"


def _heuristics(
    st: _State,
    model: ModelInfo,
    ft: FileType,
    t: TensorSpec,
    cat: str,
    default: Format,
    has_imatrix: bool,
    options: Options,
) -> tuple[str, str]:
    """llama.cpp's mixing rules. Returns (format name, rule). First matching branch wins: the rules
    below are tried in llama.cpp's order, one function per branch of its if-chain."""
    q = _Ask(st, model, ft.name, default.name, t, cat, has_imatrix, options)
    if (
        model.arch == "glm5-next"
        and any(s in t.name for s in ("attn_q_a", "attn_q_b", "nextn.eh_proj"))
        and q.new not in ("F32", "BF16", "F16")
    ):
        return "Q8_0", "glm5-next keeps this projection at Q8_0 or better"
    if cat == OUTPUT or (st.tied and cat == TOKEN_EMBD):
        return _rule_output(q)
    if q.f == "MXFP4_MOE":
        return _rule_mxfp4_moe(q)
    if cat == TOKEN_EMBD:
        return _rule_token_embd(q)
    if q.f in _IQ_LOW:
        return _rule_iq_low(q)
    if _attn_v_like(cat):  # attn_qkv included: llama.cpp's own attn_qkv branch is never reached
        return _rule_attn_v(q)
    rule = _RULES_BY_CATEGORY.get(cat)
    return rule(q) if rule is not None else q.default()


def _rule_output(q: _Ask) -> tuple[str, str]:
    """output.weight, or token_embd when it is tied to the output."""
    f, new, t = q.f, q.new, q.t
    what = "output" if q.cat == OUTPUT else "token_embd (tied to the output: no output.weight)"
    if q.options.output_tensor_type is not None:
        return q.options.output_tensor_type.name, f"{what}: --output-tensor-type"
    blk = get_format(new).block_size
    if f == "MXFP4_MOE":
        return "Q8_0", f"{what} in MXFP4_MOE -> Q8_0"
    if q.model.arch == "falcon":
        return "Q8_0", f"{what} of a Falcon model -> Q8_0"
    if t.ne[0] % blk:
        return "Q8_0", f"{what}: ne[0]={t.ne[0]} not a multiple of {blk} ({new}) -> Q8_0"
    if f in ("IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M"):
        return "Q5_K", f"{what} in {f} -> Q5_K"
    if new != "Q8_0":
        return "Q6_K", f"{what} gets Q6_K"
    return new, f"{what}: default {new} is already Q8_0"


def _rule_mxfp4_moe(q: _Ask) -> tuple[str, str]:
    t = q.t
    if len(t.ne) > 2 and t.ne[2] > 1 and (q.model.arch != "bailingmoe3" or q.cat in (FFN_UP, FFN_GATE, FFN_DOWN)):
        return "MXFP4", f"MXFP4_MOE: expert tensor ({t.ne[2]} experts) -> MXFP4"
    return "Q8_0", "MXFP4_MOE: non-expert tensor -> Q8_0"


def _rule_token_embd(q: _Ask) -> tuple[str, str]:
    f = q.f
    if q.options.token_embedding_type is not None:
        return q.options.token_embedding_type.name, "token_embd: --token-embedding-type"
    if f in ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M"):
        return "Q2_K", f"token_embd in {f} -> Q2_K"
    if f in ("IQ2_S", "IQ2_M", "IQ3_XXS"):
        return "IQ3_S", f"token_embd in {f} -> IQ3_S"
    if f in ("TQ1_0", "TQ2_0", "Q2_0"):
        return "Q4_K", f"token_embd in {f} -> Q4_K"
    return q.new, f"token_embd: default type of {f}"


def _rule_iq_low(q: _Ask) -> tuple[str, str]:
    """Every tensor of the 1- and 2-bit IQ file types (their own branch in llama.cpp)."""
    st, model, f, new, cat = q.st, q.model, q.f, q.new, q.cat
    if _attn_v_like(cat):
        i = st.i_attention_wv
        st.i_attention_wv += 1
        if q.gqa >= 4 or model.n_expert >= 4:
            return "Q4_K", f"{cat} #{i} in {f}: n_gqa={q.gqa} / n_expert={model.n_expert} >= 4 -> Q4_K"
        r = "IQ3_S" if f in ("IQ2_S", "IQ2_M") else "Q2_K"
        return r, f"{cat} #{i} in {f} -> {r}"
    if model.n_expert == 8 and cat == ATTN_K:
        return "Q4_K", f"attn_k of an 8-expert model in {f} -> Q4_K"
    if cat == FFN_DOWN:
        i = st.i_ffn_down
        st.i_ffn_down += 1
        if i < st.n_ffn // 8:
            r = "IQ3_S" if f in ("IQ2_S", "IQ2_M") else "Q2_K"
            return r, f"ffn_down #{i} < n_layer/8 = {st.n_ffn // 8} in {f} -> {r}"
        return new, f"ffn_down #{i} >= n_layer/8 = {st.n_ffn // 8}: default type of {f}"
    if cat == ATTN_OUTPUT:
        if model.n_expert == 8:
            return "Q5_K", f"attn_output of an 8-expert model in {f} -> Q5_K"
        if f in ("IQ1_S", "IQ1_M"):
            return "IQ2_XXS", f"attn_output in {f} -> IQ2_XXS"
        if f in ("IQ2_S", "IQ2_M"):
            return "IQ3_S", f"attn_output in {f} -> IQ3_S"
    return q.default()


def _rule_attn_v(q: _Ask) -> tuple[str, str]:
    """attn_v (and the attn_v-like fused tensors), counted in order: i of n."""
    st, model, f, new, cat, gqa, has_imatrix = q.st, q.model, q.f, q.new, q.cat, q.gqa, q.has_imatrix
    i, n = st.i_attention_wv, st.n_attention_wv
    st.i_attention_wv += 1
    r, why = new, f"{cat} #{i} of {n}: default type of {f}"
    if f == "Q2_K":
        r = "Q4_K" if gqa >= 4 else "Q3_K"
        why = f"{cat} in Q2_K with n_gqa={gqa} {'>=' if gqa >= 4 else '<'} 4 -> {r}"
    elif f == "Q2_K_S" and gqa >= 4:
        r, why = "Q4_K", f"{cat} in Q2_K_S with n_gqa={gqa} >= 4 -> Q4_K"
    elif f == "IQ3_XXS":
        r = "Q4_K" if gqa >= 4 else ("IQ3_S" if not has_imatrix else "IQ3_XXS")
        why = (
            f"{cat} in IQ3_XXS with n_gqa={gqa} >= 4 -> Q4_K"
            if gqa >= 4
            else f"{cat} in IQ3_XXS " + ("without imatrix -> IQ3_S" if not has_imatrix else "with imatrix -> IQ3_XXS")
        )
    elif f in ("IQ3_XS", "IQ3_S") and gqa >= 4:
        r, why = "Q4_K", f"{cat} in {f} with n_gqa={gqa} >= 4 -> Q4_K"
    elif f == "IQ3_M":
        r, why = "Q4_K", f"{cat} in IQ3_M -> Q4_K"
    elif f == "Q3_K_M":
        r = "Q5_K" if i < 2 else "Q4_K"
        why = f"{cat} #{i} in Q3_K_M: {'first two' if i < 2 else 'after the first two'} -> {r}"
    elif f == "Q3_K_L":
        r, why = "Q5_K", f"{cat} in Q3_K_L -> Q5_K"
    elif f in ("IQ4_NL", "IQ4_XS") and gqa >= 4:
        r, why = "Q5_K", f"{cat} in {f} with n_gqa={gqa} >= 4 -> Q5_K"
    elif f in ("Q4_K_M", "Q5_K_M") and use_more_bits(i, n):
        r, why = "Q6_K", f"{cat} #{i} of {n} in {f}: use_more_bits({i}, {n}) -> Q6_K"
    elif f in ("Q4_K_M", "Q5_K_M"):
        why = f"{cat} #{i} of {n} in {f}: not use_more_bits({i}, {n}) -> {r}"
    elif f == "Q4_K_S" and i < 4:
        r, why = "Q5_K", f"{cat} #{i} < 4 in Q4_K_S -> Q5_K"
    if model.is_70b and r in ("Q3_K", "Q4_K"):
        r, why = "Q5_K", why + "; 70B model (8 heads share attn_v) -> Q5_K"
    if model.n_expert == 8:
        r, why = "Q8_0", why + "; 8-expert model -> Q8_0"
    return r, why


def _rule_attn_k(q: _Ask) -> tuple[str, str]:
    if q.model.n_expert == 8:
        return "Q8_0", "attn_k of an 8-expert model -> Q8_0"
    if q.f == "IQ3_XS":
        return "IQ3_XXS", "attn_k in IQ3_XS -> IQ3_XXS"
    if q.f == "IQ3_XXS":
        return "IQ2_S", "attn_k in IQ3_XXS -> IQ2_S"
    return q.default()


def _rule_attn_q(q: _Ask) -> tuple[str, str]:
    if q.f == "IQ3_XS":
        return "IQ3_XXS", "attn_q in IQ3_XS -> IQ3_XXS"
    if q.f == "IQ3_XXS":
        return "IQ2_S", "attn_q in IQ3_XXS -> IQ2_S"
    return q.default()


def _rule_ffn_down(q: _Ask) -> tuple[str, str]:
    """ffn_down by layer i of n (the counter, or the name's layer for MoE models)."""
    st, model, f, new, has_imatrix = q.st, q.model, q.f, q.new, q.has_imatrix
    i, n = q.layer(st.i_ffn_down, st.n_ffn)
    st.i_ffn_down += 1
    falcon = model.arch == "falcon"
    at = f"ffn_down layer {i} of {n} in {f}"
    if f == "Q2_K":
        return "Q3_K", "ffn_down in Q2_K -> Q3_K"
    if f == "Q2_K_S":
        if i < n // 8:
            return "Q4_K", f"{at}: {i} < n/8 = {n // 8} -> Q4_K"
        return new, f"{at}: default type"
    if f == "IQ3_XXS" and not has_imatrix:
        r = "Q4_K" if i < n // 8 else "Q3_K"
        return r, f"{at} without imatrix: {i} {'<' if i < n // 8 else '>='} n/8 = {n // 8} -> {r}"
    if f == "Q3_K_M":
        if i < n // 16:
            return "Q5_K", f"{at}: {i} < n/16 = {n // 16} -> Q5_K"
        if not falcon:
            return "Q4_K", f"{at}: {i} >= n/16 = {n // 16} -> Q4_K"
        r = "Q4_K" if use_more_bits(i, n) else "Q3_K"
        return r, f"{at} (Falcon): use_more_bits({i}, {n}) is {use_more_bits(i, n)} -> {r}"
    if f == "IQ3_M" and (i < n // 8 or (model.n_expert == 8 and use_more_bits(i, n))):
        return "Q4_K", (
            f"{at}: {i} < n/8 = {n // 8} -> Q4_K"
            if i < n // 8
            else f"{at}: 8 experts and use_more_bits({i}, {n}) -> Q4_K"
        )
    if f == "Q3_K_L":
        r = "Q4_K" if falcon else "Q5_K"
        return r, f"ffn_down in Q3_K_L{' (Falcon)' if falcon else ''} -> {r}"
    if f == "Q4_K_M":
        if falcon:
            r = "Q6_K" if i < n // 16 else ("Q5_K" if use_more_bits(i, n) else "Q4_K")
            return r, f"{at} (Falcon) -> {r}"
        if use_more_bits(i, n):
            return "Q6_K", f"{at}: use_more_bits({i}, {n}) -> Q6_K"
        return new, f"{at}: not use_more_bits({i}, {n}) -> {new}"
    if i < n // 8 and f in ("IQ4_NL", "IQ4_XS") and not has_imatrix:
        return "Q5_K", f"{at} without imatrix: {i} < n/8 = {n // 8} -> Q5_K"
    if f == "Q5_K_M":
        if use_more_bits(i, n):
            return "Q6_K", f"{at}: use_more_bits({i}, {n}) -> Q6_K"
        return new, f"{at}: not use_more_bits({i}, {n}) -> {new}"
    if f == "Q4_K_S" and not falcon and i < n // 8:
        return "Q5_K", f"{at}: {i} < n/8 = {n // 8} -> Q5_K"
    if f in ("Q4_0", "Q5_0") and has_imatrix and i < n // 8:
        r = "Q4_1" if f == "Q4_0" else "Q5_1"
        return r, f"{at} with imatrix: {i} < n/8 = {n // 8} -> {r}"
    return new, f"{at}: default type"


# attn_output of an 8-expert model in these file types -> Q5_K; of other models (not Falcon) -> the value
_ATTN_OUTPUT_8_EXPERTS = [
    "Q2_K",
    "IQ3_XS",
    "IQ3_XXS",
    "Q3_K_S",
    "Q3_K_M",
    "IQ4_NL",
    "Q4_K_S",
    "Q4_K_M",
    "IQ3_S",
    "IQ3_M",
    "IQ4_XS",
]
_ATTN_OUTPUT_UP = {"Q2_K": "Q3_K", "IQ3_XXS": "IQ3_S", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K", "IQ3_M": "Q4_K"}


def _rule_attn_output(q: _Ask) -> tuple[str, str]:
    f = q.f
    if q.model.arch != "falcon":
        if q.model.n_expert == 8:
            if f in _ATTN_OUTPUT_8_EXPERTS:
                return "Q5_K", f"attn_output of an 8-expert model in {f} -> Q5_K"
        else:
            r = _ATTN_OUTPUT_UP.get(f)
            if r:
                return r, f"attn_output in {f} -> {r}"
    elif f == "Q3_K_L":
        return "Q4_K", "attn_output of a Falcon model in Q3_K_L -> Q4_K"
    return q.default()


def _rule_ffn_gate_up(q: _Ask) -> tuple[str, str]:
    attr = "i_ffn_gate" if q.cat == FFN_GATE else "i_ffn_up"
    i, n = q.layer(getattr(q.st, attr), q.st.n_ffn)
    setattr(q.st, attr, getattr(q.st, attr) + 1)
    if q.f == "IQ3_XS" and n // 8 <= i < 7 * n // 8:
        return "IQ3_XXS", f"{q.cat} layer {i} of {n} in IQ3_XS (middle layers) -> IQ3_XXS"
    return q.default()


_RULES_BY_CATEGORY = {
    ATTN_K: _rule_attn_k,
    ATTN_Q: _rule_attn_q,
    FFN_DOWN: _rule_ffn_down,
    ATTN_OUTPUT: _rule_attn_output,
    FFN_GATE: _rule_ffn_gate_up,
    FFN_UP: _rule_ffn_gate_up,
}


def _choose(
    st: _State, model: ModelInfo, ft: FileType, t: TensorSpec, has_imatrix: bool, options: Options
) -> tuple[Format, str, str | None]:
    """The outer wrapper (llama_tensor_get_type): options first, then the heuristics, then fallback."""
    cat = category(t.name)
    if options.token_embedding_type is not None and cat == TOKEN_EMBD:
        named = t.name == "per_layer_token_embd.weight" and any(rx.search(t.name) for _, _, rx in options.tensor_types)
        if not named:
            return options.token_embedding_type, "--token-embedding-type", None
    if options.output_tensor_type is not None and cat == OUTPUT:
        return options.output_tensor_type, "--output-tensor-type", None
    new = ft.default
    if not new.is_quantized:
        return new, f"{ft.name}: every quantizable tensor becomes {new.name}", None
    rule = None
    for pat, fmt, rx in options.tensor_types:
        if rx.search(t.name):
            new, rule = fmt, f"--tensor-type {pat}={fmt.name}"
            break
    if rule is None:
        if options.pure:
            rule = f"--pure: default type of {ft.name}"
        else:
            name, rule = _heuristics(st, model, ft, t, cat, new, has_imatrix, options)
            new = get_format(name)
    fmt, why = fallback(t.ne[0], new)
    return fmt, rule, why


def make_plan(
    tensors: Sequence[TensorSpec | tuple],
    ftype: str | int | FileType,
    model: ModelInfo | Mapping | None = None,
    options: Options | None = None,
    has_imatrix: bool = False,
) -> Plan:
    """The type of every tensor of a model under ``ftype``, with the rule that chose it.

    ``tensors``: :class:`TensorSpec` or ``(name, ne, type)`` tuples (ne in ggml order), in any order —
    the plan lists them in the order llama-quantize writes them. ``model``: :class:`ModelInfo` or the
    GGUF metadata. ``has_imatrix`` changes a few rules (IQ3_XXS, IQ4_*, Q4_0/Q5_0 ffn_down).
    """
    ft = file_type(ftype)
    if model is None:
        model = ModelInfo()
    elif not isinstance(model, ModelInfo):
        model = ModelInfo.from_metadata(model)
    options = options or Options()
    specs = [t if isinstance(t, TensorSpec) else TensorSpec(*t) for t in tensors]
    by_name = {}
    for s in specs:
        if s.name in by_name:
            raise FormatError(f"two tensors are named {s.name!r}")
        by_name[s.name] = s
    order = loader_order(by_name)
    st = _State(order, model)
    plan = Plan(ft, model, options, bool(has_imatrix))
    for nm in order:
        t = by_name[nm]
        ok, reason = allows_quantization(t, options, model.arch)
        if ok:
            fmt, rule, fb = _choose(st, model, ft, t, bool(has_imatrix), options)
        else:
            fmt, rule, fb = t.type, f"kept as {t.type.name}: {reason}", None
        if fb:
            plan.n_fallback += 1
        plan.tensors.append(TensorChoice(nm, t.ne, t.type, fmt, rule, fb, ok, requires_imatrix(nm, fmt, ft)))
    return plan
