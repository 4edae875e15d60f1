"""Notebook 00: the model-size calculator. Parameters x format -> bytes, GB, GiB, with the block-scale
overhead that the name of a format hides.

    >>> app = quantlab.widgets.size_calculator.app()      # in a notebook: the last line shows it
    >>> app.params.value = 70; app.fmt.value = "Q4_K"; app.result["GB"]
"""

from __future__ import annotations

import ipywidgets as W
from matplotlib.ticker import FuncFormatter

from .. import sizes
from ..formats import all_formats
from ._common import App, contained, html_table, new_figure, show_figure

#: device memory lines of the bar chart (GB): a small laptop GPU / 16 GB laptop / 24 GB consumer GPU / 80 GB
#: data-centre GPU
DEVICES_GB = (8, 16, 24, 80)

#: tensor shapes of the presets with a llama architecture (for file-type mixes)
SHAPES = {
    "SmolLM2-135M-Instruct (134.5M)": sizes.SMOLLM2_135M,
    "Llama-2-7B (6.74B)": sizes.LLAMA2_7B,
    "Llama-2-13B (13.0B)": sizes.LLAMA2_13B,
    "Llama-2-70B (69.0B)": sizes.LLAMA2_70B,
    "Llama-3.1-405B (405.9B)": sizes.LLAMA31_405B,
}

#: well-known parameter counts (billions)
PRESETS = {
    "SmolLM2-135M-Instruct (134.5M)": 0.134515008,
    "Llama-2-7B (6.74B)": 6.738415616,
    "Llama-2-13B (13.0B)": 13.015864320,
    "Llama-2-70B (69.0B)": 68.976648192,
    "GPT-3 (175B)": 175.0,
    "Llama-3.1-405B (405.9B)": 405.853388800,
}


def storable_formats() -> list[str]:
    """Formats a model file can hold (no activation-only types, no integer types)."""
    return [f.name for f in all_formats(include_activation=False) if f.name not in ("I8", "I16", "I32", "I64")]


def plot_sizes(
    ax, bars: list[tuple[str, float]], devices=DEVICES_GB, highlight: str | None = None, title: str = ""
) -> None:
    """Horizontal bars ``(label, GB)`` on a log axis with a dashed vertical line per device size (GB);
    the bar labelled ``highlight`` is drawn in red. Text is 10 pt or more (readable on a projector)."""
    ax.clear()
    labels = [b[0] for b in bars]
    gb = [b[1] for b in bars]
    colors = ["#d9534f" if lab == highlight else "#2a7ab0" for lab in labels]
    y = range(len(bars))
    ax.barh(y, gb, color=colors, height=0.7)
    ax.set_yticks(list(y), labels, fontsize=10)
    ax.invert_yaxis()
    ax.set_xscale("log")
    lo = min(min(gb), min(devices)) / 2
    hi = max(max(gb), max(devices)) * 3
    ax.set_xlim(lo, hi)
    for g, lab in zip(gb, labels):
        ax.text(g * 1.06, labels.index(lab), f"{g:,.0f} GB" if g >= 100 else f"{g:.3g} GB", va="center", fontsize=10)
    for d in devices:
        ax.axvline(d, color="#555555", ls="--", lw=1)
        ax.text(
            d,
            1.01,
            f"{d} GB",
            rotation=30,
            ha="left",
            va="bottom",
            fontsize=10,
            color="#333333",
            transform=ax.get_xaxis_transform(),
        )  # above the plot: never on a bar or its label
    ax.set_ylim(len(bars) - 0.4, -0.6)
    ax.set_xlabel("size of the weights (GB = 10^9 bytes, log scale)", fontsize=10)
    ax.tick_params(axis="x", labelsize=10)
    ax.xaxis.set_major_formatter(_plain_gb)
    if title:
        ax.set_title(title + " (dashed: device memory)", fontsize=11, pad=28)


_plain_gb = FuncFormatter(lambda v, pos=None: f"{v:g}")  # 0.1, 1, 10, 100: no mathtext 10^x labels


