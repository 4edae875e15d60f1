"""Notebook 04: every format of the registry, one block at a time, and all of them on one real tensor.

* :func:`format_status` — the registry as rows, with which implementations exist right now (formats are
  being added while the course is written: a missing one is listed as such, never an error);
* :class:`BlockInspector` — pick a format and a block: its bytes in hex, the fields decoded by
  ``quantlab.inspect_block``, the 32..256 weights it gives back next to the originals, and the reference
  implementation's source (``inspect.getsource`` of the function the registry points at);
* :func:`format_errors` — error vs bits per weight of every format on the same tensor, with and
  without an importance matrix.

    >>> app = quantlab.widgets.block_inspector.app()
    >>> app.fmt.value = "Q4_K"; app.block.value = 3; app.fields["d"]
"""
from __future__ import annotations

import html
import inspect as _inspect
import time

import ipywidgets as W
import numpy as np

from .. import metrics
from ..api import dequantize, inspect_block, quantize
from ..errors import QuantlabError
from ..formats import all_formats, get
from ._common import DEFAULT_TENSOR, App, contained, html_table, new_figure, real_tensor, show_figure

#: formats a model file stores weights in (the inspector's list)
INSPECT_SKIP = ("F32", "F64", "I8", "I16", "I32", "I64")


def imatrix_for(name: str = DEFAULT_TENSOR[1]) -> np.ndarray | None:
    """The real importance matrix of an all-MiniLM-L6-v2 weight matrix (data/minilm_imatrix.npz,
    built by tools/make_samples.py); None if the file is missing."""
    from ..data import DATA_DIR

    p = DATA_DIR / "minilm_imatrix.npz"
    if not p.exists():
        return None
    with np.load(p) as z:
        return z[name].astype(np.float32) if name in z.files else None


def format_status() -> list[dict]:
    """One row per usable registry format: name, id, block, bytes, bpw and the implementations present."""
    rows = []
    for f in all_formats():
        impl = {k: f.has_impl(k, "quantize") and f.has_impl(k, "dequantize") for k in ("reference", "fast")}
        ins = f.has_impl("reference", "inspect")
        if impl["reference"] or impl["fast"]:
            status = "ready" if impl["reference"] and impl["fast"] else (
                "reference only" if impl["reference"] else "fast only")
        else:
            status = "not implemented yet"
        rows.append({"format": f.name, "id": f.id, "block": f.block_size, "bytes": f.type_size,
                     "bpw": f.bpw, "family": f.family, "reference": impl["reference"], "fast": impl["fast"],
                     "inspect": ins, "imatrix": "required" if f.requires_imatrix else (
                         "used" if f.uses_imatrix else "-"), "status": status})
    return rows


def _best_impl(f, prefer: str = "reference") -> str | None:
    """The implementation to use: ``prefer`` when it exists, else the other one, else None.
    The lessons prefer the numpy reference: no numba compilation, and fast enough on a few rows."""
    for k in (prefer, "fast" if prefer == "reference" else "reference"):
        if f.has_impl(k, "quantize") and f.has_impl(k, "dequantize"):
            return k
    return None


def format_errors(x, imatrix=None, formats=None, impl: str = "reference") -> list[dict]:
    """Quantize ``x`` (2-D, rows a multiple of 256) with every quantized format, with and without
    ``imatrix``: dicts format, bpw, imatrix (bool), rmse, sqnr_db, impl, seconds, status, and ``y`` (the
    reconstruction) when status is 'ok'."""
    fs = formats if formats is not None else [f for f in all_formats(include_activation=False, quantized_only=True)]
    out = []
    for f in map(get, fs):
        kind = _best_impl(f, impl)
        for use_im in ((False, True) if imatrix is not None else (False,)):
            row = {"format": f.name, "bpw": f.bpw, "imatrix": use_im, "impl": kind}
            if kind is None:
                out.append({**row, "status": "not implemented yet"})
                continue
            if use_im and not f.uses_imatrix:
                continue  # same bytes as without: ggml ignores the imatrix for this format
            if not use_im and f.requires_imatrix:
                out.append({**row, "status": "needs an imatrix"})
                continue
            t = time.perf_counter()
            try:
                q = quantize(x, f, imatrix=imatrix if use_im else None, impl=kind)
                y = dequantize(q, f, impl=kind)
            except Exception as e:  # a format under construction must not break the lesson
                out.append({**row, "status": f"failed: {type(e).__name__}: {e}"[:160]})
                continue
            out.append({**row, "status": "ok", "seconds": time.perf_counter() - t, "y": y,
                        "rmse": metrics.rmse(x, y), "sqnr_db": metrics.sqnr_db(x, y)})
    return out


