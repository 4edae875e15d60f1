"""quantlab.gguf.anatomy: the field list covers every byte once, agrees with quantlab's reader and with gguf-py,
and decodes what the bytes say."""

from __future__ import annotations

import struct

import numpy as np
import pytest

import quantlab
import quantlab.data
from quantlab.errors import GGUFError
from quantlab.gguf.anatomy import Anatomy, compare_readers, summarize_value

gguf_py = pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    p = tmp_path_factory.mktemp("anat") / "tiny.gguf"
    md = {
        "general.architecture": "tiny",
        "tiny.answer": 42,
        "tiny.pi": 3.14159,
        "tiny.ok": True,
        "tiny.words": ["quant", "lab", "gguf", "bytes", "more"],
        "tiny.primes": np.array([2, 3, 5, 7], np.int32),
        "tiny.nested": [[1, 2], [3]],
    }
    w = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    quantlab.gguf.write(
        p, md, {"bias": np.arange(5, dtype=np.float32), "w": quantlab.gguf.TensorSource(w, format="Q8_0")}
    )
    return p


@pytest.fixture(scope="module")
def smol():
    return Anatomy(quantlab.data.path("smollm2"))


def _contiguous(a: Anatomy):
    pos = 0
    for x in a.fields:
        assert x.start == pos, (x, pos)
        assert x.size > 0
        pos = x.end
    assert pos == a.file.file_size


def test_fields_cover_the_file_once(tiny, smol):
    for a in (Anatomy(tiny), smol):
        _contiguous(a)


def test_tiny_fields_decode_the_bytes(tiny):
    a = Anatomy(tiny)
    raw = tiny.read_bytes()
    by = {(x.record, x.name): x for x in a.fields}
    assert raw[:4] == b"GGUF" and by[("header", "magic")].size == 4
    assert by[("header", "version")].value == "u32 = 3"
    ans = by[("kv 1 tiny.answer", "value")]
    assert struct.unpack_from("<I", raw, ans.start)[0] == 42 and ans.value == "uint32 = 42"
    words = [x for x in a.fields if x.record == "kv 4 tiny.words"]
    assert [x.name for x in words][-1] == "elements [3..4]"  # items=3 elements shown, then the rest
    assert raw[by[("kv 4 tiny.words", "[1]")].start : by[("kv 4 tiny.words", "[1]")].end] == b"lab"
    nested = [x for x in a.fields if x.record == "kv 6 tiny.nested"]
    assert nested[-1].name == "all 2 elements"
    pad = [x for x in a.fields if x.section == "padding"]
    assert pad[0].name == "alignment padding" and pad[0].end == a.file.data_offset
    assert all(raw[x.start : x.end] == bytes(x.size) for x in pad)  # padding is zeros
    assert a.file.data_offset % 32 == 0 and pad[0].size > 0
    b0 = by[("data bias", "value 1")]
    assert b0.value == "F32 = 1.0" and b0.start == a.file.tensors["bias"].file_offset + 4
    secs = {s["section"]: s for s in a.sections()}
    assert sum(s["bytes"] for s in secs.values()) == a.file.file_size
    assert secs["padding"]["bytes"] == pad[0].size


def test_offsets_agree_with_gguf_py(smol):
    """gguf-py's own parser: field offsets and the tensor infos' offsets are where our records start."""
    # gguf-py on the whole SmolLM2 file takes a few seconds: only its offsets are compared
    r = gguf_py.GGUFReader(str(smol.path))
    rec_start = {}
    for x in smol.fields:
        rec_start.setdefault(x.record, x.start)
    for i, (k, fld) in enumerate((k, v) for k, v in r.fields.items() if not k.startswith("GGUF.")):
        assert rec_start[f"kv {i} {k}"] == fld.offset
    for j, t in enumerate(r.tensors[:20]):
        assert rec_start[f"tensor {j} {t.name}"] == t.field.offset
        assert rec_start[f"data {t.name}"] == t.data_offset


def test_compare_readers_tiny(tiny):
    rows = compare_readers(tiny)
    assert rows and all(r["equal"] for r in rows), [r for r in rows if not r["equal"]]
    whats = {r["what"] for r in rows}
    assert {"tiny.pi: value", "w: data bytes", "tiny.primes: type"} <= whats


def test_compare_readers_sees_a_difference(tiny, tmp_path, monkeypatch):
    """gguf-py shown a file with one tensor byte flipped: the bytes row must say so (not vacuous)."""
    b = bytearray(tiny.read_bytes())
    with quantlab.gguf.open(tiny) as f:
        at = f.tensors["w"].file_offset + 5
    b[at] ^= 0xFF
    p = tmp_path / "flipped.gguf"
    p.write_bytes(bytes(b))
    real = gguf_py.GGUFReader
    monkeypatch.setattr(gguf_py, "GGUFReader", lambda path, *a, **k: real(str(p)))
    rows = {r["what"]: r for r in compare_readers(tiny)}
    assert rows["w: data bytes"]["equal"] is False and "different" in rows["w: data bytes"]["gguf_py"]
    assert rows["bias: data bytes"]["equal"] is True and rows["tiny.pi: value"]["equal"] is True


def test_smollm2_tables(smol):
    f = smol.file
    bf = {r["format"]: r for r in smol.bytes_by_format()}
    assert sum(r["bytes"] for r in bf.values()) == f.tensor_bytes
    assert bf["Q4_1"]["bpw"] == 5.0 and bf["Q8_0"]["bpw"] == 8.5 and bf["F32"]["bpw"] == 32.0
    eff = smol.effective_bpw()
    assert eff["bpw_tensors"] < eff["bpw_file"]
    md = smol.metadata_table()
    assert len(md) == len(f.metadata) and md[0]["offset"] == 24
    assert sum(r["bytes"] for r in md) == next(iter(f.tensors.values())).info_offset - 24
    tok = smol.tokenizer_summary()
    assert tok["n_tokens"] == f.metadata.count_of("tokenizer.ggml.tokens")
    assert sum(tok["token_types"].values()) == tok["n_tokens"]
    regions = smol.regions()
    for name, (start, n) in regions.items():
        assert 0 <= start < f.file_size and n > 0, name
    assert smol.field_at(0).name == "magic" and smol.field_at(f.data_offset).section == "data"
    with pytest.raises(GGUFError, match="outside"):
        smol.field_at(f.file_size)


def test_views(smol):
    t = smol.text(0, 32)
    assert t.startswith("00000000  47 47 55 46") and "tensor count" in t
    rows = smol.rows(0, 32)
    assert [r["offset"] for r in rows] == [0, 16] and rows[0]["bytes"][:4] == b"GGUF"
    names = [x.name for x in smol.fields_in(0, 32)]
    assert [names[o] for o in rows[0]["owner"][:4]] == ["magic"] * 4
    from quantlab.widgets.gguf_hex import hex_html  # the colours and HTML are the widget's

    h = hex_html(smol, 0, 32)
    assert h.count("<span style='background") == 32 and "key/value count" in h
    assert not hasattr(smol, "html")
    assert smol.read(smol.file.file_size - 4, 100) == smol.read(smol.file.file_size - 4, 4)


def test_summarize_value():
    assert summarize_value(("a", "b", "c", "d")) == "4 x items: ['a', 'b', 'c', ...]"
    assert summarize_value("x" * 100).endswith("...'")
    assert summarize_value(3) == "3"


def test_bad_file_is_a_named_error(tmp_path):
    p = tmp_path / "bad.gguf"
    p.write_bytes(b"GGML" + bytes(20))
    with pytest.raises(GGUFError, match="not a GGUF file"):
        Anatomy(p)
