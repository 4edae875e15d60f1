"""Notebook 08: llama.cpp's file types as per-tensor plans, importance matrices, and the bit-budget optimizer.

    >>> app = quantlab.widgets.mixes.app()               # pick a file type: SmolLM2's plan vs a llama-7B's
    >>> app.ftype.value = "Q4_K_M"; app.result["smollm2"]["bpw"], app.result["llama"]["bpw"]

Everything here works from tensor names and shapes (``quantlab.recipes.make_plan``) except the error
measurements, which quantize real SmolLM2 rows. The helpers are what the notebook calls; the app is the
file-type picker.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from functools import cache

import ipywidgets as W
import numpy as np

from .. import data, gguf, metrics, recipes, sizes
from ..api import dequantize, quantize
from ..formats.registry import get as get_format
from ..progress import callback, steps
from ..recipes import ModelInfo, Options, TensorSpec, file_type, make_plan
from ._common import App, contained, html_table, new_figure, quick_default, show_figure  # noqa: F401 (quick_default: used by the notebooks)
from .model_ladder import _RememberedForward

#: the file types the picker offers, roughly from fewest to most bits
FILE_TYPES = (
    "IQ1_S",
    "IQ1_M",
    "IQ2_XXS",
    "IQ2_XS",
    "IQ2_S",
    "IQ2_M",
    "Q2_K_S",
    "Q2_K",
    "IQ3_XXS",
    "IQ3_XS",
    "IQ3_S",
    "IQ3_M",
    "Q3_K_S",
    "Q3_K_M",
    "Q3_K_L",
    "IQ4_XS",
    "IQ4_NL",
    "Q4_0",
    "Q4_1",
    "Q4_K_S",
    "Q4_K_M",
    "Q5_0",
    "Q5_1",
    "Q5_K_S",
    "Q5_K_M",
    "Q6_K",
    "Q8_0",
)

#: llama-architecture models to compare with (quantlab.sizes presets): wide rows, K-quants apply
LLAMA_MODELS = {"Llama-2-7B": sizes.LLAMA2_7B, "Llama-2-13B": sizes.LLAMA2_13B, "Llama-2-70B": sizes.LLAMA2_70B}

#: the matrix kinds of a llama layer, in the order the tables list them
KINDS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")

#: file types whose mixes the optimizer is compared with (all quantlab can write without an IQ lattice)
MIX_FTYPES = (
    "Q2_K",
    "Q3_K_S",
    "Q3_K_M",
    "Q3_K_L",
    "Q4_0",
    "Q4_K_S",
    "Q4_K_M",
    "Q5_0",
    "Q5_K_S",
    "Q5_K_M",
    "Q6_K",
    "Q8_0",
)
#: formats whose grid contains Q4_1's (the shipped SmolLM2's) grid: they re-encode its weights nearly exactly
REQUANT_EXACT = ("Q4_1", "Q5_1")
QUICK_MIX_FTYPES = ("Q2_K", "Q3_K_M", "Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")

_COLORS = {
    "F32": "#bbbbbb",
    "F16": "#999999",
    "Q8_0": "#1b9e77",
    "Q6_K": "#66a61e",
    "Q5_1": "#a6d854",
    "Q5_K": "#7fc97f",
    "Q5_0": "#b3de69",
    "Q4_1": "#fdb462",
    "Q4_K": "#e6ab02",
    "Q4_0": "#fb8072",
    "IQ4_NL": "#fccde5",
    "IQ4_XS": "#bc80bd",
    "Q3_K": "#80b1d3",
    "IQ3_S": "#8dd3c7",
    "IQ3_XXS": "#bebada",
    "Q2_K": "#386cb0",
    "IQ2_S": "#f0027f",
    "IQ2_XS": "#bf5b17",
    "IQ2_XXS": "#666666",
    "IQ1_M": "#e7298a",
    "IQ1_S": "#d95f02",
}


def kind_of(name: str) -> str:
    """'blk.3.attn_v.weight' -> 'attn_v'; non-layer tensors keep their name."""
    m = re.match(r"blk\.\d+\.(.+)\.weight$", name)
    return m.group(1) if m else name


def layer_of(name: str) -> int:
    m = re.match(r"blk\.(\d+)\.", name)
    return int(m.group(1)) if m else -1


# --------------------------------------------------------------------------------------------- plans


@cache
def smollm2_specs() -> tuple:
    """(tensor specs, ModelInfo) of the shipped SmolLM2 GGUF: names, shapes, stored types, hyper-parameters."""
    f = gguf.open(data.path("smollm2"))
    specs = tuple(TensorSpec(n, t.ne, t.format) for n, t in f.tensors.items())
    return specs, ModelInfo.from_metadata(f.metadata)


@cache
def llama_specs(model: str = "Llama-2-7B") -> tuple:
    """(tensor specs, ModelInfo) of a llama-shaped model from quantlab.sizes' presets (F16 matrices, F32 norms)."""
    shape = LLAMA_MODELS[model]
    specs = tuple(
        TensorSpec(n, tuple(reversed(s)), "F32" if len(s) < 2 else "F16")
        for n, s in sizes.llama_tensors(**shape).items()
    )
    return specs, ModelInfo(
        arch="llama", n_layer=shape["n_layer"], n_head=shape["n_head"], n_head_kv=shape["n_kv_head"]
    )


