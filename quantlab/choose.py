"""Which file type should I run? Does it fit, how fast can it generate, what does a token cost in energy.

Back-of-the-envelope models, each one line of arithmetic, with every outside figure named and sourced:

* **fit**: weights (the file type's real size, :func:`quantlab.sizes.file_size`) + the **KV cache**
  ``n_layer * n_ctx * 2 * n_kv_head * head_dim * bytes_per_element`` (K and V for every layer and
  position; llama.cpp's ``--cache-type-k/-v`` f16, q8_0 or q4_0, whose bytes per element come from the
  ggml registry: 2, 34/32, 18/32) + an allowance for the operating system and the apps next to it.
  llama.cpp's compute buffers (a few hundred MB) are not counted.
* **speed**: generating one token reads every weight once (and the KV cache so far), so
  ``tokens/s <= memory bandwidth / bytes read per token``: an upper bound that a well-tuned runtime
  reaches within tens of percent when decode is bandwidth-bound.
* **energy**: ``bytes moved x energy per byte + operations x energy per operation``, with
  Horowitz's 45 nm figures (:data:`HOROWITZ_PJ`).

Nothing here is measured by itself; notebook 11 puts each estimate next to a measurement on the machine
it runs on where one is possible.
"""

from __future__ import annotations

from . import sizes
from .errors import FormatError, ShapeError
from .formats import get

__all__ = [
    "MODELS",
    "KV_CACHE_TYPES",
    "DEVICES",
    "BANDWIDTHS",
    "PEAK_OPS",
    "HOROWITZ_PJ",
    "LLAMA_CPP_LADDER",
    "head_dim",
    "kv_cache_bytes",
    "weights_bytes",
    "fit",
    "fit_table",
    "decode_tokens_per_s",
    "ridge_batch",
    "energy_per_token",
    "mix_names",
    "os_in_use_bytes",
]

#: dense llama-architecture shapes (config.json of each model)
MODELS = {
    "SmolLM2-135M-Instruct": sizes.SMOLLM2_135M,
    "Llama-2-7B": sizes.LLAMA2_7B,
    "Llama-3-8B": sizes.LLAMA3_8B,
    "Llama-2-13B": sizes.LLAMA2_13B,
    "Llama-2-70B": sizes.LLAMA2_70B,
}

#: llama.cpp's --cache-type-k / --cache-type-v names -> ggml type (bytes per element from the registry)
KV_CACHE_TYPES = {"f16": "F16", "q8_0": "Q8_0", "q4_0": "Q4_0"}

#: device memory lines of the fit chart, GB (10**9 bytes): a small laptop, a 16 GB laptop, a 24 GB
#: consumer GPU (RTX 3090/4090), an 80 GB data-centre GPU (A100/H100 80GB)
DEVICES = {"8 GB laptop": 8.0, "16 GB laptop": 16.0, "24 GB GPU": 24.0, "80 GB GPU": 80.0}

#: peak memory bandwidth, GB/s, with where each figure comes from
BANDWIDTHS = {
    "laptop DDR5-5600, 2 channels": (
        5600e6 * 8 * 2 / 1e9,
        "JEDEC DDR5: 5600 MT/s x 8 bytes per 64-bit channel x 2 channels",
    ),
    "RTX 4090 (GDDR6X)": (1008.0, "NVIDIA GeForce RTX 4090 specifications: 1008 GB/s"),
    "A100 80GB SXM (HBM2e)": (2039.0, "NVIDIA A100 datasheet: 2,039 GB/s"),
    "H100 SXM (HBM3)": (3350.0, "NVIDIA H100 datasheet: 3.35 TB/s"),
}

#: peak dense tensor throughput, ops/s, and source (sparsity not counted)
PEAK_OPS = {
    "H100 SXM (HBM3)": {"fp16": 989.4e12, "int8": 1978.9e12, "source": "NVIDIA H100 datasheet (dense)"},
    "RTX 4090 (GDDR6X)": {
        "fp16": 165.2e12,
        "int8": 660.6e12,
        "source": "NVIDIA Ada whitepaper, RTX 4090: FP16 tensor with FP32 accumulate, INT8 tensor (dense)",
    },
}

