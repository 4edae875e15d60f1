"""How big is a model? Parameters x format -> bytes, GB and GiB, from the registry's bits per weight.

Every ggml block format stores its scales next to the codes, so its real cost is the registry's
``bpw = 8 * type_size / block_size``, not the number in its name: Q8_0 keeps 32 int8 codes *and* one
fp16 scale per block, 34 bytes for 32 weights = 8.5 bits per weight.

    >>> quantlab.sizes.model_size(7e9, "Q4_0")["GB"]            # 3.9375
    >>> quantlab.sizes.bits_for_budget(175e9, 40e9)             # 1.83 bits per weight
    >>> quantlab.sizes.file_size(quantlab.sizes.llama_tensors(**quantlab.sizes.LLAMA2_7B), "Q4_K_M")

GB = 10**9 bytes (what disk vendors and most model cards say); GiB = 2**30 bytes (what `ls -lh`,
Windows and GPU tools say). The two differ by 7.4 %.

File types such as Q4_K_M are *mixes*: llama.cpp picks a format per tensor. :func:`file_mix` asks
``quantlab.recipes`` (llama.cpp's rules); :func:`stated_mix` is a short statement of those rules for
dense llama models (written out in its docstring), for lessons that state them.
"""

from __future__ import annotations

import math
import re

from .errors import FormatError, ShapeError
from .formats import all_formats, get
from .recipes import ModelInfo, all_file_types, make_plan

__all__ = [
    "GB",
    "GiB",
    "model_size",
    "bits_for_budget",
    "nominal_bits",
    "scale_overhead_bpw",
    "llama_tensors",
    "LLAMA2_7B",
    "LLAMA3_8B",
    "LLAMA2_13B",
    "LLAMA2_70B",
    "LLAMA31_405B",
    "SMOLLM2_135M",
    "stated_mix",
    "file_types",
    "file_mix",
    "file_size",
    "mix_bpw",
    "size_table",
]

GB = 10**9
GiB = 2**30

# Dense llama-architecture shapes (from the models' config.json).
LLAMA2_7B = dict(n_layer=32, d_model=4096, d_ff=11008, vocab=32000, n_head=32, n_kv_head=32, tied=False)
SMOLLM2_135M = dict(n_layer=30, d_model=576, d_ff=1536, vocab=49152, n_head=9, n_kv_head=3, tied=True)
LLAMA3_8B = dict(n_layer=32, d_model=4096, d_ff=14336, vocab=128256, n_head=32, n_kv_head=8, tied=False)
LLAMA2_13B = dict(n_layer=40, d_model=5120, d_ff=13824, vocab=32000, n_head=40, n_kv_head=40, tied=False)
LLAMA2_70B = dict(n_layer=80, d_model=8192, d_ff=28672, vocab=32000, n_head=64, n_kv_head=8, tied=False)
LLAMA31_405B = dict(n_layer=126, d_model=16384, d_ff=53248, vocab=128256, n_head=128, n_kv_head=8, tied=False)


def nominal_bits(fmt) -> float:
    """The number in the format's name: what people *say* it costs (Q8_0 -> 8, IQ2_XXS -> 2, F16 -> 16,
    MXFP4 -> 4, TQ1_0 -> log2(3) = 1.585 for a ternary digit)."""
    f = get(fmt)
    n = f.name
    if n in ("F32", "I32"):
        return 32.0
    if n in ("F16", "BF16", "I16"):
        return 16.0
    if n in ("F64", "I64"):
        return 64.0
    if n == "I8":
        return 8.0
    if n.startswith("TQ"):
        return math.log2(3.0)
    if n in ("MXFP4", "NVFP4"):
        return 4.0
    m = re.match(r"^I?Q(\d)", n)
    if m is None:
        raise FormatError(f"no nominal bit width for {n}")
    return float(m.group(1))


def scale_overhead_bpw(fmt) -> float:
    """Bits per weight beyond the name's number: block scales, mins, sub-block scales (bpw - nominal)."""
    f = get(fmt)
    return f.bpw - nominal_bits(f)


def _check_params(params) -> float:
    try:
        p = float(params)
    except (TypeError, ValueError):
        raise ShapeError(f"the number of parameters must be a number, got {params!r}") from None
    if not math.isfinite(p) or p < 0:
        raise ShapeError(f"the number of parameters must be a finite number >= 0, got {params!r}")
    return p


