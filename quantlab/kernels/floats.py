"""numba kernels for the plain types (F16 and BF16 need bit-level rounding; the rest are casts).

Encoding runs row by row (the rounding has branches). Decoding walks the flattened array in chunks
(a kernel call takes a range of chunks, :func:`quantlab.kernels._rows.run_rows` spreads the ranges over
threads): a 1-D loop with unsigned indices and no branches, which LLVM vectorizes.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..formats import floats as ref
from ..formats.registry import register
from ._fp import f16_to_f32_bits, f32_to_bf16, f32_to_f16
from ._rows import min_rows, run_rows

_CHUNK = 1 << 16  # elements per chunk of the decoders


@njit(cache=True, nogil=True)
def _enc_f16(x, out, r0, r1):
    for r in range(r0, r1):
        for j in range(x.shape[1]):
            out[r, j] = f32_to_f16(x[r, j])


@njit(cache=True, nogil=True)
def _dec_f16(h, out, c0, c1):
    """fp16 bits -> float32 bits (out is a uint32 view of the float32 result)."""
    n = h.size
    for c in range(c0, c1):
        for i in range(np.uint64(c * _CHUNK), np.uint64(min(n, (c + 1) * _CHUNK))):
            out[i] = f16_to_f32_bits(h[i])


@njit(cache=True, nogil=True)
def _enc_bf16(x, out, r0, r1):
    for r in range(r0, r1):
        for j in range(x.shape[1]):
            out[r, j] = f32_to_bf16(x[r, j])


@njit(cache=True, nogil=True)
def _dec_bf16(h, out, c0, c1):
    """bf16 bits -> float32 bits: the bf16 is the top half of the float32."""
    n = h.size
    for c in range(c0, c1):
        for i in range(np.uint64(c * _CHUNK), np.uint64(min(n, (c + 1) * _CHUNK))):
            out[i] = np.uint32(h[i]) << np.uint32(16)


def _encode(kernel, x):
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty(x.shape, dtype=np.uint16)
    run_rows(kernel, x.shape[0], x, out, min_rows=min_rows(x.shape[1], "quantize"))
    return out.view(np.uint8)


def _decode(kernel, q, n):
    h = np.ascontiguousarray(q).view(np.uint16).reshape(-1)
    out = np.empty((q.shape[0], n), dtype=np.float32)
    run_rows(kernel, (h.size + _CHUNK - 1) // _CHUNK, h, out.reshape(-1).view(np.uint32))
    return out


def quantize_f16(x, imatrix=None):
    return _encode(_enc_f16, x)


def dequantize_f16(q, n):
    return _decode(_dec_f16, q, n)


def quantize_bf16(x, imatrix=None):
    return _encode(_enc_bf16, x)


def dequantize_bf16(q, n):
    return _decode(_dec_bf16, q, n)


# F32, F64 and the integer types are single numpy casts already running at memory speed.
quantize_f32, dequantize_f32 = ref.quantize_f32, ref.dequantize_f32
quantize_f64, dequantize_f64 = ref.quantize_f64, ref.dequantize_f64
quantize_i8, dequantize_i8 = ref.quantize_i8, ref.dequantize_i8
quantize_i16, dequantize_i16 = ref.quantize_i16, ref.dequantize_i16
quantize_i32, dequantize_i32 = ref.quantize_i32, ref.dequantize_i32
quantize_i64, dequantize_i64 = ref.quantize_i64, ref.dequantize_i64


# The implementations this module defines (quantlab.formats.registry.register; a format missing here
# fails tests/test_registry.py).
register("fast", "F32", quantize=quantize_f32, dequantize=dequantize_f32)
register("fast", "F16", quantize=quantize_f16, dequantize=dequantize_f16)
register("fast", "I8", quantize=quantize_i8, dequantize=dequantize_i8)
register("fast", "I16", quantize=quantize_i16, dequantize=dequantize_i16)
register("fast", "I32", quantize=quantize_i32, dequantize=dequantize_i32)
register("fast", "I64", quantize=quantize_i64, dequantize=dequantize_i64)
register("fast", "F64", quantize=quantize_f64, dequantize=dequantize_f64)
register("fast", "BF16", quantize=quantize_bf16, dequantize=dequantize_bf16)
