"""Widget logic of the course's part 2 (notebooks 05 and 07), without a kernel or a browser."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # in-process only (never MPLBACKEND: it would leak into kernels)

import numpy as np
import pytest

import quantlab
import quantlab.data
from quantlab.widgets import gguf_hex

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


# -------------------------------------------------------------------------------------- model_ladder

from quantlab.widgets import model_ladder as ml  # noqa: E402


def test_quick_default(monkeypatch):
    monkeypatch.delenv("QUANTLAB_QUICK", raising=False)
    monkeypatch.delenv("CI", raising=False)
    assert ml.quick_default() is False
    monkeypatch.setenv("QUANTLAB_QUICK", "1")
    assert ml.quick_default() is True
    monkeypatch.setenv("QUANTLAB_QUICK", "0")
    monkeypatch.setenv("CI", "true")
    assert ml.quick_default() is True


def test_fit_table_follows_the_registry():
    rows = {r["format"]: r for r in ml.fit_table()}
    for name, r in rows.items():
        f = quantlab.format(name)
        assert r["fits 576"] == ("yes" if 576 % f.block_size == 0 else "no")
        assert r["fits 1536"] == ("yes" if 1536 % f.block_size == 0 else "no")
    assert rows["Q4_K"]["stored as (576)"] == "Q5_0" and rows["Q6_K"]["stored as (576)"] == "Q8_0"
    assert rows["IQ4_XS"]["stored as (576)"] == "IQ4_NL" and rows["Q8_0"]["stored as (576)"] == "Q8_0"


@pytest.fixture(scope="module")
def smol():
    return quantlab.data.tensors("smollm2")


def test_tensor_error_uses_the_fallback(smol):
    x = np.ascontiguousarray(smol["blk.0.attn_q.weight"][:8])
    r = ml.tensor_error(x, "Q4_K", impl="reference")
    assert r["used"] == "Q5_0" and r["fallback"] and r["bpw"] == quantlab.format("Q5_0").bpw
    y = quantlab.dequantize(quantlab.quantize(x, "Q5_0", impl="reference"), "Q5_0", impl="reference")
    assert np.array_equal(r["y"], y)
    assert r["rel_error"] == pytest.approx(float(np.linalg.norm(y.astype(np.float64) - x) / np.linalg.norm(x)))
    r2 = ml.tensor_error(np.ascontiguousarray(smol["blk.0.ffn_down.weight"][:8]), "Q4_K", impl="reference")
    assert r2["used"] == "Q4_K" and not r2["fallback"]


def test_error_grid_and_heatmap(smol):
    g = ml.error_grid(smol, 30, formats=("Q8_0", "Q4_0", "Q2_K"), layers=[0, 29], rows=4, impl="reference")
    assert g["layers"] == [0, 29] and g["weights"] == 2 * 4 * (576 * 6 + 1536)
    for f in g["formats"]:
        assert g["rel"][f].shape == (2, 7) and np.all(np.isfinite(g["rel"][f]))
    assert np.all(g["rel"]["Q8_0"] < g["rel"]["Q4_0"])
    assert g["used"]["Q2_K"]["ffn_down"] == "Q2_K" and g["used"]["Q2_K"]["attn_q"] == "Q4_0"
    # where Q2_K falls back to Q4_0 the errors are Q4_0's, to the bit
    assert np.array_equal(g["rel"]["Q2_K"][:, :6], g["rel"]["Q4_0"][:, :6])
    t = {r["format"]: r for r in ml.grid_table(g)}
    assert t["Q8_0"]["all"] == pytest.approx(float(np.mean(g["rel"]["Q8_0"])))
    fig, _ = ml.new_figure(8, 3)
    ml.plot_heatmap(fig, g)
    titles = [a.get_title() for a in fig.axes if a.get_title()]
    assert titles[:3] == ["Q8_0", "Q4_0", "Q2_K (* = Q4_0)"]


def test_model_ladder_app(smol):
    app = ml.app(smol, 30, rows=8, impl="reference", fmt="Q4_K")
    assert app.result["used"] == "Q5_0" and app.result["shape"] == (8, 576)
    s0 = app.summary.value
    app.kind.value = "ffn_down"
    assert app.result["used"] == "Q4_K" and not app.result["fallback"] and app.summary.value != s0
    e4 = app.result["rel_error"]
    app.fmt.value = "Q8_0"
    assert app.result["rel_error"] < e4
    app.layer.value = 7
    assert app.result["name"] == "blk.7.ffn_down.weight"
    assert "blk.7.ffn_down.weight in Q8_0" in app.ax.get_title()
    assert sum(p.get_height() for p in app.ax.patches) == 8 * 1536  # the histogram counts every weight


def test_embedding_study_small():
    from quantlab.model import bert

    enc = bert.load()
    st = ml.embedding_study(enc, ml.SENTENCES[:3], formats=("Q8_0", "Q4_0"))
    rows = {r["format"]: r for r in st["rows"]}
    assert rows["Q8_0"]["cos mean"] > rows["Q4_0"]["cos mean"] and rows["Q8_0"]["stored as"] == "Q8_0"
    assert st["similarity"].shape == (3, 3)


def test_ladder_one_file_type_cleans_up():
    """One whole-model quantization (Q8_0) evaluated on a short context: the row is filled in, the kept model
    still generates after its temporary file is gone, and no temporary directory is left behind."""
    import os

    r = ml.ladder(quantlab.data.path("smollm2"), ftypes=("Q8_0",), n_ctx=16, n_chunks=1, keep=("Q8_0",))
    base, q8 = r["rows"]
    assert base["ftype"] == "Q4_1 (shipped)" and base["kld"] == 0.0
    assert q8["ftype"] == "Q8_0" and q8["kld"] > 0 and 0 <= q8["top1"] <= 1 and q8["bpw"] > 8.0
    assert r["n_scored"] == 7 and not os.path.exists(r["outdir"])
    assert isinstance(r["models"]["Q8_0"].generate("Hello", n_predict=2), str)