class SizeCalculator(App):
    def __init__(self, params_billion: float = 6.738415616, fmt: str = "Q4_0"):
        known = [k for k, v in PRESETS.items() if v == params_billion]  # a preset's own count shows its name
        self.preset = W.Dropdown(
            options=["(custom)"] + list(PRESETS), value=known[0] if known else "(custom)", description="model"
        )
        self.params = W.BoundedFloatText(
            value=params_billion, min=0.0, max=100000.0, step=0.1, description="params (B)"
        )
        self.fmt = W.Dropdown(options=storable_formats(), value=fmt, description="format")
        self.ftype = W.Dropdown(options=sizes.file_types(), value="Q4_K_M", description="file type")
        self.summary = W.HTML()
        self.file_summary = W.HTML()
        self.table = W.HTML()
        self.out = W.Output()
        self.fig, self.ax = new_figure(8.5, 7.5)
        self.result: dict = {}
        self.file_result: dict = {}
        self.preset.observe(self._on_preset, names="value")
        self.params.observe(self.update, names="value")
        self.fmt.observe(self.update, names="value")
        self.ftype.observe(self.update, names="value")
        self.box = W.VBox(
            [
                W.HBox([self.preset, self.params, self.fmt]),
                self.summary,
                W.HBox([self.ftype]),
                self.file_summary,
                self.out,
                self.table,
            ]
        )
        self.update()

    @contained
    def _on_preset(self, change=None):
        if self.preset.value in PRESETS:
            if self.params.value != PRESETS[self.preset.value]:
                self.params.value = PRESETS[self.preset.value]  # runs update()
            else:
                self.update()

    @contained
    def update(self, change=None):
        p = self.params.value * 1e9
        r = sizes.model_size(p, self.fmt.value)
        self.result = r
        self.summary.value = (
            f"<div class='ql-size-summary' style='font-size:14px'><b>{self.params.value:g} B parameters in "
            f"{r['format']}</b>: {r['bpw']:.4g} bits per weight "
            f"({r['nominal_bits']:.4g} in the name + {r['overhead_bpw']:.4g} of block scales) &rarr; "
            f"<b>{r['GB']:,.3f} GB</b> = {r['GiB']:,.3f} GiB ({r['bytes']:,.0f} bytes)</div>"
        )
        self._update_file()
        rows = sorted(sizes.size_table(p), key=lambda d: -d["bpw"])
        self.table.value = html_table(
            rows,
            ["format", "bpw", "nominal_bits", "overhead_bpw", "GB", "GiB"],
            fmt={
                "bpw": "{:.4f}",
                "nominal_bits": "{:.3g}",
                "overhead_bpw": "{:.4f}",
                "GB": "{:,.3f}",
                "GiB": "{:,.3f}",
            },
            highlight=lambda d: d["format"] == r["format"],
        )
        bars = [(d["format"], d["GB"]) for d in rows if d["format"] not in ("F64",)]
        if self.file_result:
            bars.append((f"{self.file_result['ftype']} (file)", self.file_result["GB"]))
            bars.sort(key=lambda b: -b[1])
        plot_sizes(
            self.ax,
            bars,
            highlight=r["format"],
            title=f"{self.params.value:g} B parameters: every format, and the device sizes",
        )
        self.fig.tight_layout()
        show_figure(self.out, self.fig)

    def _update_file(self):
        if self.preset.value in PRESETS and self.params.value != PRESETS[self.preset.value]:
            self.preset.value = "(custom)"  # a typed count is no known model
        shape = SHAPES.get(self.preset.value)
        if shape is None:
            self.file_result = {}
            self.file_summary.value = (
                "<div class='ql-file-summary'><i>File types are mixes of formats chosen per "
                "tensor: pick a llama-architecture model above to size a whole file.</i></div>"
            )
            return
        t = sizes.llama_tensors(**shape)
        r = sizes.file_size(t, self.ftype.value, shape)
        self.file_result = r
        parts = ", ".join(f"{fmt} {100 * n / r['params']:.1f} %" for fmt, n in r["params_by_format"].items())
        self.file_summary.value = (
            f"<div class='ql-file-summary' style='font-size:14px'>As a llama.cpp <b>{r['ftype']}</b> file: "
            f"{r['bpw']:.3f} bits per weight &rarr; <b>{r['GB']:,.3f} GB</b> = {r['GiB']:,.3f} GiB "
            f"(weights by format: {parts}; rules from {r['source']})</div>"
        )


def app(params_billion: float = 6.738415616, fmt: str = "Q4_0") -> SizeCalculator:
    return SizeCalculator(params_billion, fmt)
