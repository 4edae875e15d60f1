"""Notebook 08's logic (quantlab.widgets.mixes) without a kernel or a browser."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # in-process only (never MPLBACKEND: it would leak into kernels)

import numpy as np
import pytest

import quantlab
import quantlab.data
from quantlab import recipes, sizes
from quantlab.widgets import mixes as mx


@pytest.fixture(scope="module")
def mixapp():
    return mx.app("Q4_K_M")


def test_app_q4_k_m_smollm2_vs_llama(mixapp):
    app = mixapp
    app.ftype.value = "Q4_K_M"
    app.llama.value = "Llama-2-7B"
    app.has_im.value = False
    app.layer.value = 0
    r = app.result
    plan = recipes.plan(quantlab.data.path("smollm2"), "Q4_K_M", allow_requantize=True)
    assert r["smollm2"]["bytes"] == plan.nbytes and r["smollm2"]["n_fallback"] == plan.n_fallback
    # every fallback is a 576-wide tensor, and there are 6 such matrix kinds per layer
    n_layer = plan.model.n_layer
    assert plan.n_fallback == sum(1 for t in plan if t.fallback) == 6 * n_layer
    assert all(t.ne[0] == 576 for t in plan if t.fallback)
    # the llama-7B shapes: no fallback; the same bpw as quantlab.sizes computes from its own tensor table
    fs = sizes.file_size(sizes.llama_tensors(**sizes.LLAMA2_7B), "Q4_K_M", sizes.LLAMA2_7B)
    assert r["llama"]["n_fallback"] == 0
    assert abs(r["llama"]["bpw"] - fs["bpw"]) < 1e-9
    assert r["llama"]["share"]["Q4_K"] > 0.8 > r["smollm2"]["share"].get("Q4_K", 0)
    assert "Q5_0" in r["smollm2"]["share"] and "Q5_0" not in r["llama"]["share"]
    assert "6.16" in app.summary.value or f"{r['smollm2']['bpw']:.3f}" in app.summary.value


def test_app_layer_slider_and_rules(mixapp):
    app = mixapp
    app.ftype.value = "Q4_K_M"
    app.has_im.value = False
    app.layer.value = 0
    rows = {x["tensor"]: x for x in app.result["layer_rows"]}
    assert set(rows) == {"token_embd.weight"} | {f"blk.0.{k}.weight" for k in mx.KINDS}
    assert (
        rows["blk.0.attn_q.weight"]["to"] == "Q5_0"
        and "not a multiple of 256" in rows["blk.0.attn_q.weight"]["fallback"]
    )
    assert (
        rows["blk.0.ffn_down.weight"]["to"] == "Q6_K"
        and "use_more_bits(0, 30)" in rows["blk.0.ffn_down.weight"]["rule"]
    )
    t0 = app.table.value
    app.layer.value = 4  # use_more_bits(4, 30) is False: 4 < 30 // 8 = 3 fails, (4 - 3) % 3 = 1
    rows = {x["tensor"]: x for x in app.result["layer_rows"]}
    assert not recipes.use_more_bits(4, 30)
    assert rows["blk.4.ffn_down.weight"]["to"] == "Q4_K" and app.table.value != t0
    assert "fallback" in app.table.value or "font-weight:bold" in app.table.value


def test_app_imatrix_rules_and_other_models(mixapp):
    app = mixapp
    app.has_im.value = False
    app.ftype.value = "IQ2_XXS"
    assert "refuses" in app.summary.value and app.result["smollm2"]["needs_imatrix"] > 0
    app.has_im.value = True
    assert "refuses" not in app.summary.value
    # IQ2_XXS on SmolLM2 falls back to IQ4_NL on 576-wide rows: far more bits than on a llama-7B
    assert app.result["smollm2"]["bpw"] > 2 * app.result["llama"]["bpw"]
    assert app.result["smollm2"]["share"].get("IQ4_NL", 0) > 0.4
    app.llama.value = "Llama-2-70B"
    assert app.result["llama_model"] == "Llama-2-70B" and app.result["llama"]["params"] > 6e10
    # Q4_0 with an imatrix: llama.cpp gives ffn_down of the first n/8 layers Q4_1
    app.ftype.value = "Q4_0"
    p = app.plans["smollm2"]
    assert p["blk.0.ffn_down.weight"].fmt.name == "Q4_1" and p["blk.3.ffn_down.weight"].fmt.name == "Q4_0"
    app.has_im.value = False
    assert app.plans["smollm2"]["blk.0.ffn_down.weight"].fmt.name == "Q4_0"
    app.llama.value = "Llama-2-7B"
    app.ftype.value = "Q4_K_M"


def test_plan_summary_and_kind_table():
    for ft in ("Q2_K", "Q4_K_M", "IQ4_XS", "Q8_0"):
        for m in ("smollm2", "Llama-2-7B"):
            p = mx.plan_for(m, ft, True)
            s = mx.plan_summary(p)
            assert abs(sum(s["share"].values()) - 1.0) < 1e-12
            assert s["bytes"] == p.nbytes and abs(s["bpw"] - 8 * p.nbytes / p.n_elements) < 1e-12
            kt = mx.kind_table(p)
            assert sum(r["tensors"] for r in kt) == sum(1 for t in p if t.quantizable)
            assert sum(r["fallbacks"] for r in kt) == p.n_fallback
    rows = mx.ftype_table(("Q4_K_M", "Q8_0"))
    assert [r["ftype"] for r in rows] == ["Q4_K_M", "Q8_0"]
    assert rows[1]["smollm2 fallback %"] == 0.0 and rows[0]["smollm2 fallback %"] > 50


def test_split_text_is_disjoint():
    t = quantlab.data.text(20000)
    a, b = mx.split_text(t)
    assert a + b == t and 0.4 * len(t) < len(a) < 0.7 * len(t)


def test_imatrix_stats_known_values():
    v = np.ones(200, dtype=np.float32)
    v[7] = 100.0
    v[0] = 0.5
    st = mx.imatrix_stats({"w": v}, ["w"])[0]
    assert st["columns"] == 200 and st["max"] == 100.0 and st["min"] == 0.5 and st["median"] == 1.0
    assert st["max/median"] == 100.0 and st["max/min"] == 200.0
    assert abs(st["top 1% share"] - (100.0 + 1.0) / v.astype(np.float64).sum()) < 1e-12  # top 2 of 200 columns


def test_imatrix_errors_on_real_rows():
    ts = quantlab.data.tensors("smollm2")
    rng = np.random.default_rng(0)
    names = ["blk.0.attn_v.weight", "blk.0.ffn_down.weight"]
    im = {}
    for n in names:
        w = rng.random(ts[n].shape[1]).astype(np.float32) * 0.01
        w[rng.choice(len(w), 8, replace=False)] = 50.0  # a few columns that matter a lot
        im[n] = w
    rows = mx.imatrix_errors(ts, im, names, ["Q4_0", "IQ4_NL", "Q4_K", "IQ2_XXS"], rows=16)
    got = {(r["tensor"], r["format"]) for r in rows}
    assert ("blk.0.attn_v.weight", "Q4_K") not in got  # 576 is not a multiple of 256: skipped
    assert ("blk.0.ffn_down.weight", "Q4_K") in got
    for r in rows:
        if r["format"] == "IQ2_XXS":  # needs an imatrix: only measured with it
            assert np.isnan(r["wRMSE without"]) and r["wRMSE with"] > 0
            continue
        assert r["wRMSE with"] < r["wRMSE without"], r
        assert abs(r["wRMSE ratio"] - r["wRMSE with"] / r["wRMSE without"]) < 1e-15
    # the measure is quantlab.metrics.weighted_rmse of the reconstruction
    x = np.ascontiguousarray(ts["blk.0.attn_v.weight"][:16])
    y = quantlab.dequantize(quantlab.quantize(x, "Q4_0", imatrix=im["blk.0.attn_v.weight"]), "Q4_0")
    r0 = next(r for r in rows if r["tensor"] == "blk.0.attn_v.weight" and r["format"] == "Q4_0")
    assert r0["wRMSE with"] == quantlab.metrics.weighted_rmse(x, y, im["blk.0.attn_v.weight"])


@pytest.fixture(scope="module")
def small_study():
    ts = quantlab.data.tensors("smollm2")
    rng = np.random.default_rng(1)
    im = {}
    for n in ts:
        if n.startswith("blk.0.") and n.endswith(".weight") and ts[n].ndim == 2:
            im[n] = (rng.random(ts[n].shape[1]) + 0.01).astype(np.float32)
    return mx.frontier_study(
        quantlab.data.path("smollm2"), im, ("Q3_K_M", "Q4_0", "Q4_K_M", "Q8_0"), layers=[0], max_rows=8
    ), im


def test_frontier_study_small(small_study):
    st, im = small_study
    res = st["result"]
    assert sorted(st["names"]) == sorted(im)
    assert not set(st["candidates"]) & set(mx.REQUANT_EXACT)
    assert {f.name for f in res.choice.values()} <= set(st["candidates"])
    mixes = {m["label"]: m for m in st["mixes"]}
    q = mixes["Q4_K_M"]
    o = st["optimized"]
    assert o["bytes"] <= q["bytes"] and o["error"] <= q["error"]
    assert mixes["Q8_0"]["error"] < mixes["Q4_0"]["error"] and mixes["Q8_0"]["bytes"] > mixes["Q4_0"]["bytes"]
    fr = st["frontier"]
    assert all(p["bytes"] > 0 and p["error"] >= 0 for p in fr)
    for g in mx.frontier_gain(st):  # the best frontier vertex at the mix's size or below
        ok = [p["error"] for p in fr if p["bytes"] <= g["bytes"]]
        assert (g["frontier error"] == min(ok)) if ok else np.isnan(g["frontier error"])


def test_mix_point_uses_the_optimizer_measure(small_study):
    st, im = small_study
    res = st["result"]
    ts = quantlab.data.tensors("smollm2")
    n = "blk.0.attn_v.weight"
    x = np.ascontiguousarray(ts[n][mx.sampled_rows(ts[n].shape[0], 8)])
    for f in ("Q4_0", "Q8_0"):
        e = mx.weighted_sq_error(x, f, im[n], ts[n].shape[0] / x.shape[0])
        assert e == res.errors[n][f]
    # Q4_0 with an imatrix puts Q4_1 on blk.0.ffn_down: not a candidate, measured by mix_point the same way
    assert "Q4_1" in res.errors["blk.0.ffn_down.weight"]


def test_plot_helpers_draw(small_study):
    st, _ = small_study
    _, ax = matplotlib.pyplot.subplots()
    mx.plot_frontier(ax, st)
    assert len(ax.lines) >= 2 + len(st["mixes"])
    _, axes = matplotlib.pyplot.subplots(1, 2)
    v = {"a": np.linspace(1, 2, 10), "b": np.linspace(0.1, 5, 10)}
    mx.plot_imatrix(axes, v, ["a", "b"])
    assert len(axes[0].lines) == 2 and axes[0].get_yscale() == "log"
    matplotlib.pyplot.close("all")
