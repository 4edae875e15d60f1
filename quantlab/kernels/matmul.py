"""Matrix products straight from quantized blocks: what ggml's ``mul_mat`` does on the CPU.

ggml never expands a quantized weight matrix to float32. It quantizes the float32 activations to the
weight type's *vec_dot type* (spec §11.1: Q8_0 for Q4_0/Q5_0/Q8_0/IQ4_NL/..., Q8_1 for Q4_1/Q5_1, Q8_K
for the K- and IQ-quants) and then, per output element, sums exact integer products block by block and
combines the per-block sums with the two scales in float32 (spec §11.3)::

    Q4_1 x Q8_1:  y += (d_w * d_a) * sum_j q_w[j] * q_a[j]  +  m_w * s_a     (s_a = d_a * sum_j q_a[j])

Two paths live here, both with those numerics:

* **integer path** (any number of rows, for the formats it has): numba kernels that read the weight
  bytes in place, for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL (32-blocks) and Q4_K, Q5_K, Q6_K, IQ4_XS
  (256-blocks):
  one row function per block family, the block decode picked by ``kind``. Like ggml's AVX2 code, the
  block products are kept as 8-lane vectors and accumulated in float x8 (one horizontal sum per
  row). Rows go in groups of multirow.NR (8) sharing one activation load and one wide dot product
  per block (kernels/multirow.py; each row's sums bit-identical to the one-row kernel's): the 32-block
  formats and IQ4_XS; Q4_K / Q5_K / Q6_K still run row by row. Several matrices that read the same
  activations (Q, K, V) can run as one stacked product.
  Rows are spread over threads when that measures faster (:class:`ThreadPolicy`).
* **tile path** (every other format): dequantize a tile of weight rows into a
  reusable float32 buffer and multiply with BLAS. The activations are first rounded through the
  vec_dot type ("fake-quantized": ``d_a * q_a``), so the product is, up to float32 summation order,
  the same sum as the integer path: ``sum (d_w q_w + m_w)(d_a q_a)``.

The integer path is bit-exact with ggml's AVX2 vec_dot for Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 (signed
codes, blocks fused into 8 float lanes with one rounding, ``_mm256_fmadd_ps``; tests/test_forward_ops.py),
which is why it runs prompt batches too (see blocks.Linear); the other formats' float side (IQ4_NL, the
super-block formats) is summed in another order than ggml's and agrees to a few ulps. Note that
llama.cpp's CPU backend repacks some weights by default (ggml-cpu/repack.cpp; here Q4_0, measured) and
then runs other kernels: quantlab equals its ``--no-repack`` run (SmolLM2 requantized to Q4_0, chunk 1:
PPL 21.32750 vs 21.32749, KLD < 1e-6), the default run differs from that by KLD 0.004 (PPL 21.178).
"""

from __future__ import annotations

from functools import cache
from time import perf_counter

import numpy as np
from numba import njit, prange

from ..errors import FormatError, ShapeError
from ..formats._iqgrid import kvalues_iq4nl
from ..formats.layout import offsets, size
from ..formats.registry import FORMATS
from . import kquants as _kq
from . import legacy as _legacy
from . import multirow as _mr
from ._fp import F16_TABLE
from ._rows import numba_thread_fns

# re-exported: notebooks and other modules import the activation quantizers from here
from .act import fake_quantize_activations, quantize_activations  # noqa: F401
from .simd import (
    _at,
    _f16_at,
    _fma_block,
    _fma_ivec,
    _izero,
    _load_bytes,
    _nib_codes,
    _q5_codes,
    _split_block,
    _sub8,
    _table16,
    _vsum,
    _vzero,
)

F32 = np.float32

# weight format -> activation ("vec_dot") type, spec §11.1: the registry's column (ggml-cpu's
# type_traits_cpu[type].vec_dot_type); formats without one (integers, F64, activation-only types)
# have no matrix product and are absent, so a lookup fails loudly.
VEC_DOT_TYPE = {f.name: f.vec_dot_type for f in FORMATS if f.vec_dot_type is not None}

F16 = F16_TABLE  # fp16 bits -> float32 for all 65536 patterns (ggml_table_f32_f16)

