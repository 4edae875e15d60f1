"""The legacy ("simple") block formats of ggml: Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q8_1 Q1_0 Q2_0 — numpy reference.

A row of weights is cut into blocks of 32 values (128 for Q1_0, 64 for Q2_0). Every block is stored on
its own: one float16 scale ``d`` (and for the ``_1`` types one float16 offset ``m``), then small integer
codes. Reading a block back is one multiply (and one add) per weight.

Two quantizers exist for Q4_0, Q4_1, Q5_0 and Q5_1, and they produce different bytes:

* without an importance matrix, ggml runs ``quantize_row_X_ref``: the scale comes straight from the
  block's extreme values (a single division, no search);
* with an importance matrix (``imatrix``), it runs ``quantize_row_X_impl``: a small search over
  candidate scales that minimises the *weighted* squared error, each weight ``j`` counting
  ``w_j = imatrix[j] * sqrt(sigma2 + x_j**2)`` where ``sigma2 = sum(x**2) / n_per_row`` over the whole
  row (see :mod:`quantlab.formats._search`).

Q8_0, Q1_0 and Q2_0 ignore the imatrix. Q8_1 is an activation-side type (what ``x`` is turned into
before a dot product with Q4_1/Q5_1 weights); ggml has no dequantizer for it, ours follows the formula.

Everything below is float32 arithmetic evaluated in the same order as the C code, which is what makes
the bytes identical. C's float -> small integer casts truncate toward zero (``_c_trunc``).
"""

from __future__ import annotations

import numpy as np

from . import _numerics as nm
from . import _search  # the shared scale searches: make_qx_quants, make_qkx3_quants
from .registry import register

F32 = np.float32
# decoding inf/NaN scales (random bytes) multiplies inf by 0: NaN, as in ggml, without warnings
_quiet = np.errstate(over="ignore", invalid="ignore")

__all__ = [
    f"{op}_{k}"
    for k in ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q8_1", "q1_0", "q2_0")
    for op in ("quantize", "dequantize", "inspect")
]


# ----------------------------------------------------------------------------------------------------
# small shared helpers
# ----------------------------------------------------------------------------------------------------


def _blocks(x: np.ndarray, qk: int) -> np.ndarray:
    """(nrows, n_per_row) -> (nrows * n_per_row // qk, qk): one block per line."""
    return np.ascontiguousarray(x, dtype=np.float32).reshape(-1, qk)


def _c_trunc(v) -> np.ndarray:
    """C's ``(int)`` cast of a float as x86-64 executes it (``cvttss2si``): truncation toward zero;
    NaN and values outside the int32 range become INT32_MIN. Returned as int64 so that the callers
    can then narrow it like C does (``(int8_t)`` / ``(uint8_t)`` keep the low 8 bits)."""
    v = np.asarray(v, dtype=np.float32)
    ok = np.abs(v) < F32(2.0**31)
    return np.where(ok, np.trunc(np.where(ok, v, F32(0))), -(2**31)).astype(np.int64)


def _as_int8(i: np.ndarray) -> np.ndarray:
    """Keep the low 8 bits, read them as signed (C's ``(int8_t)`` narrowing)."""
    return ((i + 128) & 255) - 128


def _signed_absmax(xb: np.ndarray) -> np.ndarray:
    """The element with the largest |x| per block, first one on ties, +0.0 for an all-zero block
    (C scans with ``amax < fabsf(v)`` starting from amax = max = 0, so zeros never replace it)."""
    m = nm.take_signed_max(xb)
    return np.where(np.abs(m) > 0, m, F32(0)).astype(np.float32)