def plan_for(model: str, ftype: str, has_imatrix: bool = False):
    """The llama.cpp plan (``quantlab.recipes.Plan``) of ``model`` ('smollm2' or a LLAMA_MODELS key)."""
    specs, info = smollm2_specs() if model == "smollm2" else llama_specs(model)
    # the shipped SmolLM2 is already quantized (Q4_1): llama-quantize needs --allow-requantize for it
    return make_plan(specs, ftype, info, Options(allow_requantize=True), has_imatrix=has_imatrix)


def plan_summary(plan) -> dict:
    """Size and make-up of a plan: bytes, MiB, bpw, weights per format (fractions), fallbacks (count and
    the fraction of weights they hold), tensors that need an imatrix."""
    n = plan.n_elements
    share: dict = {}
    fb = 0
    for t in plan:
        share[t.fmt.name] = share.get(t.fmt.name, 0) + t.n_elements
        if t.fallback:
            fb += t.n_elements
    share = {k: v / n for k, v in sorted(share.items(), key=lambda kv: -kv[1])}
    return {
        "ftype": plan.ftype.name,
        "tensors": len(plan),
        "params": n,
        "bytes": plan.nbytes,
        "MiB": plan.nbytes / 2**20,
        "GB": plan.nbytes / 1e9,
        "bpw": plan.bpw,
        "share": share,
        "n_fallback": plan.n_fallback,
        "fallback_share": fb / n,
        "default": plan.ftype.default_name,
        "default_bpw": plan.ftype.default.bpw,
        "needs_imatrix": len(plan.needs_imatrix()),
    }


def kind_table(plan) -> list[dict]:
    """One row per matrix kind: row length, formats chosen over the layers (format x count), fallbacks."""
    rows = []
    by: dict = {}
    for t in plan:
        if not t.quantizable:
            continue
        k = kind_of(t.name)
        by.setdefault(k, []).append(t)
    order = [k for k in by if k not in KINDS] + [k for k in KINDS if k in by]
    for k in order:
        ts = by[k]
        cnt: dict = {}
        for t in ts:
            cnt[t.fmt.name] = cnt.get(t.fmt.name, 0) + 1
        rows.append(
            {
                "kind": k,
                "row length": ts[0].ne[0],
                "tensors": len(ts),
                "formats": ", ".join(f"{f} x{c}" for f, c in sorted(cnt.items(), key=lambda kv: -kv[1])),
                "fallbacks": sum(1 for t in ts if t.fallback),
            }
        )
    return rows


