"""GGUF reader/writer: round trips (byte-identical), interoperability with gguf-py in both directions,
old versions and byte orders, and one test per kind of malformed input."""

from __future__ import annotations

import errno
import filecmp
import json
import os
import struct
import tracemalloc

import numpy as np
import pytest

import quantlab
import quantlab.data
import quantlab.gguf as qg
from quantlab.errors import DataMissing, GGUFError
from quantlab.formats.registry import all_formats
from quantlab.gguf import ArrayOf, Value, ValueType

from .gguf_build import build, f32_tensor_file, gstr, kv, kv_str, kv_str_array, kv_u32, tinfo
from .oracle import GgufC

gguf = pytest.importorskip("gguf")


def _smollm2():
    try:
        return quantlab.data.path("smollm2")
    except DataMissing as e:
        pytest.skip(str(e))


def _write_bytes(tmp_path, b, name="x.gguf"):
    p = tmp_path / name
    p.write_bytes(b)
    return p


def _raises(tmp_path, b, *needles):
    p = _write_bytes(tmp_path, b)
    with pytest.raises(GGUFError) as ei, qg.open(p) as f:
        for k in f.metadata:
            f.metadata[k]
    msg = str(ei.value)
    assert msg.startswith(f"{p}: ") and "byte" in msg, msg  # the file, then the byte
    for n in needles:
        assert n in msg, msg
    return msg


# every value type, as (key, value, type spec)
ALL_VALUES = [
    ("t.u8", 200, ValueType.UINT8),
    ("t.i8", -100, ValueType.INT8),
    ("t.u16", 60000, ValueType.UINT16),
    ("t.i16", -30000, ValueType.INT16),
    ("t.u32", 4_000_000_000, ValueType.UINT32),
    ("t.i32", -2_000_000_000, ValueType.INT32),
    ("t.f32", 0.5, ValueType.FLOAT32),
    ("t.bool", True, ValueType.BOOL),
    ("t.str", "héllo ☃", ValueType.STRING),
    ("t.u64", 2**64 - 1, ValueType.UINT64),
    ("t.i64", -(2**63), ValueType.INT64),
    ("t.f64", 1e-300, ValueType.FLOAT64),
    ("t.arr.u8", np.array([0, 255], np.uint8), ArrayOf(ValueType.UINT8)),
    ("t.arr.i8", np.array([-128, 127], np.int8), ArrayOf(ValueType.INT8)),
    ("t.arr.u16", np.array([1, 65535], np.uint16), ArrayOf(ValueType.UINT16)),
    ("t.arr.i16", np.array([-5, 5], np.int16), ArrayOf(ValueType.INT16)),
    ("t.arr.u32", np.array([7, 2**32 - 1], np.uint32), ArrayOf(ValueType.UINT32)),
    ("t.arr.i32", np.array([-7, 3, 1 << 30], np.int32), ArrayOf(ValueType.INT32)),
    ("t.arr.f32", np.array([1.5, -0.25, 3e38], np.float32), ArrayOf(ValueType.FLOAT32)),
    ("t.arr.bool", np.array([True, False, True]), ArrayOf(ValueType.BOOL)),
    ("t.arr.str", ("a", "", "ĠHello", "日本"), ArrayOf(ValueType.STRING)),
    ("t.arr.u64", np.array([0, 2**64 - 1], np.uint64), ArrayOf(ValueType.UINT64)),
    ("t.arr.i64", np.array([-(2**63), 2**63 - 1], np.int64), ArrayOf(ValueType.INT64)),
    ("t.arr.f64", np.array([np.pi, -1e300]), ArrayOf(ValueType.FLOAT64)),
]