def _first_extremes(xb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) per block as C's ``if (v < min) min = v; if (v > max) max = v`` scan leaves them: each is
    the FIRST element equal to the extreme, so of -0.0 and +0.0 the earlier one is kept (np.min / np.max
    may return either: the stored m of a block whose minimum is a zero depends on which)."""
    pick = lambda v: np.take_along_axis(xb, np.argmax(xb == v[:, None], axis=1)[:, None], 1)[:, 0]  # noqa: E731
    return pick(np.min(xb, axis=1)).astype(np.float32), pick(np.max(xb, axis=1)).astype(np.float32)


def _absmax(xb: np.ndarray) -> np.ndarray:
    return np.max(np.abs(xb), axis=-1).astype(np.float32)


def _f16_at(q: np.ndarray, off: int) -> np.ndarray:
    """The fp16 field at byte ``off`` of every block of a (nblocks, type_size) array, as float32."""
    bits = q[:, off].astype(np.uint16) | (q[:, off + 1].astype(np.uint16) << 8)
    return nm.from_f16_bits(bits)


def _f16_field(q: np.ndarray, off: int) -> np.ndarray:
    return _f16_at(q, off)[:, None]


def _pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """(nblocks, 32) codes 0..15 -> (nblocks, 16) bytes: byte j = code[j] | code[j + 16] << 4."""
    c = codes.astype(np.uint8)
    return (c[:, :16] & 0x0F) | ((c[:, 16:] & 0x0F) << 4)


def _unpack_nibbles(qs: np.ndarray) -> np.ndarray:
    """(nblocks, 16) bytes -> (nblocks, 32) codes in element order (inverse of _pack_nibbles)."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def _qh_bits(codes: np.ndarray) -> np.ndarray:
    """Fifth bits of 32 codes -> the little-endian uint32 ``qh`` as 4 bytes: bit j = bit 4 of code j."""
    bit = ((codes.astype(np.uint32) >> 4) & 1) << np.arange(32, dtype=np.uint32)
    qh = np.bitwise_or.reduce(bit, axis=1).astype("<u4")
    return qh.view(np.uint8).reshape(-1, 4)


def _qh_unpack(qh4: np.ndarray) -> np.ndarray:
    """(nblocks, 4) bytes of qh -> (nblocks, 32) fifth bits (0 or 16) in element order."""
    qh = np.ascontiguousarray(qh4).view("<u4").astype(np.uint32)
    return (((qh >> np.arange(32, dtype=np.uint32)) & 1) << 4).astype(np.int32)


def _rows(blocks: np.ndarray, nrows: int) -> np.ndarray:
    return np.ascontiguousarray(blocks, dtype=np.uint8).reshape(nrows, -1)


def _legacy_weights(x: np.ndarray, imatrix: np.ndarray, qk: int) -> np.ndarray:
    """Per-weight importance of the legacy imatrix paths, shaped (nblocks, qk):
    ``w_j = imatrix[j] * sqrt(sigma2 + x_j**2)`` with ``sigma2`` = mean of x**2 over the *row*
    (a sequential float32 sum, like the C loop)."""
    _nrows, n = x.shape
    with np.errstate(over="ignore", invalid="ignore"):  # huge rows: inf, as in C
        sum_x2 = nm.seqsum((x * x).astype(np.float32), axis=1)
        sigma2 = (sum_x2 / F32(n)).astype(np.float32)
        w = imatrix[None, :] * np.sqrt((sigma2[:, None] + x * x).astype(np.float32))
    return w.astype(np.float32).reshape(-1, qk)


def _qkx3_impl(x, xb, imatrix, nmax):
    """The imatrix path of Q4_1 / Q5_1 (quantize_row_q{4,5}_1_impl): make_qkx3_quants(nmax, rmin -0.9,
    rdelta 0.05, 36 steps) on the blocks xb with the legacy weights. Returns (d, m = -min, codes)."""
    d, the_min, L = _search.make_qkx3_quants(xb, _legacy_weights(x, imatrix, 32), nmax, F32(-0.9), F32(0.05), 36, False)
    return (np.asarray(d, dtype=np.float32).reshape(-1), (-np.asarray(the_min, dtype=np.float32)).reshape(-1), L)


# ----------------------------------------------------------------------------------------------------
# Q4_0
# ----------------------------------------------------------------------------------------------------


