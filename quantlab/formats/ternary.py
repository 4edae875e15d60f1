"""Ternary formats TQ1_0 and TQ2_0 (BitNet b1.58 / TriLM weights) — numpy reference.

Every weight is one of three values ``-d, 0, +d``: a *trit* ``t`` in {0, 1, 2} meaning ``(t - 1) * d``,
with one float16 scale ``d`` per block of 256 weights. The two formats differ only in how trits are
packed:

* TQ2_0 spends 2 bits per trit (4 trits per byte): 2.0625 bits per weight, trivial to unpack;
* TQ1_0 packs 5 trits into one byte (3**5 = 243 <= 256): 1.6875 bits per weight.

Quantization (both, imatrix ignored): ``d = max|x|`` over the 256 weights, ``t = lroundf(x / d) + 1``
(round half away from zero), computed as ``x * (1/d)``.
"""

from __future__ import annotations

import numpy as np

from . import _numerics as nm
from .registry import register

F32 = np.float32
# decoding inf/NaN scales (random bytes) multiplies inf by 0: NaN, as in ggml, without warnings
_quiet = np.errstate(over="ignore", invalid="ignore")
_POW3 = np.array([1, 3, 9, 27, 81, 243], dtype=np.uint32)

__all__ = [f"{op}_{k}" for k in ("tq1_0", "tq2_0") for op in ("quantize", "dequantize", "inspect")]


