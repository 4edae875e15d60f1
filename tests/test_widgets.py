"""The course's library pieces and widget logic, without a kernel or a browser.

Widgets work outside a kernel and traitlets runs observers synchronously, so setting ``.value`` on a control
runs the app's update at once; we assert on model state (results, HTML values, matplotlib artists).
"""

from __future__ import annotations

import io
import math
import tarfile

import matplotlib

matplotlib.use("Agg")  # in-process only (never MPLBACKEND: it would leak into kernels)

import numpy as np
import pytest

import quantlab
from quantlab import analogy, metrics, sizes
from quantlab.errors import FormatError, ShapeError
from quantlab.widgets import float_explorer as fx
from quantlab.widgets import toyquant


@pytest.fixture(scope="module")
def w():
    """A real fp32 weight matrix slice (all-MiniLM-L6-v2), 64 x 1536."""
    from quantlab.widgets._common import DEFAULT_TENSOR, real_tensor

    return real_tensor(*DEFAULT_TENSOR, rows=64)


# ------------------------------------------------------------------------------------------- metrics


def test_metrics_against_hand_computation():
    x = np.array([1.0, -2.0, 3.0, 0.5], dtype=np.float32)
    y = np.array([1.5, -2.0, 2.0, 0.5], dtype=np.float32)
    e = np.array([0.5, 0.0, -1.0, 0.0])
    assert metrics.rmse(x, y) == pytest.approx(math.sqrt((0.25 + 1.0) / 4))
    assert metrics.max_error(x, y) == 1.0
    assert metrics.relative_error(x, y) == pytest.approx(math.sqrt(1.25) / math.sqrt(1 + 4 + 9 + 0.25))
    assert metrics.sqnr_db(x, y) == pytest.approx(10 * math.log10(14.25 / 1.25))
    assert metrics.cosine(x, y) == pytest.approx(
        float(np.dot(x, y)) / (np.linalg.norm(x) * np.linalg.norm(y)), rel=1e-6
    )
    assert metrics.sqnr_db(x, x) == math.inf and metrics.rmse(x, x) == 0.0
    counts, edges = metrics.error_histogram(x, y, bins=4)
    assert counts.sum() == 4 and edges[0] == -1.0 and edges[-1] == 1.0
    assert np.allclose(e, y.astype(np.float64) - x)


def test_weighted_rmse_and_log_histogram():
    x = np.zeros((2, 3))
    y = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    assert metrics.weighted_rmse(x, y, [1.0, 0.25, 7.0]) == pytest.approx(math.sqrt((1.0 + 0.25 * 4) / 6))
    with pytest.raises(ShapeError, match="one value per column"):
        metrics.weighted_rmse(x, y, [1.0, 2.0])
    counts, edges = metrics.histogram([0.0, 1e-3, 1e-2, -1e-1, 1.0], bins=4, log=True)
    assert counts.sum() == 4 and edges[0] == pytest.approx(1e-3) and edges[-1] == pytest.approx(1.0)


def test_metrics_errors_are_named():
    with pytest.raises(ShapeError, match="shapes"):
        metrics.rmse(np.zeros(3), np.zeros(4))
    with pytest.raises(ShapeError, match="empty"):
        metrics.rmse(np.zeros(0), np.zeros(0))


def test_six_db_per_bit_on_a_real_tensor(w):
    s = [toyquant.quantize_uniform(w, b, "symmetric", 100.0, "channel")["sqnr_db"] for b in (5, 6, 7, 8)]
    slopes = np.diff(s)
    assert np.all(np.abs(slopes - metrics.DB_PER_BIT) < 0.5), slopes


# --------------------------------------------------------------------------------------------- sizes


def test_sizes_claims():
    assert sizes.model_size(175e9, "F32")["GB"] == 700.0
    assert sizes.model_size(175e9, "F16")["GB"] == 350.0
    assert sizes.bits_for_budget(175e9, 40e9) == pytest.approx(1.8286, abs=1e-4)
    assert quantlab.format("Q8_0").bpw == 8.5 and sizes.scale_overhead_bpw("Q8_0") == 0.5
    assert sizes.model_size(7e9, "Q4_0")["GB"] == 3.9375
    r = sizes.model_size(1e9, "Q4_0")
    assert r["GiB"] == r["bytes"] / 2**30


