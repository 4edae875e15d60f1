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
from ..data import DATA_DIR
from ..errors import QuantlabError
from ..formats import all_formats, get
from ._common import DEFAULT_TENSOR, App, contained, html_table, new_figure, real_tensor, show_figure

#: formats a model file stores weights in (the inspector's list)
INSPECT_SKIP = ("F32", "F64", "I8", "I16", "I32", "I64")


def imatrix_for(name: str = DEFAULT_TENSOR[1]) -> np.ndarray | None:
    """The real importance matrix of an all-MiniLM-L6-v2 weight matrix (quantlab/assets/minilm_imatrix.npz,
    built by tools/make_samples.py); None if the file is missing."""
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
        status = (
            "ready" if impl["reference"] and impl["fast"] else ("reference only" if impl["reference"] else "fast only")
        )
        rows.append(
            {
                "format": f.name,
                "id": f.id,
                "block": f.block_size,
                "bytes": f.type_size,
                "bpw": f.bpw,
                "family": f.family,
                "reference": impl["reference"],
                "fast": impl["fast"],
                "inspect": ins,
                "imatrix": "required" if f.requires_imatrix else ("used" if f.uses_imatrix else "-"),
                "status": status,
            }
        )
    return rows


def _best_impl(f, prefer: str = "reference") -> str:
    """The implementation to use: ``prefer`` when it exists, else the other one (every format has one:
    the registry's tests fail otherwise). The lessons prefer the numpy reference: no numba compilation,
    and fast enough on a few rows."""
    if f.has_impl(prefer, "quantize") and f.has_impl(prefer, "dequantize"):
        return prefer
    return "fast" if prefer == "reference" else "reference"


def format_errors(x, imatrix=None, formats=None, impl: str = "reference") -> list[dict]:
    """Quantize ``x`` (2-D, rows a multiple of 256) with every quantized format, with and without
    ``imatrix``: dicts format, bpw, imatrix (bool), rmse, sqnr_db, impl, seconds, status, and ``y`` (the
    reconstruction) when status is 'ok'."""
    fs = formats if formats is not None else [f for f in all_formats(include_activation=False, quantized_only=True)]
    out = []
    for f in map(get, fs):
        kind = _best_impl(f, impl)
        for use_im in (False, True) if imatrix is not None else (False,):
            row = {"format": f.name, "bpw": f.bpw, "imatrix": use_im, "impl": kind}
            if use_im and not f.uses_imatrix:
                continue  # same bytes as without: ggml ignores the imatrix for this format
            if not use_im and f.requires_imatrix:
                out.append({**row, "status": "needs an imatrix"})
                continue
            t = time.perf_counter()
            try:
                q = quantize(x, f, imatrix=imatrix if use_im else None, impl=kind)
                y = dequantize(q, f, impl=kind)
            except Exception as e:  # noqa: BLE001 (shown in the row's status; the lesson goes on)
                out.append({**row, "status": f"failed: {type(e).__name__}: {e}"[:160]})
                continue
            out.append(
                {
                    **row,
                    "status": "ok",
                    "seconds": time.perf_counter() - t,
                    "y": y,
                    "rmse": metrics.rmse(x, y),
                    "sqnr_db": metrics.sqnr_db(x, y),
                }
            )
    return out