def quantize_q4_0(x, imatrix=None):
    """Q4_0: 32 weights in 18 bytes (4.5 bits per weight), symmetric, offset 8::

        byte  0   1   2    3    ...   17
             [ d (fp16) ][q0|q16][q1|q17] ... [q15|q31]      low nibble | high nibble

        weight j = (q_j - 8) * d              q_j in 0..15, so levels -8..7 times d

    Reference quantizer (no imatrix): ``max`` is the signed value of largest magnitude,
    ``d = max / -8`` so that extreme value lands exactly on level -8 (code 0); the other codes are
    ``min(15, trunc(x/d + 8.5))`` — round half up via +0.5, the mirror value +|max| (would be 16)
    is clipped to 15. With an imatrix: ``make_qx_quants(nmax=8)`` picks d among 19 candidates.
    """
    nrows = x.shape[0]
    if imatrix is not None:
        xb = _blocks(x, 32)
        d, L = _search.make_qx_quants(xb, 8, 1, _legacy_weights(x, imatrix, 32))
        d = np.asarray(d, dtype=np.float32).reshape(-1)
        return _rows(np.concatenate([nm.f16_bytes(d), _pack_nibbles(L)], axis=1), nrows)
    xb = _blocks(x, 32)
    d = (_signed_absmax(xb) / F32(-8)).astype(np.float32)
    idv = nm.inv(d)
    with np.errstate(invalid="ignore", over="ignore"):
        v = ((xb * idv[:, None]).astype(np.float32) + F32(8.5)).astype(np.float32)
    q = np.minimum(15, _as_int8(_c_trunc(v))) & 0xFF
    return _rows(np.concatenate([nm.f16_bytes(d), _pack_nibbles(q)], axis=1), nrows)


@_quiet
def dequantize_q4_0(q, n_per_row):
    b = q.reshape(-1, 18)
    d = _f16_field(b, 0)
    codes = _unpack_nibbles(b[:, 2:]).astype(np.int32) - 8
    return (codes.astype(np.float32) * d).astype(np.float32).reshape(q.shape[0], n_per_row)


def inspect_q4_0(block):
    b = np.asarray(block, dtype=np.uint8).reshape(1, 18)
    codes = _unpack_nibbles(b[:, 2:])[0].astype(np.int32)
    d = _f16_at(b, 0)[0]
    return {
        "d_bits": int(b[0, 0]) | int(b[0, 1]) << 8,
        "d": F32(d),
        "codes": codes,
        "levels": codes - 8,
        "formula": "x = (q - 8) * d",
    }


# ----------------------------------------------------------------------------------------------------
# Q4_1
# ----------------------------------------------------------------------------------------------------


def quantize_q4_1(x, imatrix=None):
    """Q4_1: 32 weights in 20 bytes (5 bits per weight), asymmetric (scale and minimum)::

        byte  0   1   2   3   4    ...   19
             [ d (fp16) ][ m (fp16) ][q0|q16] ... [q15|q31]

        weight j = q_j * d + m                q_j in 0..15

    Reference: ``m = min(block)``, ``d = (max - min) / 15``, ``q = min(15, trunc((x - min)/d + 0.5))``.
    With an imatrix: ``make_qkx3_quants(nmax=15, rmin=-0.9, rdelta=0.05, nstep=36)`` fits d and m
    (the fitted m is never positive) by weighted least squares over 37 candidate grids.
    """
    nrows = x.shape[0]
    xb = _blocks(x, 32)
    if imatrix is not None:
        d, m, L = _qkx3_impl(x, xb, imatrix, 15)
        return _rows(np.concatenate([nm.f16_bytes(d), nm.f16_bytes(m), _pack_nibbles(L)], axis=1), nrows)
    mn, mx = _first_extremes(xb)
    with np.errstate(over="ignore", invalid="ignore"):
        d = ((mx - mn) / F32(15)).astype(np.float32)
        idv = nm.inv(d)
        v = (((xb - mn[:, None]).astype(np.float32) * idv[:, None]).astype(np.float32) + F32(0.5)).astype(np.float32)
    q = np.minimum(15, _as_int8(_c_trunc(v))) & 0xFF
    return _rows(np.concatenate([nm.f16_bytes(d), nm.f16_bytes(mn), _pack_nibbles(q)], axis=1), nrows)