def _trits(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nrows, n) float32 -> d (nblocks,) float32 and trits (nblocks, 256) int in {0, 1, 2}."""
    xb = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, 256)
    d = np.max(np.abs(xb), axis=1).astype(np.float32)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        idv = np.where(d != 0, F32(1) / np.where(d != 0, d, F32(1)), F32(0)).astype(np.float32)
        v = (xb * idv[:, None]).astype(np.float32)
        r = nm.roundf(np.where(np.isfinite(v), v, F32(0)))
    # lroundf(inf or NaN) (only when 1/d overflows, d < 2**-128) returns LONG_MIN on x86-64, and
    # "+ 1" then truncated to a C int leaves 1: such a weight gets the neutral trit.
    t = np.where(np.isfinite(v), r.astype(np.int64) + 1, 1)
    return d, t


def _f16_last(b: np.ndarray) -> np.ndarray:
    """The fp16 ``d`` stored in the last two bytes of each block, as float32 (nblocks, 1)."""
    bits = b[:, -2].astype(np.uint16) | (b[:, -1].astype(np.uint16) << 8)
    return nm.from_f16_bits(bits)[:, None]


# ----------------------------------------------------------------------------------------------------
# TQ1_0
# ----------------------------------------------------------------------------------------------------


def _pack5(t: np.ndarray) -> np.ndarray:
    """(..., k, m) trits along axis -2 -> (..., m) bytes: q = sum t_k 3**(k_last - k) (first trit
    most significant) then scaled up to fill a byte: ceil(q * 256 / 243)."""
    k = t.shape[-2]
    q = np.zeros(t.shape[:-2] + t.shape[-1:], dtype=np.int64)
    for n in range(k):
        q = q * 3 + t[..., n, :]
    if k == 4:
        q = q * 3  # qh bytes hold 4 trits: the fifth (least significant) is 0
    return ((q * 256 + 242) // 243).astype(np.uint8)


def _unpack5(b: np.ndarray, k: int) -> np.ndarray:
    """(..., m) bytes -> (..., k, m) trits: trit n = ((b * 3**n mod 256) * 3) >> 8."""
    b = b.astype(np.uint32)
    return np.stack([(((b * _POW3[n]) & 0xFF) * 3) >> 8 for n in range(k)], axis=-2).astype(np.int32)


def quantize_tq1_0(x, imatrix=None):
    """TQ1_0: 256 weights in 54 bytes, five trits per byte::

        byte  0 ........ 31 | 32 ....... 47 | 48 .. 51 | 52  53
             [  qs[0:32]   ][  qs[32:48]   ][ qh[0:4] ][ d (fp16) ]   (d comes LAST)

        qs[m],      m < 32 : elements m + 32n,         n = 0..4   (elements   0..159)
        qs[32 + m], m < 16 : elements 160 + m + 16n,   n = 0..4   (elements 160..239)
        qh[j],      j < 4  : elements 240 + j + 4n,    n = 0..3   (elements 240..255)

    A byte with trits t0..t4 holds ``ceil((t0*81 + t1*27 + t2*9 + t3*3 + t4) * 256 / 243)``. Trit n is
    read back as ``((byte * 3**n) mod 256) * 3 >> 8``: multiplying by 3**n shifts the base-3 fraction
    left by n digits, the top digit then sits in the byte's integer part after * 3 >> 8.
    weight = (t - 1) * d.
    """
    nrows = x.shape[0]
    d, t = _trits(x)
    nb = t.shape[0]
    qs0 = _pack5(t[:, :160].reshape(nb, 5, 32))
    qs1 = _pack5(t[:, 160:240].reshape(nb, 5, 16))
    qh = _pack5(t[:, 240:].reshape(nb, 4, 4))
    out = np.concatenate([qs0, qs1, qh, nm.f16_bytes(d)], axis=1)
    return np.ascontiguousarray(out).reshape(nrows, -1)


def _tq1_0_trits(b: np.ndarray) -> np.ndarray:
    nb = b.shape[0]
    t0 = _unpack5(b[:, 0:32], 5).reshape(nb, 160)
    t1 = _unpack5(b[:, 32:48], 5).reshape(nb, 80)
    t2 = _unpack5(b[:, 48:52], 4).reshape(nb, 16)
    return np.concatenate([t0, t1, t2], axis=1)


def _dequantize(q, n_per_row, type_size, trits):
    """x = (t - 1) * d for TQ1_0 / TQ2_0 rows; ``trits(blocks)`` unpacks the (nb, 256) codes t."""
    b = q.reshape(-1, type_size)
    return ((trits(b) - 1).astype(np.float32) * _f16_last(b)).astype(np.float32).reshape(q.shape[0], n_per_row)


def _inspect(block, type_size, trits, formula):
    b = np.asarray(block, dtype=np.uint8).reshape(1, type_size)
    t = trits(b)[0]
    return {
        "d_bits": int(b[0, -2]) | int(b[0, -1]) << 8,
        "d": F32(_f16_last(b)[0, 0]),
        "codes": t,
        "levels": t - 1,
        "formula": formula,
    }


@_quiet
def dequantize_tq1_0(q, n_per_row):
    return _dequantize(q, n_per_row, 54, _tq1_0_trits)


def inspect_tq1_0(block):
    info = _inspect(block, 54, _tq1_0_trits, "x = (t - 1) * d, five trits per byte (base 3)")
    b = np.asarray(block, dtype=np.uint8)
    info.update({"qs": b[:48].copy(), "qh": b[48:52].copy()})
    return info


# ----------------------------------------------------------------------------------------------------
# TQ2_0
# ----------------------------------------------------------------------------------------------------


def quantize_tq2_0(x, imatrix=None):
    """TQ2_0: 256 weights in 66 bytes, four 2-bit trits per byte::

        byte  0 ............ 63 | 64  65
             [      qs[64]     ][ d (fp16) ]        (d comes LAST)

        element 128c + 32n + m  (c in 0..1, n in 0..3, m in 0..31)  ->  byte 32c + m, bits 2n..2n+1

    weight = (t - 1) * d with t in {0, 1, 2} (code 3 is never written).
    """
    nrows = x.shape[0]
    d, t = _trits(x)
    t = (t & 3).reshape(-1, 2, 4, 32)  # [block, c, n, m]
    qs = (t[:, :, 0] | (t[:, :, 1] << 2) | (t[:, :, 2] << 4) | (t[:, :, 3] << 6)).astype(np.uint8)
    out = np.concatenate([qs.reshape(-1, 64), nm.f16_bytes(d)], axis=1)
    return np.ascontiguousarray(out).reshape(nrows, -1)


def _tq2_0_codes(b: np.ndarray) -> np.ndarray:
    qs = b[:, :64].astype(np.int32).reshape(-1, 2, 1, 32)
    sh = np.array([0, 2, 4, 6], dtype=np.int32).reshape(1, 1, 4, 1)
    return ((qs >> sh) & 3).reshape(-1, 256)


@_quiet
def dequantize_tq2_0(q, n_per_row):
    return _dequantize(q, n_per_row, 66, _tq2_0_codes)


def inspect_tq2_0(block):
    return _inspect(block, 66, _tq2_0_codes, "x = (q - 1) * d, four 2-bit codes per byte")


# The implementations this module defines (quantlab.formats.registry.register; a format missing here
# fails tests/test_registry.py).
register("reference", "TQ1_0", quantize=quantize_tq1_0, dequantize=dequantize_tq1_0, inspect=inspect_tq1_0)
register("reference", "TQ2_0", quantize=quantize_tq2_0, dequantize=dequantize_tq2_0, inspect=inspect_tq2_0)