def plan_rows(plan, layer: int | None = None) -> list[dict]:
    """The plan's quantized tensors as table rows (tensor, shape, from, to, rule, fallback); with ``layer``
    only the non-layer tensors and that layer's."""
    out = []
    for t in plan:
        if not t.quantizable:
            continue
        if layer is not None and layer_of(t.name) not in (-1, layer):
            continue
        out.append(
            {
                "tensor": t.name,
                "shape": "x".join(str(v) for v in t.ne),
                "from": t.src.name,
                "to": t.fmt.name,
                "rule": t.rule,
                "fallback": t.fallback or "",
            }
        )
    return out


def fallback_reasons(plan) -> dict:
    """{fallback sentence: number of tensors} — why K/IQ formats were swapped for 32-block ones."""
    out: dict = {}
    for t in plan:
        if t.fallback:
            out[t.fallback] = out.get(t.fallback, 0) + 1
    return out


def ftype_table(ftypes=FILE_TYPES, models=("smollm2", "Llama-2-7B"), has_imatrix: bool = True) -> list[dict]:
    """Every file type on each model: bpw and the fraction of weights in a fallback format."""
    rows = []
    for ft in ftypes:
        r = {"ftype": ft, "default": file_type(ft).default_name}
        for m in models:
            s = plan_summary(plan_for(m, ft, has_imatrix))
            r[f"{m} bpw"] = s["bpw"]
            r[f"{m} fallback %"] = 100 * s["fallback_share"]
        rows.append(r)
    return rows


def plot_share(ax, summaries: dict) -> None:
    """Horizontal stacked bars: fraction of each model's weights per format."""
    labels = list(summaries)
    for i, lab in enumerate(labels):
        left = 0.0
        for fmt, v in summaries[lab]["share"].items():
            ax.barh(i, v, left=left, color=_COLORS.get(fmt, "#cccccc"), edgecolor="white", linewidth=0.5)
            if v > 0.06:
                ax.text(left + v / 2, i, fmt, ha="center", va="center", fontsize=10)
            left += v
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels([f"{lab}\n{summaries[lab]['bpw']:.3f} bpw" for lab in labels], fontsize=10)
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction of the model's weights", fontsize=10)
    ax.tick_params(labelsize=10)
    ax.invert_yaxis()


