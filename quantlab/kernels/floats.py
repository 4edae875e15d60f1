"""numba kernels for the plain types (F16 and BF16 need bit-level rounding; the rest are casts)."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..formats import floats as ref
from ._fp import bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16


@njit(cache=True, parallel=True)
def _enc_f16(x, out):
    for r in prange(x.shape[0]):
        for j in range(x.shape[1]):
            out[r, j] = f32_to_f16(x[r, j])


@njit(cache=True, parallel=True)
def _dec_f16(h, out):
    for r in prange(h.shape[0]):
        for j in range(h.shape[1]):
            out[r, j] = f16_to_f32(h[r, j])


@njit(cache=True, parallel=True)
def _enc_bf16(x, out):
    for r in prange(x.shape[0]):
        for j in range(x.shape[1]):
            out[r, j] = f32_to_bf16(x[r, j])


@njit(cache=True, parallel=True)
def _dec_bf16(h, out):
    for r in prange(h.shape[0]):
        for j in range(h.shape[1]):
            out[r, j] = bf16_to_f32(h[r, j])


def quantize_f16(x, imatrix=None):
    out = np.empty(x.shape, dtype=np.uint16)
    _enc_f16(x, out)
    return out.view(np.uint8)


def dequantize_f16(q, n):
    out = np.empty((q.shape[0], n), dtype=np.float32)
    _dec_f16(np.ascontiguousarray(q).view(np.uint16), out)
    return out


def quantize_bf16(x, imatrix=None):
    out = np.empty(x.shape, dtype=np.uint16)
    _enc_bf16(x, out)
    return out.view(np.uint8)


def dequantize_bf16(q, n):
    out = np.empty((q.shape[0], n), dtype=np.float32)
    _dec_bf16(np.ascontiguousarray(q).view(np.uint16), out)
    return out


# F32, F64 and the integer types are single numpy casts already running at memory speed.
quantize_f32, dequantize_f32 = ref.quantize_f32, ref.dequantize_f32
quantize_f64, dequantize_f64 = ref.quantize_f64, ref.dequantize_f64
quantize_i8, dequantize_i8 = ref.quantize_i8, ref.dequantize_i8
quantize_i16, dequantize_i16 = ref.quantize_i16, ref.dequantize_i16
quantize_i32, dequantize_i32 = ref.quantize_i32, ref.dequantize_i32
quantize_i64, dequantize_i64 = ref.quantize_i64, ref.dequantize_i64
