"""IQ4_NL and IQ4_XS: 4-bit codes on a *non-linear* 16-value code book — numpy reference.

Q4_0 spreads its 16 levels evenly (-8..7 times d). Weights of trained networks are roughly bell-shaped,
so IQ4 spends its 16 levels where weights are dense: the table ``kvalues_iq4nl``

    -127 -104 -83 -65 -49 -35 -22 -10   1  13  25  38  53  69  89 113

is closer-spaced near zero and wider in the tails. A weight is ``scale * kvalues[code]``. The two types
differ only in how the scale is stored:

* IQ4_NL: one fp16 scale per block of 32 (4.5 bits per weight, the same size as Q4_0);
* IQ4_XS: super-blocks of 256 = 8 blocks of 32, one fp16 super-scale and a 6-bit signed multiplier per
  block (4.25 bits per weight).

The quantizer (``quantize_row_iq4_nl_impl`` in ggml) fits each block of 32 by weighted least squares:
start with the scale that maps the largest |x| onto -127, then try 15 more candidate scales
(``ntry = 7``: inverse scales ``(-127 + t)/max`` for t = -7..7), and keep the one with the largest
``sumqx**2 / sumq2`` (equivalently the smallest weighted squared error), where for a candidate every
weight takes its nearest table entry. The weights are ``x**2`` without an importance matrix and
``imatrix_j * sqrt(sigma2 + x_j**2)`` with one (sigma2 = 2 * mean(x**2) over the block (IQ4_NL) or the
super-block (IQ4_XS)).

This is what ``ggml_quantize_chunk`` (llama-quantize) runs. Note that ggml's ``quantize_row_iq4_nl_ref``
(also the CPU backend's ``from_float``) runs the same code with ``ntry = -1`` (no search) and gives
different bytes; quantlab matches ``ggml_quantize_chunk``.

All arithmetic is float32 in the C order; sums are accumulated left to right (``_csum``).
"""

from __future__ import annotations

import numpy as np

from . import _numerics as nm
from ._iqgrid import kvalues_iq4nl
from .registry import register

F32 = np.float32
GROUP_MAX_EPS = F32(1e-15)
NTRY = 7

__all__ = [f"{op}_{k}" for k in ("iq4_nl", "iq4_xs") for op in ("quantize", "dequantize", "inspect")]


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------


def _csum(a: np.ndarray) -> np.ndarray:
    """``s = 0; for j: s += a[..., j]`` in float32 (left to right, starting from +0 like C)."""
    a = np.asarray(a, dtype=np.float32)
    z = np.zeros(a.shape[:-1] + (1,), dtype=np.float32)
    return np.add.accumulate(np.concatenate([z, a], axis=-1), axis=-1, dtype=np.float32)[..., -1]


