"""Widget logic of the course's part 2 (notebooks 05 and 07), without a kernel or a browser."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # in-process only (never MPLBACKEND: it would leak into kernels)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import quantlab  # noqa: E402
from quantlab.widgets import gguf_hex  # noqa: E402


# ------------------------------------------------------------------------------------------ gguf_hex

@pytest.fixture(scope="module")
def hexapp():
    return gguf_hex.app()


def test_gguf_hex_regions_and_offset(hexapp):
    app = hexapp
    f = app.anatomy.file
    app.region.value = "header (magic, version, counts)"
    assert app.result["start"] == 0 and app.offset.value == 0
    assert [x.name for x in app.result["fields"]][:4] == ["magic", "version", "tensor count", "key/value count"]
    v0 = app.view.value
    name = next(k for k in app.regions if k.startswith("tensor info 0"))
    app.region.value = name
    assert app.result["start"] == f.tensors["token_embd.weight"].info_offset
    assert app.result["sections"][0] == "tensor info" and app.view.value != v0
    # typing an offset leaves the preset
    app.offset.value = f.data_offset
    assert app.region.value == gguf_hex.CUSTOM
    assert app.result["fields"][0].record == "data token_embd.weight" and "bytes" in app.header.value
    # a longer window shows more fields, and the hex view has one coloured span per byte
    app.length.value = 16
    n16 = len(app.result["fields"])
    app.offset.value = 24
    app.length.value = 256
    assert len(app.result["fields"]) > n16
    assert app.view.value.count("<span style='background") == 256


def test_gguf_hex_on_a_tiny_file(tmp_path):
    p = tmp_path / "t.gguf"
    quantlab.gguf.write(p, {"general.architecture": "t", "t.n": 7}, {"x": np.ones(40, np.float32)})
    app = gguf_hex.app(p)
    app.region.value = next(k for k in app.regions if k.startswith("end of tensor table"))
    secs = app.result["sections"]
    assert "padding" in secs and "data" in secs
    assert app.offset.value == 0 or app.result["start"] == app.offset.value