class MixExplorer(App):
    """Pick a llama.cpp file type: SmolLM2's per-tensor plan (one layer at a time, with the rules) and the same
    file type on a llama-shaped model, their sizes and bits per weight."""

    def __init__(self, ftype: str = "Q4_K_M", llama: str = "Llama-2-7B", layer: int = 0, has_imatrix: bool = False):
        _, info = smollm2_specs()
        self.n_layer = info.n_layer
        self.ftype = W.Dropdown(options=list(FILE_TYPES), value=ftype, description="file type")
        self.llama = W.Dropdown(options=list(LLAMA_MODELS), value=llama, description="compare with")
        self.layer = W.IntSlider(
            value=layer, min=0, max=self.n_layer - 1, description="SmolLM2 layer", continuous_update=False
        )
        self.has_im = W.Checkbox(value=has_imatrix, description="with an imatrix", indent=False)
        self.summary = W.HTML()
        self.kinds = W.HTML()
        self.table = W.HTML()
        self.out = W.Output()
        self.fig, self.ax = new_figure(7.5, 1.9)
        self.result: dict = {}
        for w in (self.ftype, self.llama, self.has_im):
            w.observe(self.update, names="value")
        self.layer.observe(self._update_layer, names="value")
        self.box = W.VBox(
            [W.HBox([self.ftype, self.llama, self.has_im]), self.summary, self.out, self.kinds, self.layer, self.table]
        )
        self.update()

    @contained
    def update(self, change=None):
        ft, lm, im = self.ftype.value, self.llama.value, self.has_im.value
        ps, pl = plan_for("smollm2", ft, im), plan_for(lm, ft, im)
        ss, sl = plan_summary(ps), plan_summary(pl)
        self.plans = {"smollm2": ps, "llama": pl}
        self.result = {"ftype": ft, "llama_model": lm, "has_imatrix": im, "smollm2": ss, "llama": sl}
        warn = ""
        if ss["needs_imatrix"] and not im:
            warn = (
                f"<br><span style='color:#b00'>llama-quantize refuses {ft} without an importance matrix: "
                f"{ss['needs_imatrix']} SmolLM2 tensors would get a type that needs one.</span>"
            )

        def line(label, s):
            return (
                f"<b>{label}</b>: {s['params'] / 1e6:,.1f} M weights &rarr; <b>{s['MiB']:,.2f} MiB</b>, "
                f"<b>{s['bpw']:.3f} bits/weight</b> (the default {s['default']} alone is {s['default_bpw']:.4g}); "
                f"{s['n_fallback']} of {s['tensors']} tensors fell back to another format "
                f"({100 * s['fallback_share']:.1f} % of the weights)"
            )

        self.summary.value = (
            f"<div class='ql-mix-summary' style='font-size:13px'>{ps.ftype.name} = "
            f"<i>{ps.ftype.description}</i><br>{line('SmolLM2-135M-Instruct', ss)}<br>"
            f"{line(lm, sl)}{warn}</div>"
        )
        ks = {r["kind"]: r for r in kind_table(ps)}
        kl = {r["kind"]: r for r in kind_table(pl)}
        rows = [
            {
                "kind": k,
                "SmolLM2 row": ks[k]["row length"] if k in ks else "",
                "SmolLM2 formats": ks[k]["formats"] if k in ks else "",
                f"{lm} row": kl[k]["row length"] if k in kl else "",
                f"{lm} formats": kl[k]["formats"] if k in kl else "",
            }
            for k in list(dict.fromkeys([*ks, *kl]))
        ]
        self.kinds.value = html_table(rows)
        self.ax.clear()
        plot_share(self.ax, {"SmolLM2-135M-Instruct": ss, lm: sl})
        self.ax.set_title(f"{ft}: weights by format", fontsize=10)
        self.fig.tight_layout()
        show_figure(self.out, self.fig)
        self._update_layer()

    @contained
    def _update_layer(self, change=None):
        rows = plan_rows(self.plans["smollm2"], self.layer.value)
        self.result["layer_rows"] = rows
        self.table.value = html_table(
            rows, ["tensor", "shape", "from", "to", "rule", "fallback"], highlight=lambda r: bool(r["fallback"])
        )


def app(ftype: str = "Q4_K_M", llama: str = "Llama-2-7B", layer: int = 0, has_imatrix: bool = False) -> MixExplorer:
    return MixExplorer(ftype, llama, layer, has_imatrix)


# ------------------------------------------------------------------------------------------ imatrix


def split_text(text: str, frac: float = 0.5) -> tuple[str, str]:
    """Two disjoint pieces of ``text`` (cut at a paragraph break near ``frac``): one to collect the imatrix
    on, one to evaluate on, so the evaluation never sees the calibration text."""
    cut = int(len(text) * frac)
    j = text.find("\n\n", cut)
    j = cut if j < 0 else j
    return text[:j], text[j:]


