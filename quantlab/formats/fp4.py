"""4-bit floating-point formats MXFP4 (OCP microscaling) and NVFP4 — numpy reference.

Both store each weight as an E2M1 float (1 sign, 2 exponent, 1 mantissa bit): the 16 codes mean

    code   0    1    2    3    4    5    6    7  |  8    9   10   11   12   13   14   15
    E2M1   0  0.5    1  1.5    2    3    4    6  | -0   -0.5 -1 -1.5  -2   -3   -4   -6

ggml keeps the table doubled, as integers ``kvalues = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, ...}``, and
halves the block scale instead (the "half" decoders of :mod:`quantlab.formats._numerics`).

* MXFP4: 32 weights share one power-of-two scale (E8M0 byte, ``2**(e - 127)``);
* NVFP4: 64 weights in four sub-blocks of 16, each with an unsigned E4M3 scale byte.

Quantization (imatrix ignored): choose the scale from the block's max |x|, then give every weight the
code whose value ``kvalues[i] * d`` is nearest (scan i = 0..15, keep the first on ties).
"""

from __future__ import annotations

import numpy as np

from . import _numerics as nm
from .registry import register

F32 = np.float32
# decoding inf/NaN scales (random bytes) multiplies inf by 0: NaN, as in ggml, without warnings
_quiet = np.errstate(over="ignore", invalid="ignore")
KVALUES = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], dtype=np.int8)
_KV32 = KVALUES.astype(np.float32)

__all__ = ["KVALUES"] + [f"{op}_{k}" for k in ("mxfp4", "nvfp4") for op in ("quantize", "dequantize", "inspect")]


def best_index(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """For every weight, the code i minimising ``|kvalues[i] * d - x|`` (float32); the lowest i wins a
    tie, as in ggml's strict ``<`` scan. ``x``: (nblocks, k), ``d``: (nblocks,)."""
    with np.errstate(invalid="ignore", over="ignore"):  # 12 * 2**125 overflows to inf, as in C
        cand = (_KV32[None, None, :] * d[:, None, None]).astype(np.float32)  # (nb, 1, 16)
        err = np.abs((cand - x[:, :, None]).astype(np.float32))  # (nb, k, 16)
    return np.argmin(err, axis=2).astype(np.uint8)


def _log2f(a: np.ndarray) -> np.ndarray:
    """log2f as glibc computes it (correctly rounded to float32): float64 log2, then rounded."""
    with np.errstate(divide="ignore"):
        return np.log2(a.astype(np.float64)).astype(np.float32)


def mxfp4_exponent(amax: np.ndarray) -> np.ndarray:
    """ggml's E8M0 exponent byte for a block whose max |x| is ``amax``:
    ``(uint8)(floor(log2f(amax)) - 2 + 127)`` (0 when amax == 0). The -2 makes the largest doubled
    E2M1 value (12 = 1.5 * 2**3) times ``2**(e - 128)`` cover amax. Below 2**-125 the C expression is
    negative; x86 keeps its low 8 bits, and so do we."""
    amax = np.asarray(amax, dtype=np.float32)
    pos = amax > 0
    fl = np.floor(_log2f(np.where(pos, amax, F32(1))))
    e = (fl.astype(np.int64) - 2 + 127) & 0xFF
    return np.where(pos, e, 0).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------
# MXFP4
# ----------------------------------------------------------------------------------------------------


def quantize_mxfp4(x, imatrix=None):
    """MXFP4: 32 weights in 17 bytes (4.25 bits per weight)::

        byte  0    1        2     ...   16
             [ e ][q0|q16][q1|q17] ... [q15|q31]        e = E8M0 exponent byte

        weight j = kvalues[q_j] * 2**(e - 128)       (= E2M1 value * 2**(e - 127))

    ``e = floor(log2(max|x|)) - 2 + 127``; codes by nearest value (see :func:`best_index`).
    """
    nrows = x.shape[0]
    xb = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, 32)
    e = mxfp4_exponent(np.max(np.abs(xb), axis=1))
    d = nm.e8m0_half(e)
    idx = best_index(xb, d)
    qs = idx[:, :16] | (idx[:, 16:] << 4)
    return np.ascontiguousarray(np.concatenate([e[:, None], qs], axis=1)).reshape(nrows, -1)