#: energy per operation in picojoules, 45 nm, 0.9 V: M. Horowitz, "Computing's energy problem (and what we
#: can do about it)", ISSCC 2014, figure 1.1.9. "dram_32bit" is one 32-bit read from DRAM, 640 pJ as Han et al.
#: tabulate it ("Learning both Weights and Connections", NeurIPS 2015, table 1): the low end of Horowitz's
#: 1.3-2.6 nJ per 64-bit DRAM access.
HOROWITZ_PJ = {
    "int8_add": 0.03,
    "int32_add": 0.1,
    "int8_mult": 0.2,
    "int32_mult": 3.1,
    "fp16_add": 0.4,
    "fp16_mult": 1.1,
    "fp32_add": 0.9,
    "fp32_mult": 3.7,
    "sram_64bit_8KB": 10.0,
    "sram_64bit_1MB": 100.0,
    "dram_32bit": 640.0,
}

#: llama.cpp's published Llama-3-8B ladder (llama.cpp tools/perplexity/README.md, "LLaMA 3 8b Scoreboard",
#: revision f364eb6f, CUDA, wikitext, no imatrix; the same README as vendored in llama-cpp-python 0.3.36):
#: file type -> (size GiB, PPL, mean KLD vs FP16)
LLAMA_CPP_LADDER = {
    "Q8_0": (7.96, 6.234284, 0.001355),
    "Q6_K": (6.14, 6.253382, 0.005452),
    "Q5_K_M": (5.33, 6.288607, 0.010762),
    "Q5_K_S": (5.21, 6.336598, 0.016595),
    "Q4_K_M": (4.58, 6.407115, 0.031273),
    "Q4_K_S": (4.37, 6.500529, 0.043136),
    "Q4_0": (4.34, 6.700147, 0.071940),
    "Q3_K_M": (3.74, 6.888498, 0.101913),
    "Q3_K_S": (3.41, 7.863786, 0.228217),
    "Q2_K": (2.96, 9.751568, 0.445132),
}
LLAMA_CPP_LADDER_FP16_PPL = 6.233160


def _model(model) -> dict:
    if isinstance(model, str):
        if model not in MODELS:
            raise ShapeError(f"unknown model {model!r}; known: {', '.join(MODELS)} (or pass a shape dict)")
        return MODELS[model]
    return model


def head_dim(model) -> int:
    m = _model(model)
    return m["d_model"] // m["n_head"]


def kv_cache_bytes(model, n_ctx: int, cache_type: str = "f16") -> float:
    """Bytes of the K and V cache for ``n_ctx`` positions: n_layer * n_ctx * 2 * n_kv_head * head_dim *
    bytes per element of ``cache_type`` (llama.cpp's f16, q8_0 or q4_0)."""
    m = _model(model)
    if cache_type not in KV_CACHE_TYPES:
        raise FormatError(f"unknown KV cache type {cache_type!r}; llama.cpp's: {', '.join(KV_CACHE_TYPES)}")
    f = get(KV_CACHE_TYPES[cache_type])
    per_elem = f.type_size / f.block_size
    return m["n_layer"] * n_ctx * 2 * m["n_kv_head"] * head_dim(m) * per_elem


def weights_bytes(model, ftype: str) -> float:
    """Bytes of the weights of ``model`` in llama.cpp file type ``ftype`` (the recipe's per-tensor mix)."""
    m = _model(model)
    return sizes.file_size(sizes.llama_tensors(**m), ftype, m)["bytes"]


def os_in_use_bytes() -> float | None:
    """Memory in use on this machine right now (MemTotal - MemAvailable from /proc/meminfo), or None."""
    try:
        info = {}
        with open("/proc/meminfo") as fh:
            for line in fh:
                k, v = line.split(":", 1)
                info[k] = int(v.split()[0]) * 1024
        return float(info["MemTotal"] - info["MemAvailable"])
    except (OSError, KeyError, ValueError):
        return None


