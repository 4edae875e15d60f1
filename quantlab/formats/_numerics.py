"""Numeric primitives of ggml, in numpy, shared by every reference implementation.

ggml's quantizers are float32 code evaluated expression by expression. The helpers here reproduce its
rounding primitives exactly (see the spec, section 0.1):

* ``nearest_int``  – ggml's ``nearest_int`` (the 1.5*2**23 trick): round half to even for |v| < 2**22,
  ggml's own bits beyond, for NaN and for infinities (``np.rint`` is not: it differs there);
* ``inv``          – ``d ? 1.0f/d : 0.0f`` in float32;
* ``f16_bytes``    – fp16 little-endian bytes of float32 values (overflow to inf, as ggml);
* ``roundf``       – C ``roundf``/``lroundf``: round half *away from zero*;
* ``f16``/``from_f16`` – IEEE half precision with round-to-nearest-even (numpy's astype is exactly that);
* ``bf16``/``from_bf16`` – ggml's bf16 rounding (RNE on the raw bits, NaN quieted);
* ``e8m0_half`` and ``ue4m3`` – the scale encodings of MXFP4 and NVFP4.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32


def f32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def nearest_int(v) -> np.ndarray:
    """ggml's nearest_int: add 1.5*2**23 in float32 and read the low mantissa bits (int32 result).
    Round half to even for |v| < 2**22; NaN gives 0, an infinity -2**22, as in C."""
    with np.errstate(all="ignore"):
        t = np.asarray(v, dtype=np.float32) + F32(12582912.0)
    return (t.view(np.int32) & np.int32(0x7FFFFF)) - np.int32(0x400000)


def inv(d) -> np.ndarray:
    """``d ? 1.0f/d : 0.0f`` in float32, elementwise."""
    d = np.asarray(d, dtype=np.float32)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        return np.where(d != 0, F32(1) / np.where(d != 0, d, F32(1)), F32(0)).astype(np.float32)


def roundf(x) -> np.ndarray:
    """C roundf: half away from zero, exact for every float32 (done in float64, where +0.5 is exact)."""
    a = np.asarray(x, dtype=np.float32).astype(np.float64)
    return (np.sign(a) * np.floor(np.abs(a) + 0.5)).astype(np.float32)


def f16(x) -> np.ndarray:
    """Round float32 to fp16 (RNE, subnormals, overflow to inf) and return the fp16 array."""
    return np.asarray(x, dtype=np.float32).astype(np.float16)


def f16_bits(x) -> np.ndarray:
    return f16(x).view(np.uint16)


def f16_bytes(v) -> np.ndarray:
    """float32 (n,) -> fp16 little-endian bytes (n, 2); |v| >= 65520 becomes inf, as in ggml."""
    with np.errstate(over="ignore", invalid="ignore"):
        return f16_bits(v).astype("<u2").view(np.uint8).reshape(-1, 2)


def from_f16_bits(b) -> np.ndarray:
    """fp16 bits -> float32, exact; NaNs come out quiet (bit 22 set), as ggml's F16C conversion does."""
    out = np.asarray(b, dtype=np.uint16).view(np.float16).astype(np.float32)
    u = out.view(np.uint32)
    return np.where(np.isnan(out), u | np.uint32(0x400000), u).astype(np.uint32).view(np.float32)


def bf16_bits(x) -> np.ndarray:
    """ggml_compute_fp32_to_bf16: NaN -> quiet NaN (bit 6 of the upper half forced); else RNE on bits."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rne = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    return np.where(nan, ((u >> 16) | 0x40).astype(np.uint16), rne).astype(np.uint16)


def from_bf16_bits(b) -> np.ndarray:
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def e8m0_half(e) -> np.ndarray:
    """MXFP4 scale byte -> float32 2**(e-128) (the 'half' compensates the doubled FP4 table)."""
    e = np.asarray(e, dtype=np.uint32)
    bits = np.where(e < 2, np.uint32(0x00200000) << e, (e - 1) << 23).astype(np.uint32)
    return bits.view(np.float32)


def ue4m3_to_f32(u) -> np.ndarray:
    """NVFP4 sub-block scale byte (unsigned E4M3) -> float32, times 0.5 like ggml."""
    u = np.asarray(u, dtype=np.int32)
    exp = (u >> 3) & 15
    man = (u & 7).astype(np.float32)
    sub = man * F32(2.0**-9)
    nrm = (F32(1) + man / F32(8)) * np.ldexp(F32(1), exp - 7).astype(np.float32)
    raw = np.where(exp == 0, sub, nrm).astype(np.float32)
    raw = np.where((u == 0) | (u == 0x7F), F32(0), raw)
    return (raw * F32(0.5)).astype(np.float32)


def f32_to_ue4m3(x) -> np.ndarray:
    """ggml_fp32_to_ue4m3: non-positive/NaN -> 0, clamp 448, round half *up* on one guard bit."""
    x = np.asarray(x, dtype=np.float32)
    out = np.zeros(x.shape, dtype=np.uint8)
    flat_x, flat_o = x.reshape(-1), out.reshape(-1)
    for i, v in enumerate(flat_x):
        flat_o[i] = _ue4m3_scalar(F32(v))
    return out


def _ue4m3_scalar(v: np.float32) -> int:
    if not (v > 0):
        return 0
    if v > F32(448):
        v = F32(448)
    bits = int(np.float32(v).view(np.uint32))
    e = ((bits >> 23) & 0xFF) - 127
    if e + 7 <= 0:
        man = int(np.trunc(np.float32(v * F32(512)) + F32(0.5)))
        man = min(man, 7)
        return man if man >= 1 else 0
    if e + 7 >= 15:
        return 0x7E
    m3 = (bits >> 20) & 7
    r = (bits >> 19) & 1
    man = m3 + r
    exp = e + 7
    if man == 8:
        man = 0
        exp += 1
        if exp >= 15:
            return 0x7E
    return (exp << 3) | man


def argmax_abs(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Index of the element with the largest |x| along ``axis``, first one on ties (C's strict '>' scan)."""
    return np.argmax(np.abs(x), axis=axis)


def take_signed_max(x: np.ndarray) -> np.ndarray:
    """The signed element with the largest |x| per row of a (..., n) array (first on ties)."""
    idx = argmax_abs(x, axis=-1)
    return np.take_along_axis(x, idx[..., None], axis=-1)[..., 0]


def seqsum(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Sequential (left-to-right) float32 sum, like a C accumulation loop (np.sum is pairwise)."""
    x = np.asarray(x, dtype=np.float32)
    return np.add.accumulate(x, axis=axis, dtype=np.float32).take(-1, axis=axis)


def csum(a) -> np.ndarray:
    """``s = 0; for j: s += a[..., j]`` in float32: left to right from +0, like a C loop (unlike
    :func:`seqsum`, an all -0.0 row sums to +0.0, as in C)."""
    a = np.asarray(a, dtype=np.float32)
    z = np.zeros(a.shape[:-1] + (1,), dtype=np.float32)
    return np.add.accumulate(np.concatenate([z, a], axis=-1), axis=-1, dtype=np.float32)[..., -1]


def c_argmin(v: np.ndarray) -> np.ndarray:
    """C's ``imin = 0; for i >= 1: if (v[i] < v[imin]) imin = i`` along the last axis (NaN never wins)."""
    vv = np.where(np.isnan(v), np.float32(np.inf), v)
    i = np.argmin(vv, axis=-1)
    return np.where(np.isnan(v[..., 0]), 0, i)