@_quiet
def dequantize_q4_1(q, n_per_row):
    b = q.reshape(-1, 20)
    d, m = _f16_field(b, 0), _f16_field(b, 2)
    codes = _unpack_nibbles(b[:, 4:]).astype(np.float32)
    return ((codes * d).astype(np.float32) + m).astype(np.float32).reshape(q.shape[0], n_per_row)


def inspect_q4_1(block):
    b = np.asarray(block, dtype=np.uint8).reshape(1, 20)
    codes = _unpack_nibbles(b[:, 4:])[0].astype(np.int32)
    return {
        "d_bits": int(b[0, 0]) | int(b[0, 1]) << 8,
        "d": F32(_f16_at(b, 0)[0]),
        "m_bits": int(b[0, 2]) | int(b[0, 3]) << 8,
        "m": F32(_f16_at(b, 2)[0]),
        "codes": codes,
        "levels": codes.copy(),
        "formula": "x = q * d + m",
    }


# ----------------------------------------------------------------------------------------------------
# Q5_0
# ----------------------------------------------------------------------------------------------------


def quantize_q5_0(x, imatrix=None):
    """Q5_0: 32 weights in 22 bytes (5.5 bits per weight), symmetric, offset 16::

        byte  0   1   2   3   4   5   6    ...   21
             [ d (fp16) ][  qh (uint32, LE)  ][lo0|lo16] ... [lo15|lo31]

        q_j = (low 4 bits from the nibble) | (bit j of qh) << 4        q_j in 0..31
        weight j = (q_j - 16) * d

    Reference: ``d = max / -16`` (max = signed value of largest magnitude),
    ``q = min(31, trunc(x/d + 16.5))``. With an imatrix: ``make_qx_quants(nmax=16)``.
    """
    nrows = x.shape[0]
    xb = _blocks(x, 32)
    if imatrix is not None:
        d, L = _search.make_qx_quants(xb, 16, 1, _legacy_weights(x, imatrix, 32))
        d = np.asarray(d, dtype=np.float32).reshape(-1)
        return _rows(np.concatenate([nm.f16_bytes(d), _qh_bits(L), _pack_nibbles(L)], axis=1), nrows)
    d = (_signed_absmax(xb) / F32(-16)).astype(np.float32)
    idv = nm.inv(d)
    with np.errstate(invalid="ignore", over="ignore"):
        v = ((xb * idv[:, None]).astype(np.float32) + F32(16.5)).astype(np.float32)
    q = np.minimum(31, _as_int8(_c_trunc(v))) & 0xFF
    return _rows(np.concatenate([nm.f16_bytes(d), _qh_bits(q), _pack_nibbles(q)], axis=1), nrows)


@_quiet
def dequantize_q5_0(q, n_per_row):
    b = q.reshape(-1, 22)
    d = _f16_field(b, 0)
    codes = (_unpack_nibbles(b[:, 6:]).astype(np.int32) | _qh_unpack(b[:, 2:6])) - 16
    return (codes.astype(np.float32) * d).astype(np.float32).reshape(q.shape[0], n_per_row)


def inspect_q5_0(block):
    b = np.asarray(block, dtype=np.uint8).reshape(1, 22)
    codes = (_unpack_nibbles(b[:, 6:]).astype(np.int32) | _qh_unpack(b[:, 2:6]))[0]
    return {
        "d_bits": int(b[0, 0]) | int(b[0, 1]) << 8,
        "d": F32(_f16_at(b, 0)[0]),
        "qh": int.from_bytes(bytes(b[0, 2:6]), "little"),
        "codes": codes,
        "levels": codes - 16,
        "formula": "x = (q - 16) * d",
    }


# ----------------------------------------------------------------------------------------------------
# Q5_1
# ----------------------------------------------------------------------------------------------------