# ---------------------------------------------------------------------------------------------
# block decodes of the integer path (built from the vector helpers of kernels/simd.py)
# ---------------------------------------------------------------------------------------------

IQ4NL_VALUES = tuple(int(v) for v in kvalues_iq4nl())

# Byte offsets inside one block (quantlab.formats.layout; ints, so numba and the IR builders use constants)
(Q40_QS,) = offsets("Q4_0", "qs")
Q41_M, Q41_QS = offsets("Q4_1", "m", "qs")
Q50_QH, Q50_QS = offsets("Q5_0", "qh", "qs")
Q51_M, Q51_QH, Q51_QS = offsets("Q5_1", "m", "qh", "qs")
(Q80_QS,) = offsets("Q8_0", "qs")
(IQ4NL_QS,) = offsets("IQ4_NL", "qs")
assert Q41_M == Q51_M and all(offsets(f, "d") == (0,) for f in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL"))
Q4K_D, Q4K_DMIN, Q4K_SCALES, Q4K_QS = offsets("Q4_K", "d", "dmin", "scales", "qs")
Q5K_QH, Q5K_QS = offsets("Q5_K", "qh", "qs")
assert offsets("Q5_K", "d", "dmin", "scales") == (Q4K_D, Q4K_DMIN, Q4K_SCALES)
Q6K_QL, Q6K_QH, Q6K_SCALES, Q6K_D = offsets("Q6_K", "ql", "qh", "scales", "d")
IQ4XS_D, IQ4XS_SCALES_H, IQ4XS_SCALES_L, IQ4XS_QS = offsets("IQ4_XS", "d", "scales_h", "scales_l", "qs")


# wo: the block's first byte. Layouts (spec §3): Q4_0 d|qs, Q4_1 d|m|qs, Q5_0 d|qh|qs, Q5_1 d|m|qh|qs,
# Q8_0 d|qs, IQ4_NL d|qs; the IQ4_XS form reads the 16 nibble bytes of one 32-block at wo itself.
_fma_q4_0 = _fma_block(
    lambda c, b, t, w, o: (_sub8(b, _nib_codes(c, b, t, w, _at(b, o, Q40_QS)), 8), True),
    "Q4_0 block: the signed codes nibble - 8 (as ggml's AVX2 kernel: the float sums are then its own).",
)
_fma_q4_1 = _fma_block(
    lambda c, b, t, w, o: (_nib_codes(c, b, t, w, _at(b, o, Q41_QS)), False),
    "Q4_1 block: codes = nibbles (the min term m * s is added by the caller).",
)
_fma_q5_0 = _fma_block(
    lambda c, b, t, w, o: (_sub8(b, _q5_codes(c, b, t, w, _at(b, o, Q50_QS), _at(b, o, Q50_QH)), 16), True),
    "Q5_0 block: the signed codes q5 - 16 (as ggml's AVX2 kernel).",
)
_fma_q5_1 = _fma_block(
    lambda c, b, t, w, o: (_q5_codes(c, b, t, w, _at(b, o, Q51_QS), _at(b, o, Q51_QH)), False),
    "Q5_1 block: 5-bit codes (min term added by the caller).",
)
_fma_q8_0 = _fma_block(
    lambda c, b, t, w, o: (_load_bytes(c, b, t, w, _at(b, o, Q80_QS), 32), True), "Q8_0 block: int8 codes."
)
_fma_iq4nl = _fma_block(
    lambda c, b, t, w, o: (_table16(b, _nib_codes(c, b, t, w, _at(b, o, IQ4NL_QS)), IQ4NL_VALUES), True),
    "IQ4_NL block: kvalues_iq4nl[nibble].",
)
_fma_iq4 = _fma_block(
    lambda c, b, t, w, o: (_table16(b, _nib_codes(c, b, t, w, o), IQ4NL_VALUES), True),
    "The 16 nibble bytes of one IQ4_XS 32-block at wo: kvalues_iq4nl[nibble].",
)

# the same blocks for multirow.NR rows at once (one activation load, NR independent accumulators)
_fmaR_q4_0 = _mr.fma_rows("nib", None, "NR Q4_0 blocks (signed codes q - 8).", qs_off=Q40_QS, sub=8)
_fmaR_q5_0 = _mr.fma_rows("q5", None, "NR Q5_0 blocks (signed codes q - 16).", qs_off=Q50_QS, qh_off=Q50_QH, sub=16)
_fmaR_q4_1 = _mr.fma_rows("nib", ("min", Q41_M), "NR Q4_1 blocks (min term m * s).", qs_off=Q41_QS)
_fmaR_q5_1 = _mr.fma_rows("q5", ("min", Q51_M), "NR Q5_1 blocks (min term m * s).", qs_off=Q51_QS, qh_off=Q51_QH)
_fmaR_q8_0 = _mr.fma_rows("q8", None, "NR Q8_0 blocks.", qs_off=Q80_QS)
_fmaR_iq4nl = _mr.fma_rows("nib", None, "NR IQ4_NL blocks.", qs_off=IQ4NL_QS, table=IQ4NL_VALUES)
_sbR_iq4xs = _mr.iq4xs_superblock(
    "NR IQ4_XS super-blocks.", IQ4NL_VALUES, IQ4XS_D, IQ4XS_SCALES_H, IQ4XS_SCALES_L, IQ4XS_QS
)


# Super-block formats: the sub-block products times their small integer scales are summed as an
# int32 x8 vector over the whole super-block (exact), then converted and scaled once, like ggml's.

_blk_q4k = _split_block(0, 0, "Q4_K: 32 nibbles (shift 0 or 4); hi, sh unused.")
_blk_q5k = _split_block(1, 0, "Q5_K: 4 low bits from a nibble, bit 4 from bit ``sh`` of qh.")
_blk_q6k = _split_block(3, 32, "Q6_K: 4 low bits from a nibble, 2 high bits from qh, minus 32.")


# ---------------------------------------------------------------------------------------------
# integer matrix products: out[t, r] = W[r, :] . a[t, :], rows spread over threads
#
# Two families, one row function each: the 32-value block formats (activations Q8_0 / Q8_1: per block
# d and, for Q8_1, s) and the 256-value super-block formats (activations Q8_K: d and 16 bsums per
# super-block). ``kind`` picks the block decode; the per-block float combination is ggml's (spec §11.3).
# ---------------------------------------------------------------------------------------------

K_Q4_0, K_Q4_1, K_Q5_0, K_Q5_1, K_Q8_0, K_IQ4_NL = 0, 1, 2, 3, 4, 5
K_Q4_K, K_Q5_K, K_Q6_K, K_IQ4_XS = 10, 11, 12, 13
# format -> (kind, block bytes); every 32-block format has its fp16 d in bytes 0-1
_KINDS = {
    f: (k, size(f))
    for f, k in (
        ("Q4_0", K_Q4_0),
        ("Q4_1", K_Q4_1),
        ("Q5_0", K_Q5_0),
        ("Q5_1", K_Q5_1),
        ("Q8_0", K_Q8_0),
        ("IQ4_NL", K_IQ4_NL),
        ("Q4_K", K_Q4_K),
        ("Q5_K", K_Q5_K),
        ("Q6_K", K_Q6_K),
        ("IQ4_XS", K_IQ4_XS),
    )
}


@njit(cache=True, inline="always")
def _h(W, r, o, tab):
    """fp16 at byte o of row r as float32 (``tab``, the fp16 table, is not needed any more)."""
    return _f16_at(W, r * W.shape[1] + o)


@njit(cache=True, inline="always")
def _row_32(kind, ts, r, W, qs, d, s, out, c):
    """Row r of W (a 32-value block format) times T activation rows into out[:, c] (Q8_0: s = sum(q)
    per block; Q8_1: s = the block sums d * sum(q), fp16-rounded): per block acc += float(int
    products) * (d_w * d_a) fused into 8 float lanes (Q4_0 / Q5_0 codes signed, q - 8 / q - 16, as ggml
    takes them), plus in a scalar the min term m_w * s of Q4_1 / Q5_1: ggml's AVX2 order, bit for bit."""
    _R, rb = W.shape
    nb = rb // ts
    T, K = qs.shape
    for t in range(T):
        acc = _vzero()
        accm = F32(0)
        for b in range(nb):
            wo = r * rb + b * ts
            ao = t * K + b * 32
            dd = _f16_at(W, wo) * d[t, b]
            if kind == K_Q4_0:  # signed codes q - 8, like ggml (no separate offset term)
                acc = _fma_q4_0(acc, dd, W, wo, qs, ao)
            elif kind == K_Q4_1:
                acc = _fma_q4_1(acc, dd, W, wo, qs, ao)
                accm += _f16_at(W, wo + Q41_M) * s[t, b]
            elif kind == K_Q5_0:  # signed codes q - 16
                acc = _fma_q5_0(acc, dd, W, wo, qs, ao)
            elif kind == K_Q5_1:
                acc = _fma_q5_1(acc, dd, W, wo, qs, ao)
                accm += _f16_at(W, wo + Q51_M) * s[t, b]
            elif kind == K_Q8_0:
                acc = _fma_q8_0(acc, dd, W, wo, qs, ao)
            else:
                acc = _fma_iq4nl(acc, dd, W, wo, qs, ao)
        out[t, c] = _vsum(acc) + accm


@njit(cache=True, inline="always")
def _rowgroup_32(kind, ts, r, W, qs, d, s, out, c):
    """Rows r .. r + NR - 1 of W into out[:, c .. c + NR - 1]: each row's sums exactly as _row_32
    computes them (same operations, same order), NR rows per activation load (kernels/multirow.py)."""
    _R, rb = W.shape
    nb = rb // ts
    T, K = qs.shape
    for t in range(T):
        acc = _mr.zeros_acc()
        accm = _mr.zeros_rows()
        for b in range(nb):
            wo = r * rb + b * ts
            ao = t * K + b * 32
            if kind == K_Q4_0:
                acc, accm = _fmaR_q4_0(acc, accm, W, wo, rb, qs, ao, d[t, b], s[t, b])
            elif kind == K_Q5_0:
                acc, accm = _fmaR_q5_0(acc, accm, W, wo, rb, qs, ao, d[t, b], s[t, b])
            elif kind == K_Q4_1:
                acc, accm = _fmaR_q4_1(acc, accm, W, wo, rb, qs, ao, d[t, b], s[t, b])
            elif kind == K_Q5_1:
                acc, accm = _fmaR_q5_1(acc, accm, W, wo, rb, qs, ao, d[t, b], s[t, b])
            elif kind == K_Q8_0:
                acc, accm = _fmaR_q8_0(acc, accm, W, wo, rb, qs, ao, d[t, b], s[t, b])
            else:
                acc, accm = _fmaR_iq4nl(acc, accm, W, wo, rb, qs, ao, d[t, b], s[t, b])
        tot = _mr.totals_whole(acc, accm) if kind == K_Q8_0 else _mr.totals_split(acc, accm)
        for i in range(_mr.NR):
            out[t, c + i] = _mr.lane(tot, i)


@njit(cache=True, inline="always")
def _scale_min_k4(W, r, o, j):
    """6-bit scale and min of sub-block j of a Q4_K/Q5_K super-block whose 12 scale bytes start at o."""
    if j < 4:
        sc = np.int32(W[r, o + j]) & 63
        m = np.int32(W[r, o + j + 4]) & 63
    else:
        sc = (np.int32(W[r, o + j + 4]) & 15) | ((np.int32(W[r, o + j - 4]) >> 6) << 4)
        m = (np.int32(W[r, o + j + 4]) >> 4) | ((np.int32(W[r, o + j]) >> 6) << 4)
    return sc, m


@njit(cache=True, inline="always")
def _sb_q45_k(five, r, W, o, qs, ao, bsums, t, b):
    """Q4_K / Q5_K super-block: (sum_j sc_j * (q.a of sub-block j) as I32x8, sum_j m_j * bsums_j)."""
    rb = W.shape[1]
    qo = r * rb + o + (Q5K_QS if five else Q4K_QS)
    ho = r * rb + o + Q5K_QH
    iv = _izero()
    summs = np.int32(0)
    for jj in range(4):  # 4 chunks of 64 values: low nibbles, then high nibbles
        sc0, m0 = _scale_min_k4(W, r, o + Q4K_SCALES, 2 * jj)
        sc1, m1 = _scale_min_k4(W, r, o + Q4K_SCALES, 2 * jj + 1)
        wo = qo + jj * 32
        a0 = ao + jj * 64
        if five:  # bit 2jj / 2jj+1 of qh[l] is bit 4 of value 64jj + l / 64jj + 32 + l
            iv = _blk_q5k(iv, sc0, sc0, W, wo, np.int32(0), ho, np.int32(2 * jj), qs, a0)
            iv = _blk_q5k(iv, sc1, sc1, W, wo, np.int32(4), ho, np.int32(2 * jj + 1), qs, a0 + 32)
        else:
            iv = _blk_q4k(iv, sc0, sc0, W, wo, np.int32(0), wo, np.int32(0), qs, a0)
            iv = _blk_q4k(iv, sc1, sc1, W, wo, np.int32(4), wo, np.int32(0), qs, a0 + 32)
        bo = b * 16 + jj * 4
        summs = np.int32(summs + m0 * (bsums[t, bo] + bsums[t, bo + 1]) + m1 * (bsums[t, bo + 2] + bsums[t, bo + 3]))
    return iv, summs


@njit(cache=True, inline="always")
def _sb_q6_k(r, W, o, qs, ao):
    """Q6_K super-block: sum over its 16 sub-blocks of int8 scale * sum (q - 32) * a, as I32x8."""
    rb = W.shape[1]
    iv = _izero()
    for n in range(2):  # two halves of 128 values, each 4 runs of 32
        ql = r * rb + o + Q6K_QL + n * 64
        qh = r * rb + o + Q6K_QH + n * 32
        sc = o + Q6K_SCALES + n * 8
        a0 = ao + n * 128
        for c in range(4):  # run c: low (c < 2) or high nibbles of ql[32 * (c % 2) ...], qh bits 2c;
            s0 = np.int32(np.int8(W[r, sc + 2 * c]))  # values 0-15 scale 2c, 16-31 scale 2c + 1
            s1 = np.int32(np.int8(W[r, sc + 2 * c + 1]))
            iv = _blk_q6k(
                iv, s0, s1, W, ql + 32 * (c % 2), np.int32(4 * (c // 2)), qh, np.int32(2 * c), qs, a0 + 32 * c
            )
    return iv


@njit(cache=True, inline="always")
def _row_256(kind, ts, r, W, qs, d, bsums, out, c):
    """Row r of W (a 256-value super-block format) times T Q8_K activation rows into out[:, c]."""
    _R, rb = W.shape
    nb = rb // ts
    T, K = qs.shape
    for t in range(T):
        acc = F32(0)  # Q4_K / Q5_K min terms
        accv = _vzero()
        for b in range(nb):
            o = b * ts
            ao = t * K + b * 256
            if kind == K_Q6_K:  # (d * dy) * isum, d at the end of the block
                accv = _fma_ivec(accv, _sb_q6_k(r, W, o, qs, ao), _h(W, r, o + Q6K_D, F16) * d[t, b])
            elif kind == K_IQ4_XS:  # per 32-block: (dx * dy * (ls - 32)) * isum
                d4d8 = _h(W, r, o + IQ4XS_D, F16) * d[t, b]
                sh = np.int32(W[r, o + IQ4XS_SCALES_H]) | (np.int32(W[r, o + IQ4XS_SCALES_H + 1]) << 8)
                for ib in range(8):
                    ls = ((np.int32(W[r, o + IQ4XS_SCALES_L + ib // 2]) >> (4 * (ib % 2))) & 15) | (
                        ((sh >> (2 * ib)) & 3) << 4
                    )
                    accv = _fma_iq4(accv, d4d8 * F32(ls - 32), W, r * rb + o + IQ4XS_QS + 16 * ib, qs, ao + 32 * ib)
            else:  # Q4_K / Q5_K: (dy * d) * isum - (dy * dmin) * summs
                iv, summs = _sb_q45_k(kind == K_Q5_K, r, W, o, qs, ao, bsums, t, b)
                accv = _fma_ivec(accv, iv, d[t, b] * _h(W, r, o + Q4K_D, F16))
                acc -= (d[t, b] * _h(W, r, o + Q4K_DMIN, F16)) * F32(summs)
        out[t, c] = _vsum(accv) + acc


@njit(cache=True, inline="always")
def _rowgroup_iq4xs(ts, r, W, qs, d, out, c):
    """Rows r .. r + NR - 1 of an IQ4_XS matrix: _row_256's IQ4_XS sums row by row (same operations,
    same order), NR rows per activation load, one super-block of every row per call."""
    _R, rb = W.shape
    nb = rb // ts
    T, K = qs.shape
    for t in range(T):
        acc = _mr.zeros_acc()
        for b in range(nb):
            acc = _sbR_iq4xs(acc, W, r * rb + b * ts, rb, qs, t * K + b * 256, d[t, b])
        tot = _mr.totals_split(acc, _mr.zeros_rows())
        for i in range(_mr.NR):
            out[t, c + i] = _mr.lane(tot, i)


# serial and threaded drivers (separate functions so that numba caches both). Whether threads pay off
# depends on the machine's load more than on the product: on a quiet machine two threads halve a 576 x 1536
# matvec; on a shared, busy one a worker that is not scheduled stalls the join for milliseconds and
# everything is faster on one thread. ThreadPolicy decides by measuring (see below).
PAR_MIN_MACS = 1 << 18  # smaller products always run on one thread


@njit(cache=True, inline="always")
def _n_rows(Ws):
    n = 0
    for i in range(len(Ws)):
        n += Ws[i].shape[0]
    return n


# Ws: a tuple of weight matrices whose rows are stacked into the columns of out (Q, K and V of a layer
# in one pass: one thread fork/join instead of three), kinds / tss their formats. A span [c0, c1) of
# output columns runs matrix by matrix, so each matrix and its format are fetched from the tuples once.
@njit(cache=True)
def _rows_32(kind, ts, W, qs, d, s, out, r0, r1, base):
    r = r0
    while r + _mr.NR <= r1:
        _rowgroup_32(kind, ts, r, W, qs, d, s, out, base + r)
        r += _mr.NR
    while r < r1:
        _row_32(kind, ts, r, W, qs, d, s, out, base + r)
        r += 1


@njit(cache=True)
def _rows_256(kind, ts, W, qs, d, bsums, out, r0, r1, base):
    r = r0
    if kind == K_IQ4_XS:
        while r + _mr.NR <= r1:
            _rowgroup_iq4xs(ts, r, W, qs, d, out, base + r)
            r += _mr.NR
    while r < r1:
        _row_256(kind, ts, r, W, qs, d, bsums, out, base + r)
        r += 1


@njit(cache=True)
def _span_32(kinds, tss, Ws, qs, d, s, out, c0, c1):
    base = 0
    for i in range(len(Ws)):
        R = Ws[i].shape[0]
        _rows_32(kinds[i], tss[i], Ws[i], qs, d, s, out, max(c0 - base, 0), min(c1 - base, R), base)
        base += R


@njit(cache=True)
def _span_256(kinds, tss, Ws, qs, d, bsums, out, c0, c1):
    base = 0
    for i in range(len(Ws)):
        R = Ws[i].shape[0]
        _rows_256(kinds[i], tss[i], Ws[i], qs, d, bsums, out, max(c0 - base, 0), min(c1 - base, R), base)
        base += R


@njit(cache=True, parallel=True)
def _par_32(kinds, tss, Ws, qs, d, s, out, nthreads):
    n = _n_rows(Ws)
    m = min(n, nthreads)  # one contiguous span of rows per thread
    for j in prange(m):
        _span_32(kinds, tss, Ws, qs, d, s, out, j * n // m, (j + 1) * n // m)


@njit(cache=True)
def _ser_32(kinds, tss, Ws, qs, d, s, out, nthreads):
    _span_32(kinds, tss, Ws, qs, d, s, out, 0, _n_rows(Ws))


@njit(cache=True, parallel=True)
def _par_256(kinds, tss, Ws, qs, d, bsums, out, nthreads):
    n = _n_rows(Ws)
    m = min(n, nthreads)
    for j in prange(m):
        _span_256(kinds, tss, Ws, qs, d, bsums, out, j * n // m, (j + 1) * n // m)


@njit(cache=True)
def _ser_256(kinds, tss, Ws, qs, d, bsums, out, nthreads):
    _span_256(kinds, tss, Ws, qs, d, bsums, out, 0, _n_rows(Ws))


# ---------------------------------------------------------------------------------------------
# dequantize weight rows into a float32 buffer (the tile path): each format family's own row-range
# kernel, the one quantlab.dequantize runs (bit-exact with ggml's to_float), called directly on the
# tile's rows in this thread. format -> (kernel(q, y, *extra, r0, r1), extra)
# ---------------------------------------------------------------------------------------------

_DEQ = {
    "Q4_0": (_legacy._Q45["Q4_0"][2], (_legacy._H,)),
    "Q4_1": (_legacy._Q45["Q4_1"][2], (_legacy._H,)),
    "Q8_0": (_legacy._dequant_q8, (False,)),
    "Q4_K": (_kq._dequant_q4_k, ()),
    "Q6_K": (_kq._dequant_q6_k, ()),
}


class ThreadPolicy:
    """Serial or threaded for each (kernel, size class), chosen from measured speed.

    Every call reports its multiply-adds per second to :meth:`record`; per key an exponential moving
    average is kept for each mode, and :meth:`choose` takes the faster one. The slower mode is re-tried
    now and then (after ``explore`` calls, the interval doubling each time it loses again, up to
    ``max_explore``), so a machine that gets quiet (or busy) is noticed. Only the choice between two
    runs of the same row kernels depends on timing; the results are identical either way."""

    def __init__(self, explore: int = 16, max_explore: int = 4096, alpha: float = 0.3):
        self.explore, self.max_explore, self.alpha = explore, max_explore, alpha
        self.rate: dict = {}  # key -> [serial MACs/s or None, threaded MACs/s or None]
        self.wait: dict = {}  # key -> [calls until the next try of the slower mode, interval]

    @staticmethod
    def key(kind: int, macs: int):
        return kind, int(macs).bit_length()

    def choose(self, key) -> bool:
        r = self.rate.setdefault(key, [None, None])
        if r[0] is None or r[1] is None:
            return r[0] is not None  # measure serial first, then threaded
        best = r[1] > r[0]
        w = self.wait.setdefault(key, [self.explore, self.explore])
        w[0] -= 1
        if w[0] > 0:
            return best
        return not best  # time to re-try the slower mode

    def record(self, key, parallel: bool, macs: int, seconds: float) -> None:
        r = self.rate.setdefault(key, [None, None])
        v = macs / max(seconds, 1e-9)
        was_best = None if None in r else (r[1] > r[0]) == parallel
        i = int(parallel)
        r[i] = v if r[i] is None else r[i] + self.alpha * (v - r[i])
        w = self.wait.get(key)
        if w is not None and w[0] <= 0 and was_best is False:  # that was an exploration
            still_worse = (r[1] > r[0]) != parallel
            w[1] = min(self.max_explore, w[1] * 2) if still_worse else self.explore
            w[0] = w[1]


POLICY = ThreadPolicy()
INT_KERNELS = _KINDS  # formats with an integer (generation-path) kernel
DEQ_KERNELS = frozenset(_DEQ)  # formats whose tiles dequantize here (others: quantlab.dequantize)


MAX_STACK = 3  # matrices per stacked product (Q, K, V); fewer are padded with empty ones


@cache
def _stack_kinds(fmts: tuple):
    """(kinds, block sizes), padded to MAX_STACK entries: the drivers always see tuples of one length,
    so each compiles once (every extra tuple length would be another cold compile of the whole kernel)."""
    if not 1 <= len(fmts) <= MAX_STACK:
        raise ShapeError(f"matmul_int stacks 1 to {MAX_STACK} matrices, got {len(fmts)}")
    ks = [INT_KERNELS[f] for f in fmts]
    if len({k < K_Q4_K for k, _ in ks}) != 1:
        raise FormatError(
            f"matmul_int: stacked matrices must all be 32-value or all 256-value block formats (got {', '.join(fmts)})"
        )
    ks += [ks[0]] * (MAX_STACK - len(ks))
    return tuple(k for k, _ in ks), tuple(t for _, t in ks)


def _num_threads() -> int:
    return numba_thread_fns()[0]()


def _readonly(w):
    v = w.view()
    v.flags.writeable = False
    return v


def matmul_int(W, fmt, act, out: np.ndarray, parallel: bool | None = None) -> np.ndarray:
    """Integer path: ``out[t, r] = W[r] . a[t]`` with ``act`` from :func:`quantize_activations` for the
    format's vec_dot type. W: uint8 [R, row_bytes] in ggml layout, or a tuple of up to MAX_STACK such
    matrices (``fmt`` then a tuple of their formats, all with the same vec_dot type and block family)
    whose rows are stacked into out's columns. ``parallel``: spread rows over threads or not; default:
    products under PAR_MIN_MACS multiply-adds run on one thread, bigger ones as :data:`POLICY` (a
    :class:`ThreadPolicy`) finds faster."""
    if isinstance(W, tuple):
        kinds, tss = _stack_kinds(fmt)
        rows = 0
        for w in W:
            rows += w.shape[0]
        if len({w.flags.writeable for w in W}) > 1:  # one array type in the tuple: all read-only views
            W = tuple(_readonly(w) for w in W)
        W = W + (W[0][:0],) * (MAX_STACK - len(W))
    else:
        kinds, tss = _stack_kinds((fmt,))
        rows = W.shape[0]
        W = (W,) + (W[:0],) * (MAX_STACK - 1)
    qs, d, extra = act
    run = (_par_32, _ser_32) if kinds[0] < K_Q4_K else (_par_256, _ser_256)
    nt = _num_threads()
    if parallel is not None:
        (run[0] if parallel else run[1])(kinds, tss, W, qs, d, extra, out, nt)
        return out
    macs = rows * qs.shape[0] * qs.shape[1]
    if macs < PAR_MIN_MACS or nt < 2:
        run[1](kinds, tss, W, qs, d, extra, out, nt)
        return out
    key = POLICY.key(kinds[0], macs)
    par = POLICY.choose(key)
    t0 = perf_counter()
    (run[0] if par else run[1])(kinds, tss, W, qs, d, extra, out, nt)
    POLICY.record(key, par, macs, perf_counter() - t0)
    return out


def block_mins(W: np.ndarray, fmt: str, r0: int, r1: int) -> np.ndarray:
    """The fp16 min ``m`` of every 32-block of rows [r0, r1) of a Q4_1 / Q5_1 matrix, as float32
    [rows, blocks]. With e from ``fake_quantize_activations(x, "Q8_1", with_s_error=True)``, ggml's
    integer product equals the tile product plus ``e @ mins.T`` (the m * s term of spec §11.3)."""
    ts = {"Q4_1": size("Q4_1"), "Q5_1": size("Q5_1")}[fmt]
    blocks = W[r0:r1].reshape(r1 - r0, -1, ts)
    bits = blocks[:, :, Q41_M].astype(np.uint16) | (blocks[:, :, Q41_M + 1].astype(np.uint16) << 8)
    return F16[bits]


def dequantize_rows(W: np.ndarray, fmt: str, r0: int, out: np.ndarray) -> np.ndarray:
    """Dequantize rows ``r0 .. r0 + len(out)`` of W into ``out`` (float32 [n, K]), for fast formats."""
    if r0 < 0 or r0 + out.shape[0] > W.shape[0]:
        raise IndexError("row range outside the weight matrix")
    kernel, extra = _DEQ[fmt]
    kernel(W[r0 : r0 + out.shape[0]], out, *extra, 0, out.shape[0])
    return out