def model_size(params, fmt) -> dict:
    """Size of ``params`` weights all stored in ``fmt`` (a registry name, id or Format).

    Returns a dict: format, params, bpw (true bits per weight), nominal_bits, overhead_bpw, bytes,
    GB, GiB. Block rounding is ignored (``params`` need not be a multiple of the block size)."""
    f = get(fmt)
    f.check_usable()
    p = _check_params(params)
    nbytes = p * f.bpw / 8.0
    return {
        "format": f.name,
        "params": p,
        "bpw": f.bpw,
        "nominal_bits": nominal_bits(f),
        "overhead_bpw": f.bpw - nominal_bits(f),
        "bytes": nbytes,
        "GB": nbytes / GB,
        "GiB": nbytes / GiB,
    }


def bits_for_budget(params, budget_bytes) -> float:
    """Bits per weight available when ``params`` weights must fit in ``budget_bytes``."""
    p = _check_params(params)
    if p == 0:
        raise ShapeError("a model with 0 parameters fits in any budget; give a positive number of parameters")
    return float(budget_bytes) * 8.0 / p


def size_table(params, formats=None) -> list[dict]:
    """:func:`model_size` for every usable, storable format of the registry (or the given ones)."""
    fs = (
        formats
        if formats is not None
        else [f for f in all_formats(include_activation=False) if f.name not in ("I8", "I16", "I32", "I64")]
    )
    return [model_size(params, f) for f in fs]


# --------------------------------------------------------------------------------------------------
# Whole files: a tensor list and a per-tensor format choice
# --------------------------------------------------------------------------------------------------


def llama_tensors(n_layer, d_model, d_ff, vocab, n_head, n_kv_head, tied=False) -> dict:
    """GGUF tensor names -> shapes (ggml order: ``(ne1, ne0)`` = rows, row length) of a dense llama model."""
    kv = d_model // n_head * n_kv_head
    t = {"token_embd.weight": (vocab, d_model)}
    for i in range(n_layer):
        b = f"blk.{i}."
        t[b + "attn_norm.weight"] = (d_model,)
        t[b + "attn_q.weight"] = (d_model, d_model)
        t[b + "attn_k.weight"] = (kv, d_model)
        t[b + "attn_v.weight"] = (kv, d_model)
        t[b + "attn_output.weight"] = (d_model, d_model)
        t[b + "ffn_norm.weight"] = (d_model,)
        t[b + "ffn_gate.weight"] = (d_ff, d_model)
        t[b + "ffn_up.weight"] = (d_ff, d_model)
        t[b + "ffn_down.weight"] = (d_model, d_ff)
    t["output_norm.weight"] = (d_model,)
    if not tied:
        t["output.weight"] = (vocab, d_model)
    return t


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


_UNIFORM = {
    "F32": "F32",
    "F16": "F16",
    "BF16": "BF16",
    "Q8_0": "Q8_0",
    "Q4_0": "Q4_0",
    "Q4_1": "Q4_1",
    "Q5_0": "Q5_0",
    "Q5_1": "Q5_1",
    "Q6_K": "Q6_K",
}