def test_q4_k_m_mix_stated_equals_recipes_and_is_about_4gb():
    t = sizes.llama_tensors(**sizes.LLAMA2_7B)
    r = sizes.file_size(t, "Q4_K_M", sizes.LLAMA2_7B)
    assert sum(math.prod(s) for s in t.values()) == 6_738_415_616  # Llama-2-7B's parameter count
    assert 4.8 < r["bpw"] < 4.9 and 4.0 < r["GB"] < 4.2
    stated = sizes.stated_mix(t, "Q4_K_M")
    # 16 of 32 layers get Q6_K attn_v and ffn_down (use_more_bits), plus the output matrix
    assert sum(1 for k, v in stated.items() if v == "Q6_K") == 2 * 16 + 1
    if r["source"] == "quantlab.recipes":
        assert stated == r["mix"]


def test_sizes_bad_input():
    with pytest.raises(ShapeError):
        sizes.model_size(-1, "Q4_0")
    with pytest.raises(ShapeError):
        sizes.model_size("lots", "Q4_0")
    with pytest.raises(FormatError):
        sizes.model_size(1e9, "Q4_9")
    with pytest.raises(FormatError):
        sizes.model_size(1e9, 4)  # Q4_2: removed type id
    with pytest.raises(FormatError):
        sizes.stated_mix({"a.weight": (4, 4)}, "IQ9_Z")


def test_size_calculator_app():
    from quantlab.widgets import size_calculator

    app = size_calculator.app()
    app.preset.value = "GPT-3 (175B)"
    assert app.params.value == 175.0
    app.fmt.value = "F32"
    assert app.result["GB"] == 700.0 and "700.000 GB" in app.summary.value
    app.fmt.value = "Q4_0"
    assert app.result["bpw"] == 4.5 and "background:#fff3c4" in app.table.value
    assert app.file_result == {} and "pick a llama" in app.file_summary.value  # GPT-3: no llama shapes
    app.preset.value = "Llama-2-7B (6.74B)"
    app.ftype.value = "Q4_K_M"
    assert 4.0 < app.file_result["GB"] < 4.2 and "Q4_K_M" in app.file_summary.value
    app.ftype.value = "Q8_0"
    assert app.file_result["bpw"] == pytest.approx(8.5, abs=0.01)
    app.params.value = 3.0  # typed by hand: no longer the preset
    assert app.preset.value == "(custom)" and app.file_result == {}
    names = size_calculator.storable_formats()
    assert "Q8_1" not in names and "Q8_K" not in names and "Q4_K" in names


# ---------------------------------------------------------------------------------------- floats