def quantize_q5_1(x, imatrix=None):
    """Q5_1: 32 weights in 24 bytes (6 bits per weight), asymmetric::

        byte  0   1   2   3   4  ...  7   8    ...   23
             [ d (fp16) ][ m (fp16) ][ qh (u32) ][lo0|lo16] ... [lo15|lo31]

        q_j = nibble | (bit j of qh) << 4 in 0..31;     weight j = q_j * d + m

    Reference: ``m = min``, ``d = (max - min) / 31``, ``q = (uint8) trunc((x - min)/d + 0.5)`` (no
    clamp: the top value gives 31.5 -> 31). With an imatrix: ``make_qkx3_quants(nmax=31, ...)``.
    """
    nrows = x.shape[0]
    xb = _blocks(x, 32)
    if imatrix is not None:
        d, m, L = _qkx3_impl(x, xb, imatrix, 31)
        return _rows(np.concatenate([nm.f16_bytes(d), nm.f16_bytes(m), _qh_bits(L), _pack_nibbles(L)], axis=1), nrows)
    mn, mx = _first_extremes(xb)
    with np.errstate(over="ignore", invalid="ignore"):
        d = ((mx - mn) / F32(31)).astype(np.float32)
        idv = nm.inv(d)
        v = (((xb - mn[:, None]).astype(np.float32) * idv[:, None]).astype(np.float32) + F32(0.5)).astype(np.float32)
    q = _c_trunc(v) & 0xFF
    return _rows(np.concatenate([nm.f16_bytes(d), nm.f16_bytes(mn), _qh_bits(q), _pack_nibbles(q)], axis=1), nrows)


@_quiet
def dequantize_q5_1(q, n_per_row):
    b = q.reshape(-1, 24)
    d, m = _f16_field(b, 0), _f16_field(b, 2)
    codes = (_unpack_nibbles(b[:, 8:]).astype(np.int32) | _qh_unpack(b[:, 4:8])).astype(np.float32)
    return ((codes * d).astype(np.float32) + m).astype(np.float32).reshape(q.shape[0], n_per_row)


def inspect_q5_1(block):
    b = np.asarray(block, dtype=np.uint8).reshape(1, 24)
    codes = (_unpack_nibbles(b[:, 8:]).astype(np.int32) | _qh_unpack(b[:, 4:8]))[0]
    return {
        "d_bits": int(b[0, 0]) | int(b[0, 1]) << 8,
        "d": F32(_f16_at(b, 0)[0]),
        "m_bits": int(b[0, 2]) | int(b[0, 3]) << 8,
        "m": F32(_f16_at(b, 2)[0]),
        "qh": int.from_bytes(bytes(b[0, 4:8]), "little"),
        "codes": codes,
        "levels": codes.copy(),
        "formula": "x = q * d + m",
    }


# ----------------------------------------------------------------------------------------------------
# Q8_0 and Q8_1
# ----------------------------------------------------------------------------------------------------


def _q8(xb):
    amax = _absmax(xb)
    d = (amax / F32(127)).astype(np.float32)
    idv = nm.inv(d)
    with np.errstate(invalid="ignore", over="ignore"):
        v = nm.roundf((xb * idv[:, None]).astype(np.float32))  # roundf: half away from zero
    return d, _as_int8(_c_trunc(v))


def quantize_q8_0(x, imatrix=None):
    """Q8_0: 32 weights in 34 bytes (8.5 bits per weight)::

        byte  0   1   2    3    ...   33
             [ d (fp16) ][ q0 ][ q1 ] ... [ q31 ]      q_j signed int8

        weight j = q_j * d

    ``d = max|x| / 127``, ``q = roundf(x / d)`` (computed as x * (1/d), rounded half away from zero).
    ggml ignores the imatrix for Q8_0.
    """
    nrows = x.shape[0]
    d, q = _q8(_blocks(x, 32))
    return _rows(np.concatenate([nm.f16_bytes(d), (q & 0xFF).astype(np.uint8)], axis=1), nrows)