def stated_mix(tensors: dict, ftype: str) -> dict:
    """Per-tensor formats of a llama.cpp file type for a *dense llama* model, as stated here (used when
    ``quantlab.recipes`` is not available). 1-D tensors (norms) stay F32 in every file type.

    * uniform types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q6_K, F16, BF16): that type everywhere, except
      ``output.weight`` (or the tied token embedding) in Q6_K for the 4- and 5-bit ones (Q8_0 when its
      rows do not divide into the default type's blocks; Q8_0 files keep Q8_0);
    * Q4_K_M: Q4_K everywhere, except ``output.weight`` in Q6_K and ``attn_v`` / ``ffn_down`` in Q6_K on
      the layers where use_more_bits(i, n_layer) holds: the first and last eighth of the layers and every
      third layer in between (``i < n/8 or i >= 7n/8 or (i - n/8) % 3 == 2``);
    * Q5_K_M: the same pattern with Q5_K and Q6_K.

    Rows not divisible by the block size fall back like llama.cpp (Q4_K -> Q5_0, Q5_K -> Q5_1,
    Q6_K -> Q8_0)."""
    ft = ftype.upper()
    n_layer = _n_layer(tensors)
    fallback = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}
    if ft in _UNIFORM:
        base, more = _UNIFORM[ft], None
    elif ft in ("Q4_K_M", "Q5_K_M"):
        base, more = ft[:4], "Q6_K"
    else:
        raise FormatError(
            f"no stated mix for file type {ftype!r}; stated here: "
            f"{', '.join(list(_UNIFORM) + ['Q4_K_M', 'Q5_K_M'])} (quantlab.recipes knows them all)"
        )
    out = {}
    tied = "output.weight" not in tensors
    for name, shape in tensors.items():
        if len(shape) < 2:
            out[name] = "F32"
            continue
        fmt = base
        m = re.match(r"blk\.(\d+)\.", name)
        if name == "output.weight" or (tied and name == "token_embd.weight"):
            if base not in ("F32", "F16", "BF16", "Q8_0"):
                fmt = "Q8_0" if shape[-1] % get(base).block_size else "Q6_K"
        elif (
            more
            and m
            and (name.endswith("attn_v.weight") or name.endswith("ffn_down.weight"))
            and _use_more_bits(int(m.group(1)), n_layer)
        ):
            fmt = more
        if shape[-1] % get(fmt).block_size:
            fmt = fallback.get(fmt, fmt)
        out[name] = fmt
    return out


def _n_layer(tensors: dict) -> int:
    return 1 + max((int(m.group(1)) for k in tensors if (m := re.match(r"blk\.(\d+)\.", k))), default=-1)


def _recipes_mix(tensors: dict, ftype: str, model: dict | None = None):
    """Ask quantlab.recipes (llama.cpp's rules) for the per-tensor choice."""
    m = dict(model or {})
    info = ModelInfo(
        arch="llama",
        n_layer=int(m.get("n_layer", _n_layer(tensors))),
        n_head=int(m.get("n_head", 1)),
        n_head_kv=int(m.get("n_kv_head", m.get("n_head", 1))),
    )
    specs = [(name, tuple(reversed(shape)), "F32" if len(shape) < 2 else "F16") for name, shape in tensors.items()]
    plan = make_plan(specs, ftype, info)
    return plan.types()


def file_mix(tensors: dict, ftype: str, model: dict | None = None) -> tuple[dict, str]:
    """(name -> format, source): llama.cpp's choice, from quantlab.recipes (:func:`stated_mix` is the
    simplified rule a lesson states). ``model``: n_layer, n_head, n_kv_head (e.g. :data:`LLAMA2_7B`),
    used by a few rules."""
    return _recipes_mix(tensors, ftype, model), "quantlab.recipes"


def file_types() -> list[str]:
    """llama.cpp file type names :func:`file_size` can size: all of quantlab.recipes'."""
    return [f.name for f in all_file_types()]


def mix_bpw(tensors: dict, mix: dict) -> float:
    """File-level bits per weight of a per-tensor choice: total bits / total parameters."""
    bits = 0.0
    n = 0
    for name, shape in tensors.items():
        k = math.prod(shape)
        bits += k * get(mix[name]).bpw
        n += k
    if n == 0:
        raise ShapeError("no tensors given")
    return bits / n


def file_size(tensors: dict, ftype: str, model: dict | None = None) -> dict:
    """Size of a whole model file type: params, bpw (mixed), bytes, GB, GiB, the per-format parameter
    counts, and where the mix came from. Metadata and alignment padding (a few MB) are not counted."""
    mix, source = file_mix(tensors, ftype, model)
    per = {}
    for name, shape in tensors.items():
        per[mix[name]] = per.get(mix[name], 0) + math.prod(shape)
    params = sum(per.values())
    bpw = mix_bpw(tensors, mix)
    nbytes = params * bpw / 8.0
    return {
        "ftype": ftype,
        "params": params,
        "bpw": bpw,
        "bytes": nbytes,
        "GB": nbytes / GB,
        "GiB": nbytes / GiB,
        "params_by_format": dict(sorted(per.items(), key=lambda kv: -kv[1])),
        "mix": mix,
        "source": source,
    }
