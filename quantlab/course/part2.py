"""Exercises for notebooks 05 onwards ("predict, then run"). Every answer is computed by quantlab.

Keys are "NN.k" (notebook NN, exercise k). Slow answers (a compressor over a real matrix, a trained
network) are computed once per process.

Every exercise is one declaration (``@exercise`` with its texts and tolerance, then its solver): the
repeated shape is the registry's, kept on purpose: one exercise reads top to bottom in one place.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from . import exercise

# ----------------------------------------------------------------------------------------------- 05 GGUF


@functools.lru_cache(maxsize=1)
def _smollm2_anatomy():
    from .. import data, gguf
    from ..gguf.anatomy import Anatomy

    return Anatomy(gguf.open(data.path("smollm2")))


@exercise(
    "05.1",
    "How many bytes does the fixed GGUF header take before the first key/value pair "
    "(magic, version, tensor count, key/value count)?",
    hint="magic is 4 ASCII bytes, version a u32; both counts are 64-bit integers.",
    explain="4 (b'GGUF') + 4 (u32 version) + 8 (u64 tensor count) + 8 (u64 key/value count).",
    unit="bytes",
)
def _gguf_header_bytes():
    a = _smollm2_anatomy()
    names = ("magic", "version", "tensor count", "key/value count")
    return sum(f.size for f in a.fields if f.section == "header" and f.name in names)


@exercise(
    "05.2",
    "SmolLM2's token embedding is 49,152 x 576 weights in Q8_0 (blocks of 32 weights in 34 bytes). "
    "How many bytes does it take in the file?",
    hint="count the blocks (weights / 32), then multiply by the block's bytes (32 int8 codes + a 2-byte fp16 scale).",
    explain="49,152 x 576 / 32 = 884,736 blocks x 34 bytes.",
    unit="bytes",
)
def _token_embd_bytes():
    return int(_smollm2_anatomy().file.tensors["token_embd.weight"].nbytes)


@exercise(
    "05.3",
    "Bits per weight of Q4_1 from its block layout: 32 weights as 4-bit codes, plus an fp16 scale and an fp16 minimum.",
    hint="(32 x 4 + 16 + 16) bits for 32 weights.",
    explain="160 bits / 32 weights: the 'Q4' file is 5 bits per weight.",
    rel=1e-3,
    unit="bits",
)
def _q4_1_bpw():
    from ..formats import get

    return get("Q4_1").bpw


# ---------------------------------------------------------------------------------------- 06 compression


@functools.lru_cache(maxsize=1)
def _minilm_w():
    from .. import data

    return data.tensors("minilm")["encoder.layer.5.output.dense.weight"]


@exercise(
    "06.1",
    "Entropy, in bits out of 8, of the LEAST significant byte of fp32 weights "
    "(encoder.layer.5.output.dense of all-MiniLM-L6-v2)?",
    hint="the lowest mantissa bits of a real-valued weight are close to uniformly random.",
    explain="practically 8 bits: no lossless codec can shrink that byte.",
    abs=0.05,
    unit="bits",
)
def _low_byte_entropy():
    from .. import analogy

    return analogy.byte_plane_entropy(_minilm_w(), "fp32")[0]


@functools.lru_cache(maxsize=1)
def _lossless_rows():
    from .. import analogy

    return analogy.lossless_table(_minilm_w()[:128])


@exercise(
    "06.2",
    "Best lossless codec (zlib, bz2, lzma, zstd, PPMd) on those fp32 weights: bits per weight "
    "(out of 32)? Within 1 bit counts.",
    hint="only the top byte (the sign and 7 of the 8 exponent bits) is predictable; the other three are noise.",
    explain="a few percent saved at best: lossless compression is no way to a 4-bit model.",
    abs=1.0,
    unit="bits",
)
def _best_lossless_fp32():
    from .. import analogy

    r = _lossless_rows()[0]
    return min(r[c] for c in analogy.CODECS)


@exercise(
    "06.3",
    "JPEG (min/max grey range) reaching Q4_K's SQNR on that matrix: does it need 'more' or 'fewer' "
    "bits per weight than Q4_K's 4.5?",
    hint="JPEG bets on neighbouring values being alike; neighbouring weights are not.",
    explain="more: only JPEG's top quality gets there, at more bits than Q4_K. Block formats model the "
    "distribution inside each block, JPEG the smoothness of an image.",
)
def _jpeg_vs_q4k():
    from .. import analogy, metrics
    from ..formats import get

    w = _minilm_w()
    y, _q, _src = analogy.roundtrip(w, "Q4_K")
    target = metrics.sqnr_db(w, y)
    bpws = []
    for q in range(5, 101, 5):
        rec, nb = analogy.jpeg_roundtrip(w, q, clip=None)
        if metrics.sqnr_db(w, rec) >= target:
            bpws.append(8.0 * nb / w.size)
    return "more" if not bpws or min(bpws) > get("Q4_K").bpw else "fewer"


# ------------------------------------------------------------------------------------ 08 mixes, imatrix


@exercise(
    "08.1",
    "Under 'Q4_K_M', what percentage of SmolLM2-135M-Instruct's weights are really stored in Q4_K? (within 1 point)",
    hint="576-wide rows do not divide into 256-weight super-blocks: only ffn_down (rows of 1536) can hold K-quants.",
    explain="most of the model falls back to Q5_0/Q8_0: a small model says little about a file type's name.",
    abs=1.0,
    unit="%",
)
def _smollm2_q4k_share():
    from ..widgets import mixes

    return 100 * mixes.plan_summary(mixes.plan_for("smollm2", "Q4_K_M"))["share"].get("Q4_K", 0.0)


@exercise(
    "08.2",
    "And on Llama-2-7B (rows of 4096 and 11008), what percentage of the weights does Q4_K_M keep in Q4_K? "
    "(within 1 point)",
    hint="attn_v and ffn_down get Q6_K on the use_more_bits layers, and output.weight is Q6_K.",
    explain="about 83 %: 'mostly' Q4_K, the rest Q6_K (that is the _M in Q4_K_M).",
    abs=1.0,
    unit="%",
)
def _llama_q4k_share():
    from .. import sizes

    r = sizes.file_size(sizes.llama_tensors(**sizes.LLAMA2_7B), "Q4_K_M", sizes.LLAMA2_7B)
    return 100 * r["params_by_format"].get("Q4_K", 0) / r["params"]


@exercise(
    "08.3",
    "How many of SmolLM2's 30 layers get more bits from use_more_bits(i, n)?",
    hint="the first eighth (i < 3), the last eighth (i >= 26), and every third layer in between ((i - 3) % 3 == 2).",
    explain="n // 8 = 3 layers at each end, plus every third layer between them.",
    unit="layers",
)
def _use_more_bits_count():
    from ..recipes import use_more_bits

    return sum(bool(use_more_bits(i, 30)) for i in range(30))


@exercise(
    "08.4",
    "In Q4_K's search llama.cpp weights the error of weight j by imatrix_j * sqrt(sigma2 + x_j^2). "
    "Same imatrix_j: how many times more weight does a weight with x_j^2 = 3 sigma2 get than one with x_j = 0?",
    hint="sqrt(sigma2 + 3 sigma2) / sqrt(sigma2).",
    explain="2x: big weights count more, on top of what the activations (imatrix) say.",
    rel=1e-3,
    unit="x",
)
def _imatrix_weight_ratio():
    from ..widgets.mixes import ggml_error_weights

    x = np.array([0.0, math.sqrt(3.0)], dtype=np.float32)
    # sigma2 = 1 here: give the function the row's sigma2 directly
    w = ggml_error_weights(x, np.ones(2, dtype=np.float32), "Q4_K", sigma2=1.0)
    return float(w[1] / w[0])


# --------------------------------------------------------------------------------------------- 09 QAT


@exercise(
    "09.1",
    "A symmetric absmax grid with 2^(b-1) - 1 positive levels: how many distinct values at b = 2 bits?",
    hint="count the positive levels, their negatives, and zero.",
    explain="-d, 0, +d: a 2-bit symmetric grid wastes one of its four codes.",
    unit="values",
)
def _levels_2bit():
    from .. import qat

    w = np.linspace(-1, 1, 1001, dtype=np.float32).reshape(1, -1)
    return int(np.unique(qat.fake_quant(w, 2)).size)


@exercise(
    "09.2",
    "The toy's per-group-16 scales stored in fp16: bits per weight at 4-bit codes?",
    hint="4 bits of code per weight, plus 16 bits of scale shared by 16 weights.",
    explain="5 bits: the smaller the group, the more the scales cost (Q4_0 pays 0.5 for groups of 32).",
    rel=1e-9,
    unit="bits",
)
def _group16_bpw():
    return 4 + 16 / 16


@functools.lru_cache(maxsize=1)
def _qat_results():
    from .. import qat

    return qat.compare(bits_list=(8, 4, 3, 2), groups=(None, 16), epochs=60, qat_epochs=30, seed=0)


@exercise(
    "09.3",
    "At 2 bits with one scale per tensor, which gives the higher test accuracy on the digits: 'PTQ' or 'QAT'?",
    hint="QAT trains with the rounding in the loop.",
    explain="QAT: the network learns weights that survive the coarse grid.",
)
def _qat_vs_ptq_2bit():
    _base, results = _qat_results()
    r = next(r for r in results if r.bits == 2 and r.group is None)
    return "QAT" if r.qat_acc > r.ptq_acc else "PTQ"


# --------------------------------------------------------------------------------- 11 which format


@exercise(
    "11.1",
    "Llama-2-7B (32 layers, 32 KV heads of 128 dimensions) with a 4096-token context: "
    "how many GB is its f16 KV cache? (within 0.05)",
    hint="n_layer x n_ctx x 2 (K and V) x n_kv_head x head_dim x 2 bytes.",
    explain="32 x 4096 x 2 x 32 x 128 x 2 bytes = 2.15 GB: on top of the 4.08 GB of Q4_K_M weights.",
    abs=0.05,
    unit="GB",
)
def _kv_7b():
    from .. import choose

    return choose.kv_cache_bytes("Llama-2-7B", 4096, "f16") / 1e9


@exercise(
    "11.2",
    "Upper bound on generation speed of Llama-2-7B Q4_K_M on a laptop with dual-channel DDR5-5600 "
    "(89.6 GB/s), short context: tokens per second? (within 10 %)",
    hint="every weight byte is read once per token: bandwidth / file bytes (Q4_K_M of a 7B is 4.08 GB).",
    explain="about 22 tokens/s at most; real runtimes reach a good part of it.",
    rel=0.10,
    unit="tokens/s",
)
def _tps_laptop():
    from .. import choose

    bw = choose.BANDWIDTHS["laptop DDR5-5600, 2 channels"][0]
    return choose.decode_tokens_per_s("Llama-2-7B", "Q4_K_M", bw)


@exercise(
    "11.3",
    "One user chatting with Llama-2-7B on a 24 GB GPU: which generates faster, 'Q8_0' or 'Q4_K_M'?",
    hint="single-user decode reads every weight per token and is far below the GPU's compute ridge.",
    explain="Q4_K_M, by about the size ratio (1.75x); pick Q8_0 on a GPU for quality when it fits, not for speed.",
)
def _gpu_decode():
    from .. import choose

    bw = choose.BANDWIDTHS["RTX 4090 (GDDR6X)"][0]
    q8 = choose.decode_tokens_per_s("Llama-2-7B", "Q8_0", bw)
    q4 = choose.decode_tokens_per_s("Llama-2-7B", "Q4_K_M", bw)
    return "Q4_K_M" if q4 > q8 else "Q8_0"