def fit(
    model, ftype: str, n_ctx: int = 4096, cache_type: str = "f16", os_gb: float = 3.0, device_gb: float | None = None
) -> dict:
    """Memory needed to run ``model`` in ``ftype`` with an ``n_ctx`` context: weights + KV cache + ``os_gb``
    for the operating system and other programs (an allowance, set it to what your machine uses).
    With ``device_gb``, also whether it fits and what is left."""
    w = weights_bytes(model, ftype)
    kv = kv_cache_bytes(model, n_ctx, cache_type)
    total = w + kv + os_gb * sizes.GB
    out = {
        "ftype": ftype,
        "n_ctx": n_ctx,
        "cache": cache_type,
        "weights GB": w / sizes.GB,
        "KV GB": kv / sizes.GB,
        "OS GB": float(os_gb),
        "total GB": total / sizes.GB,
    }
    if device_gb is not None:
        out["device GB"] = float(device_gb)
        out["fits"] = total <= device_gb * sizes.GB
        out["left GB"] = device_gb - total / sizes.GB
    return out


def fit_table(
    model,
    ftypes=("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K"),
    n_ctx: int = 4096,
    cache_type: str = "f16",
    os_gb: float = 3.0,
    devices=None,
) -> list[dict]:
    """:func:`fit` for each file type, with a column per device saying whether it fits."""
    devices = DEVICES if devices is None else devices
    rows = []
    for ft in ftypes:
        r = fit(model, ft, n_ctx, cache_type, os_gb)
        for name, gb in devices.items():
            r[name] = "fits" if r["total GB"] <= gb else "no"
        rows.append(r)
    return rows


def decode_tokens_per_s(model, ftype: str, bandwidth_gbs: float, n_ctx: int = 0, cache_type: str = "f16") -> float:
    """Upper bound on single-user generation speed: bandwidth / (weight bytes + KV bytes read per token)."""
    per_token = weights_bytes(model, ftype) + kv_cache_bytes(model, n_ctx, cache_type)
    return bandwidth_gbs * 1e9 / per_token


def ridge_batch(peak_ops: float, bandwidth_gbs: float, bpw: float) -> float:
    """Tokens processed together (batch) above which a matrix product stops being bandwidth-bound:
    it does 2 ops per weight per token and reads bpw/8 bytes per weight once for the whole batch, so
    it is compute-bound when 2 * batch / (bpw / 8) > peak_ops / bandwidth."""
    return peak_ops / (bandwidth_gbs * 1e9) * (bpw / 8.0) / 2.0


#: the operations one weight costs in a matrix-vector product, by how the runtime computes it
_PATH_OPS = {
    "integer": ("int8_mult", "int32_add"),
    "fp16": ("fp16_mult", "fp16_add"),
    "fp32": ("fp32_mult", "fp32_add"),
}


def energy_per_token(model, ftype: str, path: str | None = None) -> dict:
    """Energy of one generated token (joules), Horowitz's 45 nm figures: every weight byte read once from
    DRAM (640 pJ per 32 bits = 160 pJ per byte), one multiply and one add per weight (int8 x int8 -> int32
    for quantized types, as llama.cpp's CPU dot products do; fp16 or fp32 for float files), and one fp32
    multiply-add per block for its scale. Unpacking (shifts, masks: ~0.03 pJ each) is not counted."""
    m = _model(model)
    fs = sizes.file_size(sizes.llama_tensors(**m), ftype, m)
    dram_pj_per_byte = HOROWITZ_PJ["dram_32bit"] / 4
    n = fs["params"]
    if path is None:
        path = "fp32" if ftype == "F32" else "fp16" if ftype in ("F16", "BF16") else "integer"
    mult, add = _PATH_OPS[path]
    op_pj = n * (HOROWITZ_PJ[mult] + HOROWITZ_PJ[add])
    blocks = sum(cnt / get(f).block_size for f, cnt in fs["params_by_format"].items() if get(f).block_size > 1)
    op_pj += blocks * (HOROWITZ_PJ["fp32_mult"] + HOROWITZ_PJ["fp32_add"])
    mem_pj = fs["bytes"] * dram_pj_per_byte
    return {
        "ftype": ftype,
        "GB read": fs["bytes"] / sizes.GB,
        "memory J": mem_pj * 1e-12,
        "compute J": op_pj * 1e-12,
        "total J": (mem_pj + op_pj) * 1e-12,
        "memory share": mem_pj / (mem_pj + op_pj),
    }


