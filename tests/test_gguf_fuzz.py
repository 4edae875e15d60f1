"""Fuzzing the GGUF reader: a small real file (written here) is mutated — bytes overwritten, cut, inserted,
deleted — and opened. Every outcome must be either a clean read (all values and tensors then readable) or
a GGUFError naming a byte offset: no other exception, no hang, no crash. Derandomized, fixed example count.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import quantlab.gguf as qg
from quantlab.errors import GGUFError

from .gguf_build import build, kv_str, kv_str_array, kv_u32, small_gguf, tinfo


def _base_file() -> bytes:
    d = tempfile.mkdtemp()
    p = os.path.join(d, "base.gguf")
    b = small_gguf(p, repeats=3)
    os.unlink(p)
    os.rmdir(d)
    return b


def _v1_file() -> bytes:
    data = np.arange(64, dtype="<f4").tobytes()
    return build(
        [
            kv_str("general.architecture", "llama", v1=True),
            kv_u32("n", 7, v1=True),
            kv_str_array("toks", [f"t{i}" * (i % 3) for i in range(40)], v1=True),
        ],
        [tinfo("w", [32, 2], 0, 0, v1=True), tinfo("v", [32], 1, 256, v1=True)],
        data + bytes(256 - len(data)) + np.ones(32, "<f2").tobytes(),
        version=1,
    )


def _big_endian_file() -> bytes:
    import gguf

    d = tempfile.mkdtemp()
    p = os.path.join(d, "be.gguf")
    w = gguf.GGUFWriter(p, "llama", endianess=gguf.GGUFEndian.BIG)
    w.add_uint32("n", 7)
    w.add_array("toks", [f"t{i}" * (i % 3) for i in range(40)])
    w.add_tensor("x", np.arange(64, dtype=np.float32).reshape(2, 32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(p, "rb") as fh:
        b = fh.read()
    os.unlink(p)
    os.rmdir(d)
    return b


BASE = _base_file()
BASES = [BASE, _v1_file(), _big_endian_file()]
_DIR = tempfile.mkdtemp(prefix="quantlab-fuzz-")
atexit.register(shutil.rmtree, _DIR, True)


def _consume(path):
    with qg.open(path) as f:
        for k in f.metadata:
            f.metadata[k]
            f.metadata.type_of(k)
        for t in f.tensors.values():
            d = np.asarray(t.data)
            assert d.nbytes == t.nbytes
            if t.format.name in ("F32", "F16") and f.byte_order == "little":
                t.numpy()


mutation = st.one_of(
    st.tuples(st.just("set"), st.integers(0, len(BASE) - 1), st.integers(0, 255)),
    st.tuples(st.just("set"), st.integers(0, 200), st.integers(0, 255)),  # the header, more often
    st.tuples(
        st.just("set64"),
        st.integers(0, len(BASE) - 8),
        st.sampled_from([0, 1, 2**31, 2**32, 2**60, 2**63, 2**64 - 1, 13, 43, 255]),
    ),
    st.tuples(st.just("cut"), st.integers(0, len(BASE) - 1), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, len(BASE) - 1), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, len(BASE) - 1), st.integers(1, 16)),
)


def _apply(b: bytearray, muts) -> bytearray:
    for kind, pos, val in muts:
        if pos >= len(b):
            continue
        if kind == "set":
            b[pos] = val
        elif kind == "set64":
            b[pos : pos + 8] = int(val).to_bytes(8, "little")
        elif kind == "cut":
            del b[pos:]
        elif kind == "insert":
            b[pos:pos] = bytes([val])
        else:
            del b[pos : pos + val]
    return b


@settings(
    max_examples=500, derandomize=True, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.sampled_from(range(len(BASES))), st.lists(mutation, min_size=1, max_size=4))
def test_mutated_file_reads_or_raises_gguf_error(which, muts):
    b = _apply(bytearray(BASES[which]), muts)
    path = os.path.join(_DIR, "m.gguf")
    with open(path, "wb") as fh:
        fh.write(b)
    try:
        _consume(path)
    except GGUFError as e:
        msg = str(e)
        assert "byte" in msg or "empty" in msg, msg


def test_base_files_are_valid():
    path = os.path.join(_DIR, "base.gguf")
    for b, version, order in zip(BASES, (3, 1, 3), ("little", "little", "big")):
        with open(path, "wb") as fh:
            fh.write(b)
        _consume(path)
        with qg.open(path) as f:
            assert (f.version, f.byte_order) == (version, order)
    with open(path, "wb") as fh:
        fh.write(BASE)
    with qg.open(path) as f:
        assert f.metadata["tokenizer.ggml.tokens"][4] == "déf"
        assert [x for x in f.tensors] == ["a", "h", "q"]