def _same(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    if isinstance(a, float) or isinstance(b, float):
        return np.float64(a).tobytes() == np.float64(b).tobytes() or a == b
    return list(a) == list(b) if isinstance(a, (list, tuple)) else a == b


def _gguf_formats():
    out = []
    for f in all_formats():
        gt = f.gguf_type()
        if gt is None:
            continue
        size = gguf.constants.GGML_QUANT_SIZES.get(gt)
        if size != (f.block_size, f.type_size):  # gguf-py's Q8_1 size is wrong (40 bytes)
            continue
        out.append(f)
    return out


def _random_tensors(rng, formats):
    ts = {}
    for f in formats:
        rows, blocks = 3, 2
        shape = (rows, blocks * f.block_size)
        raw = rng.integers(0, 256, size=(rows, blocks * f.type_size), dtype=np.uint8)
        if f.name in ("F32", "F16", "BF16", "F64"):  # keep float bit patterns finite and tame
            raw = rng.standard_normal(shape).astype({"F32": "<f4", "F16": "<f2", "F64": "<f8", "BF16": "<f4"}[f.name])
            if f.name == "BF16":
                raw = (raw.view("<u4") >> 16).astype("<u2")
            raw = raw.view(np.uint8).reshape(rows, -1)
        ts[f"t.{f.name.lower()}"] = qg.TensorSource(raw, format=f.name, shape=shape)
    return ts


# --------------------------------------------------------------------------- round trips


def test_smollm2_round_trip_is_byte_identical(tmp_path):
    src = _smollm2()
    dst = tmp_path / "copy.gguf"
    with qg.open(src) as f:
        assert f.version == 3 and f.byte_order == "little" and f.canonical_layout
        qg.write(dst, f.metadata, f.tensors)
    assert filecmp.cmp(src, dst, shallow=False)


def test_smollm2_round_trip_through_a_plain_copy_keeps_types(tmp_path):
    src = _smollm2()
    with qg.open(src) as f:
        md = f.metadata.copy()  # decoded values + recorded types, mutable
        md["general.name"] = "renamed"  # same kind: keeps STRING
        md["general.file_type"] = 3  # int: keeps UINT32
        tensors = dict(f.tensors)
        qg.write(tmp_path / "b.gguf", md, tensors)
        with qg.open(tmp_path / "b.gguf") as g:
            assert g.metadata["general.name"] == "renamed"
            for k in f.metadata:
                assert g.metadata.type_of(k) == f.metadata.type_of(k), k
                if k != "general.name":
                    assert _same(g.metadata[k], f.metadata[k]), k
            for name, t in f.tensors.items():
                assert np.array_equal(g.tensors[name].data, t.data)


def test_smollm2_metadata_matches_gguf_reader():
    src = _smollm2()
    r = gguf.GGUFReader(str(src))
    with qg.open(src) as f:
        assert len(f.tensors) == len(r.tensors)
        assert len(f.metadata) == len(r.fields) - 3  # gguf-py also lists version and the counts
        for field in r.fields.values():
            if field.name.startswith("GGUF."):
                continue
            assert _same(f.metadata[field.name], field.contents()), field.name
            assert int(f.metadata.type_of(field.name) if field.types[0] != 9 else 9) == field.types[0]
        assert len(f.metadata["tokenizer.ggml.tokens"]) == 49152
        for rt in r.tensors:
            t = f.tensors[rt.name]
            assert t.format.id == int(rt.tensor_type)
            assert t.ne == tuple(int(v) for v in rt.shape)
            assert t.file_offset == rt.data_offset and t.nbytes == rt.n_bytes
            assert np.array_equal(t.data.reshape(-1), np.asarray(rt.data).reshape(-1).view(np.uint8))


def test_written_file_reads_identically_with_gguf_reader(tmp_path):
    rng = np.random.default_rng(0)
    fmts = _gguf_formats()
    md = {"general.architecture": "llama"}
    md.update({k: Value(v, t) for k, v, t in ALL_VALUES})
    ts = _random_tensors(rng, fmts)
    p = tmp_path / "all.gguf"
    qg.write(p, md, ts)
    r = gguf.GGUFReader(str(p))
    for k, v, t in ALL_VALUES:
        field = r.fields[k]
        want = v.tolist() if isinstance(v, np.ndarray) else (list(v) if isinstance(v, tuple) else v)
        assert _same(field.contents(), want), k
        if isinstance(t, ArrayOf):
            assert field.types == [ValueType.ARRAY, t.elem], k
        else:
            assert field.types == [t], k
    assert [t.name for t in r.tensors] == list(ts)
    for rt, f in zip(r.tensors, fmts):
        src = ts[rt.name]
        assert int(rt.tensor_type) == f.id
        assert tuple(int(v) for v in reversed(rt.shape)) == tuple(src.shape)
        assert np.array_equal(np.asarray(rt.data).reshape(-1).view(np.uint8), src.data.reshape(-1)), f.name
        assert rt.data_offset % 32 == 0


def test_gguf_writer_output_reads_identically(tmp_path):
    rng = np.random.default_rng(1)
    fmts = _gguf_formats()
    p = tmp_path / "w.gguf"
    w = gguf.GGUFWriter(str(p), "llama")
    for k, v, t in ALL_VALUES:
        if isinstance(t, ArrayOf):
            w.add_key_value(k, list(v.tolist() if isinstance(v, np.ndarray) else v), ValueType.ARRAY, sub_type=t.elem)
        else:
            w.add_key_value(k, v, t)
    w.add_key_value("t.nested", [[1, 2], [3]], ValueType.ARRAY)
    raws = {}
    for f in fmts:
        raw = rng.integers(0, 256, size=(2, 3 * f.type_size), dtype=np.uint8)
        raws[f.name] = raw
        w.add_tensor(f"x.{f.name}", raw, raw_dtype=f.gguf_type())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with qg.open(p) as f:
        assert f.metadata["general.architecture"] == "llama"
        for k, v, t in ALL_VALUES:
            assert f.metadata.type_of(k) == t, k
            assert _same(f.metadata[k], v), k
        assert [x.tolist() for x in f.metadata["t.nested"]] == [[1, 2], [3]]
        assert f.metadata.type_of("t.nested") == ArrayOf(ValueType.ARRAY, items=(ArrayOf(ValueType.INT32),) * 2)
        for fm in fmts:
            t = f.tensors[f"x.{fm.name}"]
            assert t.format == fm and t.shape == (2, 3 * fm.block_size)
            assert np.array_equal(t.data, raws[fm.name])
        # and quantlab writes gguf-py's file back byte for byte
        qg.write(tmp_path / "again.gguf", f.metadata, f.tensors)
    assert filecmp.cmp(p, tmp_path / "again.gguf", shallow=False)


def test_big_endian_file_from_gguf_writer(tmp_path):
    p = tmp_path / "be.gguf"
    w = gguf.GGUFWriter(str(p), "llama", endianess=gguf.GGUFEndian.BIG)
    w.add_uint32("t.u32", 123456)
    w.add_float32("t.f32", 1.25)
    w.add_array("t.toks", ["a", "bc", "déf"])
    many = [f"s{i}" * (i % 5) for i in range(300)]
    w.add_array("t.many", many)
    w.add_key_value("t.scores", [0.5, -2.0], ValueType.ARRAY, sub_type=ValueType.FLOAT32)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    h = np.linspace(-1, 1, 8, dtype=np.float16).reshape(2, 4)
    w.add_tensor("x", x)
    w.add_tensor("h", h)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with qg.open(p) as f:
        assert f.byte_order == "big" and f.version == 3
        assert f.metadata["t.u32"] == 123456 and f.metadata["t.f32"] == 1.25
        assert f.metadata["t.toks"] == ("a", "bc", "déf")
        assert f.metadata["t.scores"].tolist() == [0.5, -2.0]
        assert f.metadata["t.many"] == tuple(many)
        assert np.array_equal(f.tensors["x"].numpy(), x)
        assert np.array_equal(f.tensors["h"].numpy(), h)
        assert np.array_equal(f.tensors["x"].dequantize(), x)
        # converting to a little-endian copy keeps the values
        qg.write(tmp_path / "le.gguf", f.metadata, f.tensors)
    with qg.open(tmp_path / "le.gguf") as g:
        assert g.byte_order == "little"
        assert np.array_equal(g.tensors["x"].numpy(), x) and g.metadata["t.toks"] == ("a", "bc", "déf")


def test_version_1_and_2_files(tmp_path):
    data = np.arange(32, dtype="<f4").tobytes()
    b1 = build(
        [
            kv_str("general.architecture", "llama", v1=True),
            kv_u32("n", 7, v1=True),
            kv_str_array("toks", ["x", "yz"], v1=True),
        ],
        [tinfo("w", [8, 4], 0, 0, v1=True)],
        data,
        version=1,
    )
    with qg.open(_write_bytes(tmp_path, b1, "v1.gguf")) as f:
        assert f.version == 1
        assert f.metadata["general.architecture"] == "llama" and f.metadata["n"] == 7
        assert f.metadata["toks"] == ("x", "yz")
        assert f.tensors["w"].shape == (4, 8)
        assert np.array_equal(f.tensors["w"].numpy().reshape(-1), np.arange(32, dtype=np.float32))
    b2 = build(
        [kv_str("general.architecture", "llama"), kv_str_array("toks", ["x", "yz"])],
        [tinfo("w", [8, 4], 0, 0)],
        data,
        version=2,
    )
    with qg.open(_write_bytes(tmp_path, b2, "v2.gguf")) as f:
        assert f.version == 2 and f.metadata["toks"] == ("x", "yz")
        assert np.array_equal(f.tensors["w"].numpy().reshape(-1), np.arange(32, dtype=np.float32))


def test_long_string_arrays_and_awkward_strings(tmp_path):
    """The vectorized string walk on shapes that defeat shortcuts: empty strings (zero bytes everywhere),
    strings that are themselves zero bytes, one huge string, non-UTF-8 bytes (kept exactly)."""
    rng = np.random.default_rng(3)
    words = ["", "\x00" * 9, "a" * 5000, "\udcff\udc80ok"] + [
        "".join(chr(c) for c in rng.integers(32, 0x3000, size=rng.integers(0, 12))) for _ in range(3000)
    ]
    empties = [""] * 5000
    md = {
        "general.architecture": "x",
        "w": Value(words, ArrayOf(ValueType.STRING)),
        "e": Value(empties, ArrayOf(ValueType.STRING)),
        "after": 5,
    }
    p = tmp_path / "s.gguf"
    qg.write(p, md, {})
    with qg.open(p) as f:
        assert f.metadata["w"] == tuple(words)
        assert f.metadata["e"] == tuple(empties)
        assert f.metadata["after"] == 5
    qg.write(tmp_path / "s2.gguf", qg.open(p).metadata, {})
    assert filecmp.cmp(p, tmp_path / "s2.gguf", shallow=False)


@pytest.mark.parametrize("version", [1, 3])
def test_vectorized_string_walk_agrees_with_a_plain_loop(tmp_path, version):
    """Both chain finders (the fast pruning one and the element-by-element one) against a Python loop, on
    arrays that favour false candidates: empty strings, NUL bytes, long strings, byte-like lengths."""
    from quantlab.gguf import values as R

    rng = np.random.default_rng(version)
    v1 = version == 1
    pools = [
        [""] * 300,
        ["\x00" * int(k) for k in rng.integers(0, 20, 400)],
        ["x" * int(k) for k in rng.integers(0, 3000, 50)],
        [bytes(rng.integers(0, 4, int(k)).astype(np.uint8)).decode("latin-1") for k in rng.integers(0, 40, 800)],
        [f"tok{i}" for i in range(2000)],
    ]
    for items in pools:
        b = build([kv_str_array("a", items, v1=v1), kv_u32("after", 9, v1=v1)], version=version)
        p = _write_bytes(tmp_path, b)
        with qg.open(p) as f:
            got = f.metadata["a"]
            assert got == tuple(s if not isinstance(s, bytes) else s.decode() for s in items)
            assert f.metadata["after"] == 9
            src = f._src
            pos = f.metadata.offset_of("a") + (4 if v1 else 8) + 1 + 4 + 4 + (4 if v1 else 8)
            P = src.len_size
            m = src.size - pos - P + 1
            L = np.ndarray((m,), dtype=src.len_dtype, buffer=src.mm, offset=pos, strides=(1,))
            want, loose = len(items), src.size - pos - P
            exact = R._chain_walk(src, pos, m, want, loose)
            fast = R._chain_fast(L, m, P, want, loose)
            starts = []
            q = 0
            for s in items:
                starts.append(q)
                q += P + len(s.encode("utf-8"))
            assert exact.tolist() == starts
            assert fast is None or fast.tolist() == starts


def test_infer_types_for_plain_values(tmp_path):
    md = {
        "general.architecture": "llama",
        "a": 5,
        "b": -5,
        "c": 2**40,
        "d": 0.1,
        "e": True,
        "f": "s",
        "g": [1, 2, 3],
        "h": ["x", "y"],
        "i": [0.5, 1],
        "j": np.float64(2.5),
        "k": np.arange(3, dtype=np.int16),
        "l": b"\x00\x01",
        "m": [[1, 2], ["a"]],
    }
    qg.write(tmp_path / "i.gguf", md, {})
    with qg.open(tmp_path / "i.gguf") as f:
        T = f.metadata.type_of
        assert T("a") == ValueType.UINT32 and T("b") == ValueType.INT32 and T("c") == ValueType.UINT64
        assert T("d") == ValueType.FLOAT32 and T("e") == ValueType.BOOL and T("f") == ValueType.STRING
        assert T("g") == ArrayOf(ValueType.INT32) and T("h") == ArrayOf(ValueType.STRING)
        assert T("i") == ArrayOf(ValueType.FLOAT32) and T("j") == ValueType.FLOAT64
        assert T("k") == ArrayOf(ValueType.INT16) and T("l") == ArrayOf(ValueType.UINT8)
        assert T("m") == ArrayOf(ValueType.ARRAY, items=(ArrayOf(ValueType.INT32), ArrayOf(ValueType.STRING)))
        assert f.metadata["d"] == float(np.float32(0.1)) and f.metadata["m"][1] == ("a",)
    with pytest.raises(GGUFError, match="empty list"):
        qg.write(tmp_path / "bad.gguf", {"x": []}, {})
    with pytest.raises(GGUFError, match="mixes"):
        qg.write(tmp_path / "bad.gguf", {"x": [1, "a"]}, {})
    with pytest.raises(GGUFError, match="does not fit"):
        qg.write(tmp_path / "bad.gguf", {"x": Value(300, ValueType.UINT8)}, {})
    assert not (tmp_path / "bad.gguf").exists()


# --------------------------------------------------------------------------- streaming writer, layout


def test_streaming_writer_layout_matches_llama_cpp_conventions(tmp_path):
    p = tmp_path / "s.gguf"
    rng = np.random.default_rng(2)
    a = rng.standard_normal((4, 64)).astype(np.float32)
    calls = []

    def lazy():
        calls.append(1)
        return a[:1].copy()

    with qg.GGUFWriter(p, {"general.architecture": "llama"}, alignment=64, trim_dims=True) as w:
        w.add_tensor("a", a)
        w.add_tensor("one_row", qg.TensorSource(lazy, format="F32", shape=(1, 64)))
        w.add_tensor("h", shape=(3, 32), format="F16")
        assert not calls
        w.write_tensor("a")
        w.write_tensor("one_row")
        w.write_tensor("h", np.ones((3, 32), np.float16))
    assert calls == [1]
    raw = p.read_bytes()
    with qg.open(p) as f:
        assert f.alignment == 64 and f.metadata.type_of("general.alignment") == ValueType.UINT32
        assert f.canonical_layout and f.data_offset % 64 == 0
        assert f.tensors["one_row"].ne == (64,)  # trim_dims: ggml_n_dims drops the trailing 1
        assert f.tensors["a"].ne == (64, 4)
        offs = [t.offset for t in f.tensors.values()]
        assert offs == [0, 1024, 1024 + 256]
        # every padding byte is zero: after the infos and after each tensor
        assert not any(raw[f.info_end : f.data_offset])
        for t in f.tensors.values():
            end = t.file_offset + t.nbytes
            assert not any(raw[end : end + (-t.nbytes) % 64])
        assert np.array_equal(f.tensors["a"].numpy(), a)
        assert np.array_equal(f.tensors["h"].numpy(), np.ones((3, 32), np.float16))
    r = gguf.GGUFReader(str(p))
    assert [int(t.data_offset) for t in r.tensors] == [
        f_off for f_off in (t.file_offset for t in qg.open(p).tensors.values())
    ]


def test_writer_reserves_the_whole_file_before_writing(tmp_path, monkeypatch):
    """The temporary file's blocks are reserved (fallocate) at the header, for the size the tensor table
    gives: the finished file is exactly that long (the reservation never leaves slack), and a disk too
    small fails at once with the one-line GGUFError, nothing left behind."""
    import sys

    import quantlab.gguf.writer as gw

    p = tmp_path / "r.gguf"
    a = np.ones((64, 256), np.float32)
    with qg.GGUFWriter(p, {"general.architecture": "llama"}) as w:
        w.add_tensor("a", a)
        w.add_tensor("b", a[:3])
        w.write_tensor("a")
        st = os.fstat(w._fd)
        if sys.platform.startswith("linux") and gw._fallocate() is not None:
            assert st.st_size == w._data_start + 64 * 1024 + 3 * 1024  # reserved up to the end
        w.write_tensor("b")
    assert p.stat().st_size == w.size
    with qg.open(p) as f:
        assert np.array_equal(f.tensors["b"].numpy(), a[:3])

    def full(fd, size):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(gw, "_preallocate", full)
    with (
        pytest.raises(GGUFError, match="No space left on device"),
        qg.GGUFWriter(tmp_path / "n.gguf", {"general.architecture": "llama"}) as w,
    ):
        w.add_tensor("a", a)
        w.write_tensor("a")
    assert sorted(q.name for q in tmp_path.iterdir()) == ["r.gguf"]


def test_writer_quantizes_float_data_for_a_quantized_format(tmp_path):
    x = np.random.default_rng(5).standard_normal((2, 64)).astype(np.float32)
    qg.write(tmp_path / "q.gguf", {"general.architecture": "llama"}, {"w": qg.TensorSource(x, format="Q8_0")})
    with qg.open(tmp_path / "q.gguf") as f:
        assert np.array_equal(f.tensors["w"].data, quantlab.quantize(x, "Q8_0"))


def test_interrupted_write_leaves_no_file_and_no_temp(tmp_path):
    p = tmp_path / "out.gguf"

    def boom():
        raise RuntimeError("source failed")

    with pytest.raises(RuntimeError):
        qg.write(
            p,
            {"general.architecture": "llama"},
            {"a": np.zeros(32, np.float32), "b": qg.TensorSource(boom, format="F32", shape=(32,))},
        )
    assert os.listdir(tmp_path) == []
    # an existing file under the target name survives a failed write untouched
    p.write_bytes(b"old")
    with pytest.raises(GGUFError):
        qg.write(
            p,
            {"general.architecture": "llama"},
            {"a": qg.TensorSource(np.zeros(31, np.uint8), format="Q8_0", shape=(32,))},
        )
    assert p.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.gguf"]
    # a streaming writer closed before all tensors are written fails and creates nothing
    q = tmp_path / "half.gguf"
    w = qg.GGUFWriter(q, {"general.architecture": "llama"})
    w.add_tensor("a", shape=(32,), format="F32")
    w.add_tensor("b", shape=(32,), format="F32")
    w.write_tensor("a", np.zeros(32, np.float32))
    with pytest.raises(GGUFError, match="never written"):
        w.close()
    assert sorted(os.listdir(tmp_path)) == ["out.gguf"]


def test_writer_refuses_bad_tensors(tmp_path):
    w = qg.GGUFWriter(tmp_path / "x.gguf")
    with pytest.raises(GGUFError, match="duplicate"):
        w.add_tensor("a", np.zeros(4, np.float32))
        w.add_tensor("a", np.zeros(4, np.float32))
    with pytest.raises(GGUFError, match="block"):
        w.add_tensor("q", shape=(3, 40), format="Q4_0")
    with pytest.raises(GGUFError, match="no longer"):
        w.add_tensor("r", shape=(32,), format=4)
    with pytest.raises(GGUFError, match="shorter than 64"):
        w.add_tensor("n" * 64, np.zeros(4, np.float32))
    with pytest.raises(GGUFError, match="uint8"):
        w.add_tensor("u", np.zeros(4, np.uint8))
    w.abort()
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- the mapped file's life


def test_views_survive_close_and_closed_file_refuses_new_reads(tmp_path):
    p = _write_bytes(tmp_path, f32_tensor_file(extra_kvs=[kv_str_array("toks", ["q", "r"])]))
    f = qg.open(p)
    view = f.tensors["a"].data
    arr = f.tensors["b"].numpy()
    f.close()
    assert f.closed
    assert arr.tolist() == list(range(8)) and view.view("<f4").tolist() == list(range(8))
    with pytest.raises(GGUFError, match="closed"):
        _ = f.tensors["a"].data
    with pytest.raises(GGUFError, match="closed"):
        f.metadata["toks"]
    assert f.metadata["general.architecture"] == "llama"  # scalars were decoded at open


def test_metadata_is_read_only_and_lazy_arrays_are_read_only(tmp_path):
    p = _write_bytes(tmp_path, f32_tensor_file())
    qg.write(tmp_path / "m.gguf", {"general.architecture": "llama", "s": [0.5, 1.5]}, {})
    with qg.open(tmp_path / "m.gguf") as f:
        with pytest.raises(TypeError):
            f.metadata["s"] = 1
        with pytest.raises(ValueError):
            f.metadata["s"][0] = 2
        assert f.metadata.count_of("s") == 2 and f.metadata.offset_of("general.architecture") == 24
    with qg.open(p) as f, pytest.raises(ValueError):
        f.tensors["a"].data[0] = 1


def test_data_tensors_smollm2(tmp_path):
    _smollm2()
    from quantlab.data import _gguf_tensors

    ts = _gguf_tensors(quantlab.data.path("smollm2"))
    assert len(ts) == 272 and ts.describe["token_embd.weight"] == ("Q8_0", (49152, 576))
    assert ts["blk.0.attn_norm.weight"].shape == (576,)
    raw = ts.raw["blk.0.attn_q.weight"]  # the stored Q4_1 blocks, zero-copy
    assert raw.format.name == "Q4_1" and raw.data.shape == (576, 576 // 32 * 20) and raw.data.dtype == np.uint8
    w = ts["blk.0.attn_q.weight"]
    assert w.shape == (576, 576) and w.dtype == np.float32 and np.isfinite(w).all()
    with qg.open(quantlab.data.path("smollm2")) as f:  # reference: gguf-py's dequantizer
        t = f.tensors["blk.0.attn_q.weight"]
        ref = gguf.quants.dequantize(np.array(t.data), t.format.gguf_type()).reshape(576, 576)
    assert np.array_equal(w.view(np.uint32), ref.astype(np.float32).view(np.uint32))


# --------------------------------------------------------------------------- malformed input


def test_wrong_magic_and_empty_file(tmp_path):
    _raises(tmp_path, b"GGML" + bytes(40), "GGUF")
    _raises(tmp_path, b"tjgg" + bytes(40), "GGJT")
    p = _write_bytes(tmp_path, b"")
    with pytest.raises(GGUFError, match="empty"):
        qg.open(p)
    with pytest.raises(GGUFError, match="cannot open"):
        qg.open(tmp_path / "missing.gguf")


@pytest.mark.parametrize("version", [0, 4, 7, 0x10000])
def test_unknown_version(tmp_path, version):
    b = bytearray(f32_tensor_file())
    b[4:8] = struct.pack("<I", version)
    _raises(tmp_path, bytes(b), "version")


def _boundaries(p):
    """Byte offsets where a structure starts or ends in a valid file (as the reader saw it)."""
    with qg.open(p) as f:
        cuts = {0, 4, 8, 16, 24, f.info_end, f.data_offset}
        for k in f.metadata:
            cuts.add(f.metadata.offset_of(k))
        for t in f.tensors.values():
            cuts.update({t.info_offset, t.file_offset, t.file_offset + t.nbytes - 1})
        end = max(t.file_offset + t.nbytes for t in f.tensors.values())
    return sorted(c for c in cuts if c < end), end


def test_truncation_at_every_boundary_and_random_offsets(tmp_path):
    src = tmp_path / "ok.gguf"
    qg.write(
        src,
        {
            "general.architecture": "llama",
            "toks": ["a", "bb", "ccc"] * 20,
            "scores": np.arange(60, dtype=np.float32),
            "n": 3,
        },
        {"a": np.ones((2, 32), np.float32), "b": np.arange(64, dtype=np.float16)},
    )
    whole = src.read_bytes()
    cuts, end = _boundaries(src)
    rng = np.random.default_rng(4)
    cuts = sorted(set(cuts) | set(int(c) for c in rng.integers(0, end, 40)))
    for c in cuts:
        for d in (c, c + 1, c + 3):
            if d >= end:
                continue
            _raises(tmp_path, whole[:d])
    with qg.open(_write_bytes(tmp_path, whole[:end], "short_padding.gguf")) as f:  # only trailing padding cut
        assert np.array_equal(f.tensors["b"].numpy(), np.arange(64, dtype=np.float16))


def test_absurd_counts_allocate_nothing_big(tmp_path):
    base = dict(kvs=[kv_str("general.architecture", "llama")])
    cases = [
        (build(n_tensors=2**60, **base), "tensors"),
        (build(n_kv=2**60, **base), "metadata pairs"),
        (build([gstr("k") + struct.pack("<I", 8) + struct.pack("<Q", 2**62) + b"abc"]), "length"),
        (build([gstr("k" * 3) + struct.pack("<I", 9) + struct.pack("<I", 4) + struct.pack("<Q", 2**60)]), "claims"),
        (build([gstr("k") + struct.pack("<I", 9) + struct.pack("<I", 8) + struct.pack("<Q", 2**59)]), "strings"),
        (build([gstr("k") + struct.pack("<I", 9) + struct.pack("<I", 9) + struct.pack("<Q", 2**58)]), "inner arrays"),
        (
            build(
                [
                    gstr("k")
                    + struct.pack("<I", 9)
                    + struct.pack("<I", 8)
                    + struct.pack("<Q", 3)
                    + gstr("ok")
                    + struct.pack("<Q", 10**12)
                    + b"xx"
                ]
            ),
            "element 1",
        ),
        (struct.pack("<4sIQQ", b"GGUF", 3, 0, 1) + struct.pack("<Q", 10**15) + bytes(64), "length"),
    ]
    for b, needle in cases:
        tracemalloc.start()
        try:
            _raises(tmp_path, b, needle)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1 << 20, (needle, peak)


def test_unknown_value_types(tmp_path):
    _raises(tmp_path, build([kv("k", 13, b"\x00" * 8)]), "unknown value type 13")
    _raises(tmp_path, build([kv("k", 9, struct.pack("<IQ", 99, 1) + b"\x00" * 8)]), "element type 99")
    _raises(tmp_path, build([kv("k", 7, b"\x02")]), "bool")
    _raises(tmp_path, build([kv("k", 9, struct.pack("<IQ", 7, 2) + b"\x01\x05")]), "bool")
    _raises(tmp_path, build([kv("", 4, b"\x00" * 4)]), "empty key")
    nested = kv("k", 9, struct.pack("<IQ", 9, 1) * 40)
    _raises(tmp_path, build([nested]), "nested")


@pytest.mark.parametrize(
    "tid,needle",
    [
        (43, "unknown ggml type id 43"),
        (1000, "unknown ggml type id"),
        (4, "Q4_2"),
        (31, "Q4_0_4_4"),
        (37, "IQ4_NL_4_8"),
    ],
)
def test_unknown_or_removed_type_ids(tmp_path, tid, needle):
    _raises(tmp_path, build([], [tinfo("w", [32], tid, 0)], bytes(64)), needle)


def test_bad_tensor_infos(tmp_path):
    d = bytes(256)
    _raises(tmp_path, build([], [tinfo("w", [2**32, 2**32], 0, 0)], d), "multiply")
    _raises(tmp_path, build([], [tinfo("w", [2**63], 0, 0)], d), "negative")
    _raises(tmp_path, build([], [tinfo("w", [1, 1, 1, 1, 1], 0, 0)], d), "dimensions")
    _raises(tmp_path, build([], [tinfo("w", [33], 2, 0)], d), "block")
    _raises(tmp_path, build([], [tinfo("w", [8], 0, 4096)], d), "past the end")
    _raises(tmp_path, build([], [tinfo("w", [8], 0, 2**64 - 32)], d), "past the end")
    _raises(tmp_path, build([], [tinfo("w", [8], 0, 4)], d), "misaligned")
    _raises(tmp_path, build([], [tinfo("w", [16], 0, 0), tinfo("v", [8], 0, 32)], d), "overlap")
    _raises(
        tmp_path,
        build([], [tinfo("big", [48], 0, 0), tinfo("empty", [0], 0, 64), tinfo("v", [8], 0, 128)], d),
        "'big' and 'v' overlap",
    )
    _raises(tmp_path, build([], [tinfo("w", [8], 0, 0), tinfo("w", [8], 0, 32)], d), "duplicate tensor name")
    _raises(tmp_path, build([kv_u32("a", 1), kv_u32("a", 2)]), "duplicate metadata key")
    _raises(tmp_path, build([kv("general.alignment", 5, struct.pack("<i", 32))]), "uint32")
    _raises(tmp_path, build([kv_u32("general.alignment", 48)]), "power of two")


def test_non_canonical_but_valid_layout_is_read(tmp_path):
    """Gaps between tensors and reversed order are valid GGUF (llama.cpp's loader is stricter: reported)."""
    a = np.arange(8, dtype="<f4").tobytes()
    b = build([], [tinfo("x", [8], 0, 64), tinfo("y", [8], 0, 0)], a + bytes(32) + bytes(32) + a[::-1])
    with qg.open(_write_bytes(tmp_path, b)) as f:
        assert not f.canonical_layout
        assert f.tensors["y"].numpy().tolist() == list(range(8))


# --------------------------------------------------------------------------- quantlab inspect


def test_inspect_cli_text_and_json(tmp_path, capsys):
    from quantlab.cli import main

    p = tmp_path / "c.gguf"
    qg.write(
        p,
        {
            "general.architecture": "llama",
            "tokenizer.ggml.tokens": [f"tok{i}" for i in range(500)],
            "tokenizer.ggml.scores": np.zeros(500, np.float32),
            "general.name": "x" * 200,
        },
        {"token_embd.weight": np.ones((4, 64), np.float32), "blk.0.attn_q.weight": np.ones((64, 64), np.float16)},
    )
    assert main(["inspect", str(p)]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "token_embd.weight" in out and "500" in out and "F16" in out and "tok0" in out
    assert main(["inspect", "--json", str(p)]) == 0
    js = json.loads(capsys.readouterr().out)
    assert js["n_params"] == 4 * 64 + 64 * 64
    assert js["tensor_bytes"] == 4 * 64 * 4 + 64 * 64 * 2
    assert js["bpw"] == pytest.approx(8 * js["tensor_bytes"] / js["n_params"])
    assert {f["format"] for f in js["formats"]} == {"F32", "F16"}
    assert js["metadata"]["tokenizer.ggml.tokens"]["count"] == 500
    assert [t["name"] for t in js["tensors"]] == ["token_embd.weight", "blk.0.attn_q.weight"]
    bad = _write_bytes(tmp_path, b"nope" * 10, "bad.gguf")
    assert main(["inspect", str(bad)]) == 1
    assert "GGUF" in capsys.readouterr().err


def test_inspect_cli_on_smollm2(capsys):
    from quantlab.cli import main

    p = _smollm2()
    assert main(["inspect", str(p)]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "Q4_1" in out and "Q8_0" in out and "49152" in out
    with qg.open(p) as f:
        n = f.n_params
    assert f"{n:,}" in out


# --------------------------------------------------------------------------- llama.cpp's own gguf.cpp


def test_llama_cpp_writer_and_ours_write_the_same_bytes(tmp_path):
    """The same metadata and tensors through gguf.cpp's writer and through quantlab's (trim_dims=True,
    llama.cpp's n_dims convention): identical files. Then llama.cpp's reader accepts quantlab's files."""
    g = GgufC()
    C, lib = g.C, g.lib
    rng = np.random.default_rng(7)
    gctx = lib.gguf_init_empty()
    md = {}
    for k, v, t in ALL_VALUES:
        if isinstance(t, ArrayOf):
            if t.elem == ValueType.STRING:
                arr = (C.c_char_p * len(v))(*[s.encode() for s in v])
                lib.gguf_set_arr_str(gctx, k.encode(), arr, len(v))
            else:
                a = np.ascontiguousarray(np.asarray(v).astype("<" + t.elem.dtype_code))
                lib.gguf_set_arr_data(gctx, k.encode(), int(t.elem), a.ctypes.data, a.size)
        else:
            name = {
                ValueType.UINT8: "u8",
                ValueType.INT8: "i8",
                ValueType.UINT16: "u16",
                ValueType.INT16: "i16",
                ValueType.UINT32: "u32",
                ValueType.INT32: "i32",
                ValueType.FLOAT32: "f32",
                ValueType.UINT64: "u64",
                ValueType.INT64: "i64",
                ValueType.FLOAT64: "f64",
                ValueType.BOOL: "bool",
                ValueType.STRING: "str",
            }[t]
            getattr(lib, f"gguf_set_val_{name}")(gctx, k.encode(), v.encode() if isinstance(v, str) else v)
        md[k] = Value(v, t)
    fmts = [f for f in all_formats() if not f.activation_only]
    mctx = lib.ggml_init(g.GgmlParams(64 << 20, None, False))
    ours = {}
    try:
        for f in fmts:
            rows = 1 if f.id % 3 == 0 else 3  # some 1-row tensors: n_dims 1 in llama.cpp
            raw = rng.integers(0, 256, size=(rows, 2 * f.type_size), dtype=np.uint8)
            t = lib.ggml_new_tensor_2d(mctx, f.id, 2 * f.block_size, rows)
            lib.ggml_set_name(t, f"w.{f.name}".encode())
            C.memmove(lib.ggml_get_data(t), raw.ctypes.data, raw.nbytes)
            lib.gguf_add_tensor(gctx, t)
            ours[f"w.{f.name}"] = qg.TensorSource(raw, format=f.name, shape=(rows, 2 * f.block_size))
        assert lib.gguf_write_to_file(gctx, str(tmp_path / "c.gguf").encode(), False)
    finally:
        lib.gguf_free(gctx)
        lib.ggml_free(mctx)
    qg.write(tmp_path / "q.gguf", md, ours, trim_dims=True)
    assert filecmp.cmp(tmp_path / "c.gguf", tmp_path / "q.gguf", shallow=False)
    seen = g.read(tmp_path / "q.gguf")
    with qg.open(tmp_path / "q.gguf") as f:
        assert seen == (len(f.metadata), len(f.tensors), f.data_offset, [t.offset for t in f.tensors.values()])
    # files written by quantlab without trim_dims (gguf-py's n_dims) are accepted by llama.cpp too
    qg.write(tmp_path / "q2.gguf", md, ours)
    assert g.read(tmp_path / "q2.gguf")[1] == len(ours)
    # and a malformed one is refused by both
    b = bytearray((tmp_path / "q.gguf").read_bytes())
    b[4] = 9
    (tmp_path / "bad.gguf").write_bytes(bytes(b))
    assert g.read(tmp_path / "bad.gguf") is None
    with pytest.raises(GGUFError):
        qg.open(tmp_path / "bad.gguf")


def test_metadata_dict_replace_moves_the_key_like_llama_cpp(tmp_path):
    qg.write(
        tmp_path / "a.gguf",
        {"general.architecture": "llama", "general.file_type": Value(1, ValueType.UINT32), "x": 1.5},
        {},
    )
    with qg.open(tmp_path / "a.gguf") as f:
        md = f.metadata.copy()
    md.replace("general.file_type", 15)
    md.replace("general.quantization_version", 2, ValueType.UINT32)
    assert list(md) == ["general.architecture", "x", "general.file_type", "general.quantization_version"]
    assert md.type_of("general.file_type") == ValueType.UINT32
    md["x"] = "now a string"  # a different kind of value: the old FLOAT32 type is dropped
    assert md.type_of("x") is None
    qg.write(tmp_path / "b.gguf", md, {})
    with qg.open(tmp_path / "b.gguf") as f:
        assert f.metadata.type_of("x") == ValueType.STRING and f.metadata["general.file_type"] == 15


def test_metadata_is_copied_as_its_bytes_never_decoded(tmp_path):
    from quantlab.gguf.writer import encode_value

    src = _smollm2()
    with qg.open(src) as f:
        md = f.metadata
        qg.write(tmp_path / "copy.gguf", md, f.tensors)
        # the copy took the values' bytes: the big arrays were never decoded
        lazy = [k for k in md if type(md._entries[k][0]).__name__ == "_Lazy"]
        assert {"tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type"} <= set(lazy)
        for k in md:  # and those bytes are what encoding the value gives
            e = md.encoded(k)
            assert e.type == md.type_of(k) and e.raw == encode_value(md[k], md.type_of(k)), k
    assert filecmp.cmp(src, tmp_path / "copy.gguf", shallow=False)
    # a version 1 file (32-bit lengths) is re-encoded as version 3
    b1 = build(
        [kv_str("general.architecture", "llama", v1=True), kv_str_array("toks", ["x", "yz"], v1=True)],
        [],
        b"",
        version=1,
    )
    with qg.open(_write_bytes(tmp_path, b1, "v1.gguf")) as f:
        assert f.metadata.encoded("toks").raw == struct.pack("<IQ", ValueType.STRING, 2) + gstr("x") + gstr("yz")
        qg.write(tmp_path / "v3.gguf", f.metadata, {})
    with qg.open(tmp_path / "v3.gguf") as g:
        assert g.version == 3 and g.metadata["toks"] == ("x", "yz")
    # bytes of one type cannot be written as another
    w = qg.GGUFWriter(tmp_path / "bad.gguf")
    with pytest.raises(GGUFError, match="not uint32"):
        w.add_key("k", qg.Encoded(struct.pack("<i", -1), ValueType.INT32), ValueType.UINT32)
    with pytest.raises(GGUFError, match="not uint32"):
        encode_value(qg.Encoded(b"\x01", ValueType.BOOL), ValueType.UINT32)


def test_partial_writes_are_continued_and_write_errors_are_named(tmp_path, monkeypatch):
    import errno

    import quantlab.gguf.writer as gw

    rng = np.random.default_rng(5)
    tensors = {"a": rng.standard_normal((3, 64)).astype(np.float32), "b": np.arange(40, dtype=np.float32)}
    md = {"general.architecture": "llama", "toks": ["x", "yz"] * 50}
    qg.write(tmp_path / "whole.gguf", md, tensors)
    real = os.writev

    def dribble(fd, bufs):  # the kernel may write less than asked: 7 bytes at a time
        return real(fd, [bytes(memoryview(bufs[0])[:7])])

    monkeypatch.setattr(gw.os, "writev", dribble)
    w = qg.GGUFWriter(tmp_path / "bits.gguf", md, fsync=False)
    for k, v in tensors.items():
        w.add_tensor(k, v)
    w.write_tensors()
    w.close()
    assert (tmp_path / "bits.gguf").read_bytes() == (tmp_path / "whole.gguf").read_bytes()

    def full(fd, bufs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(gw.os, "writev", full)
    with pytest.raises(GGUFError, match="No space left"):
        qg.write(tmp_path / "none.gguf", md, tensors)
    assert sorted(os.listdir(tmp_path)) == ["bits.gguf", "whole.gguf"]


# --------------------------------------------------------------------------- hostile but well-formed files

_BUDGET_CHILD = r"""
import json, os, sys
from tests.budget import MB, cpu, within
import quantlab.gguf as qg
from quantlab.errors import GGUFError
out = []
for p, decode in json.loads(sys.argv[1]):
    size = os.path.getsize(p)
    t = cpu()
    try:
        with within(2 * size + 64 * MB):
            with qg.open(p) as f:
                keys = [(k, f.metadata.type_of(k), f.metadata.count_of(k)) for k in f.metadata]
                tensors = [(t.name, t.nbytes, t.data.nbytes) for t in f.tensors.values()]
                for k in decode:
                    f.metadata[k]
        res = "ok %d keys %d tensors" % (len(keys), len(tensors))
    except GGUFError as e:
        res = "GGUFError: " + str(e)
    except MemoryError:
        res = "MemoryError"
    out.append([p, res, cpu() - t])
print(json.dumps(out))
"""


def _in_budget_child(files):
    """Open each (path, keys to decode) in a child with RLIMIT_AS = its size now + 2 x file + 64 MB:
    [(path, outcome, CPU seconds)]."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.run(
        [sys.executable, "-c", _BUDGET_CHILD, json.dumps([[str(a), b] for a, b in files])],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=root,
        env={**os.environ, "PYTHONPATH": root},
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.splitlines()[-1])


def _zero_size_tensors(n) -> bytes:
    rec = np.zeros(
        n, dtype=[("len", "<u8"), ("name", "S8"), ("nd", "<u4"), ("ne", "<u8"), ("type", "<u4"), ("off", "<u8")]
    )
    rec["len"], rec["nd"] = 8, 1
    rec["name"] = np.char.add(b"t", np.char.zfill(np.arange(n).astype("S7"), 7))
    body = b"GGUF" + struct.pack("<IQQ", 3, n, 0) + rec.tobytes()
    return body + bytes((-len(body)) % 32)


def test_hostile_files_fit_the_budget(tmp_path):
    """issue 18 #5: an 18 MB file of 1.6M empty inner arrays took 348-742 MiB and 7-16 s, 1.6M zero-size
    tensors (60 MB) ~1 GB and 38 s. The reader's promise — at most the file's size + 64 MB, well under
    a second — is now checked in a child under RLIMIT_AS: refused by the record limits, or read in budget
    right at them, with a CPU budget of 2 s per file (measured: under 0.4 s at the limit)."""
    from quantlab.gguf.reader import MAX_RECORDS, MAX_TENSORS  # (MAX_RECORDS: from gguf.values)

    empty_inner = struct.pack("<IQ", ValueType.UINT32, 0)
    files = {
        "nested_1.6M": (build([kv("x", 9, struct.pack("<IQ", 9, 1_600_000) + empty_inner * 1_600_000)]), []),
        "zero_size_tensors_1.6M": (_zero_size_tensors(1_600_000), []),
        "kv_pairs_1.6M": (
            b"GGUF" + struct.pack("<IQQ", 3, 0, 1_600_000) + (gstr("k") + struct.pack("<IB", 0, 1)) * 1_600_000,
            [],
        ),
        "tensors_at_limit": (_zero_size_tensors(MAX_TENSORS), []),
        "kv_pairs_at_limit": (build([gstr(f"k{i}") + struct.pack("<IB", 0, 1) for i in range(MAX_RECORDS)]), []),
        "nested_at_limit": (
            build([kv("x", 9, struct.pack("<IQ", 9, MAX_RECORDS - 1) + empty_inner * (MAX_RECORDS - 1))]),
            ["x"],
        ),
        "empty_strings_2M": (build([kv("s", 9, struct.pack("<IQ", 8, 2_000_000) + bytes(8 * 2_000_000))]), ["s"]),
        "strings_1M": (
            build([kv("s", 9, struct.pack("<IQ", 8, 1_000_000) + (struct.pack("<Q", 7) + b"abcdefg") * 1_000_000)]),
            [],
        ),
    }
    paths = []
    for name, (b, decode) in files.items():
        paths.append((_write_bytes(tmp_path, b, name + ".gguf"), decode))
    got = {os.path.basename(p)[:-5]: (res, t) for p, res, t in _in_budget_child(paths)}
    want = {
        "nested_1.6M": "more than 65,536 metadata records",
        "zero_size_tensors_1.6M": "at most 65,536",
        "kv_pairs_1.6M": "at most 65,536",
        "tensors_at_limit": "ok 0 keys 65536 tensors",
        "kv_pairs_at_limit": "ok 65536 keys",
        "nested_at_limit": "ok 1 keys",
        "empty_strings_2M": "ok 1 keys",
        "strings_1M": "ok 1 keys",
    }
    for name, needle in want.items():
        res, t = got[name]
        print(f"{name}: {res[:80]} ({t:.2f} s CPU)")
        assert needle in res, (name, res)
        assert t < 2.0, f"{name}: {t:.2f} s of CPU"


def test_writer_takes_any_tensor_like_source_and_no_module_cycle(tmp_path):
    """issue 16 room 3: the writer accepts any object with a format, a shape and its data (it used to
    check for the reader's class), and reader.py / writer.py import values.py, not each other."""
    import ast
    import pathlib

    class Mine:  # not quantlab's: format + shape + raw ggml bytes
        def __init__(self, data, format, shape):
            self.data, self.format, self.shape = data, format, shape

    x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32)
    q = quantlab.quantize(x, "Q8_0")
    qg.write(
        tmp_path / "a.gguf",
        {"general.architecture": "llama"},
        {"q": Mine(q, "Q8_0", (2, 32)), "f": Mine(x, "F32", (2, 32)), "r": Mine(q, "Q8_0", (2, 32))},
    )
    with qg.open(tmp_path / "a.gguf") as f:
        assert np.array_equal(f.tensors["q"].data, q) and np.array_equal(f.tensors["f"].numpy(), x)
        # a tensor read by quantlab goes through the same duck typing (little_endian_data), and converts
        w = qg.GGUFWriter(tmp_path / "b.gguf", f.metadata)
        w.add_tensor("q", f.tensors["q"])
        w.add_tensor("f16", f.tensors["f"], format="F16")
        w.add_tensor("q4", Mine(q, "Q8_0", (2, 32)), format="Q4_0")  # raw bytes of another format
        w.write_tensors()
        w.close()
    with qg.open(tmp_path / "b.gguf") as g:
        assert np.array_equal(g.tensors["q"].data, q)
        assert np.array_equal(g.tensors["f16"].numpy(), x.astype(np.float16))
        assert np.array_equal(g.tensors["q4"].data, quantlab.quantize(quantlab.dequantize(q, "Q8_0"), "Q4_0"))
    pkg = pathlib.Path(qg.__file__).parent
    for mod, other in (("reader", "writer"), ("writer", "reader")):
        tree = ast.parse((pkg / f"{mod}.py").read_text())
        names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert other not in names and "values" in names, (mod, names)


def test_release_drops_a_tensors_pages_and_keeps_its_bytes():
    """GGUFFile.release (madvise MADV_DONTNEED, what quantize_model calls after each tensor): the pages of
    its largest tensor (16 MB) leave the process's resident set, and reading it again gives the same bytes."""
    if not os.path.exists("/proc/self/smaps_rollup"):
        pytest.skip("needs Linux /proc")
    src = _smollm2()

    def rss_file_kb():
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("RssFile:"))

    with qg.open(src) as f:
        t = max(f.tensors.values(), key=lambda t: t.nbytes)
        before = rss_file_kb()
        want = hashlib_sha(t.data)  # touches every page of the tensor
        touched = rss_file_kb()
        f.release(t)
        dropped = rss_file_kb()
        assert hashlib_sha(t.data) == want  # read again from the page cache: same bytes
        f.release(t.name)  # by name too
    f.release(t)  # closed file: nothing to do, no error
    assert touched - before > t.nbytes // 1024 // 2  # the read mapped most of the tensor's pages
    assert touched - dropped > t.nbytes // 1024 // 2  # release unmapped them


def hashlib_sha(a) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
