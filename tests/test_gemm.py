"""The prompt-batch GEMM (quantlab.kernels.gemm) against the row kernels (matmul.matmul_int), byte for byte.

The row kernels are ggml's AVX2 vec_dot for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 (tests/test_forward_ops.py checks them
against libggml-cpu); prompt batches may take the GEMM only where it gives exactly their bytes, for every
output of a matrix whose row count is not a multiple of the 16-row panel and a batch whose size is not a
multiple of the 4-row tile. Its integer side is also checked against a numpy transcription of ggml's
reference vec_dot (quants.c ``_generic``): the two float orders agree to float32 rounding.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import quantlab
from quantlab.formats import get
from quantlab.formats._iqgrid import kvalues_iq4nl
from quantlab.formats.layout import offsets, size
from quantlab.kernels import _rows
from quantlab.kernels import gemm as gk
from quantlab.kernels import matmul as mm
from quantlab.model import blocks
from quantlab.model.blocks import Linear

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


def _row_kernels(q, fmt, act):
    T, R = act[0].shape[0], q.shape[0]
    return mm.matmul_int(q, fmt, act, np.empty((T, R), F32), parallel=False)


@pytest.mark.parametrize("T", [7, 64])
@pytest.mark.parametrize("fmt", sorted(gk.FORMATS))
def test_gemm_is_the_row_kernels_byte_for_byte(fmt, T):
    R, K = 37, (512 if fmt == "IQ4_XS" else 576)  # 3 panels (last one padded); T = 7: the last tile overlaps
    q = quantlab.quantize(_weights(R, K, 11), fmt)
    x = (np.random.default_rng(12).standard_normal((T, K)) * 3).astype(F32)
    x[2, 64:96] = 0  # an all-zero activation block
    act = mm.quantize_activations(x, mm.VEC_DOT_TYPE[fmt])
    packed = gk.pack(q, fmt)
    with _rows.use_threads(1):
        y = gk.gemm(packed, fmt, act)
    want = _row_kernels(q, fmt, act)
    assert y.shape == (T, R)
    assert np.array_equal(y.view(np.uint32), want.view(np.uint32))
    with _rows.use_threads(2):  # panels on two threads: the same bytes
        assert np.array_equal(gk.gemm(packed, fmt, act).view(np.uint32), want.view(np.uint32))
    # ggml's reference (_generic) order sums the same integers: agreement to float32 rounding
    ref = _generic(q, fmt, act, K)
    np.testing.assert_allclose(y, ref, rtol=0, atol=2e-6 * np.abs(ref).max())


@pytest.mark.parametrize("fmt", ["Q4_0", "Q4_1", "Q8_0"])
def test_linear_runs_batches_through_the_gemm(fmt, monkeypatch):
    K = 576
    q = quantlab.quantize(_weights(48, K, 13), fmt)
    lin = Linear("w", get(fmt), q, 48, K)
    assert lin.gemm
    x = np.random.default_rng(14).standard_normal((9, K)).astype(F32)
    y = lin(x)  # a batch (at least gk.MIN_ROWS rows)
    assert lin._panels is not None
    lin.gemm = False  # the row kernels: the same bytes
    assert np.array_equal(lin(x).view(np.uint32), y.view(np.uint32))
    lin.gemm = True
    lin.stream, lin.source = True, None  # streamed weights without a file: still the map, same path
    assert np.array_equal(lin(x).view(np.uint32), y.view(np.uint32))


def test_streamed_linear_packs_tile_by_tile(tmp_path, monkeypatch):
    """Weights read with pread (evaluate's streaming mode) are packed per tile of rows, not kept: same bytes."""
    K, R = 576, 80
    q = quantlab.quantize(_weights(R, K, 16), "Q4_0")
    f = tmp_path / "w.bin"
    f.write_bytes(b"\0" * 7 + q.tobytes())
    fd = os.open(f, os.O_RDONLY)
    try:
        lin = Linear("w", get("Q4_0"), q, R, K, source=(fd, 7))
        x = np.random.default_rng(17).standard_normal((6, K)).astype(F32)
        want = lin(x)
        lin.stream = True
        monkeypatch.setattr(blocks, "TILE_ELEMS", 2 * get("Q4_0").row_bytes(K))  # tiles of 16 rows: 5 tiles
        got = lin(x)
        assert lin._panels is not None  # from the first, mapped call only
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    finally:
        os.close(fd)


def test_gemm_needs_a_full_tile():
    q = quantlab.quantize(_weights(16, 64, 15), "Q8_0")
    act = mm.quantize_activations(np.ones((gk.TILE - 1, 64), F32), "Q8_0")
    with pytest.raises(ValueError, match=f"at least {gk.TILE}"):
        gk.gemm(gk.pack(q, "Q8_0"), "Q8_0", act)


@pytest.mark.parametrize("T", [5, 64])
@pytest.mark.parametrize("fmt", gk.KQUANTS)
def test_kquant_gemm_is_the_row_kernels_byte_for_byte(fmt, T):
    """Super-block formats (Q8_K activations): the row kernels' (matmul._row_256) bytes, every output of a
    matrix of 37 rows (3 panels, the last padded) and an odd batch (the last tile overlaps)."""
    R, K = 37, 768
    w = _weights(R, K, 21)
    w[2, 256:512] = 0  # an all-zero super-block
    w[3] = np.abs(w[3])  # all mins 0
    q = quantlab.quantize(w, fmt)
    x = (np.random.default_rng(22).standard_normal((T, K)) * 3).astype(F32)
    x[1, :256] = 0
    act = mm.quantize_activations(x, mm.VEC_DOT_TYPE[fmt])
    packed = gk.pack(q, fmt)
    want = _row_kernels(q, fmt, act)
    for n in (1, 2):
        with _rows.use_threads(n):
            y = gk.gemm(packed, fmt, act)
        assert y.shape == (T, R)
        assert np.array_equal(y.view(np.uint32), want.view(np.uint32))