def _dequantize_q8(q, n_per_row, type_size):
    """Q8_0 / Q8_1 rows: x = q * d, the 32 int8 codes being the last 32 bytes of a block."""
    b = q.reshape(-1, type_size)
    d = _f16_field(b, 0)
    return (b[:, -32:].view(np.int8).astype(np.float32) * d).astype(np.float32).reshape(q.shape[0], n_per_row)


def _inspect_q8(block, type_size):
    b = np.asarray(block, dtype=np.uint8).reshape(1, type_size)
    codes = b[0, -32:].view(np.int8).astype(np.int32)
    return {
        "d_bits": int(b[0, 0]) | int(b[0, 1]) << 8,
        "d": F32(_f16_at(b, 0)[0]),
        "codes": codes,
        "levels": codes.copy(),
        "formula": "x = q * d",
    }


@_quiet
def dequantize_q8_0(q, n_per_row):
    return _dequantize_q8(q, n_per_row, 34)


def inspect_q8_0(block):
    return _inspect_q8(block, 34)


def quantize_q8_1(x, imatrix=None):
    """Q8_1: 32 values in 36 bytes — Q8_0 plus ``s = d * sum(q)`` (activation side)::

        byte  0   1   2   3   4    ...   35
             [ d (fp16) ][ s (fp16) ][ q0 ] ... [ q31 ]

    ``s`` lets a dot product with Q4_1/Q5_1 weights add the weights' offset ``m`` once per block
    (``m * s``) instead of once per value. The quantizer is Q8_0's; ``s = fp16(float(sum q) * d)``.
    """
    nrows = x.shape[0]
    d, q = _q8(_blocks(x, 32))
    qsum = np.add.reduce(q, axis=1).astype(np.float32)  # an exact integer sum
    s = (qsum * d).astype(np.float32)
    return _rows(np.concatenate([nm.f16_bytes(d), nm.f16_bytes(s), (q & 0xFF).astype(np.uint8)], axis=1), nrows)


@_quiet
def dequantize_q8_1(q, n_per_row):
    """``x = q * d`` (ggml has no Q8_1 to_float; ``s`` is redundant for dequantization)."""
    return _dequantize_q8(q, n_per_row, 36)


def inspect_q8_1(block):
    info = _inspect_q8(block, 36)
    b = np.asarray(block, dtype=np.uint8).reshape(1, 36)
    info.update(
        {
            "s_bits": int(b[0, 2]) | int(b[0, 3]) << 8,
            "s": F32(_f16_at(b, 2)[0]),
            "formula": "x = q * d  (s = d * sum(q))",
        }
    )
    return info


# ----------------------------------------------------------------------------------------------------
# Q1_0 and Q2_0
# ----------------------------------------------------------------------------------------------------


def quantize_q1_0(x, imatrix=None):
    """Q1_0: 128 weights in 18 bytes (1.125 bits per weight): one sign bit per weight::

        byte  0   1   2        3        ...   17
             [ d (fp16) ][ b7..b0 ][ b15..b8 ] ... [ b127..b120 ]     bit j%8 of byte 2 + j//8

        weight j = +d if bit j is 1 else -d

    ``d = mean |x|`` (sequential float32 sum / 128); bit j = 1 iff x_j >= 0 (so 0 and -0.0 are +d).
    """
    nrows = x.shape[0]
    xb = _blocks(x, 128)
    with np.errstate(over="ignore"):
        d = (nm.seqsum(np.abs(xb), axis=1) / F32(128)).astype(np.float32)
    bits = np.packbits((xb >= 0).astype(np.uint8), axis=1, bitorder="little")
    return _rows(np.concatenate([nm.f16_bytes(d), bits], axis=1), nrows)


@_quiet
def dequantize_q1_0(q, n_per_row):
    b = q.reshape(-1, 18)
    d = _f16_field(b, 0)
    bits = np.unpackbits(b[:, 2:], axis=1, bitorder="little").astype(bool)
    return np.where(bits, d, -d).astype(np.float32).reshape(q.shape[0], n_per_row)