@_quiet
def dequantize_mxfp4(q, n_per_row):
    b = q.reshape(-1, 17)
    d = nm.e8m0_half(b[:, 0])[:, None]
    codes = np.concatenate([b[:, 1:] & 0x0F, b[:, 1:] >> 4], axis=1)
    with np.errstate(over="ignore"):  # e = 254/255: 12 * 2**126 overflows to inf, as in ggml
        return (_KV32[codes] * d).astype(np.float32).reshape(q.shape[0], n_per_row)


def inspect_mxfp4(block):
    b = np.asarray(block, dtype=np.uint8).reshape(17)
    codes = np.concatenate([b[1:] & 0x0F, b[1:] >> 4]).astype(np.int32)
    return {
        "e": int(b[0]),
        "d": F32(nm.e8m0_half(b[0])),
        "scale_exponent": int(b[0]) - 128,
        "codes": codes,
        "levels": KVALUES[codes].astype(np.int32),
        "formula": "x = kvalues[q] * 2**(e - 128), kvalues = 2 * E2M1",
    }


# ----------------------------------------------------------------------------------------------------
# NVFP4
# ----------------------------------------------------------------------------------------------------


def quantize_nvfp4(x, imatrix=None):
    """NVFP4: 64 weights in 36 bytes (4.5 bits per weight), 4 sub-blocks of 16::

        byte  0    1    2    3    4 ..... 11   12 .... 19   20 .... 27   28 .... 35
             [s0 ][s1 ][s2 ][s3 ][ sub 0    ][ sub 1    ][ sub 2    ][ sub 3    ]
        sub-block s: byte 4 + 8s + j = q[16s + j] | q[16s + j + 8] << 4,   j = 0..7

        weight = kvalues[q] * ue4m3(s_sub)          (ue4m3 decode includes the factor 1/2)

    Scale byte: ``fp32_to_ue4m3(max|x_sub| / 6)`` (unsigned E4M3, round half up on one guard bit,
    clamped to 448); codes by nearest value with the decoded scale.
    """
    nrows = x.shape[0]
    xs = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, 16)  # one line per sub-block
    amax = np.max(np.abs(xs), axis=1).astype(np.float32)
    ue = nm.f32_to_ue4m3((amax / F32(6.0)).astype(np.float32))
    d = nm.ue4m3_to_f32(ue)
    idx = best_index(xs, d)
    qs = (idx[:, :8] | (idx[:, 8:] << 4)).reshape(-1, 32)
    out = np.concatenate([ue.reshape(-1, 4), qs], axis=1)
    return np.ascontiguousarray(out).reshape(nrows, -1)


def _nvfp4_codes(b):
    qs = b[:, 4:].reshape(-1, 4, 8)
    return np.concatenate([qs & 0x0F, qs >> 4], axis=2).reshape(-1, 64)


@_quiet
def dequantize_nvfp4(q, n_per_row):
    b = q.reshape(-1, 36)
    d = nm.ue4m3_to_f32(b[:, :4])  # (nb, 4)
    v = _KV32[_nvfp4_codes(b)].reshape(-1, 4, 16) * d[:, :, None]
    return v.astype(np.float32).reshape(q.shape[0], n_per_row)


def inspect_nvfp4(block):
    b = np.asarray(block, dtype=np.uint8).reshape(1, 36)
    codes = _nvfp4_codes(b)[0].astype(np.int32)
    return {
        "scales_raw": b[0, :4].copy(),
        "scales": nm.ue4m3_to_f32(b[0, :4]),
        "codes": codes,
        "levels": KVALUES[codes].astype(np.int32),
        "formula": "x = kvalues[q] * ue4m3(s[j // 16]), kvalues = 2 * E2M1",
    }


# The implementations this module defines (quantlab.formats.registry.register; a format missing here
# fails tests/test_registry.py).
register("reference", "MXFP4", quantize=quantize_mxfp4, dequantize=dequantize_mxfp4, inspect=inspect_mxfp4)
register("reference", "NVFP4", quantize=quantize_nvfp4, dequantize=dequantize_nvfp4, inspect=inspect_nvfp4)