def plot_errors(ax, rows: list[dict]) -> None:
    """SQNR vs bits per weight, one marker per format; hollow = without imatrix, filled = with."""
    ax.clear()
    for use_im, style in ((False, dict(mfc="none", color="#2a7ab0")), (True, dict(color="#d9534f"))):
        pts = [r for r in rows if r.get("status") == "ok" and r["imatrix"] == use_im]
        if not pts:
            continue
        ax.plot([r["bpw"] for r in pts], [r["sqnr_db"] for r in pts], "o", ms=5, ls="none",
                label="with imatrix" if use_im else "without imatrix", **style)
        plain = {r["format"] for r in rows if r.get("status") == "ok" and not r["imatrix"]}
        for r in pts:
            if not use_im or r["format"] not in plain:     # label each format once
                ax.annotate(r["format"], (r["bpw"], r["sqnr_db"]), fontsize=6, xytext=(3, -3),
                            textcoords="offset points")
    ax.set_xlabel("bits per weight (registry)", fontsize=8)
    ax.set_ylabel("SQNR (dB)", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)


def hexdump(b: np.ndarray, width: int = 16) -> str:
    b = np.asarray(b, dtype=np.uint8).reshape(-1)
    lines = []
    for i in range(0, b.size, width):
        lines.append(f"{i:04x}  " + " ".join(f"{v:02x}" for v in b[i:i + width]))
    return "\n".join(lines)


def _short(v) -> str:
    if isinstance(v, np.ndarray):
        if v.size > 16:
            body = np.array2string(v.reshape(-1)[:16], precision=4, separator=", ", max_line_width=200)
            return f"{v.dtype}[{v.size}] {body[:-1]}, ...]"
        return np.array2string(v, precision=5, separator=", ", max_line_width=200)
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.6g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_short(x)}" for k, x in v.items())
    return str(v)


def reference_source(fmt) -> str:
    """Source of the registry's reference quantizer for ``fmt`` (and its module docstring header)."""
    f = get(fmt)
    try:
        fn = f.impl("reference", "quantize")
    except QuantlabError as e:
        return f"# {e}"
    try:
        return _inspect.getsource(fn)
    except (OSError, TypeError) as e:
        return f"# source not available: {e}"