def inspect_q1_0(block):
    b = np.asarray(block, dtype=np.uint8).reshape(1, 18)
    bits = np.unpackbits(b[0, 2:], bitorder="little").astype(np.int32)
    return {
        "d_bits": int(b[0, 0]) | int(b[0, 1]) << 8,
        "d": F32(_f16_at(b, 0)[0]),
        "codes": bits,
        "levels": 2 * bits - 1,
        "formula": "x = +d if bit else -d",
    }


def quantize_q2_0(x, imatrix=None):
    """Q2_0: 64 weights in 18 bytes (2.25 bits per weight)::

        byte  0   1   2                    3    ...   17
             [ d (fp16) ][q3|q2|q1|q0][q7|q6|q5|q4] ... [q63|..|q60]    q_j in bits 2(j%4) of byte 2 + j//4

        weight j = (q_j - 1) * d               codes 0,1,2,3 = -d, 0, +d, +2d

    ``d = max|x|``, ``q = clamp(roundf(x/d) + 1, 0, 3)``; as |x/d| <= 1 the code 3 is never produced
    by this quantizer (Q2_0 is ternary in practice).
    """
    nrows = x.shape[0]
    xb = _blocks(x, 64)
    d = _absmax(xb)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        idv = np.where(d > 0, F32(1) / np.where(d > 0, d, F32(1)), F32(0)).astype(np.float32)
        v = nm.roundf((xb * idv[:, None]).astype(np.float32))
    qv = np.clip(_c_trunc(v) + 1, 0, 3).reshape(-1, 16, 4)
    packed = (qv[..., 0] | (qv[..., 1] << 2) | (qv[..., 2] << 4) | (qv[..., 3] << 6)).astype(np.uint8)
    return _rows(np.concatenate([nm.f16_bytes(d), packed], axis=1), nrows)


def _q2_0_codes(b):
    qs = b[:, 2:].astype(np.int32)
    return np.stack([(qs >> s) & 3 for s in (0, 2, 4, 6)], axis=2).reshape(b.shape[0], 64)


@_quiet
def dequantize_q2_0(q, n_per_row):
    b = q.reshape(-1, 18)
    d = _f16_field(b, 0)
    return ((_q2_0_codes(b) - 1).astype(np.float32) * d).astype(np.float32).reshape(q.shape[0], n_per_row)


def inspect_q2_0(block):
    b = np.asarray(block, dtype=np.uint8).reshape(1, 18)
    codes = _q2_0_codes(b)[0]
    return {
        "d_bits": int(b[0, 0]) | int(b[0, 1]) << 8,
        "d": F32(_f16_at(b, 0)[0]),
        "codes": codes,
        "levels": codes - 1,
        "formula": "x = (q - 1) * d",
    }


# The implementations this module defines (quantlab.formats.registry.register; a format missing here
# fails tests/test_registry.py).
register("reference", "Q4_0", quantize=quantize_q4_0, dequantize=dequantize_q4_0, inspect=inspect_q4_0)
register("reference", "Q4_1", quantize=quantize_q4_1, dequantize=dequantize_q4_1, inspect=inspect_q4_1)
register("reference", "Q5_0", quantize=quantize_q5_0, dequantize=dequantize_q5_0, inspect=inspect_q5_0)
register("reference", "Q5_1", quantize=quantize_q5_1, dequantize=dequantize_q5_1, inspect=inspect_q5_1)
register("reference", "Q8_0", quantize=quantize_q8_0, dequantize=dequantize_q8_0, inspect=inspect_q8_0)
register("reference", "Q8_1", quantize=quantize_q8_1, dequantize=dequantize_q8_1, inspect=inspect_q8_1)
register("reference", "Q1_0", quantize=quantize_q1_0, dequantize=dequantize_q1_0, inspect=inspect_q1_0)
register("reference", "Q2_0", quantize=quantize_q2_0, dequantize=dequantize_q2_0, inspect=inspect_q2_0)