def mix_names(
    model="Llama-2-7B",
    families=(("Q3_K", ("Q3_K_S", "Q3_K_M", "Q3_K_L")), ("Q4_K", ("Q4_K_S", "Q4_K_M")), ("Q5_K", ("Q5_K_S", "Q5_K_M"))),
) -> list[dict]:
    """_S / _M / _L: small / medium / large mixes of one base format, from quantlab.recipes: bits per
    weight, the share of weights left in the base format, and what the rest is."""
    m = _model(model)
    t = sizes.llama_tensors(**m)
    rows = []
    for base, fts in families:
        for ft in fts:
            r = sizes.file_size(t, ft, m)
            share = {k: v / r["params"] for k, v in r["params_by_format"].items() if v / r["params"] >= 0.001}
            rows.append(
                {
                    "ftype": ft,
                    "base": base,
                    "bpw": r["bpw"],
                    "GB": r["GB"],
                    "% in base": 100 * share.get(base, 0.0),
                    "rest": ", ".join(f"{k} {100 * v:.1f}%" for k, v in share.items() if k != base),
                }
            )
    return rows


def plot_fit(
    ax,
    models=("Llama-2-7B", "Llama-2-13B", "Llama-2-70B"),
    ftypes=("F16", "Q8_0", "Q6_K", "Q4_K_M", "Q3_K_M", "Q2_K"),
    n_ctx: int = 4096,
    cache_type: str = "f16",
    os_gb: float = 3.0,
    devices=None,
) -> list[dict]:
    """Stacked bars (weights, KV cache, OS allowance) per model and file type, with a line per device's
    memory. Returns the :func:`fit` rows drawn."""
    devices = DEVICES if devices is None else devices
    rows, x, labels = [], [], []
    pos = 0.0
    for m in models:
        for ft in ftypes:
            r = fit(m, ft, n_ctx, cache_type, os_gb)
            r["model"] = m
            rows.append(r)
            x.append(pos)
            labels.append(ft)
            pos += 1
        pos += 0.8
    w = [r["weights GB"] for r in rows]
    kv = [r["KV GB"] for r in rows]
    osb = [r["OS GB"] for r in rows]
    ax.bar(x, w, color="#2a7ab0", label="weights")
    ax.bar(x, kv, bottom=w, color="#f0ad4e", label=f"KV cache ({n_ctx} tokens, {cache_type})")
    ax.bar(x, osb, bottom=[a + b for a, b in zip(w, kv)], color="#bbbbbb", label=f"OS and apps ({os_gb:g} GB)")
    top = max(r["total GB"] for r in rows)
    for name, gb in devices.items():
        if gb < top * 1.1:
            ax.axhline(gb, color="#d62728", lw=1, ls="--")
            ax.text(x[-1] + 0.6, gb, f" {name}", va="bottom", fontsize=10, color="#d62728")
    ax.set_xticks(x, labels, rotation=60, fontsize=10)
    n = len(ftypes)
    for k, m in enumerate(models):
        ax.text(
            x[k * n] + (n - 1) / 2, -0.17, m, transform=ax.get_xaxis_transform(), ha="center", va="top", fontsize=11
        )
    ax.set_ylabel("memory needed (GB)", fontsize=11)
    ax.set_ylim(0, top * 1.08)
    ax.tick_params(axis="y", labelsize=10)
    ax.set_xlim(x[0] - 0.8, x[-1] + 3.5)
    ax.legend(fontsize=10, loc="upper left")
    return rows
