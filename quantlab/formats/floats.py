"""Plain (non-block) types: F32, F16, BF16, F64 and the integer types I8, I16, I32, I64.

One "block" is one value. Layouts, little-endian::

    F32  [ s | eeeeeeee | mmmmmmm mmmmmmmm mmmmmmmm ]   4 bytes, IEEE binary32
    F16  [ s | eeeee | mm mmmmmmmm ]                    2 bytes, IEEE binary16 (max 65504)
    BF16 [ s | eeeeeeee | mmmmmmm ]                      2 bytes, the top half of an F32
    F64  8 bytes IEEE binary64;  I8/I16/I32/I64: two's complement integers

Conversions follow ggml: F16 rounds to nearest even (subnormals kept, overflow -> inf, NaN kept);
BF16 rounds to nearest even on the raw bits and quiets NaNs (ggml_compute_fp32_to_bf16). Integer types
truncate toward zero like a C cast; values that do not fit (or NaN/inf) are refused.
"""

from __future__ import annotations

import numpy as np

from ..errors import FormatError
from . import _numerics as nm
from .registry import register

_INTS = {"i8": np.int8, "i16": np.int16, "i32": np.int32, "i64": np.int64}


def _bytes(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a.view(np.uint8).reshape(a.shape[0], -1)


def quantize_f32(x, imatrix=None):
    return _bytes(x.astype(np.float32))


def dequantize_f32(q, n):
    return np.ascontiguousarray(q).view(np.float32).reshape(q.shape[0], n).copy()


def quantize_f16(x, imatrix=None):
    return _bytes(nm.f16(x))


def dequantize_f16(q, n):
    return nm.from_f16_bits(np.ascontiguousarray(q).view(np.uint16)).reshape(q.shape[0], n)


def quantize_bf16(x, imatrix=None):
    return _bytes(nm.bf16_bits(x))


def dequantize_bf16(q, n):
    return nm.from_bf16_bits(np.ascontiguousarray(q).view(np.uint16)).reshape(q.shape[0], n)


def quantize_f64(x, imatrix=None):
    return _bytes(x.astype(np.float64))


def dequantize_f64(q, n):
    return np.ascontiguousarray(q).view(np.float64).astype(np.float32).reshape(q.shape[0], n)


def _to_int(x, key):
    t = _INTS[key]
    info = np.iinfo(t)
    tr = np.trunc(x.astype(np.float64))
    bad = ~((tr >= info.min) & (tr <= info.max))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise FormatError(
            f"{key.upper()} holds integers in [{info.min}, {info.max}]; "
            f"value {x[r, c]} at row {r}, column {c} does not fit"
        )
    return _bytes(tr.astype(t))


def _from_int(q, n, key):
    return np.ascontiguousarray(q).view(_INTS[key]).astype(np.float32).reshape(q.shape[0], n)


def quantize_i8(x, imatrix=None):
    return _to_int(x, "i8")


def quantize_i16(x, imatrix=None):
    return _to_int(x, "i16")


def quantize_i32(x, imatrix=None):
    return _to_int(x, "i32")


def quantize_i64(x, imatrix=None):
    return _to_int(x, "i64")


def dequantize_i8(q, n):
    return _from_int(q, n, "i8")


def dequantize_i16(q, n):
    return _from_int(q, n, "i16")


def dequantize_i32(q, n):
    return _from_int(q, n, "i32")


def dequantize_i64(q, n):
    return _from_int(q, n, "i64")


def _inspect_float(block, name, bits_layout):
    v = int.from_bytes(bytes(block), "little")
    nb = len(block) * 8
    _s, e, m = bits_layout
    return {
        "bits": format(v, f"0{nb}b"),
        "sign": v >> (nb - 1),
        "exponent": (v >> m) & ((1 << e) - 1),
        "mantissa": v & ((1 << m) - 1),
        "fields": {"sign": (nb - 1, 1), "exponent": (m, e), "mantissa": (0, m)},
    }


def inspect_f32(block):
    return _inspect_float(block, "F32", (1, 8, 23))


def inspect_f16(block):
    return _inspect_float(block, "F16", (1, 5, 10))


def inspect_bf16(block):
    return _inspect_float(block, "BF16", (1, 8, 7))


def inspect_f64(block):
    return _inspect_float(block, "F64", (1, 11, 52))


def inspect_i8(block):
    return {"integer": int(np.frombuffer(bytes(block), np.int8)[0])}


def inspect_i16(block):
    return {"integer": int(np.frombuffer(bytes(block), np.int16)[0])}


def inspect_i32(block):
    return {"integer": int(np.frombuffer(bytes(block), np.int32)[0])}


def inspect_i64(block):
    return {"integer": int(np.frombuffer(bytes(block), np.int64)[0])}


# The implementations this module defines (quantlab.formats.registry.register; a format missing here
# fails tests/test_registry.py).
register("reference", "F32", quantize=quantize_f32, dequantize=dequantize_f32, inspect=inspect_f32)
register("reference", "F16", quantize=quantize_f16, dequantize=dequantize_f16, inspect=inspect_f16)
register("reference", "I8", quantize=quantize_i8, dequantize=dequantize_i8, inspect=inspect_i8)
register("reference", "I16", quantize=quantize_i16, dequantize=dequantize_i16, inspect=inspect_i16)
register("reference", "I32", quantize=quantize_i32, dequantize=dequantize_i32, inspect=inspect_i32)
register("reference", "I64", quantize=quantize_i64, dequantize=dequantize_i64, inspect=inspect_i64)
register("reference", "F64", quantize=quantize_f64, dequantize=dequantize_f64, inspect=inspect_f64)
register("reference", "BF16", quantize=quantize_bf16, dequantize=dequantize_bf16, inspect=inspect_bf16)
