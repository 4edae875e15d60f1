"""Scalar numeric helpers for numba kernels: bit casts, fp16/bf16/e8m0/ue4m3 conversions, rounding.

Numba has no float16 scalar, so conversions are done on the bits. Each is tested against numpy
(``astype(np.float16)``) over every fp16 value and a dense sample of float32 values.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

from ..formats._numerics import from_f16_bits

# fp16 -> float32 for every one of the 65536 bit patterns (256 KiB, NaNs quieted like ggml's F16C
# conversion; what ggml_table_f32_f16 holds): decoding a block scale by lookup costs a fraction of the
# bit manipulation in f16_to_f32. The one table of the kernels (legacy, ternary, matmul use it).
F16_TABLE = from_f16_bits(np.arange(65536, dtype=np.uint32).astype(np.uint16))


@intrinsic
def f32_as_u32(typingctx, x):
    sig = types.uint32(types.float32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.uint32))

    return sig, codegen


@intrinsic
def u32_as_f32(typingctx, x):
    sig = types.float32(types.uint32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))

    return sig, codegen


@njit(cache=True, inline="always")
def f32_to_f16(f):
    """float32 -> fp16 bits (uint16), round to nearest even, subnormals, inf; NaN -> 0x7E00 | sign."""
    x = f32_as_u32(np.float32(f))
    sign = np.uint16((x >> np.uint32(16)) & np.uint32(0x8000))
    a = x & np.uint32(0x7FFFFFFF)
    if a >= np.uint32(0x7F800000):
        if a > np.uint32(0x7F800000):
            return np.uint16(sign | np.uint16(0x7E00))
        return np.uint16(sign | np.uint16(0x7C00))
    if a >= np.uint32(0x477FF000):  # >= 65520 rounds to infinity
        return np.uint16(sign | np.uint16(0x7C00))
    if a < np.uint32(0x38800000):  # below 2**-14: fp16 subnormal or zero
        if a < np.uint32(0x33000000):  # below 2**-25 (exactly 2**-25 ties to even = 0 too)
            return sign
        e = np.int32(a >> np.uint32(23))
        m = (a & np.uint32(0x7FFFFF)) | np.uint32(0x800000)
        shift = np.uint32(126 - e)
        r = m >> shift
        rem = m & ((np.uint32(1) << shift) - np.uint32(1))
        half = np.uint32(1) << (shift - np.uint32(1))
        if rem > half or (rem == half and (r & np.uint32(1)) != 0):
            r += np.uint32(1)
        return np.uint16(sign | np.uint16(r))
    r = (a - np.uint32(112 << 23)) >> np.uint32(13)
    rem = a & np.uint32(0x1FFF)
    if rem > np.uint32(0x1000) or (rem == np.uint32(0x1000) and (r & np.uint32(1)) != 0):
        r += np.uint32(1)
    return np.uint16(sign | np.uint16(r))


@njit(cache=True, inline="always")
def f16_to_f32(h):
    """fp16 bits -> float32 (exact)."""
    h = np.uint32(h)
    sign = (h & np.uint32(0x8000)) << np.uint32(16)
    e = (h >> np.uint32(10)) & np.uint32(0x1F)
    m = h & np.uint32(0x3FF)
    if e == np.uint32(0):
        v = np.float32(m) * np.float32(5.9604644775390625e-08)
        return -v if sign else v
    if e == np.uint32(31):
        if m:  # NaN: quiet it, like the F16C instruction ggml uses
            return u32_as_f32(sign | np.uint32(0x7FC00000) | (m << np.uint32(13)))
        return u32_as_f32(sign | np.uint32(0x7F800000))
    return u32_as_f32(sign | ((e + np.uint32(112)) << np.uint32(23)) | (m << np.uint32(13)))


@njit(cache=True, inline="always")
def f16_to_f32_bits(h):
    """fp16 bits -> float32 bits, the same result as :func:`f16_to_f32` for all 65536 inputs, written
    without branches (every case computed, then selected) so a loop over an array vectorizes."""
    h = np.uint32(h)
    sign = (h & np.uint32(0x8000)) << np.uint32(16)
    em = h & np.uint32(0x7FFF)  # exponent and mantissa
    m = h & np.uint32(0x3FF)
    normal = (em << np.uint32(13)) + np.uint32(112 << 23)  # rebias 15 -> 127
    quiet = np.uint32(0x400000) if m != np.uint32(0) else np.uint32(0)
    special = np.uint32(0x7F800000) | (m << np.uint32(13)) | quiet  # inf; NaN quieted like F16C
    sub = f32_as_u32(np.float32(np.int32(m)) * np.float32(5.9604644775390625e-08))  # m * 2**-24
    r = special if em >= np.uint32(0x7C00) else normal
    r = sub if em < np.uint32(0x400) else r
    return r | sign


@njit(cache=True, inline="always")
def f32_to_bf16(f):
    x = f32_as_u32(np.float32(f))
    if (x & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
        return np.uint16((x >> np.uint32(16)) | np.uint32(0x40))
    return np.uint16(
        (np.uint64(x) + np.uint64(0x7FFF) + np.uint64((x >> np.uint32(16)) & np.uint32(1))) >> np.uint64(16)
    )


@njit(cache=True, inline="always")
def bf16_to_f32(h):
    return u32_as_f32(np.uint32(h) << np.uint32(16))


@njit(cache=True, inline="always")
def e8m0_half(e):
    e = np.uint32(e)
    if e < np.uint32(2):
        return u32_as_f32(np.uint32(0x00200000) << e)
    return u32_as_f32((e - np.uint32(1)) << np.uint32(23))


@njit(cache=True, inline="always")
def roundf(f):
    """C roundf (half away from zero) of a float32, returned as float32 (exact via float64)."""
    a = np.float64(f)
    if a >= 0:
        return np.float32(np.floor(a + 0.5))
    return np.float32(-np.floor(-a + 0.5))


@njit(cache=True, inline="always")
def rd16(q, off):
    """Little-endian uint16 at q[off]."""
    return np.uint16(q[off]) | (np.uint16(q[off + 1]) << np.uint16(8))


@njit(cache=True, inline="always")
def wr16(q, off, v):
    q[off] = np.uint8(v & np.uint16(0xFF))
    q[off + 1] = np.uint8(v >> np.uint16(8))


@njit(cache=True, inline="always")
def h2f(q, off):
    """The little-endian fp16 at q[off], as float32 (lookup in F16_TABLE)."""
    return F16_TABLE[rd16(q, off)]