def test_float_grids_match_numpy_and_specs():
    # FP16 through the explorer equals numpy's own conversion on a dense sample
    x = np.random.default_rng(1).standard_normal(5000) * 10.0 ** np.random.default_rng(2).uniform(-9, 5, 5000)
    codes, vals = fx.round_to(x, "FP16")
    with np.errstate(over="ignore"):
        assert np.array_equal(vals, x.astype(np.float16).astype(np.float64), equal_nan=True)
    # the generic grid rounding agrees with the exhaustive nearest search (ties to even code) for E5M2
    grid = np.array([fx.decode_code(c, "E5M2") for c in range(256)])
    codes, vals = fx.round_to(x, "E5M2")
    for xi, _ci, vi in zip(x[:400], codes[:400], vals[:400]):
        if abs(xi) > fx.max_finite("E5M2"):
            continue
        fin = np.isfinite(grid)
        d = np.abs(grid[fin] - xi)
        assert vi in grid[fin][d == d.min()]
    assert fx.max_finite("E4M3") == 448.0 and fx.max_finite("E5M2") == 57344.0 and fx.max_finite("E2M1") == 6.0
    assert sorted(set(np.abs(fx.positive_grid("E2M1")[0]))) == [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    assert fx.encode(0.1, "E4M3")["stored"] == 0.1015625
    assert fx.encode(1e6, "E4M3")["stored"] == 448.0  # saturating, no infinity
    assert fx.encode(1e6, "E5M2")["kind"] == "infinity"
    assert fx.encode(5.0, "E2M1")["stored"] == 4.0  # tie -> even code
    assert fx.encode(3.0, "E8M0")["stored"] == 2.0 and fx.encode(3.5, "E8M0")["stored"] == 4.0  # tie -> even
    assert math.isnan(fx.encode(-1.0, "E8M0")["stored"])
    assert fx.encode(1.0, "BF16")["hex"] == "0x3F80"
    with pytest.raises(FormatError):
        fx.spec("FP7")
    table = {r["format"]: r for r in fx.format_table()}
    assert table["FP16"]["min normal"] == 2.0**-14 and table["FP16"]["min > 0"] == 2.0**-24
    assert table["E4M3"]["min > 0"] == 2.0**-9 and table["E2M1"]["min normal"] == 1.0
    assert table["BF16"]["max"] == (2 - 2.0**-7) * 2.0**127


def test_float_explorer_app(w):
    app = fx.app(value=0.1, fmt="E4M3", tensor=w)
    assert app.result["bits"] == "0 0011 101" and "0x1D" in app.bits.value
    title = app.ax.get_title()
    app.fmt.value = "FP16"
    assert app.result["hex"] == "0x2E66" and app.ax.get_title() != title
    app.fmt.value = "E2M1"
    raw = app.stats["sqnr_db"]
    app.scaled.value = True
    assert app.stats["scale"] > 1 and app.stats["sqnr_db"] > raw
    app.number.value = -3.0
    assert app.result["stored"] == -3.0 and app.result["sign"] == 1


# ------------------------------------------------------------------------------------------ toyquant


def test_toyquant_symmetric_by_hand():
    x = np.array([[-1.0, 0.2, 0.5, 1.0]])
    r = toyquant.quantize_uniform(x, 2, "symmetric", 100.0, "tensor")  # qmax = 1, d = 1
    assert np.array_equal(r["q"], [[-1, 0, 0, 1]]) and np.allclose(r["y"], [[-1, 0, 0, 1]])
    r = toyquant.quantize_uniform(x, 1, "symmetric", 100.0, "tensor")  # sign x mean|x|
    assert np.allclose(r["y"], [[-0.675, 0.675, 0.675, 0.675]])
    r = toyquant.quantize_uniform(np.array([[0.0, 1.0, 2.0, 3.0]]), 2, "asymmetric", 100.0, "tensor")
    assert np.allclose(r["y"], [[0, 1, 2, 3]]) and r["overhead_bpw"] == (16 + 2) / 4


def test_toyquant_clip_groups_and_law(w):
    big = np.array(w)
    big[0, 0] = 50.0  # one outlier
    plain = toyquant.quantize_uniform(big, 4, "symmetric", 100.0, "tensor")
    clipped = toyquant.quantize_uniform(big, 4, "symmetric", 99.9, "tensor")
    grouped = toyquant.quantize_uniform(big, 4, "symmetric", 100.0, 32)
    assert clipped["sqnr_db"] > plain["sqnr_db"] or grouped["sqnr_db"] > plain["sqnr_db"]
    assert clipped["clipped"][0, 0] and grouped["bpw"] == 4.5
    r8 = toyquant.quantize_uniform(w, 8, "symmetric", 100.0, "channel")
    assert abs(r8["law_ratio"] - 1) < 0.02  # Δ/√12 holds with a fine grid
    with pytest.raises(ShapeError):
        toyquant.quantize_uniform(w, 4, "symmetric", 100.0, 7)
    with pytest.raises(ShapeError):
        toyquant.quantize_uniform(w, 0)
    with pytest.raises(ShapeError):
        toyquant.quantize_uniform(w, 4, "diagonal")
    pts = toyquant.frontier(w[:16], bits_range=(3, 4), groups=(32, "channel"))
    best = toyquant.pareto(pts)
    assert all(b["sqnr_db"] < c["sqnr_db"] for b, c in zip(best, best[1:]))


def test_scale_zero_and_group_size_apps():
    from quantlab.widgets import group_size, scale_zero

    sz = scale_zero.app(rows=32)
    sz.bits.value = 3
    s3 = sz.result["sqnr_db"]
    sz.bits.value = 7
    assert sz.result["sqnr_db"] > s3 + 15 and "7-bit" in sz.summary.value
    n_lines = len(sz.ax_w.lines)
    sz.bits.value = 2
    assert len(sz.ax_w.lines) < n_lines  # the grid drawn has fewer levels
    gs = group_size.app(rows=16)
    gs.group.value = "32"
    assert gs.result["bpw"] == 4.5
    gs.group.value = "tensor"
    assert gs.result["group_length"] == 16 * 1536
    assert gs.ax.lines[-1].get_xdata()[0] == pytest.approx(gs.result["bpw"])  # the red star moved
    gs.tensor.value = "encoder.layer.0.attention.output.dense.weight"  # another matrix: loaded, recomputed
    assert gs.w.shape == (16, 384) and gs.result["group_length"] == 16 * 384 and gs.last_error is None


# ------------------------------------------------------------------------------------------- analogy


def test_codecs_roundtrip_and_entropy(w):
    b = w.tobytes()
    sizes_ = analogy.codec_sizes(b)
    assert set(sizes_) == {"zlib", "bz2", "lzma", "zstd", "ppmd"}
    import pyppmd  # the PPMd stand-in for RAR's text codec decodes back

    assert pyppmd.decompress(analogy.compress(b, "ppmd"), max_order=6, mem_size=16 << 20) == b
    assert all(0 < s < len(b) * 1.01 for s in sizes_.values())
    assert analogy.entropy_bits(np.array([0, 1, 0, 1])) == 1.0 and analogy.entropy_bits(np.zeros(9)) == 0.0
    planes = analogy.byte_plane_entropy(w, "fp32")
    assert planes[3] < planes[0] and all(0 <= p <= 8 for p in planes)
    f = analogy.bf16_floor(w)
    assert 9.0 < f["fields_sum"] < 12.0 and f["mantissa"] > 6.5
    fb = analogy.float_bytes(w, "bf16")
    assert np.array_equal(
        analogy.float_decode(fb, "bf16").reshape(w.shape), quantlab.dequantize(quantlab.quantize(w, "BF16"), "BF16")
    )
    with pytest.raises(FormatError):
        analogy.compress(b"x", "rar")


def test_jpeg_and_rate_distortion(w):
    lo, nb_lo = analogy.jpeg_roundtrip(w, 20, clip=99.9)
    hi, nb_hi = analogy.jpeg_roundtrip(w, 95, clip=99.9)
    assert nb_hi > nb_lo and metrics.sqnr_db(w, hi) > metrics.sqnr_db(w, lo) and lo.shape == w.shape
    with pytest.raises(ShapeError):
        analogy.jpeg_roundtrip(w.reshape(-1), 50)
    with pytest.raises(ShapeError):
        analogy.jpeg_roundtrip(w, 0)
    pts = analogy.rate_distortion(w, formats=("Q8_0", "Q4_0"), jpeg_qualities=(50,))
    by = {p["method"]: p for p in pts}
    assert by["fp32 + zstd"]["sqnr_db"] == math.inf
    q8 = next(p for p in pts if p["method"].startswith("Q8_0") and p["kind"] == "quant")
    assert q8["bpw"] == 8.5 and q8["sqnr_db"] > 40


def test_tar_is_an_archive(w):
    t = analogy.tar_demo({"w.bin": w[:4].tobytes()})
    assert t["tar"] > t["payload"] and t["tar_holds_bytes_verbatim"] and t["tar_gz"] < t["tar"]


def test_tar_demo_contents_readable(w):
    payload = w[:2].tobytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("w.bin")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    assert analogy.tar_demo({"w.bin": payload})["tar"] == len(buf.getvalue())


# ---------------------------------------------------------------------------------- block inspector


def test_format_status_and_errors(w):
    from quantlab.widgets import block_inspector as bi

    st = bi.format_status()
    assert [r["format"] for r in st] == [f.name for f in quantlab.all_formats()]
    assert {r["status"] for r in st} == {"ready"}  # every format: numpy reference and numba kernel
    rows = bi.format_errors(np.ascontiguousarray(w[:4]), bi.imatrix_for(), formats=["Q8_0", "Q4_0", "Q4_1"])
    ok = {(r["format"], r["imatrix"]): r for r in rows if r["status"] == "ok"}
    assert ok[("Q8_0", False)]["sqnr_db"] > ok[("Q4_0", False)]["sqnr_db"]
    assert ("Q8_0", True) not in ok  # Q8_0 ignores the imatrix: not measured twice
    assert ("Q4_0", True) in ok


def test_block_inspector_app():
    from quantlab.widgets import block_inspector as bi

    app = bi.app(fmt="Q8_0", rows=2)
    assert app.status == "ok" and len(app.fields["bytes"]) == 34
    hex0 = app.hex.value
    app.block.value = 1
    assert app.hex.value != hex0 and app.fields["index"] == 1
    assert "def quantize_q8_0" in app.source.value
    assert app.block.max == 2 * 1536 // 32 - 1
    app.fmt.value = "MXFP4"
    assert app.block.max == 2 * 1536 // 32 - 1


def test_block_inspector_survives_a_broken_format(monkeypatch):
    from quantlab.widgets import block_inspector as bi

    app = bi.app(fmt="Q8_0", rows=1)

    def boom(*a, **k):
        raise RuntimeError("kernel under construction")

    monkeypatch.setattr(bi, "quantize", boom)
    app.fmt.value = "Q4_0"
    assert "failed: RuntimeError" in app.header.value
    rows = bi.format_errors(np.zeros((1, 256), np.float32), formats=["Q4_0"])
    assert rows[0]["status"].startswith("failed: RuntimeError")


def test_jpeg_quality_app(w):
    from quantlab.widgets import jpeg_quality

    pts = analogy.rate_distortion(w, formats=("Q8_0",), jpeg_qualities=(50,))
    app = jpeg_quality.app(points=pts)
    app.quality.value = 20
    low = app.result
    app.quality.value = 90
    assert app.result["bpw"] > low["bpw"] and "quality 90" in app.summary.value
    assert isinstance(app.result["sqnr_db"], float)