def best_index_int8(values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Index of the nearest entry of the sorted table ``values`` (ggml's ``best_index_int8``).

    Below the first entry -> 0, above the last -> 15; otherwise the bracketing pair (v[m-1], v[m]) is
    found and the lower one wins only if strictly closer: ``x - v[m-1] < v[m] - x`` in float32 (exact
    midpoints go up). A NaN ends at the top entry, as the C binary search does."""
    x = np.asarray(x, dtype=np.float32)
    v = values.astype(np.float32)
    n = v.size
    mu = np.clip(np.searchsorted(v, x, side="right"), 1, n - 1)
    lo, hi = v[mu - 1], v[mu]
    with np.errstate(invalid="ignore"):
        idx = np.where((x - lo) < (hi - x), mu - 1, mu)
        idx = np.where(x <= v[0], 0, np.where(x >= v[n - 1], n - 1, idx))
    return idx.astype(np.int32)


def _pack_nibbles(L: np.ndarray) -> np.ndarray:
    """(..., 32) codes -> (..., 16) bytes: element j in the low nibble of byte j, j+16 in its high nibble."""
    L = L.astype(np.uint8)
    return (L[..., :16] | (L[..., 16:] << 4)).astype(np.uint8)


def _unpack_nibbles(qs: np.ndarray) -> np.ndarray:
    """(..., 16) bytes -> (..., 32) codes (inverse of _pack_nibbles)."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.uint8)


def _weights(xb: np.ndarray, qw: np.ndarray | None, sigma2: np.ndarray) -> np.ndarray:
    """Per-weight importance for blocks xb (B, 32): x**2, or qw * sqrt(sigma2 + x**2)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if qw is None:
            return (xb * xb).astype(np.float32)
        return (qw * np.sqrt(sigma2[:, None] + xb * xb)).astype(np.float32)


def _sigma2(x: np.ndarray) -> np.ndarray:
    """2 * sum(x**2) / n over the last axis, the sum accumulated sequentially (C: ``sigma2 *= 2.f/n``)."""
    with np.errstate(over="ignore"):
        return (_csum(x * x) * F32(2.0 / x.shape[-1])).astype(np.float32)


def _fit_blocks(xb: np.ndarray, w: np.ndarray, ntry: int) -> np.ndarray:
    """The scale search of ``quantize_row_iq4_nl_impl`` on every block of 32 at once -> scale (B,).

    Blocks whose largest |x| is below 1e-15 get scale 0."""
    values = kvalues_iq4nl()
    vf = values.astype(np.float32)
    v0 = vf[0]  # -127
    idx = nm.argmax_abs(xb)
    mx = np.take_along_axis(xb, idx[:, None], axis=1)[:, 0]  # signed element of largest |x|
    amax = np.abs(mx)
    skip = amax < GROUP_MAX_EPS
    with np.errstate(all="ignore"):
        d = (-mx / v0) if ntry > 0 else (mx / v0)
        inv = (F32(1) / d).astype(np.float32)

        def sums(inv_scale):
            q = vf[best_index_int8(values, inv_scale[:, None] * xb)]
            wq = w * q
            return _csum(wq * xb), _csum(wq * q)

        sumqx, sumq2 = sums(inv)
        d = np.where(sumq2 > 0, sumqx / sumq2, F32(0)).astype(np.float32)
        best = (d * sumqx).astype(np.float32)
        for itry in range(-ntry, ntry + 1):
            inv = (F32(itry + int(values[0])) / mx).astype(np.float32)
            sumqx, sumq2 = sums(inv)
            better = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
            d = np.where(better, sumqx / sumq2, d).astype(np.float32)
            best = np.where(better, d * sumqx, best).astype(np.float32)
    return np.where(skip, F32(0), d).astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# IQ4_NL
# ----------------------------------------------------------------------------------------------------


def quantize_iq4_nl(x, imatrix=None):
    """IQ4_NL: 32 weights in 18 bytes (4.5 bits per weight)::

        byte  0   1   2       3       ...  17
             [ d (fp16) ][c0|c16] [c1|c17] ... [c15|c31]      c = 4-bit code (low nibble | high nibble)

        weight j = d * kvalues_iq4nl[c_j]

    Search per block: d0 = max/127 (``max`` = the signed value of largest magnitude, mapped onto -127),
    codes = nearest table entries of x/d, d = weighted least-squares fit; then inverse scales
    (t - 127)/max for t = -7..7, keep the best fit. Store fp16(d) and re-pick every code as the nearest
    entry of x/d with the *unrounded* float32 d.
    """
    nrows, _n = x.shape
    xb = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, 32)
    qw = None if imatrix is None else np.tile(np.asarray(imatrix, np.float32).reshape(-1, 32), (nrows, 1))
    w = _weights(xb, qw, _sigma2(xb))
    d = _fit_blocks(xb, w, NTRY)
    with np.errstate(over="ignore", invalid="ignore"):
        L = best_index_int8(kvalues_iq4nl(), nm.inv(d)[:, None] * xb)
    out = np.concatenate([nm.f16_bytes(d), _pack_nibbles(L)], axis=1)
    return out.reshape(nrows, -1)


def dequantize_iq4_nl(q, n_per_row):
    b = np.ascontiguousarray(q).reshape(-1, 18)
    d = nm.from_f16_bits(b[:, 0:2].copy().view(np.uint16)[:, 0])
    v = kvalues_iq4nl().astype(np.float32)[_unpack_nibbles(b[:, 2:])]
    with np.errstate(invalid="ignore", over="ignore"):
        return (d[:, None] * v).astype(np.float32).reshape(q.shape[0], n_per_row)


def inspect_iq4_nl(block):
    b = np.asarray(block, dtype=np.uint8).reshape(18)
    codes = _unpack_nibbles(b[2:])
    return {
        "d_bits": int(b[0]) | int(b[1]) << 8,
        "d": F32(nm.from_f16_bits(np.uint16(int(b[0]) | int(b[1]) << 8))),
        "codes": codes.astype(np.int32),
        "levels": kvalues_iq4nl()[codes].astype(np.int32),
        "table": kvalues_iq4nl().astype(np.int32),
        "formula": "x = d * kvalues_iq4nl[code]",
    }


# ----------------------------------------------------------------------------------------------------
# IQ4_XS
# ----------------------------------------------------------------------------------------------------


def quantize_iq4_xs(x, imatrix=None):
    """IQ4_XS: 256 weights in 136 bytes (4.25 bits per weight), 8 blocks of 32::

        byte 0   1     2     3      4 .. 7           8 .. 135
            [ d fp16 ][ scales_h u16 ][ scales_l[4] ][ qs[128] ]

        6-bit block scale ls_b = (low nibble b of scales_l) | (bits 2b..2b+1 of scales_h) << 4
            scales_l[b//2]: block b even -> low nibble, odd -> high nibble
        qs[16b + j]: low nibble = code of weight 32b + j, high nibble = code of weight 32b + 16 + j

        weight = d * (ls_b - 32) * kvalues_iq4nl[code]

    Each block gets its own least-squares scale as in IQ4_NL (sigma2 over the whole super-block). The
    super-scale is ``d = -max_scale/32`` (``max_scale`` = the block scale of largest magnitude; the minus
    makes that block's multiplier exactly -32), each block's multiplier l = clamp(rint(scale/d), -32, 31)
    and its codes are re-picked against the stored step d*l (unrounded d).
    """
    nrows, _n = x.shape
    xs = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, 256)  # super-blocks
    S = xs.shape[0]
    xb = xs.reshape(-1, 32)
    qw = None if imatrix is None else np.tile(np.asarray(imatrix, np.float32).reshape(-1, 32), (nrows, 1))
    w = _weights(xb, qw, np.repeat(_sigma2(xs), 8))
    scales = _fit_blocks(xb, w, NTRY).reshape(S, 8)

    # max_scale: the first scale of largest |.| (C: strict '>' from 0, so NaNs never win)
    a = np.abs(scales)
    a = np.where(np.isnan(a), F32(0), a)
    i = np.argmax(a, axis=1)
    max_scale = np.where(a[np.arange(S), i] > 0, scales[np.arange(S), i], F32(0)).astype(np.float32)
    with np.errstate(all="ignore"):
        d = ((-max_scale) / F32(32)).astype(np.float32)
        idd = nm.inv(d)
        l = np.clip(nm.nearest_int(idd[:, None] * scales), -32, 31)
        dl = (d[:, None] * l.astype(np.float32)).astype(np.float32)
        L = best_index_int8(kvalues_iq4nl(), nm.inv(dl).reshape(-1, 1) * xb).reshape(S, 256)

    ls = (l + 32).astype(np.uint16)  # 0..63
    sh = ((ls >> 4) << (2 * np.arange(8, dtype=np.uint16))).sum(axis=1, dtype=np.uint16)
    low = (ls & 0xF).astype(np.uint8)
    sl = low[:, 0::2] | (low[:, 1::2] << 4)
    qs = _pack_nibbles(L.reshape(S, 8, 32)).reshape(S, 128)
    out = np.concatenate([nm.f16_bytes(d), sh.astype("<u2").view(np.uint8).reshape(S, 2), sl, qs], axis=1)
    return out.reshape(nrows, -1)


def _iq4_xs_fields(b: np.ndarray):
    """(S, 136) blocks -> d (S,), ls (S, 8) in 0..63, codes (S, 256)."""
    d = nm.from_f16_bits(b[:, 0:2].copy().view(np.uint16)[:, 0])
    sh = b[:, 2:4].copy().view("<u2")[:, 0].astype(np.int32)
    sl = b[:, 4:8].astype(np.int32)
    bi = np.arange(8)
    low = (sl[:, bi // 2] >> (4 * (bi % 2))) & 0xF
    high = (sh[:, None] >> (2 * bi)) & 3
    ls = low | (high << 4)
    codes = _unpack_nibbles(b[:, 8:].reshape(-1, 8, 16)).reshape(-1, 256)
    return d, ls, codes


def dequantize_iq4_xs(q, n_per_row):
    b = np.ascontiguousarray(q).reshape(-1, 136)
    d, ls, codes = _iq4_xs_fields(b)
    with np.errstate(invalid="ignore", over="ignore"):
        dl = (d[:, None] * (ls - 32).astype(np.float32)).astype(np.float32)  # (S, 8)
        v = kvalues_iq4nl().astype(np.float32)[codes].reshape(-1, 8, 32)
        y = (dl[:, :, None] * v).astype(np.float32)
    return y.reshape(q.shape[0], n_per_row)


def inspect_iq4_xs(block):
    b = np.asarray(block, dtype=np.uint8).reshape(1, 136)
    d, ls, codes = _iq4_xs_fields(b)
    d = F32(d[0])
    with np.errstate(invalid="ignore", over="ignore"):
        dl = (d * (ls[0] - 32).astype(np.float32)).astype(np.float32)
    return {
        "d_bits": int(b[0, 0]) | int(b[0, 1]) << 8,
        "d": d,
        "scales": ls[0].astype(np.int32),  # as stored, 0..63
        "multipliers": (ls[0] - 32).astype(np.int32),  # as applied, -32..31
        "block_scales": dl,  # d * (ls - 32), one per block of 32
        "codes": codes[0].astype(np.int32),
        "levels": kvalues_iq4nl()[codes[0]].astype(np.int32),
        "table": kvalues_iq4nl().astype(np.int32),
        "formula": "x = d * (ls_b - 32) * kvalues_iq4nl[code]",
    }


# The implementations this module defines (quantlab.formats.registry.register; a format missing here
# fails tests/test_registry.py).
register("reference", "IQ4_NL", quantize=quantize_iq4_nl, dequantize=dequantize_iq4_nl, inspect=inspect_iq4_nl)
register("reference", "IQ4_XS", quantize=quantize_iq4_xs, dequantize=dequantize_iq4_xs, inspect=inspect_iq4_xs)
