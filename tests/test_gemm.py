"""The prompt-batch GEMM (quantlab.kernels.gemm) against ggml's reference vec_dot, byte for byte.

The reference is a float32 numpy transcription of ggml-cpu/quants.c's ``ggml_vec_dot_<type>_q8_<x>_generic``
for each format: codes unpacked from the stored ggml bytes here (not through gemm.pack), the integer
block sum, then per block in order ``sumf += ...`` with the format's own parenthesization, float32,
no FMA. The kernel must give exactly those bytes, for every output of a matrix whose row count is not a
multiple of the 16-row panel and a batch whose size is not a multiple of the 4-row tile.
"""

from __future__ import annotations

import numpy as np
import pytest

import quantlab
from quantlab.formats._iqgrid import kvalues_iq4nl
from quantlab.formats.layout import offsets, size
from quantlab.kernels import _rows
from quantlab.kernels import gemm as gk
from quantlab.kernels import matmul as mm

pytestmark = pytest.mark.skipif(not gk.AVAILABLE, reason="the panel GEMM needs AVX-512 VNNI")
F32 = np.float32


def _f16(blocks, name_off):
    return blocks[:, :, name_off : name_off + 2].copy().view(np.float16)[:, :, 0].astype(F32)


def _values(q: np.ndarray, fmt: str, K: int):
    """(signed integer weight values [R, nb, 32], d [R, nb], m [R, nb] or None) from ggml's bytes."""
    R = q.shape[0]
    if fmt == "IQ4_XS":  # per 32-value sub-block: values, d of the super-block, the 6-bit scale ls
        nsb = K // 256
        blk = q.reshape(R, nsb, size(fmt))
        d = np.repeat(_f16(blk, offsets(fmt, "d")[0]), 8, axis=1)
        (h,), (lo,), (o,) = offsets(fmt, "scales_h"), offsets(fmt, "scales_l"), offsets(fmt, "qs")
        sh = blk[:, :, h : h + 2].copy().view("<u2")[:, :, 0].astype(np.int64)
        ls = np.stack(
            [((blk[:, :, lo + ib // 2] >> (4 * (ib % 2))) & 15) | (((sh >> (2 * ib)) & 3) << 4) for ib in range(8)],
            axis=2,
        ).reshape(R, nsb * 8)
        qs = blk[:, :, o : o + 128].reshape(R, nsb * 8, 16).astype(np.int64)
        codes = np.concatenate([qs & 15, qs >> 4], axis=2)
        return kvalues_iq4nl().astype(np.int64)[codes], d, ls
    nb = K // 32
    blk = q.reshape(R, nb, size(fmt))
    d = _f16(blk, offsets(fmt, "d")[0])
    m = _f16(blk, offsets(fmt, "m")[0]) if fmt in ("Q4_1", "Q5_1") else None
    if fmt == "Q8_0":
        (o,) = offsets(fmt, "qs")
        return blk[:, :, o : o + 32].view(np.int8).astype(np.int64), d, m
    (o,) = offsets(fmt, "qs")
    qs = blk[:, :, o : o + 16].astype(np.int64)
    codes = np.concatenate([qs & 15, qs >> 4], axis=2)  # value j: low nibble of byte j, j+16: high nibble
    if fmt in ("Q5_0", "Q5_1"):
        (h,) = offsets(fmt, "qh")
        qh = blk[:, :, h : h + 4].copy().view("<u4")[:, :, 0].astype(np.int64)
        codes |= ((qh[:, :, None] >> np.arange(32)) & 1) << 4
    if fmt == "IQ4_NL":
        return kvalues_iq4nl().astype(np.int64)[codes], d, m
    return codes - {"Q4_0": 8, "Q5_0": 16}.get(fmt, 0), d, m


def _generic(q, fmt, act, K):
    """ggml's reference vec_dot of every (activation row, weight row), float32 like the C code."""
    qs, da, sa = act
    T = qs.shape[0]
    v, dw, mw = _values(q, fmt, K)
    a = qs.astype(np.int64).reshape(T, K // 32, 32)
    sumf = np.zeros((T, q.shape[0]), F32)
    for b in range(K // 32):
        sumi = (a[:, b] @ v[:, b].T).astype(F32)  # exact integers (|sumi| < 2^24)
        x, y = dw[None, :, b], da[:, (b // 8 if fmt == "IQ4_XS" else b), None]
        if fmt == "IQ4_XS":  # d1 = d4d8*(ls - 32), d4d8 = x.d * y.d; sumf += d1 * (sumi1 + sumi2)
            p = ((x * y) * (mw[None, :, b] - 32).astype(F32)) * sumi
        elif fmt == "Q4_0":  # sumf += sumi*GGML_FP16_TO_FP32(x.d)*GGML_FP16_TO_FP32(y.d)
            p = (sumi * x) * y
        elif fmt in ("Q4_1", "Q5_1"):  # sumf += (x.d*y.d)*sumi + x.m*y.s
            p = (x * y) * sumi + mw[None, :, b] * sa[:, b, None]
        else:  # Q8_0: sumi*(x.d*y.d); Q5_0: (x.d*y.d)*sumi; IQ4_NL: (y.d*x.d)*sumi -- the same product
            p = sumi * (x * y)
        sumf = sumf + p
    return sumf


def _weights(R, K, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((R, K)) * rng.uniform(0.01, 2, (R, 1))
    w[0] = 0  # zero scales
    w[1, :40] *= 30  # outliers
    return w.astype(F32)


@pytest.mark.parametrize("fmt", sorted(gk.FORMATS))
def test_gemm_is_ggml_reference_vec_dot_byte_for_byte(fmt):
    R, K, T = (
        37,
        512 if fmt == "IQ4_XS" else 576,
        7,
    )  # 3 panels (last one padded), 2 tiles (the second overlaps the first)
    q = quantlab.quantize(_weights(R, K, 11), fmt)
    x = (np.random.default_rng(12).standard_normal((T, K)) * 3).astype(F32)
    x[2, 64:96] = 0  # an all-zero activation block
    act = mm.quantize_activations(x, mm.VEC_DOT_TYPE[fmt])
    packed = gk.pack(q, fmt)
    with _rows.use_threads(1):
        y = gk.gemm(packed, fmt, act)
    want = _generic(q, fmt, act, K)
    assert y.shape == (T, R)
    assert np.array_equal(y.view(np.uint32), want.view(np.uint32))
    with _rows.use_threads(2):  # panels on two threads: the same bytes
        assert np.array_equal(gk.gemm(packed, fmt, act).view(np.uint32), want.view(np.uint32))
    # and the generation path's kernel (another summation order) agrees to float32 rounding
    mi = mm.matmul_int(q, fmt, act, np.empty((T, R), F32), parallel=False)
    np.testing.assert_allclose(y, mi, rtol=0, atol=2e-6 * np.abs(mi).max())


def test_gemm_needs_a_full_tile():
    q = quantlab.quantize(_weights(16, 64, 15), "Q8_0")
    act = mm.quantize_activations(np.ones((3, 64), F32), "Q8_0")
    with pytest.raises(ValueError, match="at least 4"):
        gk.gemm(gk.pack(q, "Q8_0"), "Q8_0", act)