def imatrix_stats(im, names) -> list[dict]:
    """Per tensor: columns, min / median / max of the per-column mean squared activation, the dynamic
    range max/median, and how much of the total the top 1 % of columns carry."""
    rows = []
    for n in names:
        v = np.asarray(im[n], dtype=np.float64)
        s = np.sort(v)[::-1]
        top = max(1, len(v) // 100)
        rows.append(
            {
                "tensor": n,
                "columns": len(v),
                "min": float(s[-1]),
                "median": float(np.median(v)),
                "max": float(s[0]),
                "max/median": float(s[0] / np.median(v)) if np.median(v) > 0 else np.inf,
                "max/min": float(s[0] / s[-1]) if s[-1] > 0 else np.inf,
                "top 1% share": float(s[:top].sum() / s.sum()),
            }
        )
    return rows


def plot_imatrix(axes, im, names) -> None:
    """Left: per-column values of each tensor (log scale, column order). Right: the same sorted, largest first."""
    a0, a1 = axes
    for n in names:
        v = np.asarray(im[n], dtype=np.float64)
        a0.plot(np.arange(len(v)), v, lw=0.6, label=n)
        a1.plot(np.arange(1, len(v) + 1), np.sort(v)[::-1], lw=1.0, label=n)
    a0.set_yscale("log")
    a0.set_xlabel("input column", fontsize=10)
    a0.set_ylabel("mean a_j^2", fontsize=10)
    a1.set_xscale("log")
    a1.set_yscale("log")
    a1.set_xlabel("rank of the column", fontsize=10)
    a0.set_title("imatrix per column", fontsize=10)
    a1.set_title("sorted: a few columns dominate", fontsize=10)
    a1.legend(fontsize=10)
    for a in axes:
        a.tick_params(labelsize=10)


def imatrix_errors(tensors, im, names, formats, rows: int | None = 64, impl: str = "fast") -> list[dict]:
    """Each tensor (its first ``rows`` rows) quantized with and without the imatrix, for each format whose
    block fits the row: the imatrix-weighted RMSE (quantlab.metrics.weighted_rmse, weights = the imatrix)
    and the plain RMSE. Formats that need an imatrix are only run with it."""
    out = []
    for n in names:
        x = np.asarray(tensors[n], dtype=np.float32)
        x = np.ascontiguousarray(x if rows is None else x[:rows])
        w = np.asarray(im[n], dtype=np.float32)
        for fn in formats:
            f = get_format(fn)
            if x.shape[1] % f.block_size:
                continue
            r = {"tensor": n, "format": f.name, "bpw": f.bpw}
            for tag, imx in (("without", None), ("with", w)):
                if imx is None and f.requires_imatrix:
                    r[f"wRMSE {tag}"] = r[f"RMSE {tag}"] = float("nan")
                    continue
                y = dequantize(quantize(x, f, imatrix=imx, impl=impl), f, impl=impl)
                r[f"wRMSE {tag}"] = metrics.weighted_rmse(x, y, w)
                r[f"RMSE {tag}"] = metrics.rmse(x, y)
            r["wRMSE ratio"] = r["wRMSE with"] / r["wRMSE without"] if r["wRMSE without"] > 0 else float("nan")
            out.append(r)
    return out


#: How ggml's quantizers weight the error of weight j when given an importance matrix (ggml-quants.c of
#: llama.cpp as vendored in llama-cpp-python 0.3.36, quantize_row_*_impl):
#: ``weight_j = imatrix_j * sqrt(sigma2 + x_j**2)`` with sigma2 the mean square of the row (legacy types) or
#: ``factor * sum(x**2) / 256`` over the super-block (K-quants), or the plain imatrix (Q6_K: its sigma2 line
#: is commented out). Format -> (where sigma2 is taken, factor); None = plain imatrix.
IMATRIX_OBJECTIVE = {
    "Q4_0": ("row", 1.0),
    "Q4_1": ("row", 1.0),
    "Q5_0": ("row", 1.0),
    "Q5_1": ("row", 1.0),
    "Q2_K": ("super-block", 1.0),
    "Q3_K": ("super-block", 2.0),
    "Q4_K": ("super-block", 2.0),
    "Q5_K": ("super-block", 2.0),
    "Q6_K": None,
}


def ggml_error_weights(x, imatrix, fmt, sigma2=None) -> np.ndarray:
    """Per-weight error weights ggml's ``fmt`` quantizer minimises for one row ``x`` with ``imatrix``
    (see :data:`IMATRIX_OBJECTIVE`); ``sigma2`` overrides the computed one (a scalar)."""
    name = get_format(fmt).name
    if name not in IMATRIX_OBJECTIVE:
        raise ValueError(f"no imatrix objective stated for {name}; stated: {', '.join(IMATRIX_OBJECTIVE)}")
    x = np.asarray(x, dtype=np.float32).ravel()
    qw = np.asarray(imatrix, dtype=np.float32).ravel()
    rule = IMATRIX_OBJECTIVE[name]
    if rule is None:
        return qw.copy()
    where, factor = rule
    if sigma2 is None:
        if where == "row":
            s2 = np.full(x.shape, np.mean(x * x), dtype=np.float32)
        else:
            sb = x.reshape(-1, 256)
            s2 = np.repeat(factor * (sb * sb).sum(axis=1) / 256, 256).astype(np.float32)
    else:
        s2 = np.full(x.shape, sigma2, dtype=np.float32)
    return (qw * np.sqrt(s2 + x * x)).astype(np.float32)


# ----------------------------------------------------------------------------------------- optimizer


def subset_imatrix(im, layers=None) -> dict:
    """``{name: per-column values}`` of the imatrix, only for the given layers (all when None). Tensors
    left out keep the base file type's choice in the optimizer (a cheaper, smaller study)."""
    return {n: im[n] for n in im if layers is None or layer_of(n) in set(layers)}


def mix_candidates(plans, names, extra=(), exclude=()) -> tuple:
    """Every format the given plans put on the tensors ``names``, plus ``extra``, minus ``exclude``, in bpw order."""
    fs = {get_format(x).name for x in extra}
    for p in plans:
        for n in names:
            fs.add(p[n].fmt.name)
    fs -= {get_format(x).name for x in exclude}
    return tuple(sorted(fs, key=lambda f: (get_format(f).bpw, f)))


def sampled_rows(n_rows: int, max_rows: int | None) -> np.ndarray:
    """The rows the optimizer measures: all, or ``max_rows`` spread evenly (same choice as recipes.optimize)."""
    if not max_rows or n_rows <= max_rows:
        return np.arange(n_rows)
    return np.unique(np.linspace(0, n_rows - 1, max_rows).round().astype(np.int64))


def weighted_sq_error(x, fmt, w, scale: float = 1.0, impl: str = "fast") -> float:
    """The optimizer's error measure: sum over rows and columns of w_j (x - deq(quant(x)))^2, times ``scale``
    (rows in the tensor / rows measured). The imatrix is given to the quantizer when the format uses one."""
    f = get_format(fmt)
    y = dequantize(quantize(x, f, imatrix=w if f.uses_imatrix else None, impl=impl), f, impl=impl)
    d = x.astype(np.float64) - y.astype(np.float64)
    return float(((d * d).sum(axis=0) * np.asarray(w, dtype=np.float64)).sum()) * scale


def mix_point(res, plan, tensors=None, imatrix=None, max_rows: int | None = 256) -> dict:
    """A llama.cpp plan measured like the optimizer's choices: over the optimized tensors only, the bytes
    and the imatrix-weighted squared error (from ``res.errors``; a format the optimizer did not try is
    measured here the same way, from ``tensors`` and ``imatrix``)."""
    names = list(res.choice)
    nb = err = n_el = 0
    for n in names:
        t = plan[n]
        f = t.fmt.name
        if f not in res.errors[n]:
            n_rows = t.n_elements // t.ne[0]
            rows = sampled_rows(n_rows, max_rows)
            x = np.ascontiguousarray(np.asarray(tensors[n], dtype=np.float32).reshape(n_rows, t.ne[0])[rows])
            res.errors[n][f] = weighted_sq_error(x, f, np.asarray(imatrix[n], dtype=np.float32), n_rows / len(rows))
            res.sizes[n][f] = t.nbytes
        nb += res.sizes[n][f]
        err += res.errors[n][f]
        n_el += t.n_elements
    return {"label": plan.ftype.name, "bytes": int(nb), "bpw": 8.0 * nb / n_el, "error": float(err)}


def frontier_points(res) -> list[dict]:
    """The optimizer's Lagrangian frontier over the optimized tensors only (bytes, bpw, error)."""
    names = list(res.choice)
    n_el = sum(res.base[n].n_elements for n in names)
    fixed = res.fixed_nbytes
    return [
        {
            "bytes": p["bytes"] - fixed,
            "bpw": 8.0 * (p["bytes"] - fixed) / n_el,
            "error": p["error"],
            "lambda": p["lambda"],
        }
        for p in res.frontier
    ]


def optimized_point(res) -> dict:
    names = list(res.choice)
    n_el = sum(res.base[n].n_elements for n in names)
    nb = sum(res.sizes[n][f.name] for n, f in res.choice.items())
    return {
        "label": f"optimized ({res.base.ftype.name} budget)",
        "bytes": int(nb),
        "bpw": 8.0 * nb / n_el,
        "error": res.error,
    }


def frontier_study(
    path,
    im,
    mix_ftypes=MIX_FTYPES,
    layers=None,
    base: str = "Q4_K_M",
    target=None,
    max_rows: int | None = 256,
    extra_candidates=(),
    exclude=REQUANT_EXACT,
    progress=True,
) -> dict:
    """Run ``quantlab.recipes.optimize`` on ``path`` with the imatrix ``im`` (restricted to ``layers``) at
    the size of the ``target`` file type (default: ``base``), with candidates covering every format the
    llama.cpp mixes ``mix_ftypes`` use on those tensors except ``exclude``; and place each mix on the same
    (bytes, error) plane. ``exclude`` defaults to :data:`REQUANT_EXACT`: the shipped SmolLM2 *is* Q4_1, and
    Q4_1 (and Q5_1, with half the step) give its weights back (almost) exactly -- an artefact of the file,
    not a merit of the formats.

    Returns dict: result (OptimizeResult), frontier, mixes (one point per file type), optimized (the point at
    the budget), candidates, names (optimized tensors), seconds."""
    t0 = time.perf_counter()
    sub = subset_imatrix(im, layers)
    specs, _ = smollm2_specs()
    names = [s.name for s in specs if s.name in sub]
    plans = [plan_for("smollm2", ft, True) for ft in mix_ftypes]
    cands = mix_candidates(plans, names, extra_candidates, exclude)
    tick = callback(progress, len(names), "optimize", "tensor")  # optimize calls (i, n, name) before tensor i
    res = recipes.optimize(
        path,
        target or base,
        imatrix=sub,
        base=base,
        candidates=cands,
        max_rows=max_rows,
        progress=None if tick is None else (lambda i, n, name: tick(i + 1, n, name)),
    )

    tensors = data.tensors("smollm2")
    mixes = [mix_point(res, p, tensors, sub, max_rows) for p in plans]
    return {
        "result": res,
        "frontier": frontier_points(res),
        "mixes": mixes,
        "optimized": optimized_point(res),
        "candidates": cands,
        "names": list(res.choice),
        "seconds": time.perf_counter() - t0,
    }


def plot_frontier(ax, study: dict) -> None:
    """Error (log) vs bits per weight: the optimizer's frontier, the llama.cpp mixes, the optimized pick."""
    fr = sorted(study["frontier"], key=lambda p: p["bpw"])
    ax.plot(
        [p["bpw"] for p in fr],
        [p["error"] for p in fr],
        "-",
        color="#2a7ab0",
        lw=1.2,
        label="optimizer frontier (one format per tensor)",
    )
    groups: list[list[dict]] = []  # file types at the same point share one label
    for m in sorted(study["mixes"], key=lambda m: (m["bpw"], m["error"])):
        g = groups[-1] if groups else None
        if g and abs(g[0]["bpw"] - m["bpw"]) < 1e-3 and abs(g[0]["error"] / m["error"] - 1) < 1e-3:
            g.append(m)
        else:
            groups.append([m])
    close = [k > 0 and abs(groups[k - 1][0]["bpw"] - groups[k][0]["bpw"]) < 0.3 for k in range(len(groups))]
    for k, g in enumerate(groups):
        m = g[0]
        ax.plot(m["bpw"], m["error"], "o", color="#d62728", ms=4)
        # the first of two close points is labelled on its left, the next on its right (lower when a third follows)
        left = k > 0 and not close[k] and k + 1 < len(groups) and close[k + 1]
        low = close[k] and k >= 2 and close[k - 1]
        ax.annotate(
            " = ".join(x["label"] for x in g),
            (m["bpw"], m["error"]),
            fontsize=10,
            ha="right" if left else "left",
            xytext=(-5 if left else 5, -14 if low else 3),
            textcoords="offset points",
        )
    o = study["optimized"]
    ax.plot(o["bpw"], o["error"], "*", color="#2ca02c", ms=10, label=o["label"])
    ax.plot([], [], "o", color="#d62728", ms=4, label="llama.cpp file types")
    ax.set_yscale("log")
    ax.set_xlabel("bits per weight (optimized tensors)", fontsize=10)
    ax.set_ylabel("imatrix-weighted squared error", fontsize=10)
    ax.tick_params(labelsize=10)
    ax.legend(fontsize=10)


def frontier_gain(study: dict) -> list[dict]:
    """For each llama.cpp mix: the frontier's error at the same or fewer bytes, and the ratio."""
    fr = study["frontier"]
    out = []
    for m in study["mixes"]:
        ok = [p["error"] for p in fr if p["bytes"] <= m["bytes"]]
        best = min(ok) if ok else float("nan")
        out.append(
            {**m, "frontier error": best, "mix / frontier": m["error"] / best if ok and best > 0 else float("nan")}
        )
    return out


def kld_compare(
    path, entries, text, n_ctx: int = 128, n_chunks: int = 1, imatrix=None, outdir=None, log=None, progress=True
) -> dict:
    """Write each entry ``(label, ftype, Options or None)`` with ``quantlab.recipes.quantize_model``, load it
    and evaluate it against the shipped model on ``text`` (perplexity, KL divergence, top-1).
    Returns {"rows": [...], "base": EvalResult}."""
    # the model code starts numba (~0.25 s): only this study
    from .. import model as qmodel

    say = log or (lambda s: None)
    outdir = outdir or tempfile.mkdtemp(prefix="quantlab-mixes-")
    base = _RememberedForward(qmodel.load(path))  # the base's pass over each chunk runs once, not once per file
    be = qmodel.evaluate(base, text=text, n_ctx=n_ctx, n_chunks=n_chunks, progress=False)
    rows = []
    for label, ft, opts in steps(progress, entries, "KLD sweep", "file"):
        out = os.path.join(outdir, re.sub(r"[^A-Za-z0-9_]+", "_", label) + ".gguf")
        o = opts if opts is not None else Options(allow_requantize=True)
        t = time.perf_counter()
        r = recipes.quantize_model(path, out, ft, imatrix=imatrix, options=o, verbose=False, progress=False)
        tq = time.perf_counter() - t
        m = qmodel.load(out)
        e = qmodel.evaluate(m, text=text, n_ctx=n_ctx, n_chunks=n_chunks, base=base, progress=False)
        rows.append(
            {
                "label": label,
                "bpw": r.bpw,
                "MiB": r.tensor_nbytes / 2**20,
                "ppl": e.ppl,
                "ppl_err": e.ppl_err,
                "kld": e.kld_mean,
                "kld_err": e.kld_err,
                "top1": e.top1,
                "quantize_s": tq,
            }
        )
        say(f"{label}: {r.bpw:.3f} bpw, KLD {e.kld_mean:.5f}, top-1 {100 * e.top1:.1f} %")
        del m
        os.remove(out)
    return {"rows": rows, "base": be, "n_scored": be.n_scored}
