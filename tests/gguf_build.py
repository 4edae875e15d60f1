"""Hand-assembled GGUF bytes for the reader tests: every field is spelled out, so a test can break exactly
one thing (a count, a type id, an offset...) and check the reader names it."""

from __future__ import annotations

import struct

import numpy as np

import quantlab.gguf as qg
from quantlab.gguf import ArrayOf, Value, ValueType


def gstr(s, v1=False) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<I" if v1 else "<Q", len(b)) + b


def kv(key, vtype: int, payload: bytes, v1=False) -> bytes:
    """One metadata pair: key, u32 type, payload (already encoded)."""
    return gstr(key, v1) + struct.pack("<I", vtype) + payload


def kv_u32(key, v, v1=False):
    return kv(key, 4, struct.pack("<I", v), v1)


def kv_str(key, s, v1=False):
    return kv(key, 8, gstr(s, v1), v1)


def kv_str_array(key, items, v1=False):
    return kv(
        key,
        9,
        struct.pack("<I", 8) + struct.pack("<I" if v1 else "<Q", len(items)) + b"".join(gstr(s, v1) for s in items),
        v1,
    )


def tinfo(name, ne, type_id, offset, v1=False) -> bytes:
    d = "I" if v1 else "Q"
    return (
        gstr(name, v1)
        + struct.pack("<I", len(ne))
        + struct.pack(f"<{len(ne)}{d}", *ne)
        + struct.pack("<I", type_id)
        + struct.pack("<Q", offset)
    )


def build(
    kvs=(), tensors=(), data=b"", version=3, n_tensors=None, n_kv=None, alignment=32, v1=None, magic=b"GGUF"
) -> bytes:
    """A whole file: header, the given KV blobs and tensor-info blobs, padding, then ``data``."""
    v1 = (version == 1) if v1 is None else v1
    c = "<I" if v1 else "<Q"
    head = (
        magic
        + struct.pack("<I", version)
        + struct.pack(c, len(tensors) if n_tensors is None else n_tensors)
        + struct.pack(c, len(kvs) if n_kv is None else n_kv)
    )
    body = head + b"".join(kvs) + b"".join(tensors)
    pad = (-len(body)) % alignment
    return body + bytes(pad) + data


def f32_tensor_file(n=8, names=("a", "b"), extra_kvs=()):
    """A valid little file: F32 tensors of n values each, laid out like llama.cpp does."""
    infos, data = [], b""
    for nm in names:
        off = len(data)
        infos.append(tinfo(nm, [n], 0, off))
        blob = np.arange(n, dtype="<f4").tobytes() + bytes((-4 * n) % 32)
        data += blob
    return build([kv_str("general.architecture", "llama"), *extra_kvs], infos, data)


def small_gguf(path, repeats: int = 3, k_quant: bool = False) -> bytes:
    """A small valid file written by quantlab.gguf.write, the seed the fuzz and contract tests mutate: every
    kind of value (a u32, strings, float32 and bool arrays, a nested array, f64, int, str) and an F32, an F16
    and a Q4_0 tensor (with ``k_quant`` a Q4_K one too); ``repeats`` copies of the six tokens. Its bytes."""
    md = {
        "general.architecture": "llama",
        "general.alignment": Value(32, ValueType.UINT32),
        "tokenizer.ggml.tokens": ["<s>", "a", "bc", "", "déf", "Ġx"] * repeats,
        "tokenizer.ggml.scores": np.linspace(-1, 1, 6 * repeats, dtype=np.float32),
        "flags": Value([True, False, True], ArrayOf(ValueType.BOOL)),
        "nested": [[1, 2], ["x"]],
        "f64": np.float64(0.25),
        "n": 7,
        "s": "hello",
    }
    ts = {
        "a": np.arange(64, dtype=np.float32).reshape(2, 32),
        "h": np.ones(32, np.float16),
        "q": qg.TensorSource(np.arange(2 * 18, dtype=np.uint8) % 7, format="Q4_0", shape=(2, 32)),
    }
    if k_quant:
        ts["k"] = qg.TensorSource(np.zeros(144, np.uint8), format="Q4_K", shape=(1, 256))
    qg.write(path, md, ts)
    with open(path, "rb") as fh:
        return fh.read()