class BlockInspector(App):
    def __init__(self, fmt: str = "Q4_0", tensor: str = DEFAULT_TENSOR[1], rows: int = 4, block: int = 0,
                 impl: str = "reference"):
        self.impl = impl
        self.w = real_tensor("minilm", tensor, rows)
        self.im = imatrix_for(tensor)
        names = [f.name for f in all_formats(include_activation=False) if f.name not in INSPECT_SKIP]
        self.fmt = W.Dropdown(options=names, value=fmt, description="format")
        self.use_im = W.Checkbox(value=False, description="use the imatrix")
        self.block = W.IntSlider(value=block, min=0, max=0, description="block")
        self.header = W.HTML()
        self.hex = W.HTML()
        self.fields_html = W.HTML()
        self.source = W.HTML()
        self.out = W.Output()
        self.fig, self.ax = new_figure(6.5, 2.6)
        self.fields: dict = {}
        self.status = ""
        self._q = None
        self.fmt.observe(self._requantize, names="value")
        self.use_im.observe(self._requantize, names="value")
        self.block.observe(self.update, names="value")
        left = W.VBox([self.header, self.hex, self.fields_html, self.out], layout=W.Layout(width="58%"))
        right = W.VBox([W.HTML("<b>reference implementation</b> (quantlab.formats)"), self.source],
                       layout=W.Layout(width="42%"))
        self.box = W.VBox([W.HBox([self.fmt, self.use_im, self.block]), W.HBox([left, right])])
        self._requantize()

    @contained
    def _requantize(self, change=None):
        f = get(self.fmt.value)
        src = reference_source(f)
        self.source.value = (f"<pre class='ql-source' style='font-size:10px;max-height:520px;overflow:auto;"
                             f"background:#f7f7f7;padding:4px'>{html.escape(src)}</pre>")
        self._q = None
        kind = _best_impl(f, self.impl)
        im = self.im if (self.use_im.value or f.requires_imatrix) else None
        if kind is None:
            self.status = "not implemented yet"
        elif im is None and f.requires_imatrix:
            self.status = "needs an imatrix (data/minilm_imatrix.npz is missing)"
        else:
            try:
                self._q = quantize(self.w, f, imatrix=im, impl=kind)
                self.status = "ok"
            except Exception as e:  # a format under construction must not break the lesson
                self.status = f"failed: {type(e).__name__}: {e}"
        nblocks = self.w.size // f.block_size
        self.block.max = max(0, nblocks - 1)
        self.update()

    @contained
    def update(self, change=None):
        f = get(self.fmt.value)
        head = (f"<div class='ql-head'><b>{f.name}</b> (ggml id {f.id}): {f.block_size} weights in "
                f"{f.type_size} bytes = <b>{f.bpw:.4g} bits per weight</b>; family <code>{f.family}</code>")
        if self._q is None:
            self.fields = {}
            self.header.value = head + f" — <span class='ql-status' style='color:#b00'>{html.escape(self.status)}</span></div>"
            self.hex.value = self.fields_html.value = ""
            self.out.outputs = ()      # cleared by the kernel: no front-end sync (see _common.show_figure)
            return
        i = self.block.value
        try:
            d = inspect_block(self._q, f, i)
        except Exception as e:  # an inspector under construction must not break the lesson
            d = {"bytes": self._q.reshape(-1)[i * f.type_size:(i + 1) * f.type_size],
                 "values": dequantize(self._q.reshape(-1)[i * f.type_size:(i + 1) * f.type_size], f).reshape(-1),
                 "inspect_error": f"{type(e).__name__}: {e}"}
        self.fields = d
        orig = self.w.reshape(-1)[i * f.block_size:(i + 1) * f.block_size]
        vals = np.asarray(d["values"], dtype=np.float32).reshape(-1)
        self.header.value = (head + f" — block {i} of {self.block.max + 1}: SQNR "
                             f"<b class='ql-block-sqnr'>{metrics.sqnr_db(orig, vals):.2f} dB</b></div>")
        self.hex.value = f"<pre class='ql-hex' style='font-size:11px;margin:2px'>{hexdump(d['bytes'])}</pre>"
        rows = "".join(f"<tr><td style='padding-right:8px'><b>{html.escape(str(k))}</b></td>"
                       f"<td>{html.escape(_short(v))}</td></tr>"
                       for k, v in d.items() if k not in ("bytes", "values", "format", "index"))
        self.fields_html.value = f"<table class='ql-fields' style='font-family:monospace;font-size:11px'>{rows}</table>"
        ax = self.ax
        ax.clear()
        k = np.arange(orig.size)
        ax.plot(k, orig, "o", ms=3, mfc="none", color="#777777", label="original")
        ax.plot(k, vals, ".", ms=4, color="#d9534f", label=f"{f.name} value")
        ax.vlines(k, orig, vals, color="#d9534f", lw=0.5)
        ax.set_title(f"block {i}: original weights and what {f.name} gives back", fontsize=9)
        ax.legend(fontsize=7)
        ax.tick_params(labelsize=7)
        self.fig.tight_layout()
        show_figure(self.out, self.fig)


def app(**kw) -> BlockInspector:
    return BlockInspector(**kw)


def status_table_html(rows=None) -> str:
    rows = format_status() if rows is None else rows
    return html_table(rows, ["format", "id", "block", "bytes", "bpw", "family", "imatrix", "status"],
                      fmt={"bpw": "{:.4f}"})