def plot_errors(ax, rows: list[dict]) -> None:
    """SQNR vs bits per weight, one marker per format; hollow = without imatrix, filled = with. Each format is
    labelled once; labels that would overlap are moved down (with a thin leader line to their point)."""
    ax.clear()
    for use_im, style in ((False, dict(mfc="none", color="#2a7ab0")), (True, dict(color="#d9534f"))):
        pts = [r for r in rows if r.get("status") == "ok" and r["imatrix"] == use_im]
        if pts:
            ax.plot(
                [r["bpw"] for r in pts],
                [r["sqnr_db"] for r in pts],
                "o",
                ms=6,
                ls="none",
                label="with imatrix" if use_im else "without imatrix",
                **style,
            )
    best: dict = {}
    for r in rows:  # one label per format, at its higher point
        if (
            r.get("status") == "ok"
            and np.isfinite(r["sqnr_db"])
            and (r["format"] not in best or r["sqnr_db"] > best[r["format"]]["sqnr_db"])
        ):
            best[r["format"]] = r
    if best:
        ys = [r["sqnr_db"] for r in best.values()]
        span = max(max(ys) - min(ys), 1.0)
        gap = span / 26  # one 10-pt line on a ~5 inch tall axis
        placed: list[tuple[float, float]] = []
        for r in sorted(best.values(), key=lambda r: -r["sqnr_db"]):
            x, y = r["bpw"], r["sqnr_db"]
            ly = y
            while any(abs(px - x) < 0.55 and abs(py - ly) < gap for px, py in placed):
                ly -= gap
            placed.append((x, ly))
            moved = abs(ly - y) > 1e-9
            ax.annotate(
                r["format"],
                (x, y),
                xytext=(x + 0.08, ly - gap * 0.3),
                textcoords="data",
                fontsize=10,
                arrowprops=dict(arrowstyle="-", lw=0.5, color="#888888") if moved else None,
            )
        ax.set_ylim(min(min(py for _, py in placed) - 1.5 * gap, min(ys) - gap), max(ys) + 2 * gap)
    ax.set_xlabel("bits per weight (registry)", fontsize=10)
    ax.set_ylabel("SQNR (dB)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=10, loc="upper left")
    ax.tick_params(labelsize=10)


#: byte layout of one block, field by field: format -> [(field, first byte, end byte (exclusive), what)].
#: Transcribed from the byte tables in the docstrings of quantlab.formats (each quantize_ function draws its
#: block); tests/test_course.py checks that the fields tile the block exactly (0 .. type_size, no gap, no overlap).
FIELD_LAYOUT = {
    "Q4_0": [("d", 0, 2, "fp16 scale"), ("qs", 2, 18, "32 x 4-bit codes")],
    "Q4_1": [("d", 0, 2, "fp16 scale"), ("m", 2, 4, "fp16 min"), ("qs", 4, 20, "32 x 4-bit codes")],
    "Q5_0": [("d", 0, 2, "fp16 scale"), ("qh", 2, 6, "32 fifth bits"), ("qs", 6, 22, "32 x low 4 bits")],
    "Q5_1": [
        ("d", 0, 2, "fp16 scale"),
        ("m", 2, 4, "fp16 min"),
        ("qh", 4, 8, "32 fifth bits"),
        ("qs", 8, 24, "32 x low 4 bits"),
    ],
    "Q8_0": [("d", 0, 2, "fp16 scale"), ("qs", 2, 34, "32 x int8 codes")],
    "Q2_K": [
        ("scales", 0, 16, "16 x (4-bit scale, 4-bit min)"),
        ("qs", 16, 80, "256 x 2-bit codes"),
        ("d", 80, 82, "fp16 scale of the scales"),
        ("dmin", 82, 84, "fp16 scale of the mins"),
    ],
    "Q3_K": [
        ("hmask", 0, 32, "256 high bits"),
        ("qs", 32, 96, "256 x low 2 bits"),
        ("scales", 96, 108, "16 x 6-bit scales"),
        ("d", 108, 110, "fp16 scale of the scales"),
    ],
    "Q4_K": [
        ("d", 0, 2, "fp16 scale of the scales"),
        ("dmin", 2, 4, "fp16 scale of the mins"),
        ("scales", 4, 16, "8 x 6-bit scales + 8 x 6-bit mins"),
        ("qs", 16, 144, "256 x 4-bit codes"),
    ],
    "Q5_K": [
        ("d", 0, 2, "fp16 scale of the scales"),
        ("dmin", 2, 4, "fp16 scale of the mins"),
        ("scales", 4, 16, "8 x 6-bit scales + 8 x 6-bit mins"),
        ("qh", 16, 48, "256 fifth bits"),
        ("qs", 48, 176, "256 x low 4 bits"),
    ],
    "Q6_K": [
        ("ql", 0, 128, "256 x low 4 bits"),
        ("qh", 128, 192, "256 x high 2 bits"),
        ("scales", 192, 208, "16 x int8 scales"),
        ("d", 208, 210, "fp16 scale of the scales"),
    ],
    "IQ4_NL": [("d", 0, 2, "fp16 scale"), ("qs", 2, 18, "32 x 4-bit table indices")],
    "IQ4_XS": [
        ("d", 0, 2, "fp16 scale of the scales"),
        ("scales_h", 2, 4, "high 2 bits of 8 scales"),
        ("scales_l", 4, 8, "low 4 bits of 8 scales"),
        ("qs", 8, 136, "256 x 4-bit table indices"),
    ],
    "IQ2_XXS": [("d", 0, 2, "fp16 scale"), ("qs", 2, 66, "per 32: 4 grid indices + 4 x 7 sign bits + 4-bit scale")],
    "IQ3_XXS": [
        ("d", 0, 2, "fp16 scale"),
        ("qs", 2, 66, "64 grid indices (4 weights each)"),
        ("signs+scales", 66, 98, "per 32: 4 x 7 sign bits + 4-bit scale"),
    ],
    "MXFP4": [("e", 0, 1, "E8M0 shared exponent"), ("qs", 1, 17, "32 x E2M1 codes")],
}

#: colours of the fields, in the order a block lists them (projector-friendly, distinct)
FIELD_COLORS = ("#f4b400", "#4285f4", "#db4437", "#0f9d58", "#ab47bc", "#00acc1", "#ff7043")


def field_of_bytes(fmt) -> list[tuple[str, str]] | None:
    """(field, colour) for every byte of one block of ``fmt``, or None for a format without a layout here."""
    lay = FIELD_LAYOUT.get(get(fmt).name)
    if lay is None:
        return None
    out = []
    for k, (name, a, b, _) in enumerate(lay):
        out += [(name, FIELD_COLORS[k % len(FIELD_COLORS)])] * (b - a)
    return out


def hex_html(b: np.ndarray, fmt, width: int = 16) -> str:
    """The bytes of one block as hex, each byte's background the colour of its field, and a legend."""
    b = np.asarray(b, dtype=np.uint8).reshape(-1)
    owner = field_of_bytes(fmt)
    if owner is None or len(owner) != b.size:
        return f"<pre class='ql-hex' style='font-size:12px;margin:2px'>{hexdump(b, width)}</pre>"
    lines = []
    for i in range(0, b.size, width):
        cells = "".join(
            f"<span title='{owner[j][0]} (byte {j})' style='background:{owner[j][1]}33;"
            f"border-bottom:3px solid {owner[j][1]};padding:0 2px;margin-right:2px'>{b[j]:02x}</span>"
            for j in range(i, min(i + width, b.size))
        )
        lines.append(f"{i:04x}  {cells}")
    legend = " ".join(
        f"<span style='border-bottom:3px solid {FIELD_COLORS[k % len(FIELD_COLORS)]};"
        f"padding:0 3px'><b>{html.escape(n)}</b> bytes {a}-{e - 1}: {html.escape(what)}</span>"
        for k, (n, a, e, what) in enumerate(FIELD_LAYOUT[get(fmt).name])
    )
    return (
        f"<pre class='ql-hex' style='font-size:12px;margin:2px;line-height:1.7'>{chr(10).join(lines)}</pre>"
        f"<div class='ql-hex-legend' style='font-size:12px;line-height:1.8'>{legend}</div>"
    )


def plot_block_map(ax, fmt="Q4_K", width: int = 16) -> None:
    """A block drawn byte by byte (one square per byte, coloured by field, rows of ``width`` bytes), the
    fields named in the legend with their byte ranges: the opening picture of notebook 04."""
    # matplotlib: lazily, like _common.new_figure
    from matplotlib.patches import Patch, Rectangle

    f = get(fmt)
    lay = FIELD_LAYOUT[f.name]
    ax.clear()
    for k, (_name, a, e, _what) in enumerate(lay):
        c = FIELD_COLORS[k % len(FIELD_COLORS)]
        for j in range(a, e):
            ax.add_patch(Rectangle((j % width, -(j // width)), 0.92, 0.92, color=c))
    rows = -(-f.type_size // width)
    ax.set_xlim(-0.2, width + 0.1)
    ax.set_ylim(-rows + 0.8, 1.05)
    ax.set_aspect("equal")
    ax.set_xticks([i + 0.46 for i in range(0, width, 4)], [str(i) for i in range(0, width, 4)], fontsize=10)
    ax.set_yticks([-r + 0.46 for r in range(rows)], [str(r * width) for r in range(rows)], fontsize=10)
    ax.set_xlabel("byte within the row", fontsize=10)
    ax.set_ylabel("row starts at byte", fontsize=10)
    for sp in ax.spines.values():
        sp.set_visible(False)
    ax.legend(
        handles=[
            Patch(color=FIELD_COLORS[k % len(FIELD_COLORS)], label=f"{n}: bytes {a}-{e - 1} ({e - a} B), {what}")
            for k, (n, a, e, what) in enumerate(lay)
        ],
        loc="upper left",
        bbox_to_anchor=(0.0, -0.16),
        fontsize=10,
        frameon=False,
    )
    ax.set_title(
        f"One {f.name} block: {f.block_size} weights in {f.type_size} bytes = {f.bpw:g} bits per weight", fontsize=11
    )


def hexdump(b: np.ndarray, width: int = 16) -> str:
    b = np.asarray(b, dtype=np.uint8).reshape(-1)
    lines = []
    for i in range(0, b.size, width):
        lines.append(f"{i:04x}  " + " ".join(f"{v:02x}" for v in b[i : i + width]))
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
    def __init__(
        self, fmt: str = "Q4_0", tensor: str = DEFAULT_TENSOR[1], rows: int = 4, block: int = 0, impl: str = "reference"
    ):
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
        self.fig, self.ax = new_figure(7.5, 3.4)
        self.fields: dict = {}
        self.status = ""
        self._q = None
        self.fmt.observe(self._requantize, names="value")
        self.use_im.observe(self._requantize, names="value")
        self.block.observe(self.update, names="value")
        left = W.VBox([self.header, self.hex, self.fields_html, self.out], layout=W.Layout(width="58%"))
        right = W.VBox(
            [W.HTML("<b>reference implementation</b> (quantlab.formats)"), self.source], layout=W.Layout(width="42%")
        )
        self.box = W.VBox([W.HBox([self.fmt, self.use_im, self.block]), W.HBox([left, right])])
        self._requantize()

    @contained
    def _requantize(self, change=None):
        f = get(self.fmt.value)
        src = reference_source(f)
        self.source.value = (
            f"<pre class='ql-source' style='font-size:10px;max-height:520px;overflow:auto;"
            f"background:#f7f7f7;padding:4px'>{html.escape(src)}</pre>"
        )
        self._q = None
        kind = _best_impl(f, self.impl)
        im = self.im if (self.use_im.value or f.requires_imatrix) else None
        if im is None and f.requires_imatrix:
            self.status = "needs an imatrix (quantlab/assets/minilm_imatrix.npz is missing)"
        else:
            try:
                self._q = quantize(self.w, f, imatrix=im, impl=kind)
                self.status = "ok"
            except Exception as e:  # noqa: BLE001 (shown in the row's status; the lesson goes on)
                self.status = f"failed: {type(e).__name__}: {e}"
        nblocks = self.w.size // f.block_size
        self.block.max = max(0, nblocks - 1)
        self.update()

    @contained
    def update(self, change=None):
        f = get(self.fmt.value)
        head = (
            f"<div class='ql-head'><b>{f.name}</b> (ggml id {f.id}): {f.block_size} weights in "
            f"{f.type_size} bytes = <b>{f.bpw:.4g} bits per weight</b>; family <code>{f.family}</code>"
        )
        if self._q is None:
            self.fields = {}
            self.header.value = (
                head + f" — <span class='ql-status' style='color:#b00'>{html.escape(self.status)}</span></div>"
            )
            self.hex.value = self.fields_html.value = ""
            self.out.outputs = ()  # cleared by the kernel: no front-end sync (see _common.show_figure)
            return
        i = self.block.value
        try:
            d = inspect_block(self._q, f, i)
        except Exception as e:  # noqa: BLE001 (the raw bytes are shown instead; the lesson goes on)
            d = {
                "bytes": self._q.reshape(-1)[i * f.type_size : (i + 1) * f.type_size],
                "values": dequantize(self._q.reshape(-1)[i * f.type_size : (i + 1) * f.type_size], f).reshape(-1),
                "inspect_error": f"{type(e).__name__}: {e}",
            }
        self.fields = d
        orig = self.w.reshape(-1)[i * f.block_size : (i + 1) * f.block_size]
        vals = np.asarray(d["values"], dtype=np.float32).reshape(-1)
        self.header.value = (
            head + f" — block {i} of {self.block.max + 1}: SQNR "
            f"<b class='ql-block-sqnr'>{metrics.sqnr_db(orig, vals):.2f} dB</b></div>"
        )
        self.hex.value = hex_html(d["bytes"], f)
        rows = "".join(
            f"<tr><td style='padding-right:8px'><b>{html.escape(str(k))}</b></td><td>{html.escape(_short(v))}</td></tr>"
            for k, v in d.items()
            if k not in ("bytes", "values", "format", "index")
        )
        self.fields_html.value = f"<table class='ql-fields' style='font-family:monospace;font-size:11px'>{rows}</table>"
        ax = self.ax
        ax.clear()
        k = np.arange(orig.size)
        ax.plot(k, orig, "o", ms=3, mfc="none", color="#777777", label="original")
        ax.plot(k, vals, ".", ms=4, color="#d9534f", label=f"{f.name} value")
        ax.vlines(k, orig, vals, color="#d9534f", lw=0.5)
        ax.set_title(f"block {i}: original weights and what {f.name} gives back", fontsize=11)
        ax.set_xlabel("weight index in the block", fontsize=10)
        ax.set_ylabel("weight value", fontsize=10)
        ax.legend(fontsize=10)
        ax.tick_params(labelsize=10)
        self.fig.tight_layout()
        show_figure(self.out, self.fig)


def app(**kw) -> BlockInspector:
    return BlockInspector(**kw)


def status_table_html(rows=None) -> str:
    rows = format_status() if rows is None else rows
    return html_table(
        rows, ["format", "id", "block", "bytes", "bpw", "family", "imatrix", "status"], fmt={"bpw": "{:.4f}"}
    )
